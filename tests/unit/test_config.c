/* test_config.c - unit tests for src/config.c. */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"

#ifndef TOP_SRCDIR
#error "TOP_SRCDIR must name the source directory"
#endif

#define REAL_SECRET "a-real-production-secret-0123456789abcdef"
#define REAL_API_KEY "a-real-production-api-key-0123456789"

/* One parse: its config, rc and error message. */
struct parsed {
    struct config cfg;
    int rc;
    char err[256];
};

/* Counts the entries of a NULL-terminated array. */
static int count(char **v)
{
    int n = 0;

    while (v && v[n])
        n++;
    return n;
}

/* Runs config_parse over NULL-terminated argv and envp (either may be NULL). */
static void parse(struct parsed *p, enum config_cmd cmd, char **argv, char **envp)
{
    memset(p, 0, sizeof *p);
    p->rc = config_parse(&p->cfg, cmd, count(argv), argv, envp, p->err, sizeof p->err);
}

/* Asserts that a parse succeeded, showing its message if not. */
static void assert_parsed_ok(const struct parsed *p)
{
    if (p->rc != 0)
        fail_msg("config_parse failed: rc=%d err=\"%s\"", p->rc, p->err);
}

/* Asserts that a parse failed with RC_EINVAL and a message containing want. */
static void assert_parse_error(const struct parsed *p, const char *want)
{
    if (p->rc != RC_EINVAL)
        fail_msg("config_parse: rc=%d, want RC_EINVAL (err=\"%s\")", p->rc, p->err);
    if (!strstr(p->err, want))
        fail_msg("error message \"%s\" does not mention \"%s\"", p->err, want);
}

/* ROWCAST_<NAME> for an option name. */
static void env_var_of(const char *name, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "ROWCAST_");

    for (const char *p = name; *p && n + 1 < cap; p++)
        out[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    out[n] = '\0';
}

/* Finds an option in the table by name; fails the test if absent. */
static const struct config_option *option(const char *name)
{
    for (size_t i = 0; i < config_n_options; i++)
        if (!strcmp(config_options[i].name, name))
            return &config_options[i];
    fail_msg("option %s not in config_options", name);
    return NULL;
}

/* True when word occurs in text not preceded or followed by a character of ok_chars or
 * an alphanumeric (so "--db" does not count as found inside "--db-pool"). */
static bool has_word(const char *text, const char *word, const char *ok_chars)
{
    size_t n = strlen(word);

    for (const char *p = text; (p = strstr(p, word)); p++) {
        unsigned char before = p > text ? (unsigned char)p[-1] : ' ';
        unsigned char after = (unsigned char)p[n];
        bool glued_before = isalnum(before) || (before && strchr(ok_chars, before));
        bool glued_after = isalnum(after) || (after && strchr(ok_chars, after));

        if (!glued_before && !glued_after)
            return true;
    }
    return false;
}

/* Reads a whole file into a malloc'd NUL-terminated string, or NULL. */
static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;

    if (!f)
        return NULL;
    for (;;) {
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 65536;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        size_t got = fread(buf + len, 1, cap - len - 1, f);

        len += got;
        if (got == 0)
            break;
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

/* With no flags and no environment, every option has its documented default. */
static void test_defaults(void **state)
{
    (void)state;
    struct parsed p;

    parse(&p, CMD_SERVE, NULL, NULL);
    assert_parsed_ok(&p);
    assert_string_equal(p.cfg.db, "sqlite:rowcast.db");
    assert_string_equal(p.cfg.listen, "127.0.0.1:4000");
    assert_string_equal(p.cfg.env, "dev");
    assert_string_equal(p.cfg.check_origin, "");
    assert_string_equal(p.cfg.log_level, "info");
    assert_int_equal(p.cfg.workers, 0);
    assert_int_equal(p.cfg.http_threads, 2);
    assert_int_equal(p.cfg.idle_timeout, 60);
    assert_int_equal(p.cfg.max_frame_bytes, 1048576);
    assert_int_equal(p.cfg.max_body_bytes, 65536);
    assert_int_equal(p.cfg.max_json_depth, 32);
    assert_int_equal(p.cfg.max_channels, 100);
    assert_int_equal(p.cfg.outbound_queue_bytes, 4194304);
    assert_int_equal(p.cfg.batch_max, 1024);
    assert_int_equal(p.cfg.data_poll_ms, 20);
    assert_int_equal(p.cfg.ttl, 3600);
    assert_null(p.cfg.user);
    /* Outside prod, the development credentials are filled in and flagged. */
    assert_string_equal(p.cfg.jwt_secret, CONFIG_DEV_JWT_SECRET);
    assert_true(p.cfg.jwt_secret_is_default);
    assert_string_equal(p.cfg.api_key, CONFIG_DEV_API_KEY);
    assert_true(p.cfg.api_key_is_default);
    config_cleanup(&p.cfg);
}

/* The parsed defaults are the ones the option table declares. */
static void test_defaults_match_table(void **state)
{
    (void)state;
    struct parsed p;

    parse(&p, CMD_SERVE, NULL, NULL);
    assert_parsed_ok(&p);
    for (size_t i = 0; i < config_n_options; i++) {
        const struct config_option *o = &config_options[i];
        const char *field = (const char *)&p.cfg + o->offset;

        if (!o->def)
            continue;
        switch (o->type) {
        case OPT_STRING:
            if (strcmp(*(char *const *)field, o->def))
                fail_msg("--%s: default \"%s\", config has \"%s\"", o->name, o->def,
                         *(char *const *)field);
            break;
        case OPT_INT:
            if (*(const long *)field != strtol(o->def, NULL, 10))
                fail_msg("--%s: default %s, config has %ld", o->name, o->def, *(const long *)field);
            break;
        case OPT_BOOL:
            if (*(const bool *)field != !strcmp(o->def, "true"))
                fail_msg("--%s: default %s, config has %d", o->name, o->def, *(const bool *)field);
            break;
        }
    }
    config_cleanup(&p.cfg);
}

/* Every option has a help text, a command, a field and a unique dashed name. */
static void test_table_sane(void **state)
{
    (void)state;
    assert_true(config_n_options > 0);
    for (size_t i = 0; i < config_n_options; i++) {
        const struct config_option *o = &config_options[i];

        assert_non_null(o->name);
        assert_non_null(o->help);
        assert_true(o->help[0] != '\0');
        assert_true(o->cmds != 0);
        assert_true(o->offset < sizeof(struct config));
        for (const char *c = o->name; *c; c++)
            if (!islower((unsigned char)*c) && !isdigit((unsigned char)*c) && *c != '-')
                fail_msg("option name \"%s\" is not lower-case-with-dashes", o->name);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(config_options[j].name, o->name))
                fail_msg("option --%s is listed twice", o->name);
    }
}

/* ROWCAST_* variables replace the defaults. */
static void test_env_overrides_default(void **state)
{
    (void)state;
    char *env[] = {"HOME=/root",
                   "ROWCAST_LISTEN=0.0.0.0:9999",
                   "ROWCAST_WORKERS=3",
                   "ROWCAST_DB=sqlite:/tmp/env.db",
                   "ROWCAST_MAX_FRAME_BYTES=2048",
                   "ROWCAST_CHECK_ORIGIN=example.com,example.org",
                   NULL};
    struct parsed p;

    parse(&p, CMD_SERVE, NULL, env);
    assert_parsed_ok(&p);
    assert_string_equal(p.cfg.listen, "0.0.0.0:9999");
    assert_int_equal(p.cfg.workers, 3);
    assert_string_equal(p.cfg.db, "sqlite:/tmp/env.db");
    assert_int_equal(p.cfg.max_frame_bytes, 2048);
    assert_string_equal(p.cfg.check_origin, "example.com,example.org");
    /* Untouched options keep their defaults. */
    assert_int_equal(p.cfg.idle_timeout, 60);
    assert_string_equal(p.cfg.log_level, "info");
    config_cleanup(&p.cfg);
}

/* Only the exact ROWCAST_<NAME>=value entry is the variable. */
static void test_env_name_must_match_exactly(void **state)
{
    (void)state;
    /* Neither a longer name nor a different case nor a missing '=' is the variable. */
    char *env[] = {"ROWCAST_DBX=sqlite:/tmp/x.db", "rowcast_db=sqlite:/tmp/y.db", "ROWCAST_DB",
                   "XROWCAST_LISTEN=1.2.3.4:5", NULL};
    struct parsed p;

    parse(&p, CMD_SERVE, NULL, env);
    assert_parsed_ok(&p);
    assert_string_equal(p.cfg.db, "sqlite:rowcast.db");
    assert_string_equal(p.cfg.listen, "127.0.0.1:4000");
    config_cleanup(&p.cfg);
}

/* Secrets from the environment are not flagged as defaults. */
static void test_env_secret_not_default(void **state)
{
    (void)state;
    char *env[] = {"ROWCAST_JWT_SECRET=" REAL_SECRET, "ROWCAST_API_KEY=" REAL_API_KEY, NULL};
    struct parsed p;

    parse(&p, CMD_SERVE, NULL, env);
    assert_parsed_ok(&p);
    assert_string_equal(p.cfg.jwt_secret, REAL_SECRET);
    assert_false(p.cfg.jwt_secret_is_default);
    assert_string_equal(p.cfg.api_key, REAL_API_KEY);
    assert_false(p.cfg.api_key_is_default);
    config_cleanup(&p.cfg);
}

/* A flag beats the environment variable of the same option. */
static void test_flag_overrides_env(void **state)
{
    (void)state;
    char *env[] = {"ROWCAST_LISTEN=0.0.0.0:9999", "ROWCAST_WORKERS=3", "ROWCAST_LOG_LEVEL=debug",
                   NULL};
    char *argv[] = {"--listen", "127.0.0.1:8080", "--workers=5", NULL};
    struct parsed p;

    parse(&p, CMD_SERVE, argv, env);
    assert_parsed_ok(&p);
    assert_string_equal(p.cfg.listen, "127.0.0.1:8080");
    assert_int_equal(p.cfg.workers, 5);
    /* The variable without a flag still applies. */
    assert_string_equal(p.cfg.log_level, "debug");
    config_cleanup(&p.cfg);
}

/* --name=value and --name value both work. */
static void test_flag_forms(void **state)
{
    (void)state;
    char *argv[] = {"--db=sqlite:/tmp/a=b.db", "--listen", "[::1]:4001",      "--idle-timeout=15",
                    "--max-channels",          "7",        "--check-origin=", NULL};
    struct parsed p;

    parse(&p, CMD_SERVE, argv, NULL);
    assert_parsed_ok(&p);
    /* Only the first '=' separates name and value. */
    assert_string_equal(p.cfg.db, "sqlite:/tmp/a=b.db");
    assert_string_equal(p.cfg.listen, "[::1]:4001");
    assert_int_equal(p.cfg.idle_timeout, 15);
    assert_int_equal(p.cfg.max_channels, 7);
    assert_string_equal(p.cfg.check_origin, "");
    config_cleanup(&p.cfg);
}

/* A repeated flag keeps its last value. */
static void test_last_flag_wins(void **state)
{
    (void)state;
    char *argv[] = {"--workers", "2", "--workers=9", "--listen=a:1", "--listen", "b:2", NULL};
    struct parsed p;

    parse(&p, CMD_SERVE, argv, NULL);
    assert_parsed_ok(&p);
    assert_int_equal(p.cfg.workers, 9);
    assert_string_equal(p.cfg.listen, "b:2");
    config_cleanup(&p.cfg);
}

/* An unknown option is refused, naming it. */
static void test_unknown_option(void **state)
{
    (void)state;
    char *argv1[] = {"--no-such-option", "1", NULL};
    char *argv2[] = {"--listen=1.2.3.4:5", "--bogus=1", NULL};
    char *argv3[] = {"--list", "x", NULL}; /* a prefix of --listen is not --listen */
    char *argv4[] = {"--no-listen", NULL}; /* --no- only negates boolean options */
    struct parsed p;

    parse(&p, CMD_SERVE, argv1, NULL);
    assert_parse_error(&p, "--no-such-option");
    assert_non_null(strstr(p.err, "unknown option"));
    config_cleanup(&p.cfg);
    parse(&p, CMD_SERVE, argv2, NULL);
    assert_parse_error(&p, "--bogus");
    config_cleanup(&p.cfg);
    parse(&p, CMD_SERVE, argv3, NULL);
    assert_parse_error(&p, "--list");
    config_cleanup(&p.cfg);
    parse(&p, CMD_SERVE, argv4, NULL);
    assert_parse_error(&p, "unknown option");
    config_cleanup(&p.cfg);
}

/* An option of another subcommand is refused, naming it. */
static void test_option_of_other_command(void **state)
{
    (void)state;
    char *serve_argv[] = {"--user", "alice", NULL};
    char *token_argv[] = {"--user", "alice", "--listen", "0.0.0.0:1", NULL};
    char *migrate_argv[] = {"--api-key", REAL_API_KEY, NULL};
    struct parsed p;

    assert_int_equal(option("user")->cmds, CMD_TOKEN);
    parse(&p, CMD_SERVE, serve_argv, NULL);
    assert_parse_error(&p, "--user");
    config_cleanup(&p.cfg);

    assert_int_equal(option("listen")->cmds & CMD_TOKEN, 0);
    parse(&p, CMD_TOKEN, token_argv, NULL);
    assert_parse_error(&p, "--listen");
    config_cleanup(&p.cfg);

    assert_int_equal(option("api-key")->cmds & CMD_MIGRATE, 0);
    parse(&p, CMD_MIGRATE, migrate_argv, NULL);
    assert_parse_error(&p, "--api-key");
    config_cleanup(&p.cfg);
}

/* Variables of other subcommands are neither applied nor errors. */
static void test_env_of_other_command_ignored(void **state)
{
    (void)state;
    /* The environment is shared by every subcommand: a variable for another one is not
     * an error, and not applied either. */
    char *env[] = {"ROWCAST_USER=alice", "ROWCAST_TTL=nonsense", NULL};
    struct parsed p;

    parse(&p, CMD_SERVE, NULL, env);
    assert_parsed_ok(&p);
    assert_null(p.cfg.user);
    assert_int_equal(p.cfg.ttl, 3600);
    config_cleanup(&p.cfg);
}

/* Arguments that are not --options are refused. */
static void test_positional_argument_rejected(void **state)
{
    (void)state;
    char *argv1[] = {"listen", NULL};
    char *argv2[] = {"-l", "x", NULL};
    char *argv3[] = {"--", NULL};
    struct parsed p;

    parse(&p, CMD_SERVE, argv1, NULL);
    assert_parse_error(&p, "listen");
    config_cleanup(&p.cfg);
    parse(&p, CMD_SERVE, argv2, NULL);
    assert_parse_error(&p, "-l");
    config_cleanup(&p.cfg);
    parse(&p, CMD_SERVE, argv3, NULL);
    assert_int_equal(p.rc, RC_EINVAL);
    config_cleanup(&p.cfg);
}

/* A trailing option without its value is refused. */
static void test_missing_value(void **state)
{
    (void)state;
    char *argv[] = {"--workers", "2", "--listen", NULL};
    struct parsed p;

    parse(&p, CMD_SERVE, argv, NULL);
    assert_parse_error(&p, "--listen");
    config_cleanup(&p.cfg);
}

/* An integer option refuses anything but a non-negative decimal. */
static void test_int_rejects_non_integers(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "abc", "", "12abc", "1.5", "-1", " ", "0x10", "99999999999999999999999999", "1 2",
    };
    struct parsed p;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *argv[] = {"--workers", (char *)bad[i], NULL};

        parse(&p, CMD_SERVE, argv, NULL);
        if (p.rc != RC_EINVAL)
            fail_msg("--workers \"%s\" accepted (rc=%d, workers=%ld)", bad[i], p.rc, p.cfg.workers);
        assert_non_null(strstr(p.err, "--workers"));
        config_cleanup(&p.cfg);
    }
}

/* A non-integer in an integer variable is refused, naming the variable. */
static void test_int_env_rejects_non_integer(void **state)
{
    (void)state;
    char *env[] = {"ROWCAST_IDLE_TIMEOUT=soon", NULL};
    struct parsed p;

    parse(&p, CMD_SERVE, NULL, env);
    assert_parse_error(&p, "ROWCAST_IDLE_TIMEOUT");
    assert_non_null(strstr(p.err, "soon"));
    config_cleanup(&p.cfg);
}

/* Range checks on integer options, at and past each bound. */
static void test_int_limits(void **state)
{
    (void)state;
    char *argv_ok[] = {"--workers=0", "--http-threads=64", "--batch-max=1", "--data-poll-ms=1",
                       NULL};
    char *argv_threads[] = {"--http-threads=65", NULL};
    char *argv_batch[] = {"--batch-max=0", NULL};
    char *argv_frame[] = {"--max-frame-bytes=1023", NULL};
    char *argv_idle[] = {"--idle-timeout=0", NULL};
    struct parsed p;

    parse(&p, CMD_SERVE, argv_ok, NULL);
    assert_parsed_ok(&p);
    assert_int_equal(p.cfg.http_threads, 64);
    assert_int_equal(p.cfg.batch_max, 1);
    config_cleanup(&p.cfg);
    parse(&p, CMD_SERVE, argv_threads, NULL);
    assert_parse_error(&p, "--http-threads");
    config_cleanup(&p.cfg);
    parse(&p, CMD_SERVE, argv_batch, NULL);
    assert_parse_error(&p, "--batch-max");
    config_cleanup(&p.cfg);
    parse(&p, CMD_SERVE, argv_frame, NULL);
    assert_parse_error(&p, "--max-frame-bytes");
    config_cleanup(&p.cfg);
    parse(&p, CMD_SERVE, argv_idle, NULL);
    assert_parse_error(&p, "--idle-timeout");
    config_cleanup(&p.cfg);
}

/* --env accepts only dev and prod. */
static void test_env_value_checked(void **state)
{
    (void)state;
    char *argv[] = {"--env", "staging", NULL};
    struct parsed p;

    parse(&p, CMD_SERVE, argv, NULL);
    assert_parse_error(&p, "staging");
    config_cleanup(&p.cfg);
}

/* prod without a JWT secret is refused. */
static void test_prod_without_secret_refused(void **state)
{
    (void)state;
    char *argv[] = {"--env", "prod", "--api-key", REAL_API_KEY, NULL};
    struct parsed p;

    parse(&p, CMD_SERVE, argv, NULL);
    assert_parse_error(&p, "jwt-secret");
    config_cleanup(&p.cfg);

    /* An empty secret is no secret. */
    char *argv_empty[] = {"--env=prod", "--jwt-secret=", "--api-key", REAL_API_KEY, NULL};

    parse(&p, CMD_SERVE, argv_empty, NULL);
    assert_parse_error(&p, "jwt-secret");
    config_cleanup(&p.cfg);
}

/* prod with the development JWT secret is refused, by flag or variable. */
static void test_prod_with_dev_secret_refused(void **state)
{
    (void)state;
    char *argv[] = {"--env",      "prod", "--jwt-secret", CONFIG_DEV_JWT_SECRET, "--api-key",
                    REAL_API_KEY, NULL};
    char *env[] = {"ROWCAST_ENV=prod", "ROWCAST_JWT_SECRET=" CONFIG_DEV_JWT_SECRET,
                   "ROWCAST_API_KEY=" REAL_API_KEY, NULL};
    struct parsed p;

    parse(&p, CMD_SERVE, argv, NULL);
    assert_parse_error(&p, "development JWT secret");
    config_cleanup(&p.cfg);
    parse(&p, CMD_SERVE, NULL, env);
    assert_parse_error(&p, "development JWT secret");
    config_cleanup(&p.cfg);
}

/* prod serve needs a real API key. */
static void test_prod_api_key_rules(void **state)
{
    (void)state;
    char *argv_none[] = {"--env", "prod", "--jwt-secret", REAL_SECRET, NULL};
    char *argv_dev[] = {
        "--env", "prod", "--jwt-secret", REAL_SECRET, "--api-key", CONFIG_DEV_API_KEY, NULL};
    struct parsed p;

    parse(&p, CMD_SERVE, argv_none, NULL);
    assert_parse_error(&p, "api-key");
    config_cleanup(&p.cfg);
    parse(&p, CMD_SERVE, argv_dev, NULL);
    assert_parse_error(&p, "development API key");
    config_cleanup(&p.cfg);
}

/* prod with a real secret and key is accepted, by flags or variables. */
static void test_prod_with_real_secret_accepted(void **state)
{
    (void)state;
    char *argv[] = {"--env", "prod", "--jwt-secret", REAL_SECRET, "--api-key", REAL_API_KEY, NULL};
    char *env[] = {"ROWCAST_ENV=prod", "ROWCAST_JWT_SECRET=" REAL_SECRET,
                   "ROWCAST_API_KEY=" REAL_API_KEY, NULL};
    struct parsed p;

    parse(&p, CMD_SERVE, argv, NULL);
    assert_parsed_ok(&p);
    assert_string_equal(p.cfg.env, "prod");
    assert_string_equal(p.cfg.jwt_secret, REAL_SECRET);
    assert_false(p.cfg.jwt_secret_is_default);
    assert_string_equal(p.cfg.api_key, REAL_API_KEY);
    assert_false(p.cfg.api_key_is_default);
    config_cleanup(&p.cfg);

    parse(&p, CMD_SERVE, NULL, env);
    assert_parsed_ok(&p);
    assert_string_equal(p.cfg.env, "prod");
    assert_string_equal(p.cfg.jwt_secret, REAL_SECRET);
    config_cleanup(&p.cfg);
}

/* prod token needs a secret but no key; prod migrate needs neither. */
static void test_prod_token_and_migrate(void **state)
{
    (void)state;
    char *token_no_secret[] = {"--env", "prod", "--user", "alice", NULL};
    char *token_ok[] = {"--env", "prod", "--user", "alice", "--jwt-secret", REAL_SECRET, NULL};
    char *migrate[] = {"--env", "prod", "--db", "sqlite:/tmp/m.db", NULL};
    struct parsed p;

    /* A token signed with the public development secret would be forgeable. */
    parse(&p, CMD_TOKEN, token_no_secret, NULL);
    assert_parse_error(&p, "jwt-secret");
    config_cleanup(&p.cfg);
    /* token has no API key to check. */
    parse(&p, CMD_TOKEN, token_ok, NULL);
    assert_parsed_ok(&p);
    assert_string_equal(p.cfg.jwt_secret, REAL_SECRET);
    config_cleanup(&p.cfg);
    /* migrate needs neither. */
    parse(&p, CMD_MIGRATE, migrate, NULL);
    assert_parsed_ok(&p);
    assert_string_equal(p.cfg.db, "sqlite:/tmp/m.db");
    config_cleanup(&p.cfg);
}

/* token needs a non-empty --user (flag or variable). */
static void test_token_requires_user(void **state)
{
    (void)state;
    char *argv_none[] = {"--ttl", "60", NULL};
    char *argv_empty[] = {"--user=", NULL};
    char *argv_ok[] = {"--user", "alice", "--ttl=120", NULL};
    char *env_ok[] = {"ROWCAST_USER=bob", NULL};
    struct parsed p;

    parse(&p, CMD_TOKEN, argv_none, NULL);
    assert_parse_error(&p, "--user");
    config_cleanup(&p.cfg);
    parse(&p, CMD_TOKEN, argv_empty, NULL);
    assert_parse_error(&p, "--user");
    config_cleanup(&p.cfg);
    parse(&p, CMD_TOKEN, argv_ok, NULL);
    assert_parsed_ok(&p);
    assert_string_equal(p.cfg.user, "alice");
    assert_int_equal(p.cfg.ttl, 120);
    config_cleanup(&p.cfg);
    parse(&p, CMD_TOKEN, NULL, env_ok);
    assert_parsed_ok(&p);
    assert_string_equal(p.cfg.user, "bob");
    config_cleanup(&p.cfg);
}

/* token --ttl is 1..31536000 seconds. */
static void test_token_ttl_bounds(void **state)
{
    (void)state;
    char *argv_zero[] = {"--user", "alice", "--ttl", "0", NULL};
    char *argv_max[] = {"--user", "alice", "--ttl", "31536000", NULL};
    char *argv_over[] = {"--user", "alice", "--ttl", "31536001", NULL};
    struct parsed p;

    parse(&p, CMD_TOKEN, argv_zero, NULL);
    assert_parse_error(&p, "--ttl");
    config_cleanup(&p.cfg);
    parse(&p, CMD_TOKEN, argv_max, NULL);
    assert_parsed_ok(&p);
    assert_int_equal(p.cfg.ttl, 31536000);
    config_cleanup(&p.cfg);
    parse(&p, CMD_TOKEN, argv_over, NULL);
    assert_parse_error(&p, "--ttl");
    config_cleanup(&p.cfg);
}

/* --help of each subcommand lists exactly its options with their variables. */
static void test_help_lists_options_of_command(void **state)
{
    (void)state;
    static const enum config_cmd cmds[] = {CMD_SERVE, CMD_MIGRATE, CMD_TOKEN};

    for (size_t c = 0; c < sizeof cmds / sizeof cmds[0]; c++) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);

        assert_non_null(f);
        config_print_help(f, cmds[c]);
        assert_int_equal(fclose(f), 0);
        for (size_t i = 0; i < config_n_options; i++) {
            const struct config_option *o = &config_options[i];
            char flag[64], env[64];
            bool want = (o->cmds & cmds[c]) != 0;

            snprintf(flag, sizeof flag, "--%s", o->name);
            env_var_of(o->name, env, sizeof env);
            if (has_word(text, flag, "-_") != want)
                fail_msg("help of command %d: %s %s", cmds[c], flag,
                         want ? "missing" : "listed but not accepted");
            if (has_word(text, env, "_") != want)
                fail_msg("help of command %d: %s %s", cmds[c], env,
                         want ? "missing" : "listed but not accepted");
        }
        free(text);
    }
}

/* README.md documents every option as --name and ROWCAST_NAME. */
static void test_every_option_in_readme(void **state)
{
    (void)state;
    const char *path = TOP_SRCDIR "/README.md";
    char *readme = read_file(path);

    if (!readme)
        fail_msg("%s is missing: every option in config_options must be documented there", path);
    for (size_t i = 0; i < config_n_options; i++) {
        const struct config_option *o = &config_options[i];
        char flag[64], env[64];

        snprintf(flag, sizeof flag, "--%s", o->name);
        env_var_of(o->name, env, sizeof env);
        if (!has_word(readme, flag, "-_"))
            fail_msg("README.md does not mention %s", flag);
        if (!has_word(readme, env, "_"))
            fail_msg("README.md does not mention %s", env);
    }
    free(readme);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_defaults_match_table),
        cmocka_unit_test(test_table_sane),
        cmocka_unit_test(test_env_overrides_default),
        cmocka_unit_test(test_env_name_must_match_exactly),
        cmocka_unit_test(test_env_secret_not_default),
        cmocka_unit_test(test_flag_overrides_env),
        cmocka_unit_test(test_flag_forms),
        cmocka_unit_test(test_last_flag_wins),
        cmocka_unit_test(test_unknown_option),
        cmocka_unit_test(test_option_of_other_command),
        cmocka_unit_test(test_env_of_other_command_ignored),
        cmocka_unit_test(test_positional_argument_rejected),
        cmocka_unit_test(test_missing_value),
        cmocka_unit_test(test_int_rejects_non_integers),
        cmocka_unit_test(test_int_env_rejects_non_integer),
        cmocka_unit_test(test_int_limits),
        cmocka_unit_test(test_env_value_checked),
        cmocka_unit_test(test_prod_without_secret_refused),
        cmocka_unit_test(test_prod_with_dev_secret_refused),
        cmocka_unit_test(test_prod_api_key_rules),
        cmocka_unit_test(test_prod_with_real_secret_accepted),
        cmocka_unit_test(test_prod_token_and_migrate),
        cmocka_unit_test(test_token_requires_user),
        cmocka_unit_test(test_token_ttl_bounds),
        cmocka_unit_test(test_help_lists_options_of_command),
        cmocka_unit_test(test_every_option_in_readme),
    };

    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
