/* store_pg_int.h - the SQL of the PostgreSQL store (store_pg_sql.c): internal to the
 * PostgreSQL backend (store_pg.c) and the PostgreSQL bus (bus_pg.c), which reads the
 * same rows, and their tests (for PG_SESSION_OPTIONS). Nothing else includes it.
 *
 * The statements every store connection prepares, the arguments each request binds to
 * its statement, and the readers that turn result rows into store structs. Nothing here
 * knows a connection: the caller sends, receives, and checks a result's status (a failed
 * statement, a pipeline out of step) before it hands the result to a parser. Every
 * function is a plain function of its arguments, callable from any thread. */
#ifndef RC_STORE_PG_INT_H
#define RC_STORE_PG_INT_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rc.h"
#include "store.h"

/* Prepared statements; every store connection prepares all of them. */
enum store_pg_stmt {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_ROLLBACK_TO,
    ST_LOCK_ROOMS,
    ST_LOCK_USERS,
    ST_USER_PUT,
    ST_ROOM_CREATE,
    ST_ROOM_DELETE,
    ST_MEMBER_PUT,
    ST_MEMBER_DELETE,
    ST_MSG_ADD,
    ST_MSG_ADD_MANY,
    ST_NOTIF_ADD,
    ST_NOTIF_READ,
    ST_DOCOP_ADD,
    ST_MSG_CHANGE,
    ST_REACTION,
    ST_READ_MARK,
    ST_PING,
    ST_ROOM_GET,
    ST_MEMBERS_LIST,
    ST_PAGE_ASC,
    ST_PAGE_DESC,
    ST_JOIN_ASC,
    ST_JOIN_DESC,
    ST_DOC_JOIN_ASC,
    ST_DOC_JOIN_DESC,
    ST_NOTIF_UNREAD,
    ST_JOIN_CHANGES,
    ST_CHANGES_PAGE,
    ST_REPLIES,
    ST_USER_ROOMS,
    ST_BROADCAST_ADD,
    ST_BROADCAST_JOIN,
    ST_COUNT
};

/* The text of statement id (id < ST_COUNT). */
const char *store_pg_stmt_sql(enum store_pg_stmt id);

/* The name statement id is prepared under: "s<id>". */
void store_pg_stmt_name(enum store_pg_stmt id, char out[8]);

/* Arguments of one statement, as text (NULL is SQL NULL): v[0..n) for libpq. Zeroed
 * before use; store_pg_args_cleanup frees what the builders allocated for it. */
struct store_pg_args {
    const char *v[6];
    char num[4][24];
    char *owned[4];
    int n, nnum, nowned;
};

/* Frees what the builders allocated for a (not a itself). */
void store_pg_args_cleanup(struct store_pg_args *a);

/* Chooses the statement of a read request and fills its arguments (pointing into r);
 * ST_COUNT for an op that is not a read. */
enum store_pg_stmt store_pg_read_stmt(const struct store_req *r, struct store_pg_args *a);

/* Chooses the statement of a write and fills its arguments (pointing into r); ST_COUNT
 * when the request is invalid (a notification without a valid message, a broadcast
 * without an event or whose payload is not JSON) or not a write. */
enum store_pg_stmt store_pg_write_stmt(const struct store_req *r, struct store_pg_args *a);

/* Fills a with the arguments of ST_MSG_ADD_MANY for the k message requests of v: four
 * array literals that a owns (store_pg_args_cleanup frees them). */
void store_pg_messages_args(struct store_req **v, size_t k, struct store_pg_args *a);

/* The array literal of the rooms (users false) or notification users (users true) that a
 * batch of n writes locks first (the argument of ST_LOCK_ROOMS or ST_LOCK_USERS), malloc'd;
 * NULL when there are fewer than two of them (one lock cannot be taken out of order). */
char *store_pg_batch_keys(struct store_req **v, size_t n, bool users);

/* Turns the rows of a read's result (status PGRES_TUPLES_OK) into req's fields, which
 * req owns. Returns 0, RC_ENOTFOUND (no such room), RC_EFORBIDDEN (a join by a
 * non-member), RC_ESTORE (no row where the query always returns one) or RC_EINVAL (not
 * a read). */
int store_pg_parse_read(struct store_req *req, const PGresult *res) MUSTCHECK;

/* Turns the result of a write's statement (status PGRES_TUPLES_OK or PGRES_COMMAND_OK)
 * into req's fields, which req owns; the change the write logged, if any, goes to
 * req->changes. Returns 0, RC_ECONFLICT (the room exists), RC_ENOTFOUND (nothing to
 * delete or mark read, no such message), RC_EFORBIDDEN (not the author, an owner, a
 * member), RC_EGONE (the message is deleted), RC_ESTORE (not the one row the statement
 * returns) or RC_EINVAL (not a write). */
int store_pg_parse_write(struct store_req *req, const PGresult *res) MUSTCHECK;

/* Fills the k message requests of v (and the changes they logged) from the rows of their
 * ST_MSG_ADD_MANY and sets their rc to 0. False when the rows do not match the requests. */
bool store_pg_parse_messages(struct store_req **v, size_t k, const PGresult *res);

/* Frees and clears what store_pg_parse_write or store_pg_parse_messages put in r (its
 * transaction rolled back). */
void store_pg_clear_write(struct store_req *r);

/* The columns the row readers below read, in order, of a table aliased t ("g." or ""). */
/* Options of every rowcast session (libpq's "options"). PostgreSQL caches the plans of
 * prepared statements and of the SQL in functions and triggers per session; planned while
 * a table is empty or small (a new database, its first minutes), they scan the whole
 * table, and the cached plan stays until the table is next analyzed: REST writes on a new
 * database fell from thousands per second to hundreds within seconds as room_changes
 * grew. Every statement of rowcast's is a keyed lookup with an index to use, so seq scans
 * are off for its sessions. JIT is off too: the few statements that must scan (a table
 * without a usable index, such as the nodes' heartbeats) are then costed past
 * jit_above_cost, and compiling them took 100-170 ms each, stalling the bus once a
 * second. Plans are generic from the first execution: by default PostgreSQL plans the
 * first five executions of every prepared statement (and of every statement inside a
 * PL/pgSQL function, per session) for their parameter values, and goes on doing so
 * wherever the generic plan's estimate is not the lower. For keyed lookups the generic
 * plan is the one to run; planning the executions cost chat and REST 5-6%. */
#define PG_SESSION_OPTIONS "-c enable_seqscan=off -c jit=off -c plan_cache_mode=force_generic_plan"

#define STORE_PG_DOCOP_COLS(t)                                                                     \
    t "id, " t "seq, " t "user_id, " t "operation, " t "data::text, rowcast_iso(" t "inserted_at)"
#define STORE_PG_NOTIF_COLS(t) t "id, " t "payload::text, rowcast_iso(" t "inserted_at)"
#define STORE_PG_CHANGE_COLS(t)                                                                    \
    t "id, " t "version, " t "seq, " t "user_id, " t "event, " t "payload::text, "                \
      "rowcast_iso(" t "inserted_at)"

/* Row readers: fill *out from the columns col.. of a row (the list of its *_COLS above)
 * and the room (user) the query was for, which they copy. The strings are malloc'd; the
 * store's *_cleanup frees them. */
void store_pg_read_docop(const PGresult *res, int row, int col, const char *room_id,
                         struct store_docop *out);
void store_pg_read_notif(const PGresult *res, int row, int col, const char *user_id,
                         struct store_notif *out);
void store_pg_read_change(const PGresult *res, int row, int col, const char *room_id,
                          struct store_change *out);

#endif
