/* bcast.c - broadcasts encoded once, and the broadcasts of committed rows. */
#include <stdlib.h>
#include <string.h>

#include "bcast.h"
#include "codec.h"
#include "obuf.h"
#include "store.h"
#include "util/log.h"
#include "util/sbuf.h"
#include "util/xmalloc.h"

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
    return b;
}

void bcast_unref(struct bcast *b)
{
    if (!b || atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
        return;
    obuf_unref(b->v1);
    obuf_unref(b->v2);
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
