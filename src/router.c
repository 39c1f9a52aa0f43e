/* router.c - what Phoenix's socket and channel server do between the wire and a
 * channel type (docs/phoenix-protocol.md §4), for any transport. */
#include <stdlib.h>
#include <string.h>

#include "channel.h"
#include "config.h"
#include "conn.h"
#include "metrics.h"
#include "ratelimit.h"
#include "router.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/sbuf.h"
#include "worker.h"

#define MAX_CHANNEL_TYPES 16
static const struct channel_type *channel_types[MAX_CHANNEL_TYPES] = {
    &room_channel,
    &notifications_channel,
    &document_channel,
    &presence_channel,
    &realtime_channel,
};
static size_t n_channel_types = 5;

static const char unmatched[] = "{\"reason\":\"unmatched topic\"}";

int router_add_type(const struct channel_type *t)
{
    if (n_channel_types == MAX_CHANNEL_TYPES)
        return RC_ELIMIT;
    channel_types[n_channel_types++] = t;
    return 0;
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

/* phx_join: duplicate handling, routing, the channel limit, then the type's join. */
static void handle_join(struct conn *c, const struct phx_in *m, const char *jr,
                        const char *ref)
{
    const char *topic = m->topic_str;
    size_t tl = m->topic_len;
    struct chan *old = chan_find(c, topic, tl);
    if (old) {
        /* Duplicate join: the old instance ends first (phoenix.js accepts either
         * order, and it keeps the new instance's pushes after its reply). */
        conn_push(c, old->jr, old->jr, old->topic, old->topic_len, "phx_close", "{}", 2);
        chan_end(old);
    }
    const struct channel_type *type = router_match(topic, tl);
    if (!type) {
        conn_reply(c, NULL, ref, topic, tl, "error", unmatched);
        return;
    }
    if (c->n_chans >= (unsigned)c->worker->env->cfg->max_channels) {
        conn_reply(c, jr, ref, topic, tl, "error", "{\"reason\":\"too many channels joined\"}");
        return;
    }
    struct chan *ch = chan_create(c, type, topic, tl, jr, ref);
    type->join(ch, m->payload);
}

/* phx_leave: ok reply, then phx_close, for the current instance (or null jr). */
static void handle_leave(struct conn *c, const struct phx_in *m, const char *jr,
                         const char *ref)
{
    struct chan *ch = chan_find(c, m->topic_str, m->topic_len);
    if (!ch) {
        conn_reply(c, jr, ref, m->topic_str, m->topic_len, "ok", "{}");
        return;
    }
    if (jr && chan_jr(ch) && strcmp(jr, chan_jr(ch)))
        return; /* stale instance: Phoenix 1.8 ignores it */
    conn_reply(c, chan_jr(ch), ref, ch->topic, ch->topic_len, "ok", "{}");
    conn_push(c, ch->jr, ch->jr, ch->topic, ch->topic_len, "phx_close", "{}", 2);
    log_info("leave", "conn=%llu user=%s topic=%s", (unsigned long long)c->id, log_v(c->user_id),
             log_v(ch->topic));
    chan_end(ch);
}

/* A message whose topic is not a string: Phoenix echoes it in an "unmatched topic"
 * reply, encoded by hand because the topic is JSON text here. */
static void reply_bad_topic(struct conn *c, const struct phx_in *m)
{
    char *topic = codec_ref_text(m->topic);
    char *ref = codec_ref_text(m->ref);
    const char *tt = topic ? topic : "null";
    struct sbuf b = SBUF_INIT;
    if (c->vsn == CODEC_V2)
        sbuf_printf(&b, "[null,%s,%s,\"phx_reply\",{\"response\":%s,\"status\":\"error\"}]",
                    ref ? ref : "null", tt, unmatched);
    else
        sbuf_printf(&b, "{\"event\":\"phx_reply\",\"payload\":{\"response\":%s,\"status\":"
                        "\"error\"},\"ref\":%s,\"topic\":%s}",
                    unmatched, ref ? ref : "null", tt);
    conn_send_text(c, b.data, b.len);
    sbuf_cleanup(&b);
    free(topic);
    free(ref);
}

/* Takes a rate-limit token for a channel event; false after replying rate_limited. */
static bool rate_take(struct chan *ch, const char *ref)
{
    struct conn *c = ch->conn;
    struct ratelimit *rl = c->worker->env->rl; /* NULL: no limit */
    int retry = 1;
    if (!rl || ratelimit_take(rl, c->user_id, ch->topic, c->worker->now_ms, &retry))
        return true;
    struct sbuf b = SBUF_INIT;
    sbuf_printf(&b, "{\"reason\":\"rate_limited\",\"retry_after\":%d}", retry);
    chan_reply(ch, ref, "error", b.data);
    sbuf_cleanup(&b);
    metrics_rate_limited();
    return false;
}

/* access_token {access_token} on any joined channel: a fresh token for the same user
 * moves the session's expiry to the new token's; an invalid one (bad, expired, another
 * user's) is refused, and a realtime-js channel gets a system error and is closed, as
 * realtime-js expects. */
static void handle_access_token(struct chan *ch, const struct phx_in *m, const char *ref)
{
    struct conn *c = ch->conn;
    json_t *t = json_is_object(m->payload) ? json_object_get(m->payload, "access_token") : NULL;
    if (chan_token_refresh(ch, t)) {
        chan_reply(ch, ref, "ok", "{}");
        return;
    }
    log_info("access token refused", "conn=%llu user=%s topic=%s", (unsigned long long)c->id,
             log_v(c->user_id), log_v(ch->topic));
    chan_reply_error(ch, ref, "invalid_token");
    if (!ch->type->realtime_frames)
        return;
    chan_push_system(ch, "error", "Invalid access token: the channel is closed");
    conn_push(c, ch->jr, ch->jr, ch->topic, ch->topic_len, "phx_close", "{}", 2);
    chan_end(ch);
}

void router_check_token(struct conn *c, int64_t now_unix)
{
    if (c->closed || !c->token_exp || now_unix < c->token_exp)
        return;
    log_info("token expired", "conn=%llu user=%s exp=%lld", (unsigned long long)c->id,
             log_v(c->user_id), (long long)c->token_exp);
    for (struct chan *ch = c->chans; ch; ch = ch->next)
        if (ch->type->realtime_frames && ch->state == CHAN_JOINED)
            chan_push_system(ch, "error", "Token has expired");
    c->ops->close(c, ROUTER_CLOSE_TOKEN_EXPIRED, "token_expired");
}

void router_handle(struct conn *c, const struct phx_in *m)
{
    if (c->closed)
        return;
    if (!m->topic_str) {
        reply_bad_topic(c, m);
        return;
    }
    char *jr = codec_ref_text(m->join_ref);
    char *ref = codec_ref_text(m->ref);
    const char *ev = m->event;
    if (m->topic_len == 7 && !memcmp(m->topic_str, "phoenix", 7)) {
        if (!strcmp(ev, "heartbeat"))
            conn_reply(c, NULL, ref, "phoenix", 7, "ok", "{}");
        else
            conn_reply(c, NULL, ref, "phoenix", 7, "error", unmatched);
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
    struct chan *ch = chan_find(c, m->topic_str, m->topic_len);
    if (!ch || ch->state != CHAN_JOINED) {
        conn_reply(c, NULL, ref, m->topic_str, m->topic_len, "error", unmatched);
        goto out;
    }
    if (jr && chan_jr(ch) && strcmp(jr, chan_jr(ch)))
        goto out; /* stale join_ref: dropped without a reply (Phoenix 1.8.3+) */
    if (!rate_take(ch, ref))
        goto out;
    int64_t t0 = clock_mono_us();
    enum metric_channel mc = metrics_channel_of(ch->topic);
    if (!strcmp(ev, "access_token"))
        handle_access_token(ch, m, ref); /* may end ch */
    else
        ch->type->handle_in(ch, ev, m, ref);
    metrics_event(mc, metrics_event_of(ev), clock_mono_us() - t0);
out:
    free(jr);
    free(ref);
}

void router_conn_closed(struct conn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    while (c->chans)
        chan_end(c->chans);
    c->joins_pending = 0;
}
