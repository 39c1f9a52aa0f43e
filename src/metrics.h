/* metrics.h - process-wide counters, gauges and histograms, rendered in the Prometheus
 * text format at GET /metrics. Every update is one relaxed atomic add, so any thread
 * may update without locks; labels come from small fixed sets (never from client
 * input), which keeps the number of series bounded. */
#ifndef RC_METRICS_H
#define RC_METRICS_H

#include <stdbool.h>
#include <stdint.h>

struct sbuf;

enum metric_transport { MT_WEBSOCKET, MT_LONGPOLL, MT_TRANSPORT_COUNT };

/* Channel types as labels; MC_OTHER for topics no channel serves. */
enum metric_channel { MC_ROOM, MC_PRESENCE, MC_NOTIFICATIONS, MC_DOCUMENT, MC_REALTIME,
                      MC_OTHER, MC_CHANNEL_COUNT };

/* Events as labels; anything else a client sends counts as ME_OTHER. */
enum metric_event {
    ME_NEW_MESSAGE,
    ME_TYPING,
    ME_UPDATE_STATUS,
    ME_GET_ONLINE_USERS,
    ME_MARK_READ,
    ME_EDIT,
    ME_EDIT_MESSAGE,
    ME_DELETE_MESSAGE,
    ME_ADD_REACTION,
    ME_REMOVE_REACTION,
    ME_BROADCAST,
    ME_PRESENCE,
    ME_ACCESS_TOKEN,
    ME_OTHER,
    ME_EVENT_COUNT
};

/* Maps a topic prefix / an event name to its label. */
enum metric_channel metrics_channel_of(const char *topic);
enum metric_event metrics_event_of(const char *event);

void metrics_socket_opened(enum metric_transport t);
void metrics_socket_closed(enum metric_transport t);
void metrics_join(enum metric_channel c, int ok);
/* An event handled on a channel, with the time it took on the worker. */
void metrics_event(enum metric_channel c, enum metric_event e, int64_t micros);
void metrics_broadcast(void);              /* one broadcast published */
void metrics_deliveries(uint64_t n);       /* frames queued to subscribers */
void metrics_slow_consumer(void);
void metrics_rate_limited(void);
void metrics_protocol_error(void);
void metrics_presence_delta(int64_t metas); /* +1 per track, -1 per untrack */
void metrics_store_queue(int64_t delta);    /* requests waiting for the store */
void metrics_store_batch(uint64_t size, int64_t commit_micros);
void metrics_bus_notification(int64_t lag_micros);
/* PostgreSQL bus: rows delivered, from memory (this node's commits) or read from the
 * database. */
void metrics_bus_rows(bool from_memory, uint64_t n);
void metrics_db_connected(int up);          /* the store's database connection: 1 up, 0 down */
void metrics_bus_connected(int up);         /* the PostgreSQL LISTEN connection */
void metrics_http_request(void);

/* Appends every metric in the Prometheus text exposition format (version 0.0.4). */
void metrics_render(struct sbuf *out);

#endif
