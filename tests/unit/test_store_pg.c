/* test_store_pg.c - unit tests for src/store_pg.c against a real PostgreSQL: the server
 * at $ROWCAST_TEST_PG_URL, else a throwaway one this test starts with
 * scripts/pg-test.sh (and stops at exit). When neither works the test FAILS: it never
 * skips. Each test case gets a database of its own. The same behaviours as
 * test_store.c (SQLite), plus what only PostgreSQL has: concurrent writers from other
 * connections, NOTIFY wake-ups, dropped connections. The store completes requests on its
 * own threads; these tests block on condition variables until the completions arrive
 * (the server never does). */
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

#ifndef TOP_SRCDIR
#define TOP_SRCDIR "."
#endif

/* How long a test waits for completions before it fails instead of hanging. */
#define WAIT_MS 60000
/* The store's bound on waiting for a connection (WAIT_CONNECT_MS in store_pg.c). */
#define STORE_WAIT_CONNECT_MS 5000

/* The server every test case uses: its URL (database "rowcast" or the one given), and
 * its directory when this test started it. */
static char g_url[512];
static char g_dir[128];
static char g_script[600];
static int g_db_counter;

/* Completions still expected by a test; done callbacks count down. */
struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t pending;
    size_t done_calls;
    bool overrun; /* done called more often than requests were submitted */
};

/* One message as the listener saw it. */
struct seen {
    int64_t id, seq;
    char room_id[32];
    char user_id[32];
    char body[64];
};

/* Everything the listeners were given. */
struct collector {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct seen *v;
    size_t n, cap;
    size_t calls;
    size_t max_per_call;
    bool bad_call; /* called with n == 0 or a NULL array */
    size_t n_notifs, n_docops;
    int64_t notif_ids[16], docop_seqs[16];
    char log[64]; /* one letter per listener call, in call order: m, n, d */
    size_t log_len;
};

struct fixture {
    char db[64];
    char url[700];
    struct store *s;
    PGconn *ext; /* another client of the test's database (ext()) */
    struct collector col;
};

/* Absolute deadline ms from now on the realtime clock, for pthread_cond_timedwait. */
static struct timespec deadline(int ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Monotonic milliseconds. */
static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleeps ms milliseconds (only to poll the server's state, never to wait for the store). */
static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* A completion counter on the heap: when a wait times out the test fails while requests
 * are still in flight, and their late completions must not land on a dead stack. */
static struct waiter *waiter_create(void)
{
    struct waiter *w = calloc(1, sizeof *w);

    assert_non_null(w);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    return w;
}

/* Frees a waiter whose requests have all completed. */
static void waiter_destroy(struct waiter *w)
{
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

/* done callback: counts the completion down on the waiter in req->arg. */
static void done_count(struct store_req *req)
{
    struct waiter *w = req->arg;

    pthread_mutex_lock(&w->mu);
    w->done_calls++;
    if (w->pending == 0)
        w->overrun = true; /* reported by wait_all: cmocka must not fail on this thread */
    else
        w->pending--;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Submits req with w as its completion counter. */
static void submit_counted(struct store *s, struct waiter *w, struct store_req *req)
{
    pthread_mutex_lock(&w->mu);
    w->pending++;
    pthread_mutex_unlock(&w->mu);
    req->done = done_count;
    req->arg = w;
    store_submit(s, req);
}

/* Blocks until every request counted on w has completed; fails after ms. */
static void wait_all_ms(struct waiter *w, int ms)
{
    struct timespec ts = deadline(ms);

    pthread_mutex_lock(&w->mu);
    while (w->pending > 0) {
        if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) == ETIMEDOUT) {
            size_t left = w->pending;

            pthread_mutex_unlock(&w->mu);
            fail_msg("%zu store requests did not complete within %d ms", left, ms);
        }
    }
    bool overrun = w->overrun;

    pthread_mutex_unlock(&w->mu);
    if (overrun)
        fail_msg("a done callback ran more than once");
}

/* wait_all_ms with the default bound. */
static void wait_all(struct waiter *w)
{
    wait_all_ms(w, WAIT_MS);
}

/* Submits req and waits for its completion; returns req->rc. */
static int run(struct store *s, struct store_req *req)
{
    struct waiter *w = waiter_create();

    submit_counted(s, w, req);
    wait_all(w);
    assert_int_equal(w->done_calls, 1);
    waiter_destroy(w);
    return req->rc;
}

/* Request constructors; the strings are copied (store_req_destroy frees them). */
static char *dup_or_null(const char *s)
{
    if (!s)
        return NULL;
    char *d = strdup(s);

    assert_non_null(d);
    return d;
}

/* A room request (ROOM_CREATE/GET/DELETE, MESSAGES_PAGE with defaults). */
static struct store_req *req_room(enum store_op op, const char *room_id, const char *name)
{
    struct store_req *r = store_req_create(op);

    r->room_id = dup_or_null(room_id);
    r->name = dup_or_null(name);
    return r;
}

/* A membership request (MEMBER_PUT/DELETE, MEMBERS_LIST). */
static struct store_req *req_member(enum store_op op, const char *room_id, const char *user_id,
                                    const char *role)
{
    struct store_req *r = store_req_create(op);

    r->room_id = dup_or_null(room_id);
    r->user_id = dup_or_null(user_id);
    r->role = dup_or_null(role);
    return r;
}

/* A MESSAGE_ADD request. */
static struct store_req *req_msg(const char *room_id, const char *user_id, const char *body)
{
    struct store_req *r = store_req_create(STORE_MESSAGE_ADD);

    r->room_id = dup_or_null(room_id);
    r->user_id = dup_or_null(user_id);
    r->body = dup_or_null(body);
    return r;
}

/* A NOTIFY_ADD request (data: JSON text or NULL). */
static struct store_req *req_notif(const char *user_id, const char *message, const char *data)
{
    struct store_req *r = store_req_create(STORE_NOTIFY_ADD);

    r->user_id = dup_or_null(user_id);
    r->body = dup_or_null(message);
    r->data = dup_or_null(data);
    return r;
}

/* A DOC_EDIT request. */
static struct store_req *req_docop(const char *room_id, const char *user_id, const char *op,
                                   const char *data)
{
    struct store_req *r = store_req_create(STORE_DOC_EDIT);

    r->room_id = dup_or_null(room_id);
    r->user_id = dup_or_null(user_id);
    r->name = dup_or_null(op);
    r->data = dup_or_null(data);
    return r;
}

/* A MESSAGES_PAGE, JOIN_ROOM or DOC_JOIN request with its bounds. */
static struct store_req *req_page(enum store_op op, const char *room_id, const char *user_id,
                                  int64_t after_seq, int64_t before_seq, int limit)
{
    struct store_req *r = store_req_create(op);

    r->room_id = dup_or_null(room_id);
    r->user_id = dup_or_null(user_id);
    r->after_seq = after_seq;
    r->before_seq = before_seq;
    r->limit = limit;
    return r;
}

/* Runs a request whose rc is expected to be want, then frees it. */
static void run_expect(struct store *s, struct store_req *req, int want)
{
    int rc = run(s, req);

    if (rc != want)
        fail_msg("op %d room=%s user=%s: rc %d (%s), want %d (%s)", req->op,
                 req->room_id ? req->room_id : "-", req->user_id ? req->user_id : "-", rc,
                 rc_strerror(rc), want, rc_strerror(want));
    store_req_destroy(req);
}

/* Creates a room named by its id; fails the test on error. */
static void create_room(struct store *s, const char *id)
{
    run_expect(s, req_room(STORE_ROOM_CREATE, id, id), 0);
}

/* Adds or updates a membership; fails the test on error. */
static void put_member(struct store *s, const char *room, const char *user, const char *role)
{
    run_expect(s, req_member(STORE_MEMBER_PUT, room, user, role), 0);
}

/* Adds a message and returns its seq. */
static int64_t add_msg(struct store *s, const char *room, const char *user, const char *body)
{
    struct store_req *r = req_msg(room, user, body);
    int rc = run(s, r);

    if (rc != 0)
        fail_msg("add_msg(%s, %s): rc %d (%s)", room, body, rc, rc_strerror(rc));
    int64_t seq = r->msg.seq;

    store_req_destroy(r);
    return seq;
}

/* Asserts "YYYY-MM-DDTHH:MM:SS.mmmZ". */
static void assert_iso8601(const char *ts)
{
    static const char pattern[] = "dddd-dd-ddTdd:dd:dd.dddZ";

    if (strlen(ts) != sizeof pattern - 1)
        fail_msg("timestamp \"%s\" has the wrong length", ts);
    for (size_t i = 0; pattern[i]; i++) {
        bool ok = pattern[i] == 'd' ? (ts[i] >= '0' && ts[i] <= '9') : ts[i] == pattern[i];

        if (!ok)
            fail_msg("timestamp \"%s\" is not YYYY-MM-DDTHH:MM:SS.mmmZ", ts);
    }
}

/* ---- other clients of the database ------------------------------------------------- */

/* Notice processor that drops notices (e.g. "database does not exist, skipping"). */
static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* A connection standing for another client (another node, a backend job, psql). */
static PGconn *ext_connect(const char *url)
{
    PGconn *c = PQconnectdb(url);

    if (PQstatus(c) != CONNECTION_OK) {
        char msg[512];

        snprintf(msg, sizeof msg, "%s", PQerrorMessage(c));
        PQfinish(c);
        fail_msg("cannot connect to %s: %s", url, msg);
    }
    PQsetNoticeProcessor(c, quiet, NULL);
    return c;
}

/* The fixture's other client of the test database, connected on first use. */
static PGconn *ext(struct fixture *f)
{
    if (!f->ext)
        f->ext = ext_connect(f->url);
    return f->ext;
}

/* Runs SQL (no parameters, several statements allowed); fails the test on error. */
static void ext_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        char msg[512];

        snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(r));
        PQclear(r);
        fail_msg("\"%.200s\": %s", sql, msg);
    }
    PQclear(r);
}

/* Runs SQL expected to fail; returns its SQLSTATE in state and its message in msg. */
static void ext_fail(PGconn *c, const char *sql, char state[6], char *msg, size_t msglen)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        PQclear(r);
        fail_msg("\"%.200s\" succeeded; it should fail", sql);
    }
    const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);

    snprintf(state, 6, "%s", code ? code : "");
    snprintf(msg, msglen, "%s", PQresultErrorMessage(r));
    PQclear(r);
}

/* Runs a query returning one integer, with an optional text parameter $1. */
static int64_t ext_int(PGconn *c, const char *sql, const char *arg)
{
    const char *params[1] = {arg};
    PGresult *r = PQexecParams(c, sql, arg ? 1 : 0, NULL, params, NULL, NULL, 0);

    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 || PQgetisnull(r, 0, 0)) {
        char msg[512];

        snprintf(msg, sizeof msg, "%s (%d rows)", PQresultErrorMessage(r), PQntuples(r));
        PQclear(r);
        fail_msg("\"%.200s\": %s", sql, msg);
    }
    int64_t v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);

    PQclear(r);
    return v;
}

/* A short-lived connection to the server's own database, for CREATE/DROP DATABASE. */
static PGconn *admin_connect(void)
{
    return ext_connect(g_url);
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

/* Waits until count(*) of backends of the test database matching cond reaches want. */
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
static void wait_writer_blocked(struct fixture *f)
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

/* ---- listeners --------------------------------------------------------------------- */

/* Message listener: copies what it is given into the collector in its arg. */
static void collect(const struct store_msg *msgs, size_t n, void *arg)
{
    struct collector *c = arg;

    pthread_mutex_lock(&c->mu);
    c->calls++;
    if (c->log_len < sizeof c->log - 1)
        c->log[c->log_len++] = 'm';
    if (n == 0 || !msgs)
        c->bad_call = true;
    if (n > c->max_per_call)
        c->max_per_call = n;
    for (size_t i = 0; i < n; i++) {
        if (c->n == c->cap) {
            c->cap = c->cap ? c->cap * 2 : 256;
            c->v = realloc(c->v, c->cap * sizeof *c->v);
            if (!c->v)
                abort(); /* on the writer thread: cmocka cannot fail from here */
        }
        struct seen *e = &c->v[c->n++];

        e->id = msgs[i].id;
        e->seq = msgs[i].seq;
        snprintf(e->room_id, sizeof e->room_id, "%s", msgs[i].room_id ? msgs[i].room_id : "");
        snprintf(e->user_id, sizeof e->user_id, "%s", msgs[i].user_id ? msgs[i].user_id : "");
        snprintf(e->body, sizeof e->body, "%s", msgs[i].body ? msgs[i].body : "");
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Notification listener: records ids. */
static void collect_notifs(const struct store_notif *v, size_t n, void *arg)
{
    struct collector *c = arg;

    pthread_mutex_lock(&c->mu);
    if (c->log_len < sizeof c->log - 1)
        c->log[c->log_len++] = 'n';
    if (n == 0 || !v)
        c->bad_call = true;
    for (size_t i = 0; i < n; i++) {
        if (c->n_notifs < 16)
            c->notif_ids[c->n_notifs] = v[i].id;
        c->n_notifs++;
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Document operation listener: records seqs. */
static void collect_docops(const struct store_docop *v, size_t n, void *arg)
{
    struct collector *c = arg;

    pthread_mutex_lock(&c->mu);
    if (c->log_len < sizeof c->log - 1)
        c->log[c->log_len++] = 'd';
    if (n == 0 || !v)
        c->bad_call = true;
    for (size_t i = 0; i < n; i++) {
        if (c->n_docops < 16)
            c->docop_seqs[c->n_docops] = v[i].seq;
        c->n_docops++;
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Waits until the collector holds at least n messages or ms pass; returns the count. */
static size_t wait_collected(struct collector *c, size_t n, int ms)
{
    struct timespec ts = deadline(ms);

    pthread_mutex_lock(&c->mu);
    while (c->n < n)
        if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT)
            break;
    size_t got = c->n;

    pthread_mutex_unlock(&c->mu);
    return got;
}

/* Listener calls so far. */
static size_t collected_calls(struct collector *c)
{
    pthread_mutex_lock(&c->mu);
    size_t calls = c->calls;

    pthread_mutex_unlock(&c->mu);
    return calls;
}

/* Asserts the collector's ids strictly increase (exactly once, in id order). */
static void assert_collected_in_id_order(struct collector *c)
{
    assert_false(c->bad_call);
    for (size_t i = 1; i < c->n; i++)
        if (c->v[i].id <= c->v[i - 1].id)
            fail_msg("listener: message %zu has id %lld after id %lld", i, (long long)c->v[i].id,
                     (long long)c->v[i - 1].id);
}

/* ---- fixture ----------------------------------------------------------------------- */

/* Opens the fixture's store; with listen, the collector gets every table's rows. */
static void open_store(struct fixture *f, int batch_max, bool listen)
{
    struct store_options opts = {.url = f->url,
                                 .batch_max = batch_max,
                                 .listener = listen ? collect : NULL,
                                 .listener_arg = listen ? &f->col : NULL,
                                 .notif_listener = listen ? collect_notifs : NULL,
                                 .docop_listener = listen ? collect_docops : NULL};
    char err[512] = "";
    int rc = store_pg_ops.open(&opts, &f->s, err, sizeof err);

    if (rc != 0)
        fail_msg("store open(%s): rc=%d err=\"%s\"", f->url, rc, err);
    assert_non_null(f->s);
    assert_ptr_equal(f->s->ops, &store_pg_ops);
}

/* Closes the fixture's store (the listeners cannot run afterwards). */
static void close_store(struct fixture *f)
{
    store_close(f->s);
    f->s = NULL;
}

/* Creates a fresh database for the test case. */
static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    char sql[128];

    if (!f)
        return -1;
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
    if (!ok) {
        free(f);
        return -1;
    }
    pthread_mutex_init(&f->col.mu, NULL);
    pthread_cond_init(&f->col.cv, NULL);
    *state = f;
    return 0;
}

/* Closes the store if a test left it open and drops the test's database. */
static int teardown(void **state)
{
    struct fixture *f = *state;
    char sql[160];

    store_close(f->s);
    PQfinish(f->ext);
    PGconn *a = PQconnectdb(g_url);

    PQsetNoticeProcessor(a, quiet, NULL);
    snprintf(sql, sizeof sql, "ALTER DATABASE %s ALLOW_CONNECTIONS true", f->db);
    PQclear(PQexec(a, sql));
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", f->db);
    PQclear(PQexec(a, sql));
    PQfinish(a);
    free(f->col.v);
    pthread_mutex_destroy(&f->col.mu);
    pthread_cond_destroy(&f->col.cv);
    free(f);
    return 0;
}

/* Number of migrations compiled in. */
static int n_migrations(void)
{
    int n = 0;

    while (migrations_postgres[n].name)
        n++;
    return n;
}

/* ---- migrations -------------------------------------------------------------------- */

/* migrate applies every migration once; the second run applies none. */
static void test_migrate_idempotent(void **state)
{
    struct fixture *f = *state;
    char err[512] = "";
    int applied = -1;

    assert_true(n_migrations() >= 3);
    assert_int_equal(store_pg_ops.migrate(f->url, &applied, err, sizeof err), 0);
    assert_int_equal(applied, n_migrations());
    applied = -1;
    assert_int_equal(store_pg_ops.migrate(f->url, &applied, err, sizeof err), 0);
    assert_int_equal(applied, 0);

    PGconn *db = ext(f);

    assert_int_equal(ext_int(db, "SELECT count(*) FROM schema_migrations", NULL), n_migrations());
    for (int i = 0; i < n_migrations(); i++)
        assert_int_equal(ext_int(db, "SELECT count(*) FROM schema_migrations WHERE name = $1",
                                 migrations_postgres[i].name),
                         1);
    assert_int_equal(ext_int(db,
                             "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND "
                             "tablename IN ('users', 'rooms', 'memberships', 'messages', "
                             "'notifications', 'document_ops', 'nodes', 'presences', "
                             "'broadcasts')",
                             NULL),
                     9);
    assert_int_equal(ext_int(db,
                             "SELECT count(*) FROM pg_proc WHERE proname IN ('rowcast_broadcast', "
                             "'rowcast_iso', 'rowcast_notify_message')",
                             NULL),
                     3);
}

/* One thread of the concurrent migration test. */
struct migrate_arg {
    const char *url;
    int rc, applied;
    char err[256];
};

/* Runs migrate once. */
static void *migrate_thread(void *p)
{
    struct migrate_arg *a = p;

    a->rc = store_pg_ops.migrate(a->url, &a->applied, a->err, sizeof a->err);
    return NULL;
}

/* Nodes starting at once take turns (advisory lock): each migration is applied once. */
static void test_migrate_concurrent(void **state)
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
    assert_int_equal(total, n_migrations());
    assert_int_equal(ext_int(ext(f), "SELECT count(*) FROM schema_migrations", NULL),
                     n_migrations());
}

/* Opening migrates a new database; reopening and migrating again add nothing. */
static void test_open_applies_migrations(void **state)
{
    struct fixture *f = *state;
    char err[512] = "";
    int applied = -1;

    open_store(f, 0, false);
    assert_int_equal(ext_int(ext(f), "SELECT count(*) FROM schema_migrations", NULL),
                     n_migrations());
    assert_int_equal(ext_int(ext(f), "SELECT count(*) FROM rooms", NULL), 0);
    /* Already applied by open: migrate finds nothing to do, even with the store open. */
    assert_int_equal(store_pg_ops.migrate(f->url, &applied, err, sizeof err), 0);
    assert_int_equal(applied, 0);
    close_store(f);
    open_store(f, 0, false);
    close_store(f);
    assert_int_equal(ext_int(ext(f), "SELECT count(*) FROM schema_migrations", NULL),
                     n_migrations());
}

/* sql/notify.sql (for operators) is the migration that installs it, byte for byte. */
static void test_notify_sql_matches_migration(void **state)
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
 * never the password. */
static void test_open_errors(void **state)
{
    struct fixture *f = *state;
    char err[512] = "";
    struct store *s = NULL;
    struct store_options opts = {.url = "postgres://rowcast:s3cret@127.0.0.1:1/rowcast"};
    int applied = -1;
    int64_t t0 = now_ms();

    assert_int_equal(store_pg_ops.open(&opts, &s, err, sizeof err), RC_ESTORE);
    assert_null(s);
    assert_true(strlen(err) > 0);
    assert_null(strstr(err, "s3cret"));
    assert_non_null(strstr(err, "127.0.0.1"));
    assert_true(now_ms() - t0 < 10000);

    err[0] = '\0';
    assert_int_equal(store_pg_ops.migrate(opts.url, &applied, err, sizeof err), RC_ESTORE);
    assert_null(strstr(err, "s3cret"));

    char url[800];

    url_with_db(f->url, "rowcast_no_such_database", url, sizeof url);
    opts.url = url;
    err[0] = '\0';
    assert_int_equal(store_pg_ops.open(&opts, &s, err, sizeof err), RC_ESTORE);
    assert_null(s);
    assert_non_null(strstr(err, "rowcast_no_such_database"));

    /* Both URL schemes work. */
    char alt[800];

    snprintf(alt, sizeof alt, "postgresql%s", strstr(f->url, "://"));
    opts.url = alt;
    assert_int_equal(store_pg_ops.open(&opts, &s, err, sizeof err), 0);
    store_close(s);
    assert_string_equal(store_pg_ops.scheme, "postgres");
}

/* ---- writes and reads -------------------------------------------------------------- */

/* PING answers 0. */
static void test_ping(void **state)
{
    struct fixture *f = *state;

    open_store(f, 0, false);
    run_expect(f->s, store_req_create(STORE_PING), 0);
}

/* USER_PUT creates, then updates in place keeping created_at. */
static void test_user_put(void **state)
{
    struct fixture *f = *state;
    struct store_req *r = store_req_create(STORE_USER_PUT);

    open_store(f, 0, false);
    r->user_id = strdup("alice");
    r->name = strdup("Alice");
    r->avatar_url = strdup("https://example.com/a.png");
    assert_int_equal(run(f->s, r), 0);
    assert_string_equal(r->user.id, "alice");
    assert_string_equal(r->user.name, "Alice");
    assert_string_equal(r->user.avatar_url, "https://example.com/a.png");
    assert_iso8601(r->user.created_at);
    char created[32];

    memcpy(created, r->user.created_at, sizeof created);
    store_req_destroy(r);

    r = store_req_create(STORE_USER_PUT);
    r->user_id = strdup("alice");
    r->name = strdup("Alice B.");
    assert_int_equal(run(f->s, r), 0);
    assert_string_equal(r->user.name, "Alice B.");
    assert_null(r->user.avatar_url);
    assert_string_equal(r->user.created_at, created);
    store_req_destroy(r);

    /* A user without a name is refused by the schema. */
    r = store_req_create(STORE_USER_PUT);
    r->user_id = strdup("nameless");
    run_expect(f->s, r, RC_EINVAL);
    assert_int_equal(ext_int(ext(f), "SELECT count(*) FROM users", NULL), 1);
}

/* ROOM_CREATE returns the row; a second create conflicts; ROOM_GET finds it. */
static void test_room_create_get_conflict(void **state)
{
    struct fixture *f = *state;
    struct store_req *r = req_room(STORE_ROOM_CREATE, "lobby", "The Lobby");

    open_store(f, 0, false);
    assert_int_equal(run(f->s, r), 0);
    assert_string_equal(r->room.id, "lobby");
    assert_string_equal(r->room.name, "The Lobby");
    assert_int_equal(r->room.last_seq, 0);
    assert_int_equal(r->room.doc_last_seq, 0);
    assert_iso8601(r->room.created_at);
    store_req_destroy(r);

    run_expect(f->s, req_room(STORE_ROOM_CREATE, "lobby", "Another"), RC_ECONFLICT);

    r = req_room(STORE_ROOM_GET, "lobby", NULL);
    assert_int_equal(run(f->s, r), 0);
    assert_string_equal(r->room.id, "lobby");
    assert_string_equal(r->room.name, "The Lobby");
    assert_int_equal(r->room.last_seq, 0);
    store_req_destroy(r);

    run_expect(f->s, req_room(STORE_ROOM_GET, "nowhere", NULL), RC_ENOTFOUND);

    add_msg(f->s, "lobby", "alice", "one");
    add_msg(f->s, "lobby", "alice", "two");
    r = req_room(STORE_ROOM_GET, "lobby", NULL);
    assert_int_equal(run(f->s, r), 0);
    assert_int_equal(r->room.last_seq, 2);
    store_req_destroy(r);
}

/* ROOM_DELETE removes the room's messages, memberships and document ops, nothing else. */
static void test_room_delete_cascades(void **state)
{
    struct fixture *f = *state;

    open_store(f, 0, false);
    create_room(f->s, "doomed");
    create_room(f->s, "kept");
    put_member(f->s, "doomed", "alice", "owner");
    put_member(f->s, "doomed", "bob", "member");
    put_member(f->s, "kept", "alice", "member");
    for (int i = 0; i < 5; i++) {
        add_msg(f->s, "doomed", "alice", "bye");
        add_msg(f->s, "kept", "alice", "stay");
    }
    run_expect(f->s, req_docop("doomed", "alice", "insert", "{\"at\":1}"), 0);

    run_expect(f->s, req_room(STORE_ROOM_DELETE, "doomed", NULL), 0);
    run_expect(f->s, req_room(STORE_ROOM_GET, "doomed", NULL), RC_ENOTFOUND);
    run_expect(f->s, req_room(STORE_ROOM_DELETE, "doomed", NULL), RC_ENOTFOUND);
    run_expect(f->s, req_room(STORE_ROOM_DELETE, "never-was", NULL), RC_ENOTFOUND);

    PGconn *db = ext(f);

    assert_int_equal(ext_int(db, "SELECT count(*) FROM messages WHERE room_id = $1", "doomed"), 0);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM memberships WHERE room_id = $1", "doomed"),
                     0);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM document_ops WHERE room_id = $1", "doomed"),
                     0);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM messages WHERE room_id = $1", "kept"), 5);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM memberships WHERE room_id = $1", "kept"), 1);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM users", NULL), 2);

    /* A room created again under the same id starts over. */
    create_room(f->s, "doomed");
    assert_int_equal(add_msg(f->s, "doomed", "alice", "again"), 1);
    struct store_req *r = req_member(STORE_MEMBERS_LIST, "doomed", NULL, NULL);

    assert_int_equal(run(f->s, r), 0);
    assert_int_equal(r->n_members, 0);
    store_req_destroy(r);
}

/* A room delete and a transaction inserting into that room: the delete waits for the
 * insert and removes its rows too; an insert that waited for a delete fails. */
static void test_room_delete_races_insert(void **state)
{
    struct fixture *f = *state;

    open_store(f, 0, false);
    create_room(f->s, "doomed");
    PGconn *other = ext_connect(f->url);

    ext_exec(other, "BEGIN; INSERT INTO messages(room_id, user_id, body) "
                    "VALUES ('doomed', 'cron', 'in flight')");
    struct waiter *w = waiter_create();
    struct store_req *del = req_room(STORE_ROOM_DELETE, "doomed", NULL);

    submit_counted(f->s, w, del);
    wait_writer_blocked(f); /* on the room row the open transaction holds */
    ext_exec(other, "COMMIT");
    wait_all(w);
    assert_int_equal(del->rc, 0);
    PGconn *db = ext(f);

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
    PQfinish(other);
}

/* MEMBER_PUT creates the user, updates the role, refuses bad rooms and roles. */
static void test_member_put_creates_user_and_upserts(void **state)
{
    struct fixture *f = *state;
    struct store_req *r;

    open_store(f, 0, false);
    create_room(f->s, "lobby");

    r = req_member(STORE_MEMBER_PUT, "lobby", "alice", "viewer");
    assert_int_equal(run(f->s, r), 0);
    assert_string_equal(r->member.room_id, "lobby");
    assert_string_equal(r->member.user_id, "alice");
    assert_string_equal(r->member.role, "viewer");
    assert_string_equal(r->member.name, "alice"); /* a new user is named by its id */
    assert_null(r->member.avatar_url);
    store_req_destroy(r);

    PGconn *db = ext(f);

    assert_int_equal(ext_int(db, "SELECT count(*) FROM users WHERE id = $1", "alice"), 1);

    r = req_member(STORE_MEMBER_PUT, "lobby", "alice", "editor");
    assert_int_equal(run(f->s, r), 0);
    assert_string_equal(r->member.role, "editor");
    store_req_destroy(r);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM memberships WHERE room_id = $1", "lobby"),
                     1);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM users", NULL), 1);

    /* An existing user keeps the name and avatar it has. */
    r = store_req_create(STORE_USER_PUT);
    r->user_id = strdup("bob");
    r->name = strdup("Bob Builder");
    r->avatar_url = strdup("https://example.com/b.png");
    run_expect(f->s, r, 0);
    r = req_member(STORE_MEMBER_PUT, "lobby", "bob", "member");
    assert_int_equal(run(f->s, r), 0);
    assert_string_equal(r->member.name, "Bob Builder");
    assert_string_equal(r->member.avatar_url, "https://example.com/b.png");
    store_req_destroy(r);

    run_expect(f->s, req_member(STORE_MEMBER_PUT, "nowhere", "carol", "member"), RC_ENOTFOUND);
    run_expect(f->s, req_member(STORE_MEMBER_PUT, "lobby", "dave", "admin"), RC_EINVAL);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM users WHERE id = $1", "carol"), 0);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM users WHERE id = $1", "dave"), 0);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM memberships", NULL), 2);
}

/* MEMBER_DELETE removes one membership; MEMBERS_LIST is sorted by user_id, bytewise. */
static void test_member_delete_and_list(void **state)
{
    struct fixture *f = *state;
    static const char *const users[] = {"mallory", "carol", "alice", "zed", "bob", "Zoe"};
    static const char *const roles[] = {"viewer", "editor", "owner", "member", "member", "viewer"};
    struct store_req *r;

    open_store(f, 0, false);
    create_room(f->s, "lobby");
    create_room(f->s, "other");
    put_member(f->s, "other", "eve", "owner");
    for (size_t i = 0; i < sizeof users / sizeof users[0]; i++)
        put_member(f->s, "lobby", users[i], roles[i]);

    r = req_member(STORE_MEMBERS_LIST, "lobby", NULL, NULL);
    assert_int_equal(run(f->s, r), 0);
    static const char *const sorted[] = {"Zoe", "alice", "bob", "carol", "mallory", "zed"};
    static const char *const sorted_roles[] = {"viewer", "owner",  "member",
                                               "editor", "viewer", "member"};

    assert_int_equal(r->n_members, 6);
    for (size_t i = 0; i < 6; i++) {
        assert_string_equal(r->members[i].user_id, sorted[i]);
        assert_string_equal(r->members[i].role, sorted_roles[i]);
        assert_string_equal(r->members[i].room_id, "lobby");
        assert_string_equal(r->members[i].name, sorted[i]);
    }
    store_req_destroy(r);

    run_expect(f->s, req_member(STORE_MEMBER_DELETE, "lobby", "carol", NULL), 0);
    run_expect(f->s, req_member(STORE_MEMBER_DELETE, "lobby", "carol", NULL), RC_ENOTFOUND);
    run_expect(f->s, req_member(STORE_MEMBER_DELETE, "lobby", "eve", NULL), RC_ENOTFOUND);
    run_expect(f->s, req_member(STORE_MEMBER_DELETE, "nowhere", "alice", NULL), RC_ENOTFOUND);

    r = req_member(STORE_MEMBERS_LIST, "lobby", NULL, NULL);
    assert_int_equal(run(f->s, r), 0);
    assert_int_equal(r->n_members, 5);
    for (size_t i = 0; i < r->n_members; i++)
        assert_string_not_equal(r->members[i].user_id, "carol");
    store_req_destroy(r);

    r = req_member(STORE_MEMBERS_LIST, "other", NULL, NULL);
    assert_int_equal(run(f->s, r), 0);
    assert_int_equal(r->n_members, 1);
    assert_string_equal(r->members[0].user_id, "eve");
    store_req_destroy(r);

    run_expect(f->s, req_member(STORE_MEMBERS_LIST, "nowhere", NULL, NULL), RC_ENOTFOUND);
}

/* MESSAGE_ADD returns id, per-room seq and inserted_at as stored. */
static void test_message_add(void **state)
{
    struct fixture *f = *state;
    struct store_req *r;

    open_store(f, 0, false);
    create_room(f->s, "lobby");
    create_room(f->s, "other");

    r = req_msg("lobby", "alice", "hello \xc3\xa9");
    assert_int_equal(run(f->s, r), 0);
    assert_true(r->msg.id > 0);
    assert_int_equal(r->msg.seq, 1);
    assert_string_equal(r->msg.room_id, "lobby");
    assert_string_equal(r->msg.user_id, "alice");
    assert_string_equal(r->msg.body, "hello \xc3\xa9");
    assert_iso8601(r->msg.inserted_at);
    int64_t first_id = r->msg.id;
    char first_ts[32];

    memcpy(first_ts, r->msg.inserted_at, sizeof first_ts);
    store_req_destroy(r);

    r = req_msg("lobby", "bob", "second");
    assert_int_equal(run(f->s, r), 0);
    assert_true(r->msg.id > first_id);
    assert_int_equal(r->msg.seq, 2);
    assert_true(strcmp(r->msg.inserted_at, first_ts) >= 0);
    store_req_destroy(r);

    assert_int_equal(add_msg(f->s, "other", "alice", "x"), 1);
    assert_int_equal(add_msg(f->s, "lobby", "alice", "third"), 3);

    run_expect(f->s, req_msg("nowhere", "alice", "lost"), RC_ENOTFOUND);
    run_expect(f->s, req_msg("lobby", "alice", NULL), RC_EINVAL);
    /* The refused messages used no seq. */
    assert_int_equal(add_msg(f->s, "lobby", "alice", "fourth"), 4);

    /* What the request returned is what was stored. */
    char sql[400];

    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM messages WHERE id = %lld AND room_id = 'lobby' AND seq = 1 "
             "AND user_id = 'alice' AND body = $1 AND rowcast_iso(inserted_at) = '%s'",
             (long long)first_id, first_ts);
    assert_int_equal(ext_int(ext(f), sql, "hello \xc3\xa9"), 1);
    assert_int_equal(ext_int(ext(f), "SELECT count(*) FROM messages WHERE room_id = $1", "lobby"),
                     4);
}

/* One submitting thread of the concurrency test. */
struct writer_arg {
    struct store *s;
    struct waiter *w;
    int t;
    struct store_req *reqs[250];
};

static const char *const conc_rooms[2] = {"red", "blue"};

/* Submits 250 messages without waiting for any of them. */
static void *writer_thread(void *p)
{
    struct writer_arg *a = p;

    for (int i = 0; i < 250; i++) {
        char body[32];

        snprintf(body, sizeof body, "t%d-%d", a->t, i);
        a->reqs[i] = req_msg(conc_rooms[(a->t + i) % 2], "writer", body);
        submit_counted(a->s, a->w, a->reqs[i]);
    }
    return NULL;
}

/* 8 threads x 250 unawaited writes into 2 rooms: seqs 1..N per room, FIFO per thread. */
static void test_seq_gapless_concurrent_writers(void **state)
{
    struct fixture *f = *state;
    enum { THREADS = 8, PER = 250, TOTAL = THREADS * PER, PER_ROOM = TOTAL / 2 };
    struct writer_arg args[THREADS];
    pthread_t th[THREADS];
    struct waiter *w;

    open_store(f, 0, true);
    create_room(f->s, "red");
    create_room(f->s, "blue");
    w = waiter_create();
    for (int t = 0; t < THREADS; t++) {
        args[t].s = f->s;
        args[t].w = w;
        args[t].t = t;
        assert_int_equal(pthread_create(&th[t], NULL, writer_thread, &args[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    wait_all(w);
    assert_int_equal(w->done_calls, TOTAL);

    static bool used[2][PER_ROOM + 1];

    memset(used, 0, sizeof used);
    for (int t = 0; t < THREADS; t++) {
        int64_t last[2] = {0, 0};

        for (int i = 0; i < PER; i++) {
            struct store_req *r = args[t].reqs[i];
            int room = (t + i) % 2;

            if (r->rc != 0)
                fail_msg("thread %d message %d: rc %d", t, i, r->rc);
            assert_string_equal(r->msg.room_id, conc_rooms[room]);
            assert_in_range(r->msg.seq, 1, PER_ROOM);
            if (used[room][r->msg.seq])
                fail_msg("room %s: seq %lld handed out twice", conc_rooms[room],
                         (long long)r->msg.seq);
            used[room][r->msg.seq] = true;
            if (r->msg.seq <= last[room])
                fail_msg("thread %d: seq %lld after %lld in room %s", t, (long long)r->msg.seq,
                         (long long)last[room], conc_rooms[room]);
            last[room] = r->msg.seq;
        }
    }

    /* In the database, per room: seq 1..N with no gap, in id order (one writer). */
    for (int room = 0; room < 2; room++) {
        assert_int_equal(ext_int(ext(f),
                                 "SELECT count(*) FROM (SELECT seq, row_number() OVER "
                                 "(ORDER BY id) AS rn FROM messages WHERE room_id = $1) t "
                                 "WHERE seq = rn",
                                 conc_rooms[room]),
                         PER_ROOM);
        assert_int_equal(
            ext_int(ext(f), "SELECT last_seq FROM rooms WHERE id = $1", conc_rooms[room]),
            PER_ROOM);
    }

    assert_int_equal(wait_collected(&f->col, TOTAL, WAIT_MS), TOTAL);
    close_store(f);
    assert_int_equal(f->col.n, TOTAL);
    assert_collected_in_id_order(&f->col);
    int64_t last[2] = {0, 0};

    for (size_t i = 0; i < f->col.n; i++) {
        int room = !strcmp(f->col.v[i].room_id, "blue");

        assert_int_equal(f->col.v[i].seq, last[room] + 1);
        last[room] = f->col.v[i].seq;
    }
    print_message("%d writes took %zu commits\n", TOTAL, f->col.calls);
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < PER; i++)
            store_req_destroy(args[t].reqs[i]);
    waiter_destroy(w);
}

/* Writes queued behind a held lock commit in batches of batch_max, not one by one. */
static void test_group_commit_batches(void **state)
{
    struct fixture *f = *state;
    enum { BATCH = 100, N = 1000 };
    static struct store_req *reqs[N + 1];
    struct waiter *w;

    open_store(f, BATCH, true);
    create_room(f->s, "lobby");
    assert_int_equal(collected_calls(&f->col), 0);

    /* Another client holds a lock the writer needs: the first request goes into a batch of
     * its own that waits for it, and every other request queues up behind. */
    PGconn *lock = ext_connect(f->url);

    ext_exec(lock, "BEGIN; LOCK TABLE messages IN EXCLUSIVE MODE");
    w = waiter_create();
    reqs[0] = req_msg("lobby", "alice", "m0");
    submit_counted(f->s, w, reqs[0]);
    wait_writer_blocked(f);
    int64_t t0 = now_ms();

    for (int i = 1; i <= N; i++) {
        char body[32];

        snprintf(body, sizeof body, "m%d", i);
        reqs[i] = req_msg("lobby", "alice", body);
        submit_counted(f->s, w, reqs[i]);
    }
    assert_int_equal(ext_int(lock, "SELECT count(*) FROM messages", NULL), 0);
    ext_exec(lock, "COMMIT");
    int64_t t1 = now_ms();

    wait_all(w);
    assert_int_equal(w->done_calls, N + 1);
    for (int i = 0; i <= N; i++) {
        if (reqs[i]->rc != 0)
            fail_msg("request %d: rc %d (%s)", i, reqs[i]->rc, rc_strerror(reqs[i]->rc));
        assert_int_equal(reqs[i]->msg.seq, i + 1);
        store_req_destroy(reqs[i]);
    }
    int64_t t2 = now_ms();

    /* The listener runs once per commit: count commits that way. */
    assert_int_equal(wait_collected(&f->col, N + 1, WAIT_MS), N + 1);
    close_store(f);
    size_t commits = f->col.calls;

    if (commits != 1 + N / BATCH)
        fail_msg("%d writes took %zu commits; want 1 + %d batches of %d", N + 1, commits, N / BATCH,
                 BATCH);
    assert_true(f->col.max_per_call == BATCH);
    assert_int_equal(f->col.n, N + 1);
    assert_collected_in_id_order(&f->col);
    print_message("queued %d writes in %lld ms, committed them in %zu batches in %lld ms\n", N,
                  (long long)(t1 - t0), commits, (long long)(t2 - t1));
    PQfinish(lock);
    waiter_destroy(w);
}

/* Failing requests in a batch get their own rc; the others still commit. */
static void test_failed_request_does_not_affect_batch(void **state)
{
    struct fixture *f = *state;
    enum { N = 12 };
    struct store_req *reqs[N];
    static const int want[N] = {
        0,         RC_ENOTFOUND, 0, RC_ECONFLICT, RC_EINVAL, RC_ENOTFOUND, RC_ENOTFOUND, 0,
        RC_EINVAL, RC_EINVAL,    0, RC_ENOTFOUND};
    struct waiter *w;

    open_store(f, 100, true);
    create_room(f->s, "lobby");
    create_room(f->s, "gate");
    put_member(f->s, "lobby", "alice", "owner");

    /* The writer waits on a row lock of room "gate" with one request while the batch
     * under test queues; all of it is then one batch. */
    PGconn *lock = ext_connect(f->url);

    ext_exec(lock, "BEGIN; SELECT 1 FROM rooms WHERE id = 'gate' FOR UPDATE");
    w = waiter_create();
    struct store_req *gate = req_msg("gate", "alice", "gate");

    submit_counted(f->s, w, gate);
    wait_writer_blocked(f);
    reqs[0] = req_msg("lobby", "alice", "first");
    reqs[1] = req_msg("nowhere", "alice", "lost");
    reqs[2] = req_msg("lobby", "alice", "second");
    reqs[3] = req_room(STORE_ROOM_CREATE, "lobby", "again");
    reqs[4] = req_member(STORE_MEMBER_PUT, "lobby", "mallory", "superuser");
    reqs[5] = req_member(STORE_MEMBER_PUT, "nowhere", "carol", "member");
    reqs[6] = req_member(STORE_MEMBER_DELETE, "lobby", "nobody", NULL);
    reqs[7] = req_msg("lobby", "alice", "third");
    reqs[8] = req_docop("lobby", "alice", "insert", "{not json");
    reqs[9] = req_notif("alice", NULL, NULL); /* no message */
    reqs[10] = req_notif("alice", "hello", "{\"k\":1}");
    reqs[11] = req_msg("nowhere", "alice", "lost again"); /* fails last */
    for (int i = 0; i < N; i++)
        submit_counted(f->s, w, reqs[i]);
    ext_exec(lock, "COMMIT");
    wait_all(w);
    assert_int_equal(w->done_calls, N + 1);
    assert_int_equal(gate->rc, 0);
    for (int i = 0; i < N; i++)
        if (reqs[i]->rc != want[i])
            fail_msg("request %d: rc %d (%s), want %d (%s)", i, reqs[i]->rc,
                     rc_strerror(reqs[i]->rc), want[i], rc_strerror(want[i]));
    /* The good messages are consecutive: the failed ones used no seq. */
    assert_int_equal(reqs[0]->msg.seq, 1);
    assert_int_equal(reqs[2]->msg.seq, 2);
    assert_int_equal(reqs[7]->msg.seq, 3);
    assert_true(reqs[10]->notif.id > 0);
    assert_null(reqs[1]->msg.room_id); /* failed requests carry no result */

    PGconn *db = ext(f);

    assert_int_equal(ext_int(db, "SELECT count(*) FROM messages WHERE room_id = 'lobby'", NULL), 3);
    assert_int_equal(ext_int(db, "SELECT last_seq FROM rooms WHERE id = 'lobby'", NULL), 3);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM rooms WHERE name = 'lobby'", NULL), 1);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM users WHERE id = 'mallory'", NULL), 0);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM users WHERE id = 'carol'", NULL), 0);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM memberships", NULL), 1);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM document_ops", NULL), 0);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM notifications", NULL), 1);

    assert_int_equal(wait_collected(&f->col, 4, WAIT_MS), 4);
    close_store(f);
    assert_int_equal(f->col.n, 4);
    assert_string_equal(f->col.v[0].body, "gate");
    assert_string_equal(f->col.v[1].body, "first");
    assert_string_equal(f->col.v[2].body, "second");
    assert_string_equal(f->col.v[3].body, "third");
    assert_int_equal(f->col.n_notifs, 1);
    assert_int_equal(f->col.n_docops, 0);
    for (int i = 0; i < N; i++)
        store_req_destroy(reqs[i]);
    store_req_destroy(gate);
    PQfinish(lock);
    waiter_destroy(w);
}

/* After a commit the listeners get that commit's rows, one call per table, in order. */
static void test_listeners_get_own_commits(void **state)
{
    struct fixture *f = *state;
    struct waiter *w;

    /* The listener may also be set after open, before the first write. */
    open_store(f, 0, false);
    store_set_listener(f->s, collect, &f->col);
    create_room(f->s, "lobby");
    create_room(f->s, "other");
    create_room(f->s, "gate");
    add_msg(f->s, "lobby", "alice", "solo");
    assert_int_equal(wait_collected(&f->col, 1, WAIT_MS), 1);
    close_store(f);
    memset(f->col.log, 0, sizeof f->col.log);
    f->col.log_len = 0;
    f->col.n = 0;

    open_store(f, 0, true);
    PGconn *lock = ext_connect(f->url);

    ext_exec(lock, "BEGIN; SELECT 1 FROM rooms WHERE id = 'gate' FOR UPDATE");
    w = waiter_create();
    struct store_req *reqs[6] = {
        req_msg("gate", "alice", "gate"),
        req_msg("lobby", "alice", "a"),
        req_notif("bob", "ping", NULL),
        req_docop("lobby", "alice", "insert", "{\"text\":\"hi\",\"at\":0}"),
        req_msg("other", "alice", "b"),
        req_notif("carol", "pong", "[1,2]"),
    };

    submit_counted(f->s, w, reqs[0]);
    wait_writer_blocked(f);
    for (int i = 1; i < 6; i++)
        submit_counted(f->s, w, reqs[i]);
    ext_exec(lock, "COMMIT");
    wait_all(w);
    for (int i = 0; i < 6; i++)
        assert_int_equal(reqs[i]->rc, 0);
    assert_int_equal(wait_collected(&f->col, 3, WAIT_MS), 3);
    close_store(f);
    /* gate's batch, then one call per table for the batch of five. */
    assert_string_equal(f->col.log, "mmnd");
    assert_int_equal(f->col.n, 3);
    assert_string_equal(f->col.v[1].body, "a");
    assert_string_equal(f->col.v[1].room_id, "lobby");
    assert_string_equal(f->col.v[2].body, "b");
    assert_int_equal(f->col.v[2].seq, 1);
    assert_int_equal(f->col.n_notifs, 2);
    assert_int_equal(f->col.notif_ids[0], reqs[2]->notif.id);
    assert_int_equal(f->col.notif_ids[1], reqs[5]->notif.id);
    assert_int_equal(f->col.n_docops, 1);
    assert_int_equal(f->col.docop_seqs[0], 1);
    assert_false(f->col.bad_call);
    for (int i = 0; i < 6; i++)
        store_req_destroy(reqs[i]);
    PQfinish(lock);
    waiter_destroy(w);
}

/* A plain INSERT without seq from another client gets the next seq; bad ones are refused
 * with recognizable errors. */
static void test_plain_insert_gets_next_seq(void **state)
{
    struct fixture *f = *state;
    char code[6], msg[512];

    open_store(f, 0, false);
    create_room(f->s, "lobby");
    create_room(f->s, "other");
    assert_int_equal(add_msg(f->s, "lobby", "alice", "a"), 1);
    assert_int_equal(add_msg(f->s, "lobby", "alice", "b"), 2);

    PGconn *db = ext(f);

    assert_int_equal(ext_int(db,
                             "INSERT INTO messages(room_id, user_id, body) "
                             "VALUES ('lobby', 'cron', 'c') RETURNING seq",
                             NULL),
                     3);
    assert_int_equal(ext_int(db,
                             "INSERT INTO messages(room_id, user_id, body) "
                             "VALUES ('other', 'cron', 'x') RETURNING seq",
                             NULL),
                     1);
    assert_int_equal(ext_int(db, "SELECT last_seq FROM rooms WHERE id = 'lobby'", NULL), 3);
    assert_int_equal(add_msg(f->s, "lobby", "alice", "d"), 4);
    /* A given seq must be the next one. */
    assert_int_equal(ext_int(db,
                             "INSERT INTO messages(room_id, user_id, body, seq) "
                             "VALUES ('lobby', 'cron', 'e', 5) RETURNING seq",
                             NULL),
                     5);
    ext_fail(db,
             "INSERT INTO messages(room_id, user_id, body, seq) VALUES ('lobby', 'cron', 'f', 9)",
             code, msg, sizeof msg);
    assert_string_equal(code, "23514");
    /* A row for a missing room: foreign_key_violation, "no such room". */
    ext_fail(db, "INSERT INTO messages(room_id, user_id, body) VALUES ('nowhere', 'cron', 'x')",
             code, msg, sizeof msg);
    assert_string_equal(code, "23503");
    assert_non_null(strstr(msg, "no such room"));
    ext_fail(db,
             "INSERT INTO document_ops(room_id, user_id, operation) VALUES ('nowhere', 'u', 'op')",
             code, msg, sizeof msg);
    assert_string_equal(code, "23503");
    assert_int_equal(add_msg(f->s, "lobby", "alice", "g"), 6);
    /* An explicit inserted_at is kept; without one the row gets the insert time. */
    ext_exec(db, "INSERT INTO messages(room_id, user_id, body, inserted_at) "
                 "VALUES ('other', 'import', 'old', '2001-02-03 04:05:06.789+00')");
    assert_int_equal(ext_int(db,
                             "SELECT count(*) FROM messages WHERE body = 'old' AND "
                             "rowcast_iso(inserted_at) = '2001-02-03T04:05:06.789Z'",
                             NULL),
                     1);
}

/* Many rows for several rooms in one transaction (rooms sharing a counter slot among
 * them), savepoints and a room deleted and created again: seqs stay gapless, and
 * rooms.last_seq is right after commit. */
static void test_seq_in_one_transaction(void **state)
{
    struct fixture *f = *state;
    char a[32], b[32], sql[1024];
    struct waiter *w = waiter_create();

    open_store(f, 0, false);
    PGconn *db = ext(f);
    /* Two room ids whose counters share a slot. */
    PGresult *r = PQexec(db, "SELECT x.n, y.n FROM (SELECT 'r' || g AS n FROM "
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

    /* A room deleted and created again in one store batch starts over. */
    PGconn *lock = ext_connect(f->url);

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
    PQfinish(lock);
    waiter_destroy(w);
}

/* 10,000 rows inserted by another client in one INSERT ... SELECT get seqs 1..10000 in
 * order, and the store's own writes to that room, at the same time, fit around them. */
static void test_bulk_insert_select(void **state)
{
    struct fixture *f = *state;
    enum { BULK = 10000, OURS = 300 };
    static struct store_req *reqs[OURS];
    struct waiter *w = waiter_create();

    open_store(f, 50, false);
    create_room(f->s, "bulk");
    create_room(f->s, "busy");
    PGconn *db = ext(f);

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
    PQsendQuery(db, "INSERT INTO messages(room_id, user_id, body) "
                    "SELECT 'busy', 'cron', 'm' || g FROM generate_series(1, 10000) g");
    for (int i = 0; i < OURS; i++) {
        reqs[i] = req_msg("busy", "alice", "ours");
        submit_counted(f->s, w, reqs[i]);
    }
    PGresult *r;
    bool ok = true;

    while ((r = PQgetResult(db))) {
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

/* Asserts a page's seqs are exactly from..to (inclusive; to < from means empty). */
static void assert_page(struct store *s, enum store_op op, const char *user, int64_t after,
                        int64_t before, int limit, int64_t from, int64_t to)
{
    struct store_req *r = req_page(op, "lobby", user, after, before, limit);
    int rc = run(s, r);

    if (rc != 0)
        fail_msg("page after=%lld before=%lld limit=%d: rc %d", (long long)after, (long long)before,
                 limit, rc);
    size_t want = to >= from ? (size_t)(to - from + 1) : 0;

    if (r->n_msgs != want)
        fail_msg("page after=%lld before=%lld limit=%d: %zu rows, want %zu (%lld..%lld)",
                 (long long)after, (long long)before, limit, r->n_msgs, want, (long long)from,
                 (long long)to);
    for (size_t i = 0; i < r->n_msgs; i++) {
        char body[32];

        assert_int_equal(r->msgs[i].seq, from + (int64_t)i);
        assert_string_equal(r->msgs[i].room_id, "lobby");
        snprintf(body, sizeof body, "body %lld", (long long)r->msgs[i].seq);
        assert_string_equal(r->msgs[i].body, body);
        assert_string_equal(r->msgs[i].user_id, r->msgs[i].seq % 2 ? "alice" : "bob");
        assert_iso8601(r->msgs[i].inserted_at);
        if (i > 0)
            assert_true(r->msgs[i].id > r->msgs[i - 1].id);
    }
    store_req_destroy(r);
}

/* MESSAGES_PAGE: latest, after, before and between, each with its limit. */
static void test_messages_page(void **state)
{
    struct fixture *f = *state;
    const enum store_op P = STORE_MESSAGES_PAGE;

    open_store(f, 0, false);
    create_room(f->s, "lobby");
    create_room(f->s, "other");
    for (int i = 1; i <= 10; i++) {
        char body[32];

        snprintf(body, sizeof body, "body %d", i);
        assert_int_equal(add_msg(f->s, "lobby", i % 2 ? "alice" : "bob", body), i);
        add_msg(f->s, "other", "carol", "noise");
    }

    assert_page(f->s, P, NULL, -1, -1, 3, 8, 10);
    assert_page(f->s, P, NULL, -1, -1, 50, 1, 10);
    assert_page(f->s, P, NULL, -1, -1, 1, 10, 10);
    assert_page(f->s, P, NULL, 0, -1, 4, 1, 4);
    assert_page(f->s, P, NULL, 4, -1, 3, 5, 7);
    assert_page(f->s, P, NULL, 8, -1, 5, 9, 10);
    assert_page(f->s, P, NULL, 10, -1, 5, 1, 0);
    assert_page(f->s, P, NULL, 99, -1, 5, 1, 0);
    assert_page(f->s, P, NULL, -1, 5, 2, 3, 4);
    assert_page(f->s, P, NULL, -1, 3, 10, 1, 2);
    assert_page(f->s, P, NULL, -1, 1, 10, 1, 0);
    assert_page(f->s, P, NULL, -1, 11, 3, 8, 10);
    assert_page(f->s, P, NULL, 2, 8, 3, 3, 5);
    assert_page(f->s, P, NULL, 2, 6, 10, 3, 5);
    assert_page(f->s, P, NULL, 0, 11, 50, 1, 10);
    assert_page(f->s, P, NULL, 5, 6, 10, 1, 0);
    assert_page(f->s, P, NULL, -1, -1, 0, 1, 0);
    /* A negative limit means no limit, as in SQLite. */
    assert_page(f->s, P, NULL, 3, -1, -1, 4, 10);

    struct store_req *r = req_room(STORE_MESSAGES_PAGE, "lobby", NULL);

    assert_int_equal(r->limit, 50);
    assert_int_equal(run(f->s, r), 0);
    assert_int_equal(r->n_msgs, 10);
    store_req_destroy(r);

    run_expect(f->s, req_page(P, "nowhere", NULL, -1, -1, 10), RC_ENOTFOUND);
    create_room(f->s, "empty");
    r = req_page(P, "empty", NULL, -1, -1, 10);
    assert_int_equal(run(f->s, r), 0);
    assert_int_equal(r->n_msgs, 0);
    store_req_destroy(r);
}

/* JOIN_ROOM returns room, role and history; refuses non-members and missing rooms. */
static void test_join_room(void **state)
{
    struct fixture *f = *state;
    const enum store_op J = STORE_JOIN_ROOM;
    struct store_req *r;

    open_store(f, 0, false);
    create_room(f->s, "lobby");
    put_member(f->s, "lobby", "alice", "editor");
    put_member(f->s, "lobby", "bob", "viewer");
    for (int i = 1; i <= 5; i++) {
        char body[32];

        snprintf(body, sizeof body, "body %d", i);
        add_msg(f->s, "lobby", i % 2 ? "alice" : "bob", body);
    }

    r = req_page(J, "lobby", "alice", -1, -1, 3);
    assert_int_equal(run(f->s, r), 0);
    assert_string_equal(r->room.id, "lobby");
    assert_string_equal(r->room.name, "lobby");
    assert_int_equal(r->room.last_seq, 5);
    assert_iso8601(r->room.created_at);
    assert_string_equal(r->member.role, "editor");
    assert_string_equal(r->member.user_id, "alice");
    assert_string_equal(r->member.name, "alice");
    assert_int_equal(r->n_msgs, 3);
    assert_int_equal(r->msgs[0].seq, 3);
    assert_int_equal(r->msgs[2].seq, 5);
    assert_string_equal(r->msgs[2].body, "body 5");
    store_req_destroy(r);

    assert_page(f->s, J, "bob", 2, -1, 50, 3, 5);
    assert_page(f->s, J, "bob", 5, -1, 50, 1, 0);
    assert_page(f->s, J, "bob", -1, 4, 2, 2, 3);
    assert_page(f->s, J, "alice", 1, 5, 50, 2, 4);
    r = req_page(J, "lobby", "bob", 2, -1, 50);
    assert_int_equal(run(f->s, r), 0);
    assert_string_equal(r->member.role, "viewer");
    store_req_destroy(r);

    r = req_page(J, "lobby", "mallory", -1, -1, 50);
    assert_int_equal(run(f->s, r), RC_EFORBIDDEN);
    assert_int_equal(r->n_msgs, 0);
    store_req_destroy(r);
    r = req_page(J, "nowhere", "alice", -1, -1, 50);
    assert_int_equal(run(f->s, r), RC_ENOTFOUND);
    store_req_destroy(r);

    run_expect(f->s, req_member(STORE_MEMBER_DELETE, "lobby", "bob", NULL), 0);
    run_expect(f->s, req_page(J, "lobby", "bob", -1, -1, 50), RC_EFORBIDDEN);
    put_member(f->s, "lobby", "mallory", "member");
    run_expect(f->s, req_page(J, "lobby", "mallory", -1, -1, 50), 0);
}

/* Notifications: add (payload {message, data}), unread (oldest first, newest id), read. */
static void test_notifications(void **state)
{
    struct fixture *f = *state;
    struct store_req *r;
    int64_t ids[3];

    open_store(f, 0, false);
    for (int i = 0; i < 3; i++) {
        char m[16];

        snprintf(m, sizeof m, "n%d", i);
        r = req_notif("alice", m, i == 1 ? "{\"url\":\"/x\",\"n\":[1,2]}" : NULL);
        assert_int_equal(run(f->s, r), 0);
        assert_true(r->notif.id > 0);
        assert_string_equal(r->notif.user_id, "alice");
        assert_iso8601(r->notif.inserted_at);
        json_t *p = json_loads(r->notif.payload, 0, NULL);

        assert_non_null(p);
        assert_string_equal(json_string_value(json_object_get(p, "message")), m);
        if (i == 1)
            assert_int_equal(json_integer_value(json_array_get(
                                 json_object_get(json_object_get(p, "data"), "n"), 1)),
                             2);
        else
            assert_true(json_is_null(json_object_get(p, "data")));
        json_decref(p);
        ids[i] = r->notif.id;
        store_req_destroy(r);
    }
    run_expect(f->s, req_notif("bob", "for bob", NULL), 0);

    r = store_req_create(STORE_NOTIFY_UNREAD);
    r->user_id = strdup("alice");
    assert_int_equal(run(f->s, r), 0);
    assert_int_equal(r->n_notifs, 3);
    assert_int_equal(r->notifs[0].id, ids[0]);
    assert_int_equal(r->notifs[2].id, ids[2]);
    assert_int_equal(r->id, ids[2]);
    assert_string_equal(r->notifs[1].user_id, "alice");
    assert_iso8601(r->notifs[1].inserted_at);
    store_req_destroy(r);

    /* Mark the first read; someone else's or a missing one is not found. */
    r = store_req_create(STORE_NOTIFY_READ);
    r->user_id = strdup("alice");
    r->id = ids[0];
    run_expect(f->s, r, 0);
    r = store_req_create(STORE_NOTIFY_READ);
    r->user_id = strdup("bob");
    r->id = ids[1];
    run_expect(f->s, r, RC_ENOTFOUND);
    r = store_req_create(STORE_NOTIFY_READ);
    r->user_id = strdup("alice");
    r->id = 999999;
    run_expect(f->s, r, RC_ENOTFOUND);

    r = store_req_create(STORE_NOTIFY_UNREAD);
    r->user_id = strdup("alice");
    r->limit = 1;
    assert_int_equal(run(f->s, r), 0);
    assert_int_equal(r->n_notifs, 1);
    assert_int_equal(r->notifs[0].id, ids[1]);
    assert_int_equal(r->id, ids[2]); /* newest, read or not */
    store_req_destroy(r);

    /* A user without notifications: none, newest id 0. */
    r = store_req_create(STORE_NOTIFY_UNREAD);
    r->user_id = strdup("nobody");
    assert_int_equal(run(f->s, r), 0);
    assert_int_equal(r->n_notifs, 0);
    assert_int_equal(r->id, 0);
    store_req_destroy(r);
}

/* A user's notification ids grow in commit order: a writer waits for another client's
 * uncommitted notification to the same user, then gets a larger id. */
static void test_notification_ids_in_commit_order(void **state)
{
    struct fixture *f = *state;
    struct waiter *w = waiter_create();

    open_store(f, 0, false);
    PGconn *other = ext_connect(f->url);

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
    PQfinish(other);
    waiter_destroy(w);
}

/* Documents: edits get per-document seqs; joins need a membership. */
static void test_documents(void **state)
{
    struct fixture *f = *state;
    struct store_req *r;

    open_store(f, 0, false);
    create_room(f->s, "doc");
    put_member(f->s, "doc", "alice", "editor");
    for (int i = 1; i <= 4; i++) {
        char data[64];

        snprintf(data, sizeof data, "{\"text\":\"t%d\",\"pos\":%d}", i, i);
        r = req_docop("doc", "alice", i % 2 ? "insert" : "delete", data);
        assert_int_equal(run(f->s, r), 0);
        assert_int_equal(r->docop.seq, i);
        assert_true(r->docop.id > 0);
        assert_string_equal(r->docop.operation, i % 2 ? "insert" : "delete");
        assert_string_equal(r->docop.room_id, "doc");
        assert_iso8601(r->docop.inserted_at);
        json_t *d = json_loads(r->docop.data, 0, NULL);

        assert_int_equal(json_integer_value(json_object_get(d, "pos")), i);
        json_decref(d);
        store_req_destroy(r);
    }
    /* Without data: JSON null. */
    r = req_docop("doc", "alice", "noop", NULL);
    assert_int_equal(run(f->s, r), 0);
    assert_string_equal(r->docop.data, "null");
    store_req_destroy(r);
    run_expect(f->s, req_docop("nowhere", "alice", "insert", "{}"), RC_ENOTFOUND);
    /* Messages and document operations count separately. */
    assert_int_equal(add_msg(f->s, "doc", "alice", "chat"), 1);

    r = req_page(STORE_DOC_JOIN, "doc", "alice", -1, -1, 2);
    assert_int_equal(run(f->s, r), 0);
    assert_int_equal(r->room.doc_last_seq, 5);
    assert_int_equal(r->room.last_seq, 1);
    assert_string_equal(r->member.role, "editor");
    assert_int_equal(r->n_docops, 2);
    assert_int_equal(r->docops[0].seq, 4);
    assert_int_equal(r->docops[1].seq, 5);
    assert_string_equal(r->docops[1].operation, "noop");
    store_req_destroy(r);

    r = req_page(STORE_DOC_JOIN, "doc", "alice", 1, -1, 2);
    assert_int_equal(run(f->s, r), 0);
    assert_int_equal(r->n_docops, 2);
    assert_int_equal(r->docops[0].seq, 2);
    assert_int_equal(r->docops[1].seq, 3);
    assert_string_equal(r->docops[0].user_id, "alice");
    store_req_destroy(r);

    r = req_page(STORE_DOC_JOIN, "doc", "mallory", -1, -1, 50);
    assert_int_equal(run(f->s, r), RC_EFORBIDDEN);
    assert_int_equal(r->n_docops, 0);
    store_req_destroy(r);
    run_expect(f->s, req_page(STORE_DOC_JOIN, "nowhere", "alice", -1, -1, 50), RC_ENOTFOUND);
}

/* A read submitted after a write completed sees that write. */
static void test_reads_see_committed_writes(void **state)
{
    struct fixture *f = *state;
    struct store_req *r;

    open_store(f, 0, false);
    create_room(f->s, "lobby");
    put_member(f->s, "lobby", "alice", "owner");
    for (int round = 1; round <= 3; round++) {
        run_expect(f->s, store_req_create(STORE_PING), 0);
        run_expect(f->s, req_room(STORE_ROOM_GET, "lobby", NULL), 0);
        run_expect(f->s, req_page(STORE_JOIN_ROOM, "lobby", "alice", -1, -1, 50), 0);
        run_expect(f->s, req_member(STORE_MEMBERS_LIST, "lobby", NULL, NULL), 0);

        char body[32];

        snprintf(body, sizeof body, "round %d", round);
        assert_int_equal(add_msg(f->s, "lobby", "alice", body), round);

        r = req_page(STORE_MESSAGES_PAGE, "lobby", NULL, -1, -1, 50);
        assert_int_equal(run(f->s, r), 0);
        if (r->n_msgs != (size_t)round)
            fail_msg("round %d: page has %zu messages after the write completed", round, r->n_msgs);
        store_req_destroy(r);

        r = req_page(STORE_JOIN_ROOM, "lobby", "alice", -1, -1, 50);
        assert_int_equal(run(f->s, r), 0);
        if (r->n_msgs != (size_t)round || r->room.last_seq != round)
            fail_msg("round %d: join sees %zu messages, last_seq %lld", round, r->n_msgs,
                     (long long)r->room.last_seq);
        store_req_destroy(r);

        char user[32];

        snprintf(user, sizeof user, "user%d", round);
        put_member(f->s, "lobby", user, "member");
        r = req_member(STORE_MEMBERS_LIST, "lobby", NULL, NULL);
        assert_int_equal(run(f->s, r), 0);
        if (r->n_members != (size_t)round + 1)
            fail_msg("round %d: members list has %zu members", round, r->n_members);
        store_req_destroy(r);
    }
}

/* Many reads at once (both readers pipelining) all complete with the right rows. */
static void test_many_concurrent_reads(void **state)
{
    struct fixture *f = *state;
    enum { N = 600 };
    static struct store_req *reqs[N];
    struct waiter *w = waiter_create();

    open_store(f, 0, false);
    create_room(f->s, "lobby");
    put_member(f->s, "lobby", "alice", "owner");
    for (int i = 0; i < 20; i++)
        add_msg(f->s, "lobby", "alice", "x");
    for (int i = 0; i < N; i++) {
        switch (i % 4) {
        case 0: reqs[i] = req_page(STORE_JOIN_ROOM, "lobby", "alice", i % 20, -1, 5); break;
        case 1: reqs[i] = req_page(STORE_JOIN_ROOM, "lobby", "eve", -1, -1, 5); break;
        case 2: reqs[i] = req_room(STORE_ROOM_GET, i % 8 == 2 ? "lobby" : "none", NULL); break;
        default: reqs[i] = req_page(STORE_MESSAGES_PAGE, "lobby", NULL, -1, -1, i % 20); break;
        }
        submit_counted(f->s, w, reqs[i]);
    }
    wait_all(w);
    for (int i = 0; i < N; i++) {
        struct store_req *r = reqs[i];

        switch (i % 4) {
        case 0:
            assert_int_equal(r->rc, 0);
            assert_int_equal(r->n_msgs, i % 20 + 5 <= 20 ? 5 : 20 - i % 20);
            if (r->n_msgs)
                assert_int_equal(r->msgs[0].seq, i % 20 + 1);
            break;
        case 1: assert_int_equal(r->rc, RC_EFORBIDDEN); break;
        case 2: assert_int_equal(r->rc, i % 8 == 2 ? 0 : RC_ENOTFOUND); break;
        default: assert_int_equal(r->rc, 0); assert_int_equal(r->n_msgs, i % 20);
        }
        store_req_destroy(r);
    }
    waiter_destroy(w);
}

/* store_close finishes every queued request before it returns. */
static void test_close_completes_queued(void **state)
{
    struct fixture *f = *state;
    enum { N = 700 };
    static struct store_req *reqs[N];
    struct waiter *w;

    open_store(f, 50, false);
    create_room(f->s, "lobby");
    w = waiter_create();
    PGconn *lock = ext_connect(f->url);

    ext_exec(lock, "BEGIN; LOCK TABLE messages IN EXCLUSIVE MODE");
    for (int i = 0; i < N; i++) {
        if (i % 7 == 3)
            reqs[i] = req_page(STORE_MESSAGES_PAGE, "lobby", NULL, -1, -1, 5);
        else
            reqs[i] = req_msg("lobby", "alice", "queued");
        submit_counted(f->s, w, reqs[i]);
    }
    wait_writer_blocked(f);
    ext_exec(lock, "COMMIT");
    PQfinish(lock);
    close_store(f);
    pthread_mutex_lock(&w->mu);
    size_t pending = w->pending, calls = w->done_calls;
    bool overrun = w->overrun;

    pthread_mutex_unlock(&w->mu);
    assert_int_equal(pending, 0);
    assert_int_equal(calls, N);
    assert_false(overrun);
    int n_writes = 0;

    for (int i = 0; i < N; i++) {
        if (reqs[i]->rc != 0)
            fail_msg("request %d (op %d): rc %d (%s)", i, reqs[i]->op, reqs[i]->rc,
                     rc_strerror(reqs[i]->rc));
        if (reqs[i]->op == STORE_MESSAGE_ADD)
            n_writes++;
        store_req_destroy(reqs[i]);
    }
    assert_int_equal(n_writes, N - N / 7);
    assert_int_equal(ext_int(ext(f), "SELECT count(*) FROM messages", NULL), n_writes);
    assert_int_equal(ext_int(ext(f), "SELECT max(seq) FROM messages", NULL), n_writes);
    waiter_destroy(w);
}

/* ---- PostgreSQL: wake-ups ---------------------------------------------------------- */

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
static void test_notify_triggers(void **state)
{
    struct fixture *f = *state;
    static char got[8][8192];
    char sql[12000];

    open_store(f, 0, false);
    create_room(f->s, "lobby");
    create_room(f->s, "other");
    PGconn *l = ext_connect(f->url);
    PGconn *db = ext(f);

    ext_exec(l, "LISTEN rowcast");
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
    PQfinish(l);
}

/* ---- PostgreSQL: lost connections -------------------------------------------------- */

/* The server ends the store's sessions: requests in flight fail with RC_ESTORE, later
 * ones succeed on new connections. */
static void test_killed_connection(void **state)
{
    struct fixture *f = *state;
    enum { N = 20 };
    struct store_req *reqs[N];
    struct waiter *w = waiter_create();

    open_store(f, 0, true);
    create_room(f->s, "lobby");
    put_member(f->s, "lobby", "alice", "owner");
    assert_int_equal(add_msg(f->s, "lobby", "alice", "before"), 1);

    /* The writer is in a transaction, waiting for a lock, when its session is ended. */
    PGconn *lock = ext_connect(f->url);

    ext_exec(lock, "BEGIN; LOCK TABLE messages IN EXCLUSIVE MODE");
    for (int i = 0; i < N; i++) {
        char body[32];

        snprintf(body, sizeof body, "k%d", i);
        reqs[i] = req_msg("lobby", "alice", body);
        submit_counted(f->s, w, reqs[i]);
        if (i == 0)
            wait_writer_blocked(f);
    }
    assert_int_equal(kill_backends(f, "rowcast-writer"), 1);
    ext_exec(lock, "COMMIT");
    PQfinish(lock);
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
static void test_database_unreachable(void **state)
{
    struct fixture *f = *state;
    enum { N = 10 };
    struct store_req *reqs[N];
    struct waiter *w = waiter_create();
    PGconn *a = admin_connect();
    char sql[160];

    open_store(f, 0, false);
    create_room(f->s, "lobby");
    snprintf(sql, sizeof sql, "ALTER DATABASE %s ALLOW_CONNECTIONS false", f->db);
    ext_exec(a, sql);
    PQfinish(f->ext); /* ext(f) could not reconnect either */
    f->ext = NULL;
    PGconn *kill = admin_connect();
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
    PQfinish(kill);
    PQfinish(a);
    waiter_destroy(w);
}

/* store_close and store_req_destroy accept NULL. */
static void test_close_null(void **state)
{
    (void)state;
    store_close(NULL);
    store_req_destroy(NULL);
}

/* ---- the server -------------------------------------------------------------------- */

/* Stops the server this test started. */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrate_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_applies_migrations, setup, teardown),
        cmocka_unit_test(test_notify_sql_matches_migration),
        cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_put, setup, teardown),
        cmocka_unit_test_setup_teardown(test_room_create_get_conflict, setup, teardown),
        cmocka_unit_test_setup_teardown(test_room_delete_cascades, setup, teardown),
        cmocka_unit_test_setup_teardown(test_room_delete_races_insert, setup, teardown),
        cmocka_unit_test_setup_teardown(test_member_put_creates_user_and_upserts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_member_delete_and_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_message_add, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seq_gapless_concurrent_writers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_batches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_request_does_not_affect_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listeners_get_own_commits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_insert_gets_next_seq, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seq_in_one_transaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bulk_insert_select, setup, teardown),
        cmocka_unit_test_setup_teardown(test_messages_page, setup, teardown),
        cmocka_unit_test_setup_teardown(test_join_room, setup, teardown),
        cmocka_unit_test_setup_teardown(test_notifications, setup, teardown),
        cmocka_unit_test_setup_teardown(test_notification_ids_in_commit_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_documents, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reads_see_committed_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_concurrent_reads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_completes_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_notify_triggers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_killed_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_database_unreachable, setup, teardown),
        cmocka_unit_test(test_close_null),
    };

    if (!find_server()) {
        /* A failure, never a skip: the PostgreSQL store is untested without a server. */
        printf("Bail out! PostgreSQL could not be started (scripts/pg-test.sh) and "
               "ROWCAST_TEST_PG_URL is not set\n");
        fflush(stdout);
        return 1;
    }
    if (getenv("ROWCAST_TEST_FILTER")) /* e.g. ROWCAST_TEST_FILTER='*killed*' */
        cmocka_set_test_filter(getenv("ROWCAST_TEST_FILTER"));
    return cmocka_run_group_tests_name("store_pg", tests, NULL, NULL);
}
