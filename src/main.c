/* main.c - the rowcast command line: serve (default), migrate, token. */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "config.h"
#include "http.h"
#include "hub.h"
#include "jwt.h"
#include "longpoll.h"
#include "presence.h"
#include "presence_batch.h"
#include "socket.h"
#include "store.h"
#include "util/clock.h"
#include "util/log.h"
#include "worker.h"
#include "ws.h"


extern char **environ;

/* Prints the usage text. */
static void usage(FILE *f)
{
    fprintf(f, "rowcast %s - a real-time messaging server for Phoenix Channels clients\n\n"
               "usage: rowcast [serve] [options]     run the server (default)\n"
               "       rowcast migrate [options]     apply pending database migrations\n"
               "       rowcast token --user ID [--ttl SECONDS] [options]\n"
               "                                     print a socket token (JWT HS256)\n"
               "       rowcast --help | --version\n\n"
               "serve options:\n",
            ROWCAST_VERSION);
    config_print_help(f, CMD_SERVE);
    fprintf(f, "\nmigrate options:\n");
    config_print_help(f, CMD_MIGRATE);
    fprintf(f, "\ntoken options:\n");
    config_print_help(f, CMD_TOKEN);
    fprintf(f, "\nEvery option can also be set by its ROWCAST_* environment variable; flags win.\n");
}

/* Warns about development defaults in use. */
static void warn_defaults(const struct config *cfg)
{
    if (cfg->jwt_secret_is_default)
        log_warn("INSECURE: using the development JWT secret; anyone can mint tokens. "
                 "Set --jwt-secret (or ROWCAST_JWT_SECRET) before exposing this server",
                 NULL);
    if (cfg->api_key_is_default)
        log_warn("INSECURE: using the development API key '" CONFIG_DEV_API_KEY "'. "
                 "Set --api-key (or ROWCAST_API_KEY) before exposing this server",
                 NULL);
}

/* This node's id: host, pid and a random part (presence entries, the nodes table). */
static void make_node_id(char *out, size_t len)
{
    char host[32] = "node";
    gethostname(host, sizeof host - 1);
    uint64_t rnd = (uint64_t)clock_mono_us() ^ ((uint64_t)getpid() << 32);
    snprintf(out, len, "%s-%d-%llx", host, (int)getpid(), (unsigned long long)(rnd & 0xffffff));
}

/* rowcast serve */
static int cmd_serve(struct config *cfg)
{
    char err[512];
    struct store *store = NULL;
    struct http *http = NULL;
    struct bus *bus = NULL;
    struct presence_batch *pb = NULL;
    int status = 1;
    warn_defaults(cfg);
    /* Signals are taken by this thread only (sigwait below): every thread started from
     * here inherits the mask. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    char node_id[96];
    make_node_id(node_id, sizeof node_id);
    struct hub *hub = hub_create(cfg);
    struct worker_env *env = hub_env(hub);
    struct bus_sink sink = hub_sink(hub);
    if (presence_batch_create((int)cfg->presence_batch_ms, &sink, &pb)) {
        fprintf(stderr, "rowcast: cannot start the presence thread\n");
        goto out;
    }
    env->presence = presence_create(node_id, presence_batch_emit, pb);
    bool pg = !strncmp(cfg->db, "postgres://", 11) || !strncmp(cfg->db, "postgresql://", 13);
    /* SQLite: the store delivers committed rows to the local bus; PostgreSQL: the cluster
     * bus does, on every node alike. */
    if (!pg)
        bus = bus_local_create(&sink);
    struct store_options so = {
        .url = cfg->db,
        .batch_max = (int)cfg->batch_max,
        .data_poll_ms = (int)cfg->data_poll_ms,
        .sync_full = !strcmp(cfg->sqlite_sync, "full"),
        .listener = pg ? NULL : bus_local_on_changes,
        .listener_arg = bus,
        .notif_listener = pg ? NULL : bus_local_on_notifs,
        .docop_listener = pg ? NULL : bus_local_on_docops,
    };
    if (store_open(&so, &store, err, sizeof err)) {
        log_error("cannot open the database", "db=%s err=%s", log_v(cfg->db), log_v(err));
        fprintf(stderr, "rowcast: %s\n", err);
        goto out;
    }
    env->store = store;
    env->bus = bus;
    if (hub_start(hub)) {
        fprintf(stderr, "rowcast: cannot start the I/O workers\n");
        goto out;
    }
    if (pg) {
        if (bus_pg_start(cfg->db, &sink, env->presence, node_id, (int)cfg->reap_after_ms, &bus,
                         err, sizeof err)) {
            log_error("cannot start the cluster bus", "err=%s", log_v(err));
            fprintf(stderr, "rowcast: %s\n", err);
            goto out;
        }
        env->bus = bus; /* before any socket can connect: HTTP starts below */
        struct store_listeners own = {.changes = bus_pg_on_changes,
                                      .docops = bus_pg_on_docops,
                                      .session = bus_pg_on_session,
                                      .arg = bus};
        store_set_listeners(store, &own);
    }
    const struct socket_transport *const transports[] = {ws_transport, lp_transport,
                                                         ws_realtime_transport};
    struct socket_front front = {
        .cfg = cfg,
        .hub = hub,
        .uc = env->uc,
        .transports = transports,
        .n_transports = sizeof transports / sizeof transports[0],
    };
    struct http_options ho = {
        .cfg = cfg,
        .store = store,
        .bus = bus,
        .socket_handler = socket_front_handler,
        .socket_arg = &front,
        .socket_cls_free = socket_front_cls_free,
    };
    if (http_start(&ho, &http, err, sizeof err)) {
        log_error("cannot start HTTP", "err=%s", log_v(err));
        fprintf(stderr, "rowcast: %s\n", err);
        goto out;
    }
    char addr[300];
    snprintf(addr, sizeof addr, "%s", cfg->listen);
    char *colon = strrchr(addr, ':');
    if (colon)
        snprintf(colon + 1, sizeof addr - (size_t)(colon + 1 - addr), "%u", http_port(http));
    log_info("listening", "addr=%s db=%s env=%s", addr, cfg->db, cfg->env);

    int sig;
    for (;;) {
        if (sigwait(&signals, &sig))
            continue;
        if (sig != SIGHUP)
            break;
        if (cfg->log_file && *cfg->log_file && log_open_file(cfg->log_file))
            fprintf(stderr, "rowcast: cannot reopen %s\n", cfg->log_file);
        log_info("logs reopened", NULL);
    }
    log_info("shutting down", "signal=%d", sig);
    status = 0;
out:
    /* Stop merging presence diffs, close every socket with 1001 (phoenix.js reconnects)
     * and end long-poll sessions, stop the HTTP front once no request waits, finish the
     * store's queued writes, stop the bus (it sends what is queued, presence leaves, and
     * leaves the cluster), then release what is left. */
    presence_batch_stop(pb);
    hub_shutdown(hub);
    http_stop(http);
    store_close(store);
    bus_stop(bus); /* after the store: its listeners publish through the local bus */
    struct presence *presence = env->presence;
    hub_free(hub);
    presence_destroy(presence);
    presence_batch_destroy(pb);
    if (status == 0)
        log_info("stopped", NULL);
    return status;
}

/* rowcast migrate */
static int cmd_migrate(struct config *cfg)
{
    char err[512];
    int applied = 0;
    if (store_migrate(cfg->db, &applied, err, sizeof err)) {
        fprintf(stderr, "rowcast: %s\n", err);
        return 1;
    }
    printf("%d migration%s applied to %s\n", applied, applied == 1 ? "" : "s", cfg->db);
    return 0;
}

/* rowcast token */
static int cmd_token(struct config *cfg)
{
    char *token = NULL;
    int64_t now = clock_unix();
    int rc = jwt_sign((const uint8_t *)cfg->jwt_secret, strlen(cfg->jwt_secret), cfg->user, now,
                      now + cfg->ttl, &token);
    if (rc) {
        fprintf(stderr, "rowcast: cannot sign a token for this user: %s\n", rc_strerror(rc));
        return 1;
    }
    if (cfg->jwt_secret_is_default)
        fprintf(stderr, "rowcast: warning: signed with the development JWT secret\n");
    printf("%s\n", token);
    free(token);
    return 0;
}

int main(int argc, char **argv)
{
    enum config_cmd cmd = CMD_SERVE;
    int first = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--version") || !strcmp(argv[i], "-V")) {
            printf("rowcast %s\n", ROWCAST_VERSION);
            return 0;
        }
    }
    if (argc > 1 && argv[1][0] != '-') {
        if (!strcmp(argv[1], "serve"))
            cmd = CMD_SERVE;
        else if (!strcmp(argv[1], "migrate"))
            cmd = CMD_MIGRATE;
        else if (!strcmp(argv[1], "token"))
            cmd = CMD_TOKEN;
        else {
            fprintf(stderr, "rowcast: unknown command \"%s\" (see rowcast --help)\n", argv[1]);
            return 2;
        }
        first = 2;
    }
    struct config cfg;
    char err[512];
    if (config_parse(&cfg, cmd, argc - first, argv + first, environ, err, sizeof err)) {
        fprintf(stderr, "rowcast: %s\n", err);
        config_cleanup(&cfg);
        return 2;
    }
    int lvl = log_level_parse(cfg.log_level);
    if (lvl < 0) {
        fprintf(stderr, "rowcast: --log-level must be debug, info, warn or error\n");
        config_cleanup(&cfg);
        return 2;
    }
    log_min_level = lvl;
    if (cfg.log_file && *cfg.log_file && log_open_file(cfg.log_file)) {
        fprintf(stderr, "rowcast: cannot open --log-file %s\n", cfg.log_file);
        config_cleanup(&cfg);
        return 2;
    }
    int status;
    switch (cmd) {
    case CMD_MIGRATE: status = cmd_migrate(&cfg); break;
    case CMD_TOKEN: status = cmd_token(&cfg); break;
    default: status = cmd_serve(&cfg); break;
    }
    config_cleanup(&cfg);
    return status;
}
