/* ratelimit.c - token buckets per (user, topic), behind one mutex. Keys are built outside the lock, so the critical section is a hash lookup and a
 * few floating-point operations (plus two small allocations when a bucket is new). */
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ratelimit.h"
#include "util/hmap.h"
#include "util/xmalloc.h"

/* Keys up to this size are built on the stack; longer ones are try-allocated. */
#define KEY_STACK 512

/* Refill arithmetic is in doubles; a bucket that should hold exactly one token may hold
 * 0.9999999999 after many small refills, and must still grant it. */
#define TOKEN_EPSILON 1e-9

struct bucket {
    double tokens;
    int64_t last_ms;           /* time of the last refill; never moves backwards */
    struct bucket *sweep_next; /* ratelimit_sweep's list of buckets to drop */
    const char *sweep_key;     /* the map's copy of the key, valid while on the sweep list */
};

struct ratelimit {
    pthread_mutex_t mu;
    double rate;         /* tokens per second */
    double burst;        /* bucket size */
    struct hmap buckets; /* "<strlen(user)>:<user>|<topic>" -> struct bucket */
};


/* ---- ratelimit ------------------------------------------------------------------ */

struct ratelimit *ratelimit_create(double rate, double burst)
{
    /* Written so that NaN fails too. */
    if (!(isfinite(rate) && rate > 0) || !(isfinite(burst) && burst >= 1))
        return NULL;
    struct ratelimit *rl = xcalloc(1, sizeof *rl);
    pthread_mutex_init(&rl->mu, NULL);
    rl->rate = rate;
    rl->burst = burst;
    rl->buckets = (struct hmap)HMAP_INIT;
    return rl;
}

/* hmap_each callback: frees one bucket. */
static void free_bucket(const char *key, void *value, void *arg)
{
    free(value);
}

void ratelimit_destroy(struct ratelimit *rl)
{
    if (!rl)
        return;
    hmap_each(&rl->buckets, free_bucket, NULL);
    hmap_cleanup(&rl->buckets);
    pthread_mutex_destroy(&rl->mu);
    free(rl);
}

/* Writes the key of (user, topic) into buf (size bytes) or, if it does not fit, into a
 * malloc'd buffer; returns the key (NULL on out-of-memory) and its length in *klen. The
 * user is length-prefixed, so no user id can make two pairs share a key. */
static char *make_key(const char *user, const char *topic, char *buf, size_t size, size_t *klen)
{
    size_t ulen = strlen(user), tlen = strlen(topic);
    char prefix[32];
    size_t plen = (size_t)snprintf(prefix, sizeof prefix, "%zu:", ulen);
    size_t n = plen + ulen + 1 + tlen;
    char *key = n <= size ? buf : malloc(n);
    if (!key)
        return NULL;
    memcpy(key, prefix, plen);
    memcpy(key + plen, user, ulen);
    key[plen + ulen] = '|';
    memcpy(key + plen + ulen + 1, topic, tlen);
    *klen = n;
    return key;
}

/* Adds the tokens earned since b->last_ms; a clock that went backwards earns nothing. */
static void refill(const struct ratelimit *rl, struct bucket *b, int64_t now_ms)
{
    if (now_ms <= b->last_ms)
        return;
    /* Subtracting in double: extreme times must not overflow int64_t. */
    double t = b->tokens + rl->rate * ((double)now_ms - (double)b->last_ms) / 1000.0;
    b->tokens = t < rl->burst ? t : rl->burst;
    b->last_ms = now_ms;
}

/* Whole seconds until a bucket holding tokens (< 1) has one, at least 1. */
static int retry_after(const struct ratelimit *rl, double tokens)
{
    double s = ceil((1.0 - tokens) / rl->rate);
    if (!(s >= 1))
        return 1;
    return s < INT_MAX ? (int)s : INT_MAX;
}

bool ratelimit_take(struct ratelimit *rl, const char *user, const char *topic, int64_t now_ms,
                    int *retry_after_s)
{
    char buf[KEY_STACK];
    size_t klen = 0;
    char *key = make_key(user, topic, buf, sizeof buf, &klen);
    if (!key) {
        if (retry_after_s)
            *retry_after_s = 1;
        return false;
    }
    bool ok;
    int wait = 0;

    pthread_mutex_lock(&rl->mu);
    struct bucket *b = hmap_get(&rl->buckets, key, klen);
    if (b) {
        refill(rl, b, now_ms);
    } else {
        /* Allocating under the lock only on a miss: hmap_put allocates its entry there
         * anyway, and a hit (the common case) then costs no allocation at all. */
        b = xmalloc(sizeof *b);
        b->tokens = rl->burst;
        b->last_ms = now_ms;
        hmap_put(&rl->buckets, key, klen, b);
    }
    ok = b->tokens >= 1.0 - TOKEN_EPSILON;
    if (ok)
        b->tokens = b->tokens > 1.0 ? b->tokens - 1.0 : 0.0;
    else
        wait = retry_after(rl, b->tokens);
    pthread_mutex_unlock(&rl->mu);

    if (key != buf)
        free(key);
    if (!ok && retry_after_s)
        *retry_after_s = wait;
    return ok;
}

struct sweep_ctx {
    const struct ratelimit *rl;
    int64_t now_ms;
    struct bucket *list;
};

/* hmap_each callback: lists the buckets that are full at ctx->now_ms. */
static void sweep_one(const char *key, void *value, void *arg)
{
    struct sweep_ctx *ctx = arg;
    struct bucket *b = value;
    refill(ctx->rl, b, ctx->now_ms);
    if (b->tokens >= ctx->rl->burst) {
        b->sweep_key = key;
        b->sweep_next = ctx->list;
        ctx->list = b;
    }
}

size_t ratelimit_sweep(struct ratelimit *rl, int64_t now_ms)
{
    struct sweep_ctx ctx = {rl, now_ms, NULL};
    size_t n = 0;

    pthread_mutex_lock(&rl->mu);
    hmap_each(&rl->buckets, sweep_one, &ctx);
    /* hmap_each forbids changing the map, so delete afterwards. hmap_del frees only the
     * entry it removes and never rehashes, so the other listed keys stay valid. Keys hold
     * no NUL (they are built from C strings), so strlen gives their length. */
    for (struct bucket *b = ctx.list; b; n++) {
        struct bucket *next = b->sweep_next;
        hmap_del(&rl->buckets, b->sweep_key, strlen(b->sweep_key));
        b = next;
    }
    pthread_mutex_unlock(&rl->mu);

    /* The buckets are out of the map: free them without the lock. */
    for (struct bucket *b = ctx.list; b;) {
        struct bucket *next = b->sweep_next;
        free(b);
        b = next;
    }
    return n;
}

size_t ratelimit_size(struct ratelimit *rl)
{
    pthread_mutex_lock(&rl->mu);
    size_t n = rl->buckets.count;
    pthread_mutex_unlock(&rl->mu);
    return n;
}
