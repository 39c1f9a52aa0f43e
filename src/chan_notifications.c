/* chan_notifications.c - notifications:<user>: a user's own notification feed. After
 * the join the unread ones are pushed; new ones arrive as new_notification. */
#include <stdlib.h>
#include <string.h>

#include "channel.h"
#include "conn.h"
#include "store.h"
#include "util/sbuf.h"
#include "util/xmalloc.h"

/* Unread notifications pushed after a join. */
#define UNREAD_LIMIT 1000

/* The user part of the topic. */
static const char *topic_user(const struct chan *ch)
{
    return ch->topic + strlen(notifications_channel.prefix);
}

/* Unread read finished: reply, push them, then release held broadcasts. */
static void join_done(struct chan *ch, struct store_req *req, const char *ref)
{
    if (!ch)
        return;
    if (req->rc) {
        chan_join_error(ch, "unavailable");
        return;
    }
    chan_join_ok(ch, "{}");
    struct sbuf b = SBUF_INIT;
    sbuf_adds(&b, "{\"notifications\":[");
    for (size_t i = 0; i < req->n_notifs; i++) {
        if (i)
            sbuf_addc(&b, ',');
        store_notif_append_json(&b, &req->notifs[i]);
    }
    sbuf_adds(&b, "]}");
    chan_push(ch, "unread_notifications", b.data, b.len);
    sbuf_cleanup(&b);
    ch->last_seq = req->id; /* the user's newest notification id in the snapshot */
    chan_release_held(ch);
}

/* Only the user named in the topic may join. */
static void notifications_join(struct chan *ch, json_t *params)
{
    if (strcmp(topic_user(ch), ch->conn->user_id)) {
        chan_join_error(ch, "unauthorized");
        return;
    }
    struct store_req *req = store_req_create(STORE_NOTIFY_UNREAD);
    req->user_id = xstrdup(ch->conn->user_id);
    req->limit = UNREAD_LIMIT;
    chan_store(ch, req, NULL, join_done);
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
    .accept = chan_accept_seq,
    .terminate = NULL,
};
