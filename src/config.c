#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "util/xmalloc.h"

#define OFF(f) offsetof(struct config, f)
#define SERVE CMD_SERVE
#define ALL (CMD_SERVE | CMD_MIGRATE | CMD_TOKEN)

const struct config_option config_options[] = {
    {"db", OPT_STRING, "sqlite:rowcast.db", SERVE | CMD_MIGRATE, OFF(db),
     "database: sqlite:PATH (embedded, one node) or postgres://USER@HOST/DB"},
    {"listen", OPT_STRING, "127.0.0.1:4000", SERVE, OFF(listen), "HTTP and WebSocket address"},
    {"jwt-secret", OPT_STRING, NULL, SERVE | CMD_TOKEN, OFF(jwt_secret),
     "HMAC key for socket tokens (HS256); a development default is used, loudly, outside prod"},
    {"api-key", OPT_STRING, NULL, SERVE, OFF(api_key),
     "bearer key for the admin REST API; a development default is used, loudly, outside prod"},
    {"env", OPT_STRING, "dev", ALL, OFF(env), "dev or prod (prod refuses development defaults)"},
    {"check-origin", OPT_STRING, "", SERVE, OFF(check_origin),
     "comma-separated allowed Origin hosts for sockets (empty: no check)"},
    {"log-level", OPT_STRING, "info", ALL, OFF(log_level), "debug, info, warn or error"},
    {"log-file", OPT_STRING, "", ALL, OFF(log_file),
     "append logs to this file instead of stderr; SIGHUP reopens it (log rotation)"},
    {"workers", OPT_INT, "0", SERVE, OFF(workers), "I/O worker threads (0: one per core)"},
    {"http-threads", OPT_INT, "2", SERVE, OFF(http_threads),
     "HTTP front threads (REST, handshakes, long-poll requests)"},
    {"idle-timeout", OPT_INT, "60", SERVE, OFF(idle_timeout),
     "seconds without inbound traffic before a socket is closed"},
    {"max-frame-bytes", OPT_INT, "1048576", SERVE, OFF(max_frame_bytes),
     "largest WebSocket message accepted"},
    {"max-body-bytes", OPT_INT, "65536", SERVE, OFF(max_body_bytes),
     "largest REST request body accepted"},
    {"max-json-depth", OPT_INT, "32", SERVE, OFF(max_json_depth),
     "deepest JSON nesting accepted from clients"},
    {"max-channels", OPT_INT, "100", SERVE, OFF(max_channels), "channels one socket may join"},
    {"outbound-queue-bytes", OPT_INT, "4194304", SERVE, OFF(outbound_queue_bytes),
     "bytes queued to one socket before it is closed as a slow consumer"},
    {"batch-max", OPT_INT, "1024", SERVE, OFF(batch_max), "writes per group commit"},
    {"data-poll-ms", OPT_INT, "20", SERVE, OFF(data_poll_ms),
     "SQLite mode: how often to look for rows written by other processes"},
    {"sqlite-sync", OPT_STRING, "full", SERVE, OFF(sqlite_sync),
     "SQLite: full (fsync each group commit; survives power loss) or normal (survives "
     "process crashes; faster)"},
    {"rate-limit", OPT_INT, "10", SERVE, OFF(rate_limit),
     "channel events per second per user and topic (0: no limit)"},
    {"rate-burst", OPT_INT, "20", SERVE, OFF(rate_burst), "burst size of that rate limit"},
    {"max-conns-per-user", OPT_INT, "100", SERVE, OFF(max_conns_per_user),
     "open sockets one user may have"},
    {"presence-batch-ms", OPT_INT, "50", SERVE, OFF(presence_batch_ms),
     "merge each topic's presence changes over this many ms into one presence_diff (0: one "
     "diff per change)"},
    {"reap-after-ms", OPT_INT, "5000", SERVE, OFF(reap_after_ms),
     "PostgreSQL cluster: reap a node (and its presences) whose heartbeat is this old"},
    {"demo", OPT_BOOL, "true", SERVE, OFF(demo),
     "serve the demo chat page at / (default on in dev, off in prod; --no-demo turns it off)"},
    {"demo-dir", OPT_STRING, "contrib/demo", SERVE, OFF(demo_dir),
     "directory of the demo page; phoenix.js comes from DIR/../node_modules/phoenix"},
    {"user", OPT_STRING, NULL, CMD_TOKEN, OFF(user), "token: the user id (sub claim)"},
    {"ttl", OPT_INT, "3600", CMD_TOKEN, OFF(ttl), "token: lifetime in seconds"},
};
const size_t config_n_options = sizeof config_options / sizeof config_options[0];

/* Formats an error message into err. */
static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return RC_EINVAL;
}

/* Stores text as the value of option o. */
static int set_value(struct config *cfg, const struct config_option *o, const char *text,
                     const char *origin, char *err, size_t errlen)
{
    void *field = (char *)cfg + o->offset;
    switch (o->type) {
    case OPT_STRING: {
        char **s = field;
        free(*s);
        *s = xstrdup(text);
        return 0;
    }
    case OPT_INT: {
        char *end;
        errno = 0;
        long v = strtol(text, &end, 10);
        if (errno || end == text || *end || v < 0 || !(*text >= '0' && *text <= '9'))
            return fail(err, errlen, "%s: --%s wants a non-negative integer, got \"%s\"", origin,
                        o->name, text);
        *(long *)field = v;
        return 0;
    }
    case OPT_BOOL: {
        bool *b = field;
        if (!strcmp(text, "1") || !strcmp(text, "true") || !strcmp(text, "yes"))
            *b = true;
        else if (!strcmp(text, "0") || !strcmp(text, "false") || !strcmp(text, "no"))
            *b = false;
        else
            return fail(err, errlen, "%s: --%s wants true or false, got \"%s\"", origin, o->name,
                        text);
        return 0;
    }
    }
    return RC_EINVAL;
}

/* Finds an option by flag name (n bytes). */
static const struct config_option *find_option(const char *name, size_t n)
{
    for (size_t i = 0; i < config_n_options; i++)
        if (strlen(config_options[i].name) == n && !strncmp(config_options[i].name, name, n))
            return &config_options[i];
    return NULL;
}

/* Builds ROWCAST_<NAME> for an option. */
static void env_name(const struct config_option *o, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "ROWCAST_");
    for (const char *p = o->name; *p && n + 1 < cap; p++)
        out[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    out[n] = '\0';
}

/* True when --demo/--no-demo or ROWCAST_DEMO was given (prod turns the demo off only
 * by default). */
static bool demo_explicit(int argc, char **argv, char **envp)
{
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--demo") || !strcmp(argv[i], "--no-demo") ||
            !strncmp(argv[i], "--demo=", 7))
            return true;
    for (char **e = envp; e && *e; e++)
        if (!strncmp(*e, "ROWCAST_DEMO=", 13))
            return true;
    return false;
}

int config_parse(struct config *cfg, enum config_cmd cmd, int argc, char **argv, char **envp,
                 char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < config_n_options; i++) {
        const struct config_option *o = &config_options[i];
        if (o->def && set_value(cfg, o, o->def, "default", err, errlen))
            return RC_EINVAL;
    }
    for (size_t i = 0; envp && i < config_n_options; i++) {
        const struct config_option *o = &config_options[i];
        char name[64];
        env_name(o, name, sizeof name);
        size_t nl = strlen(name);
        for (char **e = envp; *e; e++) {
            if (strncmp(*e, name, nl) || (*e)[nl] != '=')
                continue;
            if (!(o->cmds & cmd))
                break;
            if (set_value(cfg, o, *e + nl + 1, name, err, errlen))
                return RC_EINVAL;
        }
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) || !a[2])
            return fail(err, errlen, "unexpected argument \"%s\" (see --help)", a);
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        const struct config_option *o = find_option(name, nl);
        bool negated = false;
        if (!o && nl > 3 && !strncmp(name, "no-", 3)) {
            o = find_option(name + 3, nl - 3);
            negated = o && o->type == OPT_BOOL;
            if (!negated)
                o = NULL;
        }
        if (!o || !(o->cmds & cmd))
            return fail(err, errlen, "unknown option --%.*s (see --help)", (int)nl, name);
        const char *val;
        if (o->type == OPT_BOOL && !eq) {
            val = negated ? "false" : "true";
        } else if (eq) {
            val = eq + 1;
        } else {
            if (i + 1 >= argc)
                return fail(err, errlen, "option --%s needs a value", o->name);
            val = argv[++i];
        }
        if (set_value(cfg, o, val, "command line", err, errlen))
            return RC_EINVAL;
    }
    if (strcmp(cfg->env, "dev") && strcmp(cfg->env, "prod"))
        return fail(err, errlen, "--env must be dev or prod, got \"%s\"", cfg->env);
    bool prod = !strcmp(cfg->env, "prod");
    if (prod && !demo_explicit(argc, argv, envp))
        cfg->demo = false;
    if (!cfg->jwt_secret || !*cfg->jwt_secret) {
        if (prod && (cmd & (CMD_SERVE | CMD_TOKEN)))
            return fail(err, errlen, "--jwt-secret (or ROWCAST_JWT_SECRET) is required with --env prod");
        free(cfg->jwt_secret);
        cfg->jwt_secret = xstrdup(CONFIG_DEV_JWT_SECRET);
        cfg->jwt_secret_is_default = true;
    } else if (prod && !strcmp(cfg->jwt_secret, CONFIG_DEV_JWT_SECRET)) {
        return fail(err, errlen, "the development JWT secret is refused with --env prod");
    }
    if (!cfg->api_key || !*cfg->api_key) {
        if (prod && (cmd & CMD_SERVE))
            return fail(err, errlen, "--api-key (or ROWCAST_API_KEY) is required with --env prod");
        free(cfg->api_key);
        cfg->api_key = xstrdup(CONFIG_DEV_API_KEY);
        cfg->api_key_is_default = true;
    } else if (prod && !strcmp(cfg->api_key, CONFIG_DEV_API_KEY)) {
        return fail(err, errlen, "the development API key is refused with --env prod");
    }
    if (cmd == CMD_TOKEN && (!cfg->user || !*cfg->user))
        return fail(err, errlen, "token: --user ID is required");
    if (cmd == CMD_TOKEN && (cfg->ttl < 1 || cfg->ttl > 31536000))
        return fail(err, errlen, "token: --ttl must be between 1 and 31536000 seconds");
    if (cfg->idle_timeout < 1)
        return fail(err, errlen, "--idle-timeout must be at least 1 second");
    if (cfg->max_frame_bytes < 1024)
        return fail(err, errlen, "--max-frame-bytes must be at least 1024");
    if (cfg->max_body_bytes < 1024)
        return fail(err, errlen, "--max-body-bytes must be at least 1024");
    if (cfg->max_json_depth < 2)
        return fail(err, errlen, "--max-json-depth must be at least 2");
    if (cfg->batch_max < 1)
        return fail(err, errlen, "--batch-max must be at least 1");
    if (cfg->http_threads < 1 || cfg->http_threads > 64)
        return fail(err, errlen, "--http-threads must be between 1 and 64");
    if (cmd == CMD_SERVE && strcmp(cfg->sqlite_sync, "full") && strcmp(cfg->sqlite_sync, "normal"))
        return fail(err, errlen, "--sqlite-sync must be full or normal, got \"%s\"", cfg->sqlite_sync);
    if (cfg->rate_limit > 0 && cfg->rate_burst < 1)
        return fail(err, errlen, "--rate-burst must be at least 1");
    if (cfg->max_conns_per_user < 1)
        return fail(err, errlen, "--max-conns-per-user must be at least 1");
    if (cfg->max_channels < 1)
        return fail(err, errlen, "--max-channels must be at least 1");
    if (cfg->outbound_queue_bytes < 65536)
        return fail(err, errlen, "--outbound-queue-bytes must be at least 65536");
    if (cfg->data_poll_ms < 1)
        return fail(err, errlen, "--data-poll-ms must be at least 1");
    return 0;
}

void config_cleanup(struct config *cfg)
{
    for (size_t i = 0; i < config_n_options; i++) {
        const struct config_option *o = &config_options[i];
        if (o->type == OPT_STRING) {
            char **s = (char **)((char *)cfg + o->offset);
            free(*s);
            *s = NULL;
        }
    }
}

void config_print_help(FILE *f, enum config_cmd cmd)
{
    for (size_t i = 0; i < config_n_options; i++) {
        const struct config_option *o = &config_options[i];
        if (!(o->cmds & cmd))
            continue;
        char env[64];
        env_name(o, env, sizeof env);
        fprintf(f, "  --%-22s %s\n  %-24s [env %s%s%s]\n", o->name, o->help, "", env,
                o->def && *o->def ? ", default " : "", o->def && *o->def ? o->def : "");
    }
}
