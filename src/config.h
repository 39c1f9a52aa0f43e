/* config.h - every setting of rowcast, from one table: defaults, ROWCAST_* environment
 * variables, then command-line flags. The table is also the source of --help.
 * Parsed once on the main thread before any other thread starts; read-only afterwards. */
#ifndef RC_CONFIG_H
#define RC_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "rc.h"

/* Which subcommands an option applies to (bit mask). */
enum config_cmd {
    CMD_SERVE = 1,
    CMD_MIGRATE = 2,
    CMD_TOKEN = 4,
};

enum config_type {
    OPT_STRING,
    OPT_INT,  /* non-negative decimal integer */
    OPT_BOOL, /* flag --name sets true, --no-name sets false; env "1"/"true"/"0"/"false" */
};

struct config {
    char *db;            /* sqlite:PATH or postgres://… */
    char *listen;        /* host:port */
    char *jwt_secret;
    char *api_key;
    char *env;           /* dev or prod */
    char *check_origin;  /* comma-separated origins, "" = no check */
    char *log_level;
    char *log_file;      /* NULL or "": stderr */
    long workers;        /* I/O worker threads, 0 = one per core */
    long http_threads;   /* libmicrohttpd threads */
    long idle_timeout;   /* seconds without inbound traffic before a socket is closed */
    long max_frame_bytes;
    long max_body_bytes; /* REST request bodies */
    long max_json_depth;
    long max_channels;   /* channels per socket */
    long outbound_queue_bytes; /* per connection; over it the socket is a slow consumer */
    long batch_max;      /* writes per group commit */
    long data_poll_ms;   /* how often SQLite mode looks for writes by other processes */
    char *sqlite_sync;   /* full or normal */
    long rate_limit;     /* channel events per second per (user, topic); 0 = off */
    long rate_burst;
    long max_conns_per_user;
    long presence_batch_ms; /* merge presence diffs of one topic over this window */
    long reap_after_ms;  /* PostgreSQL cluster: a node silent this long is reaped */
    bool demo;           /* serve the demo page at / (and, in dev, POST /dev/token) */
    char *demo_dir;
    /* token subcommand */
    char *user;
    long ttl;
    /* set by config_parse */
    bool jwt_secret_is_default;
    bool api_key_is_default;
};

struct config_option {
    const char *name;    /* flag without dashes; env var is ROWCAST_ + upper(name, '-'→'_') */
    enum config_type type;
    const char *def;     /* default as text, NULL for none */
    unsigned cmds;       /* enum config_cmd mask */
    size_t offset;       /* into struct config */
    const char *help;
};

extern const struct config_option config_options[];
extern const size_t config_n_options;

/* Fills cfg with defaults, then environment (envp, NULL-terminated "K=V" strings; NULL
 * for none), then argv[0..argc) flags ("--name value", "--name=value", "--flag",
 * "--no-flag"). cmd selects which options are accepted. On error writes a message into
 * err (errlen bytes) and returns RC_EINVAL; cfg must still be passed to config_cleanup.
 * Applies the production rules: in env "prod" the default JWT secret and API key are
 * refused. */
int config_parse(struct config *cfg, enum config_cmd cmd, int argc, char **argv, char **envp,
                 char *err, size_t errlen) MUSTCHECK;

/* Frees the strings of cfg. */
void config_cleanup(struct config *cfg);

/* Writes the options of cmd, with defaults and env names, to f. */
void config_print_help(FILE *f, enum config_cmd cmd);

#define CONFIG_DEV_JWT_SECRET "rowcast-dev-secret-do-not-use-in-production"
#define CONFIG_DEV_API_KEY "rowcast-dev-api-key"

#endif
