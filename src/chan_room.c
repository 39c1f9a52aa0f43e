/* chan_room.c - room:<id>: membership-checked join with durable history (or the room's
 * changes since a version), and the life of a message: sent (possibly as a reply),
 * edited, deleted, reacted to, read. Every durable change is a row of the room's change
 * log first; its broadcast comes from the store through the bus, in version order, so
 * nothing here broadcasts it by hand. Typing indicators, user_left. */
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
/* At most this many missed messages (or changes, with since_version) are replayed on a
 * join; more sets "has_more" and the client asks again from where the page ended. */
#define RECOVERY_LIMIT 10000

/* What a room channel keeps besides struct chan's own fields. */
struct room_priv {
    int64_t last_read_seq; /* the read cursor as this channel last saw it */
};

/* The room id part of the topic. */
static const char *room_id(const struct chan *ch)
{
    return ch->topic + strlen(room_channel.prefix);
}

/* The channel's state (set at join). */
static struct room_priv *priv(const struct chan *ch)
{
    return ch->priv;
}

/* Member key of the event payload, or NULL. */
static json_t *arg(const struct phx_in *m, const char *key)
{
    return json_is_object(m->payload) ? json_object_get(m->payload, key) : NULL;
}

/* A copy of a JSON string's value. */
static char *str_dup(const json_t *s)
{
    return xstrndup(json_string_value(s), json_string_length(s));
}

/* v as an integer >= min, or -1 when it is not one. */
static int64_t int_at_least(const json_t *v, int64_t min)
{
    if (!json_is_integer(v) || json_integer_value(v) < min)
        return -1;
    return json_integer_value(v);
}

/* The ok reply to a join: the room, the role, where the room stands, the read state. */
static void reply_join(struct chan *ch, const struct store_req *req)
{
    struct sbuf b = SBUF_INIT;
    sbuf_printf(&b, "{\"last_read_seq\":%lld,\"last_seq\":%lld,\"role\":",
                (long long)req->member.last_read_seq, (long long)req->room.last_seq);
    sbuf_add_json_str(&b, ch->role, strlen(ch->role));
    sbuf_adds(&b, ",\"room_id\":");
    sbuf_add_json_str(&b, req->room.id, strlen(req->room.id));
    sbuf_printf(&b, ",\"unread\":%lld,\"version\":%lld}", (long long)req->member.unread,
                (long long)req->room.version);
    chan_join_ok(ch, b.data);
    sbuf_cleanup(&b);
}

/* message_history {messages, has_more?}: the last messages, or those after last_seq. */
static void push_history(struct chan *ch, const struct store_req *req)
{
    size_t n = req->n_msgs;
    struct sbuf b = SBUF_INIT;
    sbuf_addc(&b, '{');
    if (req->after_seq >= 0 && n && (size_t)req->limit == n &&
        req->msgs[n - 1].seq < req->room.last_seq)
        sbuf_adds(&b, "\"has_more\":true,");
    sbuf_adds(&b, "\"messages\":[");
    for (size_t i = 0; i < n; i++) {
        sbuf_adds(&b, i ? "," : "");
        store_msg_append_json(&b, &req->msgs[i]);
    }
    sbuf_adds(&b, "]}");
    chan_push(ch, "message_history", b.data, b.len);
    sbuf_cleanup(&b);
}

/* room_changes {changes, version, has_more}: every change after since_version, as it was
 * broadcast. */
static void push_changes(struct chan *ch, const struct store_req *req)
{
    struct sbuf b = SBUF_INIT;
    store_changes_append_json(&b, req);
    chan_push(ch, "room_changes", b.data, b.len);
    sbuf_cleanup(&b);
}

/* Join read finished: reply, history or changes, then the broadcasts held meanwhile. The
 * channel's mark is the snapshot's version: held broadcasts at or below it are in what
 * was pushed, those above it follow, each version once. */
static void join_done(struct chan *ch, struct store_req *req, const char *ref)
{
    if (!chan_join_read_ok(ch, req))
        return;
    ch->role = xstrdup(req->member.role);
    struct room_priv *rp = xcalloc(1, sizeof *rp);
    rp->last_read_seq = req->member.last_read_seq;
    ch->priv = rp;
    reply_join(ch, req);
    if (req->since_version >= 0)
        push_changes(ch, req);
    else
        push_history(ch, req);
    ch->last_seq = req->room.version;
    chan_release_held(ch);
}

/* phx_join on room:<id>; params may carry {"since_version": V} for the changes after V,
 * or {"last_seq": N} for the messages after N. */
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
    json_t *sv = json_is_object(params) ? json_object_get(params, "since_version") : NULL;
    if (int_at_least(sv, 0) >= 0) {
        req->since_version = json_integer_value(sv);
        req->after_seq = -1;
        req->limit = RECOVERY_LIMIT;
    }
    chan_store(ch, req, NULL, join_done);
}

/* Refuses a write from a viewer; true when it may go on. */
static bool may_write(struct chan *ch, const char *ref)
{
    if (strcmp(ch->role, "viewer"))
        return true;
    chan_reply_error(ch, ref, "insufficient_permissions");
    return false;
}

/* The seq argument as an integer >= min; replies invalid_seq and gives -1 otherwise. */
static int64_t seq_arg(struct chan *ch, const struct phx_in *m, const char *ref, int64_t min)
{
    int64_t seq = int_at_least(arg(m, "seq"), min);
    if (seq < 0)
        chan_reply_error(ch, ref, "invalid_seq");
    return seq;
}

/* The body argument, validated as new_message's; replies the reason and gives NULL. */
static json_t *body_arg(struct chan *ch, const struct phx_in *m, const char *ref)
{
    json_t *body = arg(m, "body");
    enum body_check c = json_is_string(body)
                            ? validate_body(json_string_value(body), json_string_length(body))
                            : BODY_INVALID;
    if (c == BODY_OK)
        return body;
    chan_reply_error(ch, ref, validate_body_reason(c));
    return NULL;
}

/* The emoji argument (validate_emoji); replies invalid_emoji and gives NULL otherwise. */
static json_t *emoji_arg(struct chan *ch, const struct phx_in *m, const char *ref)
{
    json_t *e = arg(m, "emoji");
    if (json_is_string(e) && validate_emoji(json_string_value(e), json_string_length(e)))
        return e;
    chan_reply_error(ch, ref, "invalid_emoji");
    return NULL;
}

/* A store request about a message of this room by this user. */
static struct store_req *message_req(struct chan *ch, enum store_op op, int64_t seq)
{
    struct store_req *req = store_req_create(op);
    req->room_id = xstrdup(room_id(ch));
    req->user_id = xstrdup(ch->conn->user_id);
    req->seq = seq;
    return req;
}

/* Replies the reason a write was refused with; notfound names what was not found. */
static void reply_refused(struct chan *ch, const char *ref, int rc, const char *notfound)
{
    const char *reason = "unavailable";
    switch (rc) {
    case RC_ENOTFOUND: reason = notfound; break;
    case RC_EFORBIDDEN: reason = "insufficient_permissions"; break;
    case RC_EGONE: reason = "message_deleted"; break;
    case RC_EINVAL: reason = "invalid_reply_to"; break;
    }
    chan_reply_error(ch, ref, reason);
}

/* The ok reply's payload for a committed write: new_message {message_id, seq}, edits and
 * deletes {seq, version}, reactions {seq, emoji, version} (the room's current version when
 * nothing changed), mark_read {last_read_seq, unread}. */
static void ok_json(struct sbuf *b, const struct store_req *req)
{
    switch (req->op) {
    case STORE_MESSAGE_ADD:
        sbuf_printf(b, "{\"message_id\":%lld,\"seq\":%lld}", (long long)req->msg.id,
                    (long long)req->msg.seq);
        break;
    case STORE_REACTION_PUT:
    case STORE_REACTION_DELETE:
        sbuf_adds(b, "{\"emoji\":");
        sbuf_add_json_str(b, req->name, strlen(req->name));
        sbuf_printf(b, ",\"seq\":%lld,\"version\":%lld}", (long long)req->seq,
                    (long long)(req->version ? req->version : req->room.version));
        break;
    case STORE_READ_MARK:
        sbuf_printf(b, "{\"last_read_seq\":%lld,\"unread\":%lld}",
                    (long long)req->member.last_read_seq, (long long)req->member.unread);
        break;
    default:
        sbuf_printf(b, "{\"seq\":%lld,\"version\":%lld}", (long long)req->seq,
                    (long long)req->version);
    }
}

/* Tells every device of the user (on any node) where its read state in the room stands. */
static void publish_unread(struct chan *ch, const struct store_req *req)
{
    struct sbuf topic = SBUF_INIT, b = SBUF_INIT;
    sbuf_adds(&topic, "notifications:");
    sbuf_adds(&topic, ch->conn->user_id);
    sbuf_printf(&b, "{\"last_read_seq\":%lld,\"last_seq\":%lld,\"room_id\":",
                (long long)req->member.last_read_seq, (long long)req->room.last_seq);
    sbuf_add_json_str(&b, room_id(ch), strlen(room_id(ch)));
    sbuf_printf(&b, ",\"unread\":%lld}", (long long)req->member.unread);
    bus_broadcast(chan_env(ch)->bus, topic.data, "unread", b.data, b.len, 0);
    sbuf_cleanup(&b);
    sbuf_cleanup(&topic);
}

/* A write was committed or refused: the reply. A durable change's broadcast reaches
 * subscribers through the bus, which may be before or after it; a read cursor that moved
 * past what this channel knew is told to the user's notifications topic from here. */
static void write_done(struct chan *ch, struct store_req *req, const char *ref)
{
    if (!ch)
        return;
    bool about_room = req->op == STORE_MESSAGE_ADD || req->op == STORE_READ_MARK;
    if (req->rc) {
        reply_refused(ch, ref, req->rc, about_room ? "not_found" : "message_not_found");
        return;
    }
    struct sbuf b = SBUF_INIT;
    ok_json(&b, req);
    chan_reply(ch, ref, "ok", b.data);
    sbuf_cleanup(&b);
    if (req->op == STORE_READ_MARK && req->member.last_read_seq > priv(ch)->last_read_seq) {
        priv(ch)->last_read_seq = req->member.last_read_seq;
        publish_unread(ch, req);
    }
}

/* new_message {body, reply_to?}: validate, persist, reply after commit. */
static void new_message(struct chan *ch, const struct phx_in *m, const char *ref)
{
    if (!may_write(ch, ref))
        return;
    json_t *body = body_arg(ch, m, ref);
    if (!body)
        return;
    json_t *rt = arg(m, "reply_to");
    int64_t reply_to = rt && !json_is_null(rt) ? int_at_least(rt, 1) : 0;
    if (reply_to < 0) {
        chan_reply_error(ch, ref, "invalid_reply_to");
        return;
    }
    struct store_req *req = message_req(ch, STORE_MESSAGE_ADD, 0);
    req->body = str_dup(body);
    req->reply_to = reply_to;
    chan_store(ch, req, ref, write_done);
}

/* Validates an event's string argument: it, or NULL after an error reply. */
typedef json_t *arg_check(struct chan *ch, const struct phx_in *m, const char *ref);

/* A write about one message: a viewer is refused, seq must be a positive integer, then
 * check (NULL: none) validates the string argument, which goes to the request as the
 * body (an edit) or the name (a reaction's emoji). Submits op, or replies an error. */
static void message_write(struct chan *ch, const struct phx_in *m, const char *ref,
                          enum store_op op, arg_check *check)
{
    if (!may_write(ch, ref))
        return;
    int64_t seq = seq_arg(ch, m, ref, 1);
    json_t *v = NULL;
    if (seq < 0 || (check && !(v = check(ch, m, ref))))
        return;
    struct store_req *req = message_req(ch, op, seq);
    if (v)
        *(op == STORE_MESSAGE_EDIT ? &req->body : &req->name) = str_dup(v);
    chan_store(ch, req, ref, write_done);
}

/* edit_message {seq, body}: the author replaces the body of a message that is there. */
static void edit_message(struct chan *ch, const struct phx_in *m, const char *ref)
{
    message_write(ch, m, ref, STORE_MESSAGE_EDIT, body_arg);
}

/* delete_message {seq}: the author, or an owner, erases a message (a tombstone stays). */
static void delete_message(struct chan *ch, const struct phx_in *m, const char *ref)
{
    message_write(ch, m, ref, STORE_MESSAGE_DELETE, NULL);
}

/* add_reaction {seq, emoji}: once per (message, user, emoji); again changes nothing. */
static void add_reaction(struct chan *ch, const struct phx_in *m, const char *ref)
{
    message_write(ch, m, ref, STORE_REACTION_PUT, emoji_arg);
}

/* remove_reaction {seq, emoji}: takes this user's reaction back, if there is one. */
static void remove_reaction(struct chan *ch, const struct phx_in *m, const char *ref)
{
    message_write(ch, m, ref, STORE_REACTION_DELETE, emoji_arg);
}

/* mark_read {seq}: moves the user's read cursor forward to seq (0 allowed: no move). Any
 * member may, viewers too: reading is not writing to the room. */
static void mark_read(struct chan *ch, const struct phx_in *m, const char *ref)
{
    int64_t seq = seq_arg(ch, m, ref, 0);
    if (seq >= 0)
        chan_store(ch, message_req(ch, STORE_READ_MARK, seq), ref, write_done);
}

/* typing {typing}: user_typing to everyone else on the topic; no reply. */
static void typing(struct chan *ch, const struct phx_in *m, const char *ref)
{
    json_t *t = arg(m, "typing");
    struct sbuf b = SBUF_INIT;
    sbuf_printf(&b, "{\"typing\":%s,\"user_id\":", json_is_false(t) ? "false" : "true");
    sbuf_add_json_str(&b, ch->conn->user_id, strlen(ch->conn->user_id));
    sbuf_addc(&b, '}');
    bus_broadcast(chan_env(ch)->bus, ch->topic, "user_typing", b.data, b.len, ch->conn->id);
    sbuf_cleanup(&b);
}

/* The events a client may send on a joined room. */
static const struct {
    const char *name;
    void (*fn)(struct chan *ch, const struct phx_in *m, const char *ref);
} room_events[] = {
    {"new_message", new_message},
    {"edit_message", edit_message},
    {"delete_message", delete_message},
    {"add_reaction", add_reaction},
    {"remove_reaction", remove_reaction},
    {"mark_read", mark_read},
    {"typing", typing},
};

/* Events from the client on a joined room (JSON payloads only). */
static void room_handle_in(struct chan *ch, const char *event, const struct phx_in *m,
                           const char *ref)
{
    for (size_t i = 0; !m->binary && i < sizeof room_events / sizeof room_events[0]; i++)
        if (!strcmp(event, room_events[i].name)) {
            room_events[i].fn(ch, m, ref);
            return;
        }
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
