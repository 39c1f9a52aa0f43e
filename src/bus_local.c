/* bus_local.c - the one-node bus (SQLite mode): there is no other node, so every event
 * goes to this node's sink at once, and the store's listeners publish committed rows. */
#include <stdlib.h>

#include "bus.h"
#include "util/xmalloc.h"

/* bus_ops.broadcast */
static void local_broadcast(struct bus *b, const char *topic, const char *event,
                            const char *payload, size_t payload_len, uint64_t exclude)
{
    bus_publish_local(b, topic, event, payload, payload_len, exclude);
}

/* bus_ops.disconnect_user */
static void local_disconnect(struct bus *b, const char *user)
{
    b->sink.disconnect(b->sink.arg, user);
}

/* bus_ops.presence: no other node to tell. */
static void local_presence(struct bus *b, enum bus_presence_op op, const char *topic,
                           const char *key, uint64_t conn_id, const char *meta_json)
{
}

/* bus_ops.state */
static enum bus_state local_state(struct bus *b)
{
    return BUS_LOCAL;
}

/* bus_ops.stop */
static void local_stop(struct bus *b)
{
    free(b);
}

static const struct bus_ops local_ops = {
    .broadcast = local_broadcast,
    .disconnect_user = local_disconnect,
    .presence = local_presence,
    .state = local_state,
    .stop = local_stop,
};

struct bus *bus_local_create(const struct bus_sink *sink)
{
    struct bus *b = xcalloc(1, sizeof *b);
    b->ops = &local_ops;
    b->sink = *sink;
    return b;
}

void bus_local_on_changes(const struct store_change *cs, size_t n, void *bus)
{
    bus_publish_changes(bus, cs, n);
}

void bus_local_on_notifs(const struct store_notif *ns, size_t n, void *bus)
{
    bus_publish_notifs(bus, ns, n);
}

void bus_local_on_docops(const struct store_docop *ops, size_t n, void *bus)
{
    bus_publish_docops(bus, ops, n);
}
