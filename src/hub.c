/* hub.c - the worker pool and the fan-out of broadcasts and disconnects to it. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bcast.h"
#include "channel.h"
#include "config.h"
#include "hub.h"
#include "ratelimit.h"
#include "user_counter.h"
#include "util/log.h"
#include "util/xmalloc.h"
#include "worker.h"

struct hub {
    struct worker **workers;
    int nworkers;
    struct worker_env env;
    pthread_rwlock_t post_lock; /* guards closed against posts in flight */
    bool closed;                /* workers stopped: hub_post_to_worker refuses */
};

/* A broadcast for one worker's subscribers. */
struct bcast_item {
    struct inbox_item it;
    struct bcast *b;
};

/* inbox_item.run: deliver to this worker's subscribers of the topic. */
static void run_bcast(struct worker *w, struct inbox_item *it)
{
    struct bcast_item *bi = (struct bcast_item *)it;
    chan_index_deliver(w->topics, bi->b);
    bcast_unref(bi->b);
    free(bi);
}

/* inbox_item.drop for broadcasts. */
static void drop_bcast(struct worker *w, struct inbox_item *it)
{
    struct bcast_item *bi = (struct bcast_item *)it;
    bcast_unref(bi->b);
    free(bi);
}

/* A user whose sockets on one worker close. */
struct disconnect_item {
    struct inbox_item it;
    char user_id[];
};

/* inbox_item.run: close every socket of the user on this worker. */
static void run_disconnect(struct worker *w, struct inbox_item *it)
{
    const char *user = ((struct disconnect_item *)it)->user_id;
    /* A close may release its conn at once (a long-poll session), which unlinks it. */
    for (struct conn *c = w->conns.all, *nx; c; c = nx) {
        nx = c->_next;
        if (!c->closed && !strcmp(c->user_id, user)) {
            log_info("disconnect", "conn=%llu user=%s", (unsigned long long)c->id, log_v(user));
            c->ops->close(c, 1001, "disconnected");
        }
    }
    free(it);
}

void hub_publish(struct hub *h, struct bcast **list, size_t n)
{
    if (!n)
        return;
    if (h->nworkers > 1)
        for (size_t i = 0; i < n; i++)
            bcast_ref(list[i], (unsigned)h->nworkers - 1);
    /* One inbox append per worker for the whole list. */
    for (int w = 0; w < h->nworkers; w++) {
        struct inbox_item *head = NULL, *tail = NULL;
        for (size_t i = 0; i < n; i++) {
            struct bcast_item *bi = xmalloc(sizeof *bi);
            bi->it.run = run_bcast;
            bi->it.drop = drop_bcast;
            bi->it.next = NULL;
            bi->b = list[i];
            if (tail)
                tail->next = &bi->it;
            else
                head = &bi->it;
            tail = &bi->it;
        }
        worker_post(h->workers[w], head, tail);
    }
}

void hub_disconnect_local(struct hub *h, const char *user_id)
{
    size_t len = strlen(user_id) + 1;
    for (int w = 0; w < h->nworkers; w++) {
        struct disconnect_item *it = xcalloc(1, sizeof *it + len);
        it->it.run = run_disconnect;
        it->it.drop = worker_item_free;
        memcpy(it->user_id, user_id, len);
        worker_post(h->workers[w], &it->it, &it->it);
    }
}

/* bus_sink.publish */
static void sink_publish(void *arg, struct bcast **list, size_t n)
{
    hub_publish(arg, list, n);
}

/* bus_sink.disconnect */
static void sink_disconnect(void *arg, const char *user)
{
    hub_disconnect_local(arg, user);
}

struct bus_sink hub_sink(struct hub *h)
{
    return (struct bus_sink){.publish = sink_publish, .disconnect = sink_disconnect, .arg = h};
}

int hub_worker_count(struct hub *h)
{
    return h->nworkers;
}

int hub_pick_worker(struct hub *h)
{
    int best = 0;
    for (int i = 1; i < h->nworkers; i++)
        if (atomic_load(&h->workers[i]->conns.n) < atomic_load(&h->workers[best]->conns.n))
            best = i;
    return best;
}

bool hub_post_to_worker(struct hub *h, int w, struct inbox_item *it)
{
    pthread_rwlock_rdlock(&h->post_lock); /* posters never wait for each other */
    bool open = !h->closed;
    if (open)
        worker_post(h->workers[w], it, it);
    pthread_rwlock_unlock(&h->post_lock);
    return open;
}

/* The rate limiter's periodic sweep (worker 0's hook). */
static void sweep_rate(void *arg, int64_t now_ms)
{
    ratelimit_sweep(arg, now_ms);
}

struct hub *hub_create(const struct config *cfg)
{
    struct hub *h = xcalloc(1, sizeof *h);
    long n = cfg->workers;
    if (n <= 0)
        n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n <= 0)
        n = 1;
    if (n > 64)
        n = 64;
    h->nworkers = (int)n;
    h->env.cfg = cfg;
    h->env.rl = cfg->rate_limit > 0
                    ? ratelimit_create((double)cfg->rate_limit, (double)cfg->rate_burst)
                    : NULL;
    h->env.uc = user_counter_create();
    pthread_rwlock_init(&h->post_lock, NULL);
    /* Timers run often enough for the idle timeout, at most every second. */
    int64_t tick_ms = cfg->idle_timeout * 1000 / 4;
    if (tick_ms > 1000)
        tick_ms = 1000;
    if (tick_ms < 50)
        tick_ms = 50;
    h->workers = xcalloc((size_t)n, sizeof *h->workers);
    for (int i = 0; i < h->nworkers; i++) {
        h->workers[i] = worker_create(i, &h->env, tick_ms);
        h->workers[i]->topics = chan_index_create();
    }
    if (h->env.rl) {
        h->workers[0]->sweep = sweep_rate;
        h->workers[0]->sweep_arg = h->env.rl;
    }
    return h;
}

struct worker_env *hub_env(struct hub *h)
{
    return &h->env;
}

int hub_start(struct hub *h)
{
    for (int i = 0; i < h->nworkers; i++) {
        if (worker_start(h->workers[i])) {
            log_error("cannot start an I/O worker", "worker=%d", i);
            return RC_EIO;
        }
    }
    return 0;
}

void hub_shutdown(struct hub *h)
{
    if (!h)
        return;
    for (int i = 0; i < h->nworkers; i++)
        worker_shutdown(h->workers[i]);
    pthread_rwlock_wrlock(&h->post_lock);
    h->closed = true;
    pthread_rwlock_unlock(&h->post_lock);
    for (int i = 0; i < h->nworkers; i++)
        worker_drain(h->workers[i]);
}

void hub_free(struct hub *h)
{
    if (!h)
        return;
    for (int i = 0; i < h->nworkers; i++) {
        struct chan_index *topics = h->workers[i]->topics;
        worker_free(h->workers[i]);
        chan_index_destroy(topics);
    }
    free(h->workers);
    ratelimit_destroy(h->env.rl);
    pthread_rwlock_destroy(&h->post_lock);
    user_counter_destroy(h->env.uc);
    free(h);
}
