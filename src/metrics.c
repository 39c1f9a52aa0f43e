/* metrics.c - lock-free metrics and their Prometheus rendering. */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "metrics.h"
#include "util/sbuf.h"

/* Histogram bucket bounds in microseconds (rendered in seconds). */
static const int64_t time_bounds[] = {50,    100,   250,    500,    1000,   2500,   5000,
                                      10000, 25000, 50000, 100000, 250000, 1000000};
#define N_TIME (sizeof time_bounds / sizeof time_bounds[0])
static const uint64_t size_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
#define N_SIZE (sizeof size_bounds / sizeof size_bounds[0])

struct histo {
    atomic_ullong buckets[16]; /* cumulative is computed when rendering */
    atomic_ullong count;
    atomic_ullong sum; /* micros or units */
};

static atomic_llong sockets[MT_TRANSPORT_COUNT];
static atomic_ullong sockets_total[MT_TRANSPORT_COUNT];
static atomic_ullong joins[MC_CHANNEL_COUNT][2];
static atomic_ullong events[MC_CHANNEL_COUNT][ME_EVENT_COUNT];
static struct histo event_time[MC_CHANNEL_COUNT][ME_EVENT_COUNT];
static atomic_ullong broadcasts, deliveries, slow_consumers, rate_limited, protocol_errors;
static atomic_llong presence_metas, store_queue;
static struct histo batch_size, commit_time, bus_lag;
static atomic_ullong bus_notifications, http_requests;
static atomic_ullong bus_rows[2]; /* read from the database, from memory */
static atomic_llong db_connected = 1;
static atomic_llong bus_connected = -1; /* -1: no bus (SQLite mode) */

static const char *const transport_names[] = {"websocket", "longpoll"};
static const char *const channel_names[] = {"room", "presence", "notifications", "document",
                                            "realtime", "other"};
static const char *const event_names[] = {"new_message",   "typing", "update_status",
                                          "get_online_users", "mark_read", "edit",
                                          "edit_message", "delete_message", "add_reaction",
                                          "remove_reaction", "broadcast", "presence",
                                          "access_token", "other"};

enum metric_channel metrics_channel_of(const char *topic)
{
    static const char *const prefixes[] = {"room:", "presence:", "notifications:",
                                           "document:", "realtime:"};
    for (int i = 0; i < 5; i++)
        if (!strncmp(topic, prefixes[i], strlen(prefixes[i])))
            return (enum metric_channel)i;
    return MC_OTHER;
}

enum metric_event metrics_event_of(const char *event)
{
    for (int i = 0; i < ME_OTHER; i++)
        if (!strcmp(event, event_names[i]))
            return (enum metric_event)i;
    return ME_OTHER;
}

/* Adds one observation to a histogram with the given bounds. */
static void observe(struct histo *h, uint64_t v, const void *bounds, size_t n, int is_time)
{
    size_t i = 0;
    for (; i < n; i++)
        if (is_time ? (int64_t)v <= ((const int64_t *)bounds)[i]
                    : v <= ((const uint64_t *)bounds)[i])
            break;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, v, memory_order_relaxed);
}

void metrics_socket_opened(enum metric_transport t)
{
    atomic_fetch_add_explicit(&sockets[t], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&sockets_total[t], 1, memory_order_relaxed);
}

void metrics_socket_closed(enum metric_transport t)
{
    atomic_fetch_sub_explicit(&sockets[t], 1, memory_order_relaxed);
}

void metrics_join(enum metric_channel c, int ok)
{
    atomic_fetch_add_explicit(&joins[c][ok ? 1 : 0], 1, memory_order_relaxed);
}

void metrics_event(enum metric_channel c, enum metric_event e, int64_t micros)
{
    atomic_fetch_add_explicit(&events[c][e], 1, memory_order_relaxed);
    observe(&event_time[c][e], micros < 0 ? 0 : (uint64_t)micros, time_bounds, N_TIME, 1);
}

void metrics_broadcast(void)
{
    atomic_fetch_add_explicit(&broadcasts, 1, memory_order_relaxed);
}

void metrics_deliveries(uint64_t n)
{
    atomic_fetch_add_explicit(&deliveries, n, memory_order_relaxed);
}

void metrics_slow_consumer(void)
{
    atomic_fetch_add_explicit(&slow_consumers, 1, memory_order_relaxed);
}

void metrics_rate_limited(void)
{
    atomic_fetch_add_explicit(&rate_limited, 1, memory_order_relaxed);
}

void metrics_protocol_error(void)
{
    atomic_fetch_add_explicit(&protocol_errors, 1, memory_order_relaxed);
}

void metrics_presence_delta(int64_t metas)
{
    atomic_fetch_add_explicit(&presence_metas, metas, memory_order_relaxed);
}

void metrics_store_queue(int64_t delta)
{
    atomic_fetch_add_explicit(&store_queue, delta, memory_order_relaxed);
}

void metrics_store_batch(uint64_t size, int64_t commit_micros)
{
    observe(&batch_size, size, size_bounds, N_SIZE, 0);
    observe(&commit_time, commit_micros < 0 ? 0 : (uint64_t)commit_micros, time_bounds, N_TIME,
            1);
}

void metrics_bus_notification(int64_t lag_micros)
{
    atomic_fetch_add_explicit(&bus_notifications, 1, memory_order_relaxed);
    observe(&bus_lag, lag_micros < 0 ? 0 : (uint64_t)lag_micros, time_bounds, N_TIME, 1);
}

void metrics_bus_rows(bool from_memory, uint64_t n)
{
    atomic_fetch_add_explicit(&bus_rows[from_memory], n, memory_order_relaxed);
}

void metrics_db_connected(int up)
{
    atomic_store(&db_connected, up ? 1 : 0);
}

void metrics_bus_connected(int up)
{
    atomic_store(&bus_connected, up ? 1 : 0);
}

void metrics_http_request(void)
{
    atomic_fetch_add_explicit(&http_requests, 1, memory_order_relaxed);
}

/* Writes HELP and TYPE lines. */
static void header(struct sbuf *o, const char *name, const char *type, const char *help)
{
    sbuf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Writes one histogram series (labels: "" or `k="v",` pairs without braces). */
static void histo(struct sbuf *o, const char *name, const char *labels, struct histo *h,
                  const void *bounds, size_t n, int is_time)
{
    uint64_t cum = 0;
    for (size_t i = 0; i < n; i++) {
        cum += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        if (is_time)
            sbuf_printf(o, "%s_bucket{%sle=\"%g\"} %llu\n", name, labels,
                        (double)((const int64_t *)bounds)[i] / 1e6, (unsigned long long)cum);
        else
            sbuf_printf(o, "%s_bucket{%sle=\"%llu\"} %llu\n", name, labels,
                        (unsigned long long)((const uint64_t *)bounds)[i],
                        (unsigned long long)cum);
    }
    uint64_t count = atomic_load_explicit(&h->count, memory_order_relaxed);
    uint64_t sum = atomic_load_explicit(&h->sum, memory_order_relaxed);
    sbuf_printf(o, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels, (unsigned long long)count);
    size_t ll = strlen(labels);
    if (ll) /* drop the trailing comma for the plain series */
        sbuf_printf(o, "%s_sum{%.*s} ", name, (int)(ll - 1), labels);
    else
        sbuf_printf(o, "%s_sum ", name);
    if (is_time)
        sbuf_printf(o, "%g\n", (double)sum / 1e6);
    else
        sbuf_printf(o, "%llu\n", (unsigned long long)sum);
    if (ll)
        sbuf_printf(o, "%s_count{%.*s} %llu\n", name, (int)(ll - 1), labels,
                    (unsigned long long)count);
    else
        sbuf_printf(o, "%s_count %llu\n", name, (unsigned long long)count);
}

/* Writes a plain counter or gauge. */
static void plain(struct sbuf *o, const char *name, const char *type, const char *help,
                  long long v)
{
    header(o, name, type, help);
    sbuf_printf(o, "%s %lld\n", name, v);
}

void metrics_render(struct sbuf *o)
{
    header(o, "rowcast_sockets_open", "gauge", "Open client sessions by transport.");
    for (int t = 0; t < MT_TRANSPORT_COUNT; t++)
        sbuf_printf(o, "rowcast_sockets_open{transport=\"%s\"} %lld\n", transport_names[t],
                    (long long)atomic_load(&sockets[t]));
    header(o, "rowcast_sockets_opened_total", "counter", "Client sessions opened by transport.");
    for (int t = 0; t < MT_TRANSPORT_COUNT; t++)
        sbuf_printf(o, "rowcast_sockets_opened_total{transport=\"%s\"} %llu\n",
                    transport_names[t], (unsigned long long)atomic_load(&sockets_total[t]));
    header(o, "rowcast_channel_joins_total", "counter",
           "Channel joins by channel type and result.");
    for (int c = 0; c < MC_CHANNEL_COUNT; c++)
        for (int r = 0; r < 2; r++)
            sbuf_printf(o, "rowcast_channel_joins_total{channel=\"%s\",result=\"%s\"} %llu\n",
                        channel_names[c], r ? "ok" : "error",
                        (unsigned long long)atomic_load(&joins[c][r]));
    header(o, "rowcast_events_total", "counter", "Client events handled by channel and event.");
    for (int c = 0; c < MC_CHANNEL_COUNT; c++)
        for (int e = 0; e < ME_EVENT_COUNT; e++)
            sbuf_printf(o, "rowcast_events_total{channel=\"%s\",event=\"%s\"} %llu\n",
                        channel_names[c], event_names[e],
                        (unsigned long long)atomic_load(&events[c][e]));
    header(o, "rowcast_event_duration_seconds", "histogram",
           "Time a worker spent handling a client event.");
    for (int c = 0; c < MC_CHANNEL_COUNT; c++)
        for (int e = 0; e < ME_EVENT_COUNT; e++) {
            if (!atomic_load(&events[c][e]))
                continue;
            char labels[96];
            snprintf(labels, sizeof labels, "channel=\"%s\",event=\"%s\",", channel_names[c],
                     event_names[e]);
            histo(o, "rowcast_event_duration_seconds", labels, &event_time[c][e], time_bounds,
                  N_TIME, 1);
        }
    plain(o, "rowcast_broadcasts_total", "counter", "Broadcasts published (encoded once each).",
          (long long)atomic_load(&broadcasts));
    plain(o, "rowcast_deliveries_total", "counter", "Frames queued to subscribers by broadcasts.",
          (long long)atomic_load(&deliveries));
    plain(o, "rowcast_slow_consumer_closes_total", "counter",
          "Sessions closed because their outbound queue overflowed.",
          (long long)atomic_load(&slow_consumers));
    plain(o, "rowcast_rate_limited_total", "counter", "Client events refused as rate_limited.",
          (long long)atomic_load(&rate_limited));
    plain(o, "rowcast_protocol_errors_total", "counter",
          "Sessions closed for malformed input (bad frames, JSON, UTF-8, sizes).",
          (long long)atomic_load(&protocol_errors));
    plain(o, "rowcast_presence_metas", "gauge",
          "Presence entries (one per tracking connection and topic) on this node.",
          (long long)atomic_load(&presence_metas));
    plain(o, "rowcast_store_queue_depth", "gauge", "Database requests submitted, not yet done.",
          (long long)atomic_load(&store_queue));
    header(o, "rowcast_store_batch_size", "histogram", "Writes per group commit.");
    histo(o, "rowcast_store_batch_size", "", &batch_size, size_bounds, N_SIZE, 0);
    header(o, "rowcast_store_commit_seconds", "histogram",
           "Time to run and commit one group-commit batch.");
    histo(o, "rowcast_store_commit_seconds", "", &commit_time, time_bounds, N_TIME, 1);
    plain(o, "rowcast_bus_notifications_total", "counter",
          "Bus wake-ups received (PostgreSQL NOTIFY, or SQLite data_version changes).",
          (long long)atomic_load(&bus_notifications));
    header(o, "rowcast_bus_lag_seconds", "histogram",
           "Time from a wake-up to its rows being handed to the workers.");
    histo(o, "rowcast_bus_lag_seconds", "", &bus_lag, time_bounds, N_TIME, 1);
    plain(o, "rowcast_db_connected", "gauge",
          "1 while the store's database connection is up.",
          (long long)atomic_load(&db_connected));
    if (atomic_load(&bus_connected) >= 0) {
        plain(o, "rowcast_bus_connected", "gauge",
              "1 while the PostgreSQL LISTEN connection of the cluster bus is up.",
              (long long)atomic_load(&bus_connected));
        header(o, "rowcast_bus_rows_total", "counter",
               "Committed rows the cluster bus delivered: this node's own from memory, the "
               "rest read from the database.");
        sbuf_printf(o, "rowcast_bus_rows_total{source=\"memory\"} %llu\n",
                    (unsigned long long)atomic_load(&bus_rows[1]));
        sbuf_printf(o, "rowcast_bus_rows_total{source=\"database\"} %llu\n",
                    (unsigned long long)atomic_load(&bus_rows[0]));
    }
    plain(o, "rowcast_http_requests_total", "counter", "REST and static HTTP requests.",
          (long long)atomic_load(&http_requests));
}
