/* worker.h - one I/O worker: an epoll loop on its own thread that owns its conns, their
 * channels, timers and outbound queues, and a per-topic subscriber index. Other threads
 * talk to it only through its inbox (mutex-protected list + eventfd). */
#ifndef RC_WORKER_H
#define RC_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "rc.h"

struct hub;
struct conn;
struct chan;
struct bcast;
struct config;
struct store;
struct store_req;
struct lp_http;

enum inbox_kind {
    IN_WS,         /* a new upgraded WebSocket */
    IN_BCAST,      /* a broadcast to deliver to local subscribers */
    IN_STORE,      /* a completed store request for one of our conns */
    IN_DISCONNECT, /* close every socket of a user */
    IN_SHUTDOWN,   /* close every socket with 1001 and stop */
    IN_LP,         /* a long-poll request or session open (longpoll.c) */
};

struct inbox_item {
    enum inbox_kind kind;
    struct inbox_item *next;
    union {
        struct {
            int fd;
            uint8_t *extra;
            size_t extra_len;
            char *user_id;
            enum codec_vsn vsn;
        } ws;
        struct bcast *bcast;
        struct store_req *req;
        char *user_id;
        struct {
            int op; /* enum lp_op */
            char token[48];
            struct lp_http *http;
            const char *body; /* owned by the suspended HTTP request */
            size_t body_len;
            bool ndjson;
            char *user_id;
            enum codec_vsn vsn;
        } lp;
    } u;
};

struct worker {
    int index;
    struct hub *hub;
    const struct config *cfg;
    struct store *store;
    int epfd;
    int evfd;
    pthread_t thread;
    atomic_uint nconns; /* read by the hub to pick the least-loaded worker */
    /* inbox */
    pthread_mutex_t mu;
    struct inbox_item *in_head, *in_tail;
    /* owned by the worker thread */
    struct conn *conns;   /* every live conn */
    struct conn *flush;   /* conns with output to write before sleeping, in order */
    struct conn *flush_tail;
    struct conn *dead;    /* conns to destroy at the end of this loop turn */
    void *topics;         /* struct hmap topic → subscriber array */
    void *lp_sessions;    /* struct hmap token → long-poll session */
    uint32_t next_chan_id;
    int64_t now_ms;
    bool stopping;
    bool started;
};

/* Creates a worker (not started). */
struct worker *worker_create(int index, struct hub *hub, const struct config *cfg,
                             struct store *store);
/* Starts its thread. */
int worker_start(struct worker *w) MUSTCHECK;
/* Posts IN_SHUTDOWN (every socket gets a 1001 close) and joins the thread. Items
 * posted afterwards wait in the inbox for worker_free. */
void worker_shutdown(struct worker *w);
/* After worker_shutdown: answers long-poll requests left in the inbox (main thread). */
void worker_drain_requests(struct worker *w);
/* Releases whatever is left in the inbox (store completions are finished) and frees
 * the worker. After worker_shutdown, and after the store has stopped. */
void worker_free(struct worker *w);

/* epoll registrations carry a pointer to one of these (NULL is the inbox). */
struct ep_handler {
    void (*on_event)(struct ep_handler *h, uint32_t events);
};

/* Appends items (a linked list head..tail) to the inbox and wakes the worker if it was
 * empty. Any thread. */
void worker_post(struct worker *w, struct inbox_item *head, struct inbox_item *tail);
/* The loop's before-sleep pass: writes pending output, releases closed conns (the loop
 * calls it; exported for code that turns a worker by hand). */
void worker_before_sleep(struct worker *w);

/* Subscribes ch to its topic / removes it. Worker thread. */
void worker_subscribe(struct worker *w, struct chan *ch);
void worker_unsubscribe(struct worker *w, struct chan *ch);

/* Registers / unregisters a live conn. Worker thread. */
void worker_add_conn(struct worker *w, struct conn *c);
void worker_remove_conn(struct worker *w, struct conn *c);

#endif
