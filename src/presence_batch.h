/* presence_batch.h - presence diffs on their way to this node's subscribers. Each
 * presence change's diff (presence.h's emit callback) is broadcast to the topic on this
 * node only (other nodes compute their own diffs from the bus's changes). With a batch
 * window, the diffs of one topic are merged — joins with joins, leaves with leaves,
 * which phoenix.js applies joins first, so a meta that came and went inside one window
 * nets out — and broadcast once per window by a thread of its own, as Phoenix's tracker
 * batches them. */
#ifndef RC_PRESENCE_BATCH_H
#define RC_PRESENCE_BATCH_H

#include <stddef.h>

#include "rc.h"

struct bus_sink;
struct presence_batch;

/* Creates the batcher: diffs go to sink's node; window_ms <= 0 sends each at once (no
 * thread). Returns 0 and sets *out, or RC_EIO (no thread). Main thread. */
int presence_batch_create(int window_ms, const struct bus_sink *sink,
                          struct presence_batch **out) MUSTCHECK;
/* The presence emit callback (arg: the batcher). Any thread. */
void presence_batch_emit(const char *topic, const char *diff, size_t len, void *arg);
/* Broadcasts what is pending and stops the thread; later diffs are dropped. Main
 * thread. Accepts NULL. */
void presence_batch_stop(struct presence_batch *pb);
/* Frees the batcher (after presence_batch_stop). Accepts NULL. */
void presence_batch_destroy(struct presence_batch *pb);

#endif
