/* test_store.c - unit tests for src/store.c and its backends, one suite: the cases every
 * backend must pass run once against SQLite (a temporary file) and once against
 * PostgreSQL (see test_store_pg.c: $ROWCAST_TEST_PG_URL, else a throwaway server; the
 * suite FAILS, never skips, without one), then what only one backend has: SQLite's
 * delivery of rows other processes commit here, PostgreSQL's concurrent clients, NOTIFY
 * wake-ups and lost connections in test_store_pg.c. Case names say the backend
 * ("sqlite/test_ping", "pg/test_ping"); ROWCAST_TEST_FILTER picks cases by name, with *
 * for any text. The harness is declared in store_test.h. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
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
#include <sqlite3.h>

#include "metrics.h"
#include "migrations.h"
#include "store.h"
#include "store_test.h"
#include "util/sbuf.h"

#ifndef TOP_SRCDIR
#define TOP_SRCDIR "."
#endif

/* ---- waiting for the store ----------------------------------------------------------- */

struct timespec deadline(int ms)
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

int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

struct waiter *waiter_create(void)
{
    struct waiter *w = calloc(1, sizeof *w);

    assert_non_null(w);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    return w;
}

void waiter_destroy(struct waiter *w)
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

void submit_counted(struct store *s, struct waiter *w, struct store_req *req)
{
    pthread_mutex_lock(&w->mu);
    w->pending++;
    pthread_mutex_unlock(&w->mu);
    req->done = done_count;
    req->arg = w;
    store_submit(s, req);
}

void wait_all_ms(struct waiter *w, int ms)
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

void wait_all(struct waiter *w)
{
    wait_all_ms(w, WAIT_MS);
}

int run(struct store *s, struct store_req *req)
{
    struct waiter *w = waiter_create();

    submit_counted(s, w, req);
    wait_all(w);
    assert_int_equal(w->done_calls, 1);
    waiter_destroy(w);
    return req->rc;
}

void run_expect(struct store *s, struct store_req *req, int want)
{
    int rc = run(s, req);

    if (rc != want)
        fail_msg("op %d room=%s user=%s: rc %d (%s), want %d (%s)", req->op,
                 req->room_id ? req->room_id : "-", req->user_id ? req->user_id : "-", rc,
                 rc_strerror(rc), want, rc_strerror(want));
    store_req_destroy(req);
}

/* ---- requests ------------------------------------------------------------------------ */

char *dup_or_null(const char *s)
{
    if (!s)
        return NULL;
    char *d = strdup(s);

    assert_non_null(d);
    return d;
}

struct store_req *req_room(enum store_op op, const char *room_id, const char *name)
{
    struct store_req *r = store_req_create(op);

    r->room_id = dup_or_null(room_id);
    r->name = dup_or_null(name);
    return r;
}

struct store_req *req_member(enum store_op op, const char *room_id, const char *user_id,
                             const char *role)
{
    struct store_req *r = store_req_create(op);

    r->room_id = dup_or_null(room_id);
    r->user_id = dup_or_null(user_id);
    r->role = dup_or_null(role);
    return r;
}

struct store_req *req_msg(const char *room_id, const char *user_id, const char *body)
{
    struct store_req *r = store_req_create(STORE_MESSAGE_ADD);

    r->room_id = dup_or_null(room_id);
    r->user_id = dup_or_null(user_id);
    r->body = dup_or_null(body);
    return r;
}

struct store_req *req_notif(const char *user_id, const char *message, const char *data)
{
    struct store_req *r = store_req_create(STORE_NOTIFY_ADD);

    r->user_id = dup_or_null(user_id);
    r->body = dup_or_null(message);
    r->data = dup_or_null(data);
    return r;
}

struct store_req *req_named(enum store_op op, const char *room_id, const char *user_id,
                            const char *name, const char *data)
{
    struct store_req *r = store_req_create(op);

    r->room_id = dup_or_null(room_id);
    r->user_id = dup_or_null(user_id);
    r->name = dup_or_null(name);
    r->data = dup_or_null(data);
    return r;
}

struct store_req *req_docop(const char *room_id, const char *user_id, const char *op,
                            const char *data)
{
    return req_named(STORE_DOC_EDIT, room_id, user_id, op, data);
}

struct store_req *req_page(enum store_op op, const char *room_id, const char *user_id,
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

void create_room(struct store *s, const char *id)
{
    run_expect(s, req_room(STORE_ROOM_CREATE, id, id), 0);
}

void put_member(struct store *s, const char *room, const char *user, const char *role)
{
    run_expect(s, req_member(STORE_MEMBER_PUT, room, user, role), 0);
}

int64_t add_msg(struct store *s, const char *room, const char *user, const char *body)
{
    struct store_req *r = req_msg(room, user, body);
    int rc = run(s, r);

    if (rc != 0)
        fail_msg("add_msg(%s, %s): rc %d (%s)", room, body, rc, rc_strerror(rc));
    int64_t seq = r->msg.seq;

    store_req_destroy(r);
    return seq;
}

void assert_iso8601(const char *ts)
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

/* ---- listeners ----------------------------------------------------------------------- */

/* Appends one letter to the collector's call log (its lock held). */
static void log_call(struct collector *c, char kind)
{
    if (c->log_len < sizeof c->log - 1)
        c->log[c->log_len++] = kind;
}

void collect(const struct store_change *changes, size_t n, void *arg)
{
    struct collector *c = arg;

    pthread_mutex_lock(&c->mu);
    c->calls++;
    log_call(c, 'm');
    if (n == 0 || !changes)
        c->bad_call = true;
    if (n > c->max_per_call)
        c->max_per_call = n;
    for (size_t i = 0; i < n; i++) {
        if (c->n == c->cap) {
            c->cap = c->cap ? c->cap * 2 : 256;
            c->v = realloc(c->v, c->cap * sizeof *c->v);
            if (!c->v)
                abort(); /* on a store thread: cmocka cannot fail from here */
        }
        struct seen *e = &c->v[c->n++];

        json_t *p = json_loads(changes[i].payload, 0, NULL);
        const char *body = json_string_value(json_object_get(p, "body"));

        e->id = changes[i].id;
        e->seq = changes[i].seq;
        e->version = changes[i].version;
        snprintf(e->room_id, sizeof e->room_id, "%s", changes[i].room_id ? changes[i].room_id : "");
        snprintf(e->user_id, sizeof e->user_id, "%s", changes[i].user_id ? changes[i].user_id : "");
        snprintf(e->body, sizeof e->body, "%s", body ? body : "");
        snprintf(e->event, sizeof e->event, "%s", changes[i].event ? changes[i].event : "");
        snprintf(e->payload, sizeof e->payload, "%s", changes[i].payload ? changes[i].payload : "");
        json_decref(p);
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

void collect_notifs(const struct store_notif *v, size_t n, void *arg)
{
    struct collector *c = arg;

    pthread_mutex_lock(&c->mu);
    log_call(c, 'n');
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

void collect_docops(const struct store_docop *v, size_t n, void *arg)
{
    struct collector *c = arg;

    pthread_mutex_lock(&c->mu);
    log_call(c, 'd');
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

size_t wait_collected(struct collector *c, size_t n, int ms)
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

size_t collected_calls(struct collector *c)
{
    pthread_mutex_lock(&c->mu);
    size_t calls = c->calls;

    pthread_mutex_unlock(&c->mu);
    return calls;
}

void assert_collected_in_id_order(struct collector *c)
{
    assert_false(c->bad_call);
    for (size_t i = 1; i < c->n; i++)
        if (c->v[i].id <= c->v[i - 1].id)
            fail_msg("listener: message %zu has id %lld after id %lld", i, (long long)c->v[i].id,
                     (long long)c->v[i - 1].id);
}

/* ---- the store and its database -------------------------------------------------------- */

void open_store(struct fixture *f, int batch_max, int data_poll_ms, enum listen listen)
{
    bool any = listen != NO_LISTENER, all = listen == ALL_LISTENERS;
    struct store_options opts = {.url = f->url,
                                 .batch_max = batch_max,
                                 .data_poll_ms = data_poll_ms,
                                 .listener = any ? collect : NULL,
                                 .listener_arg = any ? &f->col : NULL,
                                 .notif_listener = all ? collect_notifs : NULL,
                                 .docop_listener = all ? collect_docops : NULL};
    char err[512] = "";
    int rc = store_open(&opts, &f->s, err, sizeof err);

    if (rc != 0)
        fail_msg("store_open(%s): rc=%d err=\"%s\"", f->url, rc, err);
    assert_non_null(f->s);
    assert_ptr_equal(f->s->ops, f->be->ops);
}

void close_store(struct fixture *f)
{
    store_close(f->s);
    f->s = NULL;
}

int n_migrations(const struct backend *be)
{
    int n = 0;

    while (be->migrations[n].name)
        n++;
    return n;
}

int store_setup(void **state)
{
    const struct backend *be = *state;
    struct fixture *f = calloc(1, sizeof *f);

    if (!f)
        return -1;
    f->be = be;
    if (be->setup(f) != 0) {
        free(f);
        return -1;
    }
    pthread_mutex_init(&f->col.mu, NULL);
    pthread_cond_init(&f->col.cv, NULL);
    *state = f;
    return 0;
}

int store_teardown(void **state)
{
    struct fixture *f = *state;

    store_close(f->s);
    ext_close(f->ext);
    f->be->teardown(f);
    free(f->col.v);
    pthread_mutex_destroy(&f->col.mu);
    pthread_cond_destroy(&f->col.cv);
    free(f);
    return 0;
}

/* ---- other clients of the database ----------------------------------------------------- */

struct client *ext_connect_url(const struct backend *be, const char *url)
{
    struct sql_error e = {"", ""};
    void *conn = be->connect(url, &e);

    if (!conn)
        fail_msg("cannot connect to %s: %s", url, e.msg);
    struct client *c = calloc(1, sizeof *c);

    assert_non_null(c);
    c->be = be;
    c->conn = conn;
    return c;
}

struct client *ext_connect(struct fixture *f)
{
    return ext_connect_url(f->be, f->url);
}

void ext_close(struct client *c)
{
    if (!c)
        return;
    c->be->disconnect(c->conn);
    free(c);
}

struct client *ext(struct fixture *f)
{
    if (!f->ext)
        f->ext = ext_connect(f);
    return f->ext;
}

void ext_exec(struct client *c, const char *sql)
{
    struct sql_error e = {"", ""};

    if (!c->be->exec(c->conn, sql, &e))
        fail_msg("\"%.200s\": %s", sql, e.msg);
}

void ext_fail(struct client *c, const char *sql, struct sql_error *e)
{
    memset(e, 0, sizeof *e);
    if (c->be->exec(c->conn, sql, e))
        fail_msg("\"%.200s\" succeeded; it should fail", sql);
}

int64_t ext_int(struct client *c, const char *sql, const char *arg)
{
    struct sql_error e = {"", ""};
    int64_t v = 0;

    if (!c->be->query_int(c->conn, sql, arg, &v, &e))
        fail_msg("\"%.200s\": %s", sql, e.msg);
    return v;
}

struct client *hold_writer(struct fixture *f)
{
    struct client *c = ext_connect(f);

    ext_exec(c, f->be->hold_writer_sql);
    return c;
}

void release_writer(struct client *c)
{
    ext_exec(c, "COMMIT");
    ext_close(c);
}

void wait_writer_blocked(struct fixture *f)
{
    if (f->be->wait_writer_blocked)
        f->be->wait_writer_blocked(f);
}

/* ---- the SQLite backend ---------------------------------------------------------------- */

/* Makes a fresh temporary directory for the database file. */
static int lite_setup(struct fixture *f)
{
    snprintf(f->dir, sizeof f->dir, "/tmp/rowcast-test-store-XXXXXX");
    if (!mkdtemp(f->dir)) {
        fprintf(stderr, "# mkdtemp: %s\n", strerror(errno));
        return -1;
    }
    snprintf(f->path, sizeof f->path, "%s/test.db", f->dir);
    snprintf(f->url, sizeof f->url, "sqlite:%s", f->path);
    return 0;
}

/* Removes the database files and their directory. */
static void lite_teardown(struct fixture *f)
{
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};

    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char p[160];

        snprintf(p, sizeof p, "%s%s", f->path, suffixes[i]);
        unlink(p);
    }
    rmdir(f->dir);
}

/* Records SQLite's result rc and message in e. */
static void lite_error(sqlite3 *db, int rc, const char *msg, struct sql_error *e)
{
    snprintf(e->code, sizeof e->code, "%s", sqlite3_errstr(rc));
    snprintf(e->msg, sizeof e->msg, "%s", msg ? msg : db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
}

/* A second connection to the file, standing for another process. */
static void *lite_connect(const char *url, struct sql_error *e)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(url + strlen("sqlite:"), &db, SQLITE_OPEN_READWRITE, NULL);

    if (rc != SQLITE_OK) {
        lite_error(db, rc, NULL, e);
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 10000);
    return db;
}

/* Closes a connection from lite_connect. */
static void lite_disconnect(void *conn)
{
    sqlite3_close(conn);
}

/* Runs SQL on another connection. */
static bool lite_exec(void *conn, const char *sql, struct sql_error *e)
{
    char *msg = NULL;
    int rc = sqlite3_exec(conn, sql, NULL, NULL, &msg);

    if (rc != SQLITE_OK)
        lite_error(conn, rc, msg, e);
    sqlite3_free(msg);
    return rc == SQLITE_OK;
}

/* Runs a query for exactly one non-NULL integer on another connection. */
static bool lite_query_int(void *conn, const char *sql, const char *arg, int64_t *v,
                           struct sql_error *e)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(conn, sql, -1, &st, NULL);

    if (rc != SQLITE_OK) {
        lite_error(conn, rc, NULL, e);
        return false;
    }
    if (arg)
        sqlite3_bind_text(st, 1, arg, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    bool ok = rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL;

    if (ok) {
        *v = sqlite3_column_int64(st, 0);
        rc = sqlite3_step(st);
        ok = rc == SQLITE_DONE;
    }
    if (!ok) {
        lite_error(conn, rc, rc == SQLITE_DONE || rc == SQLITE_ROW ? "not one non-NULL row" : NULL,
                   e);
    }
    sqlite3_finalize(st);
    return ok;
}

static const struct schema_check lite_schema[] = {
    {"SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('users', 'rooms', "
     "'memberships', 'messages', 'notifications', 'document_ops')",
     6},
    {"SELECT count(*) FROM sqlite_master WHERE type = 'view' AND name = 'room_broadcasts'", 1},
    /* a new database has 1 KiB pages (smaller commits) */
    {"SELECT page_size FROM pragma_page_size", 1024},
    {NULL, 0},
};

const struct backend backend_sqlite = {
    .ops = &store_sqlite_ops,
    .migrations = migrations_sqlite,
    .dialect = "sqlite",
    .schema = lite_schema,
    .hold_writer_sql = "BEGIN EXCLUSIVE",
    .iso_inserted_at = "inserted_at",
    .old_inserted_at = "'2001-02-03T04:05:06.789Z'",
    .no_room_code = "constraint failed",
    .bad_seq_code = "constraint failed",
    .call_per_commit = false,
    .docop_json_checked = false,
    .setup = lite_setup,
    .teardown = lite_teardown,
    .connect = lite_connect,
    .disconnect = lite_disconnect,
    .exec = lite_exec,
    .query_int = lite_query_int,
    .wait_writer_blocked = NULL,
};

/* ---- cases without a database ---------------------------------------------------------- */

/* Unsupported URLs are RC_EINVAL with a message naming them. */
static void test_open_bad_urls(void **state)
{
    char err[256] = "";
    struct store *s = NULL;
    struct store_options opts = {.url = "mysql://localhost/x"};
    int applied;

    (void)state;
    assert_int_equal(store_open(&opts, &s, err, sizeof err), RC_EINVAL);
    assert_null(s);
    assert_non_null(strstr(err, "mysql://localhost/x"));
    err[0] = '\0';
    assert_int_equal(store_migrate("nonsense", &applied, err, sizeof err), RC_EINVAL);
    assert_non_null(strstr(err, "nonsense"));
}

/* store_close and store_req_destroy accept NULL. */
static void test_close_null(void **state)
{
    (void)state;
    store_close(NULL);
    store_req_destroy(NULL);
}

/* ---- migrations ------------------------------------------------------------------------ */

/* Number of .sql files in the source tree's migrations/DIALECT. */
static int migration_files(const struct backend *be)
{
    const char *top = getenv("TOP_SRCDIR") ? getenv("TOP_SRCDIR") : TOP_SRCDIR;
    char path[512];
    int n = 0;

    snprintf(path, sizeof path, "%s/migrations/%s", top, be->dialect);
    DIR *d = opendir(path);

    if (!d)
        fail_msg("cannot open %s (set TOP_SRCDIR)", path);
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);

        n += len > 4 && !strcmp(e->d_name + len - 4, ".sql");
    }
    closedir(d);
    return n;
}

/* Every migration file is compiled in; migrate applies each once; the second run applies
 * none. */
static void test_migrate_idempotent(void **state)
{
    struct fixture *f = *state;
    const int n = n_migrations(f->be);
    char err[512] = "";
    int applied = -1;

    assert_true(n >= 1);
    assert_int_equal(n, migration_files(f->be));
    assert_int_equal(store_migrate(f->url, &applied, err, sizeof err), 0);
    assert_int_equal(applied, n);
    applied = -1;
    assert_int_equal(store_migrate(f->url, &applied, err, sizeof err), 0);
    assert_int_equal(applied, 0);

    struct client *db = ext(f);

    assert_int_equal(ext_int(db, "SELECT count(*) FROM schema_migrations", NULL), n);
    for (int i = 0; i < n; i++)
        assert_int_equal(ext_int(db, "SELECT count(*) FROM schema_migrations WHERE name = $1",
                                 f->be->migrations[i].name),
                         1);
    for (const struct schema_check *c = f->be->schema; c->sql; c++) {
        int64_t got = ext_int(db, c->sql, NULL);

        if (got != c->want)
            fail_msg("\"%s\": %lld, want %lld", c->sql, (long long)got, (long long)c->want);
    }
}

/* Opening migrates a new database; reopening and migrating again add nothing. */
static void test_open_applies_migrations(void **state)
{
    struct fixture *f = *state;
    char err[512] = "";
    int applied = -1;

    open_store(f, 0, 0, NO_LISTENER);
    assert_int_equal(ext_int(ext(f), "SELECT count(*) FROM schema_migrations", NULL),
                     n_migrations(f->be));
    assert_int_equal(ext_int(ext(f), "SELECT count(*) FROM rooms", NULL), 0);
    /* Already applied by open: migrate finds nothing to do, even with the store open. */
    assert_int_equal(store_migrate(f->url, &applied, err, sizeof err), 0);
    assert_int_equal(applied, 0);
    close_store(f);

    /* Reopening applies nothing twice. */
    open_store(f, 0, 0, NO_LISTENER);
    close_store(f);
    assert_int_equal(ext_int(ext(f), "SELECT count(*) FROM schema_migrations", NULL),
                     n_migrations(f->be));
}

/* ---- writes and reads ------------------------------------------------------------------ */

/* PING answers 0. */
static void test_ping(void **state)
{
    struct fixture *f = *state;

    open_store(f, 0, 0, NO_LISTENER);
    run_expect(f->s, store_req_create(STORE_PING), 0);
}

/* USER_PUT creates, then updates in place keeping created_at; a user needs a name. */
static void test_user_put(void **state)
{
    struct fixture *f = *state;
    struct store_req *r = store_req_create(STORE_USER_PUT);

    open_store(f, 0, 0, NO_LISTENER);
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

    /* Upsert: new name, avatar cleared, created_at kept. */
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

    open_store(f, 0, 0, NO_LISTENER);
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
    assert_string_equal(r->room.name, "The Lobby"); /* the conflict changed nothing */
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

/* ROOM_DELETE removes the room's messages, memberships and document operations, nothing
 * else. */
static void test_room_delete_cascades(void **state)
{
    struct fixture *f = *state;

    open_store(f, 0, 0, NO_LISTENER);
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

    struct client *db = ext(f);

    assert_int_equal(ext_int(db, "SELECT count(*) FROM messages WHERE room_id = $1", "doomed"), 0);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM memberships WHERE room_id = $1", "doomed"),
                     0);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM document_ops WHERE room_id = $1", "doomed"),
                     0);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM messages WHERE room_id = $1", "kept"), 5);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM memberships WHERE room_id = $1", "kept"), 1);
    /* Users outlive their rooms. */
    assert_int_equal(ext_int(db, "SELECT count(*) FROM users", NULL), 2);

    /* A room created again under the same id starts over. */
    create_room(f->s, "doomed");
    assert_int_equal(add_msg(f->s, "doomed", "alice", "again"), 1);
    struct store_req *r = req_member(STORE_MEMBERS_LIST, "doomed", NULL, NULL);

    assert_int_equal(run(f->s, r), 0);
    assert_int_equal(r->n_members, 0);
    store_req_destroy(r);
}

/* MEMBER_PUT creates the user, updates the role, refuses bad rooms and roles. */
static void test_member_put_creates_user_and_upserts(void **state)
{
    struct fixture *f = *state;
    struct store_req *r;

    open_store(f, 0, 0, NO_LISTENER);
    create_room(f->s, "lobby");

    r = req_member(STORE_MEMBER_PUT, "lobby", "alice", "viewer");
    assert_int_equal(run(f->s, r), 0);
    assert_string_equal(r->member.room_id, "lobby");
    assert_string_equal(r->member.user_id, "alice");
    assert_string_equal(r->member.role, "viewer");
    assert_string_equal(r->member.name, "alice"); /* a new user is named by its id */
    assert_null(r->member.avatar_url);
    store_req_destroy(r);

    struct client *db = ext(f);

    assert_int_equal(ext_int(db, "SELECT count(*) FROM users WHERE id = $1", "alice"), 1);

    /* Upsert: the role changes, there is still one membership. */
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

    /* Missing room; bad role (refused by the schema, leaves no user behind). */
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

    open_store(f, 0, 0, NO_LISTENER);
    create_room(f->s, "lobby");
    create_room(f->s, "other");
    put_member(f->s, "other", "eve", "owner");
    for (size_t i = 0; i < sizeof users / sizeof users[0]; i++)
        put_member(f->s, "lobby", users[i], roles[i]);

    r = req_member(STORE_MEMBERS_LIST, "lobby", NULL, NULL);
    assert_int_equal(run(f->s, r), 0);
    /* Sorted by user_id (byte order: upper case first). */
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

    open_store(f, 0, 0, NO_LISTENER);
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

    /* seq is per room. */
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
             "AND user_id = 'alice' AND body = $1 AND %s = '%s'",
             (long long)first_id, f->be->iso_inserted_at, first_ts);
    assert_int_equal(ext_int(ext(f), sql, "hello \xc3\xa9"), 1);
    assert_int_equal(ext_int(ext(f), "SELECT count(*) FROM messages WHERE room_id = $1", "lobby"),
                     4);
    assert_int_equal(ext_int(ext(f), "SELECT count(*) FROM messages WHERE room_id = $1", "nowhere"),
                     0);
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

/* 8 threads x 250 unawaited writes into 2 rooms: seqs 1..N per room, FIFO per thread, in
 * id order. */
static void test_seq_gapless_concurrent_writers(void **state)
{
    struct fixture *f = *state;
    enum { THREADS = 8, PER = 250, TOTAL = THREADS * PER, PER_ROOM = TOTAL / 2 };
    struct writer_arg args[THREADS];
    pthread_t th[THREADS];
    struct waiter *w;

    open_store(f, 0, 0, MSG_LISTENER);
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

    /* Every request succeeded, and the seqs handed back cover 1..PER_ROOM per room, each
     * once. Within one thread, later submissions to a room got later seqs (FIFO). */
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

    /* In the database, per room: ordering by id gives seq 1, 2, 3, … with no gap. */
    for (int room = 0; room < 2; room++) {
        struct client *db = ext(f);

        assert_int_equal(
            ext_int(db, "SELECT count(*) FROM messages WHERE room_id = $1", conc_rooms[room]),
            PER_ROOM);
        assert_int_equal(ext_int(db,
                                 "SELECT count(*) FROM (SELECT seq, row_number() OVER "
                                 "(ORDER BY id) AS rn FROM messages WHERE room_id = $1) t "
                                 "WHERE seq = rn",
                                 conc_rooms[room]),
                         PER_ROOM);
        assert_int_equal(ext_int(db, "SELECT last_seq FROM rooms WHERE id = $1", conc_rooms[room]),
                         PER_ROOM);
    }

    /* The listener saw every message once, in id order, with per-room seqs in order. */
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
    print_message("%d writes reached the listener in %zu calls\n", TOTAL, f->col.calls);
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < PER; i++)
            store_req_destroy(args[t].reqs[i]);
    waiter_destroy(w);
}

/* The value of one line of the /metrics text (name with its labels), or -1. */
static int64_t metric_value(const char *name)
{
    struct sbuf b = SBUF_INIT;
    int64_t v = -1;

    metrics_render(&b);
    size_t nl = strlen(name);

    for (const char *p = b.data; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (!strncmp(p, name, nl) && p[nl] == ' ') {
            v = strtoll(p + nl + 1, NULL, 10);
            break;
        }
    }
    sbuf_cleanup(&b);
    return v;
}

/* Writes queued behind a held lock commit in batches of batch_max, not one by one. */
static void test_group_commit_batches(void **state)
{
    struct fixture *f = *state;
    enum { BATCH = 64, N = 1000 };
    static struct store_req *reqs[N + 1];
    struct waiter *w;

    open_store(f, BATCH, 0, ALL_LISTENERS);
    create_room(f->s, "lobby");
    assert_int_equal(collected_calls(&f->col), 0);
    /* The metrics are the process's: count what this case adds. */
    int64_t commits_before = metric_value("rowcast_store_batch_size_count");
    int64_t small_before = metric_value("rowcast_store_batch_size_bucket{le=\"64\"}");

    /* Another client holds a lock the writer needs, so the writer cannot commit anything
     * until every request below is queued: the first request goes into a batch of its own
     * that waits for it (where the backend lets us see that: else it may already have
     * company), and the writer then finds the whole queue and drains it in batches of at
     * most BATCH. */
    struct client *lock = hold_writer(f);

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
    /* Nothing can have committed yet. */
    assert_int_equal(ext_int(lock, "SELECT count(*) FROM messages", NULL), 0);
    release_writer(lock);
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

    /* Every commit is one observation of the batch size histogram. */
    int64_t commits = metric_value("rowcast_store_batch_size_count") - commits_before;
    int64_t most = 1 + (N + BATCH - 1) / BATCH; /* 1 + 16 */

    if (commits > most)
        fail_msg("%d writes took %lld commits; batches of %d allow at most %lld", N + 1,
                 (long long)commits, BATCH, (long long)most);
    /* None was bigger than BATCH (64 is a bucket bound). */
    assert_int_equal(metric_value("rowcast_store_batch_size_bucket{le=\"64\"}") - small_before,
                     commits);
    assert_int_equal(wait_collected(&f->col, N + 1, WAIT_MS), N + 1);
    close_store(f);
    if (f->be->call_per_commit) {
        /* The listener runs once per commit: the batches were exactly the first request
         * alone, then full ones. */
        if (f->col.calls != (size_t)most || commits != most)
            fail_msg("%d writes took %zu listener calls, %lld commits; want %lld", N + 1,
                     f->col.calls, (long long)commits, (long long)most);
        assert_int_equal(f->col.max_per_call, BATCH);
    }
    assert_int_equal(f->col.n, N + 1);
    assert_collected_in_id_order(&f->col);
    print_message("queued %d writes in %lld ms, committed them in %lld batches in %lld ms\n", N,
                  (long long)(t1 - t0), (long long)commits, (long long)(t2 - t1));
    waiter_destroy(w);
}

/* Failing requests in a batch get their own rc; the others still commit. */
static void test_failed_request_does_not_affect_batch(void **state)
{
    struct fixture *f = *state;
    enum { N = 12 };
    struct store_req *reqs[N];
    const bool json_checked = f->be->docop_json_checked;
    int want[N] = {
        0,         RC_ENOTFOUND, 0, RC_ECONFLICT, RC_EINVAL, RC_ENOTFOUND, RC_ENOTFOUND, 0,
        RC_EINVAL, RC_EINVAL,    0, RC_ENOTFOUND};
    struct waiter *w;

    if (!json_checked)
        want[8] = 0; /* stored as given */
    open_store(f, 100, 0, ALL_LISTENERS);
    create_room(f->s, "lobby");
    create_room(f->s, "gate");
    put_member(f->s, "lobby", "alice", "owner");

    /* The writer waits on the held lock with one request while the batch under test
     * queues; the rest is then one batch. */
    struct client *lock = hold_writer(f);

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
    release_writer(lock);
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

    struct client *db = ext(f);

    assert_int_equal(ext_int(db, "SELECT count(*) FROM messages WHERE room_id = 'lobby'", NULL), 3);
    assert_int_equal(ext_int(db, "SELECT last_seq FROM rooms WHERE id = 'lobby'", NULL), 3);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM rooms WHERE name = 'lobby'", NULL), 1);
    /* The failed member puts left no user behind. */
    assert_int_equal(ext_int(db, "SELECT count(*) FROM users WHERE id = 'mallory'", NULL), 0);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM users WHERE id = 'carol'", NULL), 0);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM memberships", NULL), 1);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM document_ops", NULL), !json_checked);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM notifications", NULL), 1);

    assert_int_equal(wait_collected(&f->col, 4, WAIT_MS), 4);
    close_store(f);
    assert_int_equal(f->col.n, 4);
    assert_string_equal(f->col.v[0].body, "gate");
    assert_string_equal(f->col.v[1].body, "first");
    assert_string_equal(f->col.v[2].body, "second");
    assert_string_equal(f->col.v[3].body, "third");
    assert_int_equal(f->col.n_notifs, 1);
    assert_int_equal(f->col.n_docops, !json_checked);
    for (int i = 0; i < N; i++)
        store_req_destroy(reqs[i]);
    store_req_destroy(gate);
    waiter_destroy(w);
}

/* Messages committed before open are not delivered again; the listener may be set after
 * open, before the first write. */
static void test_listener_skips_rows_before_open(void **state)
{
    struct fixture *f = *state;

    open_store(f, 0, 0, NO_LISTENER);
    create_room(f->s, "lobby");
    add_msg(f->s, "lobby", "alice", "old-1");
    add_msg(f->s, "lobby", "alice", "old-2");
    close_store(f);

    open_store(f, 0, 5, NO_LISTENER);
    store_set_listener(f->s, collect, &f->col);
    assert_int_equal(add_msg(f->s, "lobby", "alice", "new"), 3);
    assert_int_equal(wait_collected(&f->col, 1, WAIT_MS), 1);
    close_store(f);
    assert_int_equal(f->col.n, 1);
    assert_string_equal(f->col.v[0].body, "new");
    assert_int_equal(f->col.v[0].seq, 3);
}

/* After a commit the listeners get that commit's rows, one call per table, messages
 * first, in order. */
static void test_listeners_get_own_commits(void **state)
{
    struct fixture *f = *state;
    struct waiter *w;

    /* The listener may also be set after open, before the first write. */
    open_store(f, 0, 0, NO_LISTENER);
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

    open_store(f, 0, 0, ALL_LISTENERS);
    struct client *lock = hold_writer(f);

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
    release_writer(lock);
    wait_all(w);
    for (int i = 0; i < 6; i++)
        assert_int_equal(reqs[i]->rc, 0);
    assert_int_equal(wait_collected(&f->col, 3, WAIT_MS), 3);
    close_store(f);
    /* gate's batch, then one call per table for the batch of five; where one call may
     * carry several commits, gate's may share the batch's. */
    if (f->be->call_per_commit)
        assert_string_equal(f->col.log, "mmnd");
    else if (strcmp(f->col.log, "mmnd") != 0 && strcmp(f->col.log, "mnd") != 0)
        fail_msg("listener calls \"%s\", want \"mmnd\" or \"mnd\"", f->col.log);
    assert_int_equal(f->col.n, 3);
    assert_string_equal(f->col.v[0].body, "gate");
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
    waiter_destroy(w);
}

/* The seq of the message with body `body` (unique in the case). */
static int64_t seq_of(struct fixture *f, const char *body)
{
    return ext_int(ext(f), "SELECT seq FROM messages WHERE body = $1", body);
}

/* A plain INSERT without seq from another client gets the next seq; a given seq must be
 * the next one; rows for missing rooms are refused with "no such room". */
static void test_plain_insert_gets_next_seq(void **state)
{
    struct fixture *f = *state;
    struct sql_error e;
    char sql[256];

    open_store(f, 0, 0, NO_LISTENER);
    create_room(f->s, "lobby");
    create_room(f->s, "other");
    assert_int_equal(add_msg(f->s, "lobby", "alice", "a"), 1);
    assert_int_equal(add_msg(f->s, "lobby", "alice", "b"), 2);

    struct client *db = ext(f);

    ext_exec(db, "INSERT INTO messages(room_id, user_id, body) VALUES ('lobby', 'cron', 'c')");
    assert_int_equal(seq_of(f, "c"), 3);
    ext_exec(db, "INSERT INTO messages(room_id, user_id, body) VALUES ('other', 'cron', 'x')");
    assert_int_equal(seq_of(f, "x"), 1);
    assert_int_equal(ext_int(db, "SELECT last_seq FROM rooms WHERE id = 'lobby'", NULL), 3);
    /* The store continues after it. */
    assert_int_equal(add_msg(f->s, "lobby", "alice", "d"), 4);

    ext_exec(db,
             "INSERT INTO messages(room_id, user_id, body, seq) VALUES ('lobby', 'cron', 'e', 5)");
    assert_int_equal(seq_of(f, "e"), 5);
    ext_fail(db,
             "INSERT INTO messages(room_id, user_id, body, seq) VALUES ('lobby', 'cron', 'f', 9)",
             &e);
    assert_string_equal(e.code, f->be->bad_seq_code);

    ext_fail(db, "INSERT INTO messages(room_id, user_id, body) VALUES ('nowhere', 'cron', 'x')",
             &e);
    assert_string_equal(e.code, f->be->no_room_code);
    assert_non_null(strstr(e.msg, "no such room"));
    ext_fail(db,
             "INSERT INTO document_ops(room_id, user_id, operation) VALUES ('nowhere', 'u', 'op')",
             &e);
    assert_string_equal(e.code, f->be->no_room_code);
    assert_int_equal(add_msg(f->s, "lobby", "alice", "g"), 6);
    assert_int_equal(ext_int(db, "SELECT count(*) FROM messages WHERE seq IS NULL", NULL), 0);

    /* An explicit inserted_at is kept. */
    snprintf(sql, sizeof sql,
             "INSERT INTO messages(room_id, user_id, body, inserted_at) "
             "VALUES ('other', 'import', 'old', %s)",
             f->be->old_inserted_at);
    ext_exec(db, sql);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM messages WHERE body = 'old' AND %s = "
             "'2001-02-03T04:05:06.789Z'",
             f->be->iso_inserted_at);
    assert_int_equal(ext_int(db, sql, NULL), 1);
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

    open_store(f, 0, 0, NO_LISTENER);
    create_room(f->s, "lobby");
    create_room(f->s, "other");
    for (int i = 1; i <= 10; i++) {
        char body[32];

        snprintf(body, sizeof body, "body %d", i);
        assert_int_equal(add_msg(f->s, "lobby", i % 2 ? "alice" : "bob", body), i);
        add_msg(f->s, "other", "carol", "noise");
    }

    /* Latest: the last `limit`, oldest first. */
    assert_page(f->s, P, NULL, -1, -1, 3, 8, 10);
    assert_page(f->s, P, NULL, -1, -1, 50, 1, 10);
    assert_page(f->s, P, NULL, -1, -1, 1, 10, 10);
    /* After: the first `limit` above after_seq. */
    assert_page(f->s, P, NULL, 0, -1, 4, 1, 4);
    assert_page(f->s, P, NULL, 4, -1, 3, 5, 7);
    assert_page(f->s, P, NULL, 8, -1, 5, 9, 10);
    assert_page(f->s, P, NULL, 10, -1, 5, 1, 0);
    assert_page(f->s, P, NULL, 99, -1, 5, 1, 0);
    /* Before: the last `limit` below before_seq. */
    assert_page(f->s, P, NULL, -1, 5, 2, 3, 4);
    assert_page(f->s, P, NULL, -1, 3, 10, 1, 2);
    assert_page(f->s, P, NULL, -1, 1, 10, 1, 0);
    assert_page(f->s, P, NULL, -1, 11, 3, 8, 10);
    /* Between: the first `limit` strictly between the bounds. */
    assert_page(f->s, P, NULL, 2, 8, 3, 3, 5);
    assert_page(f->s, P, NULL, 2, 6, 10, 3, 5);
    assert_page(f->s, P, NULL, 0, 11, 50, 1, 10);
    assert_page(f->s, P, NULL, 5, 6, 10, 1, 0);
    /* Limit 0 returns nothing; a negative limit means no limit. */
    assert_page(f->s, P, NULL, -1, -1, 0, 1, 0);
    assert_page(f->s, P, NULL, 3, -1, -1, 4, 10);

    /* The default limit of a new request is 50. */
    struct store_req *r = req_room(STORE_MESSAGES_PAGE, "lobby", NULL);

    assert_int_equal(r->limit, 50);
    assert_int_equal(r->after_seq, -1);
    assert_int_equal(r->before_seq, -1);
    assert_int_equal(run(f->s, r), 0);
    assert_int_equal(r->n_msgs, 10);
    store_req_destroy(r);

    run_expect(f->s, req_page(P, "nowhere", NULL, -1, -1, 10), RC_ENOTFOUND);
    /* An existing room without messages is an empty page, not an error. */
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

    open_store(f, 0, 0, NO_LISTENER);
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

    /* Recovery: exactly the messages after last_seq; before and between as in pages. */
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
    assert_int_equal(r->n_msgs, 0); /* no history for a non-member */
    store_req_destroy(r);
    r = req_page(J, "nowhere", "alice", -1, -1, 50);
    assert_int_equal(run(f->s, r), RC_ENOTFOUND);
    store_req_destroy(r);

    /* Membership changes are seen by the next join. */
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

    open_store(f, 0, 0, NO_LISTENER);
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

/* Documents: edits get per-document seqs; joins need a membership. */
static void test_documents(void **state)
{
    struct fixture *f = *state;
    struct store_req *r;

    open_store(f, 0, 0, NO_LISTENER);
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

    /* A write's completion runs after its commit, so a read submitted after it must see
     * it, whatever reads ran before on the reader connections. */
    open_store(f, 0, 0, NO_LISTENER);
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

        r = req_room(STORE_ROOM_GET, "lobby", NULL);
        assert_int_equal(run(f->s, r), 0);
        if (r->room.last_seq != round)
            fail_msg("round %d: room_get says last_seq %lld", round, (long long)r->room.last_seq);
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

/* Many reads at once all complete with the right rows. */
static void test_many_concurrent_reads(void **state)
{
    struct fixture *f = *state;
    enum { N = 600 };
    static struct store_req *reqs[N];
    struct waiter *w = waiter_create();

    open_store(f, 0, 0, NO_LISTENER);
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

/* Joins of one room submitted together (one reader batch shares the history it read)
 * each get their own membership, read state and result, and the same history a join on
 * its own gets. */
static void test_joins_together_keep_their_own(void **state)
{
    struct fixture *f = *state;
    enum { N = 60 };
    static const char *const users[] = {"eve", "alice", "bob", "carol"};
    static const char *const roles[] = {NULL, "owner", "member", "viewer"};
    static struct store_req *reqs[N];
    struct waiter *w = waiter_create();

    open_store(f, 0, 0, NO_LISTENER);
    create_room(f->s, "lobby");
    for (int u = 1; u < 4; u++)
        put_member(f->s, "lobby", users[u], roles[u]);
    for (int i = 0; i < 12; i++)
        add_msg(f->s, "lobby", i % 2 ? "alice" : "bob", i % 3 ? "x" : "a longer body");
    struct store_req *m = store_req_create(STORE_READ_MARK);
    m->room_id = dup_or_null("lobby");
    m->user_id = dup_or_null("bob");
    m->seq = 7;
    run_expect(f->s, m, 0);
    for (int i = 0; i < N; i++) {
        reqs[i] = req_page(STORE_JOIN_ROOM, "lobby", users[i % 4], i % 8 < 4 ? -1 : 5, -1,
                           i % 8 < 4 ? 10 : 4);
        submit_counted(f->s, w, reqs[i]);
    }
    wait_all(w);
    for (int i = 0; i < N; i++) {
        struct store_req *r = reqs[i];
        int u = i % 4;
        if (!u) {
            assert_int_equal(r->rc, RC_EFORBIDDEN);
            store_req_destroy(r);
            continue;
        }
        assert_int_equal(r->rc, 0);
        assert_string_equal(r->member.role, roles[u]);
        assert_int_equal(r->member.last_read_seq, u == 2 ? 7 : 0);
        /* unread: the others' messages after the cursor (alice wrote the odd ones) */
        assert_int_equal(r->member.unread, u == 1 ? 6 : u == 2 ? 3 : 12);
        assert_int_equal(r->room.last_seq, 12);
        bool latest = i % 8 < 4;
        assert_int_equal(r->n_msgs, latest ? 10 : 4);
        for (size_t k = 0; k < r->n_msgs; k++) {
            int64_t seq = (latest ? 3 : 6) + (int64_t)k;
            assert_int_equal(r->msgs[k].seq, seq);
            assert_string_equal(r->msgs[k].room_id, "lobby");
            assert_string_equal(r->msgs[k].user_id, (seq - 1) % 2 ? "alice" : "bob");
            assert_string_equal(r->msgs[k].body, (seq - 1) % 3 ? "x" : "a longer body");
        }
        store_req_destroy(r);
    }
    waiter_destroy(w);
}

/* store_close finishes every queued request before it returns. */
static void test_close_completes_queued(void **state)
{
    struct fixture *f = *state;
    enum { N = 700 }; /* every 7th a read, the rest writes */
    static struct store_req *reqs[N];
    struct waiter *w;

    open_store(f, 50, 0, NO_LISTENER);
    create_room(f->s, "lobby");
    w = waiter_create();
    /* The writer is stuck behind another client's lock while everything is queued, and is
     * still working through the queue (in batches of 50) when close is called. */
    struct client *lock = hold_writer(f);

    for (int i = 0; i < N; i++) {
        if (i % 7 == 3)
            reqs[i] = req_page(STORE_MESSAGES_PAGE, "lobby", NULL, -1, -1, 5);
        else
            reqs[i] = req_msg("lobby", "alice", "queued");
        submit_counted(f->s, w, reqs[i]);
    }
    wait_writer_blocked(f);
    release_writer(lock);
    close_store(f);
    /* store_close returned: every done has been called, once. */
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

/* ---- SQLite only: the file, and other processes' commits ----------------------------- */

/* A path in a directory that does not exist cannot be opened: RC_ESTORE with a message. */
static void test_open_errors_sqlite(void **state)
{
    struct fixture *f = *state;
    char err[256] = "", url[256];
    struct store *s = NULL;
    struct store_options opts = {.url = url};

    snprintf(url, sizeof url, "sqlite:%s/missing-dir/x.db", f->dir);
    assert_int_equal(store_open(&opts, &s, err, sizeof err), RC_ESTORE);
    assert_null(s);
    assert_true(strlen(err) > 0);
}

/* Rows inserted by another process reach the listener once, in id order. */
static void test_listener_sees_other_process(void **state)
{
    struct fixture *f = *state;
    struct client *db;

    open_store(f, 0, 10, MSG_LISTENER);
    create_room(f->s, "lobby");
    db = ext(f);

    add_msg(f->s, "lobby", "alice", "mine-1");
    assert_int_equal(wait_collected(&f->col, 1, WAIT_MS), 1);

    /* A row written by another process, with no store write after it: only the
     * data_version poll can find it. */
    int64_t t0 = now_ms();

    ext_exec(db, "INSERT INTO messages(room_id, user_id, body) VALUES ('lobby', 'cron', "
                 "'theirs-1')");
    if (wait_collected(&f->col, 2, 5000) != 2)
        fail_msg("a message inserted by another connection was not delivered within 5 s "
                 "(data_poll_ms = 10)");
    int64_t took = now_ms() - t0;

    /* Several at once, in one transaction. */
    ext_exec(db, "BEGIN; INSERT INTO messages(room_id, user_id, body) VALUES "
                 "('lobby', 'cron', 'theirs-batch'), ('lobby', 'cron', 'theirs-batch'), "
                 "('lobby', 'cron', 'theirs-batch'); COMMIT");
    assert_int_equal(wait_collected(&f->col, 5, 5000), 5);

    /* Ours and theirs interleaved. */
    add_msg(f->s, "lobby", "alice", "mine-2");
    ext_exec(db, "INSERT INTO messages(room_id, user_id, body) VALUES ('lobby', 'cron', "
                 "'theirs-2')");
    add_msg(f->s, "lobby", "alice", "mine-3");
    assert_int_equal(wait_collected(&f->col, 8, 5000), 8);
    close_store(f);

    assert_int_equal(f->col.n, 8);
    assert_collected_in_id_order(&f->col);
    static const char *const bodies[] = {"mine-1",       "theirs-1", "theirs-batch", "theirs-batch",
                                         "theirs-batch", "mine-2",   "theirs-2",     "mine-3"};

    for (size_t i = 0; i < 8; i++) {
        assert_string_equal(f->col.v[i].body, bodies[i]);
        assert_string_equal(f->col.v[i].room_id, "lobby");
        assert_int_equal(f->col.v[i].seq, (int64_t)i + 1);
    }
    assert_string_equal(f->col.v[1].user_id, "cron");
    print_message("external row delivered after %lld ms\n", (long long)took);
}

/* Keeps the store's writer busy with notifications (not messages: their commits must
 * not be what makes the store look at the messages table) until told to stop. */
struct busy_arg {
    struct store *s;
    atomic_bool stop;
    size_t sent;
};

/* The busy thread: 16 notifications at a time, each round awaited. */
static void *busy_thread(void *p)
{
    struct busy_arg *a = p;
    struct waiter *w = waiter_create();
    struct store_req *reqs[16];

    while (!atomic_load(&a->stop)) {
        for (int i = 0; i < 16; i++) {
            reqs[i] = req_notif("load", "busy", NULL);
            submit_counted(a->s, w, reqs[i]);
        }
        pthread_mutex_lock(&w->mu); /* no cmocka asserts off the test's thread */
        while (w->pending > 0)
            pthread_cond_wait(&w->cv, &w->mu);
        pthread_mutex_unlock(&w->mu);
        for (int i = 0; i < 16; i++)
            store_req_destroy(reqs[i]);
        a->sent += 16;
    }
    waiter_destroy(w);
    return NULL;
}

/* A row from another process is found while this process's own writes never stop:
 * the writer never sits idle, and the look for other processes' commits must not wait
 * for that. */
static void test_listener_sees_other_process_while_busy(void **state)
{
    struct fixture *f = *state;
    struct busy_arg a = {0};
    pthread_t th;

    open_store(f, 0, 10, MSG_LISTENER);
    create_room(f->s, "lobby");
    struct client *db = ext(f);

    a.s = f->s;
    assert_int_equal(pthread_create(&th, NULL, busy_thread, &a), 0);
    while (ext_int(db, "SELECT count(*) FROM notifications", NULL) < 200) /* load is on */
        sleep_ms(1);
    ext_exec(db, "INSERT INTO messages(room_id, user_id, body) VALUES ('lobby', 'cron', "
                 "'theirs-busy')");
    int64_t t0 = now_ms();
    bool found = false;

    while (!found && now_ms() - t0 < 3000) {
        pthread_mutex_lock(&f->col.mu);
        for (size_t i = 0; i < f->col.n && !found; i++)
            found = !strcmp(f->col.v[i].body, "theirs-busy");
        pthread_mutex_unlock(&f->col.mu);
        if (!found)
            wait_collected(&f->col, f->col.n + 1, 50);
    }
    int64_t took = now_ms() - t0;

    atomic_store(&a.stop, true);
    pthread_join(th, NULL);
    if (!found)
        fail_msg("a message inserted by another connection was not delivered within 3 s "
                 "while the writer was busy (data_poll_ms = 10)");
    close_store(f);
    assert_int_equal(f->col.n, 1);
    assert_true(a.sent >= 200);
    print_message("external row delivered after %lld ms under load (%zu own writes)\n",
                  (long long)took, a.sent);
}

/* ---- the suite ------------------------------------------------------------------------- */

/* A case of backend be (backend_sqlite, backend_pg), named "be/fn". */
#define ON(be, fn)                                                                                 \
    {                                                                                              \
#be "/" #fn, fn, store_setup, store_teardown, (void *)&backend_##be                        \
    }
/* A case that needs no database. */
#define ONCE(fn)                                                                                   \
    {                                                                                              \
#fn, fn, NULL, NULL, NULL                                                                  \
    }

/* What every backend must do: run against each. */
/* clang-format off */
#define EVERY_BACKEND(X, be)                          \
    X(be, test_migrate_idempotent),                   \
    X(be, test_open_applies_migrations),              \
    X(be, test_ping),                                 \
    X(be, test_user_put),                             \
    X(be, test_room_create_get_conflict),             \
    X(be, test_room_delete_cascades),                 \
    X(be, test_member_put_creates_user_and_upserts),  \
    X(be, test_member_delete_and_list),               \
    X(be, test_message_add),                          \
    X(be, test_seq_gapless_concurrent_writers),       \
    X(be, test_group_commit_batches),                 \
    X(be, test_failed_request_does_not_affect_batch), \
    X(be, test_listener_skips_rows_before_open),      \
    X(be, test_listeners_get_own_commits),            \
    X(be, test_plain_insert_gets_next_seq),           \
    X(be, test_messages_page),                        \
    X(be, test_join_room),                            \
    X(be, test_notifications),                        \
    X(be, test_documents),                            \
    X(be, test_reads_see_committed_writes),           \
    X(be, test_many_concurrent_reads),                \
    X(be, test_joins_together_keep_their_own),        \
    X(be, test_close_completes_queued)
/* clang-format on */

int main(void)
{
    const struct CMUnitTest tests[] = {
        ONCE(test_open_bad_urls),
        EVERY_BACKEND(ON, sqlite),
        ON(sqlite, test_open_errors_sqlite),
        ON(sqlite, test_listener_sees_other_process),
        ON(sqlite, test_listener_sees_other_process_while_busy),
        LIFE_CASES(ON, sqlite),
        ON(sqlite, test_life_sql_writer_reaches_listener),
        BROADCAST_CASES(ON, sqlite),
        EVERY_BACKEND(ON, pg),
        LIFE_CASES(ON, pg),
        BROADCAST_CASES(ON, pg),
        ONCE(test_notify_sql_matches_migration),
        ON(pg, test_open_errors_pg),
        ON(pg, test_migrate_concurrent),
        ON(pg, test_room_delete_races_insert),
        ON(pg, test_seq_in_one_transaction),
        ON(pg, test_bulk_insert_select),
        ON(pg, test_writes_use_indexes),
        ON(pg, test_sessions_plan_without_jit),
        ON(pg, test_sessions_plan_generic),
        ON(pg, test_notification_ids_in_commit_order),
        ON(pg, test_life_in_one_batch),
        ON(pg, test_message_run_between_trigger_writes),
        ON(pg, test_notify_triggers),
        ON(pg, test_killed_connection),
        ON(pg, test_database_unreachable),
        ONCE(test_close_null),
    };

    if (getenv("ROWCAST_TEST_FILTER")) /* e.g. '*killed*' */
        cmocka_set_test_filter(getenv("ROWCAST_TEST_FILTER"));
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
