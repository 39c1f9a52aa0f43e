/* chan_room.c - room:<id>: membership-checked join with durable history, persisted
 * messages broadcast in seq order, typing indicators, user_left. */
#include <stdlib.h>
#include <string.h>

#include "channel.h"
#include "conn.h"
#include "bus.h"
#include "store.h"
#include "util/sbuf.h"
#include "util/xmalloc.h"
#include "validate.h"
#include "worker.h"

/* Messages pushed as history on a plain join. */
#define HISTORY_LIMIT 50
/* At most this many missed messages are replayed on a join with last_seq; more sets
 * "has_more" and the client pages the rest over REST. */
#define RECOVERY_LIMIT 10000

/* The room id part of the topic. */
static const char *room_id(const struct chan *ch)
{
    return ch->topic + strlen(room_channel.prefix);
}

/* History item adapters for chan_push_history. */
static void append_msg(struct sbuf *out, const void *item)
{
    store_msg_append_json(out, item);
}
static int64_t msg_seq(const void *item)
{
    return ((const struct store_msg *)item)->seq;
}

/* Join read finished: reply, history, then the broadcasts held meanwhile. */
static void join_done(struct chan *ch, struct store_req *req, const char *ref)
{
    if (!ch)
        return;
    if (req->rc) {
        chan_join_failed(ch, req->rc);
        return;
    }
    ch->role = xstrdup(req->member.role);
    struct sbuf b = SBUF_INIT;
    sbuf_adds(&b, "{\"last_seq\":");
    sbuf_printf(&b, "%lld,\"role\":", (long long)req->room.last_seq);
    sbuf_add_json_str(&b, ch->role, strlen(ch->role));
    sbuf_adds(&b, ",\"room_id\":");
    sbuf_add_json_str(&b, req->room.id, strlen(req->room.id));
    sbuf_addc(&b, '}');
    chan_join_ok(ch, b.data);
    sbuf_cleanup(&b);
    chan_push_history(ch, req, "message_history", "messages", req->msgs, req->n_msgs,
                      sizeof *req->msgs, append_msg, msg_seq, req->room.last_seq);
}

/* phx_join on room:<id>; params may carry {"last_seq": N} to recover what was missed. */
static void room_join(struct chan *ch, json_t *params)
{
    if (!validate_room_id(room_id(ch))) {
        chan_join_error(ch, "not_found");
        return;
    }
    struct store_req *req = store_req_create(STORE_JOIN_ROOM);
    req->room_id = xstrdup(room_id(ch));
    req->user_id = xstrdup(ch->conn->user_id);
    chan_history_bounds(params, req, HISTORY_LIMIT, RECOVERY_LIMIT);
    chan_store(ch, req, NULL, join_done);
}

/* The message was committed or refused. Its broadcast reaches subscribers through the
 * bus, which may be before or after this reply. */
static void message_done(struct chan *ch, struct store_req *req, const char *ref)
{
    if (!ch)
        return;
    if (req->rc) {
        chan_reply_error(ch, ref, req->rc == RC_ENOTFOUND ? "not_found" : "unavailable");
        return;
    }
    struct sbuf b = SBUF_INIT;
    sbuf_printf(&b, "{\"message_id\":%lld,\"seq\":%lld}", (long long)req->msg.id,
                (long long)req->msg.seq);
    chan_reply(ch, ref, "ok", b.data);
    sbuf_cleanup(&b);
}

/* new_message {body}: validate, persist, reply after commit. */
static void new_message(struct chan *ch, const struct phx_in *m, const char *ref)
{
    if (!strcmp(ch->role, "viewer")) {
        chan_reply_error(ch, ref, "insufficient_permissions");
        return;
    }
    json_t *body = json_is_object(m->payload) ? json_object_get(m->payload, "body") : NULL;
    enum body_check c = json_is_string(body)
                            ? validate_body(json_string_value(body), json_string_length(body))
                            : BODY_INVALID;
    if (c != BODY_OK) {
        chan_reply_error(ch, ref, validate_body_reason(c));
        return;
    }
    struct store_req *req = store_req_create(STORE_MESSAGE_ADD);
    req->room_id = xstrdup(room_id(ch));
    req->user_id = xstrdup(ch->conn->user_id);
    req->body = xstrndup(json_string_value(body), json_string_length(body));
    chan_store(ch, req, ref, message_done);
}

/* typing {typing}: user_typing to everyone else on the topic; no reply. */
static void typing(struct chan *ch, const struct phx_in *m)
{
    json_t *t = json_is_object(m->payload) ? json_object_get(m->payload, "typing") : NULL;
    struct sbuf b = SBUF_INIT;
    sbuf_printf(&b, "{\"typing\":%s,\"user_id\":", json_is_false(t) ? "false" : "true");
    sbuf_add_json_str(&b, ch->conn->user_id, strlen(ch->conn->user_id));
    sbuf_addc(&b, '}');
    bus_broadcast(chan_env(ch)->bus, ch->topic, "user_typing", b.data, b.len, ch->conn->id);
    sbuf_cleanup(&b);
}

/* Events from the client on a joined room. */
static void room_handle_in(struct chan *ch, const char *event, const struct phx_in *m,
                           const char *ref)
{
    if (!m->binary && !strcmp(event, "new_message"))
        new_message(ch, m, ref);
    else if (!m->binary && !strcmp(event, "typing"))
        typing(ch, m);
    else
        chan_reply_error(ch, ref, "unknown_event");
}


/* Leaving (or disconnecting): tell the others. */
static void room_terminate(struct chan *ch)
{
    struct sbuf b = SBUF_INIT;
    sbuf_adds(&b, "{\"user_id\":");
    sbuf_add_json_str(&b, ch->conn->user_id, strlen(ch->conn->user_id));
    sbuf_addc(&b, '}');
    bus_broadcast(chan_env(ch)->bus, ch->topic, "user_left", b.data, b.len, 0);
    sbuf_cleanup(&b);
}

const struct channel_type room_channel = {
    .prefix = "room:",
    .join = room_join,
    .handle_in = room_handle_in,
    .accept = chan_accept_seq,
    .terminate = room_terminate,
};
