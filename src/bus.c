/* bus.c - what both bus backends share: publishing to this node's sink. */
#include <stdlib.h>

#include "bcast.h"
#include "bus.h"
#include "metrics.h"
#include "store.h"
#include "util/log.h"
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

/* Builds the broadcasts of n rows (size bytes each) with of, all in one scratch, and
 * publishes them at once. */
static void publish_rows(struct bus *b, const void *rows, size_t n, size_t size,
                         struct bcast *(*of)(const void *row, struct bcast_scratch *s))
{
    if (!n)
        return;
    struct bcast **list = xmalloc(n * sizeof *list);
    struct bcast_scratch scratch = BCAST_SCRATCH_INIT;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        struct bcast *bc = of((const char *)rows + i * size, &scratch);
        if (!bc) {
            log_error("out of memory building a broadcast", NULL);
            continue;
        }
        metrics_broadcast();
        list[k++] = bc;
    }
    bcast_scratch_cleanup(&scratch);
    if (k)
        b->sink.publish(b->sink.arg, list, k);
    free(list);
}

/* The row builders of bcast.h, with the row as an untyped pointer for publish_rows. */
static struct bcast *of_msg(const void *row, struct bcast_scratch *s)
{
    return bcast_of_msg(row, s);
}
static struct bcast *of_notif(const void *row, struct bcast_scratch *s)
{
    return bcast_of_notif(row, s);
}
static struct bcast *of_docop(const void *row, struct bcast_scratch *s)
{
    return bcast_of_docop(row, s);
}

void bus_publish_msgs(struct bus *b, const struct store_msg *msgs, size_t n)
{
    publish_rows(b, msgs, n, sizeof *msgs, of_msg);
}

void bus_publish_notifs(struct bus *b, const struct store_notif *ns, size_t n)
{
    publish_rows(b, ns, n, sizeof *ns, of_notif);
}

void bus_publish_docops(struct bus *b, const struct store_docop *ops, size_t n)
{
    publish_rows(b, ops, n, sizeof *ops, of_docop);
}
