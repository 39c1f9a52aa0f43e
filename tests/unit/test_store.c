/* test_store.c - unit tests for src/store.c and src/store_sqlite.c against a temporary
 * SQLite file. The store completes requests on its own threads; these tests block on a
 * condition variable until the completions arrive (the server never does). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
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
#include <sqlite3.h>

#include "metrics.h"
#include "migrations.h"
#include "store.h"
#include "util/sbuf.h"

/* How long a test waits for completions before it fails instead of hanging. */
#define WAIT_MS 60000

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

/* Everything the message listener was given. */
struct collector {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct seen *v;
    size_t n, cap;
    size_t calls;
    size_t max_per_call;
    bool bad_call; /* called with n == 0 or a NULL array */
};

struct fixture {
    char dir[64];
    char path[128];
    char url[160];
    struct store *s;
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

/* Blocks until every request counted on w has completed; fails after WAIT_MS. */
static void wait_all(struct waiter *w)
{
    struct timespec ts = deadline(WAIT_MS);

    pthread_mutex_lock(&w->mu);
    while (w->pending > 0) {
        if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) == ETIMEDOUT) {
            size_t left = w->pending;

            pthread_mutex_unlock(&w->mu);
            fail_msg("%zu store requests did not complete within %d ms", left, WAIT_MS);
        }
    }
    bool overrun = w->overrun;

    pthread_mutex_unlock(&w->mu);
    if (overrun)
        fail_msg("a done callback ran more than once");
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

/* A MESSAGES_PAGE or JOIN_ROOM request with its bounds. */
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

    assert_int_equal(run(s, r), 0);
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

/* A second connection to the database, standing for another process. */
static sqlite3 *ext_open(const char *path)
{
    sqlite3 *db = NULL;

    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    return db;
}

/* Runs SQL on the other connection; fails the test on error. */
static void ext_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);

    if (rc != SQLITE_OK) {
        char copy[256];

        snprintf(copy, sizeof copy, "%s", msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        fail_msg("sqlite3_exec(\"%s\"): %s", sql, copy);
    }
}

/* Runs a query returning one integer, with an optional text parameter ?1. */
static int64_t ext_int(sqlite3 *db, const char *sql, const char *arg)
{
    sqlite3_stmt *st = NULL;

    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("prepare \"%s\": %s", sql, sqlite3_errmsg(db));
    if (arg)
        sqlite3_bind_text(st, 1, arg, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);

    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        fail_msg("\"%s\" returned no row (%d)", sql, rc);
    }
    int64_t v = sqlite3_column_int64(st, 0);

    sqlite3_finalize(st);
    return v;
}

/* Inserts a message the way another process would: plain SQL, no seq. */
static int ext_insert_msg(sqlite3 *db, const char *room, const char *user, const char *body)
{
    sqlite3_stmt *st = NULL;

    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO messages(room_id, user_id, body) "
                                        "VALUES (?1, ?2, ?3)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, room, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, user, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, body, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);

    sqlite3_finalize(st);
    return rc;
}

/* Listener: copies the new messages it is given (their changes' payloads hold them)
 * into the collector in its arg. */
static void collect(const struct store_change *msgs, size_t n, void *arg)
{
    struct collector *c = arg;

    pthread_mutex_lock(&c->mu);
    c->calls++;
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
        json_t *p = json_loads(msgs[i].payload, 0, NULL);
        const char *body = json_string_value(json_object_get(p, "body"));

        snprintf(e->body, sizeof e->body, "%s", body ? body : "");
        json_decref(p);
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

/* Asserts the collector's ids strictly increase (exactly once, in id order). */
static void assert_collected_in_id_order(struct collector *c)
{
    assert_false(c->bad_call);
    for (size_t i = 1; i < c->n; i++)
        if (c->v[i].id <= c->v[i - 1].id)
            fail_msg("listener: message %zu has id %lld after id %lld", i, (long long)c->v[i].id,
                     (long long)c->v[i - 1].id);
}

/* Opens the fixture's store; with listen, the collector is its listener from the start. */
static void open_store(struct fixture *f, int batch_max, int data_poll_ms, bool listen)
{
    struct store_options opts = {.url = f->url,
                                 .batch_max = batch_max,
                                 .data_poll_ms = data_poll_ms,
                                 .listener = listen ? collect : NULL,
                                 .listener_arg = listen ? &f->col : NULL};
    char err[256] = "";
    int rc = store_open(&opts, &f->s, err, sizeof err);

    if (rc != 0)
        fail_msg("store_open(%s): rc=%d err=\"%s\"", f->url, rc, err);
    assert_non_null(f->s);
}

/* Closes the fixture's store (the listener cannot run afterwards). */
static void close_store(struct fixture *f)
{
    store_close(f->s);
    f->s = NULL;
}

/* Makes a fresh temporary directory for the database. */
static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);

    if (!f)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/rowcast-test-store-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof f->path, "%s/test.db", f->dir);
    snprintf(f->url, sizeof f->url, "sqlite:%s", f->path);
    pthread_mutex_init(&f->col.mu, NULL);
    pthread_cond_init(&f->col.cv, NULL);
    *state = f;
    return 0;
}

/* Closes the store if a test left it open and removes the database files. */
static int teardown(void **state)
{
    struct fixture *f = *state;
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};

    store_close(f->s);
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char p[160];

        snprintf(p, sizeof p, "%s%s", f->path, suffixes[i]);
        unlink(p);
    }
    rmdir(f->dir);
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

    while (migrations_sqlite[n].name)
        n++;
    return n;
}

/* store_migrate applies every migration once; the second run applies none. */
static void test_migrate_idempotent(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    int applied = -1;

    assert_true(n_migrations() >= 1);
    assert_int_equal(store_migrate(f->url, &applied, err, sizeof err), 0);
    assert_int_equal(applied, n_migrations());
    applied = -1;
    assert_int_equal(store_migrate(f->url, &applied, err, sizeof err), 0);
    assert_int_equal(applied, 0);

    sqlite3 *db = ext_open(f->path);

    assert_int_equal(ext_int(db, "SELECT COUNT(*) FROM schema_migrations", NULL), n_migrations());
    for (int i = 0; i < n_migrations(); i++)
        assert_int_equal(ext_int(db, "SELECT COUNT(*) FROM schema_migrations WHERE name = ?1",
                                 migrations_sqlite[i].name),
                         1);
    assert_int_equal(ext_int(db,
                             "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                             "('users', 'rooms', 'memberships', 'messages', 'notifications')",
                             NULL),
                     5);
    sqlite3_close(db);
}

/* store_open migrates a new database; reopening and migrating again add nothing. */
static void test_open_applies_migrations(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    int applied = -1;

    open_store(f, 0, 0, false);
    sqlite3 *db = ext_open(f->path);

    assert_int_equal(ext_int(db, "SELECT COUNT(*) FROM schema_migrations", NULL), n_migrations());
    assert_int_equal(ext_int(db, "SELECT COUNT(*) FROM rooms", NULL), 0);
    sqlite3_close(db);
    /* Already applied by open: migrate finds nothing to do, even with the store open. */
    assert_int_equal(store_migrate(f->url, &applied, err, sizeof err), 0);
    assert_int_equal(applied, 0);
    close_store(f);

    /* Reopening applies nothing twice. */
    open_store(f, 0, 0, false);
    close_store(f);
    db = ext_open(f->path);
    assert_int_equal(ext_int(db, "SELECT COUNT(*) FROM schema_migrations", NULL), n_migrations());
    sqlite3_close(db);
}

/* Unsupported URLs are RC_EINVAL with a message; an unopenable path is RC_ESTORE. */
static void test_open_bad_urls(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct store *s = NULL;
    struct store_options opts = {.url = "mysql://localhost/x"};
    int applied;

    err[0] = '\0';
    assert_int_equal(store_open(&opts, &s, err, sizeof err), RC_EINVAL);
    assert_null(s);
    assert_non_null(strstr(err, "mysql://localhost/x"));

    /* A PostgreSQL server that is not there: a database error, with a message. */
    opts.url = "postgres://user@127.0.0.1:1/db";
    err[0] = '\0';
    assert_int_equal(store_open(&opts, &s, err, sizeof err), RC_ESTORE);
    assert_null(s);
    assert_true(strlen(err) > 0);

    err[0] = '\0';
    assert_int_equal(store_migrate("nonsense", &applied, err, sizeof err), RC_EINVAL);
    assert_true(strlen(err) > 0);

    /* A path in a directory that does not exist cannot be opened. */
    char url[256];

    snprintf(url, sizeof url, "sqlite:%s/missing-dir/x.db", f->dir);
    opts.url = url;
    err[0] = '\0';
    assert_int_equal(store_open(&opts, &s, err, sizeof err), RC_ESTORE);
    assert_null(s);
    assert_true(strlen(err) > 0);
}

/* PING answers 0. */
static void test_ping(void **state)
{
    struct fixture *f = *state;

    open_store(f, 0, 0, false);
    run_expect(f->s, store_req_create(STORE_PING), 0);
}

/* USER_PUT creates, then updates in place keeping created_at. */
static void test_user_put(void **state)
{
    struct fixture *f = *state;
    struct store_req *r = store_req_create(STORE_USER_PUT);

    open_store(f, 0, 0, false);
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

    sqlite3 *db = ext_open(f->path);

    assert_int_equal(ext_int(db, "SELECT COUNT(*) FROM users", NULL), 1);
    sqlite3_close(db);
}

/* ROOM_CREATE returns the row; a second create conflicts; ROOM_GET finds it. */
static void test_room_create_get_conflict(void **state)
{
    struct fixture *f = *state;
    struct store_req *r = req_room(STORE_ROOM_CREATE, "lobby", "The Lobby");

    open_store(f, 0, 0, false);
    assert_int_equal(run(f->s, r), 0);
    assert_string_equal(r->room.id, "lobby");
    assert_string_equal(r->room.name, "The Lobby");
    assert_int_equal(r->room.last_seq, 0);
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

/* ROOM_DELETE removes the room's messages and memberships, nothing else. */
static void test_room_delete_cascades(void **state)
{
    struct fixture *f = *state;

    open_store(f, 0, 0, false);
    create_room(f->s, "doomed");
    create_room(f->s, "kept");
    put_member(f->s, "doomed", "alice", "owner");
    put_member(f->s, "doomed", "bob", "member");
    put_member(f->s, "kept", "alice", "member");
    for (int i = 0; i < 5; i++) {
        add_msg(f->s, "doomed", "alice", "bye");
        add_msg(f->s, "kept", "alice", "stay");
    }

    run_expect(f->s, req_room(STORE_ROOM_DELETE, "doomed", NULL), 0);
    run_expect(f->s, req_room(STORE_ROOM_GET, "doomed", NULL), RC_ENOTFOUND);
    run_expect(f->s, req_room(STORE_ROOM_DELETE, "doomed", NULL), RC_ENOTFOUND);
    run_expect(f->s, req_room(STORE_ROOM_DELETE, "never-was", NULL), RC_ENOTFOUND);

    sqlite3 *db = ext_open(f->path);

    assert_int_equal(ext_int(db, "SELECT COUNT(*) FROM messages WHERE room_id = ?1", "doomed"), 0);
    assert_int_equal(ext_int(db, "SELECT COUNT(*) FROM memberships WHERE room_id = ?1", "doomed"),
                     0);
    assert_int_equal(ext_int(db, "SELECT COUNT(*) FROM messages WHERE room_id = ?1", "kept"), 5);
    assert_int_equal(ext_int(db, "SELECT COUNT(*) FROM memberships WHERE room_id = ?1", "kept"), 1);
    /* Users outlive their rooms. */
    assert_int_equal(ext_int(db, "SELECT COUNT(*) FROM users", NULL), 2);
    sqlite3_close(db);

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

    open_store(f, 0, 0, false);
    create_room(f->s, "lobby");

    r = req_member(STORE_MEMBER_PUT, "lobby", "alice", "viewer");
    assert_int_equal(run(f->s, r), 0);
    assert_string_equal(r->member.room_id, "lobby");
    assert_string_equal(r->member.user_id, "alice");
    assert_string_equal(r->member.role, "viewer");
    assert_string_equal(r->member.name, "alice"); /* a new user is named by its id */
    store_req_destroy(r);

    sqlite3 *db = ext_open(f->path);

    assert_int_equal(ext_int(db, "SELECT COUNT(*) FROM users WHERE id = ?1", "alice"), 1);

    /* Upsert: the role changes, there is still one membership. */
    r = req_member(STORE_MEMBER_PUT, "lobby", "alice", "editor");
    assert_int_equal(run(f->s, r), 0);
    assert_string_equal(r->member.role, "editor");
    store_req_destroy(r);
    assert_int_equal(ext_int(db, "SELECT COUNT(*) FROM memberships WHERE room_id = ?1", "lobby"),
                     1);
    assert_int_equal(ext_int(db, "SELECT COUNT(*) FROM users", NULL), 1);

    /* An existing user keeps the name it has. */
    r = store_req_create(STORE_USER_PUT);
    r->user_id = strdup("bob");
    r->name = strdup("Bob Builder");
    run_expect(f->s, r, 0);
    r = req_member(STORE_MEMBER_PUT, "lobby", "bob", "member");
    assert_int_equal(run(f->s, r), 0);
    assert_string_equal(r->member.name, "Bob Builder");
    store_req_destroy(r);

    /* Missing room; bad role (refused by the schema, leaves no user behind). */
    run_expect(f->s, req_member(STORE_MEMBER_PUT, "nowhere", "carol", "member"), RC_ENOTFOUND);
    run_expect(f->s, req_member(STORE_MEMBER_PUT, "lobby", "dave", "admin"), RC_EINVAL);
    assert_int_equal(ext_int(db, "SELECT COUNT(*) FROM users WHERE id = ?1", "carol"), 0);
    assert_int_equal(ext_int(db, "SELECT COUNT(*) FROM users WHERE id = ?1", "dave"), 0);
    assert_int_equal(ext_int(db, "SELECT COUNT(*) FROM memberships", NULL), 2);
    sqlite3_close(db);
}

/* MEMBER_DELETE removes one membership; MEMBERS_LIST is sorted by user_id. */
static void test_member_delete_and_list(void **state)
{
    struct fixture *f = *state;
    static const char *const users[] = {"mallory", "carol", "alice", "zed", "bob", "Zoe"};
    static const char *const roles[] = {"viewer", "editor", "owner", "member", "member", "viewer"};
    struct store_req *r;

    open_store(f, 0, 0, false);
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

    open_store(f, 0, 0, false);
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
    /* The refused message used no seq. */
    assert_int_equal(add_msg(f->s, "lobby", "alice", "fourth"), 4);

    /* What the request returned is what was stored. */
    sqlite3 *db = ext_open(f->path);
    char sql[256];

    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM messages WHERE id = %lld AND room_id = 'lobby' AND seq = 1 "
             "AND user_id = 'alice' AND body = ?1 AND inserted_at = '%s'",
             (long long)first_id, first_ts);
    assert_int_equal(ext_int(db, sql, "hello \xc3\xa9"), 1);
    assert_int_equal(ext_int(db, "SELECT COUNT(*) FROM messages WHERE room_id = ?1", "lobby"), 4);
    assert_int_equal(ext_int(db, "SELECT COUNT(*) FROM messages WHERE room_id = ?1", "nowhere"), 0);
    sqlite3_close(db);
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

/* 8 threads x 250 unawaited writes into 2 rooms: seqs 1..N per room, in id order. */
static void test_seq_gapless_concurrent_writers(void **state)
{
    struct fixture *f = *state;
    enum { THREADS = 8, PER = 250, TOTAL = THREADS * PER, PER_ROOM = TOTAL / 2 };
    struct writer_arg args[THREADS];
    pthread_t th[THREADS];
    struct waiter *w;

    open_store(f, 0, 0, true);
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

    /* In the database, per room, ordering by id gives seq 1, 2, 3, … with no gap. */
    sqlite3 *db = ext_open(f->path);

    for (int room = 0; room < 2; room++) {
        sqlite3_stmt *st = NULL;
        int64_t expect = 1;

        assert_int_equal(sqlite3_prepare_v2(db,
                                            "SELECT seq FROM messages WHERE room_id = ?1 "
                                            "ORDER BY id",
                                            -1, &st, NULL),
                         SQLITE_OK);
        sqlite3_bind_text(st, 1, conc_rooms[room], -1, SQLITE_STATIC);
        while (sqlite3_step(st) == SQLITE_ROW) {
            int64_t seq = sqlite3_column_int64(st, 0);

            if (seq != expect) {
                sqlite3_finalize(st);
                fail_msg("room %s: seq %lld where %lld was due", conc_rooms[room], (long long)seq,
                         (long long)expect);
            }
            expect++;
        }
        sqlite3_finalize(st);
        assert_int_equal(expect - 1, PER_ROOM);
        assert_int_equal(ext_int(db, "SELECT last_seq FROM rooms WHERE id = ?1", conc_rooms[room]),
                         PER_ROOM);
    }
    sqlite3_close(db);

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

    open_store(f, BATCH, 0, true);
    create_room(f->s, "lobby");
    /* The metrics are the process's: count what this test adds. */
    int64_t commits_before = metric_value("rowcast_store_batch_size_count");
    int64_t small_before = metric_value("rowcast_store_batch_size_bucket{le=\"64\"}");

    /* Another connection holds the write lock, so the writer cannot commit anything until
     * every request below is queued: however the threads interleave, the writer then
     * finds the whole queue and drains it in batches of at most BATCH. The first request
     * may already sit in the blocked writer as a batch of its own. */
    sqlite3 *lock = ext_open(f->path);

    ext_exec(lock, "BEGIN EXCLUSIVE");
    w = waiter_create();
    for (int i = 0; i <= N; i++) {
        char body[32];

        snprintf(body, sizeof body, "m%d", i);
        reqs[i] = req_msg("lobby", "alice", body);
        submit_counted(f->s, w, reqs[i]);
    }
    /* Nothing can have committed yet. */
    assert_int_equal(ext_int(lock, "SELECT COUNT(*) FROM messages", NULL), 0);
    ext_exec(lock, "COMMIT");
    wait_all(w);
    assert_int_equal(w->done_calls, N + 1);
    for (int i = 0; i <= N; i++) {
        if (reqs[i]->rc != 0)
            fail_msg("request %d: rc %d (%s)", i, reqs[i]->rc, rc_strerror(reqs[i]->rc));
        assert_int_equal(reqs[i]->msg.seq, i + 1);
        store_req_destroy(reqs[i]);
    }

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
    assert_int_equal(f->col.n, N + 1);
    assert_collected_in_id_order(&f->col);
    sqlite3_close(lock);
    waiter_destroy(w);
}

/* Failing requests in a batch get their own rc; the others still commit. */
static void test_failed_request_does_not_affect_batch(void **state)
{
    struct fixture *f = *state;
    enum { N = 8 };
    struct store_req *reqs[N];
    static const int want[N] = {
        0, RC_ENOTFOUND, 0, RC_ECONFLICT, RC_EINVAL, RC_ENOTFOUND, RC_ENOTFOUND, 0};
    struct waiter *w;

    open_store(f, 100, 0, true);
    create_room(f->s, "lobby");
    put_member(f->s, "lobby", "alice", "owner");

    sqlite3 *lock = ext_open(f->path);

    ext_exec(lock, "BEGIN EXCLUSIVE");
    reqs[0] = req_msg("lobby", "alice", "first");
    reqs[1] = req_msg("nowhere", "alice", "lost");
    reqs[2] = req_msg("lobby", "alice", "second");
    reqs[3] = req_room(STORE_ROOM_CREATE, "lobby", "again");
    reqs[4] = req_member(STORE_MEMBER_PUT, "lobby", "mallory", "superuser");
    reqs[5] = req_member(STORE_MEMBER_PUT, "nowhere", "carol", "member");
    reqs[6] = req_member(STORE_MEMBER_DELETE, "lobby", "nobody", NULL);
    reqs[7] = req_msg("lobby", "alice", "third");
    w = waiter_create();
    for (int i = 0; i < N; i++)
        submit_counted(f->s, w, reqs[i]);
    ext_exec(lock, "COMMIT");
    wait_all(w);
    assert_int_equal(w->done_calls, N);
    for (int i = 0; i < N; i++)
        if (reqs[i]->rc != want[i])
            fail_msg("request %d: rc %d (%s), want %d (%s)", i, reqs[i]->rc,
                     rc_strerror(reqs[i]->rc), want[i], rc_strerror(want[i]));
    /* The good messages are consecutive: the failed one used no seq. */
    assert_int_equal(reqs[0]->msg.seq, 1);
    assert_int_equal(reqs[2]->msg.seq, 2);
    assert_int_equal(reqs[7]->msg.seq, 3);

    assert_int_equal(ext_int(lock, "SELECT COUNT(*) FROM messages", NULL), 3);
    assert_int_equal(ext_int(lock, "SELECT last_seq FROM rooms WHERE id = 'lobby'", NULL), 3);
    assert_int_equal(ext_int(lock, "SELECT name = 'lobby' FROM rooms WHERE id = 'lobby'", NULL), 1);
    /* The failed member puts left no user behind. */
    assert_int_equal(ext_int(lock, "SELECT COUNT(*) FROM users WHERE id = 'mallory'", NULL), 0);
    assert_int_equal(ext_int(lock, "SELECT COUNT(*) FROM users WHERE id = 'carol'", NULL), 0);
    assert_int_equal(ext_int(lock, "SELECT COUNT(*) FROM memberships", NULL), 1);

    assert_int_equal(wait_collected(&f->col, 3, WAIT_MS), 3);
    close_store(f);
    assert_int_equal(f->col.n, 3);
    assert_string_equal(f->col.v[0].body, "first");
    assert_string_equal(f->col.v[1].body, "second");
    assert_string_equal(f->col.v[2].body, "third");
    for (int i = 0; i < N; i++)
        store_req_destroy(reqs[i]);
    sqlite3_close(lock);
    waiter_destroy(w);
}

/* Rows inserted by another connection reach the listener once, in id order. */
static void test_listener_sees_other_process(void **state)
{
    struct fixture *f = *state;
    sqlite3 *ext;

    open_store(f, 0, 10, true);
    create_room(f->s, "lobby");
    ext = ext_open(f->path);

    add_msg(f->s, "lobby", "alice", "mine-1");
    assert_int_equal(wait_collected(&f->col, 1, WAIT_MS), 1);

    /* A row written by another process, with no store write after it: only the
     * data_version poll can find it. */
    int64_t t0 = now_ms();

    assert_int_equal(ext_insert_msg(ext, "lobby", "cron", "theirs-1"), SQLITE_DONE);
    if (wait_collected(&f->col, 2, 5000) != 2)
        fail_msg("a message inserted by another connection was not delivered within 5 s "
                 "(data_poll_ms = 10)");
    int64_t took = now_ms() - t0;

    /* Several at once, in one transaction. */
    ext_exec(ext, "BEGIN");
    for (int i = 0; i < 3; i++)
        assert_int_equal(ext_insert_msg(ext, "lobby", "cron", "theirs-batch"), SQLITE_DONE);
    ext_exec(ext, "COMMIT");
    assert_int_equal(wait_collected(&f->col, 5, 5000), 5);

    /* Ours and theirs interleaved. */
    add_msg(f->s, "lobby", "alice", "mine-2");
    assert_int_equal(ext_insert_msg(ext, "lobby", "cron", "theirs-2"), SQLITE_DONE);
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
    sqlite3_close(ext);
}

/* Keeps the store's writer busy with notifications (not messages: their commits must
 * not be what makes the store look at the messages table) until told to stop. */
struct busy_arg {
    struct store *s;
    atomic_bool stop;
    size_t sent;
};

static void *busy_thread(void *p)
{
    struct busy_arg *a = p;
    struct waiter *w = waiter_create();
    struct store_req *reqs[16];

    while (!atomic_load(&a->stop)) {
        for (int i = 0; i < 16; i++) {
            reqs[i] = store_req_create(STORE_NOTIFY_ADD);
            reqs[i]->user_id = dup_or_null("load");
            reqs[i]->body = dup_or_null("busy");
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

    open_store(f, 0, 10, true);
    create_room(f->s, "lobby");
    sqlite3 *ext = ext_open(f->path);

    a.s = f->s;
    assert_int_equal(pthread_create(&th, NULL, busy_thread, &a), 0);
    while (ext_int(ext, "SELECT COUNT(*) FROM notifications", NULL) < 200) /* load is on */
        usleep(1000);
    assert_int_equal(ext_insert_msg(ext, "lobby", "cron", "theirs-busy"), SQLITE_DONE);
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
    sqlite3_close(ext);
}

/* Messages committed before open are not delivered again. */
static void test_listener_skips_rows_before_open(void **state)
{
    struct fixture *f = *state;

    open_store(f, 0, 0, false);
    create_room(f->s, "lobby");
    add_msg(f->s, "lobby", "alice", "old-1");
    add_msg(f->s, "lobby", "alice", "old-2");
    close_store(f);

    /* Everything committed before open counts as delivered. The listener may also be set
     * after open, before the first write. */
    open_store(f, 0, 5, false);
    store_set_listener(f->s, collect, &f->col);
    assert_int_equal(add_msg(f->s, "lobby", "alice", "new"), 3);
    assert_int_equal(wait_collected(&f->col, 1, WAIT_MS), 1);
    close_store(f);
    assert_int_equal(f->col.n, 1);
    assert_string_equal(f->col.v[0].body, "new");
    assert_int_equal(f->col.v[0].seq, 3);
}

/* A plain INSERT without seq from another connection gets the next seq. */
static void test_plain_insert_gets_next_seq(void **state)
{
    struct fixture *f = *state;

    open_store(f, 0, 0, false);
    create_room(f->s, "lobby");
    create_room(f->s, "other");
    assert_int_equal(add_msg(f->s, "lobby", "alice", "a"), 1);
    assert_int_equal(add_msg(f->s, "lobby", "alice", "b"), 2);

    sqlite3 *ext = ext_open(f->path);

    assert_int_equal(ext_insert_msg(ext, "lobby", "cron", "c"), SQLITE_DONE);
    assert_int_equal(ext_int(ext, "SELECT seq FROM messages WHERE id = last_insert_rowid()", NULL),
                     3);
    assert_int_equal(ext_insert_msg(ext, "other", "cron", "x"), SQLITE_DONE);
    assert_int_equal(ext_int(ext, "SELECT seq FROM messages WHERE id = last_insert_rowid()", NULL),
                     1);
    assert_int_equal(ext_int(ext, "SELECT last_seq FROM rooms WHERE id = 'lobby'", NULL), 3);
    /* The store continues after it. */
    assert_int_equal(add_msg(f->s, "lobby", "alice", "d"), 4);
    /* A row for a missing room is refused by the schema. */
    assert_int_equal(ext_insert_msg(ext, "nowhere", "cron", "x"), SQLITE_CONSTRAINT);
    assert_non_null(strstr(sqlite3_errmsg(ext), "no such room"));
    assert_int_equal(ext_int(ext, "SELECT COUNT(*) FROM messages WHERE seq IS NULL", NULL), 0);
    sqlite3_close(ext);
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

    open_store(f, 0, 0, false);
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
    /* Limit 0 returns nothing. */
    assert_page(f->s, P, NULL, -1, -1, 0, 1, 0);

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

    open_store(f, 0, 0, false);
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
    assert_string_equal(r->member.role, "editor");
    assert_string_equal(r->member.user_id, "alice");
    assert_int_equal(r->n_msgs, 3);
    assert_int_equal(r->msgs[0].seq, 3);
    assert_int_equal(r->msgs[2].seq, 5);
    assert_string_equal(r->msgs[2].body, "body 5");
    store_req_destroy(r);

    /* Recovery: exactly the messages after last_seq. */
    assert_page(f->s, J, "bob", 2, -1, 50, 3, 5);
    assert_page(f->s, J, "bob", 5, -1, 50, 1, 0);
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

/* A read submitted after a write completed sees that write. */
static void test_reads_see_committed_writes(void **state)
{
    struct fixture *f = *state;
    struct store_req *r;

    /* A write's completion runs after its commit, so a read submitted after it must see
     * it, whatever reads ran before on the reader connection. */
    open_store(f, 0, 0, false);
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

/* store_close finishes every queued request before it returns. */
static void test_close_completes_queued(void **state)
{
    struct fixture *f = *state;
    enum { N = 700 }; /* every 7th a read, the rest writes */
    static struct store_req *reqs[N];
    struct waiter *w;

    open_store(f, 50, 0, false);
    create_room(f->s, "lobby");
    w = waiter_create();
    /* The writer is stuck behind another connection's lock while everything is queued, and
     * is still working through the queue (in batches of 50) when close is called. */
    sqlite3 *lock = ext_open(f->path);

    ext_exec(lock, "BEGIN EXCLUSIVE");
    for (int i = 0; i < N; i++) {
        if (i % 7 == 3)
            reqs[i] = req_page(STORE_MESSAGES_PAGE, "lobby", NULL, -1, -1, 5);
        else
            reqs[i] = req_msg("lobby", "alice", "queued");
        submit_counted(f->s, w, reqs[i]);
    }
    ext_exec(lock, "COMMIT");
    sqlite3_close(lock);
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
    sqlite3 *db = ext_open(f->path);

    assert_int_equal(n_writes, N - N / 7);
    assert_int_equal(ext_int(db, "SELECT COUNT(*) FROM messages", NULL), n_writes);
    assert_int_equal(ext_int(db, "SELECT MAX(seq) FROM messages", NULL), n_writes);
    sqlite3_close(db);
    waiter_destroy(w);
}

/* store_close and store_req_destroy accept NULL. */
static void test_close_null(void **state)
{
    (void)state;
    store_close(NULL);
    store_req_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrate_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_applies_migrations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_bad_urls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_put, setup, teardown),
        cmocka_unit_test_setup_teardown(test_room_create_get_conflict, setup, teardown),
        cmocka_unit_test_setup_teardown(test_room_delete_cascades, setup, teardown),
        cmocka_unit_test_setup_teardown(test_member_put_creates_user_and_upserts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_member_delete_and_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_message_add, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seq_gapless_concurrent_writers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_batches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_request_does_not_affect_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listener_sees_other_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listener_sees_other_process_while_busy, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_listener_skips_rows_before_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_insert_gets_next_seq, setup, teardown),
        cmocka_unit_test_setup_teardown(test_messages_page, setup, teardown),
        cmocka_unit_test_setup_teardown(test_join_room, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reads_see_committed_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_completes_queued, setup, teardown),
        cmocka_unit_test(test_close_null),
    };

    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
