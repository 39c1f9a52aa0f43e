/* user_counter.c - open sockets per user, behind one mutex; a count is stored in the map's
 * value pointer (never 0: an entry is removed when its count reaches 0). */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "user_counter.h"
#include "util/hmap.h"
#include "util/xmalloc.h"

struct user_counter {
    pthread_mutex_t mu;
    struct hmap counts; /* user -> count */
};

struct user_counter *user_counter_create(void)
{
    struct user_counter *uc = xcalloc(1, sizeof *uc);
    pthread_mutex_init(&uc->mu, NULL);
    uc->counts = (struct hmap)HMAP_INIT;
    return uc;
}

void user_counter_destroy(struct user_counter *uc)
{
    if (!uc)
        return;
    hmap_cleanup(&uc->counts); /* the values are counts, not allocations */
    pthread_mutex_destroy(&uc->mu);
    free(uc);
}

bool user_counter_acquire(struct user_counter *uc, const char *user, long max)
{
    size_t klen = strlen(user);
    bool ok;

    pthread_mutex_lock(&uc->mu);
    long n = (long)(intptr_t)hmap_get(&uc->counts, user, klen);
    ok = n < max;
    if (ok)
        hmap_put(&uc->counts, user, klen, (void *)(intptr_t)(n + 1));
    pthread_mutex_unlock(&uc->mu);
    return ok;
}

void user_counter_release(struct user_counter *uc, const char *user)
{
    if (!uc)
        return;
    size_t klen = strlen(user);

    pthread_mutex_lock(&uc->mu);
    long n = (long)(intptr_t)hmap_get(&uc->counts, user, klen);
    if (n > 1)
        hmap_put(&uc->counts, user, klen, (void *)(intptr_t)(n - 1));
    else if (n == 1)
        hmap_del(&uc->counts, user, klen);
    pthread_mutex_unlock(&uc->mu);
}

long user_counter_get(struct user_counter *uc, const char *user)
{
    pthread_mutex_lock(&uc->mu);
    long n = (long)(intptr_t)hmap_get(&uc->counts, user, strlen(user));
    pthread_mutex_unlock(&uc->mu);
    return n;
}

size_t user_counter_size(struct user_counter *uc)
{
    pthread_mutex_lock(&uc->mu);
    size_t n = uc->counts.count;
    pthread_mutex_unlock(&uc->mu);
    return n;
}
