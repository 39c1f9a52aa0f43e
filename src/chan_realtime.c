/* chan_realtime.c - realtime:<name>: the channels of realtime-js, supabase-js's realtime
 * client (docs/realtime-js.md). The join's config says what the channel is:
 *
 * - public (the default): an ephemeral topic for any authenticated socket; broadcasts go
 *   through the bus to every node's subscribers and are not stored;
 * - private (config.private): room <name>, for its members. Every broadcast is a row of
 *   the room's change log (event "broadcast") before anyone gets it, so it reaches every
 *   node from the store, in version order, and a join replays what it missed
 *   (config.broadcast.replay). The channel watches the room's topic for those rows.
 *
 * Presence (track/untrack) works on both, in Phoenix's presence_state/presence_diff,
 * cluster-wide like presence:<id>. A join asking for postgres_changes is refused. */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "bcast.h"
#include "bus.h"
#include "channel.h"
#include "conn.h"
#include "metrics.h"
#include "presence.h"
#include "store.h"
#include "util/log.h"
#include "util/sbuf.h"
#include "util/xmalloc.h"
#include "validate.h"
#include "worker.h"

/* Broadcasts a replay pushes when the join names no limit, and at most. */
#define REPLAY_DEFAULT 25
#define REPLAY_MAX 10000
/* Longest presence key and user event name, in bytes. */
#define NAME_MAX_BYTES 255

/* What a realtime channel keeps besides struct chan's own fields. */
struct rt_priv {
    bool private_;  /* a room's channel */
    bool self;      /* config.broadcast.self: the sender gets its own broadcasts */
    bool tracked;   /* this channel has a presence entry */
    char *key;      /* the presence key */
    /* Private channels without self: the client's own broadcasts are held back. */
    unsigned writes; /* broadcasts sent here and not yet committed */
    int64_t *mine;   /* versions of committed broadcasts from here, not yet seen back */
    size_t n_mine, cap_mine;
    struct bcast **waiting; /* watched broadcasts held while writes are in flight */
    size_t n_waiting, cap_waiting;
};

/* The name part of the topic. */
static const char *name_of(const struct chan *ch)
{
    return ch->topic + strlen(realtime_channel.prefix);
}

/* The channel's state (set at join). */
static struct rt_priv *priv(const struct chan *ch)
{
    return ch->priv;
}

/* Frees what the channel keeps. */
static void priv_free(void *arg)
{
    struct rt_priv *p = arg;
    for (size_t i = 0; i < p->n_waiting; i++)
        bcast_unref(p->waiting[i]);
    free(p->waiting);
    free(p->mine);
    free(p->key);
}

/* o[key] when o is an object. */
static json_t *member(const json_t *o, const char *key)
{
    return json_is_object(o) ? json_object_get(o, key) : NULL;
}

/* A boolean member, or dflt when it is absent or not a boolean. */
static bool flag(const json_t *o, const char *key, bool dflt)
{
    json_t *v = member(o, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

/* A JSON string that is 1..NAME_MAX_BYTES bytes without NUL. */
static bool short_name(const json_t *v)
{
    size_t n = json_string_length(v);
    return json_is_string(v) && n >= 1 && n <= NAME_MAX_BYTES &&
           strlen(json_string_value(v)) == n;
}

/* A generated presence key: 16 hex digits. */
static char *random_key(void)
{
    uint8_t r[8];
    if (getrandom(r, sizeof r, 0) != sizeof r)
        memset(r, 0, sizeof r);
    char *k = xmalloc(17);
    for (int i = 0; i < 8; i++)
        snprintf(k + 2 * i, 3, "%02x", r[i]);
    return k;
}

/* ---- presence ------------------------------------------------------------------------ */

/* After the join reply: the topic's presence state, then the broadcasts held meanwhile. */
static void start(struct chan *ch)
{
    struct sbuf b = SBUF_INIT;
    presence_state(chan_env(ch)->presence, ch->topic, &b);
    chan_push(ch, "presence_state", b.data, b.len);
    sbuf_cleanup(&b);
    chan_release_held(ch);
}

/* presence {event: "track", payload} and {event: "untrack"}. */
static void presence_event(struct chan *ch, const struct phx_in *m, const char *ref)
{
    const struct worker_env *env = chan_env(ch);
    struct rt_priv *p = priv(ch);
    json_t *ev = member(m->payload, "event");
    if (json_is_string(ev) && !strcmp(json_string_value(ev), "untrack")) {
        if (p->tracked && presence_untrack(env->presence, ch->topic, ch->conn->id) == 0) {
            metrics_presence_delta(-1);
            bus_tell_presence(env->bus, env->presence, BUS_UNTRACK, ch->topic, p->key,
                              ch->conn->id);
        }
        p->tracked = false;
        chan_reply(ch, ref, "ok", NULL);
        return;
    }
    json_t *meta = member(m->payload, "payload");
    if (!json_is_string(ev) || strcmp(json_string_value(ev), "track") ||
        (meta && !json_is_object(meta))) {
        chan_reply_error(ch, ref, "invalid_presence");
        return;
    }
    char *text = meta ? json_dumps(meta, JSON_COMPACT) : xstrdup("{}");
    int rc = p->tracked ? presence_update(env->presence, ch->topic, ch->conn->id, text)
                        : presence_track(env->presence, ch->topic, p->key, ch->conn->id, text);
    free(text);
    if (rc) {
        chan_reply_error(ch, ref, rc == RC_EINVAL ? "invalid_presence" : "unavailable");
        return;
    }
    if (!p->tracked)
        metrics_presence_delta(1);
    bus_tell_presence(env->bus, env->presence, p->tracked ? BUS_UPDATE : BUS_TRACK, ch->topic,
                      p->key, ch->conn->id);
    p->tracked = true;
    chan_reply(ch, ref, "ok", NULL);
}

/* ---- broadcasts --------------------------------------------------------------------- */

/* Whether version v is one of this channel's own committed broadcasts; forgets it. */
static bool take_mine(struct rt_priv *p, int64_t v)
{
    for (size_t i = 0; i < p->n_mine; i++)
        if (p->mine[i] == v) {
            p->mine[i] = p->mine[--p->n_mine];
            return true;
        }
    return false;
}

/* Whether b must wait: it may be one of this channel's own broadcasts whose version is
 * not known yet (a write in flight), or something queued is ahead of it. */
static bool must_wait(const struct chan *ch, const struct bcast *b)
{
    const struct rt_priv *p = priv(ch);
    if (p->n_waiting)
        return true;
    return p->writes && b->user_id && !strcmp(b->user_id, ch->conn->user_id);
}

/* Sends the watched broadcasts that no longer wait, in order; this channel's own are
 * dropped (self false). */
static void flush_waiting(struct chan *ch)
{
    struct rt_priv *p = priv(ch);
    size_t i = 0;
    for (; i < p->n_waiting; i++) {
        struct bcast *b = p->waiting[i];
        bool from_user = b->user_id && !strcmp(b->user_id, ch->conn->user_id);
        if (from_user && take_mine(p, b->seq)) {
            bcast_unref(b);
            continue;
        }
        if (from_user && p->writes)
            break;
        struct obuf *f = chan_frame_of(ch, b);
        if (f)
            conn_send(ch->conn, f);
        bcast_unref(b);
    }
    if (i) {
        memmove(p->waiting, p->waiting + i, (p->n_waiting - i) * sizeof *p->waiting);
        p->n_waiting -= i;
    }
    /* Versions already seen and not waiting will never come back: forget them. */
    for (size_t k = 0; k < p->n_mine;) {
        bool waits = false;
        for (size_t j = 0; j < p->n_waiting && !waits; j++)
            waits = p->waiting[j]->seq == p->mine[k];
        if (p->mine[k] <= ch->last_seq && !waits)
            p->mine[k] = p->mine[--p->n_mine];
        else
            k++;
    }
}

/* chan_type.watch: a change of the room; its broadcasts go to the client once each, in
 * version order. */
static void realtime_watch(struct chan *ch, const struct bcast *b)
{
    if (strcmp(b->event, "broadcast") || b->seq <= ch->last_seq)
        return;
    ch->last_seq = b->seq;
    struct rt_priv *p = priv(ch);
    if (!p->self) {
        bool from_user = b->user_id && !strcmp(b->user_id, ch->conn->user_id);
        if (from_user && take_mine(p, b->seq))
            return;
        if (must_wait(ch, b)) {
            if (p->n_waiting == p->cap_waiting) {
                p->cap_waiting = p->cap_waiting ? 2 * p->cap_waiting : 8;
                p->waiting = xrealloc(p->waiting, p->cap_waiting * sizeof *p->waiting);
            }
            struct bcast *held = (struct bcast *)b;
            bcast_ref(held, 1);
            p->waiting[p->n_waiting++] = held;
            return;
        }
    }
    struct obuf *f = chan_frame_of(ch, b);
    if (f)
        conn_send(ch->conn, f);
}

/* chan_type.accept for the channel's own topic: a private channel takes presence from
 * it but not the public topic's broadcasts (its own come from the room's log). */
static bool realtime_accept(struct chan *ch, const struct bcast *b)
{
    return !(priv(ch)->private_ && !strcmp(b->event, "broadcast"));
}

/* A private broadcast was committed or refused: the reply (config.broadcast.ack waits
 * for it), then what was waiting for its version. */
static void broadcast_done(struct chan *ch, struct store_req *req, const char *ref)
{
    if (!ch)
        return;
    struct rt_priv *p = priv(ch);
    if (!p->self) {
        p->writes--;
        if (!req->rc) {
            if (p->n_mine == p->cap_mine) {
                p->cap_mine = p->cap_mine ? 2 * p->cap_mine : 8;
                p->mine = xrealloc(p->mine, p->cap_mine * sizeof *p->mine);
            }
            p->mine[p->n_mine++] = req->version;
        }
    }
    if (req->rc)
        chan_reply_error(ch, ref, req->rc == RC_ENOTFOUND ? "not_found" : "unavailable");
    else
        chan_reply(ch, ref, "ok", NULL);
    if (!p->self)
        flush_waiting(ch);
}

/* broadcast {type: "broadcast", event, payload}: to the room's log (private) or to the
 * topic's subscribers on every node (public). */
static void broadcast_event(struct chan *ch, const struct phx_in *m, const char *ref)
{
    struct rt_priv *p = priv(ch);
    json_t *ev = member(m->payload, "event");
    if (m->binary) {
        chan_reply_error(ch, ref, "binary payloads are not supported");
        return;
    }
    if (!short_name(ev) || !strncmp(json_string_value(ev), "phx_", 4)) {
        chan_reply_error(ch, ref, "invalid_event");
        return;
    }
    json_t *payload = member(m->payload, "payload");
    if (p->private_) {
        if (!strcmp(ch->role, "viewer")) {
            chan_reply_error(ch, ref, "insufficient_permissions");
            return;
        }
        struct store_req *req = store_req_create(STORE_BROADCAST_ADD);
        req->room_id = xstrdup(name_of(ch));
        req->user_id = xstrdup(ch->conn->user_id);
        req->name = xstrdup(json_string_value(ev));
        req->data = payload ? json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY)
                            : xstrdup("{}");
        if (!p->self)
            p->writes++;
        chan_store(ch, req, ref, broadcast_done);
        return;
    }
    json_t *out = json_pack("{s:s,s:O,s:o}", "type", "broadcast", "event", ev, "payload",
                            payload ? json_incref(payload) : json_object());
    char *text = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    bus_broadcast(chan_env(ch)->bus, ch->topic, "broadcast", text, strlen(text),
                  p->self ? 0 : ch->conn->id);
    free(text);
    chan_reply(ch, ref, "ok", NULL);
}

/* ---- join --------------------------------------------------------------------------- */

/* Pushes the replayed broadcasts of a private join, oldest first, each as realtime-js
 * gets a live one, with meta {replayed: true, id}. */
static void push_replay(struct chan *ch, const struct store_req *req)
{
    struct sbuf b = SBUF_INIT;
    for (size_t i = 0; i < req->n_changes; i++) {
        sbuf_reset(&b);
        if (bcast_change_realtime_json(&b, &req->changes[i], true))
            chan_push(ch, "broadcast", b.data, b.len);
    }
    sbuf_cleanup(&b);
}

/* The private join's read finished: reply, replay, presence, then what was held. The
 * channel's mark is the snapshot's version: watched broadcasts at or below it are in the
 * replay or before it, those above follow, each once. */
static void join_done(struct chan *ch, struct store_req *req, const char *ref)
{
    if (!chan_join_read_ok(ch, req))
        return;
    ch->role = xstrdup(req->member.role);
    chan_join_ok(ch, "{}");
    push_replay(ch, req);
    ch->last_seq = req->room.version;
    start(ch);
}

/* config.broadcast.replay {since (ms), limit, after ("<id>")} into req; false when it is
 * there but malformed. Without one, nothing is replayed. */
static bool replay_bounds(const json_t *replay, struct store_req *req)
{
    req->since_ms = -1;
    req->since_version = 0;
    req->limit = 0;
    if (!replay || json_is_null(replay))
        return true;
    if (!json_is_object(replay))
        return false;
    json_t *since = member(replay, "since"), *limit = member(replay, "limit");
    json_t *after = member(replay, "after");
    if (since && !(json_is_integer(since) && json_integer_value(since) >= 0))
        return false;
    if (limit && !(json_is_integer(limit) && json_integer_value(limit) >= 1 &&
                   json_integer_value(limit) <= REPLAY_MAX))
        return false;
    int64_t a = 0;
    if (json_is_string(after)) {
        const char *v = json_string_value(after);
        char *end;
        a = *v >= '0' && *v <= '9' ? strtoll(v, &end, 10) : -1;
        if (a < 0 || *end)
            return false;
    } else if (json_is_integer(after) && json_integer_value(after) >= 0) {
        a = json_integer_value(after);
    } else if (after) {
        return false;
    }
    req->since_ms = since ? json_integer_value(since) : 0;
    req->since_version = a;
    req->limit = limit ? (int)json_integer_value(limit) : REPLAY_DEFAULT;
    return true;
}

/* The join's access_token, when it has one: it must be a valid token of the socket's
 * user; its expiry becomes the session's. */
static bool join_token_ok(struct chan *ch, const json_t *params)
{
    json_t *t = member(params, "access_token");
    return !t || json_is_null(t) || chan_token_refresh(ch, t);
}

/* phx_join on realtime:<name> with realtime-js's {config, access_token}. */
static void realtime_join(struct chan *ch, json_t *params)
{
    json_t *config = member(params, "config");
    json_t *pc = member(config, "postgres_changes");
    if (json_is_array(pc) && json_array_size(pc)) {
        chan_join_error(ch, "postgres_changes is not supported by rowcast");
        return;
    }
    if (!join_token_ok(ch, params)) {
        chan_join_error(ch, "invalid_token");
        return;
    }
    json_t *bc = member(config, "broadcast"), *pr = member(config, "presence");
    struct rt_priv *p = xcalloc(1, sizeof *p);
    ch->priv = p;
    ch->priv_free = priv_free;
    p->private_ = flag(config, "private", false);
    p->self = flag(bc, "self", false);
    json_t *key = member(pr, "key");
    p->key = short_name(key) ? xstrdup(json_string_value(key)) : random_key();
    if (!p->private_) {
        chan_join_ok(ch, "{}");
        start(ch);
        return;
    }
    if (!validate_room_id(name_of(ch))) {
        chan_join_error(ch, "not_found");
        return;
    }
    struct store_req *req = store_req_create(STORE_BROADCAST_JOIN);
    if (!replay_bounds(member(bc, "replay"), req)) {
        store_req_destroy(req);
        chan_join_error(ch, "invalid_replay");
        return;
    }
    req->room_id = xstrdup(name_of(ch));
    req->user_id = xstrdup(ch->conn->user_id);
    struct sbuf topic = SBUF_INIT;
    sbuf_adds(&topic, "room:");
    sbuf_adds(&topic, name_of(ch));
    chan_watch(ch, topic.data, topic.len);
    sbuf_cleanup(&topic);
    chan_store(ch, req, NULL, join_done);
}

/* Events from the client on a joined channel. */
static void realtime_handle_in(struct chan *ch, const char *event, const struct phx_in *m,
                               const char *ref)
{
    if (!strcmp(event, "broadcast"))
        broadcast_event(ch, m, ref);
    else if (!strcmp(event, "presence") && !m->binary)
        presence_event(ch, m, ref);
    else
        chan_reply_error(ch, ref, "unknown_event");
}

/* Leaving or disconnecting: the presence entry leaves. */
static void realtime_terminate(struct chan *ch)
{
    const struct worker_env *env = chan_env(ch);
    struct rt_priv *p = priv(ch);
    if (p && p->tracked && presence_untrack(env->presence, ch->topic, ch->conn->id) == 0) {
        metrics_presence_delta(-1);
        bus_tell_presence(env->bus, env->presence, BUS_UNTRACK, ch->topic, p->key, ch->conn->id);
    }
}

const struct channel_type realtime_channel = {
    .prefix = "realtime:",
    .join = realtime_join,
    .handle_in = realtime_handle_in,
    .accept = realtime_accept,
    .terminate = realtime_terminate,
    .watch = realtime_watch,
    .realtime_frames = true,
};
