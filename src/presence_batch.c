/* presence_batch.c - presence diffs merged per topic over a window, then broadcast. */
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus.h"
#include "presence_batch.h"
#include "util/thread.h"
#include "util/xmalloc.h"

struct presence_batch {
    int window_ms;
    struct bus_sink sink;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    json_t *pending; /* topic → {"joins":{…},"leaves":{…}} */
    bool stop;       /* presence_batch_stop was called: the flusher sends what is
                      * pending and ends; diffs that arrive from now on are dropped */
    pthread_t thread;
    bool started;    /* the flusher runs and has not been joined */
};

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

void presence_batch_emit(const char *topic, const char *diff, size_t len, void *arg)
{
    struct presence_batch *pb = arg;
    if (pb->window_ms <= 0) {
        bus_sink_publish_event(&pb->sink, topic, "presence_diff", diff, len, 0);
        return;
    }
    json_t *d = json_loadb(diff, len, 0, NULL);
    if (!d)
        return;
    pthread_mutex_lock(&pb->mu);
    if (!pb->stop) {
        json_t *p = json_object_get(pb->pending, topic);
        if (!p) {
            p = json_pack("{s:{},s:{}}", "joins", "leaves");
            json_object_set_new(pb->pending, topic, p);
        }
        merge_metas(json_object_get(p, "joins"), json_object_get(d, "joins"));
        merge_metas(json_object_get(p, "leaves"), json_object_get(d, "leaves"));
        pthread_cond_signal(&pb->cv);
    }
    pthread_mutex_unlock(&pb->mu);
    json_decref(d);
}

/* Broadcasts every merged diff that is waiting. */
static void flush(struct presence_batch *pb)
{
    pthread_mutex_lock(&pb->mu);
    json_t *all = pb->pending;
    pb->pending = json_object();
    pthread_mutex_unlock(&pb->mu);
    const char *topic;
    json_t *diff;
    json_object_foreach(all, topic, diff)
    {
        char *text = json_dumps(diff, JSON_COMPACT);
        if (text)
            bus_sink_publish_event(&pb->sink, topic, "presence_diff", text, strlen(text), 0);
        free(text);
    }
    json_decref(all);
}

/* The flusher: after the first pending diff, waits one window, then broadcasts
 * everything merged meanwhile. */
static void *flusher(void *arg)
{
    thread_name("rc-presence");
    struct presence_batch *pb = arg;
    for (;;) {
        pthread_mutex_lock(&pb->mu);
        while (!pb->stop && json_object_size(pb->pending) == 0)
            pthread_cond_wait(&pb->cv, &pb->mu);
        bool stop = pb->stop;
        pthread_mutex_unlock(&pb->mu);
        if (!stop) {
            struct timespec ts = {pb->window_ms / 1000, (pb->window_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
        flush(pb);
        if (stop)
            return NULL;
    }
}

int presence_batch_create(int window_ms, const struct bus_sink *sink,
                          struct presence_batch **out)
{
    struct presence_batch *pb = xcalloc(1, sizeof *pb);
    pb->window_ms = window_ms;
    pb->sink = *sink;
    pthread_mutex_init(&pb->mu, NULL);
    pthread_cond_init(&pb->cv, NULL);
    pb->pending = json_object();
    if (window_ms > 0) {
        if (pthread_create(&pb->thread, NULL, flusher, pb)) {
            presence_batch_destroy(pb);
            return RC_EIO;
        }
        pb->started = true;
    }
    *out = pb;
    return 0;
}

void presence_batch_stop(struct presence_batch *pb)
{
    if (!pb || !pb->started)
        return;
    pthread_mutex_lock(&pb->mu);
    pb->stop = true;
    pthread_cond_signal(&pb->cv);
    pthread_mutex_unlock(&pb->mu);
    pthread_join(pb->thread, NULL);
    pb->started = false;
}

void presence_batch_destroy(struct presence_batch *pb)
{
    if (!pb)
        return;
    json_decref(pb->pending);
    pthread_mutex_destroy(&pb->mu);
    pthread_cond_destroy(&pb->cv);
    free(pb);
}
