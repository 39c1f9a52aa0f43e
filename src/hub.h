/* hub.h - the I/O workers and fan-out between them. A broadcast is encoded once (V2 and
 * V1 text) into a refcounted struct bcast and posted to every worker; each worker
 * delivers it to its own subscribers of the topic, so the hot path takes no lock but
 * the inbox's. Also the local bus: the store's committed messages become broadcasts. */
#ifndef RC_HUB_H
#define RC_HUB_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "rc.h"

struct config;
struct store;
struct obuf;
struct hub;
struct store_msg;
struct store_notif;
struct store_docop;

struct bcast {
    atomic_uint refs;
    char *topic;
    size_t topic_len;
    char *event;
    struct obuf *v2; /* [null,null,topic,event,payload] */
    struct obuf *v1; /* {"event","payload","ref":null,"topic"} */
    uint64_t exclude; /* conn id that must not receive it (0: none) */
    int64_t seq;      /* room messages: their seq; 0 for ephemeral events */
};

/* Encodes a broadcast once for both serializers; refs = 1. NULL when out of memory. */
struct bcast *bcast_create(const char *topic, const char *event, const char *payload,
                           size_t payload_len, uint64_t exclude, int64_t seq);
/* Drops a reference. Accepts NULL. Any thread. */
void bcast_unref(struct bcast *b);

/* Creates cfg->workers I/O workers (0: one per core), not yet running. Main thread. */
struct hub *hub_create(const struct config *cfg);
/* The store message listener (pass it, with the hub as arg, in store_options). */
void hub_on_messages(const struct store_msg *msgs, size_t n, void *arg);
/* The same for notifications and document operations. */
void hub_on_notifications(const struct store_notif *ns, size_t n, void *arg);
void hub_on_docops(const struct store_docop *ops, size_t n, void *arg);
/* Starts the workers; store requests from channels go to store. Main thread. */
int hub_start(struct hub *h, struct store *store) MUSTCHECK;
/* Closes every socket with 1001 (going away) and stops the worker threads; store
 * completions that arrive later wait for hub_free. Main thread. */
void hub_shutdown(struct hub *h);
/* Finishes what is left and frees. After hub_shutdown and store_close. Accepts NULL. */
void hub_free(struct hub *h);

/* Posts b to every worker; consumes the caller's reference. Any thread. */
void hub_publish(struct hub *h, struct bcast *b);
/* Builds and publishes a broadcast to every node (exclude: conn id or 0). Any thread. */
void hub_broadcast(struct hub *h, const char *topic, const char *event, const char *payload,
                   size_t payload_len, uint64_t exclude);
/* Closes every socket of user_id with 1001, on every node. Any thread. */
void hub_disconnect_user(struct hub *h, const char *user_id);
/* The same two for this node only (what the bus calls when its messages arrive). */
void hub_broadcast_local(struct hub *h, const char *topic, const char *event,
                         const char *payload, size_t payload_len, uint64_t exclude);
void hub_disconnect_local(struct hub *h, const char *user_id);
/* PostgreSQL mode: broadcasts and disconnects go through the cluster bus. */
struct bus;
void hub_set_bus(struct hub *h, struct bus *b);
struct bus *hub_bus(struct hub *h);
/* This node's id (presence entries, nodes table). */
const char *hub_node_id(struct hub *h);

/* Hands an upgraded WebSocket to the least-loaded worker: fd (owned from now on), the
 * bytes libmicrohttpd read past the handshake, the authenticated user (ownership
 * passes) and the serializer. Any thread. */
void hub_accept_ws(struct hub *h, int fd, const uint8_t *extra, size_t extra_len,
                   char *user_id, enum codec_vsn vsn);

/* Takes a token for a channel event of user on topic; false (with the seconds to wait)
 * when over the limit. Any thread. */
bool hub_rate_take(struct hub *h, const char *user, const char *topic, int64_t now_ms,
                   int *retry_after_s);
/* (hub_rate_take and hub_release_user accept a NULL hub: no limits, nothing counted.) */
/* Forgets idle rate-limit buckets. Any thread. */
void hub_rate_sweep(struct hub *h, int64_t now_ms);
/* Counts one more open socket for user unless it has --max-conns-per-user already;
 * every true is matched by one hub_release_user. Any thread. */
bool hub_acquire_user(struct hub *h, const char *user);
void hub_release_user(struct hub *h, const char *user);

/* The node's presence state (presence.h); diffs it computes are broadcast. */
struct presence *hub_presence(struct hub *h);

/* Workers by index, for transports that route requests to a session's worker. */
int hub_worker_count(struct hub *h);
int hub_pick_worker(struct hub *h); /* the least loaded */
struct inbox_item;
/* Posts it to worker w; false (nothing posted) once the workers have stopped. */
bool hub_post_to_worker(struct hub *h, int w, struct inbox_item *it);

/* Counters for tests and metrics. */
struct hub_stats {
    uint64_t sockets_open;
    uint64_t slow_consumer_closes;
    uint64_t protocol_errors;
    uint64_t broadcasts;
};
void hub_get_stats(struct hub *h, struct hub_stats *out);

#endif
