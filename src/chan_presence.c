/* chan_presence.c - presence:<id>: who is here, for the members of room <id>, in
 * Phoenix.Presence's wire format (presence_state, then presence_diff on every change),
 * so phoenix.js's Presence class works unchanged. */
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "channel.h"
#include "conn.h"
#include "metrics.h"
#include "presence.h"
#include "store.h"
#include "util/clock.h"
#include "util/sbuf.h"
#include "util/utf8.h"
#include "util/xmalloc.h"
#include "validate.h"
#include "worker.h"

#define DEVICE_MAX 100

/* What this connection tracks; the meta is rebuilt from it on every update. */
struct presence_priv {
    int64_t online_at;
    char status[16];
    char *device, *username, *avatar_url; /* avatar_url may be NULL */
};

/* The room id part of the topic. */
static const char *room_of(const struct chan *ch)
{
    return ch->topic + strlen(presence_channel.prefix);
}

/* True for the statuses a client may set. */
static bool valid_status(const char *s)
{
    return !strcmp(s, "online") || !strcmp(s, "away") || !strcmp(s, "busy") ||
           !strcmp(s, "offline");
}

/* The meta object for this connection as JSON text. */
static void meta_json(const struct presence_priv *pp, struct sbuf *b)
{
    sbuf_adds(b, "{\"avatar_url\":");
    if (pp->avatar_url)
        sbuf_add_json_str(b, pp->avatar_url, strlen(pp->avatar_url));
    else
        sbuf_adds(b, "null");
    sbuf_adds(b, ",\"device\":");
    sbuf_add_json_str(b, pp->device, strlen(pp->device));
    sbuf_printf(b, ",\"online_at\":%lld,\"status\":", (long long)pp->online_at);
    sbuf_add_json_str(b, pp->status, strlen(pp->status));
    sbuf_adds(b, ",\"username\":");
    sbuf_add_json_str(b, pp->username, strlen(pp->username));
    sbuf_addc(b, '}');
}

/* Frees the tracked fields. */
static void priv_free(struct presence_priv *pp)
{
    if (!pp)
        return;
    free(pp->device);
    free(pp->username);
    free(pp->avatar_url);
}

/* In a cluster, tells the other nodes about this connection's presence change. */
static void tell_cluster(struct chan *ch, enum bus_presence_op op)
{
    const struct worker_env *env = chan_env(ch);
    bus_tell_presence(env->bus, env->presence, op, ch->topic, ch->conn->user_id, ch->conn->id);
}

/* Membership read finished: track, reply, push the state, release held diffs. */
static void join_done(struct chan *ch, struct store_req *req, const char *ref)
{
    if (!chan_join_read_ok(ch, req))
        return;
    struct presence_priv *pp = ch->priv;
    pp->username = xstrdup(req->member.name ? req->member.name : ch->conn->user_id);
    pp->avatar_url = req->member.avatar_url ? xstrdup(req->member.avatar_url) : NULL;
    struct presence *p = chan_env(ch)->presence;
    struct sbuf b = SBUF_INIT;
    meta_json(pp, &b);
    /* Subscribed since the join began, so every diff from here on reaches this client;
     * diffs computed before the state snapshot below are harmless repeats. */
    int rc = presence_track(p, ch->topic, ch->conn->user_id, ch->conn->id, b.data);
    if (rc) {
        sbuf_cleanup(&b);
        chan_join_error(ch, "unavailable");
        return;
    }
    metrics_presence_delta(1);
    tell_cluster(ch, BUS_TRACK);
    chan_join_ok(ch, "{}");
    sbuf_reset(&b);
    presence_state(p, ch->topic, &b);
    chan_push(ch, "presence_state", b.data, b.len);
    sbuf_cleanup(&b);
    chan_release_held(ch);
}

/* phx_join on presence:<id>, params {device, status} optional. */
static void presence_join(struct chan *ch, json_t *params)
{
    if (!validate_room_id(room_of(ch))) {
        chan_join_error(ch, "not_found");
        return;
    }
    struct presence_priv *pp = xcalloc(1, sizeof *pp);
    pp->online_at = clock_unix();
    snprintf(pp->status, sizeof pp->status, "online");
    json_t *st = json_is_object(params) ? json_object_get(params, "status") : NULL;
    if (json_is_string(st) && valid_status(json_string_value(st)))
        snprintf(pp->status, sizeof pp->status, "%s", json_string_value(st));
    json_t *dev = json_is_object(params) ? json_object_get(params, "device") : NULL;
    if (json_is_string(dev) && json_string_length(dev) > 0 &&
        strlen(json_string_value(dev)) == json_string_length(dev) &&
        utf8_count(json_string_value(dev), json_string_length(dev)) <= DEVICE_MAX)
        pp->device = xstrdup(json_string_value(dev));
    else
        pp->device = xstrdup("unknown");
    ch->priv = pp;
    ch->priv_free = (void (*)(void *))priv_free;
    struct store_req *req = store_req_create(STORE_JOIN_ROOM);
    req->room_id = xstrdup(room_of(ch));
    req->user_id = xstrdup(ch->conn->user_id);
    req->limit = 0;
    chan_store(ch, req, NULL, join_done);
}

/* Collects get_online_users entries. */
static void add_user(const char *key, size_t n_metas, const char *newest, void *arg)
{
    json_t *users = arg;
    json_t *meta = json_loads(newest, 0, NULL);
    json_t *status = json_object_get(meta, "status");
    json_t *username = json_object_get(meta, "username");
    json_array_append_new(users,
                          json_pack("{s:s,s:O?,s:O?,s:I}", "user_id", key, "status", status,
                                    "username", username, "connections", (json_int_t)n_metas));
    json_decref(meta);
}

/* update_status {status} and get_online_users. */
static void presence_handle_in(struct chan *ch, const char *event, const struct phx_in *m,
                               const char *ref)
{
    struct presence *p = chan_env(ch)->presence;
    struct presence_priv *pp = ch->priv;
    if (!m->binary && !strcmp(event, "update_status")) {
        json_t *st = json_is_object(m->payload) ? json_object_get(m->payload, "status") : NULL;
        if (!json_is_string(st) || !valid_status(json_string_value(st))) {
            chan_reply_error(ch, ref, "invalid_status");
            return;
        }
        snprintf(pp->status, sizeof pp->status, "%s", json_string_value(st));
        struct sbuf b = SBUF_INIT;
        sbuf_adds(&b, "{\"status\":");
        sbuf_add_json_str(&b, pp->status, strlen(pp->status));
        sbuf_addc(&b, '}');
        chan_reply(ch, ref, "ok", b.data); /* the reply goes before the diff, as in Phoenix */
        sbuf_reset(&b);
        meta_json(pp, &b);
        if (presence_update(p, ch->topic, ch->conn->id, b.data) == 0)
            tell_cluster(ch, BUS_UPDATE);
        sbuf_cleanup(&b);
        return;
    }
    if (!m->binary && !strcmp(event, "get_online_users")) {
        json_t *users = json_array();
        presence_each_key(p, ch->topic, add_user, users);
        json_t *resp = json_pack("{s:o}", "users", users);
        char *text = json_dumps(resp, JSON_COMPACT);
        chan_reply(ch, ref, "ok", text);
        free(text);
        json_decref(resp);
        return;
    }
    chan_reply_error(ch, ref, "unknown_event");
}

/* Leaving or disconnecting: the meta leaves. */
static void presence_terminate(struct chan *ch)
{
    if (presence_untrack(chan_env(ch)->presence, ch->topic, ch->conn->id) == 0) {
        metrics_presence_delta(-1);
        tell_cluster(ch, BUS_UNTRACK);
    }
}

const struct channel_type presence_channel = {
    .prefix = "presence:",
    .join = presence_join,
    .handle_in = presence_handle_in,
    .accept = NULL,
    .terminate = presence_terminate,
};
