/* bus.c - what both bus backends share: publishing to this node's sink. */
#include <stdlib.h>

#include "bcast.h"
#include "bus.h"
#include "metrics.h"
#include "presence.h"
#include "store.h"
#include "util/log.h"
#include "util/sbuf.h"
#include "util/xmalloc.h"

const char *bus_state_name(enum bus_state s)
{
    return s == BUS_LOCAL ? "none" : s == BUS_UP ? "ok" : "down";
}

void bus_stop(struct bus *b)
{
    if (b)
        b->ops->stop(b);
}

void bus_sink_publish_event(const struct bus_sink *sink, const char *topic, const char *event,
                            const char *payload, size_t payload_len, uint64_t exclude)
{
    struct bcast *bc = bcast_create(topic, event, payload, payload_len, exclude, 0);
    if (!bc)
        return;
    metrics_broadcast();
    sink->publish(sink->arg, &bc, 1);
}

void bus_publish_local(struct bus *b, const char *topic, const char *event,
                       const char *payload, size_t payload_len, uint64_t exclude)
{
    bus_sink_publish_event(&b->sink, topic, event, payload, payload_len, exclude);
}

/* The broadcasts of one batch of committed rows, built in one scratch. */
struct batch {
    struct bcast **list;
    size_t n;
    struct bcast_scratch scratch;
};

/* A batch with room for n rows. */
static struct batch batch_start(size_t n)
{
    return (struct batch){.list = xmalloc(n * sizeof(struct bcast *)),
                          .scratch = BCAST_SCRATCH_INIT};
}

/* Adds a row's broadcast; NULL (out of memory) is logged and the row skipped. */
static void batch_add(struct batch *bt, struct bcast *bc)
{
    if (!bc) {
        log_error("out of memory building a broadcast", NULL);
        return;
    }
    metrics_broadcast();
    bt->list[bt->n++] = bc;
}

/* Publishes the batch's broadcasts to b's node at once (if any) and frees the batch. */
static void batch_publish(struct bus *b, struct batch *bt)
{
    bcast_scratch_cleanup(&bt->scratch);
    if (bt->n)
        b->sink.publish(b->sink.arg, bt->list, bt->n);
    free(bt->list);
}

void bus_publish_changes(struct bus *b, const struct store_change *cs, size_t n)
{
    struct batch bt = batch_start(n);
    for (size_t i = 0; i < n; i++) {
        struct bcast *bc = bcast_of_change(&cs[i], &bt.scratch);
        if (bc) /* NULL: a bad stored payload, logged by bcast_of_change */
            batch_add(&bt, bc);
    }
    batch_publish(b, &bt);
}

void bus_publish_notifs(struct bus *b, const struct store_notif *ns, size_t n)
{
    struct batch bt = batch_start(n);
    for (size_t i = 0; i < n; i++)
        batch_add(&bt, bcast_of_notif(&ns[i], &bt.scratch));
    batch_publish(b, &bt);
}

void bus_publish_docops(struct bus *b, const struct store_docop *ops, size_t n)
{
    struct batch bt = batch_start(n);
    for (size_t i = 0; i < n; i++)
        batch_add(&bt, bcast_of_docop(&ops[i], &bt.scratch));
    batch_publish(b, &bt);
}

void bus_tell_presence(struct bus *b, struct presence *p, enum bus_presence_op op,
                       const char *topic, const char *key, uint64_t conn_id)
{
    if (bus_state(b) == BUS_LOCAL)
        return;
    struct sbuf meta = SBUF_INIT;
    if (op == BUS_UNTRACK || !presence_meta_of(p, topic, conn_id, &meta))
        bus_presence(b, op, topic, key, conn_id, op == BUS_UNTRACK ? NULL : meta.data);
    sbuf_cleanup(&meta);
}
