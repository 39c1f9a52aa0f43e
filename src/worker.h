/* worker.h - one I/O worker: an epoll loop on its own thread that owns a set of conns
 * (their channels, timers and outbound queues). Other threads talk to it only through
 * its inbox (mutex-protected list + eventfd). An inbox item carries its own handler, so
 * the loop knows no transport and no channel: a WebSocket to adopt, a long-poll request,
 * a broadcast to fan out or a store completion are all just items. */
#ifndef RC_WORKER_H
#define RC_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conn.h"
#include "rc.h"

struct worker;
struct config;
struct store;
struct bus;
struct presence;
struct ratelimit;
struct user_counter;
struct chan_index;
struct hmap;

/* A unit of work posted to a worker. Owners embed it in a struct of their own. */
struct inbox_item {
    /* Runs it on the worker thread; frees it. */
    void (*run)(struct worker *w, struct inbox_item *it);
    /* Releases it without running it (the worker has stopped; on the thread that stops
     * or frees the worker): answers or closes what it holds; frees it. */
    void (*drop)(struct worker *w, struct inbox_item *it);
    struct inbox_item *next;
};

/* An inbox_item.drop for items that hold nothing but their own memory (one malloc'd
 * block that starts with the inbox_item): frees it. Any thread. */
void worker_item_free(struct worker *w, struct inbox_item *it);

/* What every worker's conns and channels use, shared by all workers of a node. */
struct worker_env {
    const struct config *cfg;
    struct store *store;
    struct bus *bus;           /* broadcasts and disconnects, on every node */
    struct presence *presence; /* this node's presence state */
    struct ratelimit *rl;      /* channel events per user and topic; NULL: no limit */
    struct user_counter *uc;   /* open sockets per user */
};

struct worker {
    int index;
    const struct worker_env *env;
    int epfd;
    int evfd;
    pthread_t thread;
    int64_t tick_ms; /* how often conns' timers run */
    /* inbox */
    pthread_mutex_t mu;
    struct inbox_item *in_head, *in_tail;
    /* owned by the worker thread */
    struct conn_set conns;
    struct chan_index *topics; /* the channels subscribed here, by topic (set by the pool) */
    struct hmap *sessions;     /* sessions addressed by token (long-poll); freed here */
    uint32_t next_chan_id;
    int64_t now_ms;
    /* run every 10 s on the worker thread, when set */
    void (*sweep)(void *arg, int64_t now_ms);
    void *sweep_arg;
    bool stopping;
    bool started;
};

/* Creates a worker (not started); its conns' timers run every tick_ms. */
struct worker *worker_create(int index, const struct worker_env *env, int64_t tick_ms);
/* Starts its thread. */
int worker_start(struct worker *w) MUSTCHECK;
/* Closes every conn with 1001 and joins the thread. Items posted afterwards wait in the
 * inbox for worker_drain. */
void worker_shutdown(struct worker *w);
/* After worker_shutdown (or for a worker never started): drops every item in the inbox
 * (each item's drop: long-poll requests are answered, store completions finished). */
void worker_drain(struct worker *w);
/* Drains what is left and frees the worker. After worker_shutdown, and after the store
 * has stopped. Accepts NULL. */
void worker_free(struct worker *w);

/* epoll registrations carry a pointer to one of these (NULL is the inbox). */
struct ep_handler {
    void (*on_event)(struct ep_handler *h, uint32_t events);
};

/* Appends items (a linked list head..tail) to the inbox and wakes the worker if it was
 * empty. Any thread. */
void worker_post(struct worker *w, struct inbox_item *head, struct inbox_item *tail);
/* Processes everything in the inbox now (the loop calls it when the eventfd fires;
 * exported for code that turns a worker by hand). Worker thread. */
void worker_drain_inbox(struct worker *w);
struct epoll_event;
/* Hands each of n events of w's epoll set to its handler (NULL: the inbox). Owning
 * thread only. */
void worker_dispatch(struct worker *w, const struct epoll_event *evs, int n);
/* The loop's before-sleep pass: writes pending output, releases closed conns (the loop
 * calls it; exported for code that turns a worker by hand). */
void worker_before_sleep(struct worker *w);

#endif
