/* store.h - durable rows: users, rooms, memberships, messages and their changes
 * (edits, deletes, reactions, read cursors), notifications, document operations.
 *
 * One interface, one backend per database: store_sqlite.c (sqlite:PATH) and store_pg.c
 * (postgres://…). All database I/O runs on the store's own threads, never on the
 * caller's. A caller fills a struct store_req and submits it; writes are group-committed
 * (the writer thread drains its queue and commits the batch in one transaction), reads
 * run on reader threads.
 * When the request is finished, req->done(req) is called ON A STORE THREAD: it must only
 * hand the request back to its owner (post to a worker inbox, resume an HTTP
 * connection), never block. A successful write's completion runs after its commit.
 *
 * Every durable change in a room (a new message, an edit, a delete, a reaction added or
 * removed, a broadcast on the room's private channel) takes the room's next version and is a row of the room's change log, written by
 * the database's triggers, so writes by other processes take the same path.
 * After each commit the store passes the rows it committed to the listeners, in commit
 * order (which is version order within a room). The SQLite store also delivers the rows that
 * other processes commit to the same file; with PostgreSQL, rows written by other nodes
 * reach subscribers through the bus (bus_pg.c) instead. */
#ifndef RC_STORE_H
#define RC_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rc.h"

struct store_ops;

/* Base of every backend's handle: backends embed it first. */
struct store {
    const struct store_ops *ops;
};

enum store_op {
    STORE_PING,          /* read: checks the database answers */
    STORE_USER_PUT,      /* write: user_id, name, avatar_url → user */
    STORE_ROOM_CREATE,   /* write: room_id, name → room; RC_ECONFLICT if it exists */
    STORE_ROOM_GET,      /* read: room_id → room; RC_ENOTFOUND */
    STORE_ROOM_DELETE,   /* write: room_id; RC_ENOTFOUND */
    STORE_MEMBER_PUT,    /* write: room_id, user_id, role → member (creates the user) */
    STORE_MEMBER_DELETE, /* write: room_id, user_id; RC_ENOTFOUND */
    STORE_MEMBERS_LIST,  /* read: room_id → members sorted by user_id; RC_ENOTFOUND */
    STORE_MESSAGE_ADD,   /* write: room_id, user_id, body, reply_to (0: none) → msg;
                          * RC_ENOTFOUND (room), RC_EINVAL (reply_to names no message of
                          * the room that is there and not deleted) */
    STORE_MESSAGES_PAGE, /* read: room_id, after_seq|before_seq|latest, limit → msgs */
    STORE_JOIN_ROOM,     /* read, one snapshot: room_id, user_id → room (with version),
                          * member (role, name, avatar_url, last_read_seq, unread), msgs
                          * (the last `limit`, or those after after_seq, oldest first), or
                          * with since_version >= 0 changes instead (the first `limit`
                          * after since_version); RC_ENOTFOUND (room), RC_EFORBIDDEN (not a
                          * member) */
    STORE_NOTIFY_ADD,    /* write: user_id, body (message), data (JSON text or NULL) → notif */
    STORE_NOTIFY_UNREAD, /* read: user_id → notifs (unread, oldest first, at most limit),
                          * id = the user's newest notification id (read or not) */
    STORE_NOTIFY_READ,   /* write: user_id, id → marks read; RC_ENOTFOUND */
    STORE_DOC_JOIN,      /* read, one snapshot: room_id, user_id → room (doc_last_seq),
                          * member, docops (last `limit` or after after_seq) */
    STORE_DOC_EDIT,      /* write: room_id, user_id, name (operation), data → docop */
    STORE_DEV_SETUP,     /* write (demo, --env dev only): ensures user_id exists and is a
                          * member of the rooms "lobby" and "random" (created if missing) */
    STORE_MESSAGE_EDIT,  /* write: room_id, seq, body, user_id (the author; NULL: anyone)
                          * → msg (seq, user_id, body, edited_at), version; RC_ENOTFOUND
                          * (room or message), RC_EFORBIDDEN (not the author), RC_EGONE
                          * (deleted) */
    STORE_MESSAGE_DELETE, /* write: room_id, seq, user_id (the author or a member with role
                          * owner; NULL: anyone) → msg (seq, user_id, deleted_at), version;
                          * erases the body; RC_ENOTFOUND, RC_EFORBIDDEN, RC_EGONE (already) */
    STORE_REACTION_PUT,  /* write: room_id, seq, user_id, name (emoji) → version (0: it was
                          * there, nothing changed), room.version; RC_ENOTFOUND (room or
                          * message), RC_EGONE (message deleted) */
    STORE_REACTION_DELETE, /* write: as STORE_REACTION_PUT; version 0: it was not there */
    STORE_READ_MARK,     /* write: room_id, user_id, seq → member (last_read_seq, unread),
                          * room.last_seq; the cursor never moves backwards and stops at
                          * last_seq; RC_ENOTFOUND (room), RC_EFORBIDDEN (not a member) */
    STORE_CHANGES_PAGE,  /* read: room_id, since_version, limit → changes (version order),
                          * room (version, last_seq); RC_ENOTFOUND */
    STORE_REPLIES_PAGE,  /* read: room_id, seq (the parent), after_seq, limit → msgs (the
                          * replies, oldest first); RC_ENOTFOUND (room or parent) */
    STORE_USER_ROOMS,    /* read: user_id → user_rooms (by room_id), each with last_seq,
                          * last_read_seq and unread */
    STORE_BROADCAST_ADD, /* write: room_id, user_id (the sender; NULL: the server), name (the
                          * user's event), data (its payload, JSON text) → version; a change
                          * "broadcast" with seq 0, delivered as every change; RC_ENOTFOUND
                          * (room), RC_EINVAL (no name, data not one JSON value) */
    STORE_BROADCAST_JOIN, /* read, one snapshot: room_id, user_id → member (role), room (with
                          * version), changes: the room's broadcasts with version >
                          * since_version and inserted_at >= since_ms (since_ms < 0: none),
                          * the first `limit` by version; RC_ENOTFOUND (room), RC_EFORBIDDEN
                          * (not a member) */
    STORE_OP_COUNT
};

struct store_user {
    char *id, *name, *avatar_url; /* avatar_url may be NULL */
    char created_at[32];
};

struct store_room {
    char *id, *name;
    int64_t last_seq;
    int64_t doc_last_seq;
    int64_t version; /* the room's latest change */
    char created_at[32];
};

struct store_member {
    char *room_id, *user_id, *role, *name, *avatar_url; /* avatar_url may be NULL */
    int64_t last_read_seq; /* the read cursor */
    int64_t unread;        /* messages after it, not by this user, not deleted */
};

/* One of a user's rooms, with the user's read state. */
struct store_user_room {
    char *room_id, *name, *role;
    int64_t last_seq, last_read_seq, unread;
};

struct store_notif {
    int64_t id;
    char *user_id;
    char *payload; /* JSON object text {"message":…,"data":…} as stored */
    char inserted_at[32];
};

struct store_docop {
    int64_t id, seq;
    char *room_id, *user_id, *operation;
    char *data; /* JSON text */
    char inserted_at[32];
};

struct store_msg {
    int64_t id, seq;
    char *room_id, *user_id, *body; /* body is "" once deleted */
    char inserted_at[32];
    int64_t reply_to;    /* the parent's seq, 0: not a reply */
    int64_t reply_count; /* replies to it that are not deleted */
    char edited_at[32];  /* "" if never edited */
    char deleted_at[32]; /* "" if not deleted */
    char *reactions;     /* JSON array text [{"emoji","count"}…] by emoji; NULL: none */
};

/* One row of a room's change log: the event and payload (JSON object text) that were
 * broadcast, with the version they took, the message they concern and its author. */
struct store_change {
    int64_t id, version, seq;
    char *room_id, *user_id, *event, *payload;
    char inserted_at[32];
};

/* The last millisecond of year 9999, the latest time the stores compare with. */
#define STORE_MS_MAX INT64_C(253402300799999)

struct store_req {
    enum store_op op;
    /* arguments (owned by the request, freed by store_req_destroy) */
    char *room_id, *user_id, *name, *avatar_url, *role, *body, *data;
    int64_t id;         /* STORE_NOTIFY_READ */
    int64_t seq;        /* the message an edit, delete, reaction, read mark or thread is about */
    int64_t reply_to;   /* STORE_MESSAGE_ADD: the parent's seq, 0: none */
    int64_t since_version; /* >= 0: changes after this version (join, changes page) */
    int64_t since_ms;   /* STORE_BROADCAST_JOIN: broadcasts logged at or after this time (ms
                         * since the epoch, later ones count as STORE_MS_MAX); < 0: none */
    int64_t after_seq;  /* >= 0: rows with seq > after_seq (first `limit` of them) */
    int64_t before_seq; /* >= 0: rows with seq < before_seq (last `limit` of them) */
    int limit;          /* rows to return; with neither bound, the latest `limit` */
    /* results */
    int rc;             /* 0 or RC_E* */
    struct store_user user;
    struct store_room room;
    struct store_member member;
    struct store_msg msg;
    struct store_msg *msgs;
    size_t n_msgs;
    struct store_member *members;
    size_t n_members;
    struct store_notif notif;
    struct store_notif *notifs;
    size_t n_notifs;
    struct store_docop docop;
    struct store_docop *docops;
    size_t n_docops;
    int64_t version;    /* the version a write took, 0 if it changed nothing */
    struct store_change *changes;
    size_t n_changes;
    struct store_user_room *user_rooms;
    size_t n_user_rooms;
    /* completion, called on a store thread */
    void (*done)(struct store_req *req);
    void *arg;
    struct store_req *_next; /* the backend's queue or batch */
    int64_t _queued_ms;      /* when it was queued (clock_mono_ms), store_queue.c */
};

/* Called on a store thread (SQLite: the sync thread; PostgreSQL: the writer thread) with
 * newly committed room changes, in commit order. The array and its strings are only valid
 * during the call. */
typedef void (*store_change_listener)(const struct store_change *changes, size_t n, void *arg);

struct store_options {
    const char *url;     /* sqlite:PATH, postgres://… or postgresql://… */
    int batch_max;       /* writes per transaction */
    int data_poll_ms;    /* SQLite: how often to look for writes by other processes */
    bool sync_full;      /* SQLite: fsync every commit (synchronous=FULL) */
    store_change_listener listener; /* may be NULL */
    void *listener_arg;
    /* committed notifications and document operations, like messages (may be NULL;
     * they get listener_arg) */
    void (*notif_listener)(const struct store_notif *n, size_t count, void *arg);
    void (*docop_listener)(const struct store_docop *ops, size_t count, void *arg);
};

/* Allocates a request for op with its bounds unset (after_seq = before_seq = since_version =
 * since_ms = -1). */
struct store_req *store_req_create(enum store_op op);
/* Frees a request, its arguments and results. Accepts NULL. */
void store_req_destroy(struct store_req *req);
/* Frees a message's strings. */
void store_msg_cleanup(struct store_msg *m);
/* n messages copied, strings and all, into a new array (NULL when n is 0). */
struct store_msg *store_msgs_dup(const struct store_msg *msgs, size_t n);
/* Deep copies of a change and of a document operation. */
void store_change_copy(struct store_change *dst, const struct store_change *src);
void store_docop_copy(struct store_docop *dst, const struct store_docop *src);
/* Frees a notification's / document operation's / change's / user room's strings. */
void store_notif_cleanup(struct store_notif *n);
void store_docop_cleanup(struct store_docop *op);
void store_change_cleanup(struct store_change *c);
void store_user_room_cleanup(struct store_user_room *r);

/* Opens the database named by opts->url, applies pending migrations and starts the
 * store threads. Returns 0 and sets *out, or RC_EINVAL (bad URL, unsupported backend,
 * message in err), RC_ESTORE (open or migration failed, message in err). Main thread. */
int store_open(const struct store_options *opts, struct store **out, char *err,
               size_t errlen) MUSTCHECK;

/* Applies pending migrations to the database at url and returns; the number applied
 * goes to *applied. Same errors as store_open. */
int store_migrate(const char *url, int *applied, char *err, size_t errlen) MUSTCHECK;

/* Sets the listener for committed room changes; set it before the first write. At most one;
 * NULL removes it. Main thread, before traffic. */
void store_set_listener(struct store *s, store_change_listener fn, void *arg);

/* PostgreSQL: called on the writer thread with the backend pid of the writer's database
 * session before its first batch (0 when it has none), and again with the same pid after a
 * batch whose outcome is unknown (the connection broke or the results did not match).
 * From the call on, what the session commits reaches the change and document listeners;
 * what it may have committed before without reaching them must be read from the
 * database. The NOTIFYs the session's commits send carry that pid. */
typedef void (*store_session_listener)(int pid, void *arg);

/* Every listener of a store, all with arg (NULL: none). */
struct store_listeners {
    store_change_listener changes;
    void (*notifs)(const struct store_notif *n, size_t count, void *arg);
    void (*docops)(const struct store_docop *ops, size_t count, void *arg);
    store_session_listener session; /* PostgreSQL only */
    void *arg;
};

/* Replaces every listener; like store_set_listener, main thread, before traffic. */
void store_set_listeners(struct store *s, const struct store_listeners *l);

/* Queues req; req->done will be called exactly once, even during shutdown (then with
 * rc RC_ESTORE). The store owns req until done is called. Any thread. */
void store_submit(struct store *s, struct store_req *req);

/* Backends call this instead of req->done(req): it keeps the queue-depth metric. */
void store_complete(struct store_req *req);

/* True for the ops that change the database: backends run them on their writer thread
 * (grouped into one transaction per batch), the others on reader threads. */
bool store_op_is_write(enum store_op op);

/* Stops the threads after finishing every queued request, closes the database and
 * frees s. Accepts NULL. Main thread. */
void store_close(struct store *s);

/* Backend function table (store_sqlite.c, store_pg.c); store.c picks one by URL scheme. */
struct store_ops {
    const char *scheme; /* URL prefix, e.g. "sqlite:" */
    int (*open)(const struct store_options *opts, struct store **out, char *err, size_t errlen);
    int (*migrate)(const char *url, int *applied, char *err, size_t errlen);
    void (*set_listener)(struct store *s, store_change_listener fn, void *arg);
    void (*set_listeners)(struct store *s, const struct store_listeners *l);
    void (*submit)(struct store *s, struct store_req *req);
    void (*close)(struct store *s);
};

extern const struct store_ops store_sqlite_ops;
extern const struct store_ops store_pg_ops; /* scheme "postgres": postgres:// and postgresql:// */

struct sbuf;
/* Appends a message as the JSON object clients see:
 * {"body","id","inserted_at","reactions","reply_count","seq","user_id"} with "edited_at"
 * and "reply_to" when set; a deleted one as {"deleted":true,"deleted_at","seq"}. */
void store_msg_append_json(struct sbuf *out, const struct store_msg *m);
/* Whether a change's payload is one JSON object. The log is a table any writer may
 * insert into: a payload that is not is never broadcast nor replayed. */
bool store_change_payload_ok(const struct store_change *c);
/* {"event","payload"} from a change whose payload is ok. */
void store_change_append_json(struct sbuf *out, const struct store_change *c);
/* A page of changes (STORE_CHANGES_PAGE, or a join with since_version):
 * {"changes":[…],"has_more","version"}, leaving out those whose payload is not ok;
 * has_more when the page is full and ends before the snapshot's room.version. */
void store_changes_append_json(struct sbuf *out, const struct store_req *req);
/* {"data","id","inserted_at","message"} from a stored notification. */
void store_notif_append_json(struct sbuf *out, const struct store_notif *n);
/* {"data","inserted_at","operation","seq","user_id"} from a document operation. */
void store_docop_append_json(struct sbuf *out, const struct store_docop *op);

#endif
