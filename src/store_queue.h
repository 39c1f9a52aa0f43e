/* store_queue.h - the request queue between store_submit() and a backend's threads
 * (internal to the store backends).
 *
 * A FIFO of struct store_req linked through req->_next, guarded by a mutex, with a
 * condition variable on the monotonic clock that the serving threads wait on. Each
 * request remembers when it was queued (req->_queued_ms), so that a backend whose
 * database is unreachable can fail the requests that waited too long. Any number of
 * submitting threads and serving threads may use one queue. */
#ifndef RC_STORE_QUEUE_H
#define RC_STORE_QUEUE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct store_queue {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    struct store_req *head, *tail;
    size_t len;
    bool stop;
};

/* Initializes an empty queue. */
void store_queue_init(struct store_queue *q);

/* Releases the mutex and condition variable. The queue must be empty and no thread may
 * use it any more. */
void store_queue_cleanup(struct store_queue *q);

/* Appends req (taking it over until a serving thread takes it) and wakes every thread
 * waiting on q. Any thread. */
void store_queue_push(struct store_queue *q, struct store_req *req);

/* Takes up to max requests off the head of q as a list in queue order; when q is empty
 * and not stopped, first waits up to wait_ms (0: not at all) for a request. Returns NULL
 * when none came. *stopped (may be NULL) is set when q is stopped and now empty. */
struct store_req *store_queue_take(struct store_queue *q, size_t max, int wait_ms,
                                   bool *stopped);

/* Waits until q holds a request or is stopped. True when it holds one (stopped or not),
 * false when it is stopped and empty. */
bool store_queue_wait(struct store_queue *q);

/* Waits until until_ms (clock_mono_ms() time) or until q is stopped or receives a
 * request, whichever comes first (it may also return early). Returns true when q is
 * stopped. */
bool store_queue_sleep(struct store_queue *q, int64_t until_ms);

/* True once store_queue_stop() was called. */
bool store_queue_stopped(struct store_queue *q);

/* Sets the stop flag and wakes every waiting thread. Requests still queued stay and can
 * be taken. */
void store_queue_stop(struct store_queue *q);

/* Unlinks every request queued at or before cutoff_ms (INT64_MAX: all of them), and
 * every STORE_PING whatever its age (a health probe never waits for a database that is
 * down), and returns them as a list in queue order. *oldest_ms is set to when the oldest
 * request left was queued, or -1 when q is now empty. */
struct store_req *store_queue_expire(struct store_queue *q, int64_t cutoff_ms,
                                     int64_t *oldest_ms);

#endif
