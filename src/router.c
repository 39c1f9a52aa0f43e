/* router.c - what Phoenix's socket and channel server do between the wire and a
 * channel module (docs/phoenix-protocol.md §4), for any transport. */
#include <stdlib.h>
#include <string.h>

#include "channel.h"
#include "config.h"
#include "conn.h"
#include "hub.h"
#include "metrics.h"
#include "util/clock.h"
#include "obuf.h"
#include "router.h"
#include "store.h"
#include "util/log.h"
#include "util/sbuf.h"
#include "util/xmalloc.h"
#include "worker.h"

#define MAX_CHANNEL_TYPES 16
static const struct channel_type *channel_types[MAX_CHANNEL_TYPES] = {
    &room_channel,
    &notifications_channel,
    &document_channel,
    &presence_channel,
};
static size_t n_channel_types = 4;

int router_add_type(const struct channel_type *t)
{
    if (n_channel_types == MAX_CHANNEL_TYPES)
        return RC_ELIMIT;
    channel_types[n_channel_types++] = t;
    return 0;
}

/* A store request in flight for a chan. */
struct pending {
    struct conn *conn;
    uint32_t chan_id;
    char *ref;
    void (*cont)(struct chan *ch, struct store_req *req, const char *ref);
};

void conn_init(struct conn *c, const struct conn_ops *ops, struct worker *w, char *user_id,
               enum codec_vsn vsn)
{
    static atomic_ullong next_id = 1;
    c->ops = ops;
    c->worker = w;
    c->id = atomic_fetch_add(&next_id, 1);
    c->user_id = user_id;
    c->vsn = vsn;
    c->refs = 1;
}

void conn_unref(struct conn *c)
{
    if (--c->refs > 0)
        return;
    char *user = c->user_id;
    hub_release_user(c->worker->hub, user);
    c->ops->destroy(c);
    free(user);
}

const struct channel_type *router_match(const char *topic, size_t len)
{
    for (size_t i = 0; i < n_channel_types; i++) {
        size_t pl = strlen(channel_types[i]->prefix);
        if (len > pl && !memcmp(topic, channel_types[i]->prefix, pl))
            return channel_types[i];
    }
    return NULL;
}

void router_send(struct conn *c, const char *jr, const char *ref, const char *topic,
                 size_t topic_len, const char *event, const char *payload, size_t payload_len)
{
    if (c->closed)
        return;
    struct sbuf b = SBUF_INIT;
    codec_encode(c->vsn, &b, jr, ref, topic, topic_len, event, payload, payload_len);
    struct obuf *o = obuf_create(WS_OP_TEXT, b.data, b.len);
    sbuf_cleanup(&b);
    if (!o) {
        c->ops->close(c, 1011, "out of memory");
        return;
    }
    conn_send(c, o);
    obuf_unref(o);
}

/* Sends a phx_reply. */
static void send_reply(struct conn *c, const char *jr, const char *ref, const char *topic,
                       size_t topic_len, const char *status, const char *response)
{
    if (c->closed)
        return;
    struct sbuf b = SBUF_INIT;
    codec_encode_reply(c->vsn, &b, jr, ref, topic, topic_len, status, response);
    struct obuf *o = obuf_create(WS_OP_TEXT, b.data, b.len);
    sbuf_cleanup(&b);
    if (!o) {
        c->ops->close(c, 1011, "out of memory");
        return;
    }
    conn_send(c, o);
    obuf_unref(o);
}

/* Builds {"reason":"…"}. */
static void reason_json(struct sbuf *b, const char *reason)
{
    sbuf_adds(b, "{\"reason\":");
    sbuf_add_json_str(b, reason, strlen(reason));
    sbuf_addc(b, '}');
}

/* The join_ref a channel's pushes and replies carry: the join's own, or, for a join
 * sent with a null join_ref, the join's ref (Phoenix does the same). */
static const char *chan_jr(const struct chan *ch)
{
    return ch->jr ? ch->jr : ch->join_ref;
}

void chan_reply(struct chan *ch, const char *ref, const char *status, const char *response)
{
    send_reply(ch->conn, chan_jr(ch), ref, ch->topic, ch->topic_len, status,
               response ? response : "{}");
}

void chan_reply_error(struct chan *ch, const char *ref, const char *reason)
{
    struct sbuf b = SBUF_INIT;
    reason_json(&b, reason);
    chan_reply(ch, ref, "error", b.data);
    sbuf_cleanup(&b);
}

void chan_push(struct chan *ch, const char *event, const char *payload, size_t payload_len)
{
    router_send(ch->conn, chan_jr(ch), NULL, ch->topic, ch->topic_len, event, payload,
                payload_len);
}

/* Finds the chan of conn c on topic. */
static struct chan *find_chan(struct conn *c, const char *topic, size_t len)
{
    for (struct chan *ch = c->chans; ch; ch = ch->next)
        if (ch->topic_len == len && !memcmp(ch->topic, topic, len))
            return ch;
    return NULL;
}

/* Drops held broadcasts. */
static void drop_held(struct chan *ch)
{
    while (ch->held) {
        struct held_bcast *h = ch->held;
        ch->held = h->next;
        bcast_unref(h->b);
        free(h);
    }
    ch->held_tail = NULL;
}

/* Unlinks ch from its conn and frees it. */
static void chan_free(struct chan *ch)
{
    struct conn *c = ch->conn;
    for (struct chan **pp = &c->chans; *pp; pp = &(*pp)->next)
        if (*pp == ch) {
            *pp = ch->next;
            break;
        }
    c->n_chans--;
    worker_unsubscribe(c->worker, ch);
    drop_held(ch);
    free(ch->topic);
    free(ch->jr);
    free(ch->join_ref);
    free(ch->role);
    if (ch->priv_free)
        ch->priv_free(ch->priv);
    free(ch->priv);
    free(ch);
}

/* One fewer join pending on the conn: input may flow again. */
static void join_finished(struct conn *c)
{
    if (c->joins_pending && --c->joins_pending == 0 && !c->closed)
        c->ops->resume(c);
}

/* Ends a joined channel: unsubscribes first, so that what terminate broadcasts (e.g.
 * user_left) reaches only the others. */
static void chan_end(struct chan *ch)
{
    worker_unsubscribe(ch->conn->worker, ch);
    if (ch->state == CHAN_JOINED && ch->type->terminate)
        ch->type->terminate(ch);
    if (ch->state == CHAN_JOINING)
        join_finished(ch->conn);
    chan_free(ch);
}

void chan_join_ok(struct chan *ch, const char *response)
{
    send_reply(ch->conn, ch->jr, ch->join_ref, ch->topic, ch->topic_len, "ok", response);
    ch->state = CHAN_JOINED;
    metrics_join(metrics_channel_of(ch->topic), 1);
    log_info("join", "conn=%llu user=%s topic=%s", (unsigned long long)ch->conn->id,
             log_v(ch->conn->user_id), log_v(ch->topic));
    join_finished(ch->conn);
}

void chan_join_error(struct chan *ch, const char *reason)
{
    struct sbuf b = SBUF_INIT;
    reason_json(&b, reason);
    send_reply(ch->conn, ch->jr, ch->join_ref, ch->topic, ch->topic_len, "error", b.data);
    sbuf_cleanup(&b);
    metrics_join(metrics_channel_of(ch->topic), 0);
    log_info("join refused", "conn=%llu user=%s topic=%s reason=%s",
             (unsigned long long)ch->conn->id, log_v(ch->conn->user_id), log_v(ch->topic), reason);
    struct conn *c = ch->conn;
    chan_free(ch);
    join_finished(c);
}

void chan_history_bounds(json_t *params, struct store_req *req, int history, int recovery)
{
    json_t *ls = json_is_object(params) ? json_object_get(params, "last_seq") : NULL;
    req->limit = history;
    if (json_is_integer(ls) && json_integer_value(ls) >= 0) {
        req->after_seq = json_integer_value(ls);
        req->limit = recovery;
    }
}

void chan_push_history(struct chan *ch, const struct store_req *req, const char *event,
                       const char *field, const void *items, size_t n, size_t size,
                       void (*append)(struct sbuf *out, const void *item),
                       int64_t (*item_seq)(const void *item), int64_t last_seq)
{
    const char *p = items;
    struct sbuf b = SBUF_INIT;
    sbuf_addc(&b, '{');
    if (req->after_seq >= 0 && (size_t)req->limit == n && n &&
        item_seq(p + (n - 1) * size) < last_seq)
        sbuf_adds(&b, "\"has_more\":true,");
    sbuf_add_json_str(&b, field, strlen(field));
    sbuf_adds(&b, ":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            sbuf_addc(&b, ',');
        append(&b, p + i * size);
    }
    sbuf_adds(&b, "]}");
    chan_push(ch, event, b.data, b.len);
    sbuf_cleanup(&b);
    ch->last_seq = last_seq;
    chan_release_held(ch);
}

void chan_join_failed(struct chan *ch, int rc)
{
    chan_join_error(ch, rc == RC_ENOTFOUND    ? "not_found"
                        : rc == RC_EFORBIDDEN ? "unauthorized"
                                              : "unavailable");
}

bool chan_accept_seq(struct chan *ch, const struct bcast *b)
{
    if (b->seq <= 0)
        return true;
    if (b->seq <= ch->last_seq)
        return false;
    ch->last_seq = b->seq;
    return true;
}

/* Sends a broadcast to a joined chan if its type accepts it. */
static void send_bcast(struct chan *ch, struct bcast *b)
{
    if (ch->type->accept && !ch->type->accept(ch, b))
        return;
    conn_send(ch->conn, ch->conn->vsn == CODEC_V1 ? b->v1 : b->v2);
}

void chan_release_held(struct chan *ch)
{
    while (ch->held) {
        struct held_bcast *h = ch->held;
        ch->held = h->next;
        if (!ch->conn->closed)
            send_bcast(ch, h->b);
        bcast_unref(h->b);
        free(h);
    }
    ch->held_tail = NULL;
}

void router_deliver(struct chan *ch, struct bcast *b)
{
    if (ch->state == CHAN_JOINING || ch->held) {
        struct held_bcast *h = xmalloc(sizeof *h);
        atomic_fetch_add(&b->refs, 1);
        h->b = b;
        h->next = NULL;
        if (ch->held_tail)
            ch->held_tail->next = h;
        else
            ch->held = h;
        ch->held_tail = h;
        return;
    }
    send_bcast(ch, b);
}

/* phx_join: duplicate handling, routing, the channel limit, then the type's join. */
static void handle_join(struct conn *c, const struct phx_in *m, const char *jr,
                        const char *ref)
{
    const char *topic = m->topic_str;
    size_t tl = m->topic_len;
    struct chan *old = find_chan(c, topic, tl);
    if (old) {
        /* Duplicate join: the old instance ends first (phoenix.js accepts either
         * order, and it keeps the new instance's pushes after its reply). */
        router_send(c, old->jr, old->jr, old->topic, old->topic_len, "phx_close", "{}", 2);
        chan_end(old);
    }
    const struct channel_type *type = router_match(topic, tl);
    if (!type) {
        send_reply(c, NULL, ref, topic, tl, "error", "{\"reason\":\"unmatched topic\"}");
        return;
    }
    if (c->n_chans >= (unsigned)c->worker->cfg->max_channels) {
        send_reply(c, jr, ref, topic, tl, "error", "{\"reason\":\"too many channels joined\"}");
        return;
    }
    struct chan *ch = xcalloc(1, sizeof *ch);
    ch->conn = c;
    ch->type = type;
    ch->topic = xstrndup(topic, tl);
    ch->topic_len = tl;
    ch->jr = jr ? xstrdup(jr) : NULL;
    ch->join_ref = ref ? xstrdup(ref) : NULL;
    ch->id = c->worker->next_chan_id++;
    ch->state = CHAN_JOINING;
    ch->next = c->chans;
    c->chans = ch;
    c->n_chans++;
    c->joins_pending++;
    worker_subscribe(c->worker, ch);
    type->join(ch, m->payload);
}

/* phx_leave: ok reply, then phx_close, for the current instance (or null jr). */
static void handle_leave(struct conn *c, const struct phx_in *m, const char *jr,
                         const char *ref)
{
    struct chan *ch = find_chan(c, m->topic_str, m->topic_len);
    if (!ch) {
        send_reply(c, jr, ref, m->topic_str, m->topic_len, "ok", "{}");
        return;
    }
    if (jr && chan_jr(ch) && strcmp(jr, chan_jr(ch)))
        return; /* stale instance: Phoenix 1.8 ignores it */
    send_reply(c, chan_jr(ch), ref, ch->topic, ch->topic_len, "ok", "{}");
    router_send(c, ch->jr, ch->jr, ch->topic, ch->topic_len, "phx_close", "{}", 2);
    log_info("leave", "conn=%llu user=%s topic=%s", (unsigned long long)c->id, log_v(c->user_id),
             log_v(ch->topic));
    chan_end(ch);
}

void router_handle(struct conn *c, const struct phx_in *m)
{
    if (c->closed)
        return;
    if (!m->topic_str) {
        /* Phoenix echoes a non-string topic in an "unmatched topic" reply. */
        char *topic = codec_ref_text(m->topic);
        char *ref = codec_ref_text(m->ref);
        struct sbuf b = SBUF_INIT;
        const char *tt = topic ? topic : "null";
        /* Encode by hand: the topic is JSON text here, not a string. */
        if (c->vsn == CODEC_V2)
            sbuf_printf(&b, "[null,%s,%s,\"phx_reply\",{\"response\":{\"reason\":\"unmatched "
                            "topic\"},\"status\":\"error\"}]",
                        ref ? ref : "null", tt);
        else
            sbuf_printf(&b, "{\"event\":\"phx_reply\",\"payload\":{\"response\":{\"reason\":"
                            "\"unmatched topic\"},\"status\":\"error\"},\"ref\":%s,\"topic\":%s}",
                        ref ? ref : "null", tt);
        struct obuf *o = obuf_create(WS_OP_TEXT, b.data, b.len);
        if (o) {
            conn_send(c, o);
            obuf_unref(o);
        }
        sbuf_cleanup(&b);
        free(topic);
        free(ref);
        return;
    }
    char *jr = codec_ref_text(m->join_ref);
    char *ref = codec_ref_text(m->ref);
    const char *ev = m->event;
    if (m->topic_len == 7 && !memcmp(m->topic_str, "phoenix", 7)) {
        if (!strcmp(ev, "heartbeat"))
            send_reply(c, NULL, ref, "phoenix", 7, "ok", "{}");
        else
            send_reply(c, NULL, ref, "phoenix", 7, "error",
                       "{\"reason\":\"unmatched topic\"}");
        goto out;
    }
    if (!strcmp(ev, "phx_join")) {
        handle_join(c, m, jr, ref);
        goto out;
    }
    if (!strcmp(ev, "phx_leave")) {
        handle_leave(c, m, jr, ref);
        goto out;
    }
    struct chan *ch = find_chan(c, m->topic_str, m->topic_len);
    if (!ch || ch->state != CHAN_JOINED) {
        send_reply(c, NULL, ref, m->topic_str, m->topic_len, "error",
                   "{\"reason\":\"unmatched topic\"}");
        goto out;
    }
    if (jr && chan_jr(ch) && strcmp(jr, chan_jr(ch)))
        goto out; /* stale join_ref: dropped without a reply (Phoenix 1.8.3+) */
    int retry = 1;
    if (!hub_rate_take(c->worker->hub, c->user_id, ch->topic, c->worker->now_ms, &retry)) {
        struct sbuf b = SBUF_INIT;
        sbuf_printf(&b, "{\"reason\":\"rate_limited\",\"retry_after\":%d}", retry);
        chan_reply(ch, ref, "error", b.data);
        sbuf_cleanup(&b);
        metrics_rate_limited();
        goto out;
    }
    int64_t t0 = clock_mono_us();
    ch->type->handle_in(ch, ev, m, ref);
    metrics_event(metrics_channel_of(ch->topic), metrics_event_of(ev), clock_mono_us() - t0);
out:
    free(jr);
    free(ref);
}

void router_conn_closed(struct conn *c)
{
    while (c->chans)
        chan_end(c->chans);
    c->joins_pending = 0;
}

/* Store completion on a store thread: hand the request to the conn's worker. */
static void post_done(struct store_req *req)
{
    struct pending *p = req->arg;
    struct inbox_item *it = xcalloc(1, sizeof *it);
    it->kind = IN_STORE;
    it->u.req = req;
    worker_post(p->conn->worker, it, it);
}

void chan_store(struct chan *ch, struct store_req *req, const char *ref,
                void (*cont)(struct chan *ch, struct store_req *req, const char *ref))
{
    struct pending *p = xcalloc(1, sizeof *p);
    p->conn = ch->conn;
    p->chan_id = ch->id;
    p->ref = ref ? xstrdup(ref) : NULL;
    p->cont = cont;
    ch->conn->refs++;
    req->arg = p;
    req->done = post_done;
    store_submit(ch->conn->worker->store, req);
}

void router_store_done(struct store_req *req)
{
    struct pending *p = req->arg;
    struct conn *c = p->conn;
    struct chan *ch = NULL;
    if (!c->closed)
        for (ch = c->chans; ch && ch->id != p->chan_id; ch = ch->next)
            ;
    p->cont(ch, req, p->ref);
    store_req_destroy(req);
    free(p->ref);
    free(p);
    conn_unref(c);
}
