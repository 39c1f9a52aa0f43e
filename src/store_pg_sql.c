/* store_pg_sql.c - the SQL of the PostgreSQL store (store_pg_int.h): the text of every
 * prepared statement, the arguments a request binds to its statement, and the readers
 * that turn result rows into the request's fields (and into rows for the bus).
 *
 * store_pg.c sends the statements and checks each result's status; nothing here touches
 * a connection. */
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "store_pg_int.h"
#include "util/xmalloc.h"

/* ---- statements ----------------------------------------------------------------------- */

/* The columns of a message that the message reader reads (read_msg), of the rows of
 * MSG_SELECT aliased g. */
#define MSG_COLS                                                                                   \
    "g.id, g.seq, g.user_id, g.body, rowcast_iso(g.inserted_at), g.reply_to, "                     \
    "rowcast_iso(g.edited_at), rowcast_iso(g.deleted_at), g.reply_count, g.reactions"
/* A message t with what is counted for it: its replies that are not deleted, and its
 * reactions as [{"emoji":…,"count":N},…] by emoji (bytewise, as SQLite orders them), NULL
 * when there are none. */
#define MSG_SELECT                                                                                 \
    "SELECT t.id, t.seq, t.user_id, t.body, t.inserted_at, t.reply_to, t.edited_at, "              \
    "t.deleted_at, (SELECT count(*) FROM messages x WHERE x.room_id = t.room_id "                  \
    "AND x.reply_to = t.seq AND x.deleted_at IS NULL) AS reply_count, "                           \
    "(SELECT '[' || string_agg(format('{\"emoji\":%s,\"count\":%s}', to_json(z.emoji), z.n), "    \
    "',' ORDER BY z.emoji COLLATE \"C\") || ']' FROM (SELECT emoji, count(*) AS n "                \
    "FROM reactions e WHERE e.room_id = t.room_id AND e.seq = t.seq GROUP BY emoji) z) "         \
    "AS reactions FROM messages t "
#define DOCOP_COLS STORE_PG_DOCOP_COLS("g.")
#define CHANGE_COLS STORE_PG_CHANGE_COLS("c.")
/* A room's columns, as read_room reads them (6 columns). */
#define ROOM_COLS(t)                                                                               \
    t "id, " t "name, " t "last_seq, rowcast_iso(" t "created_at), " t "doc_last_seq, " t "version"
/* The messages after member m's read cursor in room r that others wrote and that are not
 * deleted. */
#define UNREAD                                                                                     \
    "(SELECT count(*) FROM messages x WHERE x.room_id = r.id AND x.seq > m.last_read_seq "        \
    "AND x.user_id <> m.user_id AND x.deleted_at IS NULL)"
/* Room and membership columns of the join queries (11 columns), with unread (an
 * expression) for the member's unread count. */
#define JOIN_COLS(unread)                                                                          \
    ROOM_COLS("r.") ", m.role, COALESCE(u.name, m.user_id), u.avatar_url, m.last_read_seq, "      \
    unread ", "
#define JOIN_FROM                                                                                  \
    "FROM rooms r LEFT JOIN memberships m ON m.room_id = r.id AND m.user_id = $2 "                 \
    "LEFT JOIN users u ON u.id = m.user_id "
/* The change columns that follow the columns a write function returns about its request:
 * the change it logged (all NULL when none). */
#define FN_CHANGE_COLS "(o_change).id, (o_change).version, (o_change).seq, (o_change).user_id, " \
                       "(o_change).event, (o_change).payload, (o_change).inserted_at"

/* The page and join reads are one statement each (one snapshot): the room's row, left
 * joined with the page, so no row means no room and a row with NULL message columns
 * means an empty page. Bounds absent from the request are passed as INT64_MAX; a
 * negative limit as NULL (no limit, as in SQLite). The writes of the message life are
 * calls of the functions of migrations/postgres/0006, which answer a refusal with a
 * status instead of an error: the batch's transaction goes on. */
static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SAVEPOINT] = "SAVEPOINT r",
    [ST_RELEASE] = "RELEASE SAVEPOINT r",
    [ST_ROLLBACK_TO] = "ROLLBACK TO SAVEPOINT r",
    /* Row locks on the batch's rooms in one global order: two nodes whose batches touch
     * the same rooms in different orders wait for each other instead of deadlocking. */
    [ST_LOCK_ROOMS] = "SELECT 1 FROM rooms WHERE id = ANY($1::text[]) ORDER BY id COLLATE \"C\" "
                      "FOR NO KEY UPDATE",
    /* The same for the per-user locks that order notification ids (0001_init.sql). */
    [ST_LOCK_USERS] = "SELECT rowcast_lock_notification_users($1::text[])",
    [ST_USER_PUT] = "INSERT INTO users(id, name, avatar_url) VALUES ($1, $2, $3) "
                    "ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
                    "avatar_url = excluded.avatar_url "
                    "RETURNING id, name, avatar_url, rowcast_iso(created_at)",
    [ST_ROOM_CREATE] = "INSERT INTO rooms(id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING "
                       "RETURNING " ROOM_COLS(""),
    [ST_ROOM_DELETE] = "DELETE FROM rooms WHERE id = $1",
    /* Creates the user (named by its id) if needed, upserts the membership, returns the
     * member's role, name and avatar. A missing room fails the memberships foreign key
     * (RC_ENOTFOUND), a bad role its check (RC_EINVAL); the savepoint then drops the user
     * row too. */
    [ST_MEMBER_PUT] = "WITH u AS (INSERT INTO users(id, name) VALUES ($2, $2) "
                      "ON CONFLICT (id) DO NOTHING RETURNING name, avatar_url), "
                      "m AS (INSERT INTO memberships(room_id, user_id, role) VALUES ($1, $2, $3) "
                      "ON CONFLICT (room_id, user_id) DO UPDATE SET role = excluded.role "
                      "RETURNING role) "
                      "SELECT m.role, COALESCE(u.name, x.name, $2), "
                      "COALESCE(u.avatar_url, x.avatar_url) "
                      "FROM m LEFT JOIN u ON true LEFT JOIN users x ON x.id = $2",
    [ST_MEMBER_DELETE] = "DELETE FROM memberships WHERE room_id = $1 AND user_id = $2",
    /* $1 room, $2 user, $3 body, $4 reply_to (0: none) */
    [ST_MSG_ADD] = "SELECT o_id, o_seq, o_inserted_at, " FN_CHANGE_COLS
                   " FROM rowcast_message_add($1, $2, $3, $4)",
    /* A run of messages in one statement, inserted in the arrays' order (the seq trigger
     * numbers each room's rows in that order). */
    [ST_MSG_ADD_MANY] = "SELECT o_id, o_room, o_seq, o_inserted_at, " FN_CHANGE_COLS
                        " FROM rowcast_messages_add($1::text[], $2::text[], $3::text[], "
                        "$4::bigint[])",
    [ST_NOTIF_ADD] = "INSERT INTO notifications(user_id, payload) VALUES ($1, $2::jsonb) "
                     "RETURNING " STORE_PG_NOTIF_COLS(""),
    [ST_NOTIF_READ] = "UPDATE notifications SET read_at = now() WHERE id = $1 AND user_id = $2",
    [ST_DOCOP_ADD] = "INSERT INTO document_ops(room_id, user_id, operation, data) "
                     "VALUES ($1, $2, $3, $4::jsonb) "
                     "RETURNING id, seq, data::text, rowcast_iso(inserted_at)",
    /* $1 room, $2 seq, $3 body, $4 user (NULL: anyone), $5 true to delete, false to edit */
    [ST_MSG_CHANGE] = "SELECT o_status, o_id, o_author, o_inserted_at, o_reply_to, o_edited_at, "
                      "o_deleted_at, o_version, " FN_CHANGE_COLS
                      " FROM rowcast_message_change($1, $2, $3, $4, $5)",
    /* $1 room, $2 seq, $3 user, $4 emoji, $5 true to add, false to remove */
    [ST_REACTION] = "SELECT o_status, o_version, " FN_CHANGE_COLS
                    " FROM rowcast_reaction_write($1, $2, $3, $4, $5)",
    /* $1 room, $2 user, $3 seq */
    [ST_READ_MARK] = "SELECT o_status, o_last_seq, o_role, o_last_read_seq, o_unread "
                     "FROM rowcast_read_mark($1, $2, $3)",
    [ST_PING] = "SELECT 1",
    [ST_ROOM_GET] = "SELECT " ROOM_COLS("") " FROM rooms WHERE id = $1",
    [ST_MEMBERS_LIST] = "SELECT m.user_id, m.role, COALESCE(u.name, m.user_id) FROM rooms r "
                        "LEFT JOIN memberships m ON m.room_id = r.id "
                        "LEFT JOIN users u ON u.id = m.user_id "
                        "WHERE r.id = $1 ORDER BY m.user_id COLLATE \"C\"",
    /* $1 room, $2 after, $3 before, $4 limit */
    [ST_PAGE_ASC] = "SELECT " MSG_COLS " FROM rooms r LEFT JOIN LATERAL (" MSG_SELECT
                    "WHERE t.room_id = r.id AND t.seq > $2 AND t.seq < $3 ORDER BY t.seq "
                    "LIMIT $4) g ON true WHERE r.id = $1 ORDER BY g.seq",
    /* $1 room, $2 before, $3 limit: the last `limit` below before */
    [ST_PAGE_DESC] = "SELECT " MSG_COLS " FROM rooms r LEFT JOIN LATERAL (" MSG_SELECT
                     "WHERE t.room_id = r.id AND t.seq < $2 ORDER BY t.seq DESC LIMIT $3) g "
                     "ON true WHERE r.id = $1 ORDER BY g.seq",
    /* $1 room, $2 user, $3 after, $4 before, $5 limit; no history for a non-member */
    [ST_JOIN_ASC] = "SELECT " JOIN_COLS(UNREAD) MSG_COLS " " JOIN_FROM "LEFT JOIN LATERAL ("
                    MSG_SELECT "WHERE m.role IS NOT NULL AND t.room_id = r.id AND t.seq > $3 "
                    "AND t.seq < $4 ORDER BY t.seq LIMIT $5) g ON true "
                    "WHERE r.id = $1 ORDER BY g.seq",
    /* $1 room, $2 user, $3 before, $4 limit */
    [ST_JOIN_DESC] = "SELECT " JOIN_COLS(UNREAD) MSG_COLS " " JOIN_FROM "LEFT JOIN LATERAL ("
                     MSG_SELECT "WHERE m.role IS NOT NULL AND t.room_id = r.id AND t.seq < $3 "
                     "ORDER BY t.seq DESC LIMIT $4) g ON true WHERE r.id = $1 ORDER BY g.seq",
    /* $1 room, $2 user, $3 after, $4 limit */
    [ST_DOC_JOIN_ASC] = "SELECT " JOIN_COLS("0") DOCOP_COLS " " JOIN_FROM "LEFT JOIN LATERAL ("
                        "SELECT id, seq, user_id, operation, data, inserted_at "
                        "FROM document_ops WHERE m.role IS NOT NULL AND room_id = r.id "
                        "AND seq > $3 ORDER BY seq LIMIT $4) g ON true "
                        "WHERE r.id = $1 ORDER BY g.seq",
    /* $1 room, $2 user, $3 limit */
    [ST_DOC_JOIN_DESC] = "SELECT " JOIN_COLS("0") DOCOP_COLS " " JOIN_FROM "LEFT JOIN LATERAL ("
                         "SELECT id, seq, user_id, operation, data, inserted_at "
                         "FROM document_ops WHERE m.role IS NOT NULL AND room_id = r.id "
                         "ORDER BY seq DESC LIMIT $3) g ON true "
                         "WHERE r.id = $1 ORDER BY g.seq",
    /* $1 user, $2 limit: the newest id (read or not), then the unread, oldest first */
    [ST_NOTIF_UNREAD] = "SELECT x.newest, " STORE_PG_NOTIF_COLS("n.") " "
                        "FROM (SELECT COALESCE(max(id), 0) AS newest FROM notifications "
                        "WHERE user_id = $1) x LEFT JOIN LATERAL ("
                        "SELECT id, payload, inserted_at FROM notifications "
                        "WHERE user_id = $1 AND read_at IS NULL ORDER BY id LIMIT $2) n "
                        "ON true ORDER BY n.id",
    /* $1 room, $2 user, $3 since_version, $4 limit */
    [ST_JOIN_CHANGES] = "SELECT " JOIN_COLS(UNREAD) CHANGE_COLS " " JOIN_FROM
                        "LEFT JOIN LATERAL (SELECT * FROM room_changes WHERE m.role IS NOT NULL "
                        "AND room_id = r.id AND version > $3 ORDER BY version LIMIT $4) c "
                        "ON true WHERE r.id = $1 ORDER BY c.version",
    /* $1 room, $2 since_version, $3 limit */
    [ST_CHANGES_PAGE] = "SELECT " ROOM_COLS("r.") ", " CHANGE_COLS " FROM rooms r "
                        "LEFT JOIN LATERAL (SELECT * FROM room_changes WHERE room_id = r.id "
                        "AND version > $2 ORDER BY version LIMIT $3) c ON true "
                        "WHERE r.id = $1 ORDER BY c.version",
    /* $1 room, $2 the parent's seq, $3 after, $4 limit; no row: no room, a NULL first
     * column: no such parent */
    [ST_REPLIES] = "SELECT p.seq, " MSG_COLS " FROM rooms r "
                   "LEFT JOIN messages p ON p.room_id = r.id AND p.seq = $2 "
                   "LEFT JOIN LATERAL (" MSG_SELECT "WHERE p.seq IS NOT NULL "
                   "AND t.room_id = r.id AND t.reply_to = $2 AND t.seq > $3 ORDER BY t.seq "
                   "LIMIT $4) g ON true WHERE r.id = $1 ORDER BY g.seq",
    /* $1 user */
    [ST_USER_ROOMS] = "SELECT r.id, r.name, m.role, r.last_seq, m.last_read_seq, " UNREAD " "
                      "FROM memberships m JOIN rooms r ON r.id = m.room_id "
                      "WHERE m.user_id = $1 ORDER BY r.id COLLATE \"C\"",
    /* $1 room, $2 user (NULL: the server), $3 event, $4 payload; the change as logged
     * (0008_broadcasts.sql; an unknown room raises foreign_key_violation) */
    [ST_BROADCAST_ADD] = "SELECT " STORE_PG_CHANGE_COLS("")
                         " FROM rowcast_room_broadcast_log($1, $3, $4::jsonb, $2)",
    /* $1 room, $2 user, $3 since_version, $4 since ms (NULL: no broadcasts), $5 limit.
     * Sorted by version + 0: ordered by version the (generic) plan walks the version index
     * and reads the room's whole log to find the few recent broadcasts; this way it reads
     * those through room_changes_broadcasts (0008) and sorts them. */
    [ST_BROADCAST_JOIN] = "SELECT " JOIN_COLS("0") CHANGE_COLS " " JOIN_FROM
                          "LEFT JOIN LATERAL (SELECT * FROM room_changes WHERE m.role IS NOT NULL "
                          "AND room_id = r.id AND event = 'broadcast' AND version > $3 "
                          "AND inserted_at >= 'epoch'::timestamptz + $4::bigint * "
                          "interval '1 millisecond' ORDER BY version + 0 LIMIT $5) c "
                          "ON true WHERE r.id = $1 ORDER BY c.version",
};

const char *store_pg_stmt_sql(enum store_pg_stmt id)
{
    return stmt_sql[id];
}

void store_pg_stmt_name(enum store_pg_stmt id, char out[8])
{
    snprintf(out, 8, "s%d", (int)id);
}

/* ---- arguments ------------------------------------------------------------------------ */

/* Appends a text argument. */
static void arg_str(struct store_pg_args *a, const char *s)
{
    a->v[a->n++] = s;
}

/* Appends an integer argument. */
static void arg_int(struct store_pg_args *a, int64_t x)
{
    char *b = a->num[a->nnum++];
    snprintf(b, sizeof a->num[0], "%" PRId64, x);
    a->v[a->n++] = b;
}

/* Appends a LIMIT argument: a negative limit means none (NULL), as in SQLite. */
static void arg_limit(struct store_pg_args *a, int limit)
{
    if (limit < 0)
        arg_str(a, NULL);
    else
        arg_int(a, limit);
}

/* Appends a text argument that the arguments own (s malloc'd). */
static void arg_owned(struct store_pg_args *a, char *s)
{
    a->owned[a->nowned++] = s;
    arg_str(a, s);
}

void store_pg_args_cleanup(struct store_pg_args *a)
{
    for (int i = 0; i < a->nowned; i++)
        free(a->owned[i]);
    a->nowned = 0;
}

/* ---- rows ----------------------------------------------------------------------------- */

/* Copies a column as a malloc'd string (NULL for SQL NULL). */
static char *col_str(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return NULL;
    return xstrndup(PQgetvalue(res, row, col), (size_t)PQgetlength(res, row, col));
}

/* Copies a column as a malloc'd string (a copy of dflt for SQL NULL). */
static char *col_str_or(const PGresult *res, int row, int col, const char *dflt)
{
    return PQgetisnull(res, row, col) ? xstrdup(dflt) : col_str(res, row, col);
}

/* Reads an integer column (0 for SQL NULL). */
static int64_t col_i64(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

/* Copies a timestamp column into a fixed buffer. */
static void col_ts(const PGresult *res, int row, int col, char out[32])
{
    snprintf(out, 32, "%s", PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col));
}

/* Reads a room from columns col.. (ROOM_COLS: id, name, last_seq, created_at,
 * doc_last_seq, version). */
static void read_room(const PGresult *res, int row, int col, struct store_room *r)
{
    r->id = col_str(res, row, col);
    r->name = col_str(res, row, col + 1);
    r->last_seq = col_i64(res, row, col + 2);
    col_ts(res, row, col + 3, r->created_at);
    r->doc_last_seq = col_i64(res, row, col + 4);
    r->version = col_i64(res, row, col + 5);
}

/* Reads a message from columns col.. (MSG_COLS) of the room room_id. */
static void read_msg(const PGresult *res, int row, int col, const char *room_id,
                     struct store_msg *out)
{
    out->id = col_i64(res, row, col);
    out->seq = col_i64(res, row, col + 1);
    out->room_id = xstrdup(room_id);
    out->user_id = col_str_or(res, row, col + 2, "");
    out->body = col_str_or(res, row, col + 3, "");
    col_ts(res, row, col + 4, out->inserted_at);
    out->reply_to = col_i64(res, row, col + 5);
    col_ts(res, row, col + 6, out->edited_at);
    col_ts(res, row, col + 7, out->deleted_at);
    out->reply_count = col_i64(res, row, col + 8);
    out->reactions = col_str(res, row, col + 9);
}

void store_pg_read_docop(const PGresult *res, int row, int col, const char *room_id,
                         struct store_docop *out)
{
    out->id = col_i64(res, row, col);
    out->seq = col_i64(res, row, col + 1);
    out->room_id = xstrdup(room_id);
    out->user_id = col_str_or(res, row, col + 2, "");
    out->operation = col_str_or(res, row, col + 3, "");
    out->data = col_str_or(res, row, col + 4, "null");
    col_ts(res, row, col + 5, out->inserted_at);
}

void store_pg_read_notif(const PGresult *res, int row, int col, const char *user_id,
                         struct store_notif *out)
{
    out->id = col_i64(res, row, col);
    out->user_id = xstrdup(user_id);
    out->payload = col_str_or(res, row, col + 1, "{}");
    col_ts(res, row, col + 2, out->inserted_at);
}

void store_pg_read_change(const PGresult *res, int row, int col, const char *room_id,
                          struct store_change *out)
{
    out->id = col_i64(res, row, col);
    out->version = col_i64(res, row, col + 1);
    out->seq = col_i64(res, row, col + 2);
    out->room_id = xstrdup(room_id);
    out->user_id = col_str_or(res, row, col + 3, "");
    out->event = col_str_or(res, row, col + 4, "");
    out->payload = col_str_or(res, row, col + 5, "{}");
    col_ts(res, row, col + 6, out->inserted_at);
}

/* Fills req->member from the first row's columns col.. (role, name, avatar_url,
 * last_read_seq, unread) and the request. */
static void read_member(const PGresult *res, int col, struct store_req *req)
{
    req->member.room_id = xstrdup(req->room_id);
    req->member.user_id = xstrdup(req->user_id);
    req->member.role = col_str(res, 0, col);
    req->member.name = col_str(res, 0, col + 1);
    req->member.avatar_url = col_str(res, 0, col + 2);
    req->member.last_read_seq = col_i64(res, 0, col + 3);
    req->member.unread = col_i64(res, 0, col + 4);
}

/* Adds to req->changes the change whose columns (CHANGE_COLS) start at col of row, if
 * there is one (a write that changed nothing returns NULLs); returns its version, or 0. */
static int64_t read_logged_change(const PGresult *res, int row, int col, struct store_req *req)
{
    if (PQgetisnull(res, row, col))
        return 0;
    req->changes = xrealloc(req->changes, (req->n_changes + 1) * sizeof *req->changes);
    struct store_change *c = &req->changes[req->n_changes++];
    memset(c, 0, sizeof *c);
    store_pg_read_change(res, row, col, req->room_id, c);
    return c->version;
}

/* Fills req->msg (and the change it logged) from a row of ST_MSG_ADD or ST_MSG_ADD_MANY:
 * id in column 0, then seq and inserted_at from column seq, then the change. */
static void read_added_msg(const PGresult *res, int row, int seq, struct store_req *req)
{
    req->msg.id = col_i64(res, row, 0);
    req->msg.seq = col_i64(res, row, seq);
    col_ts(res, row, seq + 1, req->msg.inserted_at);
    req->msg.room_id = xstrdup(req->room_id);
    req->msg.user_id = xstrdup(req->user_id);
    req->msg.body = xstrdup(req->body);
    req->msg.reply_to = req->reply_to > 0 ? req->reply_to : 0;
    req->version = read_logged_change(res, row, seq + 2, req);
}

/* True when a command changed at least one row. */
static bool affected(const PGresult *res)
{
    const char *n = PQcmdTuples((PGresult *)res);
    return n && *n && strcmp(n, "0") != 0;
}

/* ---- reads ---------------------------------------------------------------------------- */

enum store_pg_stmt store_pg_read_stmt(const struct store_req *r, struct store_pg_args *a)
{
    int64_t before = r->before_seq >= 0 ? r->before_seq : INT64_MAX;
    switch (r->op) {
    case STORE_PING: return ST_PING;
    case STORE_ROOM_GET: arg_str(a, r->room_id); return ST_ROOM_GET;
    case STORE_MEMBERS_LIST: arg_str(a, r->room_id); return ST_MEMBERS_LIST;
    case STORE_MESSAGES_PAGE:
        arg_str(a, r->room_id);
        if (r->after_seq >= 0) {
            arg_int(a, r->after_seq);
            arg_int(a, before);
            arg_limit(a, r->limit);
            return ST_PAGE_ASC;
        }
        arg_int(a, before);
        arg_limit(a, r->limit);
        return ST_PAGE_DESC;
    case STORE_JOIN_ROOM:
        arg_str(a, r->room_id);
        arg_str(a, r->user_id);
        if (r->since_version >= 0) {
            arg_int(a, r->since_version);
            arg_limit(a, r->limit);
            return ST_JOIN_CHANGES;
        }
        if (r->after_seq >= 0) {
            arg_int(a, r->after_seq);
            arg_int(a, before);
            arg_limit(a, r->limit);
            return ST_JOIN_ASC;
        }
        arg_int(a, before);
        arg_limit(a, r->limit);
        return ST_JOIN_DESC;
    case STORE_CHANGES_PAGE:
        arg_str(a, r->room_id);
        arg_int(a, r->since_version);
        arg_limit(a, r->limit);
        return ST_CHANGES_PAGE;
    case STORE_REPLIES_PAGE:
        arg_str(a, r->room_id);
        arg_int(a, r->seq);
        arg_int(a, r->after_seq);
        arg_limit(a, r->limit);
        return ST_REPLIES;
    case STORE_USER_ROOMS: arg_str(a, r->user_id); return ST_USER_ROOMS;
    case STORE_BROADCAST_JOIN:
        arg_str(a, r->room_id);
        arg_str(a, r->user_id);
        arg_int(a, r->since_version);
        if (r->since_ms >= 0) /* later than STORE_MS_MAX may be out of timestamp's range */
            arg_int(a, r->since_ms < STORE_MS_MAX ? r->since_ms : STORE_MS_MAX);
        else
            arg_str(a, NULL);
        arg_limit(a, r->limit);
        return ST_BROADCAST_JOIN;
    case STORE_DOC_JOIN: /* like SQLite: after_seq, or the latest; before_seq unused */
        arg_str(a, r->room_id);
        arg_str(a, r->user_id);
        if (r->after_seq >= 0) {
            arg_int(a, r->after_seq);
            arg_limit(a, r->limit);
            return ST_DOC_JOIN_ASC;
        }
        arg_limit(a, r->limit);
        return ST_DOC_JOIN_DESC;
    case STORE_NOTIFY_UNREAD:
        arg_str(a, r->user_id);
        arg_limit(a, r->limit);
        return ST_NOTIF_UNREAD;
    default: return ST_COUNT;
    }
}

/* Fills req->msgs from the message columns (from col) of every row that has one. */
static void read_msgs(const PGresult *res, int col, struct store_req *req)
{
    int rows = PQntuples(res);
    for (int i = 0; i < rows; i++) {
        if (PQgetisnull(res, i, col))
            continue;
        if (!req->msgs)
            req->msgs = xcalloc((size_t)rows, sizeof *req->msgs);
        read_msg(res, i, col, req->room_id, &req->msgs[req->n_msgs++]);
    }
}

/* Fills req->changes from the change columns (from col) of every row that has one. */
static void read_changes(const PGresult *res, int col, struct store_req *req)
{
    int rows = PQntuples(res);
    for (int i = 0; i < rows; i++) {
        if (PQgetisnull(res, i, col))
            continue;
        if (!req->changes)
            req->changes = xcalloc((size_t)rows, sizeof *req->changes);
        store_pg_read_change(res, i, col, req->room_id, &req->changes[req->n_changes++]);
    }
}

/* The first column after a join row's room and member (JOIN_COLS). */
#define JOIN_NCOLS 11

/* Fills req->room and req->member from a join row; RC_EFORBIDDEN for a non-member. */
static int read_join_head(const PGresult *res, struct store_req *req)
{
    read_room(res, 0, 0, &req->room);
    if (PQgetisnull(res, 0, 6))
        return RC_EFORBIDDEN;
    read_member(res, 6, req);
    return 0;
}

/* Fills req->user_rooms from the rows of ST_USER_ROOMS. */
static void read_user_rooms(const PGresult *res, struct store_req *req)
{
    int rows = PQntuples(res);
    if (rows)
        req->user_rooms = xcalloc((size_t)rows, sizeof *req->user_rooms);
    for (int i = 0; i < rows; i++) {
        struct store_user_room *u = &req->user_rooms[req->n_user_rooms++];
        u->room_id = col_str(res, i, 0);
        u->name = col_str(res, i, 1);
        u->role = col_str(res, i, 2);
        u->last_seq = col_i64(res, i, 3);
        u->last_read_seq = col_i64(res, i, 4);
        u->unread = col_i64(res, i, 5);
    }
}

int store_pg_parse_read(struct store_req *req, const PGresult *res)
{
    int rows = PQntuples(res);
    switch (req->op) {
    case STORE_PING: return 0;
    case STORE_ROOM_GET:
        if (!rows)
            return RC_ENOTFOUND;
        read_room(res, 0, 0, &req->room);
        return 0;
    case STORE_MEMBERS_LIST:
        if (!rows)
            return RC_ENOTFOUND;
        for (int i = 0; i < rows; i++) {
            if (PQgetisnull(res, i, 0))
                continue;
            if (!req->members)
                req->members = xcalloc((size_t)rows, sizeof *req->members);
            struct store_member *m = &req->members[req->n_members++];
            m->room_id = xstrdup(req->room_id);
            m->user_id = col_str(res, i, 0);
            m->role = col_str(res, i, 1);
            m->name = col_str(res, i, 2);
        }
        return 0;
    case STORE_MESSAGES_PAGE:
        if (!rows)
            return RC_ENOTFOUND;
        read_msgs(res, 0, req);
        return 0;
    case STORE_JOIN_ROOM: {
        if (!rows)
            return RC_ENOTFOUND;
        int rc = read_join_head(res, req);
        if (!rc && req->since_version >= 0)
            read_changes(res, JOIN_NCOLS, req);
        else if (!rc)
            read_msgs(res, JOIN_NCOLS, req);
        return rc;
    }
    case STORE_CHANGES_PAGE:
        if (!rows)
            return RC_ENOTFOUND;
        read_room(res, 0, 0, &req->room);
        read_changes(res, 6, req);
        return 0;
    case STORE_BROADCAST_JOIN: {
        if (!rows)
            return RC_ENOTFOUND;
        int rc = read_join_head(res, req);
        if (!rc)
            read_changes(res, JOIN_NCOLS, req);
        return rc;
    }
    case STORE_REPLIES_PAGE:
        if (!rows || PQgetisnull(res, 0, 0))
            return RC_ENOTFOUND;
        read_msgs(res, 1, req);
        return 0;
    case STORE_USER_ROOMS: read_user_rooms(res, req); return 0;
    case STORE_DOC_JOIN: {
        if (!rows)
            return RC_ENOTFOUND;
        int rc = read_join_head(res, req);
        if (rc)
            return rc;
        for (int i = 0; i < rows; i++) {
            if (PQgetisnull(res, i, JOIN_NCOLS))
                continue;
            if (!req->docops)
                req->docops = xcalloc((size_t)rows, sizeof *req->docops);
            store_pg_read_docop(res, i, JOIN_NCOLS, req->room_id, &req->docops[req->n_docops++]);
        }
        return 0;
    }
    case STORE_NOTIFY_UNREAD:
        if (!rows)
            return RC_ESTORE;
        req->id = col_i64(res, 0, 0);
        for (int i = 0; i < rows; i++) {
            if (PQgetisnull(res, i, 1))
                continue;
            if (!req->notifs)
                req->notifs = xcalloc((size_t)rows, sizeof *req->notifs);
            store_pg_read_notif(res, i, 1, req->user_id, &req->notifs[req->n_notifs++]);
        }
        return 0;
    default: return RC_EINVAL;
    }
}

/* ---- writes --------------------------------------------------------------------------- */

/* Builds a notification's payload {"message":…,"data":…}; NULL without a message. */
static char *notif_payload(const struct store_req *req)
{
    json_t *msg = req->body ? json_string(req->body) : NULL; /* NULL: not UTF-8 */
    if (!msg)
        return NULL;
    json_t *p = json_object();
    json_object_set_new(p, "message", msg);
    json_t *d = req->data ? json_loads(req->data, JSON_DECODE_ANY, NULL) : NULL;
    json_object_set_new(p, "data", d ? d : json_null());
    char *payload = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    return payload;
}

enum store_pg_stmt store_pg_write_stmt(const struct store_req *r, struct store_pg_args *a)
{
    switch (r->op) {
    case STORE_USER_PUT:
        arg_str(a, r->user_id);
        arg_str(a, r->name);
        arg_str(a, r->avatar_url);
        return ST_USER_PUT;
    case STORE_ROOM_CREATE:
        arg_str(a, r->room_id);
        arg_str(a, r->name);
        return ST_ROOM_CREATE;
    case STORE_ROOM_DELETE: arg_str(a, r->room_id); return ST_ROOM_DELETE;
    case STORE_MEMBER_PUT:
        arg_str(a, r->room_id);
        arg_str(a, r->user_id);
        arg_str(a, r->role);
        return ST_MEMBER_PUT;
    case STORE_MEMBER_DELETE:
        arg_str(a, r->room_id);
        arg_str(a, r->user_id);
        return ST_MEMBER_DELETE;
    case STORE_MESSAGE_ADD:
        arg_str(a, r->room_id);
        arg_str(a, r->user_id);
        arg_str(a, r->body);
        arg_int(a, r->reply_to > 0 ? r->reply_to : 0);
        return ST_MSG_ADD;
    case STORE_MESSAGE_EDIT:
    case STORE_MESSAGE_DELETE:
        if (r->op == STORE_MESSAGE_EDIT && !r->body)
            return ST_COUNT;
        arg_str(a, r->room_id);
        arg_int(a, r->seq);
        arg_str(a, r->op == STORE_MESSAGE_EDIT ? r->body : NULL);
        arg_str(a, r->user_id);
        arg_str(a, r->op == STORE_MESSAGE_DELETE ? "true" : "false");
        return ST_MSG_CHANGE;
    case STORE_REACTION_PUT:
    case STORE_REACTION_DELETE:
        if (!r->user_id || !r->name)
            return ST_COUNT;
        arg_str(a, r->room_id);
        arg_int(a, r->seq);
        arg_str(a, r->user_id);
        arg_str(a, r->name);
        arg_str(a, r->op == STORE_REACTION_PUT ? "true" : "false");
        return ST_REACTION;
    case STORE_READ_MARK:
        arg_str(a, r->room_id);
        arg_str(a, r->user_id);
        arg_int(a, r->seq);
        return ST_READ_MARK;
    case STORE_NOTIFY_ADD: {
        char *payload = notif_payload(r);
        if (!payload)
            return ST_COUNT;
        arg_str(a, r->user_id);
        arg_owned(a, payload);
        return ST_NOTIF_ADD;
    }
    case STORE_NOTIFY_READ:
        arg_int(a, r->id);
        arg_str(a, r->user_id);
        return ST_NOTIF_READ;
    case STORE_DOC_EDIT:
        arg_str(a, r->room_id);
        arg_str(a, r->user_id);
        arg_str(a, r->name);
        arg_str(a, r->data ? r->data : "null");
        return ST_DOCOP_ADD;
    case STORE_BROADCAST_ADD:
        if (!r->name || !r->data) /* the jsonb argument checks the JSON */
            return ST_COUNT;
        arg_str(a, r->room_id);
        arg_str(a, r->user_id);
        arg_str(a, r->name);
        arg_str(a, r->data);
        return ST_BROADCAST_ADD;
    default: return ST_COUNT;
    }
}

void store_pg_clear_write(struct store_req *r)
{
    free(r->user.id);
    free(r->user.name);
    free(r->user.avatar_url);
    memset(&r->user, 0, sizeof r->user);
    free(r->room.id);
    free(r->room.name);
    memset(&r->room, 0, sizeof r->room);
    free(r->member.room_id);
    free(r->member.user_id);
    free(r->member.role);
    free(r->member.name);
    free(r->member.avatar_url);
    memset(&r->member, 0, sizeof r->member);
    store_msg_cleanup(&r->msg);
    memset(&r->msg, 0, sizeof r->msg);
    store_notif_cleanup(&r->notif);
    memset(&r->notif, 0, sizeof r->notif);
    store_docop_cleanup(&r->docop);
    memset(&r->docop, 0, sizeof r->docop);
    for (size_t i = 0; i < r->n_changes; i++)
        store_change_cleanup(&r->changes[i]);
    free(r->changes);
    r->changes = NULL;
    r->n_changes = 0;
    r->version = 0;
}

/* The rc of a write function's status (column 0 of its one row). */
static int status_rc(const PGresult *res)
{
    const char *st = PQgetvalue(res, 0, 0);
    if (!strcmp(st, "ok"))
        return 0;
    if (!strcmp(st, "not_found"))
        return RC_ENOTFOUND;
    if (!strcmp(st, "forbidden"))
        return RC_EFORBIDDEN;
    if (!strcmp(st, "gone"))
        return RC_EGONE;
    return RC_ESTORE;
}

/* Fills req->msg, req->version and req->room.version (and the change) from the row of
 * an edit or a delete (ST_MSG_CHANGE). */
static int read_msg_change(const PGresult *res, struct store_req *req)
{
    int rc = status_rc(res);
    if (rc)
        return rc;
    struct store_msg *m = &req->msg;
    m->room_id = xstrdup(req->room_id);
    m->seq = req->seq;
    m->id = col_i64(res, 0, 1);
    m->user_id = col_str_or(res, 0, 2, "");
    m->body = xstrdup(req->op == STORE_MESSAGE_EDIT ? req->body : "");
    col_ts(res, 0, 3, m->inserted_at);
    m->reply_to = col_i64(res, 0, 4);
    col_ts(res, 0, 5, m->edited_at);
    col_ts(res, 0, 6, m->deleted_at);
    req->room.version = col_i64(res, 0, 7);
    req->version = read_logged_change(res, 0, 8, req);
    return 0;
}

int store_pg_parse_write(struct store_req *req, const PGresult *res)
{
    int rows = PQntuples(res);
    switch (req->op) {
    case STORE_USER_PUT:
        if (rows != 1)
            return RC_ESTORE;
        req->user.id = col_str(res, 0, 0);
        req->user.name = col_str(res, 0, 1);
        req->user.avatar_url = col_str(res, 0, 2);
        col_ts(res, 0, 3, req->user.created_at);
        return 0;
    case STORE_ROOM_CREATE:
        if (rows != 1)
            return RC_ECONFLICT; /* ON CONFLICT DO NOTHING returned no row */
        read_room(res, 0, 0, &req->room);
        return 0;
    case STORE_ROOM_DELETE:
    case STORE_MEMBER_DELETE:
    case STORE_NOTIFY_READ: return affected(res) ? 0 : RC_ENOTFOUND;
    case STORE_MEMBER_PUT:
        if (rows != 1)
            return RC_ESTORE;
        read_member(res, 0, req);
        return 0;
    case STORE_MESSAGE_ADD:
        if (rows != 1)
            return RC_ESTORE;
        read_added_msg(res, 0, 1, req);
        return 0;
    case STORE_MESSAGE_EDIT:
    case STORE_MESSAGE_DELETE: return rows == 1 ? read_msg_change(res, req) : RC_ESTORE;
    case STORE_REACTION_PUT:
    case STORE_REACTION_DELETE: {
        if (rows != 1)
            return RC_ESTORE;
        int rc = status_rc(res);
        if (rc)
            return rc;
        req->room.version = col_i64(res, 0, 1);
        req->version = read_logged_change(res, 0, 2, req);
        return 0;
    }
    case STORE_READ_MARK: {
        if (rows != 1)
            return RC_ESTORE;
        int rc = status_rc(res);
        if (rc)
            return rc;
        req->room.last_seq = col_i64(res, 0, 1);
        req->member.room_id = xstrdup(req->room_id);
        req->member.user_id = xstrdup(req->user_id);
        req->member.role = col_str(res, 0, 2);
        req->member.last_read_seq = col_i64(res, 0, 3);
        req->member.unread = col_i64(res, 0, 4);
        return 0;
    }
    case STORE_NOTIFY_ADD:
        if (rows != 1)
            return RC_ESTORE;
        store_pg_read_notif(res, 0, 0, req->user_id, &req->notif);
        return 0;
    case STORE_BROADCAST_ADD:
        if (rows != 1)
            return RC_ESTORE;
        req->version = read_logged_change(res, 0, 0, req);
        return 0;
    case STORE_DOC_EDIT:
        if (rows != 1)
            return RC_ESTORE;
        req->docop.id = col_i64(res, 0, 0);
        req->docop.seq = col_i64(res, 0, 1);
        req->docop.data = col_str_or(res, 0, 2, "null");
        col_ts(res, 0, 3, req->docop.inserted_at);
        req->docop.room_id = xstrdup(req->room_id);
        req->docop.user_id = xstrdup(req->user_id);
        req->docop.operation = xstrdup(req->name);
        return 0;
    default: return RC_EINVAL;
    }
}

/* Appends s to a PostgreSQL array literal element, quoted. */
static void array_add(char **buf, size_t *len, size_t *cap, const char *s)
{
    size_t need = *len + 2 * strlen(s) + 6; /* , "…" } NUL */
    if (need > *cap) {
        *cap = need * 2;
        *buf = xrealloc(*buf, *cap);
    }
    char *p = *buf + *len;
    *p++ = *len > 1 ? ',' : '{';
    *p++ = '"';
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            *p++ = '\\';
        *p++ = *s;
    }
    *p++ = '"';
    *len = (size_t)(p - *buf);
}

/* Ends an array literal of len bytes that array_add built (it left room for this). */
static char *array_close(char *buf, size_t len)
{
    buf[len++] = '}';
    buf[len] = '\0';
    return buf;
}

/* The key a batch pre-locks for request r: the room of a write that locks its room (a
 * message, a change of one, a document operation), the user of a notification (users
 * when true); NULL for none. */
static const char *lock_key(const struct store_req *r, bool users)
{
    if (users)
        return r->op == STORE_NOTIFY_ADD ? r->user_id : NULL;
    switch (r->op) {
    case STORE_MESSAGE_ADD:
    case STORE_MESSAGE_EDIT:
    case STORE_MESSAGE_DELETE:
    case STORE_REACTION_PUT:
    case STORE_REACTION_DELETE:
    case STORE_BROADCAST_ADD:
    case STORE_DOC_EDIT: return r->room_id;
    default: return NULL;
    }
}

char *store_pg_batch_keys(struct store_req **v, size_t n, bool users)
{
    const char *first = NULL;
    bool several = false;
    for (size_t i = 0; i < n && !several; i++) {
        const char *k = lock_key(v[i], users);
        if (!k)
            continue;
        if (!first)
            first = k;
        else if (strcmp(first, k))
            several = true;
    }
    if (!several)
        return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (size_t i = 0; i < n; i++)
        if (lock_key(v[i], users))
            array_add(&buf, &len, &cap, lock_key(v[i], users));
    return array_close(buf, len);
}

void store_pg_messages_args(struct store_req **v, size_t k, struct store_pg_args *a)
{
    char *arr[4] = {NULL, NULL, NULL, NULL};
    size_t len[4] = {0, 0, 0, 0}, cap[4] = {0, 0, 0, 0};
    for (size_t j = 0; j < k; j++) {
        char reply_to[24];
        snprintf(reply_to, sizeof reply_to, "%" PRId64, v[j]->reply_to > 0 ? v[j]->reply_to : 0);
        array_add(&arr[0], &len[0], &cap[0], v[j]->room_id);
        array_add(&arr[1], &len[1], &cap[1], v[j]->user_id);
        array_add(&arr[2], &len[2], &cap[2], v[j]->body);
        array_add(&arr[3], &len[3], &cap[3], reply_to);
    }
    for (int c = 0; c < 4; c++)
        arg_owned(a, array_close(arr[c], len[c]));
}

/* A room and an order within it, for matching inserted rows to their requests. */
struct pick {
    const char *room;
    int64_t key;
    size_t idx;
};

/* Orders picks by room, then key. */
static int cmp_pick(const void *a, const void *b)
{
    const struct pick *x = a, *y = b;
    int c = strcmp(x->room, y->room);
    return c ? c : (x->key > y->key) - (x->key < y->key);
}

/* Within a room, seqs follow the insertion order, which is the requests' order: sorting
 * rows by (room, seq) and requests by (room, position) pairs them up, whatever order
 * RETURNING gives. */
bool store_pg_parse_messages(struct store_req **v, size_t k, const PGresult *res)
{
    if ((size_t)PQntuples(res) != k || PQnfields(res) != 11)
        return false;
    struct pick *rows = xcalloc(k, sizeof *rows), *reqs = xcalloc(k, sizeof *reqs);
    for (size_t j = 0; j < k; j++) {
        rows[j] = (struct pick){PQgetvalue(res, (int)j, 1), col_i64(res, (int)j, 2), j};
        reqs[j] = (struct pick){v[j]->room_id, (int64_t)j, j};
    }
    qsort(rows, k, sizeof *rows, cmp_pick);
    qsort(reqs, k, sizeof *reqs, cmp_pick);
    bool ok = true;
    for (size_t j = 0; j < k && ok; j++)
        ok = !strcmp(rows[j].room, reqs[j].room);
    for (size_t j = 0; j < k && ok; j++) {
        struct store_req *r = v[reqs[j].idx];
        read_added_msg(res, (int)rows[j].idx, 2, r);
        r->rc = 0;
    }
    free(rows);
    free(reqs);
    return ok;
}
