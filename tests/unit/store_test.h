/* store_test.h - the harness of the store's unit tests. One suite, tests/unit/test_store:
 * test_store.c holds the cases every backend must pass (run once per backend), the
 * SQLite backend and its own cases; test_store_pg.c the PostgreSQL backend and its own
 * cases; test_store_life.c and test_store_broadcast.c more cases of every backend. Each case gets a fresh database of its backend. The store completes requests on
 * its own threads; the cases block on condition variables until the completions arrive
 * (the server never does). Everything here runs on the test's thread unless it says
 * otherwise. */
#ifndef RC_TEST_STORE_TEST_H
#define RC_TEST_STORE_TEST_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "migrations.h"
#include "store.h"

/* How long a case waits for completions before it fails instead of hanging. */
#define WAIT_MS 60000

/* Completions still expected by a case; done callbacks count down. */
struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t pending;
    size_t done_calls;
    bool overrun; /* done called more often than requests were submitted */
};

/* One room change as the listener saw it (body: the payload's, "" when it has none). */
struct seen {
    int64_t id, seq, version;
    char room_id[32];
    char user_id[32];
    char body[64];
    char event[32];
    char payload[512];
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

/* What a statement run by another client failed with. */
struct sql_error {
    char code[32]; /* PostgreSQL: the SQLSTATE; SQLite: sqlite3_errstr() of the result */
    char msg[512];
};

/* A count the schema must show after migrating: sql returns want. */
struct schema_check {
    const char *sql;
    int64_t want;
};

struct fixture;

/* One backend under test: how to make it a database, how another client talks to that
 * database, and what differs between the backends where a case must know. */
struct backend {
    const struct store_ops *ops;
    const struct migration *migrations;
    const char *dialect;               /* its migrations: the .sql files of migrations/DIALECT */
    const struct schema_check *schema; /* ends with {NULL, 0} */
    /* Run by another client, keeps the store's writer from committing until COMMIT. */
    const char *hold_writer_sql;
    const char *iso_inserted_at; /* SQL for a row's inserted_at as YYYY-MM-DDTHH:MM:SS.mmmZ */
    const char *old_inserted_at; /* SQL literal for 2001-02-03T04:05:06.789Z */
    const char *no_room_code;    /* sql_error.code of a row for a missing room */
    const char *bad_seq_code;    /* ... of a message row whose given seq is not the next */
    /* Each commit reaches the listeners in one call per table (PostgreSQL); else a call
     * may carry several commits (SQLite's sync thread). */
    bool call_per_commit;
    /* DOC_EDIT refuses data that is not JSON with RC_EINVAL; SQLite stores it as given. */
    bool docop_json_checked;
    /* Makes a fresh database and sets f->url; 0, or -1 with the reason on stderr. */
    int (*setup)(struct fixture *f);
    /* Removes the database (the store is closed). */
    void (*teardown)(struct fixture *f);
    /* Another client of the database at url: a handle, or NULL with e filled. */
    void *(*connect)(const char *url, struct sql_error *e);
    void (*disconnect)(void *conn);
    /* Runs SQL (several statements allowed): true, or false with e filled. */
    bool (*exec)(void *conn, const char *sql, struct sql_error *e);
    /* Runs a query for one integer with an optional text parameter $1. */
    bool (*query_int)(void *conn, const char *sql, const char *arg, int64_t *v,
                      struct sql_error *e);
    /* Waits until the writer waits for a lock another client holds; NULL when that cannot
     * be seen from outside (SQLite's writer sleeps in its busy handler). */
    void (*wait_writer_blocked)(struct fixture *f);
};

extern const struct backend backend_sqlite;
extern const struct backend backend_pg;

/* Another client of a case's database (another process, another node, psql). */
struct client {
    const struct backend *be;
    void *conn;
};

/* One case's state, made by store_setup with the backend given as its initial state. */
struct fixture {
    const struct backend *be;
    char dir[64], path[128]; /* SQLite: the database's directory and file */
    char db[64];             /* PostgreSQL: the case's database */
    char url[700];
    struct store *s;
    struct client *ext; /* ext(f), connected on first use */
    struct collector col;
};

/* cmocka setup and teardown of every backend case: *state is the backend on entry and
 * the fixture after setup; teardown closes what the case left open and removes the
 * database. setup returns -1 (a failed case) when the backend has no database. */
int store_setup(void **state);
int store_teardown(void **state);

/* Absolute deadline ms from now on the realtime clock, for pthread_cond_timedwait. */
struct timespec deadline(int ms);
/* Monotonic milliseconds. */
int64_t now_ms(void);
/* Sleeps ms milliseconds (only to poll a database's state, never to wait for the store). */
void sleep_ms(int ms);

/* A completion counter on the heap: when a wait times out the case fails while requests
 * are still in flight, and their late completions must not land on a dead stack. */
struct waiter *waiter_create(void);
/* Frees a waiter whose requests have all completed. */
void waiter_destroy(struct waiter *w);
/* Submits req with w as its completion counter. Any thread. */
void submit_counted(struct store *s, struct waiter *w, struct store_req *req);
/* Blocks until every request counted on w has completed; fails after ms. */
void wait_all_ms(struct waiter *w, int ms);
/* wait_all_ms with WAIT_MS. */
void wait_all(struct waiter *w);
/* Submits req and waits for its completion; returns req->rc. */
int run(struct store *s, struct store_req *req);
/* Runs a request whose rc is expected to be want, then frees it. */
void run_expect(struct store *s, struct store_req *req, int want);

/* Request constructors; the strings are copied (store_req_destroy frees them). */
char *dup_or_null(const char *s);
/* ROOM_CREATE/GET/DELETE, MESSAGES_PAGE with its default bounds. */
struct store_req *req_room(enum store_op op, const char *room_id, const char *name);
/* MEMBER_PUT/DELETE, MEMBERS_LIST. */
struct store_req *req_member(enum store_op op, const char *room_id, const char *user_id,
                             const char *role);
/* MESSAGE_ADD. */
struct store_req *req_msg(const char *room_id, const char *user_id, const char *body);
/* NOTIFY_ADD (data: JSON text or NULL). */
struct store_req *req_notif(const char *user_id, const char *message, const char *data);
/* DOC_EDIT or BROADCAST_ADD: room_id, user_id, name (operation, event) and data. */
struct store_req *req_named(enum store_op op, const char *room_id, const char *user_id,
                            const char *name, const char *data);
/* DOC_EDIT. */
struct store_req *req_docop(const char *room_id, const char *user_id, const char *op,
                            const char *data);
/* MESSAGES_PAGE, JOIN_ROOM or DOC_JOIN with its bounds. */
struct store_req *req_page(enum store_op op, const char *room_id, const char *user_id,
                           int64_t after_seq, int64_t before_seq, int limit);

/* Creates a room named by its id; fails the case on error. */
void create_room(struct store *s, const char *id);
/* Adds or updates a membership; fails the case on error. */
void put_member(struct store *s, const char *room, const char *user, const char *role);
/* Adds a message and returns its seq; fails the case on error. */
int64_t add_msg(struct store *s, const char *room, const char *user, const char *body);
/* Asserts "YYYY-MM-DDTHH:MM:SS.mmmZ". */
void assert_iso8601(const char *ts);

/* Which listeners open_store installs (all of them get the fixture's collector). */
enum listen { NO_LISTENER, MSG_LISTENER, ALL_LISTENERS };
/* Opens the fixture's store through store_open and checks it is the backend's. */
void open_store(struct fixture *f, int batch_max, int data_poll_ms, enum listen listen);
/* Closes the fixture's store (the listeners cannot run afterwards). */
void close_store(struct fixture *f);
/* Number of the backend's migrations. */
int n_migrations(const struct backend *be);

/* Listeners recording into the collector in arg; they run on a store thread. */
void collect(const struct store_change *changes, size_t n, void *arg);
void collect_notifs(const struct store_notif *v, size_t n, void *arg);
void collect_docops(const struct store_docop *v, size_t n, void *arg);
/* Waits until the collector holds at least n messages or ms pass; returns the count. */
size_t wait_collected(struct collector *c, size_t n, int ms);
/* Listener calls so far. */
size_t collected_calls(struct collector *c);
/* Asserts the collector's ids strictly increase (exactly once, in id order). */
void assert_collected_in_id_order(struct collector *c);

/* Another client of the database at url (of backend be) / of the case's database;
 * fails the case when it cannot connect. ext_close accepts NULL. */
struct client *ext_connect_url(const struct backend *be, const char *url);
struct client *ext_connect(struct fixture *f);
void ext_close(struct client *c);
/* The fixture's own other client, connected on first use, closed by teardown. */
struct client *ext(struct fixture *f);
/* Runs SQL (several statements allowed); fails the case on error. */
void ext_exec(struct client *c, const char *sql);
/* Runs SQL expected to fail; fails the case if it succeeds, else fills e. */
void ext_fail(struct client *c, const char *sql, struct sql_error *e);
/* Runs a query returning one integer, with an optional text parameter $1. */
int64_t ext_int(struct client *c, const char *sql, const char *arg);

/* Another client that keeps the store's writer from committing until release_writer. */
struct client *hold_writer(struct fixture *f);
/* Commits and closes what hold_writer opened. */
void release_writer(struct client *c);
/* Waits until the store's writer waits for the held lock, where the backend can tell. */
void wait_writer_blocked(struct fixture *f);

/* The life of a message (test_store_life.c): LIFE_CASES, what every backend must do, and
 * what only SQLite does (its listener gets the changes other processes commit). */
/* clang-format off */
#define LIFE_CASES(X, be)                            \
    X(be, test_life_reply_to),                       \
    X(be, test_life_edit),                           \
    X(be, test_life_delete),                         \
    X(be, test_life_reactions),                      \
    X(be, test_life_read_mark),                      \
    X(be, test_life_changes_by_version),             \
    X(be, test_life_replies),                        \
    X(be, test_life_user_rooms),                     \
    X(be, test_life_listener_own_changes),           \
    X(be, test_life_sql_writer),                     \
    X(be, test_life_listener_starts_at_open),        \
    X(be, test_life_message_json)
/* clang-format on */
/* Opens the case's store, its listener the case's collector, with room lobby (alice owner,
 * bob member, carol viewer) and room other (bob member). */
void life_scene(struct fixture *f);
void test_life_reply_to(void **state);
void test_life_edit(void **state);
void test_life_delete(void **state);
void test_life_reactions(void **state);
void test_life_read_mark(void **state);
void test_life_changes_by_version(void **state);
void test_life_replies(void **state);
void test_life_user_rooms(void **state);
void test_life_listener_own_changes(void **state);
void test_life_sql_writer(void **state);
void test_life_listener_starts_at_open(void **state);
void test_life_message_json(void **state);
void test_life_sql_writer_reaches_listener(void **state);

/* Broadcasts on a room's private channel (test_store_broadcast.c), on every backend. */
/* clang-format off */
#define BROADCAST_CASES(X, be)                       \
    X(be, test_broadcast_add),                       \
    X(be, test_broadcast_listener),                  \
    X(be, test_broadcast_join),                      \
    X(be, test_broadcast_sql),                       \
    X(be, test_broadcast_room_delete)
/* clang-format on */
void test_broadcast_add(void **state);
void test_broadcast_listener(void **state);
void test_broadcast_join(void **state);
void test_broadcast_sql(void **state);
void test_broadcast_room_delete(void **state);

/* The cases only PostgreSQL has (test_store_pg.c). */
void test_migrate_concurrent(void **state);
void test_notify_sql_matches_migration(void **state);
void test_open_errors_pg(void **state);
void test_room_delete_races_insert(void **state);
void test_seq_in_one_transaction(void **state);
void test_bulk_insert_select(void **state);
void test_writes_use_indexes(void **state);
void test_sessions_plan_without_jit(void **state);
void test_sessions_plan_generic(void **state);
void test_notification_ids_in_commit_order(void **state);
void test_life_in_one_batch(void **state);
void test_message_run_between_trigger_writes(void **state);
void test_notify_triggers(void **state);
void test_killed_connection(void **state);
void test_database_unreachable(void **state);

#endif
