/* conn.h - a client session as channels see it, whatever the transport (WebSocket now,
 * long-poll later): a user, a serializer version, joined channels, and two transport
 * operations. Only the owning worker thread touches a conn. */
#ifndef RC_CONN_H
#define RC_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include "codec.h"

struct conn;
struct chan;
struct obuf;
struct worker;

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

struct conn {
    const struct conn_ops *ops;
    struct worker *worker;
    uint64_t id;          /* process-wide unique */
    char *user_id;
    enum codec_vsn vsn;
    uint8_t transport;    /* enum metric_transport */
    bool closed;          /* transport closed: no more output, channels terminated */
    int refs;             /* worker-local: the worker + each store request in flight */
    unsigned n_chans;
    unsigned joins_pending; /* while > 0, the transport holds back further input */
    struct chan *chans;
    struct conn *_prev, *_next; /* the worker's list of live conns */
    struct conn *_flush_next;   /* the worker's list of conns with output pending */
    bool _in_flush;
    bool _dead;                 /* on the worker's list of conns to release */
    struct conn *_dead_next;
};

/* Puts c on its worker's before-sleep flush list. Owning worker only. */
void conn_want_flush(struct conn *c);

/* The session is over: no more output, every channel terminates (running their
 * terminate callbacks). Transports call it when they decide to close or see the peer
 * go; idempotent. */
void conn_closed(struct conn *c);

/* The transport has released its resources (socket closed): unregisters c from the
 * worker and drops the worker's reference at the end of this loop turn. Once. */
void conn_release(struct conn *c);

/* Common initialization for transports. Takes ownership of user_id. */
void conn_init(struct conn *c, const struct conn_ops *ops, struct worker *w, char *user_id,
               enum codec_vsn vsn);

/* Drops a reference; the last one calls ops->destroy. Owning worker only. */
void conn_unref(struct conn *c);

/* Sends a message to this conn only. Owning worker only. */
static inline void conn_send(struct conn *c, struct obuf *b)
{
    if (!c->closed)
        c->ops->send(c, b);
}

#endif
