/* store_queue.c - the backends' request queue (see store_queue.h). */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "store_queue.h"
#include "util/clock.h"

void store_queue_init(struct store_queue *q)
{
    memset(q, 0, sizeof *q);
    pthread_mutex_init(&q->mu, NULL);
    /* Timed waits are bounds on durations: they must not move with the wall clock. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->cv, &ca);
    pthread_condattr_destroy(&ca);
}

void store_queue_cleanup(struct store_queue *q)
{
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
}

void store_queue_push(struct store_queue *q, struct store_req *req)
{
    req->_next = NULL;
    req->_queued_ms = clock_mono_ms();
    pthread_mutex_lock(&q->mu);
    if (q->tail)
        q->tail->_next = req;
    else
        q->head = req;
    q->tail = req;
    q->len++;
    /* Broadcast: with several serving threads, one waiting out a reconnect must not
     * absorb the wake-up that a connected one needs. */
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* Converts a clock_mono_ms() time into a deadline for the queue's condition variable. */
static struct timespec mono_deadline(int64_t until_ms)
{
    struct timespec ts = {.tv_sec = (time_t)(until_ms / 1000),
                          .tv_nsec = (long)(until_ms % 1000) * 1000000L};
    return ts;
}

/* Unlinks up to max requests from the head of q (lock held). */
static struct store_req *pop_locked(struct store_queue *q, size_t max)
{
    struct store_req *head = q->head, *last = NULL;
    size_t n = 0;
    for (struct store_req *r = head; r && n < max; r = r->_next) {
        last = r;
        n++;
    }
    if (!last)
        return NULL;
    q->head = last->_next;
    if (!q->head)
        q->tail = NULL;
    last->_next = NULL;
    q->len -= n;
    return head;
}

struct store_req *store_queue_take(struct store_queue *q, size_t max, int wait_ms,
                                   bool *stopped)
{
    pthread_mutex_lock(&q->mu);
    if (wait_ms > 0 && !q->head && !q->stop) {
        struct timespec ts = mono_deadline(clock_mono_ms() + wait_ms);
        while (!q->head && !q->stop)
            if (pthread_cond_timedwait(&q->cv, &q->mu, &ts) == ETIMEDOUT)
                break;
    }
    struct store_req *head = pop_locked(q, max);
    if (stopped)
        *stopped = q->stop && !q->head;
    pthread_mutex_unlock(&q->mu);
    return head;
}

bool store_queue_wait(struct store_queue *q)
{
    pthread_mutex_lock(&q->mu);
    while (!q->head && !q->stop)
        pthread_cond_wait(&q->cv, &q->mu);
    bool any = q->head != NULL;
    pthread_mutex_unlock(&q->mu);
    return any;
}

bool store_queue_sleep(struct store_queue *q, int64_t until_ms)
{
    struct timespec ts = mono_deadline(until_ms);
    pthread_mutex_lock(&q->mu);
    if (!q->stop)
        pthread_cond_timedwait(&q->cv, &q->mu, &ts);
    bool stop = q->stop;
    pthread_mutex_unlock(&q->mu);
    return stop;
}

bool store_queue_stopped(struct store_queue *q)
{
    pthread_mutex_lock(&q->mu);
    bool stop = q->stop;
    pthread_mutex_unlock(&q->mu);
    return stop;
}

void store_queue_stop(struct store_queue *q)
{
    pthread_mutex_lock(&q->mu);
    q->stop = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

struct store_req *store_queue_expire(struct store_queue *q, int64_t cutoff_ms,
                                     int64_t *oldest_ms)
{
    struct store_req *expired = NULL, **expired_tail = &expired;
    struct store_req *kept = NULL, *kept_tail = NULL;
    size_t n_kept = 0;
    pthread_mutex_lock(&q->mu);
    for (struct store_req *r = q->head, *next; r; r = next) {
        next = r->_next;
        r->_next = NULL;
        if (r->op == STORE_PING || r->_queued_ms <= cutoff_ms) {
            *expired_tail = r;
            expired_tail = &r->_next;
            continue;
        }
        if (kept_tail)
            kept_tail->_next = r;
        else
            kept = r;
        kept_tail = r;
        n_kept++;
    }
    q->head = kept;
    q->tail = kept_tail;
    q->len = n_kept;
    /* FIFO: the head is the oldest. */
    *oldest_ms = kept ? kept->_queued_ms : -1;
    pthread_mutex_unlock(&q->mu);
    return expired;
}
