/* bus.h - the bus: how an event reaches every node's subscribers. Two backends, one
 * function table: bus_local.c (one node, SQLite mode: events go straight to this node's
 * fan-out) and bus_pg.c (PostgreSQL mode: LISTEN/NOTIFY between every node on the
 * database). Callers (channels, the REST API) hold a struct bus and call the inline
 * wrappers below; a backend hands what arrives to the node through the struct bus_sink
 * it was created with, so it never calls the layers above it. Every function may be
 * called from any thread. */
#ifndef RC_BUS_H
#define RC_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rc.h"

struct bus;
struct bcast;
struct presence;
struct store_change;
struct store_notif;
struct store_docop;

enum bus_presence_op { BUS_TRACK, BUS_UPDATE, BUS_UNTRACK };

/* What the node's bus is connected to. */
enum bus_state {
    BUS_LOCAL, /* one node, no cluster bus */
    BUS_UP,    /* cluster bus connected */
    BUS_DOWN,  /* cluster bus reconnecting; this node's sockets carry on */
};

/* Where a bus delivers on this node: the fan-out to the I/O workers. */
struct bus_sink {
    /* Delivers broadcasts to this node's subscribers; consumes one reference of each. */
    void (*publish)(void *arg, struct bcast **list, size_t n);
    /* Closes every socket of user on this node with 1001. */
    void (*disconnect)(void *arg, const char *user);
    void *arg;
};

struct bus_ops {
    /* Sends an ephemeral event to every subscriber of topic on every node; exclude is a
     * conn id of this node that must not receive it, or 0. Never blocks on a network. */
    void (*broadcast)(struct bus *b, const char *topic, const char *event, const char *payload,
                      size_t payload_len, uint64_t exclude);
    /* Closes every socket of user on every node. */
    void (*disconnect_user)(struct bus *b, const char *user);
    /* A presence change of this node, for the other nodes; meta_json carries phx_ref
     * (and phx_ref_prev), NULL for BUS_UNTRACK. */
    void (*presence)(struct bus *b, enum bus_presence_op op, const char *topic,
                     const char *key, uint64_t conn_id, const char *meta_json);
    enum bus_state (*state)(struct bus *b);
    /* Stops the backend's threads, sends what is queued, frees b. */
    void (*stop)(struct bus *b);
};

/* Base of every backend's handle: backends embed it first. */
struct bus {
    const struct bus_ops *ops;
    struct bus_sink sink;
};

static inline void bus_broadcast(struct bus *b, const char *topic, const char *event,
                                 const char *payload, size_t payload_len, uint64_t exclude)
{
    b->ops->broadcast(b, topic, event, payload, payload_len, exclude);
}
static inline void bus_disconnect_user(struct bus *b, const char *user)
{
    b->ops->disconnect_user(b, user);
}
static inline void bus_presence(struct bus *b, enum bus_presence_op op, const char *topic,
                                const char *key, uint64_t conn_id, const char *meta_json)
{
    b->ops->presence(b, op, topic, key, conn_id, meta_json);
}
/* In a cluster, tells the other nodes about this node's presence change of (topic,
 * conn_id) under key: the meta p now holds for it (not for BUS_UNTRACK). Nothing in
 * BUS_LOCAL mode, or when p holds no meta for it. */
void bus_tell_presence(struct bus *b, struct presence *p, enum bus_presence_op op,
                       const char *topic, const char *key, uint64_t conn_id);
static inline enum bus_state bus_state(struct bus *b)
{
    return b->ops->state(b);
}
/* "none", "ok" or "down", as /healthz reports it. */
const char *bus_state_name(enum bus_state s);
/* Stops and frees b. Accepts NULL. */
void bus_stop(struct bus *b);

/* Builds and publishes an ephemeral broadcast to the subscribers of sink's node. */
void bus_sink_publish_event(const struct bus_sink *sink, const char *topic, const char *event,
                            const char *payload, size_t payload_len, uint64_t exclude);
/* The same for this bus's node. */
void bus_publish_local(struct bus *b, const char *topic, const char *event,
                       const char *payload, size_t payload_len, uint64_t exclude);
/* Publishes committed rows to this node's subscribers, in order, each as its row's
 * broadcast (bcast_of_change, …), in one publish per call. */
void bus_publish_changes(struct bus *b, const struct store_change *cs, size_t n);
void bus_publish_notifs(struct bus *b, const struct store_notif *ns, size_t n);
void bus_publish_docops(struct bus *b, const struct store_docop *ops, size_t n);

/* bus_local.c: the one-node bus. Every event goes to sink at once; committed rows come
 * from the store's listeners (bus_local_on_*, with the bus as arg). */
struct bus *bus_local_create(const struct bus_sink *sink);
void bus_local_on_changes(const struct store_change *cs, size_t n, void *bus);
void bus_local_on_notifs(const struct store_notif *ns, size_t n, void *bus);
void bus_local_on_docops(const struct store_docop *ops, size_t n, void *bus);

/* bus_pg.c: the PostgreSQL cluster bus. One LISTEN connection per node wakes it for
 * "room:<id>", "notifications:<user>" and "document:<id>" (written by triggers on every
 * INSERT, by anyone); the node then reads the rows after the last ones it delivered, by
 * seq (its own store writer's rows come from memory, bus_pg_on_*), and publishes them to
 * sink, so all nodes send one room in one order. Ephemeral events (REST broadcasts,
 * typing, user_left, disconnects, presence changes) travel in NOTIFY payloads sent by a
 * second connection.
 * When PostgreSQL goes away the node keeps its sockets, reconnects with backoff, LISTENs
 * again and fills every gap by seq. Nodes heartbeat in `nodes`; a node whose heartbeat is
 * stale (reap_after_ms) is reaped by the others, with its presences. Other nodes'
 * presence changes are applied to presence. Connects (url: postgres://…), registers
 * node_id, loads the other nodes' presences, LISTENs and starts its threads. Returns 0
 * and sets *out, or RC_ESTORE (message in err). */
int bus_pg_start(const char *url, const struct bus_sink *sink, struct presence *presence,
                 const char *node_id, int reap_after_ms, struct bus **out, char *err,
                 size_t errlen) MUSTCHECK;

/* The PostgreSQL store's listeners (store_listeners, with the bus as arg): this node's
 * own commits of room changes and document operations are delivered from these copies,
 * in the same version order as everything else, and the wake-ups those commits send
 * (from the session bus_pg_on_session names) are not followed by a read. Notifications
 * are always read back: their ids are not gapless per user. */
void bus_pg_on_changes(const struct store_change *cs, size_t n, void *bus);
void bus_pg_on_docops(const struct store_docop *ops, size_t n, void *bus);
void bus_pg_on_session(int pid, void *bus);

#endif
