/* hub.c - workers, fan-out between them, and the local bus (committed messages from
 * the store become room broadcasts). */
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "hub.h"
#include "bus.h"
#include "metrics.h"
#include "util/clock.h"
#include "obuf.h"
#include "presence.h"
#include "ratelimit.h"
#include "store.h"
#include "util/log.h"
#include "util/thread.h"
#include "util/sbuf.h"
#include "util/xmalloc.h"
#include "worker.h"

struct hub {
    struct worker **workers;
    int nworkers;
    struct store *store;
    const struct config *cfg;
    struct ratelimit *rl;     /* NULL when --rate-limit 0 */
    struct user_counter *uc;  /* open sockets per user */
    struct presence *presence;
    /* presence diffs waiting to be merged and broadcast (--presence-batch-ms) */
    pthread_mutex_t pmu;
    pthread_cond_t pcv;
    json_t *pending; /* topic → {"joins":{…},"leaves":{…}} */
    bool pstop;
    pthread_t pthread;
    bool pthread_started;
    pthread_rwlock_t post_lock; /* guards closed against posts in flight */
    bool closed; /* workers stopped: hub_post_to_worker refuses */
    struct bus *bus; /* PostgreSQL mode: broadcasts and disconnects go through it */
    char node_id[96];
};

struct presence *hub_presence(struct hub *h)
{
    return h->presence;
}

/* Appends the metas of src[key] to dst[key] for every key (both {"metas":[…]} maps). */
static void merge_metas(json_t *dst, json_t *src)
{
    const char *key;
    json_t *v;
    json_object_foreach(src, key, v)
    {
        json_t *metas = json_object_get(v, "metas");
        json_t *d = json_object_get(dst, key);
        if (!d) {
            d = json_pack("{s:[]}", "metas");
            json_object_set_new(dst, key, d);
        }
        json_array_extend(json_object_get(d, "metas"), metas);
    }
}

/* Presence emit callback (called under the presence lock, in change order). Without
 * batching the diff is broadcast at once; with it, diffs of one topic are merged —
 * joins with joins, leaves with leaves, which phoenix.js applies joins first, so a meta
 * that came and went inside one window nets out — and broadcast by the flusher. */
static void emit_diff(const char *topic, const char *diff, size_t len, void *arg)
{
    struct hub *h = arg;
    if (h->cfg->presence_batch_ms <= 0) {
        /* Local only: other nodes compute their own diffs from the bus's changes. */
        hub_broadcast_local(h, topic, "presence_diff", diff, len, 0);
        return;
    }
    json_t *d = json_loadb(diff, len, 0, NULL);
    if (!d)
        return;
    pthread_mutex_lock(&h->pmu);
    json_t *p = json_object_get(h->pending, topic);
    if (!p) {
        p = json_pack("{s:{},s:{}}", "joins", "leaves");
        json_object_set_new(h->pending, topic, p);
    }
    merge_metas(json_object_get(p, "joins"), json_object_get(d, "joins"));
    merge_metas(json_object_get(p, "leaves"), json_object_get(d, "leaves"));
    pthread_cond_signal(&h->pcv);
    pthread_mutex_unlock(&h->pmu);
    json_decref(d);
}

/* Broadcasts every merged diff that is waiting. */
static void flush_presence(struct hub *h)
{
    pthread_mutex_lock(&h->pmu);
    json_t *all = h->pending;
    h->pending = json_object();
    pthread_mutex_unlock(&h->pmu);
    const char *topic;
    json_t *diff;
    json_object_foreach(all, topic, diff)
    {
        char *text = json_dumps(diff, JSON_COMPACT);
        if (text)
            hub_broadcast_local(h, topic, "presence_diff", text, strlen(text), 0);
        free(text);
    }
    json_decref(all);
}

/* The presence flusher: after the first pending diff, waits one batch window, then
 * broadcasts everything merged meanwhile. */
static void *presence_flusher(void *arg)
{
    thread_name("rc-presence");
    struct hub *h = arg;
    for (;;) {
        pthread_mutex_lock(&h->pmu);
        while (!h->pstop && json_object_size(h->pending) == 0)
            pthread_cond_wait(&h->pcv, &h->pmu);
        bool stop = h->pstop;
        pthread_mutex_unlock(&h->pmu);
        if (!stop) {
            struct timespec ts = {h->cfg->presence_batch_ms / 1000,
                                  (h->cfg->presence_batch_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
        flush_presence(h);
        if (stop)
            return NULL;
    }
}

bool hub_rate_take(struct hub *h, const char *user, const char *topic, int64_t now_ms,
                   int *retry_after_s)
{
    return !h || !h->rl || ratelimit_take(h->rl, user, topic, now_ms, retry_after_s);
}

void hub_rate_sweep(struct hub *h, int64_t now_ms)
{
    if (h->rl)
        ratelimit_sweep(h->rl, now_ms);
}

bool hub_acquire_user(struct hub *h, const char *user)
{
    return user_counter_acquire(h->uc, user, h->cfg->max_conns_per_user);
}

void hub_release_user(struct hub *h, const char *user)
{
    if (h)
        user_counter_release(h->uc, user);
}

struct bcast *bcast_create(const char *topic, const char *event, const char *payload,
                           size_t payload_len, uint64_t exclude, int64_t seq)
{
    struct bcast *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    atomic_init(&b->refs, 1);
    b->topic_len = strlen(topic);
    b->topic = xstrndup(topic, b->topic_len);
    b->event = xstrdup(event);
    b->exclude = exclude;
    b->seq = seq;
    struct sbuf s = SBUF_INIT;
    codec_encode(CODEC_V2, &s, NULL, NULL, topic, b->topic_len, event, payload, payload_len);
    b->v2 = obuf_create(WS_OP_TEXT, s.data, s.len);
    sbuf_reset(&s);
    codec_encode(CODEC_V1, &s, NULL, NULL, topic, b->topic_len, event, payload, payload_len);
    b->v1 = obuf_create(WS_OP_TEXT, s.data, s.len);
    sbuf_cleanup(&s);
    if (!b->v1 || !b->v2) {
        bcast_unref(b);
        return NULL;
    }
    return b;
}

void bcast_unref(struct bcast *b)
{
    if (!b || atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
        return;
    obuf_unref(b->v1);
    obuf_unref(b->v2);
    free(b->topic);
    free(b->event);
    free(b);
}

/* Posts a list of broadcasts (each already holding one reference per worker). */
static void post_all(struct hub *h, struct bcast **list, size_t n)
{
    for (int w = 0; w < h->nworkers; w++) {
        struct inbox_item *head = NULL, *tail = NULL;
        for (size_t i = 0; i < n; i++) {
            struct inbox_item *it = xmalloc(sizeof *it);
            it->kind = IN_BCAST;
            it->next = NULL;
            it->u.bcast = list[i];
            if (tail)
                tail->next = it;
            else
                head = it;
            tail = it;
        }
        if (head)
            worker_post(h->workers[w], head, tail);
    }
}

void hub_publish(struct hub *h, struct bcast *b)
{
    if (!b)
        return;
    metrics_broadcast();
    if (h->nworkers > 1)
        atomic_fetch_add(&b->refs, (unsigned)h->nworkers - 1);
    post_all(h, &b, 1);
}

void hub_broadcast_local(struct hub *h, const char *topic, const char *event,
                         const char *payload, size_t payload_len, uint64_t exclude)
{
    hub_publish(h, bcast_create(topic, event, payload, payload_len, exclude, 0));
}

void hub_broadcast(struct hub *h, const char *topic, const char *event, const char *payload,
                   size_t payload_len, uint64_t exclude)
{
    if (h->bus)
        bus_broadcast(h->bus, topic, event, payload, payload_len, exclude);
    else
        hub_broadcast_local(h, topic, event, payload, payload_len, exclude);
}

void hub_disconnect_user(struct hub *h, const char *user_id)
{
    if (h->bus)
        bus_disconnect_user(h->bus, user_id);
    else
        hub_disconnect_local(h, user_id);
}

void hub_set_bus(struct hub *h, struct bus *b)
{
    h->bus = b;
}

struct bus *hub_bus(struct hub *h)
{
    return h->bus;
}

const char *hub_node_id(struct hub *h)
{
    return h->node_id;
}

void hub_disconnect_local(struct hub *h, const char *user_id)
{
    for (int w = 0; w < h->nworkers; w++) {
        struct inbox_item *it = xcalloc(1, sizeof *it);
        it->kind = IN_DISCONNECT;
        it->u.user_id = xstrdup(user_id);
        worker_post(h->workers[w], it, it);
    }
}

/* Store listener (writer thread): every committed message becomes a room broadcast,
 * encoded once, posted to every worker in one inbox append per worker. */
void hub_on_messages(const struct store_msg *msgs, size_t n, void *arg)
{
    struct hub *h = arg;
    struct bcast **list = xmalloc(n * sizeof *list);
    size_t k = 0;
    struct sbuf topic = SBUF_INIT, payload = SBUF_INIT;
    for (size_t i = 0; i < n; i++) {
        sbuf_reset(&topic);
        sbuf_reset(&payload);
        sbuf_adds(&topic, "room:");
        sbuf_adds(&topic, msgs[i].room_id);
        store_msg_append_json(&payload, &msgs[i]);
        struct bcast *b = bcast_create(topic.data, "new_message", payload.data, payload.len, 0,
                                       msgs[i].seq);
        if (!b) {
            log_error("out of memory building a broadcast", "topic=%s seq=%lld", log_v(topic.data),
                      (long long)msgs[i].seq);
            continue;
        }
        if (h->nworkers > 1)
            atomic_fetch_add(&b->refs, (unsigned)h->nworkers - 1);
        metrics_broadcast();
        list[k++] = b;
    }
    post_all(h, list, k);
    sbuf_cleanup(&topic);
    sbuf_cleanup(&payload);
    free(list);
}

/* Store listener for notifications: new_notification to notifications:<user>. */
void hub_on_notifications(const struct store_notif *ns, size_t n, void *arg)
{
    struct hub *h = arg;
    struct sbuf topic = SBUF_INIT, payload = SBUF_INIT;
    for (size_t i = 0; i < n; i++) {
        sbuf_reset(&topic);
        sbuf_reset(&payload);
        sbuf_adds(&topic, "notifications:");
        sbuf_adds(&topic, ns[i].user_id);
        store_notif_append_json(&payload, &ns[i]);
        hub_publish(h, bcast_create(topic.data, "new_notification", payload.data, payload.len, 0,
                                    ns[i].id));
    }
    sbuf_cleanup(&topic);
    sbuf_cleanup(&payload);
}

/* Store listener for document operations: document_updated to document:<id>. */
void hub_on_docops(const struct store_docop *ops, size_t n, void *arg)
{
    struct hub *h = arg;
    struct sbuf topic = SBUF_INIT, payload = SBUF_INIT;
    for (size_t i = 0; i < n; i++) {
        sbuf_reset(&topic);
        sbuf_reset(&payload);
        sbuf_adds(&topic, "document:");
        sbuf_adds(&topic, ops[i].room_id);
        store_docop_append_json(&payload, &ops[i]);
        hub_publish(h, bcast_create(topic.data, "document_updated", payload.data, payload.len, 0,
                                    ops[i].seq));
    }
    sbuf_cleanup(&topic);
    sbuf_cleanup(&payload);
}

int hub_worker_count(struct hub *h)
{
    return h->nworkers;
}

int hub_pick_worker(struct hub *h)
{
    int best = 0;
    for (int i = 1; i < h->nworkers; i++)
        if (atomic_load(&h->workers[i]->nconns) < atomic_load(&h->workers[best]->nconns))
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

void hub_accept_ws(struct hub *h, int fd, const uint8_t *extra, size_t extra_len,
                   char *user_id, enum codec_vsn vsn)
{
    struct inbox_item *it = xcalloc(1, sizeof *it);
    it->kind = IN_WS;
    it->u.ws.fd = fd;
    if (extra_len) {
        it->u.ws.extra = xmalloc(extra_len);
        memcpy(it->u.ws.extra, extra, extra_len);
        it->u.ws.extra_len = extra_len;
    }
    it->u.ws.user_id = user_id;
    it->u.ws.vsn = vsn;
    if (!hub_post_to_worker(h, hub_pick_worker(h), it)) {
        close(fd);
        hub_release_user(h, user_id);
        free(user_id);
        free(it->u.ws.extra);
        free(it);
    }
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
    h->cfg = cfg;
    h->rl = cfg->rate_limit > 0 ? ratelimit_create((double)cfg->rate_limit, (double)cfg->rate_burst)
                                : NULL;
    h->uc = user_counter_create();
    char host[32] = "node";
    gethostname(host, sizeof host - 1);
    uint64_t rnd = (uint64_t)clock_mono_us() ^ ((uint64_t)getpid() << 32);
    snprintf(h->node_id, sizeof h->node_id, "%s-%d-%llx", host, (int)getpid(),
             (unsigned long long)(rnd & 0xffffff));
    h->presence = presence_create(h->node_id, emit_diff, h);
    pthread_mutex_init(&h->pmu, NULL);
    pthread_rwlock_init(&h->post_lock, NULL);
    pthread_cond_init(&h->pcv, NULL);
    h->pending = json_object();
    h->workers = xcalloc((size_t)n, sizeof *h->workers);
    for (int i = 0; i < h->nworkers; i++)
        h->workers[i] = worker_create(i, h, cfg, NULL);
    return h;
}

int hub_start(struct hub *h, struct store *store)
{
    h->store = store;
    if (h->cfg->presence_batch_ms > 0) {
        if (pthread_create(&h->pthread, NULL, presence_flusher, h))
            return RC_EIO;
        h->pthread_started = true;
    }
    for (int i = 0; i < h->nworkers; i++) {
        h->workers[i]->store = store;
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
    if (h->pthread_started) {
        pthread_mutex_lock(&h->pmu);
        h->pstop = true;
        pthread_cond_signal(&h->pcv);
        pthread_mutex_unlock(&h->pmu);
        pthread_join(h->pthread, NULL);
        h->pthread_started = false;
    }
    for (int i = 0; i < h->nworkers; i++)
        worker_shutdown(h->workers[i]);
    pthread_rwlock_wrlock(&h->post_lock);
    h->closed = true;
    pthread_rwlock_unlock(&h->post_lock);
    /* Requests that reached a worker's inbox after it stopped are answered now, so that
     * the HTTP front can stop. */
    for (int i = 0; i < h->nworkers; i++)
        worker_drain_requests(h->workers[i]);
}

void hub_free(struct hub *h)
{
    if (!h)
        return;
    for (int i = 0; i < h->nworkers; i++)
        worker_free(h->workers[i]);
    free(h->workers);
    ratelimit_destroy(h->rl);
    presence_destroy(h->presence);
    json_decref(h->pending);
    pthread_mutex_destroy(&h->pmu);
    pthread_rwlock_destroy(&h->post_lock);
    pthread_cond_destroy(&h->pcv);
    user_counter_destroy(h->uc);
    free(h);
}

void hub_get_stats(struct hub *h, struct hub_stats *out)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; i < h->nworkers; i++)
        out->sockets_open += atomic_load(&h->workers[i]->nconns);
}
