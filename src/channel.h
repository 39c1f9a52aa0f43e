/* channel.h - channel types and channel instances: the C shape of a Phoenix channel
 * module. A channel type is a descriptor matched by topic prefix; a chan is one joined
 * (or joining) topic on one conn. Everything here runs on the conn's worker thread. */
#ifndef RC_CHANNEL_H
#define RC_CHANNEL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "codec.h"

struct conn;
struct bcast;
struct worker_env;
struct store_req;
struct sbuf;

enum chan_state {
    CHAN_JOINING, /* join accepted for processing; broadcasts are held back */
    CHAN_JOINED,  /* replied ok; broadcasts flow */
};

struct held_bcast {
    struct bcast *b;
    bool watched; /* of a watched topic: for the type's watch hook, not the client */
    struct held_bcast *next;
};

/* A topic a chan watches (chan_watch): where it sits in the topic's watcher array. */
struct chan_watch {
    char *topic;
    size_t topic_len;
    size_t pos;
};

struct chan {
    struct conn *conn;
    const struct channel_type *type;
    char *topic;
    size_t topic_len;
    char *jr;          /* the join's join_ref as JSON text, NULL for null (then pushes
                        * and replies use join_ref, the join's ref, as Phoenix does) */
    char *join_ref;    /* the join push's ref as JSON text */
    uint32_t id;       /* unique on its worker, for store completions */
    enum chan_state state;
    size_t sub_index;  /* position in the worker's subscriber array for the topic
                        * (SIZE_MAX: not subscribed) */
    struct held_bcast *held, *held_tail;
    struct chan_watch *watches; /* the topics it watches besides its own */
    size_t n_watches, cap_watches;
    int64_t last_seq;  /* room channels: highest seq delivered to this client */
    char *role;        /* room channels: the member's role */
    void *priv;
    void (*priv_free)(void *priv); /* frees what priv holds (priv itself is freed after) */
    struct chan *next; /* the conn's list */
};

struct channel_type {
    const char *prefix; /* topic prefix, e.g. "room:"; the rest must be non-empty */
    /* Starts a join. Calls chan_join_ok or chan_join_error, now or from a store
     * continuation. params is the join payload (any JSON value). */
    void (*join)(struct chan *ch, json_t *params);
    /* An event on a joined channel; ref is JSON text or NULL. */
    void (*handle_in)(struct chan *ch, const char *event, const struct phx_in *m,
                      const char *ref);
    /* Decides whether a broadcast is delivered to this chan (NULL: always). */
    bool (*accept)(struct chan *ch, const struct bcast *b);
    /* The channel ends: leave, duplicate join, or conn closed. May broadcast. */
    void (*terminate)(struct chan *ch);
    /* A broadcast on a topic the chan watches (chan_watch), instead of sending it: in
     * arrival order, held like the others while the chan joins. It must not add or
     * remove watches. NULL for types that never watch. */
    void (*watch)(struct chan *ch, const struct bcast *b);
    /* Its clients are realtime-js: broadcasts with realtime-js frames (bcast.rt_*) go
     * out in those (chan_frame_of). */
    bool realtime_frames;
};

extern const struct channel_type room_channel;
extern const struct channel_type notifications_channel;
extern const struct channel_type document_channel;
extern const struct channel_type presence_channel;
extern const struct channel_type realtime_channel;

/* Finishes a join: replies ok with response (JSON object text); the channel is joined.
 * Broadcasts held during the join stay held until the type releases them
 * (chan_release_held, or chan_push_history which pushes first and then releases). */
void chan_join_ok(struct chan *ch, const char *response);
/* Refuses a join: replies error {"reason": reason} and removes the chan. */
void chan_join_error(struct chan *ch, const char *reason);
/* Refuses a join whose membership read failed with rc: RC_ENOTFOUND "not_found",
 * RC_EFORBIDDEN "unauthorized", anything else "unavailable". */
void chan_join_failed(struct chan *ch, int rc);
/* The start of a join's store continuation: false when the channel has gone (ch NULL) or
 * the read failed (then the join is refused as chan_join_failed does); true: go on. */
bool chan_join_read_ok(struct chan *ch, const struct store_req *req);
/* Sets req's history bounds from the join params: {"last_seq": N} asks for what came
 * after N (up to `recovery` rows), anything else for the latest `history` rows. */
void chan_history_bounds(json_t *params, struct store_req *req, int history, int recovery);
/* Pushes the history that follows a join reply, {"has_more":true?,"<field>":[…]}: the n
 * items (size bytes each) of items, each appended by append; last_seq is the newest
 * seq of the join's snapshot and item_seq gives an item's seq. has_more is set when a
 * recovery (req->after_seq >= 0) hit req->limit before last_seq. Then the channel starts
 * from last_seq and the broadcasts held during the join are released. */
void chan_push_history(struct chan *ch, const struct store_req *req, const char *event,
                       const char *field, const void *items, size_t n, size_t size,
                       void (*append)(struct sbuf *out, const void *item),
                       int64_t (*item_seq)(const void *item), int64_t last_seq);
/* An accept callback for topics whose broadcasts carry a seq (messages, document
 * operations, notification ids): delivers each seq once, in order, after what the join
 * pushed (ch->last_seq); events without a seq always pass. */
bool chan_accept_seq(struct chan *ch, const struct bcast *b);
/* Releases the held broadcasts after the join reply and whatever the type pushed first
 * (e.g. message_history). */
void chan_release_held(struct chan *ch);

/* Replies to the push whose ref is ref (JSON text): status "ok"/"error", response JSON
 * object text (NULL for {}). */
void chan_reply(struct chan *ch, const char *ref, const char *status, const char *response);
/* Replies {"reason": reason} with status "error". */
void chan_reply_error(struct chan *ch, const char *ref, const char *reason);
/* Pushes an event to this client only, with the channel's join_ref. */
void chan_push(struct chan *ch, const char *event, const char *payload, size_t payload_len);

/* A fresh token for ch's session (an access_token push, a realtime-js join's
 * access_token): when token is a JSON string that is a valid, unexpired socket token of
 * the conn's user, its exp becomes the session's (conn.token_exp) and true is returned;
 * else nothing changes. */
bool chan_token_refresh(struct chan *ch, const json_t *token);
/* Pushes realtime-js's `system` event: {"channel":<topic after the type's prefix>,
 * "extension":"system","message":message,"status":status}. */
void chan_push_system(struct chan *ch, const char *status, const char *message);
/* The frame of broadcast b that ch's client gets: a realtime-js form when b has one
 * and ch's type has realtime_frames (binary on a V2 socket of the realtime endpoint, else
 * text), else Phoenix's text frame for the conn's serializer. NULL: none for it. */
struct obuf *chan_frame_of(const struct chan *ch, const struct bcast *b);
/* What the channel's worker shares with every worker: config, store, bus, presence. */
const struct worker_env *chan_env(const struct chan *ch);

/* Creates the chan of a join on c (state CHAN_JOINING), links it to c and subscribes it
 * to its topic; jr and ref (JSON text or NULL) are copied. The type's join runs next. */
struct chan *chan_create(struct conn *c, const struct channel_type *type, const char *topic,
                         size_t topic_len, const char *jr, const char *ref);
/* The chan of c on topic, or NULL. */
struct chan *chan_find(struct conn *c, const char *topic, size_t len);
/* The join_ref the channel's pushes and replies carry: the join's own, or, for a join
 * sent with a null join_ref, the join's ref (Phoenix does the same). */
const char *chan_jr(const struct chan *ch);
/* Ends a channel: unsubscribes it first (so what terminate broadcasts, e.g. user_left,
 * reaches only the others), runs terminate if it was joined, frees it. */
void chan_end(struct chan *ch);
/* Delivers (or holds, while joining) a broadcast to one subscribed chan. */
void chan_deliver(struct chan *ch, struct bcast *b);
/* Registers ch, whose type has a watch hook, in its worker's index under topic (not its
 * own, at most once per topic): broadcasts to topic then run the hook on ch instead of
 * reaching its client, held while ch joins. chan_end removes every watch. Worker thread. */
void chan_watch(struct chan *ch, const char *topic, size_t topic_len);

/* The channels subscribed on one worker, by topic. Worker thread. */
struct chan_index;
struct chan_index *chan_index_create(void);
/* Frees the index (every chan has ended by then). Accepts NULL. */
void chan_index_destroy(struct chan_index *x);
/* Delivers b to every chan subscribed to its topic and runs the watch hook of every chan
 * watching it, but for those of b->exclude's conn and closed conns. */
void chan_index_deliver(struct chan_index *x, struct bcast *b);
/* Whether some chan is subscribed to topic; how many chans watch it; how many topics
 * have subscribers or watchers. */
bool chan_index_has(struct chan_index *x, const char *topic);
size_t chan_index_watchers(struct chan_index *x, const char *topic);
size_t chan_index_topics(struct chan_index *x);

/* Submits a store request on behalf of ch; when it completes, cont runs on the worker
 * with ch (NULL if the channel has gone meanwhile, or the worker has stopped) and the
 * request, which cont must not free. ref (JSON text, may be NULL) is kept for cont and
 * freed after. The conn stays allocated (one reference) until then. */
void chan_store(struct chan *ch, struct store_req *req, const char *ref,
                void (*cont)(struct chan *ch, struct store_req *req, const char *ref));

#endif
