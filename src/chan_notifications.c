/* chan_notifications.c - notifications:<user>: a user's own notification feed, and the
 * live unread counts of the user's rooms. After the join the unread notifications are
 * pushed; new ones arrive as new_notification.
 *
 * The join also reads the user's rooms and watches each room's topic (chan_watch): a
 * message there by someone else counts as unread, the delete of an unread one uncounts
 * it, and either pushes unread {room_id, unread, last_seq, last_read_seq} to this client.
 * A read mark (on any device or node) publishes the same event on this topic; the
 * channel takes the cursor and count from it. Nothing here reads the database per
 * message. Rooms the user joins after this channel did are not watched until it joins
 * again. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "bcast.h"
#include "channel.h"
#include "conn.h"
#include "obuf.h"
#include "store.h"
#include "util/hmap.h"
#include "util/sbuf.h"
#include "util/xmalloc.h"

/* Unread notifications pushed after a join. */
#define UNREAD_LIMIT 1000
/* How many of a room's latest counted messages are remembered (see struct room_state). */
#define RECENT 8

/* One room's read state as this channel keeps it. */
struct room_state {
    int64_t last_seq;      /* newest message accounted for: older ones never count again */
    int64_t last_read_seq; /* the cursor */
    int64_t unread;
    int64_t snap_seq;      /* last_seq of the join's snapshot */
    /* The seqs of the latest messages counted live, oldest first. Every counted message
     * after exact_since is among them, so a read mark that raced them (it knows messages
     * up to some seq only) can be combined with what came since. */
    int64_t recent[RECENT];
    unsigned n_recent;
    int64_t exact_since;
    bool known; /* in the join's snapshot (a member then) */
};

/* The channel's state (chan->priv). */
struct notif_chan {
    struct hmap rooms;  /* room id → struct room_state */
    int pending;        /* join reads still running */
    bool releasing;     /* the broadcasts held during the join are being released */
    char *unread_push;  /* the unread_notifications payload, once read */
    int64_t newest_id;  /* the user's newest notification id in that read */
};

/* The user part of the topic. */
static const char *topic_user(const struct chan *ch)
{
    return ch->topic + strlen(notifications_channel.prefix);
}

/* Frees one room's state. */
static void free_room(const char *key, void *value, void *arg)
{
    free(value);
}

/* chan->priv_free */
static void state_free(void *priv)
{
    struct notif_chan *nc = priv;
    hmap_each(&nc->rooms, free_room, NULL);
    hmap_cleanup(&nc->rooms);
    free(nc->unread_push);
}

/* Pushes unread {room_id, unread, last_seq, last_read_seq} for one room to this client. */
static void push_unread(struct chan *ch, const char *room, size_t room_len,
                        const struct room_state *st)
{
    struct sbuf b = SBUF_INIT;
    sbuf_printf(&b, "{\"last_read_seq\":%lld,\"last_seq\":%lld,\"room_id\":",
                (long long)st->last_read_seq, (long long)st->last_seq);
    sbuf_add_json_str(&b, room, room_len);
    sbuf_printf(&b, ",\"unread\":%lld}", (long long)st->unread);
    chan_push(ch, "unread", b.data, b.len);
    sbuf_cleanup(&b);
}

/* Remembers a counted message, forgetting the oldest one when full. */
static void recent_add(struct room_state *st, int64_t seq)
{
    if (st->n_recent == RECENT) {
        st->exact_since = st->recent[0];
        memmove(st->recent, st->recent + 1, (RECENT - 1) * sizeof *st->recent);
        st->n_recent--;
    }
    st->recent[st->n_recent++] = seq;
}

/* Forgets the counted messages up to seq; returns how many remain (those after it). */
static unsigned recent_drop_upto(struct room_state *st, int64_t seq)
{
    unsigned k = 0;
    while (k < st->n_recent && st->recent[k] <= seq)
        k++;
    memmove(st->recent, st->recent + k, (st->n_recent - k) * sizeof *st->recent);
    st->n_recent -= k;
    return st->n_recent;
}

/* Whether seq was counted live (and forgets it if so), or may have been before. */
static bool recent_take(struct room_state *st, int64_t seq)
{
    if (seq <= st->exact_since)
        return true;
    for (unsigned i = 0; i < st->n_recent; i++)
        if (st->recent[i] == seq) {
            memmove(st->recent + i, st->recent + i + 1,
                    (st->n_recent - i - 1) * sizeof *st->recent);
            st->n_recent--;
            return true;
        }
    return false;
}

/* A new message in the room: whether the count changed. */
static bool on_new_message(struct room_state *st, int64_t seq, bool mine)
{
    if (seq <= st->last_seq)
        return false; /* in the snapshot, or in a read mark's count */
    st->last_seq = seq;
    if (mine)
        return false;
    st->unread++;
    recent_add(st, seq);
    return true;
}

/* A message of the room deleted: whether the count changed. */
static bool on_deleted(const struct notif_chan *nc, struct room_state *st, int64_t seq,
                       bool mine)
{
    if (mine || seq <= st->last_read_seq || seq > st->last_seq || st->unread <= 0)
        return false;
    /* Held during the join: the snapshot may already leave it out. */
    if (nc->releasing && seq <= st->snap_seq)
        return false;
    if (!recent_take(st, seq))
        return false;
    st->unread--;
    return true;
}

/* chan_type.watch: a broadcast on one of the user's rooms. */
static void notifications_watch(struct chan *ch, const struct bcast *b)
{
    struct notif_chan *nc = ch->priv;
    size_t pl = strlen(room_channel.prefix);
    if (b->msg_seq <= 0 || b->topic_len <= pl)
        return;
    const char *room = b->topic + pl;
    size_t room_len = b->topic_len - pl;
    struct room_state *st = hmap_get(&nc->rooms, room, room_len);
    if (!st || !st->known)
        return;
    bool mine = b->user_id && !strcmp(b->user_id, ch->conn->user_id);
    bool changed = false;
    if (!strcmp(b->event, "new_message"))
        changed = on_new_message(st, b->msg_seq, mine);
    else if (!strcmp(b->event, "message_deleted"))
        changed = on_deleted(nc, st, b->msg_seq, mine);
    if (changed)
        push_unread(ch, room, room_len, st);
}

/* An unread event on this topic (a read mark): takes its cursor and count. Returns
 * whether the client should get the event as it is; false when it is older than what
 * this channel knows (then the channel's own count is pushed instead, if it changed). */
static bool on_unread_event(struct chan *ch, const struct bcast *b)
{
    struct notif_chan *nc = ch->priv;
    json_t *frame = json_loadb(obuf_payload(b->v2), obuf_payload_len(b->v2), 0, NULL);
    json_t *p = json_array_get(frame, 4);
    json_t *room = json_object_get(p, "room_id");
    json_t *u = json_object_get(p, "unread"), *ls = json_object_get(p, "last_seq"),
           *r = json_object_get(p, "last_read_seq");
    struct room_state *st =
        json_is_string(room)
            ? hmap_get(&nc->rooms, json_string_value(room), json_string_length(room))
            : NULL;
    bool pass = true;
    if (!st || !st->known || !json_is_integer(u) || !json_is_integer(ls) ||
        !json_is_integer(r))
        goto out;
    int64_t ev_u = json_integer_value(u), ev_ls = json_integer_value(ls),
            ev_r = json_integer_value(r);
    if (ev_r < st->last_read_seq || (ev_r == st->last_read_seq && ev_ls < st->last_seq)) {
        pass = false; /* a mark this channel has seen past */
        goto out;
    }
    if (ev_ls >= st->last_seq) {
        st->last_seq = ev_ls;
        st->last_read_seq = ev_r;
        st->unread = ev_u;
        st->n_recent = 0;
        st->exact_since = ev_ls;
        goto out;
    }
    /* The mark counted messages up to ev_ls; those counted here since come on top. */
    pass = false;
    st->last_read_seq = ev_r;
    if (ev_ls >= st->exact_since) {
        st->unread = ev_u + recent_drop_upto(st, ev_ls);
        st->exact_since = ev_ls;
    } else {
        int64_t most = ev_u + (st->last_seq - ev_ls);
        st->unread = st->unread < most ? st->unread : most;
        if (st->unread < ev_u + (int64_t)st->n_recent)
            st->unread = ev_u + (int64_t)st->n_recent;
    }
    push_unread(ch, json_string_value(room), json_string_length(room), st);
out:
    json_decref(frame);
    return pass;
}

/* chan_type.accept: notifications once each, in id order; read marks update the counts. */
static bool notifications_accept(struct chan *ch, const struct bcast *b)
{
    if (!strcmp(b->event, "unread") && !on_unread_event(ch, b))
        return false;
    return chan_accept_seq(ch, b);
}

/* One join read done: once both are, reply, push the unread notifications, then release
 * what was held meanwhile. */
static void part_done(struct chan *ch)
{
    struct notif_chan *nc = ch->priv;
    if (--nc->pending)
        return;
    chan_join_ok(ch, "{}");
    chan_push(ch, "unread_notifications", nc->unread_push, strlen(nc->unread_push));
    free(nc->unread_push);
    nc->unread_push = NULL;
    ch->last_seq = nc->newest_id;
    nc->releasing = true;
    chan_release_held(ch);
    nc->releasing = false;
}

/* Whether a join read may go on: the chan is still there and the read worked (else the
 * join is refused). */
static bool join_read_ok(struct chan *ch, const struct store_req *req)
{
    if (ch && req->rc)
        chan_join_error(ch, "unavailable");
    return ch && !req->rc;
}

/* Unread notifications read. */
static void notifs_read(struct chan *ch, struct store_req *req, const char *ref)
{
    if (!join_read_ok(ch, req))
        return;
    struct sbuf b = SBUF_INIT;
    sbuf_adds(&b, "{\"notifications\":[");
    for (size_t i = 0; i < req->n_notifs; i++) {
        if (i)
            sbuf_addc(&b, ',');
        store_notif_append_json(&b, &req->notifs[i]);
    }
    sbuf_adds(&b, "]}");
    struct notif_chan *nc = ch->priv;
    nc->unread_push = sbuf_steal(&b, NULL);
    nc->newest_id = req->id; /* the user's newest notification id in the snapshot */
    part_done(ch);
}

/* The second rooms read, made once every room was watched: the counts start from it. */
static void rooms_read(struct chan *ch, struct store_req *req, const char *ref)
{
    if (!join_read_ok(ch, req))
        return;
    struct notif_chan *nc = ch->priv;
    for (size_t i = 0; i < req->n_user_rooms; i++) {
        const struct store_user_room *r = &req->user_rooms[i];
        struct room_state *st = hmap_get(&nc->rooms, r->room_id, strlen(r->room_id));
        if (!st)
            continue; /* a member since the first read: not watched */
        st->last_seq = st->snap_seq = st->exact_since = r->last_seq;
        st->last_read_seq = r->last_read_seq;
        st->unread = r->unread;
        st->known = true;
    }
    part_done(ch);
}

/* Submits the unread notifications read (and, with rooms, the second rooms read). */
static void read_rest(struct chan *ch, bool rooms)
{
    struct notif_chan *nc = ch->priv;
    nc->pending = rooms ? 2 : 1;
    if (rooms) {
        struct store_req *req = store_req_create(STORE_USER_ROOMS);
        req->user_id = xstrdup(ch->conn->user_id);
        chan_store(ch, req, NULL, rooms_read);
    }
    struct store_req *req = store_req_create(STORE_NOTIFY_UNREAD);
    req->user_id = xstrdup(ch->conn->user_id);
    req->limit = UNREAD_LIMIT;
    chan_store(ch, req, NULL, notifs_read);
}

/* The user's rooms listed: watch each, then read their counts again (a message committed
 * between the first read and the watch is in the second) with the notifications. */
static void rooms_listed(struct chan *ch, struct store_req *req, const char *ref)
{
    if (!join_read_ok(ch, req))
        return;
    struct notif_chan *nc = ch->priv;
    struct sbuf topic = SBUF_INIT;
    for (size_t i = 0; i < req->n_user_rooms; i++) {
        const char *id = req->user_rooms[i].room_id;
        size_t len = strlen(id);
        if (hmap_get(&nc->rooms, id, len))
            continue;
        hmap_put(&nc->rooms, id, len, xcalloc(1, sizeof(struct room_state)));
        sbuf_reset(&topic);
        sbuf_adds(&topic, room_channel.prefix);
        sbuf_adds(&topic, id);
        chan_watch(ch, topic.data, topic.len);
    }
    sbuf_cleanup(&topic);
    read_rest(ch, req->n_user_rooms > 0);
}

/* Only the user named in the topic may join. */
static void notifications_join(struct chan *ch, json_t *params)
{
    if (strcmp(topic_user(ch), ch->conn->user_id)) {
        chan_join_error(ch, "unauthorized");
        return;
    }
    ch->priv = xcalloc(1, sizeof(struct notif_chan));
    ch->priv_free = state_free;
    struct store_req *req = store_req_create(STORE_USER_ROOMS);
    req->user_id = xstrdup(ch->conn->user_id);
    chan_store(ch, req, NULL, rooms_listed);
}

/* mark_read committed (or not found). */
static void mark_done(struct chan *ch, struct store_req *req, const char *ref)
{
    if (!ch)
        return;
    if (req->rc) {
        chan_reply_error(ch, ref, req->rc == RC_ENOTFOUND ? "not_found" : "unavailable");
        return;
    }
    struct sbuf b = SBUF_INIT;
    sbuf_printf(&b, "{\"id\":%lld}", (long long)req->id);
    chan_reply(ch, ref, "ok", b.data);
    sbuf_cleanup(&b);
}

/* mark_read {id}. */
static void notifications_handle_in(struct chan *ch, const char *event, const struct phx_in *m,
                                    const char *ref)
{
    if (m->binary || strcmp(event, "mark_read")) {
        chan_reply_error(ch, ref, "unknown_event");
        return;
    }
    json_t *id = json_is_object(m->payload) ? json_object_get(m->payload, "id") : NULL;
    if (!json_is_integer(id) || json_integer_value(id) < 1) {
        chan_reply_error(ch, ref, "not_found");
        return;
    }
    struct store_req *req = store_req_create(STORE_NOTIFY_READ);
    req->user_id = xstrdup(ch->conn->user_id);
    req->id = json_integer_value(id);
    chan_store(ch, req, ref, mark_done);
}

const struct channel_type notifications_channel = {
    .prefix = "notifications:",
    .join = notifications_join,
    .handle_in = notifications_handle_in,
    .accept = notifications_accept,
    .terminate = NULL,
    .watch = notifications_watch,
};
