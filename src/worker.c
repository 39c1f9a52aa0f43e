/* worker.c - the I/O worker loop: epoll, inbox, timers, before-sleep flush. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "channel.h"
#include "config.h"
#include "conn.h"
#include "hub.h"
#include "longpoll.h"
#include "metrics.h"
#include "obuf.h"
#include "router.h"
#include "store.h"
#include "util/clock.h"
#include "util/hmap.h"
#include "util/log.h"
#include "util/thread.h"
#include "util/xmalloc.h"
#include "worker.h"
#include "ws.h"

/* How long a shutting-down worker waits for its sockets to finish closing. */
#define SHUTDOWN_GRACE_MS 2000

/* The subscribers of one topic on this worker. */
struct subs {
    struct chan **v;
    size_t n, cap;
};

struct worker *worker_create(int index, struct hub *hub, const struct config *cfg,
                             struct store *store)
{
    struct worker *w = xcalloc(1, sizeof *w);
    w->index = index;
    w->hub = hub;
    w->cfg = cfg;
    w->store = store;
    w->epfd = -1;
    w->evfd = -1;
    pthread_mutex_init(&w->mu, NULL);
    struct hmap *topics = xcalloc(1, sizeof *topics);
    w->topics = topics;
    w->next_chan_id = 1;
    return w;
}

void worker_post(struct worker *w, struct inbox_item *head, struct inbox_item *tail)
{
    tail->next = NULL;
    pthread_mutex_lock(&w->mu);
    bool was_empty = !w->in_head;
    if (w->in_tail)
        w->in_tail->next = head;
    else
        w->in_head = head;
    w->in_tail = tail;
    pthread_mutex_unlock(&w->mu);
    if (was_empty) {
        uint64_t one = 1;
        ssize_t r = write(w->evfd, &one, sizeof one);
        (void)r;
    }
}

void worker_subscribe(struct worker *w, struct chan *ch)
{
    struct hmap *topics = w->topics;
    struct subs *s = hmap_get(topics, ch->topic, ch->topic_len);
    if (!s) {
        s = xcalloc(1, sizeof *s);
        hmap_put(topics, ch->topic, ch->topic_len, s);
    }
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4;
        s->v = xrealloc(s->v, s->cap * sizeof *s->v);
    }
    ch->sub_index = s->n;
    s->v[s->n++] = ch;
}

void worker_unsubscribe(struct worker *w, struct chan *ch)
{
    struct hmap *topics = w->topics;
    struct subs *s = hmap_get(topics, ch->topic, ch->topic_len);
    if (!s || ch->sub_index >= s->n || s->v[ch->sub_index] != ch)
        return;
    struct chan *last = s->v[--s->n];
    s->v[ch->sub_index] = last;
    last->sub_index = ch->sub_index;
    if (!s->n) {
        hmap_del(topics, ch->topic, ch->topic_len);
        free(s->v);
        free(s);
    }
}

void worker_add_conn(struct worker *w, struct conn *c)
{
    c->_prev = NULL;
    c->_next = w->conns;
    if (w->conns)
        w->conns->_prev = c;
    w->conns = c;
    atomic_fetch_add(&w->nconns, 1);
}

void worker_remove_conn(struct worker *w, struct conn *c)
{
    if (c->_prev)
        c->_prev->_next = c->_next;
    else if (w->conns == c)
        w->conns = c->_next;
    else
        return;
    if (c->_next)
        c->_next->_prev = c->_prev;
    c->_prev = c->_next = NULL;
    atomic_fetch_sub(&w->nconns, 1);
}

void conn_want_flush(struct conn *c)
{
    if (c->_in_flush)
        return;
    /* FIFO: whoever got output first is written first (a sender's reply before the
     * fan-out that followed it). */
    c->_in_flush = true;
    c->_flush_next = NULL;
    if (c->worker->flush_tail)
        c->worker->flush_tail->_flush_next = c;
    else
        c->worker->flush = c;
    c->worker->flush_tail = c;
}

void conn_closed(struct conn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    router_conn_closed(c);
}

void conn_release(struct conn *c)
{
    if (c->_dead)
        return;
    conn_closed(c);
    worker_remove_conn(c->worker, c);
    metrics_socket_closed((enum metric_transport)c->transport);
    c->_dead = true;
    c->_dead_next = c->worker->dead;
    c->worker->dead = c;
}

/* Delivers a broadcast to this worker's subscribers of its topic. */
static void deliver(struct worker *w, struct bcast *b)
{
    struct subs *s = hmap_get(w->topics, b->topic, b->topic_len);
    if (!s)
        return;
    uint64_t n = 0;
    for (size_t i = 0; i < s->n; i++) {
        struct chan *ch = s->v[i];
        struct conn *c = ch->conn;
        if (c->id == b->exclude || c->closed)
            continue;
        router_deliver(ch, b);
        n++;
    }
    metrics_deliveries(n);
}

/* Closes every socket of a user. */
static void disconnect_user(struct worker *w, const char *user_id)
{
    for (struct conn *c = w->conns; c; c = c->_next)
        if (!c->closed && !strcmp(c->user_id, user_id)) {
            log_info("disconnect", "conn=%llu user=%s", (unsigned long long)c->id, log_v(user_id));
            c->ops->close(c, 1001, "disconnected");
        }
}

/* Processes everything in the inbox. */
static void drain_inbox(struct worker *w)
{
    uint64_t v;
    ssize_t r = read(w->evfd, &v, sizeof v);
    (void)r;
    pthread_mutex_lock(&w->mu);
    struct inbox_item *it = w->in_head;
    w->in_head = w->in_tail = NULL;
    pthread_mutex_unlock(&w->mu);
    while (it) {
        struct inbox_item *next = it->next;
        switch (it->kind) {
        case IN_WS:
            if (w->stopping) {
                close(it->u.ws.fd);
                hub_release_user(w->hub, it->u.ws.user_id);
                free(it->u.ws.user_id);
            } else {
                ws_conn_create(w, it->u.ws.fd, it->u.ws.extra, it->u.ws.extra_len,
                               it->u.ws.user_id, it->u.ws.vsn);
            }
            free(it->u.ws.extra);
            break;
        case IN_BCAST:
            deliver(w, it->u.bcast);
            bcast_unref(it->u.bcast);
            break;
        case IN_STORE:
            router_store_done(it->u.req);
            break;
        case IN_DISCONNECT:
            disconnect_user(w, it->u.user_id);
            free(it->u.user_id);
            break;
        case IN_LP:
            lp_handle_item(w, it);
            break;
        case IN_SHUTDOWN:
            w->stopping = true;
            for (struct conn *c = w->conns; c; c = c->_next)
                c->ops->close(c, 1001, "server shutting down");
            break;
        }
        free(it);
        it = next;
    }
}

/* Writes pending output and releases closed conns: the before-sleep pass. */
void worker_before_sleep(struct worker *w)
{
    while (w->flush) {
        struct conn *c = w->flush;
        w->flush = c->_flush_next;
        if (!w->flush)
            w->flush_tail = NULL;
        c->_in_flush = false;
        c->ops->flush(c);
    }
    while (w->dead) {
        struct conn *c = w->dead;
        w->dead = c->_dead_next;
        conn_unref(c);
    }
}

/* The worker thread. */
static void *worker_main(void *arg)
{
    thread_name("rc-worker");
    struct worker *w = arg;
    struct epoll_event evs[256];
    int64_t tick_ms = w->cfg->idle_timeout * 1000 / 4;
    if (tick_ms > 1000)
        tick_ms = 1000;
    if (tick_ms < 50)
        tick_ms = 50;
    w->now_ms = clock_mono_ms();
    int64_t next_tick = w->now_ms + tick_ms;
    int64_t stop_deadline = 0;
    int64_t next_sweep = w->now_ms + 10000;
    for (;;) {
        int timeout = (int)(next_tick - w->now_ms);
        if (timeout < 0)
            timeout = 0;
        int n = epoll_wait(w->epfd, evs, 256, timeout);
        if (n < 0 && errno != EINTR) {
            log_error("epoll_wait failed", "worker=%d errno=%d", w->index, errno);
            break;
        }
        w->now_ms = clock_mono_ms();
        for (int i = 0; i < n; i++) {
            struct ep_handler *h = evs[i].data.ptr;
            if (!h)
                drain_inbox(w);
            else
                h->on_event(h, evs[i].events);
        }
        if (w->now_ms >= next_tick) {
            next_tick = w->now_ms + tick_ms;
            if (w->index == 0 && w->now_ms >= next_sweep) {
                hub_rate_sweep(w->hub, w->now_ms);
                next_sweep = w->now_ms + 10000;
            }
            for (struct conn *c = w->conns, *nx; c; c = nx) {
                nx = c->_next;
                c->ops->tick(c, w->now_ms);
            }
        }
        worker_before_sleep(w);
        if (w->stopping) {
            if (!stop_deadline)
                stop_deadline = w->now_ms + SHUTDOWN_GRACE_MS;
            if (!w->conns || w->now_ms >= stop_deadline)
                break;
            if (next_tick > w->now_ms + 50)
                next_tick = w->now_ms + 50;
        }
    }
    /* Anything left is closed hard. */
    while (w->conns) {
        struct conn *c = w->conns;
        c->ops->abort(c);
        worker_before_sleep(w);
    }
    worker_before_sleep(w);
    return NULL;
}

int worker_start(struct worker *w)
{
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->epfd < 0 || w->evfd < 0)
        return RC_EIO;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->evfd, &ev))
        return RC_EIO;
    if (pthread_create(&w->thread, NULL, worker_main, w))
        return RC_EIO;
    w->started = true;
    return 0;
}

/* Frees one topic's subscriber array (all chans are gone by now). */
static void free_subs(const char *key, void *value, void *arg)
{
    struct subs *s = value;
    free(s->v);
    free(s);
}

void worker_shutdown(struct worker *w)
{
    if (!w->started)
        return;
    struct inbox_item *it = xcalloc(1, sizeof *it);
    it->kind = IN_SHUTDOWN;
    worker_post(w, it, it);
    pthread_join(w->thread, NULL);
}

void worker_drain_requests(struct worker *w)
{
    pthread_mutex_lock(&w->mu);
    struct inbox_item **pp = &w->in_head, *last = NULL;
    while (*pp) {
        struct inbox_item *it = *pp;
        if (it->kind == IN_LP) {
            *pp = it->next;
            lp_drop_item(w, it);
            free(it);
            continue;
        }
        last = it;
        pp = &it->next;
    }
    w->in_tail = last;
    pthread_mutex_unlock(&w->mu);
}

void worker_free(struct worker *w)
{
    if (!w)
        return;
    /* Drop whatever arrived after the loop ended. */
    struct inbox_item *rest = w->in_head;
    while (rest) {
        struct inbox_item *next = rest->next;
        if (rest->kind == IN_BCAST)
            bcast_unref(rest->u.bcast);
        else if (rest->kind == IN_WS) {
            close(rest->u.ws.fd);
            hub_release_user(w->hub, rest->u.ws.user_id);
            free(rest->u.ws.extra);
            free(rest->u.ws.user_id);
        } else if (rest->kind == IN_DISCONNECT)
            free(rest->u.user_id);
        else if (rest->kind == IN_STORE)
            router_store_done(rest->u.req);
        else if (rest->kind == IN_LP)
            lp_drop_item(w, rest);
        free(rest);
        rest = next;
    }
    lp_worker_cleanup(w);
    struct hmap *topics = w->topics;
    hmap_each(topics, free_subs, NULL);
    hmap_cleanup(topics);
    free(topics);
    if (w->epfd >= 0)
        close(w->epfd);
    if (w->evfd >= 0)
        close(w->evfd);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
