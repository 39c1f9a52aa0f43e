/* bcast.c - broadcasts encoded once, and the broadcasts of committed rows. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bcast.h"
#include "codec.h"
#include "obuf.h"
#include "store.h"
#include "util/log.h"
#include "util/sbuf.h"
#include "util/xmalloc.h"

/* The kind-4 frame of a realtime-js broadcast: topic, the user event (el bytes), the
 * metadata object's text (NULL: none) and the payload's JSON text. NULL when a field is
 * over 255 bytes (text frames still carry it) or out of memory. */
static struct obuf *user_frame(const char *topic, size_t tl, const char *event, size_t el,
                               const char *meta, const char *payload, size_t pl)
{
    struct sbuf s = SBUF_INIT;
    struct obuf *o = NULL;
    if (!codec_encode_user_broadcast(&s, topic, tl, event, el, meta, meta ? strlen(meta) : 0,
                                     true, (const uint8_t *)payload, pl))
        o = obuf_create(WS_OP_BINARY, s.data, s.len);
    sbuf_cleanup(&s);
    return o;
}

/* {"type":"broadcast","event","payload","meta"} as realtime-js gets it in text frames:
 * the binary form's parts. */
struct user_parts {
    json_t *root;
    const char *event;
    size_t event_len;
    char *meta, *payload; /* JSON text; meta NULL: none */
};

/* Frees what user_parts_of made. */
static void user_parts_cleanup(struct user_parts *u)
{
    free(u->meta);
    free(u->payload);
    json_decref(u->root);
}

/* Splits a realtime-js broadcast payload (an object with a string event) into parts;
 * false when it is not one, or when out of memory (no part is ever left out). */
static bool user_parts_of(const char *payload, size_t len, struct user_parts *u)
{
    memset(u, 0, sizeof *u);
    u->root = json_loadb(payload, len, 0, NULL);
    json_t *ev = json_object_get(u->root, "event");
    if (!json_is_string(ev))
        goto fail;
    u->event = json_string_value(ev);
    u->event_len = json_string_length(ev);
    json_t *meta = json_object_get(u->root, "meta"), *pl = json_object_get(u->root, "payload");
    if (json_is_object(meta) && !(u->meta = json_dumps(meta, JSON_COMPACT)))
        goto fail;
    /* no payload member: "{}", as realtime-js itself sends one */
    u->payload = pl ? json_dumps(pl, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("{}");
    if (!u->payload)
        goto fail;
    return true;

fail:
    user_parts_cleanup(u);
    return false;
}

/* A broadcast to a realtime-js topic (realtime:<name>, event "broadcast") also gets its
 * kind-4 frame. */
static void add_user_frame(struct bcast *b, const char *payload, size_t payload_len)
{
    struct user_parts u;
    if (!user_parts_of(payload, payload_len, &u))
        return;
    b->rt_bin = user_frame(b->topic, b->topic_len, u.event, u.event_len, u.meta, u.payload,
                           strlen(u.payload));
    user_parts_cleanup(&u);
}

struct bcast *bcast_create(const char *topic, const char *event, const char *payload,
                           size_t payload_len, uint64_t exclude, int64_t seq)
{
    struct bcast *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    atomic_init(&b->refs, 1);
    b->topic_len = strlen(topic);
    b->topic = xstrndup(topic, b->topic_len);
    b->event = xstrdup(event);
    b->exclude = exclude;
    b->seq = seq;
    struct sbuf s = SBUF_INIT;
    codec_encode(CODEC_V2, &s, NULL, NULL, topic, b->topic_len, event, payload, payload_len);
    b->v2 = obuf_create(WS_OP_TEXT, s.data, s.len);
    sbuf_reset(&s);
    codec_encode(CODEC_V1, &s, NULL, NULL, topic, b->topic_len, event, payload, payload_len);
    b->v1 = obuf_create(WS_OP_TEXT, s.data, s.len);
    sbuf_cleanup(&s);
    if (!b->v1 || !b->v2) {
        bcast_unref(b);
        return NULL;
    }
    if (!strncmp(topic, "realtime:", 9) && !strcmp(event, "broadcast"))
        add_user_frame(b, payload, payload_len);
    return b;
}

void bcast_unref(struct bcast *b)
{
    if (!b || atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
        return;
    obuf_unref(b->v1);
    obuf_unref(b->v2);
    obuf_unref(b->rt_v1);
    obuf_unref(b->rt_v2);
    obuf_unref(b->rt_bin);
    free(b->topic);
    free(b->event);
    free(b->user_id);
    free(b);
}

void bcast_scratch_cleanup(struct bcast_scratch *s)
{
    sbuf_cleanup(&s->topic);
    sbuf_cleanup(&s->payload);
}

/* Builds a row's broadcast: topic prefix + key, the JSON the caller put in s->payload. */
static struct bcast *of_row(struct bcast_scratch *s, const char *prefix, const char *key,
                            const char *event, int64_t seq)
{
    sbuf_reset(&s->topic);
    sbuf_adds(&s->topic, prefix);
    sbuf_adds(&s->topic, key);
    return bcast_create(s->topic.data, event, s->payload.data, s->payload.len, 0, seq);
}

/* Empties s's payload buffer for the next row's JSON. */
static struct sbuf *row_payload(struct bcast_scratch *s)
{
    sbuf_reset(&s->payload);
    return &s->payload;
}

/* Appends the text payload of a room broadcast's parts: {"event","meta":{"id"
 * [,"replayed":true]},"payload","type":"broadcast"}. */
static void append_realtime_json(struct sbuf *p, const struct user_parts *u, int64_t version,
                                 bool replayed)
{
    sbuf_adds(p, "{\"event\":");
    sbuf_add_json_str(p, u->event, u->event_len);
    sbuf_printf(p, ",\"meta\":{\"id\":\"%lld\"%s},\"payload\":%s,\"type\":\"broadcast\"}",
                (long long)version, replayed ? ",\"replayed\":true" : "", u->payload);
}

bool bcast_change_realtime_json(struct sbuf *out, const struct store_change *c, bool replayed)
{
    struct user_parts u;
    if (!c->payload || !user_parts_of(c->payload, strlen(c->payload), &u))
        return false;
    append_realtime_json(out, &u, c->version, replayed);
    user_parts_cleanup(&u);
    return true;
}

/* A room's broadcast (a change with event "broadcast", payload {"event","payload",
 * "user_id","version"}) as realtime-js's realtime:<room> channels get it: text
 * {"type":"broadcast","event","payload","meta":{"id":"<version>"}} and kind 4. Nothing
 * when the row has no string event. */
static void add_realtime_frames(struct bcast *b, const struct store_change *c,
                                struct bcast_scratch *s)
{
    struct user_parts u;
    if (!user_parts_of(c->payload, strlen(c->payload), &u))
        return;
    sbuf_reset(&s->topic);
    sbuf_adds(&s->topic, "realtime:");
    sbuf_adds(&s->topic, c->room_id);
    char meta[48];
    snprintf(meta, sizeof meta, "{\"id\":\"%lld\"}", (long long)c->version);
    struct sbuf *p = row_payload(s);
    append_realtime_json(p, &u, c->version, false);
    struct sbuf f = SBUF_INIT;
    codec_encode(CODEC_V2, &f, NULL, NULL, s->topic.data, s->topic.len, "broadcast", p->data,
                 p->len);
    b->rt_v2 = obuf_create(WS_OP_TEXT, f.data, f.len);
    sbuf_reset(&f);
    codec_encode(CODEC_V1, &f, NULL, NULL, s->topic.data, s->topic.len, "broadcast", p->data,
                 p->len);
    b->rt_v1 = obuf_create(WS_OP_TEXT, f.data, f.len);
    sbuf_cleanup(&f);
    b->rt_bin = user_frame(s->topic.data, s->topic.len, u.event, u.event_len, meta, u.payload,
                           strlen(u.payload));
    if (!b->rt_v1 || !b->rt_v2) { /* out of memory: the room's frames still go out */
        obuf_unref(b->rt_v1);
        obuf_unref(b->rt_v2);
        obuf_unref(b->rt_bin);
        b->rt_v1 = b->rt_v2 = b->rt_bin = NULL;
    }
    user_parts_cleanup(&u);
}

struct bcast *bcast_of_change(const struct store_change *c, struct bcast_scratch *s)
{
    if (!store_change_payload_ok(c)) {
        log_warn("room change with a payload that is not a JSON object skipped",
                 "room=%s version=%lld", log_v(c->room_id), (long long)c->version);
        return NULL;
    }
    sbuf_reset(&s->topic);
    sbuf_adds(&s->topic, "room:");
    sbuf_adds(&s->topic, c->room_id);
    struct bcast *b = bcast_create(s->topic.data, c->event, c->payload, strlen(c->payload), 0,
                                   c->version);
    if (b) {
        b->msg_seq = c->seq;
        b->user_id = xstrdup(c->user_id);
        if (!strcmp(c->event, "broadcast"))
            add_realtime_frames(b, c, s);
    }
    return b;
}

struct bcast *bcast_of_notif(const struct store_notif *n, struct bcast_scratch *s)
{
    store_notif_append_json(row_payload(s), n);
    return of_row(s, "notifications:", n->user_id, "new_notification", n->id);
}

struct bcast *bcast_of_docop(const struct store_docop *op, struct bcast_scratch *s)
{
    store_docop_append_json(row_payload(s), op);
    return of_row(s, "document:", op->room_id, "document_updated", op->seq);
}
