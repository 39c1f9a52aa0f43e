/* presence.h - Phoenix Presence state of every topic, as one node sees it
 * (docs/phoenix-protocol.md §7): per topic, presence keys (user ids) each holding one meta
 * per tracking connection. Computes presence_state payloads and presence_diff payloads as
 * JSON text in Phoenix's shapes; sends nothing itself.
 *
 * Every entry records the node that owns it (the node id given at creation for local
 * tracks; another node's id for entries replayed from the cluster), and every function
 * works on entries of any node, so a dead node's entries can be reaped at once.
 *
 * Threads: one mutex per object; every function may be called from any thread. Each
 * change hands its presence_diff to the emit callback while the lock is still held, so
 * diffs reach the callback in exactly the order the changes were made: a callback that
 * publishes immediately (hub_broadcast posts to every worker's inbox) makes every
 * subscriber see the diffs of a topic in the same order. To avoid losing a diff, a joining
 * connection must be subscribed to the topic before its presence_state is taken: a diff
 * computed before the snapshot may then arrive after it, which phoenix.js handles (re-sent
 * joins are idempotent, leaves of unknown refs are ignored). */
#ifndef RC_PRESENCE_H
#define RC_PRESENCE_H

#include <stddef.h>
#include <stdint.h>

#include "rc.h"
#include "util/sbuf.h"

struct presence;

/* Length of a phx_ref minted here: URL-safe base64 of 12 bytes (8 bytes of a strictly
 * increasing nanosecond wall clock, 4 bytes of a hash of the node id). */
#define PRESENCE_REF_LEN 16

/* Receives one presence_diff payload (diff: len bytes of JSON text, NUL-terminated, valid
 * only during the call) for topic. Called with the presence lock held, on the thread that
 * made the change: it must not block and must not call any presence_* function on the
 * same object (deadlock). */
typedef void (*presence_emit_fn)(const char *topic, const char *diff, size_t len, void *arg);

/* Creates an empty presence state for the node node_id (copied). emit (may be NULL: diffs
 * are dropped) gets every diff, with arg. The caller owns the result and frees it with
 * presence_destroy. Aborts on out-of-memory. */
struct presence *presence_create(const char *node_id, presence_emit_fn emit, void *arg);

/* Frees p and every entry without emitting anything; accepts NULL. No other thread may
 * still be using p. */
void presence_destroy(struct presence *p);

/* Tracks the connection conn_id of this node on topic under key (a string, e.g. a user
 * id; must be valid UTF-8). meta_json is the text of a JSON object with the meta fields
 * (e.g. {"online_at":1716900000,"status":"online"}); the stored meta is that object with a
 * fresh "phx_ref" (and no "phx_ref_prev"), re-serialized compact with sorted keys. One meta
 * per (conn_id, topic): to change it, use presence_update. Emits
 * {"joins":{key:{"metas":[meta]}},"leaves":{}}. Returns 0, RC_ECONFLICT if (conn_id,
 * topic) is already tracked, RC_EINVAL if meta_json is not a JSON object or key is not
 * valid UTF-8, RC_ENOMEM if jansson ran out of memory. Nothing changes on error. Any
 * thread. */
int presence_track(struct presence *p, const char *topic, const char *key, uint64_t conn_id,
                   const char *meta_json) MUSTCHECK;

/* Replaces the meta of (conn_id, topic) of this node with meta_json (as in
 * presence_track) plus a fresh "phx_ref" and "phx_ref_prev" = the old phx_ref; the meta
 * becomes its key's newest. Emits one diff with the key in both maps: joins the new meta,
 * leaves the old one (which may carry an older phx_ref_prev). Returns 0, RC_ENOTFOUND if
 * not tracked, RC_EINVAL, RC_ENOMEM. Nothing changes on error. Any thread. */
int presence_update(struct presence *p, const char *topic, uint64_t conn_id,
                    const char *meta_json) MUSTCHECK;

/* Removes the meta of (conn_id, topic) of this node; the key goes when its last meta
 * does, the topic when its last key does. Emits {"joins":{},"leaves":{key:{"metas":[meta]}}}.
 * Returns 0 or RC_ENOTFOUND if not tracked (harmless when, e.g., a channel that never
 * tracked terminates). Any thread. */
int presence_untrack(struct presence *p, const char *topic, uint64_t conn_id);

/* The same three operations on an entry owned by node_id (normally another node, replayed
 * from the cluster bus; node_id is copied). The refs are not minted but taken from
 * meta_json, which must carry "phx_ref" as a non-empty string (else RC_EINVAL) and may
 * carry "phx_ref_prev"; both are kept as given, so every node shows the same refs.
 * Errors as above. Any thread. */
int presence_track_remote(struct presence *p, const char *node_id, const char *topic,
                          const char *key, uint64_t conn_id, const char *meta_json) MUSTCHECK;
int presence_update_remote(struct presence *p, const char *node_id, const char *topic,
                           uint64_t conn_id, const char *meta_json) MUSTCHECK;
int presence_untrack_remote(struct presence *p, const char *node_id, const char *topic,
                            uint64_t conn_id);

/* Removes every entry owned by node_id (a dead node, or this node on shutdown) and emits
 * one diff per affected topic, with leaves only, grouping that topic's removed metas by
 * key. Returns the number of metas removed. Holds the lock for one pass over all topics.
 * Any thread. */
size_t presence_untrack_node(struct presence *p, const char *node_id);

/* Appends the presence_state payload of topic to out: {key:{"metas":[...]},...}, keys
 * sorted bytewise, each key's metas oldest first (in the order tracked or last updated);
 * {} for an unknown topic. Any thread. */
void presence_state(struct presence *p, const char *topic, struct sbuf *out);

/* Calls fn once per key of topic (sorted bytewise) with the key, its number of metas and
 * the JSON text of its newest meta (strings valid only during the call). fn runs with the
 * lock held: it must not call presence_* functions on p. Any thread. */
void presence_each_key(struct presence *p, const char *topic,
                       void (*fn)(const char *key, size_t n_metas, const char *newest_meta_json,
                                  void *arg),
                       void *arg);

/* The number of keys present on topic (0 for an unknown topic). Any thread. */
size_t presence_count_keys(struct presence *p, const char *topic);

/* Appends the stored meta (phx_ref and phx_ref_prev included) that this node tracks for
 * (topic, conn_id) to out: what other nodes are told. Returns 0 or RC_ENOTFOUND. Any
 * thread. */
int presence_meta_of(struct presence *p, const char *topic, uint64_t conn_id,
                     struct sbuf *out) MUSTCHECK;

/* The number of topics with at least one key (empty topics are freed). Any thread. */
size_t presence_count_topics(struct presence *p);

#endif
