/* router.h - Phoenix channel semantics on a conn: heartbeat, join (duplicate joins, the
 * channel limit), leave, stale join_refs, unmatched topics, delivery of broadcasts, and
 * store continuations. Worker thread only. */
#ifndef RC_ROUTER_H
#define RC_ROUTER_H

#include <stddef.h>

#include "codec.h"
#include "rc.h"

struct conn;
struct chan;
struct bcast;
struct store_req;
struct channel_type;

/* Adds a channel type to the routing table (built-in types are already there). Main
 * thread, before any worker starts. Returns 0 or RC_ELIMIT. */
int router_add_type(const struct channel_type *t);

/* The channel type serving topic, or NULL. */
const struct channel_type *router_match(const char *topic, size_t len);

/* Handles one decoded client message. */
void router_handle(struct conn *c, const struct phx_in *m);

/* Delivers (or holds, while joining) a broadcast to one subscribed chan. */
void router_deliver(struct chan *ch, struct bcast *b);

/* Terminates every channel of a closed conn. */
void router_conn_closed(struct conn *c);

/* Runs the continuation of a store request made with chan_store, then frees it. */
void router_store_done(struct store_req *req);

/* Builds and sends one message to c (jr/ref JSON text or NULL). */
void router_send(struct conn *c, const char *jr, const char *ref, const char *topic,
                 size_t topic_len, const char *event, const char *payload, size_t payload_len);

#endif
