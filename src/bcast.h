/* bcast.h - a broadcast: one event to every subscriber of a topic, encoded once for each
 * serializer (V2 and V1 text) into refcounted frames that every subscriber's outbound
 * queue shares. Immutable once built; references are atomic (built on one thread,
 * delivered by every I/O worker). */
#ifndef RC_BCAST_H
#define RC_BCAST_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/sbuf.h"

struct obuf;
struct store_change;
struct store_notif;
struct store_docop;

struct bcast {
    atomic_uint refs;
    char *topic;
    size_t topic_len;
    char *event;
    struct obuf *v2;  /* [null,null,topic,event,payload] */
    struct obuf *v1;  /* {"event","payload","ref":null,"topic"} */
    uint64_t exclude; /* conn id that must not receive it (0: none) */
    int64_t seq;      /* rows: the row's seq (a room change's version, a notification's
                       * id); 0 for ephemeral events */
    int64_t msg_seq;  /* room changes: the message it is about */
    char *user_id;    /* room changes: that message's author; NULL otherwise */
    struct obuf *rt_v2, *rt_v1, *rt_bin; /* realtime-js frames, NULL when none */
};

/* Encodes a broadcast once for both serializers; refs = 1. payload is JSON text. NULL
 * when out of memory. Any thread. Event "broadcast" on a realtime:<name> topic with an
 * object payload that has a string "event" also gets rt_bin, realtime-js's kind-4 frame
 * (its "payload" member, {} when absent; its "meta" member when an object); none when a
 * field is over 255 bytes or memory runs out (v2/v1 already are the text forms). */
struct bcast *bcast_create(const char *topic, const char *event, const char *payload,
                           size_t payload_len, uint64_t exclude, int64_t seq);

/* Scratch buffers for building the broadcasts of committed rows: a batch of rows shares
 * one, emptied for each row, so its memory is allocated once per batch. Single owner. */
struct bcast_scratch {
    struct sbuf topic;
    struct sbuf payload;
};

#define BCAST_SCRATCH_INIT {SBUF_INIT, SBUF_INIT}

/* Frees the scratch's memory. */
void bcast_scratch_cleanup(struct bcast_scratch *s);

/* The broadcast of a committed row: a room change (its event and payload) to
 * room:<id>, new_notification to notifications:<user>, document_updated to document:<id>,
 * carrying the change's version (the operation's seq, the notification's id). A change's
 * payload is stored text that any writer may have put there: one that is not a JSON
 * object gets NULL (with a logged warning), as does running out of memory. Built in s, whose contents it replaces (the broadcast keeps
 * nothing of s). NULL when out of memory. Any thread (s: the caller's own). A change with
 * event "broadcast" and a string "event" in its payload also gets rt_v2/rt_v1 (event
 * "broadcast" on realtime:<room>, {"type":"broadcast","event","payload","meta":{"id":
 * "<version>"}}, both or neither) and rt_bin, their kind-4 form (absent when a field is
 * over 255 bytes); out of memory leaves them absent. */
struct bcast *bcast_of_change(const struct store_change *c, struct bcast_scratch *s);
/* Appends the payload a realtime-js channel gets for a room broadcast row (a change with
 * event "broadcast"): {"event","meta":{"id":"<version>"},"payload","type":"broadcast"},
 * with "replayed":true in meta for a replay. False (nothing appended) for a row without
 * a string event, or out of memory. Any thread. */
bool bcast_change_realtime_json(struct sbuf *out, const struct store_change *c, bool replayed);
struct bcast *bcast_of_notif(const struct store_notif *n, struct bcast_scratch *s);
struct bcast *bcast_of_docop(const struct store_docop *op, struct bcast_scratch *s);

/* Takes n more references (one per extra recipient). Any thread. */
static inline void bcast_ref(struct bcast *b, unsigned n)
{
    atomic_fetch_add_explicit(&b->refs, n, memory_order_relaxed);
}

/* Drops a reference, freeing on the last. Accepts NULL. Any thread. */
void bcast_unref(struct bcast *b);

#endif
