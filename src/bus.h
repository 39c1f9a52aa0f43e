/* bus.h - the PostgreSQL cluster bus. One LISTEN connection per node wakes it for
 * "room:<id>", "notifications:<user>" and "document:<id>" (written by triggers on
 * every INSERT, by anyone); the node then reads the rows after the last ones it
 * delivered, by seq, and hands them to its workers — every node, the writer included,
 * so all nodes send one room in one order. Ephemeral events (REST broadcasts, typing,
 * user_left, disconnects, presence changes) travel in NOTIFY payloads sent by a second
 * connection. When PostgreSQL goes away the node keeps its sockets, reconnects with
 * backoff, LISTENs again and fills every gap by seq. Nodes heartbeat in `nodes`; a node
 * whose heartbeat is stale is reaped by the others, with its presences. */
#ifndef RC_BUS_H
#define RC_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rc.h"

struct bus;
struct hub;

enum bus_presence_op { BUS_TRACK, BUS_UPDATE, BUS_UNTRACK };

/* Connects (url: postgres://…), registers node_id in `nodes`, loads the other nodes'
 * presences, LISTENs, and starts the listener and sender threads. reap_after_ms: a node
 * whose heartbeat is older is reaped. Returns 0 or RC_ESTORE (message in err). */
int bus_start(const char *url, struct hub *hub, const char *node_id, int reap_after_ms,
              struct bus **out, char *err, size_t errlen) MUSTCHECK;

/* Stops both threads, removes this node (its presences go with it) and frees. */
void bus_stop(struct bus *b);

/* Sends an ephemeral broadcast to every node (this one included). exclude: a conn id
 * of this node that must not receive it, or 0. Any thread; never blocks on the
 * network (queued for the sender thread). */
void bus_broadcast(struct bus *b, const char *topic, const char *event, const char *payload,
                   size_t payload_len, uint64_t exclude);

/* Closes every socket of user on every node. Any thread. */
void bus_disconnect_user(struct bus *b, const char *user);

/* A presence change of this node, for the others (and for the presences table).
 * meta_json carries phx_ref (and phx_ref_prev); NULL for BUS_UNTRACK. Any thread. */
void bus_presence(struct bus *b, enum bus_presence_op op, const char *topic, const char *key,
                  uint64_t conn_id, const char *meta_json);

/* True while the LISTEN connection is up. Any thread. */
bool bus_connected(struct bus *b);

#endif
