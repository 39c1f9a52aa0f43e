/* test_store_pg.c - the PostgreSQL backend of the store's suite (tests/unit/test_store,
 * see test_store.c) and the cases only it has: concurrent writers from other clients,
 * NOTIFY wake-ups, dropped connections. The server is the one at $ROWCAST_TEST_PG_URL,
 * else a throwaway one started with scripts/pg-test.sh (and stopped at exit) when the
 * first PostgreSQL case runs. When neither works every PostgreSQL case FAILS: none is
 * skipped. Each case gets a database of its own. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "migrations.h"
#include "store.h"
#include "store_pg_int.h"
#include "store_test.h"

#ifndef TOP_SRCDIR
#define TOP_SRCDIR "."
#endif

/* The store's bound on waiting for a connection (WAIT_CONNECT_MS in store_pg.c). */
#define STORE_WAIT_CONNECT_MS 5000

/* The server every case uses: its URL (database "rowcast" or the one given), and its
 * directory when this suite started it. */
static char g_url[512];
static char g_dir[128];
static char g_script[600];
static int g_db_counter;
/* Whether the server was looked for yet, and what came of it. */
static enum { SERVER_UNTRIED, SERVER_UP, SERVER_NONE } g_server;

/* ---- the server ---------------------------------------------------------------------- */

/* Stops the server this suite started. */
static void stop_server(void)
{
    char cmd[900];

    if (!g_dir[0])
        return;
    snprintf(cmd, sizeof cmd, "sh '%s' stop '%s' >/dev/null 2>&1", g_script, g_dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "# %s failed\n", cmd);
        rmdir(g_dir); /* when the server never started, the directory is empty */
    }
    g_dir[0] = '\0';
}

/* Finds the server: $ROWCAST_TEST_PG_URL, else one started with scripts/pg-test.sh.
 * Returns false (with the reason on stderr) when there is none. */
static bool find_server(void)
{
    const char *env = getenv("ROWCAST_TEST_PG_URL");
    const char *top = getenv("TOP_SRCDIR") ? getenv("TOP_SRCDIR") : TOP_SRCDIR;

    if (env && *env) {
        snprintf(g_url, sizeof g_url, "%s", env);
        return true;
    }
    snprintf(g_script, sizeof g_script, "%s/scripts/pg-test.sh", top);
    snprintf(g_dir, sizeof g_dir, "/tmp/rowcast-test-pg-XXXXXX");
    if (!mkdtemp(g_dir)) {
        fprintf(stderr, "# mkdtemp: %s\n", strerror(errno));
        g_dir[0] = '\0';
        return false;
    }
    atexit(stop_server);
    char cmd[900];

    snprintf(cmd, sizeof cmd, "sh '%s' start '%s'", g_script, g_dir);
    FILE *p = popen(cmd, "r");

    if (!p) {
        fprintf(stderr, "# popen(%s): %s\n", cmd, strerror(errno));
        return false;
    }
    bool got = fgets(g_url, sizeof g_url, p) != NULL;
    int status = pclose(p);

    g_url[strcspn(g_url, "\r\n")] = '\0';
    if (!got || status != 0 || strncmp(g_url, "postgres", 8) != 0) {
        fprintf(stderr, "# %s failed (status %d)\n", cmd, status);
        return false;
    }
    return true;
}

/* True once there is a server; looks for it on the first call only. */
static bool have_server(void)
{
    if (g_server == SERVER_UNTRIED)
        g_server = find_server() ? SERVER_UP : SERVER_NONE;
    return g_server == SERVER_UP;
}

/* ---- clients --------------------------------------------------------------------------- */

/* Notice processor that drops notices (e.g. "database does not exist, skipping"). */
static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Records a failed result (or, without one, the connection's error) in e. */
static void pg_error(PGconn *c, PGresult *r, struct sql_error *e)
{
    const char *code = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;

    snprintf(e->code, sizeof e->code, "%s", code ? code : "");
    snprintf(e->msg, sizeof e->msg, "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(c));
}

/* A connection standing for another client (another node, a backend job, psql). */
static void *pg_connect(const char *url, struct sql_error *e)
{
    PGconn *c = PQconnectdb(url);

    if (PQstatus(c) != CONNECTION_OK) {
        pg_error(c, NULL, e);
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, quiet, NULL);
    return c;
}

/* Closes a connection from pg_connect. */
static void pg_disconnect(void *conn)
{
    PQfinish(conn);
}

/* Runs SQL without parameters (several statements allowed). */
static bool pg_exec(void *conn, const char *sql, struct sql_error *e)
{
    PGresult *r = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(r);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;

    if (!ok)
        pg_error(conn, r, e);
    PQclear(r);
    return ok;
}

/* Runs a query for exactly one non-NULL integer, with an optional text parameter $1. */
static bool pg_query_int(void *conn, const char *sql, const char *arg, int64_t *v,
                         struct sql_error *e)
{
    const char *params[1] = {arg};
    PGresult *r = PQexecParams(conn, sql, arg ? 1 : 0, NULL, params, NULL, NULL, 0);
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0);

    if (ok) {
        *v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    } else {
        pg_error(conn, r, e);
        snprintf(e->msg + strlen(e->msg), sizeof e->msg - strlen(e->msg), " (%d rows)",
                 PQntuples(r));
    }
    PQclear(r);
    return ok;
}

/* The libpq connection of a client of a PostgreSQL case. */
static PGconn *pg(struct client *c)
{
    assert_ptr_equal(c->be, &backend_pg);
    return c->conn;
}

/* A short-lived connection to the server's own database, for CREATE/DROP DATABASE. */
static struct client *admin_connect(void)
{
    return ext_connect_url(&backend_pg, g_url);
}

/* Copies base with its database name replaced by db. */
static void url_with_db(const char *base, const char *db, char *out, size_t outlen)
{
    const char *host = strstr(base, "://");
    const char *path = host ? strchr(host + 3, '/') : NULL;
    const char *query = strchr(host ? host + 3 : base, '?');

    if (!path || (query && path > query)) {
        /* No database in the URL: insert one before the query string. */
        size_t head = query ? (size_t)(query - base) : strlen(base);

        snprintf(out, outlen, "%.*s/%s%s", (int)head, base, db, query ? query : "");
        return;
    }
    snprintf(out, outlen, "%.*s/%s%s", (int)(path - base), base, db, query ? query : "");
}

/* Waits until count(*) of backends of the case's database matching cond reaches want. */
static void wait_backends(struct fixture *f, const char *cond, int64_t want)
{
    char sql[512];
    int64_t t0 = now_ms();

    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
             "AND pid <> pg_backend_pid() AND %s",
             cond);
    while (ext_int(ext(f), sql, NULL) != want) {
        if (now_ms() - t0 > 20000)
            fail_msg("no %lld backends with %s after 20 s", (long long)want, cond);
        sleep_ms(10);
    }
}

/* Waits until the store's writer waits for a lock (another client holds it). */
static void pg_wait_writer_blocked(struct fixture *f)
{
    wait_backends(f, "application_name = 'rowcast-writer' AND wait_event_type = 'Lock'", 1);
}

/* Terminates the store's backends whose application_name matches like, and waits until
 * they are gone; returns how many there were. */
static int64_t kill_backends(struct fixture *f, const char *like)
{
    char sql[512];

    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM (SELECT pg_terminate_backend(pid, 10000) AS gone "
             "FROM pg_stat_activity WHERE datname = current_database() "
             "AND pid <> pg_backend_pid() AND application_name LIKE '%s') t WHERE gone",
             like);
    return ext_int(ext(f), sql, NULL);
}

/* ---- the backend ----------------------------------------------------------------------- */

/* Creates a fresh database for the case. */
static int pg_setup(struct fixture *f)
{
    char sql[128];

    if (!have_server()) {
        fprintf(stderr, "# PostgreSQL could not be started (scripts/pg-test.sh) and "
                        "ROWCAST_TEST_PG_URL is not set\n");
        return -1;
    }
    snprintf(f->db, sizeof f->db, "rowcast_test_%d_%d", (int)getpid(), ++g_db_counter);
    url_with_db(g_url, f->db, f->url, sizeof f->url);
    PGconn *a = PQconnectdb(g_url);

    snprintf(sql, sizeof sql, "CREATE DATABASE %s", f->db);
    PGresult *r = PQstatus(a) == CONNECTION_OK ? PQexec(a, sql) : NULL;
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;

    if (!ok)
        fprintf(stderr, "# %s: %s", sql, r ? PQresultErrorMessage(r) : PQerrorMessage(a));
    PQclear(r);
    PQfinish(a);
    return ok ? 0 : -1;
}

/* Drops the case's database, letting connections in first if a case forbade them. */
static void pg_teardown(struct fixture *f)
{
    char sql[160];
    PGconn *a = PQconnectdb(g_url);

    PQsetNoticeProcessor(a, quiet, NULL);
    snprintf(sql, sizeof sql, "ALTER DATABASE %s ALLOW_CONNECTIONS true", f->db);
    PQclear(PQexec(a, sql));
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", f->db);
    PQclear(PQexec(a, sql));
    PQfinish(a);
}

static const struct schema_check pg_schema[] = {
    {"SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename IN ('users', "
     "'rooms', 'memberships', 'messages', 'notifications', 'document_ops', 'nodes', "
     "'presences', 'broadcasts')",
     9},
    {"SELECT count(*) FROM pg_proc WHERE proname IN ('rowcast_broadcast', 'rowcast_iso', "
     "'rowcast_notify_message', 'rowcast_room_broadcast')",
     4},
    {"SELECT count(*) FROM pg_views WHERE schemaname = 'public' AND viewname = 'room_broadcasts'",
     1},
    {NULL, 0},
};

const struct backend backend_pg = {
    .ops = &store_pg_ops,
    .migrations = migrations_postgres,
    .dialect = "postgres",
    .schema = pg_schema,
    .hold_writer_sql = "BEGIN; LOCK TABLE messages IN EXCLUSIVE MODE",
    .iso_inserted_at = "rowcast_iso(inserted_at)",
    .old_inserted_at = "'2001-02-03 04:05:06.789+00'",
    .no_room_code = "23503", /* foreign_key_violation */
    .bad_seq_code = "23514", /* check_violation */
    .call_per_commit = true,
    .docop_json_checked = true, /* data is jsonb */
    .setup = pg_setup,
    .teardown = pg_teardown,
    .connect = pg_connect,
    .disconnect = pg_disconnect,
    .exec = pg_exec,
    .query_int = pg_query_int,
    .wait_writer_blocked = pg_wait_writer_blocked,
};

/* ---- migrations ------------------------------------------------------------------------ */

/* One thread of the concurrent migration case. */
struct migrate_arg {
    const char *url;
    int rc, applied;
    char err[256];
};

/* Runs migrate once. */
static void *migrate_thread(void *p)
{
    struct migrate_arg *a = p;

    a->rc = store_migrate(a->url, &a->applied, a->err, sizeof a->err);
    return NULL;
}

/* Nodes starting at once take turns (advisory lock): each migration is applied once. */
void test_migrate_concurrent(void **state)
{
    struct fixture *f = *state;
    enum { T = 6 };
    struct migrate_arg args[T];
    pthread_t th[T];
    int total = 0;

    for (int i = 0; i < T; i++) {
        memset(&args[i], 0, sizeof args[i]);
        args[i].url = f->url;
        assert_int_equal(pthread_create(&th[i], NULL, migrate_thread, &args[i]), 0);
    }
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < T; i++) {
        if (args[i].rc != 0)
            fail_msg("migrate %d: rc %d err=\"%s\"", i, args[i].rc, args[i].err);
        total += args[i].applied;
    }
    assert_int_equal(total, n_migrations(f->be));
    assert_int_equal(ext_int(ext(f), "SELECT count(*) FROM schema_migrations", NULL),
                     n_migrations(f->be));
}

/* sql/notify.sql (for operators) is the migration that installs it, byte for byte. */
void test_notify_sql_matches_migration(void **state)
{
    (void)state;
    const char *top = getenv("TOP_SRCDIR") ? getenv("TOP_SRCDIR") : TOP_SRCDIR;
    char path[512];

    snprintf(path, sizeof path, "%s/sql/notify.sql", top);
    FILE *fp = fopen(path, "r");

    if (!fp)
        fail_msg("cannot open %s (set TOP_SRCDIR)", path);
    static char text[65536];
    size_t n = fread(text, 1, sizeof text - 1, fp);

    fclose(fp);
    text[n] = '\0';
    const struct migration *m = NULL;

    for (int i = 0; migrations_postgres[i].name; i++)
        if (!strcmp(migrations_postgres[i].name, "0003_notify"))
            m = &migrations_postgres[i];
    assert_non_null(m);
    if (strcmp(m->sql, text) != 0)
        fail_msg("sql/notify.sql and migrations/postgres/0003_notify.sql differ");
}

/* A server that does not answer, a missing database: RC_ESTORE with a message, soon, and
 * never the password; both URL schemes reach this backend. */
void test_open_errors_pg(void **state)
{
    struct fixture *f = *state;
    char err[512] = "";
    struct store *s = NULL;
    struct store_options opts = {.url = "postgres://rowcast:s3cret@127.0.0.1:1/rowcast"};
    int applied = -1;
    int64_t t0 = now_ms();

    assert_int_equal(store_open(&opts, &s, err, sizeof err), RC_ESTORE);
    assert_null(s);
    assert_true(strlen(err) > 0);
    assert_null(strstr(err, "s3cret"));
    assert_non_null(strstr(err, "127.0.0.1"));
    assert_true(now_ms() - t0 < 10000);

    err[0] = '\0';
    assert_int_equal(store_migrate(opts.url, &applied, err, sizeof err), RC_ESTORE);
    assert_true(strlen(err) > 0);
    assert_null(strstr(err, "s3cret"));

    char url[800];

    url_with_db(f->url, "rowcast_no_such_database", url, sizeof url);
    opts.url = url;
    err[0] = '\0';
    assert_int_equal(store_open(&opts, &s, err, sizeof err), RC_ESTORE);
    assert_null(s);
    assert_non_null(strstr(err, "rowcast_no_such_database"));

    char alt[800];

    snprintf(alt, sizeof alt, "postgresql%s", strstr(f->url, "://"));
    opts.url = alt;
    assert_int_equal(store_open(&opts, &s, err, sizeof err), 0);
    assert_ptr_equal(s->ops, &store_pg_ops);
    store_close(s);
    assert_string_equal(store_pg_ops.scheme, "postgres");
}

/* ---- concurrent clients ---------------------------------------------------------------- */

/* A room delete and a transaction inserting into that room: the delete waits for the
 * insert and removes its rows too; an insert that waited for a delete fails. */
void test_room_delete_races_insert(void **state)
{
    struct fixture *f = *state;

    open_store(f, 0, 0, NO_LISTENER);
    create_room(f->s, "doomed");
    struct client *other = ext_connect(f);

    ext_exec(other, "BEGIN; INSERT INTO messages(room_id, user_id, body) "
                    "VALUES ('doomed', 'cron', 'in flight')");
    struct waiter *w = waiter_create();
    struct store_req *del = req_room(STORE_ROOM_DELETE, "doomed", NULL);

    submit_counted(f->s, w, del);
    wait_writer_blocked(f); /* on the room row the open transaction holds */
    ext_exec(other, "COMMIT");
    wait_all(w);
    assert_int_equal(del->rc, 0);
    struct client *db = ext(f);

    assert_int_equal(ext_int(db, "SELECT count(*) FROM messages WHERE room_id = $1", "doomed"), 0);

    /* The other way round: the delete holds the room, the insert waits, then fails. */
    create_room(f->s, "doomed");
    ext_exec(other, "BEGIN; DELETE FROM rooms WHERE id = 'doomed'");
    struct store_req *msg = req_msg("doomed", "alice", "too late");

    submit_counted(f->s, w, msg);
    wait_writer_blocked(f);
    ext_exec(other, "COMMIT");
    wait_all(w);
    assert_int_equal(msg->rc, RC_ENOTFOUND);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM messages WHERE room_id = $1", "doomed"), 0);
    store_req_destroy(del);
    store_req_destroy(msg);
    waiter_destroy(w);
    ext_close(other);
}

/* Many rows for several rooms in one transaction (rooms sharing a counter slot among
 * them), savepoints and a room deleted and created again: seqs stay gapless, and
 * rooms.last_seq is right after commit. */
void test_seq_in_one_transaction(void **state)
{
    struct fixture *f = *state;
    char a[32], b[32], sql[1024];
    struct waiter *w = waiter_create();

    open_store(f, 0, 0, NO_LISTENER);
    struct client *db = ext(f);
    /* Two room ids whose counters share a slot. */
    PGresult *r = PQexec(pg(db), "SELECT x.n, y.n FROM (SELECT 'r' || g AS n FROM "
                                 "generate_series(1, 3000) g) x JOIN (SELECT 'r' || g AS n FROM "
                                 "generate_series(1, 3000) g) y ON (hashtext(x.n) & 1023) = "
                                 "(hashtext(y.n) & 1023) AND x.n < y.n LIMIT 1");

    assert_int_equal(PQntuples(r), 1);
    snprintf(a, sizeof a, "%s", PQgetvalue(r, 0, 0));
    snprintf(b, sizeof b, "%s", PQgetvalue(r, 0, 1));
    PQclear(r);
    create_room(f->s, a);
    create_room(f->s, b);
    create_room(f->s, "c");
    snprintf(sql, sizeof sql,
             "BEGIN; INSERT INTO messages(room_id, user_id, body) SELECT CASE g %% 3 "
             "WHEN 0 THEN '%s' WHEN 1 THEN '%s' ELSE 'c' END, 'u', 'm' || g "
             "FROM generate_series(1, 300) g; "
             "SAVEPOINT s; INSERT INTO messages(room_id, user_id, body) VALUES "
             "('%s', 'u', 'gone'), ('c', 'u', 'gone'); ROLLBACK TO s; "
             "INSERT INTO messages(room_id, user_id, body) VALUES ('%s', 'u', 'kept'); "
             "INSERT INTO document_ops(room_id, user_id, operation) VALUES ('%s', 'u', 'op'); "
             "COMMIT",
             a, b, a, a, a);
    ext_exec(db, sql);
    assert_int_equal(ext_int(db, "SELECT last_seq FROM rooms WHERE id = $1", a), 101);
    assert_int_equal(ext_int(db, "SELECT last_seq FROM rooms WHERE id = $1", b), 100);
    assert_int_equal(ext_int(db, "SELECT last_seq FROM rooms WHERE id = 'c'", NULL), 100);
    assert_int_equal(ext_int(db, "SELECT doc_last_seq FROM rooms WHERE id = $1", a), 1);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM messages WHERE body = 'gone'", NULL), 0);
    assert_int_equal(ext_int(db,
                             "SELECT count(*) FROM (SELECT room_id, seq, row_number() OVER "
                             "(PARTITION BY room_id ORDER BY id) AS rn FROM messages) t "
                             "WHERE seq = rn",
                             NULL),
                     301);
    assert_int_equal(add_msg(f->s, a, "alice", "next"), 102);
    assert_int_equal(add_msg(f->s, b, "alice", "next"), 101);
    /* RETURNING hands the inserting client the seq its row got. */
    assert_int_equal(ext_int(db,
                             "INSERT INTO messages(room_id, user_id, body) "
                             "VALUES ('c', 'cron', 'returned') RETURNING seq",
                             NULL),
                     101);

    /* A room deleted and created again in one store batch starts over. */
    struct client *lock = ext_connect(f);

    ext_exec(lock, "BEGIN; SELECT 1 FROM rooms WHERE id = 'c' FOR UPDATE");
    struct store_req *reqs[5] = {req_msg("c", "u", "gate"), req_msg(a, "u", "x"),
                                 req_room(STORE_ROOM_DELETE, a, NULL),
                                 req_room(STORE_ROOM_CREATE, a, "again"), req_msg(a, "u", "y")};

    submit_counted(f->s, w, reqs[0]);
    wait_writer_blocked(f);
    for (int i = 1; i < 5; i++)
        submit_counted(f->s, w, reqs[i]);
    ext_exec(lock, "COMMIT");
    wait_all(w);
    for (int i = 0; i < 5; i++)
        assert_int_equal(reqs[i]->rc, 0);
    assert_int_equal(reqs[1]->msg.seq, 103);
    assert_int_equal(reqs[4]->msg.seq, 1);
    assert_int_equal(ext_int(db, "SELECT last_seq FROM rooms WHERE id = $1", a), 1);
    for (int i = 0; i < 5; i++)
        store_req_destroy(reqs[i]);
    ext_close(lock);
    waiter_destroy(w);
}

/* 10,000 rows inserted by another client in one INSERT ... SELECT get seqs 1..10000 in
 * order, and the store's own writes to that room, at the same time, fit around them. */
void test_bulk_insert_select(void **state)
{
    struct fixture *f = *state;
    enum { BULK = 10000, OURS = 300 };
    static struct store_req *reqs[OURS];
    struct waiter *w = waiter_create();

    open_store(f, 50, 0, NO_LISTENER);
    create_room(f->s, "bulk");
    create_room(f->s, "busy");
    struct client *db = ext(f);

    ext_exec(db, "INSERT INTO messages(room_id, user_id, body) "
                 "SELECT 'bulk', 'cron', 'm' || g FROM generate_series(1, 10000) g");
    assert_int_equal(ext_int(db,
                             "SELECT count(*) FROM (SELECT seq, body, row_number() OVER "
                             "(ORDER BY id) AS rn FROM messages WHERE room_id = 'bulk') t "
                             "WHERE seq = rn AND body = 'm' || rn",
                             NULL),
                     BULK);
    assert_int_equal(ext_int(db, "SELECT last_seq FROM rooms WHERE id = 'bulk'", NULL), BULK);

    /* The same while the store writes to that room. */
    PQsendQuery(pg(db), "INSERT INTO messages(room_id, user_id, body) "
                        "SELECT 'busy', 'cron', 'm' || g FROM generate_series(1, 10000) g");
    for (int i = 0; i < OURS; i++) {
        reqs[i] = req_msg("busy", "alice", "ours");
        submit_counted(f->s, w, reqs[i]);
    }
    PGresult *r;
    bool ok = true;

    while ((r = PQgetResult(pg(db)))) {
        ok = ok && PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
    }
    assert_true(ok);
    wait_all(w);
    int64_t last = 0;

    for (int i = 0; i < OURS; i++) {
        assert_int_equal(reqs[i]->rc, 0);
        assert_true(reqs[i]->msg.seq > last);
        last = reqs[i]->msg.seq;
        store_req_destroy(reqs[i]);
    }
    /* Gapless, and the bulk rows are one run of seqs in their own order. */
    assert_int_equal(ext_int(db, "SELECT last_seq FROM rooms WHERE id = 'busy'", NULL),
                     BULK + OURS);
    assert_int_equal(ext_int(db,
                             "SELECT count(DISTINCT seq) FROM messages WHERE room_id = 'busy' "
                             "AND seq BETWEEN 1 AND 10300",
                             NULL),
                     BULK + OURS);
    assert_int_equal(ext_int(db,
                             "SELECT max(seq) - min(seq) + 1 FROM messages "
                             "WHERE room_id = 'busy' AND user_id = 'cron'",
                             NULL),
                     BULK);
    assert_int_equal(ext_int(db,
                             "SELECT count(*) FROM (SELECT seq, body, row_number() OVER "
                             "(ORDER BY seq) AS rn FROM messages WHERE room_id = 'busy' "
                             "AND user_id = 'cron') t WHERE body = 'm' || rn",
                             NULL),
                     BULK);
    waiter_destroy(w);
}

/* Waits until the rows inserted into messages, as PostgreSQL's statistics count them,
 * reach at_least (a session reports its counts at the latest when it ends; its scans are
 * reported with them); returns them. */
static int64_t messages_inserted(struct client *db, int64_t at_least)
{
    const char *sql = "SELECT COALESCE(n_tup_ins, 0) FROM pg_stat_user_tables WHERE relname = $1";
    int64_t n = 0;

    for (int i = 0; i < 400 && (n = ext_int(db, sql, "messages")) < at_least; i++) {
        ext_int(db, "SELECT count(*) FROM pg_stat_clear_snapshot()", NULL);
        usleep(50 * 1000);
    }
    assert_true(n >= at_least);
    return n;
}

/* The store's writes on a new database use the indexes: plans cached while the tables are
 * empty must not scan them whole for every later batch (which made each batch's cost grow
 * with room_changes). */
void test_writes_use_indexes(void **state)
{
    struct fixture *f = *state;
    enum { ROUNDS = 12, PER_ROUND = 40 };
    static struct store_req *reqs[PER_ROUND];
    const char *seq = "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = $1";

    /* The scans so far: the migrations' index builds, the first message. */
    open_store(f, 0, 0, NO_LISTENER);
    create_room(f->s, "lobby");
    create_room(f->s, "other");
    assert_int_equal(add_msg(f->s, "lobby", "alice", "first"), 1);
    close_store(f);
    struct client *db = ext(f);
    int64_t ins0 = messages_inserted(db, 1);
    int64_t seq_changes = ext_int(db, seq, "room_changes");
    int64_t seq_messages = ext_int(db, seq, "messages");

    /* New sessions, new plans, on tables that are still small. */
    open_store(f, 0, 0, NO_LISTENER);
    for (int round = 0; round < ROUNDS; round++) {
        struct waiter *w = waiter_create();

        for (int i = 0; i < PER_ROUND; i++) {
            reqs[i] = req_msg(i % 2 ? "lobby" : "other", "alice", "hello");
            submit_counted(f->s, w, reqs[i]);
        }
        wait_all(w);
        for (int i = 0; i < PER_ROUND; i++) {
            assert_int_equal(reqs[i]->rc, 0);
            store_req_destroy(reqs[i]);
        }
        waiter_destroy(w);
    }
    close_store(f);
    messages_inserted(db, ins0 + ROUNDS * PER_ROUND);
    assert_int_equal(ext_int(db, seq, "room_changes"), seq_changes);
    assert_int_equal(ext_int(db, seq, "messages"), seq_messages);
}

/* A session started with `options` (a libpq options string, as PG_SESSION_OPTIONS). */
static PGconn *session_with(const char *url, const char *options)
{
    const char *key[] = {"options", "dbname", NULL};
    const char *val[] = {options, url, NULL};
    PGconn *c = PQconnectdbParams(key, val, 1);

    assert_int_equal(PQstatus(c), CONNECTION_OK);
    return c;
}

/* Whether a session started with `options` has `what` in its plan for `explain` (after
 * running `prepare`, unless NULL). */
static bool plan_mentions(const char *url, const char *options, const char *prepare,
                          const char *explain, const char *what)
{
    PGconn *c = session_with(url, options);
    PGresult *r;

    if (prepare) {
        r = PQexec(c, prepare);
        assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
        PQclear(r);
    }
    r = PQexec(c, explain);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    bool found = false;
    for (int i = 0; i < PQntuples(r); i++)
        found = found || strstr(PQgetvalue(r, i, 0), what) != NULL;
    PQclear(r);
    PQfinish(c);
    return found;
}

/* The bus's heartbeat reaper: a statement on nodes, which has no index it can use. */
#define REAPER_PLAN                                                                                \
    "EXPLAIN (FORMAT JSON, COSTS ON) DELETE FROM nodes WHERE id <> 'x' AND heartbeat_at < "        \
    "now() - interval '5 seconds'"

/* With seq scans off, the statements that must scan are costed past jit_above_cost; JIT
 * compiling the reaper took 100-170 ms a second and stalled the bus. rowcast's sessions
 * plan it without JIT, where a session with seq scans off alone does not. */
void test_sessions_plan_without_jit(void **state)
{
    struct fixture *f = *state;
    const char *jit = "\"JIT\"";

    open_store(f, 0, 0, NO_LISTENER);
    close_store(f);
    assert_true(plan_mentions(f->url, "-c enable_seqscan=off -c jit=on", NULL, REAPER_PLAN, jit));
    assert_false(plan_mentions(f->url, PG_SESSION_OPTIONS, NULL, REAPER_PLAN, jit));
}

/* PostgreSQL plans the first five executions of a statement with parameters for their
 * values, and the statements inside PL/pgSQL functions too: every batch of the writer
 * paid planning (5-6% of chat and REST throughput). Every statement of rowcast's is a
 * keyed lookup, so rowcast's sessions plan once, generically (the plan of the first
 * execution refers to the parameter, not to its value), where a default session does
 * not. */
void test_sessions_plan_generic(void **state)
{
    struct fixture *f = *state;
    const char *prepare = "PREPARE first(text) AS SELECT last_seq FROM rooms WHERE id = $1";
    const char *explain = "EXPLAIN (FORMAT TEXT) EXECUTE first('room:plan')";
    const char *dflt = "-c enable_seqscan=off -c jit=off";

    open_store(f, 0, 0, NO_LISTENER);
    close_store(f);
    assert_true(plan_mentions(f->url, dflt, prepare, explain, "room:plan"));
    assert_false(plan_mentions(f->url, dflt, prepare, explain, "$1"));
    assert_true(plan_mentions(f->url, PG_SESSION_OPTIONS, prepare, explain, "$1"));
    assert_false(plan_mentions(f->url, PG_SESSION_OPTIONS, prepare, explain, "room:plan"));
}

/* A user's notification ids grow in commit order: a writer waits for another client's
 * uncommitted notification to the same user, then gets a larger id. */
void test_notification_ids_in_commit_order(void **state)
{
    struct fixture *f = *state;
    struct waiter *w = waiter_create();

    open_store(f, 0, 0, NO_LISTENER);
    struct client *other = ext_connect(f);

    ext_exec(other, "BEGIN");
    int64_t theirs = ext_int(other,
                             "INSERT INTO notifications(user_id, payload) "
                             "VALUES ('alice', '{\"message\":\"theirs\"}') RETURNING id",
                             NULL);
    struct store_req *r = req_notif("alice", "ours", NULL);

    submit_counted(f->s, w, r);
    wait_writer_blocked(f);
    pthread_mutex_lock(&w->mu);
    assert_int_equal(w->pending, 1);
    pthread_mutex_unlock(&w->mu);
    ext_exec(other, "COMMIT");
    wait_all(w);
    assert_int_equal(r->rc, 0);
    assert_true(r->notif.id > theirs);
    store_req_destroy(r);
    /* Another user's notifications do not wait. */
    ext_exec(other, "BEGIN");
    ext_int(other,
            "INSERT INTO notifications(user_id, payload) VALUES ('alice', '{}') RETURNING id",
            NULL);
    char user[16];
    int i = 0;

    do /* a user whose bucket differs from alice's */
        snprintf(user, sizeof user, "u%d", i++);
    while (ext_int(ext(f), "SELECT ((hashtext($1) & 255) = (hashtext('alice') & 255))::int",
                   user) == 1);
    run_expect(f->s, req_notif(user, "free", NULL), 0);
    ext_exec(other, "COMMIT");
    ext_close(other);
    waiter_destroy(w);
}

/* ---- the message life in one transaction ------------------------------------------------ */

/* The room changes a listener was given, in order. */
struct change_log {
    pthread_mutex_t mu;
    size_t n;
    char room[32][16];
    char event[32][24];
    int64_t version[32];
    bool overflow;
};

/* Change listener: appends what it is given to the change_log in arg. */
static void log_changes(const struct store_change *c, size_t n, void *arg)
{
    struct change_log *l = arg;

    pthread_mutex_lock(&l->mu);
    for (size_t i = 0; i < n; i++) {
        if (l->n == 32) {
            l->overflow = true;
            break;
        }
        snprintf(l->room[l->n], sizeof l->room[0], "%s", c[i].room_id);
        snprintf(l->event[l->n], sizeof l->event[0], "%s", c[i].event);
        l->version[l->n++] = c[i].version;
    }
    pthread_mutex_unlock(&l->mu);
}

/* A request for op on message seq of room by user (NULL: anyone), with name (the emoji)
 * or body. */
static struct store_req *req_life(enum store_op op, const char *room, const char *user,
                                  int64_t seq, const char *text)
{
    struct store_req *r = store_req_create(op);

    r->room_id = dup_or_null(room);
    r->user_id = dup_or_null(user);
    r->seq = seq;
    if (op == STORE_REACTION_PUT || op == STORE_REACTION_DELETE)
        r->name = dup_or_null(text);
    else
        r->body = dup_or_null(text);
    return r;
}

/* Runs reqs as one batch: a message to room "gate" waits for a lock another client holds
 * while they queue behind it. */
static void run_one_batch(struct fixture *f, struct store_req **reqs, int n)
{
    struct client *lock = hold_writer(f);
    struct waiter *w = waiter_create();
    struct store_req *gate = req_msg("gate", "alice", "gate");

    submit_counted(f->s, w, gate);
    wait_writer_blocked(f);
    for (int i = 0; i < n; i++)
        submit_counted(f->s, w, reqs[i]);
    release_writer(lock);
    wait_all(w);
    assert_int_equal(gate->rc, 0);
    store_req_destroy(gate);
    waiter_destroy(w);
}

/* Fails unless request i of reqs has rc want[i] and took version vers[i]. */
static void assert_batch(struct store_req **reqs, int n, const int *want, const int64_t *vers)
{
    for (int i = 0; i < n; i++)
        if (reqs[i]->rc != want[i] || reqs[i]->version != vers[i])
            fail_msg("request %d: rc %d (%s) version %lld, want rc %d version %lld", i,
                     reqs[i]->rc, rc_strerror(reqs[i]->rc), (long long)reqs[i]->version,
                     want[i], (long long)vers[i]);
}

/* Edits, deletes, reactions, replies and read marks batched in one transaction, where
 * rooms.version and rooms.last_seq lag until the commit: each write gets the version it
 * took and the room's state as the transaction sees it; refusals change nothing and do not
 * abort the batch; a batch run again after a failed request (savepoints) gives the same
 * versions; the listener gets each commit's changes in version order. */
void test_life_in_one_batch(void **state)
{
    struct fixture *f = *state;
    struct change_log log = {.mu = PTHREAD_MUTEX_INITIALIZER};
    enum { NA = 10, NB = 3 };
    struct store_req *a[NA], *b[NB];

    open_store(f, 100, 0, NO_LISTENER);
    store_set_listener(f->s, log_changes, &log);
    create_room(f->s, "lobby");
    create_room(f->s, "gate");
    put_member(f->s, "lobby", "alice", "owner");
    put_member(f->s, "lobby", "bob", "member");
    assert_int_equal(add_msg(f->s, "lobby", "bob", "parent"), 1); /* version 1 */

    a[0] = req_msg("lobby", "alice", "reply one");
    a[0]->reply_to = 1;
    a[1] = req_msg("lobby", "bob", "reply two");
    a[1]->reply_to = 1;
    a[2] = req_life(STORE_MESSAGE_EDIT, "lobby", "alice", 1, "not mine");
    a[3] = req_life(STORE_MESSAGE_EDIT, "lobby", "bob", 1, "parent, edited");
    a[4] = req_life(STORE_REACTION_PUT, "lobby", "alice", 1, "\xf0\x9f\x91\x8d");
    a[5] = req_life(STORE_REACTION_PUT, "lobby", "alice", 1, "\xf0\x9f\x91\x8d");
    a[6] = req_life(STORE_READ_MARK, "lobby", "alice", 2, NULL);
    a[7] = req_life(STORE_MESSAGE_DELETE, "lobby", "bob", 2, NULL);
    a[8] = req_life(STORE_MESSAGE_DELETE, "lobby", "alice", 3, NULL);
    a[9] = req_life(STORE_REACTION_PUT, "lobby", "bob", 3, "x");
    run_one_batch(f, a, NA);
    static const int want_a[NA] = {0, 0, RC_EFORBIDDEN, 0, 0, 0, 0, RC_EFORBIDDEN, 0, RC_EGONE};
    static const int64_t vers_a[NA] = {2, 3, 0, 4, 5, 0, 0, 0, 6, 0};

    assert_batch(a, NA, want_a, vers_a);
    assert_int_equal(a[0]->msg.seq, 2);
    assert_int_equal(a[0]->msg.reply_to, 1);
    assert_int_equal(a[1]->msg.seq, 3);
    assert_string_equal(a[3]->msg.body, "parent, edited");
    assert_string_equal(a[3]->msg.user_id, "bob");
    assert_iso8601(a[3]->msg.edited_at);
    assert_int_equal(a[3]->room.version, 4);
    assert_int_equal(a[5]->room.version, 5); /* there already: the room's current version */
    assert_int_equal(a[6]->room.last_seq, 3); /* rooms.last_seq still said 1 */
    assert_int_equal(a[6]->member.last_read_seq, 2);
    assert_int_equal(a[6]->member.unread, 1); /* bob's reply two */
    assert_string_equal(a[8]->msg.user_id, "bob");
    assert_string_equal(a[8]->msg.body, "");
    assert_iso8601(a[8]->msg.deleted_at);
    for (int i = 0; i < NA; i++)
        assert_int_equal(a[i]->n_changes, 0); /* the listener took them */

    /* A reply to the deleted message fails its statement: the batch runs again, each
     * request in a savepoint, and the others get what they would have got. */
    b[0] = req_msg("lobby", "alice", "to a deleted one");
    b[0]->reply_to = 3;
    b[1] = req_msg("lobby", "alice", "after");
    b[2] = req_life(STORE_MESSAGE_EDIT, "lobby", "alice", 4, "after, edited");
    run_one_batch(f, b, NB);
    static const int want_b[NB] = {RC_EINVAL, 0, 0};
    static const int64_t vers_b[NB] = {0, 7, 8};

    assert_batch(b, NB, want_b, vers_b);
    assert_int_equal(b[1]->msg.seq, 4);
    close_store(f);

    struct client *db = ext(f);

    assert_int_equal(ext_int(db, "SELECT version FROM rooms WHERE id = 'lobby'", NULL), 8);
    assert_int_equal(ext_int(db, "SELECT last_seq FROM rooms WHERE id = 'lobby'", NULL), 4);
    assert_int_equal(ext_int(db,
                             "SELECT count(*) FROM room_changes WHERE room_id = 'lobby' "
                             "AND version BETWEEN 1 AND 8",
                             NULL),
                     8);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM reactions", NULL), 1);
    assert_int_equal(ext_int(db, "SELECT last_read_seq FROM memberships WHERE user_id = 'alice'",
                             NULL),
                     2);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM messages WHERE body = 'not mine'", NULL), 0);

    /* The parent; then per batch its gate message and its changes in order. */
    static const struct {
        const char *room, *event;
        int64_t version;
    } want[] = {
        {"lobby", "new_message", 1},     {"gate", "new_message", 1},
        {"lobby", "new_message", 2},     {"lobby", "new_message", 3},
        {"lobby", "message_updated", 4}, {"lobby", "reaction_added", 5},
        {"lobby", "message_deleted", 6}, {"gate", "new_message", 2},
        {"lobby", "new_message", 7},     {"lobby", "message_updated", 8},
    };

    assert_false(log.overflow);
    assert_int_equal(log.n, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < log.n; i++)
        if (strcmp(log.room[i], want[i].room) || strcmp(log.event[i], want[i].event) ||
            log.version[i] != want[i].version)
            fail_msg("change %zu: %s %s %lld, want %s %s %lld", i, log.room[i], log.event[i],
                     (long long)log.version[i], want[i].room, want[i].event,
                     (long long)want[i].version);
    for (int i = 0; i < NA; i++)
        store_req_destroy(a[i]);
    for (int i = 0; i < NB; i++)
        store_req_destroy(b[i]);
}

/* A run of messages (numbered per room in one pass, without the row triggers) between
 * writes that count through the triggers' settings, in one transaction, with two rooms
 * that share a setting slot: every write gets the next seq and version of its room, the
 * rooms' rows hold the last ones after the commit, and a plain INSERT continues from them. */
void test_message_run_between_trigger_writes(void **state)
{
    struct fixture *f = *state;
    enum { N = 8 };
    struct store_req *a[N];
    char other[32];

    open_store(f, 100, 0, NO_LISTENER);
    struct client *db = ext(f);
    int64_t twin = ext_int(db,
                           "SELECT i FROM generate_series(1, 100000) i "
                           "WHERE hashtext('c' || i) & 1023 = hashtext('lobby') & 1023 LIMIT 1",
                           NULL);
    snprintf(other, sizeof other, "c%lld", (long long)twin);
    create_room(f->s, "lobby");
    create_room(f->s, "gate");
    create_room(f->s, other);
    put_member(f->s, "lobby", "bob", "member");
    assert_int_equal(add_msg(f->s, "lobby", "bob", "parent"), 1); /* version 1 */

    a[0] = req_life(STORE_MESSAGE_EDIT, "lobby", "bob", 1, "parent, edited");
    a[1] = req_msg(other, "alice", "first");
    a[2] = req_life(STORE_REACTION_PUT, "lobby", "alice", 1, "x");
    a[3] = req_msg("lobby", "alice", "run one");
    a[4] = req_msg(other, "alice", "run two");
    a[5] = req_msg("lobby", "alice", "run three");
    a[6] = req_msg(other, "alice", "after the run");
    a[7] = req_life(STORE_MESSAGE_EDIT, "lobby", "alice", 2, "run one, edited");
    run_one_batch(f, a, N);
    static const int want[N] = {0};
    static const int64_t vers[N] = {2, 1, 3, 4, 2, 5, 3, 6};
    static const int64_t seqs[N] = {0, 1, 0, 2, 2, 3, 3, 0};

    assert_batch(a, N, want, vers);
    for (int i = 0; i < N; i++) {
        if (seqs[i])
            assert_int_equal(a[i]->msg.seq, seqs[i]);
        store_req_destroy(a[i]);
    }
    close_store(f);

    assert_int_equal(ext_int(db, "SELECT last_seq FROM rooms WHERE id = 'lobby'", NULL), 3);
    assert_int_equal(ext_int(db, "SELECT version FROM rooms WHERE id = 'lobby'", NULL), 6);
    assert_int_equal(ext_int(db, "SELECT last_seq FROM rooms WHERE id = $1", other), 3);
    assert_int_equal(ext_int(db, "SELECT version FROM rooms WHERE id = $1", other), 3);
    assert_int_equal(ext_int(db,
                             "SELECT count(*) FROM room_changes WHERE room_id = 'lobby' "
                             "AND version BETWEEN 1 AND 6",
                             NULL),
                     6);
    assert_int_equal(ext_int(db,
                             "SELECT count(DISTINCT version) FROM room_changes "
                             "WHERE room_id = $1 AND version BETWEEN 1 AND 3",
                             other),
                     3);
    assert_int_equal(ext_int(db,
                             "SELECT count(*) FROM room_changes c JOIN messages m "
                             "ON m.room_id = c.room_id AND m.seq = c.seq "
                             "WHERE c.event = 'new_message' AND (c.payload->>'id')::bigint = m.id "
                             "AND (c.payload->>'version')::bigint = c.version",
                             NULL),
                     7); /* parent, gate, five of the batch */
    /* The run went as one (a failed run would have run again through the triggers, which
     * log a change a moment after its message): its rows carry one time. */
    assert_int_equal(ext_int(db,
                             "SELECT count(*) FROM messages m JOIN room_changes c "
                             "ON c.room_id = m.room_id AND c.seq = m.seq "
                             "AND c.event = 'new_message' "
                             "WHERE m.body LIKE 'run %' AND c.inserted_at = m.inserted_at",
                             NULL),
                     3);
    assert_int_equal(ext_int(db,
                             "INSERT INTO messages(room_id, user_id, body) "
                             "VALUES ('lobby', 'cron', 'plain') RETURNING seq",
                             NULL),
                     4);
    assert_int_equal(ext_int(db, "SELECT max(version) FROM room_changes WHERE room_id = 'lobby'",
                             NULL),
                     7);
}

/* ---- wake-ups -------------------------------------------------------------------------- */

/* Collects NOTIFY payloads on channel rowcast for ms milliseconds (or until want). */
static size_t notifications(PGconn *c, char out[][8192], size_t max, size_t want, int ms)
{
    size_t n = 0;
    int64_t end = now_ms() + ms;

    while (n < want && now_ms() < end) {
        struct pollfd p = {.fd = PQsocket(c), .events = POLLIN};

        poll(&p, 1, (int)(end - now_ms() > 0 ? end - now_ms() : 0));
        PQconsumeInput(c);
        PGnotify *nt;

        while ((nt = PQnotifies(c))) {
            if (!strcmp(nt->relname, "rowcast") && n < max)
                snprintf(out[n++], 8192, "%s", nt->extra);
            PQfreemem(nt);
        }
    }
    return n;
}

/* Row inserts wake listeners with one NOTIFY per topic and transaction; broadcasts from
 * SQL travel in the payload, or as a row when large. */
void test_notify_triggers(void **state)
{
    struct fixture *f = *state;
    static char got[8][8192];
    char sql[12000];

    open_store(f, 0, 0, NO_LISTENER);
    create_room(f->s, "lobby");
    create_room(f->s, "other");
    struct client *listener = ext_connect(f);
    PGconn *l = pg(listener);
    struct client *db = ext(f);

    ext_exec(listener, "LISTEN rowcast");
    /* 100 rows in two rooms in one transaction: two wake-ups. */
    ext_exec(db, "BEGIN; INSERT INTO messages(room_id, user_id, body) "
                 "SELECT 'lobby', 'cron', 'm' || g FROM generate_series(1, 100) g; "
                 "INSERT INTO messages(room_id, user_id, body) VALUES ('other', 'cron', 'x'); "
                 "COMMIT");
    size_t n = notifications(l, got, 8, 8, 1000);

    assert_int_equal(n, 2);
    assert_string_equal(got[0], "room:lobby");
    assert_string_equal(got[1], "room:other");

    /* Nothing on rollback. */
    ext_exec(db, "BEGIN; INSERT INTO messages(room_id, user_id, body) VALUES ('lobby', 'c', 'x'); "
                 "ROLLBACK");
    assert_int_equal(notifications(l, got, 8, 1, 300), 0);

    /* The store's writes wake them too. */
    add_msg(f->s, "lobby", "alice", "hi");
    run_expect(f->s, req_notif("alice", "ping", NULL), 0);
    run_expect(f->s, req_docop("lobby", "alice", "insert", "{}"), 0);
    n = notifications(l, got, 8, 3, 5000);
    assert_int_equal(n, 3);
    assert_string_equal(got[0], "room:lobby");
    assert_string_equal(got[1], "notifications:alice");
    assert_string_equal(got[2], "document:lobby");

    /* A small broadcast is the payload itself. */
    ext_exec(db, "SELECT rowcast_broadcast('prices:updates', 'price_change', '{\"btc\":50000}')");
    assert_int_equal(notifications(l, got, 8, 1, 5000), 1);
    assert_true(!strncmp(got[0], "b:", 2));
    json_t *j = json_loads(got[0] + 2, 0, NULL);

    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "t")), "prices:updates");
    assert_string_equal(json_string_value(json_object_get(j, "e")), "price_change");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "p"), "btc")), 50000);
    json_decref(j);

    /* A large one is a row, named by the wake-up. */
    snprintf(sql, sizeof sql,
             "SELECT rowcast_broadcast('big:1', 'blob', jsonb_build_object('x', repeat('a', "
             "9000)))");
    ext_exec(db, sql);
    assert_int_equal(notifications(l, got, 8, 1, 5000), 1);
    assert_true(!strncmp(got[0], "B:", 2));
    char q[128];

    snprintf(q, sizeof q,
             "SELECT length(payload->>'x') FROM broadcasts WHERE id = %lld AND topic = 'big:1' "
             "AND event = 'blob'",
             strtoll(got[0] + 2, NULL, 10));
    assert_int_equal(ext_int(db, q, NULL), 9000);
    /* Just under the limit still fits in the payload. */
    ext_exec(db, "SELECT rowcast_broadcast('t', 'e', to_jsonb(repeat('b', 7800)))");
    assert_int_equal(notifications(l, got, 8, 1, 5000), 1);
    assert_true(!strncmp(got[0], "b:", 2));
    assert_true(strlen(got[0]) < 8000);

    /* A broadcast on a room is a change of the room, from SQL or from the store; the
     * three-argument rowcast_broadcast above is still the ephemeral one. */
    ext_exec(db, "SELECT rowcast_room_broadcast('other', 'ping', '{}')");
    assert_int_equal(notifications(l, got, 8, 1, 5000), 1);
    assert_string_equal(got[0], "room:other");
    run_expect(f->s, req_named(STORE_BROADCAST_ADD, "lobby", NULL, "ping", "{}"), 0);
    assert_int_equal(notifications(l, got, 8, 1, 5000), 1);
    assert_string_equal(got[0], "room:lobby");
    ext_close(listener);
}

/* ---- lost connections ------------------------------------------------------------------ */

/* The server ends the store's sessions: requests in flight fail with RC_ESTORE, later
 * ones succeed on new connections. */
void test_killed_connection(void **state)
{
    struct fixture *f = *state;
    enum { N = 20 };
    struct store_req *reqs[N];
    struct waiter *w = waiter_create();

    open_store(f, 0, 0, ALL_LISTENERS);
    create_room(f->s, "lobby");
    put_member(f->s, "lobby", "alice", "owner");
    assert_int_equal(add_msg(f->s, "lobby", "alice", "before"), 1);

    /* The writer is in a transaction, waiting for a lock, when its session is ended. */
    struct client *lock = hold_writer(f);

    for (int i = 0; i < N; i++) {
        char body[32];

        snprintf(body, sizeof body, "k%d", i);
        reqs[i] = req_msg("lobby", "alice", body);
        submit_counted(f->s, w, reqs[i]);
        if (i == 0)
            wait_writer_blocked(f);
    }
    assert_int_equal(kill_backends(f, "rowcast-writer"), 1);
    release_writer(lock);
    wait_all(w);
    /* The first batch was in flight: RC_ESTORE, nothing of it stored. Whatever queued
     * behind it went through the reconnect, in order. */
    assert_int_equal(reqs[0]->rc, RC_ESTORE);
    int failed = 0;
    int64_t last = 1;

    for (int i = 0; i < N; i++) {
        char q[128];

        snprintf(q, sizeof q, "SELECT count(*) FROM messages WHERE body = 'k%d'", i);
        if (reqs[i]->rc == RC_ESTORE) {
            failed++;
            assert_null(reqs[i]->msg.room_id);
            assert_int_equal(ext_int(ext(f), q, NULL), 0);
        } else {
            assert_int_equal(reqs[i]->rc, 0);
            assert_int_equal(reqs[i]->msg.seq, last + 1);
            last = reqs[i]->msg.seq;
            assert_int_equal(ext_int(ext(f), q, NULL), 1);
        }
        store_req_destroy(reqs[i]);
    }
    print_message("%d of %d requests were in flight\n", failed, N);
    assert_int_equal(ext_int(ext(f), "SELECT last_seq FROM rooms WHERE id = 'lobby'", NULL), last);
    assert_int_equal(add_msg(f->s, "lobby", "alice", "after"), last + 1);

    /* Sessions ended while idle (writer and readers): the next requests just work. */
    assert_int_equal(kill_backends(f, "rowcast-%"), 3);
    assert_int_equal(add_msg(f->s, "lobby", "alice", "after idle kill"), last + 2);
    for (int i = 0; i < 4; i++) {
        run_expect(f->s, req_page(STORE_JOIN_ROOM, "lobby", "alice", -1, -1, 5), 0);
        run_expect(f->s, store_req_create(STORE_PING), 0);
    }

    /* The listener saw what committed, once. */
    assert_int_equal(wait_collected(&f->col, (size_t)(last + 2), WAIT_MS), (size_t)(last + 2));
    close_store(f);
    assert_int_equal(f->col.n, (size_t)(last + 2));
    for (size_t i = 0; i < f->col.n; i++)
        assert_int_equal(f->col.v[i].seq, (int64_t)i + 1);
    waiter_destroy(w);
}

/* While the database refuses connections, requests fail with RC_ESTORE after the bound,
 * close does not hang; once it is back, requests succeed again. */
void test_database_unreachable(void **state)
{
    struct fixture *f = *state;
    enum { N = 10 };
    struct store_req *reqs[N];
    struct waiter *w = waiter_create();
    struct client *a = admin_connect();
    char sql[160];

    open_store(f, 0, 0, NO_LISTENER);
    create_room(f->s, "lobby");
    snprintf(sql, sizeof sql, "ALTER DATABASE %s ALLOW_CONNECTIONS false", f->db);
    ext_exec(a, sql);
    ext_close(f->ext); /* ext(f) could not reconnect either */
    f->ext = NULL;
    struct client *kill = admin_connect();
    char q[300];

    snprintf(q, sizeof q,
             "SELECT count(*) FROM (SELECT pg_terminate_backend(pid, 10000) AS gone FROM "
             "pg_stat_activity WHERE datname = '%s' AND application_name LIKE 'rowcast-%%') t "
             "WHERE gone",
             f->db);
    assert_int_equal(ext_int(kill, q, NULL), 3);

    /* A health probe does not wait for the database to come back. */
    int64_t t0 = now_ms();

    run_expect(f->s, store_req_create(STORE_PING), RC_ESTORE);
    print_message("PING failed after %lld ms without a database\n", (long long)(now_ms() - t0));
    assert_true(now_ms() - t0 < 3000);

    t0 = now_ms();

    for (int i = 0; i < N; i++) {
        reqs[i] =
            i % 2 ? req_msg("lobby", "alice", "lost") : req_room(STORE_ROOM_GET, "lobby", NULL);
        submit_counted(f->s, w, reqs[i]);
    }
    wait_all_ms(w, STORE_WAIT_CONNECT_MS + 10000);
    int64_t took = now_ms() - t0;

    for (int i = 0; i < N; i++) {
        assert_int_equal(reqs[i]->rc, RC_ESTORE);
        store_req_destroy(reqs[i]);
    }
    print_message("requests failed after %lld ms without a database\n", (long long)took);
    assert_true(took >= STORE_WAIT_CONNECT_MS - 100);

    /* Back: the requests after it succeed. */
    snprintf(sql, sizeof sql, "ALTER DATABASE %s ALLOW_CONNECTIONS true", f->db);
    ext_exec(a, sql);
    assert_int_equal(add_msg(f->s, "lobby", "alice", "back"), 1);
    run_expect(f->s, req_room(STORE_ROOM_GET, "lobby", NULL), 0);

    /* Closing while the database is away completes the queue with RC_ESTORE, soon. */
    snprintf(sql, sizeof sql, "ALTER DATABASE %s ALLOW_CONNECTIONS false", f->db);
    ext_exec(a, sql);
    /* The writer and whichever reader served the read have reconnected. */
    assert_true(ext_int(kill, q, NULL) >= 2);
    for (int i = 0; i < N; i++) {
        reqs[i] =
            i % 2 ? req_msg("lobby", "alice", "lost") : req_room(STORE_ROOM_GET, "lobby", NULL);
        submit_counted(f->s, w, reqs[i]);
    }
    t0 = now_ms();
    close_store(f);
    took = now_ms() - t0;
    assert_int_equal(w->pending, 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(reqs[i]->rc, RC_ESTORE);
        store_req_destroy(reqs[i]);
    }
    print_message("close took %lld ms without a database\n", (long long)took);
    assert_true(took < STORE_WAIT_CONNECT_MS + 7000);
    snprintf(sql, sizeof sql, "ALTER DATABASE %s ALLOW_CONNECTIONS true", f->db);
    ext_exec(a, sql);
    ext_close(kill);
    ext_close(a);
    waiter_destroy(w);
}
