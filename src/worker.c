/* worker.c - the I/O worker loop: epoll, inbox, timers, before-sleep flush. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/hmap.h"
#include "util/log.h"
#include "util/thread.h"
#include "util/xmalloc.h"
#include "worker.h"

/* How long a shutting-down worker waits for its sockets to finish closing. */
#define SHUTDOWN_GRACE_MS 2000
/* How often the sweep hook runs. */
#define SWEEP_MS 10000

struct worker *worker_create(int index, const struct worker_env *env, int64_t tick_ms)
{
    struct worker *w = xcalloc(1, sizeof *w);
    w->index = index;
    w->env = env;
    w->tick_ms = tick_ms;
    w->epfd = -1;
    w->evfd = -1;
    pthread_mutex_init(&w->mu, NULL);
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
    if (was_empty && w->evfd >= 0) {
        uint64_t one = 1;
        ssize_t r = write(w->evfd, &one, sizeof one);
        (void)r;
    }
}

void worker_item_free(struct worker *w, struct inbox_item *it)
{
    free(it);
}

/* Takes the whole inbox. */
static struct inbox_item *take_inbox(struct worker *w)
{
    pthread_mutex_lock(&w->mu);
    struct inbox_item *it = w->in_head;
    w->in_head = w->in_tail = NULL;
    pthread_mutex_unlock(&w->mu);
    return it;
}

void worker_drain_inbox(struct worker *w)
{
    if (w->evfd >= 0) {
        uint64_t v;
        ssize_t r = read(w->evfd, &v, sizeof v);
        (void)r;
    }
    for (struct inbox_item *it = take_inbox(w), *next; it; it = next) {
        next = it->next;
        it->run(w, it);
    }
}

void worker_dispatch(struct worker *w, const struct epoll_event *evs, int n)
{
    for (int i = 0; i < n; i++) {
        struct ep_handler *h = evs[i].data.ptr;
        if (!h)
            worker_drain_inbox(w);
        else
            h->on_event(h, evs[i].events);
    }
}

/* The before-sleep pass's between hook: takes the input and inbox items that arrived
 * while a long fan-out was being written, so that a sender's next message goes to the
 * store (and the next broadcast joins the frames still waiting) without waiting for the
 * whole pass. A pass that has run for a tick already takes no more. */
static void flush_between(void *arg)
{
    struct worker *w = arg;
    if (w->epfd < 0 || clock_mono_ms() - w->now_ms >= w->tick_ms)
        return;
    struct epoll_event evs[64];
    int n = epoll_wait(w->epfd, evs, 64, 0);
    if (n > 0)
        worker_dispatch(w, evs, n);
}

void worker_before_sleep(struct worker *w)
{
    conn_set_before_sleep(&w->conns, flush_between, w);
}

/* The worker thread. */
static void *worker_main(void *arg)
{
    thread_name("rc-worker");
    struct worker *w = arg;
    struct epoll_event evs[256];
    w->now_ms = clock_mono_ms();
    int64_t next_tick = w->now_ms + w->tick_ms;
    int64_t stop_deadline = 0;
    int64_t next_sweep = w->now_ms + SWEEP_MS;
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
        worker_dispatch(w, evs, n);
        if (w->now_ms >= next_tick) {
            next_tick = w->now_ms + w->tick_ms;
            if (w->sweep && w->now_ms >= next_sweep) {
                w->sweep(w->sweep_arg, w->now_ms);
                next_sweep = w->now_ms + SWEEP_MS;
            }
            for (struct conn *c = w->conns.all, *nx; c; c = nx) {
                nx = c->_next;
                c->ops->tick(c, w->now_ms);
            }
        }
        worker_before_sleep(w);
        if (w->stopping) {
            if (!stop_deadline)
                stop_deadline = w->now_ms + SHUTDOWN_GRACE_MS;
            if (!w->conns.all || w->now_ms >= stop_deadline)
                break;
            if (next_tick > w->now_ms + 50)
                next_tick = w->now_ms + 50;
        }
    }
    /* Anything left is closed hard. */
    while (w->conns.all) {
        struct conn *c = w->conns.all;
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
    pthread_mutex_lock(&w->mu);
    bool waiting = w->in_head != NULL; /* posted before the eventfd existed */
    pthread_mutex_unlock(&w->mu);
    if (waiting) {
        uint64_t one = 1;
        ssize_t r = write(w->evfd, &one, sizeof one);
        (void)r;
    }
    w->started = true;
    return 0;
}

/* The shutdown item: every conn gets a 1001 close, and the loop ends once they are gone
 * (or at the grace deadline). */
static void run_shutdown(struct worker *w, struct inbox_item *it)
{
    w->stopping = true;
    /* A close may release its conn at once (a long-poll session), which unlinks it. */
    for (struct conn *c = w->conns.all, *nx; c; c = nx) {
        nx = c->_next;
        c->ops->close(c, 1001, "server shutting down");
    }
    free(it);
}

void worker_shutdown(struct worker *w)
{
    if (!w->started)
        return;
    struct inbox_item *it = xcalloc(1, sizeof *it);
    it->run = run_shutdown;
    it->drop = worker_item_free;
    worker_post(w, it, it);
    pthread_join(w->thread, NULL);
}

void worker_drain(struct worker *w)
{
    for (struct inbox_item *it = take_inbox(w), *next; it; it = next) {
        next = it->next;
        it->drop(w, it);
    }
}

void worker_free(struct worker *w)
{
    if (!w)
        return;
    worker_drain(w);
    if (w->sessions) {
        hmap_cleanup(w->sessions);
        free(w->sessions);
    }
    if (w->epfd >= 0)
        close(w->epfd);
    if (w->evfd >= 0)
        close(w->evfd);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
