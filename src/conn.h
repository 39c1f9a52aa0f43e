/* conn.h - a client session as channels see it, whatever the transport (WebSocket,
 * long-poll): a user, a serializer version, joined channels, and the transport's
 * operations (struct conn_ops). A conn lives on one I/O worker, in that worker's
 * struct conn_set; only the owning worker thread touches it. */
#ifndef RC_CONN_H
#define RC_CONN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"

struct conn;
struct chan;
struct obuf;
struct worker;
struct user_counter;

/* Transport operations (function table per transport). */
struct conn_ops {
    /* Queues one message (takes its own reference on b). */
    void (*send)(struct conn *c, struct obuf *b);
    /* Ends the session; for WebSocket, with this close code. Idempotent. */
    void (*close)(struct conn *c, uint16_t code, const char *why);
    /* Ends the session at once, releasing the transport (shutdown deadline). */
    void (*abort)(struct conn *c);
    /* Frees the transport's memory once nothing references the conn. */
    void (*destroy)(struct conn *c);
    /* Input may be processed again (a join finished). */
    void (*resume)(struct conn *c);
    /* Writes queued output; called by the worker before it sleeps. */
    void (*flush)(struct conn *c);
    /* Periodic timer (idle timeouts); now in monotonic ms. */
    void (*tick)(struct conn *c, int64_t now_ms);
};

/* The conns of one worker: every live one, those with output to write before the worker
 * sleeps (in order; replies ahead of the rest), and those to free at the end of this
 * loop turn. */
struct conn_set {
    struct conn *all;
    struct conn *flush, *flush_tail;
    struct conn *urgent; /* conns with a reply waiting: written first */
    struct conn *dead;
    atomic_uint n; /* live conns; read by other threads to pick the least-loaded worker */
};

struct conn {
    const struct conn_ops *ops;
    struct worker *worker; /* the owner: its config, store, bus and clock */
    uint64_t id;           /* process-wide unique */
    char *user_id;
    enum codec_vsn vsn;
    uint8_t transport;     /* enum metric_transport */
    bool realtime;         /* opened on /realtime/v1/websocket: realtime-js broadcasts go
                            * out as binary user-broadcast frames (V2) */
    int64_t token_exp;     /* the socket token's exp (Unix seconds); 0: none. At that time
                            * the session closes unless a fresh token (an access_token
                            * push) moved it */
    bool closed;           /* transport closed: no more output, channels terminated */
    int refs;              /* worker-local: the worker + each store request in flight */
    unsigned n_chans;
    unsigned joins_pending; /* while > 0, the transport holds back further input */
    struct chan *chans;
    struct conn_set *_set;
    struct user_counter *_uc;   /* holds one of the user's socket slots (may be NULL) */
    struct conn *_prev, *_next; /* the set's list of live conns */
    struct conn *_flush_next;   /* the set's list of conns with output pending */
    struct conn *_urgent_next;  /* the set's list of conns with a reply waiting */
    bool _in_flush;
    bool _in_urgent;
    bool _dead;                 /* on the set's list of conns to release */
    struct conn *_dead_next;
};

/* Verifies a socket token: HS256 under secret, unexpired at now (Unix seconds), its sub a
 * valid user id. Returns the user id (malloc'd) and sets *exp (may be NULL) to the
 * token's exp, or returns NULL. Pure; any thread. */
char *conn_token_user(const char *secret, const char *token, int64_t now, int64_t *exp);

/* Common initialization for transports: c belongs to worker w and its set, and holds one
 * of user_id's slots in uc (released when the last reference goes; uc may be NULL).
 * Takes ownership of user_id. refs = 1 (the worker's). */
void conn_init(struct conn *c, const struct conn_ops *ops, struct worker *w,
               struct conn_set *set, struct user_counter *uc, char *user_id, enum codec_vsn vsn);

/* Registers c as live in its set, counted as a socket of transport (enum
 * metric_transport). Owning worker only. */
void conn_add(struct conn *c, uint8_t transport);

/* Puts c on its set's before-sleep flush list. Owning worker only. */
void conn_want_flush(struct conn *c);

/* The transport has released its resources (socket closed), after the session was
 * closed (c->closed, see router_conn_closed): unregisters c and drops the worker's
 * reference at the end of this loop turn. Once; later calls do nothing. */
void conn_release(struct conn *c);

/* Drops a reference; the last one releases the user's slot and calls ops->destroy.
 * Owning worker only. */
void conn_unref(struct conn *c);

/* Sends a message to this conn only (no-op once closed). Owning worker only. */
static inline void conn_send(struct conn *c, struct obuf *b)
{
    if (!c->closed)
        c->ops->send(c, b);
}

/* Sends text as one text frame; out of memory closes c with 1011. */
void conn_send_text(struct conn *c, const char *text, size_t len);
/* Encodes and sends one message in c's serializer (jr/ref: JSON text or NULL). */
void conn_push(struct conn *c, const char *jr, const char *ref, const char *topic,
               size_t topic_len, const char *event, const char *payload, size_t payload_len);
/* Encodes and sends a phx_reply: status "ok"/"error", response a JSON object text. */
void conn_reply(struct conn *c, const char *jr, const char *ref, const char *topic,
                size_t topic_len, const char *status, const char *response);

/* How many conns the before-sleep pass writes between two calls of its between hook. */
#define CONN_FLUSH_SLICE 128

/* The set's before-sleep pass: writes pending output in order, then frees the conns
 * released during this turn. A long pass (a fan-out to thousands of sockets) calls
 * between(arg), if set, after every CONN_FLUSH_SLICE conns, so that the owner can take
 * input meanwhile; conns that get output then are written in the same pass. Owning
 * worker only. */
void conn_set_before_sleep(struct conn_set *s, void (*between)(void *arg), void *arg);

#endif
