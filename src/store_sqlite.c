/* store_sqlite.c - the embedded store: SQLite in WAL mode, one writer thread that
 * group-commits, a sync thread that makes commits durable, acknowledges them and
 * delivers the new rows, one reader thread for queries.
 *
 * Commit and fsync are pipelined: the writer commits a batch into the WAL without
 * waiting for the disk (synchronous=NORMAL) and goes on with the next batch while the
 * sync thread runs one fdatasync() of the WAL for every batch committed so far. Nothing
 * is acknowledged or broadcast before that fdatasync() returns, so with --sqlite-sync
 * full an "ok" still means the row survives a power loss. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "migrations.h"
#include "metrics.h"
#include "store.h"
#include "store_queue.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/thread.h"
#include "util/xmalloc.h"

/* Rows read per query when looking for newly committed rows. */
#define SCAN_CHUNK 512

/* Prepared statements, one set per connection. */
enum stmt_id {
    ST_USER_PUT,
    ST_ROOM_CREATE,
    ST_ROOM_GET,
    ST_ROOM_DELETE,
    ST_ROOM_EXISTS,
    ST_ROOM_VERSION,
    ST_USER_ENSURE,
    ST_MEMBER_PUT,
    ST_MEMBER_GET,
    ST_MEMBER_DELETE,
    ST_MEMBERS_LIST,
    ST_MSG_INSERT,
    ST_MSGS_AFTER,
    ST_MSGS_BEFORE,
    ST_MSGS_BETWEEN,
    ST_MSGS_LATEST,
    ST_MSG_STATE,
    ST_MSG_EXISTS,
    ST_MSG_EDIT,
    ST_MSG_DELETE,
    ST_REACTION_PUT,
    ST_REACTION_DELETE,
    ST_READ_MARK,
    ST_UNREAD,
    ST_REPLIES,
    ST_USER_ROOMS,
    ST_CHANGES_AFTER,
    ST_CHANGE_SCAN,
    ST_BROADCAST_ADD,
    ST_BROADCASTS_SINCE,
    ST_PING,
    ST_NOTIF_ADD,
    ST_NOTIF_UNREAD,
    ST_NOTIF_READ,
    ST_NOTIF_SCAN,
    ST_DOCOP_ADD,
    ST_DOCOPS_AFTER,
    ST_DOCOPS_LATEST,
    ST_DOCOP_SCAN,
    ST_SNAPSHOT,
    ST_COUNT
};

/* A message as read_msg() reads it (m: the messages row): its columns, the replies that
 * are not deleted, and the reactions counted per emoji as JSON text (NULL when none). */
#define MSG_COLS                                                                                   \
    "m.id, m.room_id, m.seq, m.user_id, m.body, m.inserted_at, m.reply_to, "                       \
    "(SELECT count(*) FROM messages r WHERE r.room_id = m.room_id AND r.reply_to = m.seq "         \
    "AND r.deleted_at IS NULL), m.edited_at, m.deleted_at, "                                       \
    "(SELECT NULLIF(json_group_array(json_object('emoji', emoji, 'count', n)), '[]') "             \
    "FROM (SELECT emoji, count(*) AS n FROM reactions "                                            \
    "WHERE room_id = m.room_id AND seq = m.seq GROUP BY emoji ORDER BY emoji))"
#define MSG_N_COLS 11

/* A room_changes row as read_change() reads it. */
#define CHANGE_COLS "id, room_id, version, seq, user_id, event, payload, inserted_at"

/* A membership (mb) with its room (r) and read state, as read_user_room() reads it: room
 * id, name, role, last_seq, last_read_seq, and unread: the messages after the cursor that
 * are neither the member's own nor deleted. */
#define READ_STATE                                                                                 \
    "r.id, r.name, mb.role, r.last_seq, mb.last_read_seq, "                                        \
    "(SELECT count(*) FROM messages u WHERE u.room_id = r.id AND u.seq > mb.last_read_seq "        \
    "AND u.user_id <> mb.user_id AND u.deleted_at IS NULL) "                                       \
    "FROM memberships mb JOIN rooms r ON r.id = mb.room_id"

static const char *const stmt_sql[ST_COUNT] = {
    [ST_USER_PUT] = "INSERT INTO users(id, name, avatar_url) VALUES (?1, ?2, ?3) "
                    "ON CONFLICT(id) DO UPDATE SET name = excluded.name, "
                    "avatar_url = excluded.avatar_url "
                    "RETURNING id, name, avatar_url, created_at",
    [ST_ROOM_CREATE] = "INSERT INTO rooms(id, name) VALUES (?1, ?2) "
                       "RETURNING id, name, last_seq, created_at, doc_last_seq, version",
    [ST_ROOM_GET] = "SELECT id, name, last_seq, created_at, doc_last_seq, version FROM rooms "
                    "WHERE id = ?1",
    [ST_ROOM_DELETE] = "DELETE FROM rooms WHERE id = ?1",
    [ST_ROOM_EXISTS] = "SELECT 1 FROM rooms WHERE id = ?1",
    [ST_ROOM_VERSION] = "SELECT version, last_seq FROM rooms WHERE id = ?1",
    [ST_USER_ENSURE] = "INSERT INTO users(id, name) VALUES (?1, ?1) ON CONFLICT(id) DO NOTHING",
    [ST_MEMBER_PUT] = "INSERT INTO memberships(room_id, user_id, role) VALUES (?1, ?2, ?3) "
                      "ON CONFLICT(room_id, user_id) DO UPDATE SET role = excluded.role",
    [ST_MEMBER_GET] = "SELECT m.role, COALESCE(u.name, m.user_id), u.avatar_url, m.last_read_seq "
                      "FROM memberships m "
                      "LEFT JOIN users u ON u.id = m.user_id "
                      "WHERE m.room_id = ?1 AND m.user_id = ?2",
    [ST_MEMBER_DELETE] = "DELETE FROM memberships WHERE room_id = ?1 AND user_id = ?2",
    [ST_MEMBERS_LIST] = "SELECT m.user_id, m.role, COALESCE(u.name, m.user_id) "
                        "FROM memberships m LEFT JOIN users u ON u.id = m.user_id "
                        "WHERE m.room_id = ?1 ORDER BY m.user_id",
    [ST_MSG_INSERT] = "INSERT INTO messages(room_id, user_id, body, inserted_at, reply_to, seq) "
                      "VALUES (?1, ?2, ?3, ?4, NULLIF(?5, 0), "
                      "(SELECT last_seq + 1 FROM rooms WHERE id = ?1))",
    [ST_MSGS_AFTER] = "SELECT " MSG_COLS " FROM messages m "
                      "WHERE m.room_id = ?1 AND m.seq > ?2 ORDER BY m.seq LIMIT ?3",
    [ST_MSGS_BEFORE] = "SELECT * FROM (SELECT " MSG_COLS " FROM messages m "
                       "WHERE m.room_id = ?1 AND m.seq < ?2 "
                       "ORDER BY m.seq DESC LIMIT ?3) ORDER BY seq",
    [ST_MSGS_BETWEEN] = "SELECT " MSG_COLS " FROM messages m WHERE m.room_id = ?1 "
                        "AND m.seq > ?2 AND m.seq < ?4 ORDER BY m.seq LIMIT ?3",
    [ST_MSGS_LATEST] = "SELECT * FROM (SELECT " MSG_COLS " FROM messages m "
                       "WHERE m.room_id = ?1 ORDER BY m.seq DESC LIMIT ?3) ORDER BY seq",
    /* a message with the room's version and the role of the user ?3: what an edit,
     * delete or reaction checks before it writes, and reads back after */
    [ST_MSG_STATE] = "SELECT " MSG_COLS ", r.version, "
                     "(SELECT role FROM memberships WHERE room_id = ?1 AND user_id = ?3) "
                     "FROM messages m JOIN rooms r ON r.id = m.room_id "
                     "WHERE m.room_id = ?1 AND m.seq = ?2",
    [ST_MSG_EXISTS] = "SELECT 1 FROM messages WHERE room_id = ?1 AND seq = ?2",
    /* the triggers of 0003_message_life.sql set edited_at, erase the body, log the change */
    [ST_MSG_EDIT] = "UPDATE messages SET body = ?3 WHERE room_id = ?1 AND seq = ?2",
    [ST_MSG_DELETE] = "UPDATE messages SET deleted_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
                      "WHERE room_id = ?1 AND seq = ?2 AND deleted_at IS NULL",
    [ST_REACTION_PUT] = "INSERT INTO reactions(room_id, seq, emoji, user_id) "
                        "VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
    [ST_REACTION_DELETE] = "DELETE FROM reactions "
                           "WHERE room_id = ?1 AND seq = ?2 AND emoji = ?3 AND user_id = ?4",
    [ST_READ_MARK] = "UPDATE memberships SET last_read_seq = max(last_read_seq, "
                     "min(?3, (SELECT last_seq FROM rooms WHERE id = ?1))) "
                     "WHERE room_id = ?1 AND user_id = ?2 RETURNING last_read_seq, role",
    [ST_UNREAD] = "SELECT " READ_STATE " WHERE mb.room_id = ?1 AND mb.user_id = ?2",
    [ST_REPLIES] = "SELECT " MSG_COLS " FROM messages m WHERE m.room_id = ?1 "
                   "AND m.reply_to = ?2 AND m.seq > ?3 ORDER BY m.seq LIMIT ?4",
    [ST_USER_ROOMS] = "SELECT " READ_STATE " WHERE mb.user_id = ?1 ORDER BY r.id",
    [ST_CHANGES_AFTER] = "SELECT " CHANGE_COLS " FROM room_changes "
                         "WHERE room_id = ?1 AND version > ?2 ORDER BY version LIMIT ?3",
    [ST_CHANGE_SCAN] = "SELECT " CHANGE_COLS " FROM room_changes "
                       "WHERE id > ?1 ORDER BY id LIMIT ?2",
    /* the trigger of 0004_broadcasts.sql checks it and logs it with the next version */
    [ST_BROADCAST_ADD] = "INSERT INTO room_broadcasts(room_id, user_id, event, payload) "
                         "VALUES (?1, ?2, ?3, ?4)",
    /* ?3: the time as inserted_at writes it. By the room's broadcasts from that time on
     * (+version keeps the planner off the version index, which would read the room's
     * whole log from since_version to find a recent time) */
    [ST_BROADCASTS_SINCE] = "SELECT " CHANGE_COLS " FROM room_changes "
                            "WHERE room_id = ?1 AND event = 'broadcast' AND +version > ?2 "
                            "AND inserted_at >= ?3 ORDER BY version LIMIT ?4",
    [ST_PING] = "SELECT 1",
    [ST_NOTIF_ADD] = "INSERT INTO notifications(user_id, payload, inserted_at) VALUES (?1, ?2, ?3) "
                     "RETURNING id",
    [ST_NOTIF_UNREAD] = "SELECT id, user_id, payload, inserted_at FROM notifications "
                        "WHERE user_id = ?1 AND read_at IS NULL ORDER BY id LIMIT ?2",
    [ST_NOTIF_READ] = "UPDATE notifications SET read_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
                      "WHERE id = ?1 AND user_id = ?2",
    [ST_NOTIF_SCAN] = "SELECT id, user_id, payload, inserted_at FROM notifications "
                      "WHERE id > ?1 ORDER BY id LIMIT ?2",
    [ST_DOCOP_ADD] = "INSERT INTO document_ops(room_id, user_id, operation, data, inserted_at, seq) "
                     "VALUES (?1, ?2, ?3, ?4, ?5, (SELECT doc_last_seq + 1 FROM rooms "
                     "WHERE id = ?1)) RETURNING id, seq",
    [ST_DOCOPS_AFTER] = "SELECT id, room_id, seq, user_id, operation, data, inserted_at "
                        "FROM document_ops WHERE room_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    [ST_DOCOPS_LATEST] = "SELECT * FROM (SELECT id, room_id, seq, user_id, operation, data, "
                         "inserted_at FROM document_ops WHERE room_id = ?1 "
                         "ORDER BY seq DESC LIMIT ?3) ORDER BY seq",
    [ST_DOCOP_SCAN] = "SELECT id, room_id, seq, user_id, operation, data, inserted_at "
                      "FROM document_ops WHERE id > ?1 ORDER BY id LIMIT ?2",
    /* any read of the database: inside BEGIN it fixes the transaction's snapshot */
    [ST_SNAPSHOT] = "SELECT 1 FROM sqlite_schema LIMIT 1",
};

/* One connection with its statement cache. */
struct conn {
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT];
};

/* A batch the writer has committed, on its way to the sync thread. */
struct committed {
    struct committed *next;
    struct store_req *head;
    size_t n;
    int mask;   /* SCAN_* tables it wrote to */
    int64_t t0; /* when its transaction began, for the commit latency */
};

struct sqlite_store {
    struct store base;
    char *path;
    int batch_max;
    int data_poll_ms;
    bool sync_full;
    struct conn w, r, d; /* writer, reader, delivery (sync thread) */
    struct store_queue wq, rq;
    pthread_t writer, reader, syncer;
    bool threads_started;
    /* writer → sync thread */
    pthread_mutex_t smu;
    pthread_cond_t scv;
    struct committed *c_head, *c_tail;
    bool external; /* the writer saw commits by another process */
    bool writer_done;
    /* fdatasync() of this descriptor makes every committed WAL frame durable; -1 when
     * the writer's own synchronous=FULL commits do it instead */
    int wal_fd;
    /* The writer counts each COMMIT before it starts and after it has written its WAL
     * frames; the sync thread, how many finished ones an fdatasync() has covered. */
    atomic_llong commits_begun, commits_done;
    long long commits_synced;
    store_change_listener listener;
    void *listener_arg;
    int64_t delivered_change_id; /* highest room_changes id handed to the listener */
    int64_t delivered_notif_id, delivered_docop_id;
    void (*notif_listener)(const struct store_notif *n, size_t count, void *arg);
    void (*docop_listener)(const struct store_docop *ops, size_t count, void *arg);
    int data_version;
};

/* Copies a column as a malloc'd string (NULL for SQL NULL). */
static char *col_str(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    if (!t)
        return NULL;
    return xstrndup((const char *)t, (size_t)sqlite3_column_bytes(st, i));
}

/* Copies a column into a fixed timestamp buffer. */
static void col_ts(sqlite3_stmt *st, int i, char out[32])
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(out, 32, "%s", t ? (const char *)t : "");
}

/* Returns the prepared statement id on connection c, preparing it once. */
static sqlite3_stmt *stmt(struct conn *c, enum stmt_id id)
{
    if (!c->st[id]) {
        int rc = sqlite3_prepare_v3(c->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
                                    &c->st[id], NULL);
        if (rc != SQLITE_OK) {
            log_error("sqlite prepare failed", "err=%s", log_v(sqlite3_errmsg(c->db)));
            return NULL;
        }
    }
    sqlite3_reset(c->st[id]);
    sqlite3_clear_bindings(c->st[id]);
    return c->st[id];
}

/* Binds a text argument (NULL binds SQL NULL). */
static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

/* Runs a statement without results; returns the sqlite result code. */
static int exec_simple(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        log_error("sqlite exec failed", "err=%s", log_v(msg ? msg : "?"));
    sqlite3_free(msg);
    return rc;
}

/* Process-wide SQLite settings, before its first use: no memory statistics (they take
 * a global mutex on every allocation of every connection). */
static void sqlite_setup(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

/* Opens one connection with the pragmas every rowcast connection uses. Foreign keys
 * stay off: the schema's triggers enforce what matters (room existence, cascades) for
 * every writer, including processes that never turn foreign keys on. */
static int conn_open(struct conn *c, const char *path, bool sync_full, char *err,
                     size_t errlen)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, sqlite_setup);
    memset(c, 0, sizeof *c);
    int rc = sqlite3_open_v2(path, &c->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open SQLite database %s: %s", path,
                 c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        sqlite3_close(c->db);
        c->db = NULL;
        return RC_ESTORE;
    }
    sqlite3_busy_timeout(c->db, 5000);
    sqlite3_extended_result_codes(c->db, 1);
    /* 1 KiB pages for a new database (a no-op on one that has tables): a message dirties
     * a leaf of the messages table, of room_changes and of their indexes, and every page
     * a commit dirties is written to the WAL, fdatasync()ed and checkpointed whole. With
     * 4 KiB pages, chat, REST and joins measured 10-16% slower (docs/BENCHMARKS.md). */
    if (exec_simple(c->db, sync_full ? "PRAGMA page_size=1024; PRAGMA journal_mode=WAL; "
                                       "PRAGMA synchronous=FULL; PRAGMA temp_store=MEMORY"
                                     : "PRAGMA page_size=1024; PRAGMA journal_mode=WAL; "
                                       "PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY") !=
        SQLITE_OK) {
        snprintf(err, errlen, "cannot configure SQLite database %s: %s", path,
                 sqlite3_errmsg(c->db));
        sqlite3_close(c->db);
        c->db = NULL;
        return RC_ESTORE;
    }
    return 0;
}

/* Finalizes the statements and closes the connection. */
static void conn_close(struct conn *c)
{
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(c->st[i]);
    sqlite3_close(c->db);
    memset(c, 0, sizeof *c);
}

/* Applies every migration not yet recorded in schema_migrations. */
static int run_migrations(sqlite3 *db, int *applied, char *err, size_t errlen)
{
    *applied = 0;
    if (exec_simple(db, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                        "name TEXT PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT "
                        "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))") != SQLITE_OK) {
        snprintf(err, errlen, "cannot create schema_migrations: %s", sqlite3_errmsg(db));
        return RC_ESTORE;
    }
    for (const struct migration *m = migrations_sqlite; m->name; m++) {
        if (exec_simple(db, "BEGIN IMMEDIATE") != SQLITE_OK) {
            snprintf(err, errlen, "cannot lock the database: %s", sqlite3_errmsg(db));
            return RC_ESTORE;
        }
        sqlite3_stmt *st = NULL;
        sqlite3_prepare_v2(db, "SELECT 1 FROM schema_migrations WHERE name = ?1", -1, &st, NULL);
        sqlite3_bind_text(st, 1, m->name, -1, SQLITE_STATIC);
        bool done = sqlite3_step(st) == SQLITE_ROW;
        sqlite3_finalize(st);
        if (done) {
            exec_simple(db, "COMMIT");
            continue;
        }
        char *msg = NULL;
        if (sqlite3_exec(db, m->sql, NULL, NULL, &msg) != SQLITE_OK) {
            snprintf(err, errlen, "migration %s failed: %s", m->name, msg ? msg : "?");
            sqlite3_free(msg);
            exec_simple(db, "ROLLBACK");
            return RC_ESTORE;
        }
        sqlite3_prepare_v2(db, "INSERT INTO schema_migrations(name) VALUES (?1)", -1, &st, NULL);
        sqlite3_bind_text(st, 1, m->name, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE || exec_simple(db, "COMMIT") != SQLITE_OK) {
            snprintf(err, errlen, "cannot record migration %s: %s", m->name, sqlite3_errmsg(db));
            exec_simple(db, "ROLLBACK");
            return RC_ESTORE;
        }
        log_info("migration applied", "name=%s", m->name);
        (*applied)++;
    }
    return 0;
}

/* Extracts PATH from "sqlite:PATH". */
static const char *url_path(const char *url)
{
    return url + strlen("sqlite:");
}

/* Maps a failed step to an rc, logging unexpected errors. The schema's triggers name
 * what they refuse in their messages. */
static int step_error(struct conn *c, int rc)
{
    if ((rc & 0xff) == SQLITE_CONSTRAINT) {
        const char *msg = sqlite3_errmsg(c->db);
        if (strstr(msg, "rowcast: no such room") || strstr(msg, "rowcast: no such message"))
            return RC_ENOTFOUND;
        if (strstr(msg, "rowcast: a deleted message stays deleted"))
            return RC_EGONE;
        if (strstr(msg, "rowcast: invalid reply_to"))
            return RC_EINVAL;
        if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE)
            return RC_ECONFLICT;
        if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
            return RC_ENOTFOUND;
        return RC_EINVAL;
    }
    log_error("sqlite step failed", "code=%d err=%s", rc, log_v(sqlite3_errmsg(c->db)));
    return RC_ESTORE;
}

/* Row readers: each fills the struct at row from the current row of st. */

/* A message row (MSG_COLS) into a struct store_msg. */
static void read_msg(sqlite3_stmt *st, void *row)
{
    struct store_msg *m = row;
    memset(m, 0, sizeof *m); /* what the columns do not fill stays empty */
    m->id = sqlite3_column_int64(st, 0);
    m->room_id = col_str(st, 1);
    m->seq = sqlite3_column_int64(st, 2);
    m->user_id = col_str(st, 3);
    m->body = col_str(st, 4);
    col_ts(st, 5, m->inserted_at);
    m->reply_to = sqlite3_column_int64(st, 6); /* NULL reads as 0: not a reply */
    m->reply_count = sqlite3_column_int64(st, 7);
    col_ts(st, 8, m->edited_at);
    col_ts(st, 9, m->deleted_at);
    m->reactions = col_str(st, 10);
}

/* A room row (id, name, last_seq, created_at, doc_last_seq, version). */
static void read_room(sqlite3_stmt *st, struct store_room *r)
{
    r->id = col_str(st, 0);
    r->name = col_str(st, 1);
    r->last_seq = sqlite3_column_int64(st, 2);
    col_ts(st, 3, r->created_at);
    r->doc_last_seq = sqlite3_column_int64(st, 4);
    r->version = sqlite3_column_int64(st, 5);
}

/* A room_changes row (CHANGE_COLS) into a struct store_change. */
static void read_change(sqlite3_stmt *st, void *row)
{
    struct store_change *ch = row;
    ch->id = sqlite3_column_int64(st, 0);
    ch->room_id = col_str(st, 1);
    ch->version = sqlite3_column_int64(st, 2);
    ch->seq = sqlite3_column_int64(st, 3);
    ch->user_id = col_str(st, 4);
    ch->event = col_str(st, 5);
    ch->payload = col_str(st, 6);
    col_ts(st, 7, ch->inserted_at);
}

/* A notification row (id, user_id, payload, inserted_at) into a struct store_notif. */
static void read_notif(sqlite3_stmt *st, void *row)
{
    struct store_notif *n = row;
    n->id = sqlite3_column_int64(st, 0);
    n->user_id = col_str(st, 1);
    n->payload = col_str(st, 2);
    col_ts(st, 3, n->inserted_at);
    if (!n->payload)
        n->payload = xstrdup("{}");
}

/* A document operation row (id, room_id, seq, user_id, operation, data, inserted_at)
 * into a struct store_docop. */
static void read_docop(sqlite3_stmt *st, void *row)
{
    struct store_docop *op = row;
    op->id = sqlite3_column_int64(st, 0);
    op->room_id = col_str(st, 1);
    op->seq = sqlite3_column_int64(st, 2);
    op->user_id = col_str(st, 3);
    op->operation = col_str(st, 4);
    op->data = col_str(st, 5);
    col_ts(st, 6, op->inserted_at);
    if (!op->operation)
        op->operation = xstrdup("");
}

/* A membership with its read state (READ_STATE) into a struct store_user_room. */
static void read_user_room(sqlite3_stmt *st, void *row)
{
    struct store_user_room *u = row;
    u->room_id = col_str(st, 0);
    u->name = col_str(st, 1);
    u->role = col_str(st, 2);
    u->last_seq = sqlite3_column_int64(st, 3);
    u->last_read_seq = sqlite3_column_int64(st, 4);
    u->unread = sqlite3_column_int64(st, 5);
}

/* Returns statement id on c with its parameters bound in order from ?1 as fmt says:
 * 's' a string (NULL binds SQL NULL), 'I' an int64_t, 'i' an int. NULL when the
 * statement cannot be prepared. */
static sqlite3_stmt *bound(struct conn *c, enum stmt_id id, const char *fmt, ...)
{
    sqlite3_stmt *st = stmt(c, id);
    va_list ap;
    va_start(ap, fmt);
    for (int i = 0; st && fmt[i]; i++) {
        if (fmt[i] == 's')
            bind_text(st, i + 1, va_arg(ap, const char *));
        else if (fmt[i] == 'I')
            sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
        else
            sqlite3_bind_int(st, i + 1, va_arg(ap, int));
    }
    va_end(ap);
    return st;
}

/* Steps st (from bound()) to its first row: 0, RC_ENOTFOUND when there is none,
 * RC_ESTORE when st is NULL, or the step's error. */
static int step_row(struct conn *c, sqlite3_stmt *st)
{
    if (!st)
        return RC_ESTORE;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        return 0;
    return rc == SQLITE_DONE ? RC_ENOTFOUND : step_error(c, rc);
}

/* Steps st (from bound()) to its end, a statement without rows or the rest of one:
 * 0, RC_ESTORE when st is NULL, or the step's error. */
static int step_done(struct conn *c, sqlite3_stmt *st)
{
    if (!st)
        return RC_ESTORE;
    int rc = sqlite3_step(st);
    return rc == SQLITE_DONE ? 0 : step_error(c, rc);
}

/* Steps st (from bound()) through all its rows, reading each with read into a new array
 * of size-byte rows; returns the array (NULL when there is none), its length in *n and
 * the outcome in *rc. */
static void *step_rows(struct conn *c, sqlite3_stmt *st, size_t size,
                       void (*read)(sqlite3_stmt *st, void *row), size_t *n, int *rc)
{
    char *rows = NULL;
    size_t cap = 0;
    int step = SQLITE_MISUSE;
    *n = 0;
    while (st && (step = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            rows = xrealloc(rows, cap * size);
        }
        memset(rows + *n * size, 0, size);
        read(st, rows + (*n)++ * size);
    }
    *rc = !st ? RC_ESTORE : step == SQLITE_DONE ? 0 : step_error(c, step);
    return rows;
}

/* Returns 0 when the room exists, RC_ENOTFOUND or RC_ESTORE. */
static int room_exists(struct conn *c, const char *room_id)
{
    return step_row(c, bound(c, ST_ROOM_EXISTS, "s", room_id));
}

/* Loads a room into req->room. */
static int do_room_get(struct conn *c, struct store_req *req)
{
    sqlite3_stmt *st = bound(c, ST_ROOM_GET, "s", req->room_id);
    int rc = step_row(c, st);
    if (!rc)
        read_room(st, &req->room);
    return rc;
}

/* Loads a page of messages into req->msgs according to the request's bounds. */
static int do_messages(struct conn *c, struct store_req *req)
{
    sqlite3_stmt *st;
    if (req->after_seq >= 0 && req->before_seq >= 0)
        st = bound(c, ST_MSGS_BETWEEN, "sIiI", req->room_id, req->after_seq, req->limit,
                   req->before_seq);
    else if (req->after_seq >= 0)
        st = bound(c, ST_MSGS_AFTER, "sIi", req->room_id, req->after_seq, req->limit);
    else if (req->before_seq >= 0)
        st = bound(c, ST_MSGS_BEFORE, "sIi", req->room_id, req->before_seq, req->limit);
    else
        st = bound(c, ST_MSGS_LATEST, "sIi", req->room_id, (int64_t)-1, req->limit);
    int rc;
    req->msgs = step_rows(c, st, sizeof *req->msgs, read_msg, &req->n_msgs, &rc);
    return rc;
}

/* A row of ST_MEMBERS_LIST (user_id, role, name) into a struct store_member. */
static void read_member(sqlite3_stmt *st, void *row)
{
    struct store_member *m = row;
    m->user_id = col_str(st, 0);
    m->role = col_str(st, 1);
    m->name = col_str(st, 2);
}

/* Loads a room's members into req->members. */
static int do_members_list(struct conn *c, struct store_req *req)
{
    int rc = room_exists(c, req->room_id);
    if (rc)
        return rc;
    sqlite3_stmt *st = bound(c, ST_MEMBERS_LIST, "s", req->room_id);
    req->members = step_rows(c, st, sizeof *req->members, read_member, &req->n_members, &rc);
    for (size_t i = 0; i < req->n_members; i++)
        req->members[i].room_id = xstrdup(req->room_id);
    return rc;
}

/* Loads the member row (role, name, read cursor) of req->user_id in req->room_id;
 * RC_EFORBIDDEN when there is none. */
static int do_member_get(struct conn *c, struct store_req *req)
{
    sqlite3_stmt *st = bound(c, ST_MEMBER_GET, "ss", req->room_id, req->user_id);
    int rc = step_row(c, st);
    if (rc)
        return rc == RC_ENOTFOUND ? RC_EFORBIDDEN : rc;
    req->member.room_id = xstrdup(req->room_id);
    req->member.user_id = xstrdup(req->user_id);
    req->member.role = col_str(st, 0);
    req->member.name = col_str(st, 1);
    req->member.avatar_url = col_str(st, 2);
    req->member.last_read_seq = sqlite3_column_int64(st, 3);
    return 0;
}

/* Counts req->user_id's unread messages in req->room_id (after the stored cursor) into
 * req->member and reads the room's last_seq; RC_ENOTFOUND when there is no membership. */
static int do_unread(struct conn *c, struct store_req *req)
{
    sqlite3_stmt *st = bound(c, ST_UNREAD, "ss", req->room_id, req->user_id);
    int rc = step_row(c, st);
    if (rc)
        return rc;
    req->room.last_seq = sqlite3_column_int64(st, 3);
    req->member.unread = sqlite3_column_int64(st, 5);
    return 0;
}

/* Loads the room's changes after req->since_version, the first req->limit of them. */
static int do_changes(struct conn *c, struct store_req *req)
{
    sqlite3_stmt *st =
        bound(c, ST_CHANGES_AFTER, "sIi", req->room_id, req->since_version, req->limit);
    int rc;
    req->changes = step_rows(c, st, sizeof *req->changes, read_change, &req->n_changes, &rc);
    return rc;
}

/* Runs read(c, req) in one read transaction, so that its queries see one snapshot. */
static int in_snapshot(struct conn *c, struct store_req *req,
                       int (*read)(struct conn *c, struct store_req *req))
{
    if (exec_simple(c->db, "BEGIN") != SQLITE_OK)
        return RC_ESTORE;
    int rc = read(c, req);
    exec_simple(c->db, "COMMIT");
    return rc;
}

/* Room, membership with its read state, and history (or the changes after
 * since_version). hist, if not NULL, is a join of the same room and page that read its
 * history in this snapshot: req gets a copy of it instead of reading it again. */
static int do_join_room_from(struct conn *c, struct store_req *req,
                             const struct store_req *hist)
{
    int rc = do_room_get(c, req);
    if (!rc)
        rc = do_member_get(c, req);
    if (!rc)
        rc = do_unread(c, req);
    if (rc)
        return rc;
    if (req->since_version >= 0)
        return do_changes(c, req);
    if (!hist)
        return do_messages(c, req);
    req->msgs = store_msgs_dup(hist->msgs, hist->n_msgs);
    req->n_msgs = hist->n_msgs;
    return 0;
}

/* do_join_room_from, reading its own history. */
static int do_join_room(struct conn *c, struct store_req *req)
{
    return do_join_room_from(c, req, NULL);
}

/* Whether req is a join whose history other joins can share. */
static bool shares_history(const struct store_req *req)
{
    return req->op == STORE_JOIN_ROOM && req->since_version < 0;
}

/* Whether two such joins read the same history: one room, one page. */
static bool same_history(const struct store_req *a, const struct store_req *b)
{
    return a->after_seq == b->after_seq && a->before_seq == b->before_seq &&
           a->limit == b->limit && strcmp(a->room_id, b->room_id) == 0;
}

/* Writes ms since the epoch (0 to STORE_MS_MAX: four-digit years, so that the text
 * compares in time order) as inserted_at does: YYYY-MM-DDTHH:MM:SS.mmmZ. */
static void iso_of_ms(int64_t ms, char out[32])
{
    if (ms > STORE_MS_MAX)
        ms = STORE_MS_MAX;
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

/* Room, membership (role) and the room's broadcasts after since_version logged from
 * since_ms on (none when since_ms < 0). */
static int do_broadcast_join(struct conn *c, struct store_req *req)
{
    int rc = do_room_get(c, req);
    if (!rc)
        rc = do_member_get(c, req);
    if (rc || req->since_ms < 0)
        return rc;
    char since[32];
    iso_of_ms(req->since_ms, since);
    sqlite3_stmt *st = bound(c, ST_BROADCASTS_SINCE, "sIsi", req->room_id, req->since_version,
                             since, req->limit);
    req->changes = step_rows(c, st, sizeof *req->changes, read_change, &req->n_changes, &rc);
    return rc;
}

/* The room (version, last_seq) and its changes after since_version. */
static int do_changes_page(struct conn *c, struct store_req *req)
{
    int rc = do_room_get(c, req);
    return rc ? rc : do_changes(c, req);
}

/* A page of the replies to message req->seq (there, deleted or not), oldest first. */
static int do_replies_page(struct conn *c, struct store_req *req)
{
    int rc = step_row(c, bound(c, ST_MSG_EXISTS, "sI", req->room_id, req->seq));
    if (rc)
        return rc;
    sqlite3_stmt *st =
        bound(c, ST_REPLIES, "sIIi", req->room_id, req->seq, req->after_seq, req->limit);
    req->msgs = step_rows(c, st, sizeof *req->msgs, read_msg, &req->n_msgs, &rc);
    return rc;
}

/* Loads the rooms req->user_id is a member of, with the user's read state in each. */
static int do_user_rooms(struct conn *c, struct store_req *req)
{
    sqlite3_stmt *st = bound(c, ST_USER_ROOMS, "s", req->user_id);
    int rc;
    req->user_rooms =
        step_rows(c, st, sizeof *req->user_rooms, read_user_room, &req->n_user_rooms, &rc);
    return rc;
}

/* Loads unread notifications of req->user_id. */
static int do_notif_unread(struct conn *c, struct store_req *req)
{
    sqlite3_stmt *st = bound(c, ST_NOTIF_UNREAD, "si", req->user_id, req->limit);
    int rc;
    req->notifs = step_rows(c, st, sizeof *req->notifs, read_notif, &req->n_notifs, &rc);
    return rc;
}

/* Room, membership and the document's operations. */
static int do_doc_join(struct conn *c, struct store_req *req)
{
    int rc = do_room_get(c, req);
    if (!rc)
        rc = do_member_get(c, req);
    if (rc)
        return rc;
    enum stmt_id id = req->after_seq >= 0 ? ST_DOCOPS_AFTER : ST_DOCOPS_LATEST;
    sqlite3_stmt *st = bound(c, id, "sIi", req->room_id, req->after_seq, req->limit);
    req->docops = step_rows(c, st, sizeof *req->docops, read_docop, &req->n_docops, &rc);
    return rc;
}

/* Executes one read request on the reader connection. */
static int run_read(struct conn *c, struct store_req *req)
{
    switch (req->op) {
    case STORE_PING:
        return step_row(c, stmt(c, ST_PING));
    case STORE_ROOM_GET:
        return do_room_get(c, req);
    case STORE_MEMBERS_LIST:
        return do_members_list(c, req);
    case STORE_MESSAGES_PAGE: {
        int rc = room_exists(c, req->room_id);
        return rc ? rc : do_messages(c, req);
    }
    case STORE_JOIN_ROOM:
        return in_snapshot(c, req, do_join_room);
    case STORE_NOTIFY_UNREAD: {
        if (exec_simple(c->db, "BEGIN") != SQLITE_OK)
            return RC_ESTORE;
        int rc = do_notif_unread(c, req);
        sqlite3_stmt *st = NULL;
        if (!rc && sqlite3_prepare_v2(c->db, "SELECT COALESCE(MAX(id), 0) FROM notifications "
                                             "WHERE user_id = ?1", -1, &st, NULL) == SQLITE_OK) {
            bind_text(st, 1, req->user_id);
            if (sqlite3_step(st) == SQLITE_ROW)
                req->id = sqlite3_column_int64(st, 0);
        }
        sqlite3_finalize(st);
        exec_simple(c->db, "COMMIT");
        return rc;
    }
    case STORE_DOC_JOIN:
        return in_snapshot(c, req, do_doc_join);
    case STORE_CHANGES_PAGE:
        return in_snapshot(c, req, do_changes_page);
    case STORE_REPLIES_PAGE:
        return in_snapshot(c, req, do_replies_page);
    case STORE_USER_ROOMS:
        return do_user_rooms(c, req);
    case STORE_BROADCAST_JOIN:
        return in_snapshot(c, req, do_broadcast_join);
    default:
        return RC_EINVAL;
    }
}

/* Upserts a user. */
static int do_user_put(struct conn *c, struct store_req *req)
{
    sqlite3_stmt *st = stmt(c, ST_USER_PUT);
    if (!st)
        return RC_ESTORE;
    bind_text(st, 1, req->user_id);
    bind_text(st, 2, req->name);
    bind_text(st, 3, req->avatar_url);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        return step_error(c, rc);
    req->user.id = col_str(st, 0);
    req->user.name = col_str(st, 1);
    req->user.avatar_url = col_str(st, 2);
    col_ts(st, 3, req->user.created_at);
    rc = sqlite3_step(st);
    return rc == SQLITE_DONE ? 0 : step_error(c, rc);
}

/* Creates a room. */
static int do_room_create(struct conn *c, struct store_req *req)
{
    sqlite3_stmt *st = stmt(c, ST_ROOM_CREATE);
    if (!st)
        return RC_ESTORE;
    bind_text(st, 1, req->room_id);
    bind_text(st, 2, req->name);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        return step_error(c, rc);
    read_room(st, &req->room);
    rc = sqlite3_step(st);
    return rc == SQLITE_DONE ? 0 : step_error(c, rc);
}

/* Runs a DELETE and maps "no row" to RC_ENOTFOUND. */
static int do_delete(struct conn *c, enum stmt_id id, struct store_req *req)
{
    sqlite3_stmt *st = stmt(c, id);
    if (!st)
        return RC_ESTORE;
    bind_text(st, 1, req->room_id);
    if (id == ST_MEMBER_DELETE)
        bind_text(st, 2, req->user_id);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        return step_error(c, rc);
    return sqlite3_changes(c->db) ? 0 : RC_ENOTFOUND;
}

/* Adds or updates a membership, creating the user row if needed. */
static int do_member_put(struct conn *c, struct store_req *req)
{
    int rc = room_exists(c, req->room_id);
    if (rc)
        return rc;
    sqlite3_stmt *st = stmt(c, ST_USER_ENSURE);
    if (!st)
        return RC_ESTORE;
    bind_text(st, 1, req->user_id);
    if ((rc = sqlite3_step(st)) != SQLITE_DONE)
        return step_error(c, rc);
    if (!(st = stmt(c, ST_MEMBER_PUT)))
        return RC_ESTORE;
    bind_text(st, 1, req->room_id);
    bind_text(st, 2, req->user_id);
    bind_text(st, 3, req->role);
    if ((rc = sqlite3_step(st)) != SQLITE_DONE)
        return step_error(c, rc);
    return do_member_get(c, req);
}

/* Reads the room's current version into *out: after a write, the one it took. */
static int room_version(struct conn *c, const char *room_id, int64_t *out)
{
    sqlite3_stmt *st = bound(c, ST_ROOM_VERSION, "s", room_id);
    int rc = step_row(c, st);
    if (!rc)
        *out = sqlite3_column_int64(st, 0);
    return rc;
}

/* Inserts a message with the room's next seq (the triggers check it, record it and take
 * the room's next version). The id is the insert's rowid and the seq and version are the
 * room's counters after it, read in the same transaction: cheaper than RETURNING, which
 * has SQLite collect the row in a table of its own. */
static int do_message_add(struct conn *c, struct store_req *req)
{
    char ts[32];
    clock_iso8601(ts);
    sqlite3_stmt *st =
        bound(c, ST_MSG_INSERT, "ssssI", req->room_id, req->user_id, req->body, ts, req->reply_to);
    int rc = step_done(c, st);
    /* The reply_to check may run before the room's: a missing room is not found. */
    if (rc == RC_EINVAL && req->reply_to && room_exists(c, req->room_id) == RC_ENOTFOUND)
        return RC_ENOTFOUND;
    if (rc)
        return rc;
    req->msg.id = sqlite3_last_insert_rowid(c->db);
    st = bound(c, ST_ROOM_VERSION, "s", req->room_id);
    if ((rc = step_row(c, st)))
        return rc;
    req->version = sqlite3_column_int64(st, 0);
    req->msg.seq = sqlite3_column_int64(st, 1);
    req->msg.room_id = xstrdup(req->room_id);
    req->msg.user_id = xstrdup(req->user_id);
    req->msg.body = xstrdup(req->body);
    req->msg.reply_to = req->reply_to;
    memcpy(req->msg.inserted_at, ts, sizeof ts);
    return 0;
}

/* Message req->seq of req->room_id as an edit, delete or reaction finds it: fills
 * req->msg and req->room.version, and says whether req->user_id may edit (its author) or
 * delete it (its author or an owner of the room). RC_ENOTFOUND (room or message),
 * RC_EGONE (deleted). */
static int msg_state(struct conn *c, struct store_req *req, bool *may_edit, bool *may_delete)
{
    sqlite3_stmt *st = bound(c, ST_MSG_STATE, "sIs", req->room_id, req->seq, req->user_id);
    int rc = step_row(c, st);
    if (rc)
        return rc;
    store_msg_cleanup(&req->msg);
    read_msg(st, &req->msg);
    req->room.version = sqlite3_column_int64(st, MSG_N_COLS);
    const unsigned char *role = sqlite3_column_text(st, MSG_N_COLS + 1);
    *may_edit = !req->user_id || !strcmp(req->user_id, req->msg.user_id);
    *may_delete = *may_edit || (role && !strcmp((const char *)role, "owner"));
    sqlite3_reset(st);
    return req->msg.deleted_at[0] ? RC_EGONE : 0;
}

/* Edits (STORE_MESSAGE_EDIT, ST_MSG_EDIT: the author only) or deletes (ST_MSG_DELETE:
 * the author or an owner) a message; anyone may when req->user_id is NULL. The triggers
 * set edited_at or erase the body, and log the change. Fills req->msg as it is after, and
 * req->version with the version it took (0 when nothing changed: the same body). */
static int do_message_change(struct conn *c, struct store_req *req)
{
    bool edit = req->op == STORE_MESSAGE_EDIT, may_edit, may_delete;
    int rc = msg_state(c, req, &may_edit, &may_delete);
    if (rc)
        return rc;
    if (!(edit ? may_edit : may_delete))
        return RC_EFORBIDDEN;
    int64_t before = req->room.version;
    sqlite3_stmt *st = edit ? bound(c, ST_MSG_EDIT, "sIs", req->room_id, req->seq, req->body)
                            : bound(c, ST_MSG_DELETE, "sI", req->room_id, req->seq);
    if ((rc = step_done(c, st)))
        return rc;
    if ((rc = msg_state(c, req, &may_edit, &may_delete)) && rc != RC_EGONE)
        return rc;
    req->version = req->room.version != before ? req->room.version : 0;
    return 0;
}

/* Adds (STORE_REACTION_PUT) or removes req->user_id's reaction req->name to message
 * req->seq; the triggers log the change. req->version: the version it took, 0 when
 * nothing changed (it was there / was not). */
static int do_reaction(struct conn *c, struct store_req *req)
{
    bool may_edit, may_delete;
    int rc = msg_state(c, req, &may_edit, &may_delete);
    if (rc)
        return rc;
    int64_t before = req->room.version;
    enum stmt_id id = req->op == STORE_REACTION_PUT ? ST_REACTION_PUT : ST_REACTION_DELETE;
    rc = step_done(c, bound(c, id, "sIss", req->room_id, req->seq, req->name, req->user_id));
    if (rc || (rc = room_version(c, req->room_id, &req->room.version)))
        return rc;
    req->version = req->room.version != before ? req->room.version : 0;
    return 0;
}

/* Moves req->user_id's read cursor forward to req->seq (at most the room's last_seq)
 * and counts what is left unread. */
static int do_read_mark(struct conn *c, struct store_req *req)
{
    sqlite3_stmt *st = bound(c, ST_READ_MARK, "ssI", req->room_id, req->user_id, req->seq);
    int rc = step_row(c, st);
    if (rc == RC_ENOTFOUND) { /* no such membership; is there such a room? */
        rc = room_exists(c, req->room_id);
        return rc ? rc : RC_EFORBIDDEN;
    }
    if (rc)
        return rc;
    req->member.last_read_seq = sqlite3_column_int64(st, 0);
    req->member.role = col_str(st, 1);
    req->member.room_id = xstrdup(req->room_id);
    req->member.user_id = xstrdup(req->user_id);
    if ((rc = step_done(c, st)))
        return rc;
    return do_unread(c, req);
}

/* Logs a broadcast through room_broadcasts (its trigger checks the room and the JSON,
 * and takes the next version); req->version: the version it took. */
static int do_broadcast_add(struct conn *c, struct store_req *req)
{
    if (!req->name || !req->data)
        return RC_EINVAL;
    int rc = step_done(c, bound(c, ST_BROADCAST_ADD, "ssss", req->room_id, req->user_id,
                                req->name, req->data));
    return rc ? rc : room_version(c, req->room_id, &req->version);
}

/* Stores a notification; payload is {"message":…,"data":…}. */
static int do_notif_add(struct conn *c, struct store_req *req)
{
    sqlite3_stmt *st = stmt(c, ST_NOTIF_ADD);
    if (!st)
        return RC_ESTORE;
    json_t *p = json_pack("{s:s}", "message", req->body);
    json_t *d = req->data ? json_loads(req->data, JSON_DECODE_ANY, NULL) : NULL;
    json_object_set_new(p, "data", d ? d : json_null());
    char *payload = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    char ts[32];
    clock_iso8601(ts);
    bind_text(st, 1, req->user_id);
    bind_text(st, 2, payload);
    bind_text(st, 3, ts);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        free(payload);
        return step_error(c, rc);
    }
    req->notif.id = sqlite3_column_int64(st, 0);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        free(payload);
        return step_error(c, rc);
    }
    req->notif.user_id = xstrdup(req->user_id);
    req->notif.payload = payload;
    memcpy(req->notif.inserted_at, ts, sizeof ts);
    return 0;
}

/* Marks one of the user's notifications read. */
static int do_notif_read(struct conn *c, struct store_req *req)
{
    sqlite3_stmt *st = stmt(c, ST_NOTIF_READ);
    if (!st)
        return RC_ESTORE;
    sqlite3_bind_int64(st, 1, req->id);
    bind_text(st, 2, req->user_id);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        return step_error(c, rc);
    return sqlite3_changes(c->db) ? 0 : RC_ENOTFOUND;
}

/* Appends a document operation with the document's next seq. */
static int do_docop_add(struct conn *c, struct store_req *req)
{
    sqlite3_stmt *st = stmt(c, ST_DOCOP_ADD);
    if (!st)
        return RC_ESTORE;
    char ts[32];
    clock_iso8601(ts);
    bind_text(st, 1, req->room_id);
    bind_text(st, 2, req->user_id);
    bind_text(st, 3, req->name);
    bind_text(st, 4, req->data ? req->data : "null");
    bind_text(st, 5, ts);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        return step_error(c, rc);
    req->docop.id = sqlite3_column_int64(st, 0);
    req->docop.seq = sqlite3_column_int64(st, 1);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return step_error(c, rc);
    req->docop.room_id = xstrdup(req->room_id);
    req->docop.user_id = xstrdup(req->user_id);
    req->docop.operation = xstrdup(req->name);
    req->docop.data = xstrdup(req->data ? req->data : "null");
    memcpy(req->docop.inserted_at, ts, sizeof ts);
    return 0;
}

/* The demo's set-up: rooms lobby and random, the user a member of both. */
static int do_dev_setup(struct conn *c, struct store_req *req)
{
    static const char *const sql[] = {
        "INSERT INTO rooms(id, name) VALUES ('lobby', 'Lobby'), ('random', 'Random') "
        "ON CONFLICT(id) DO NOTHING",
        "INSERT INTO users(id, name) VALUES (?1, ?1) ON CONFLICT(id) DO NOTHING",
        "INSERT INTO memberships(room_id, user_id, role) VALUES ('lobby', ?1, 'member'), "
        "('random', ?1, 'member') ON CONFLICT(room_id, user_id) DO NOTHING",
    };
    for (size_t i = 0; i < sizeof sql / sizeof sql[0]; i++) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(c->db, sql[i], -1, &st, NULL) != SQLITE_OK)
            return RC_ESTORE;
        if (i)
            bind_text(st, 1, req->user_id);
        int rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
            return step_error(c, rc);
    }
    return 0;
}

/* Executes one write inside the batch transaction, in its own savepoint so that a
 * failed request leaves no partial change behind. */
static int run_write(struct conn *c, struct store_req *req)
{
    bool multi = req->op == STORE_MEMBER_PUT || req->op == STORE_ROOM_DELETE ||
                 req->op == STORE_DEV_SETUP || req->op == STORE_MESSAGE_EDIT ||
                 req->op == STORE_MESSAGE_DELETE || req->op == STORE_REACTION_PUT ||
                 req->op == STORE_REACTION_DELETE || req->op == STORE_READ_MARK;
    if (multi && exec_simple(c->db, "SAVEPOINT req") != SQLITE_OK)
        return RC_ESTORE;
    int rc;
    switch (req->op) {
    case STORE_USER_PUT: rc = do_user_put(c, req); break;
    case STORE_ROOM_CREATE: rc = do_room_create(c, req); break;
    case STORE_ROOM_DELETE: rc = do_delete(c, ST_ROOM_DELETE, req); break;
    case STORE_MEMBER_PUT: rc = do_member_put(c, req); break;
    case STORE_MEMBER_DELETE: rc = do_delete(c, ST_MEMBER_DELETE, req); break;
    case STORE_MESSAGE_ADD: rc = do_message_add(c, req); break;
    case STORE_NOTIFY_ADD: rc = do_notif_add(c, req); break;
    case STORE_NOTIFY_READ: rc = do_notif_read(c, req); break;
    case STORE_DOC_EDIT: rc = do_docop_add(c, req); break;
    case STORE_DEV_SETUP: rc = do_dev_setup(c, req); break;
    case STORE_MESSAGE_EDIT:
    case STORE_MESSAGE_DELETE: rc = do_message_change(c, req); break;
    case STORE_REACTION_PUT:
    case STORE_REACTION_DELETE: rc = do_reaction(c, req); break;
    case STORE_READ_MARK: rc = do_read_mark(c, req); break;
    case STORE_BROADCAST_ADD: rc = do_broadcast_add(c, req); break;
    default: rc = RC_EINVAL; break;
    }
    if (multi) {
        if (rc)
            exec_simple(c->db, "ROLLBACK TO req");
        exec_simple(c->db, "RELEASE req");
    }
    return rc;
}

/* Which tables delivery looks at. */
enum {
    SCAN_CHANGES = 1,
    SCAN_NOTIFS = 2,
    SCAN_DOCOPS = 4,
    SCAN_ALL = 7,
};

/* One table that delivery scans: rows after a watermark, in id order, read in chunks
 * into an array of `size`-byte rows and handed to a listener. */
struct scan {
    enum stmt_id stmt;
    size_t size;
    void (*read)(sqlite3_stmt *st, void *row);
    int64_t (*id)(const void *row);
    void (*cleanup)(void *row);
    void (*deliver)(struct sqlite_store *s, const void *rows, size_t n);
};

/* Row adapters for struct scan. */
static int64_t scan_id_change(const void *row)
{
    return ((const struct store_change *)row)->id;
}
static int64_t scan_id_notif(const void *row)
{
    return ((const struct store_notif *)row)->id;
}
static int64_t scan_id_docop(const void *row)
{
    return ((const struct store_docop *)row)->id;
}
static void scan_free_change(void *row)
{
    store_change_cleanup(row);
}
static void scan_free_notif(void *row)
{
    store_notif_cleanup(row);
}
static void scan_free_docop(void *row)
{
    store_docop_cleanup(row);
}

static void scan_to_changes(struct sqlite_store *s, const void *rows, size_t n)
{
    s->listener(rows, n, s->listener_arg);
}
static void scan_to_notifs(struct sqlite_store *s, const void *rows, size_t n)
{
    s->notif_listener(rows, n, s->listener_arg);
}
static void scan_to_docops(struct sqlite_store *s, const void *rows, size_t n)
{
    s->docop_listener(rows, n, s->listener_arg);
}

static const struct scan scan_changes = {ST_CHANGE_SCAN,   sizeof(struct store_change),
                                         read_change,      scan_id_change,
                                         scan_free_change, scan_to_changes};
static const struct scan scan_notifs = {ST_NOTIF_SCAN,   sizeof(struct store_notif),
                                        read_notif,      scan_id_notif,
                                        scan_free_notif, scan_to_notifs};
static const struct scan scan_docops = {ST_DOCOP_SCAN,   sizeof(struct store_docop),
                                        read_docop,      scan_id_docop,
                                        scan_free_docop, scan_to_docops};

/* Hands every row of sc's table committed after *mark to fn, in id order. */
static void deliver_table(struct sqlite_store *s, const struct scan *sc, int64_t *mark)
{
    char *rows = xmalloc(sc->size * SCAN_CHUNK);
    for (;;) {
        sqlite3_stmt *st = stmt(&s->d, sc->stmt);
        if (!st)
            break;
        sqlite3_bind_int64(st, 1, *mark);
        sqlite3_bind_int(st, 2, SCAN_CHUNK);
        size_t n = 0;
        while (n < SCAN_CHUNK && sqlite3_step(st) == SQLITE_ROW) {
            memset(rows + n * sc->size, 0, sc->size);
            sc->read(st, rows + n * sc->size);
            n++;
        }
        sqlite3_reset(st);
        if (n) {
            *mark = sc->id(rows + (n - 1) * sc->size);
            sc->deliver(s, rows, n);
            for (size_t i = 0; i < n; i++)
                sc->cleanup(rows + i * sc->size);
        }
        if (n < SCAN_CHUNK)
            break;
    }
    free(rows);
}

/* Delivers what was committed since the last delivery, for the tables in mask. */
static void deliver_new(struct sqlite_store *s, int mask)
{
    if ((mask & SCAN_CHANGES) && s->listener)
        deliver_table(s, &scan_changes, &s->delivered_change_id);
    if ((mask & SCAN_NOTIFS) && s->notif_listener)
        deliver_table(s, &scan_notifs, &s->delivered_notif_id);
    if ((mask & SCAN_DOCOPS) && s->docop_listener)
        deliver_table(s, &scan_docops, &s->delivered_docop_id);
}

/* The tables (SCAN_*) a write op adds rows to that delivery hands on. */
static int write_scans(enum store_op op)
{
    switch (op) {
    case STORE_MESSAGE_ADD:
    case STORE_MESSAGE_EDIT:
    case STORE_MESSAGE_DELETE:
    case STORE_REACTION_PUT:
    case STORE_REACTION_DELETE:
    case STORE_BROADCAST_ADD:
        return SCAN_CHANGES;
    case STORE_NOTIFY_ADD:
        return SCAN_NOTIFS;
    case STORE_DOC_EDIT:
        return SCAN_DOCOPS;
    default:
        return 0;
    }
}

/* Commits a batch of writes in one transaction (into the WAL, not yet fsynced) and
 * hands it to the sync thread, which acknowledges it. */
static void commit_batch(struct sqlite_store *s, struct store_req *head)
{
    struct committed *c = xcalloc(1, sizeof *c);
    c->head = head;
    c->t0 = clock_mono_us();
    bool began = exec_simple(s->w.db, "BEGIN IMMEDIATE") == SQLITE_OK;
    for (struct store_req *r = head; r; r = r->_next) {
        r->rc = began ? run_write(&s->w, r) : RC_ESTORE;
        c->n++;
        c->mask |= write_scans(r->op);
    }
    for (int i = 0; i < ST_COUNT; i++) /* else the snapshot outlives the COMMIT */
        sqlite3_reset(s->w.st[i]);
    /* Counted before COMMIT (a snapshot that can see this batch also sees it begun) and
     * after (the batch reaches the sync thread only once its frames are written). */
    atomic_fetch_add(&s->commits_begun, 1);
    if (began && exec_simple(s->w.db, "COMMIT") != SQLITE_OK) {
        exec_simple(s->w.db, "ROLLBACK");
        for (struct store_req *r = head; r; r = r->_next) {
            r->rc = RC_ESTORE;
            store_msg_cleanup(&r->msg); /* rolled back: no id, no seq */
            memset(&r->msg, 0, sizeof r->msg);
        }
    }
    atomic_fetch_add(&s->commits_done, 1);
    pthread_mutex_lock(&s->smu);
    if (s->c_tail)
        s->c_tail->next = c;
    else
        s->c_head = c;
    s->c_tail = c;
    pthread_cond_signal(&s->scv);
    pthread_mutex_unlock(&s->smu);
}

/* Looks for commits by other processes: the writer connection's data_version changes
 * with every commit but its own. Tells the sync thread to look at every table. */
static void poll_external(struct sqlite_store *s)
{
    sqlite3_stmt *st = NULL;
    int v = s->data_version;
    if (sqlite3_prepare_v2(s->w.db, "PRAGMA data_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (v == s->data_version)
        return;
    s->data_version = v;
    pthread_mutex_lock(&s->smu);
    s->external = true;
    pthread_cond_signal(&s->scv);
    pthread_mutex_unlock(&s->smu);
}

/* One round of the sync thread: fix a snapshot, fdatasync the WAL if the snapshot may
 * hold commits not yet synced, acknowledge the batches in list (all committed before
 * the snapshot), then deliver the new rows of the tables in mask. Every row delivered
 * or acknowledged is durable by then. */
static void sync_round(struct sqlite_store *s, struct committed *list, int mask)
{
    bool snap = exec_simple(s->d.db, "BEGIN") == SQLITE_OK;
    sqlite3_stmt *st = snap ? stmt(&s->d, ST_SNAPSHOT) : NULL;
    if (st) {
        sqlite3_step(st);
        sqlite3_reset(st); /* the read transaction, and so the snapshot, stays */
    }
    /* Sync when a finished commit is not covered yet (the batches in list are finished
     * ones), or when one is under way: it may have written its frames, and be in the
     * snapshot, without being counted as done yet. Only the commits counted done before
     * the fdatasync() are credited to it. */
    long long done = atomic_load(&s->commits_done);
    long long begun = atomic_load(&s->commits_begun);
    int rc = 0;
    if (s->wal_fd >= 0 && (done != s->commits_synced || begun != done)) {
        if (fdatasync(s->wal_fd) == 0) {
            s->commits_synced = done;
        } else {
            /* Committed, but not known to be on disk: the clients are told it failed. */
            log_error("fdatasync of the SQLite WAL failed", "err=\"%s\"", strerror(errno));
            rc = RC_ESTORE;
        }
    }
    int64_t now = clock_mono_us();
    while (list) {
        struct committed *next = list->next;
        metrics_store_batch(list->n, now - list->t0);
        /* Completions first: a sender's ok reply does not wait behind the fan-out of its
         * own message to every subscriber (Phoenix clients accept either order). */
        for (struct store_req *r = list->head, *rn; r; r = rn) {
            rn = r->_next;
            r->_next = NULL;
            if (rc && !r->rc)
                r->rc = rc;
            store_complete(r);
        }
        free(list);
        list = next;
    }
    if (snap) {
        deliver_new(s, mask);
        exec_simple(s->d.db, "COMMIT");
    }
}

/* The sync thread: makes the writer's batches durable, acknowledges them and delivers
 * their rows, and the rows other processes committed when the writer saw some. */
static void *syncer_main(void *arg)
{
    struct sqlite_store *s = arg;
    thread_name("rc-sql-sync");
    for (;;) {
        pthread_mutex_lock(&s->smu);
        while (!s->c_head && !s->external && !s->writer_done)
            pthread_cond_wait(&s->scv, &s->smu);
        struct committed *list = s->c_head;
        s->c_head = s->c_tail = NULL;
        bool external = s->external, done = s->writer_done;
        s->external = false;
        pthread_mutex_unlock(&s->smu);

        int mask = external ? SCAN_ALL : 0;
        for (struct committed *c = list; c; c = c->next)
            mask |= c->mask;
        if (list || mask) {
            int64_t t0 = clock_mono_us();
            sync_round(s, list, mask);
            if (external)
                metrics_bus_notification(clock_mono_us() - t0);
        }
        if (done && !list && !external)
            break;
    }
    return NULL;
}

/* The writer thread: group commit; the sync thread does the rest. */
static void *writer_main(void *arg)
{
    struct sqlite_store *s = arg;
    thread_name("rc-sql-writer");
    int64_t next_poll = 0;
    for (;;) {
        bool stopped;
        struct store_req *batch =
            store_queue_take(&s->wq, (size_t)s->batch_max, s->data_poll_ms, &stopped);
        if (batch)
            commit_batch(s, batch);
        /* Commits by other processes: looked for every data_poll_ms, busy or not. */
        if ((s->listener || s->notif_listener || s->docop_listener) &&
            clock_mono_ms() >= next_poll) {
            next_poll = clock_mono_ms() + s->data_poll_ms;
            poll_external(s);
        }
        if (stopped && !batch)
            break;
    }
    pthread_mutex_lock(&s->smu);
    s->writer_done = true;
    pthread_cond_signal(&s->scv);
    pthread_mutex_unlock(&s->smu);
    return NULL;
}

/* How often the reader thread checkpoints the WAL into the database file. */
#define CHECKPOINT_MS 200

/* Copies committed WAL pages into the database file without blocking the writer. */
static void checkpoint(struct sqlite_store *s)
{
    int log_frames = 0, done = 0;
    int rc = sqlite3_wal_checkpoint_v2(s->r.db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames,
                                       &done);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY)
        log_warn("checkpoint failed", "err=%s", log_v(sqlite3_errmsg(s->r.db)));
    /* Once everything is copied and nobody reads the old WAL, start it over. */
    if (rc == SQLITE_OK && log_frames > 4096 && done == log_frames)
        sqlite3_wal_checkpoint_v2(s->r.db, NULL, SQLITE_CHECKPOINT_RESTART, NULL, NULL);
}

/* How many reads the reader thread takes at a time. */
#define READ_BATCH 64

/* Resets the reader's statements: a stepped statement pins its snapshot. */
static void reader_reset(struct sqlite_store *s)
{
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_reset(s->r.st[i]);
}

/* Runs a batch of reads and completes each. The joins of one room and page in the batch
 * run in one snapshot and share the history the first of them read: a crowd joining a
 * room (a reconnect after a deploy) costs one history read per batch, not one per
 * socket. */
static void read_batch(struct sqlite_store *s, struct store_req *batch)
{
    struct store_req *reqs[READ_BATCH];
    bool done[READ_BATCH] = {false};
    size_t n = 0;
    for (struct store_req *r = batch, *next; r; r = next) {
        next = r->_next;
        r->_next = NULL;
        reqs[n++] = r;
    }
    for (size_t i = 0; i < n; i++) {
        if (done[i])
            continue;
        if (!shares_history(reqs[i])) {
            reqs[i]->rc = run_read(&s->r, reqs[i]);
            reader_reset(s);
            store_complete(reqs[i]);
            continue;
        }
        /* a completed request is gone: the group is known by index */
        size_t group[READ_BATCH], n_group = 0;
        for (size_t j = i; j < n; j++)
            if (!done[j] && shares_history(reqs[j]) && same_history(reqs[i], reqs[j])) {
                group[n_group++] = j;
                done[j] = true;
            }
        bool snap = exec_simple(s->r.db, "BEGIN") == SQLITE_OK;
        const struct store_req *hist = NULL;
        for (size_t k = 0; k < n_group; k++) {
            struct store_req *r = reqs[group[k]];
            r->rc = snap ? do_join_room_from(&s->r, r, hist) : RC_ESTORE;
            if (!r->rc && !hist)
                hist = r;
        }
        if (snap)
            exec_simple(s->r.db, "COMMIT");
        reader_reset(s);
        for (size_t k = 0; k < n_group; k++)
            store_complete(reqs[group[k]]);
    }
}

/* The reader thread: batches of queries, and the periodic checkpoint. */
static void *reader_main(void *arg)
{
    struct sqlite_store *s = arg;
    thread_name("rc-sql-reader");
    int64_t next_checkpoint = clock_mono_ms() + CHECKPOINT_MS;
    for (;;) {
        bool stopped;
        struct store_req *batch = store_queue_take(&s->rq, READ_BATCH, CHECKPOINT_MS, &stopped);
        if (clock_mono_ms() >= next_checkpoint) {
            checkpoint(s);
            next_checkpoint = clock_mono_ms() + CHECKPOINT_MS;
        }
        if (batch)
            read_batch(s, batch);
        if (stopped)
            break;
    }
    return NULL;
}

/* Reads the starting point for delivery from a table: everything already committed
 * counts as delivered. */
static int64_t max_id(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t id = 0;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return id;
}

/* Opens a store at url: connections, migrations, threads. */
static int sq_open(const struct store_options *opts, struct store **out, char *err,
                   size_t errlen)
{
    struct sqlite_store *s = xcalloc(1, sizeof *s);
    s->path = xstrdup(url_path(opts->url));
    s->batch_max = opts->batch_max > 0 ? opts->batch_max : 1024;
    s->data_poll_ms = opts->data_poll_ms > 0 ? opts->data_poll_ms : 20;
    s->sync_full = opts->sync_full;
    s->listener = opts->listener;
    s->listener_arg = opts->listener_arg;
    s->notif_listener = opts->notif_listener;
    s->docop_listener = opts->docop_listener;
    store_queue_init(&s->wq);
    store_queue_init(&s->rq);
    pthread_mutex_init(&s->smu, NULL);
    pthread_cond_init(&s->scv, NULL);
    s->wal_fd = -1;
    int applied;
    int rc = conn_open(&s->w, s->path, s->sync_full, err, errlen);
    if (rc)
        goto fail;
    if ((rc = run_migrations(s->w.db, &applied, err, errlen)))
        goto fail;
    if ((rc = conn_open(&s->r, s->path, s->sync_full, err, errlen)))
        goto fail;
    if ((rc = conn_open(&s->d, s->path, s->sync_full, err, errlen)))
        goto fail;
    if (s->sync_full) {
        /* The sync thread's fdatasync() of the WAL replaces the one inside each COMMIT.
         * The WAL exists by now (the migrations ran in WAL mode) and stays while any
         * connection is open. Without it, COMMIT keeps syncing by itself. */
        char wal[4096];
        snprintf(wal, sizeof wal, "%s-wal", s->path);
        s->wal_fd = open(wal, O_RDONLY | O_CLOEXEC);
        if (s->wal_fd >= 0)
            exec_simple(s->w.db, "PRAGMA synchronous=NORMAL");
        else
            log_warn("cannot open the SQLite WAL; every COMMIT syncs by itself",
                     "path=%s err=\"%s\"", log_v(wal), strerror(errno));
    }
    /* Checkpoints run on the reader thread, off the commit path (a checkpoint inside a
     * commit adds its writes and fsyncs to every client waiting on that batch). */
    exec_simple(s->w.db, "PRAGMA wal_autocheckpoint=0");
    s->delivered_change_id = max_id(s->w.db, "SELECT COALESCE(MAX(id), 0) FROM room_changes");
    s->delivered_notif_id = max_id(s->w.db, "SELECT COALESCE(MAX(id), 0) FROM notifications");
    s->delivered_docop_id = max_id(s->w.db, "SELECT COALESCE(MAX(id), 0) FROM document_ops");
    if (pthread_create(&s->syncer, NULL, syncer_main, s)) {
        snprintf(err, errlen, "cannot start the store sync thread");
        rc = RC_ESTORE;
        goto fail;
    }
    if (pthread_create(&s->writer, NULL, writer_main, s)) {
        pthread_mutex_lock(&s->smu);
        s->writer_done = true;
        pthread_cond_signal(&s->scv);
        pthread_mutex_unlock(&s->smu);
        pthread_join(s->syncer, NULL);
        snprintf(err, errlen, "cannot start the store writer thread");
        rc = RC_ESTORE;
        goto fail;
    }
    if (pthread_create(&s->reader, NULL, reader_main, s)) {
        store_queue_stop(&s->wq);
        pthread_join(s->writer, NULL);
        pthread_join(s->syncer, NULL);
        snprintf(err, errlen, "cannot start the store reader thread");
        rc = RC_ESTORE;
        goto fail;
    }
    s->threads_started = true;
    *out = &s->base;
    return 0;
fail:
    conn_close(&s->w);
    conn_close(&s->r);
    conn_close(&s->d);
    if (s->wal_fd >= 0)
        close(s->wal_fd);
    pthread_mutex_destroy(&s->smu);
    pthread_cond_destroy(&s->scv);
    store_queue_cleanup(&s->wq);
    store_queue_cleanup(&s->rq);
    free(s->path);
    free(s);
    return rc;
}

static int sq_migrate(const char *url, int *applied, char *err, size_t errlen)
{
    struct conn c;
    int rc = conn_open(&c, url_path(url), true, err, errlen);
    if (rc)
        return rc;
    rc = run_migrations(c.db, applied, err, errlen);
    conn_close(&c);
    return rc;
}

static void sq_set_listener(struct store *base, store_change_listener fn, void *arg)
{
    struct sqlite_store *s = (struct sqlite_store *)base;
    s->listener = fn;
    s->listener_arg = arg;
}

static void sq_set_listeners(struct store *base, const struct store_listeners *l)
{
    struct sqlite_store *s = (struct sqlite_store *)base;
    s->listener = l->changes;
    s->notif_listener = l->notifs;
    s->docop_listener = l->docops;
    s->listener_arg = l->arg;
}

static void sq_submit(struct store *base, struct store_req *req)
{
    struct sqlite_store *s = (struct sqlite_store *)base;
    store_queue_push(store_op_is_write(req->op) ? &s->wq : &s->rq, req);
}

static void sq_close(struct store *base)
{
    struct sqlite_store *s = (struct sqlite_store *)base;
    store_queue_stop(&s->wq);
    store_queue_stop(&s->rq);
    if (s->threads_started) {
        pthread_join(s->writer, NULL);
        pthread_join(s->syncer, NULL); /* after the writer: it drains what was committed */
        pthread_join(s->reader, NULL);
    }
    conn_close(&s->w);
    conn_close(&s->r);
    conn_close(&s->d);
    if (s->wal_fd >= 0)
        close(s->wal_fd);
    pthread_mutex_destroy(&s->smu);
    pthread_cond_destroy(&s->scv);
    store_queue_cleanup(&s->wq);
    store_queue_cleanup(&s->rq);
    free(s->path);
    free(s);
}

const struct store_ops store_sqlite_ops = {
    .scheme = "sqlite:",
    .open = sq_open,
    .migrate = sq_migrate,
    .set_listener = sq_set_listener,
    .set_listeners = sq_set_listeners,
    .submit = sq_submit,
    .close = sq_close,
};
