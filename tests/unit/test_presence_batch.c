/* test_presence_batch.c - presence diffs on their way to the node: sent at once without
 * a window; with one, merged per topic and sent by the flusher, everything pending sent
 * by stop, later diffs dropped; destroy after stop, and without it when there is no thread. */
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "bcast.h"
#include "bus.h"
#include "obuf.h"
#include "presence_batch.h"

#define MAX_SENT 16

/* What the node received: each broadcast's topic and payload (parsed), in order. */
struct node {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t n;
    char *topic[MAX_SENT];
    json_t *payload[MAX_SENT];
};

/* bus_sink.publish: records each presence_diff and drops its reference. */
static void node_publish(void *arg, struct bcast **list, size_t n)
{
    struct node *nd = arg;
    pthread_mutex_lock(&nd->mu);
    for (size_t i = 0; i < n; i++) {
        struct bcast *b = list[i];
        assert_string_equal(b->event, "presence_diff");
        json_t *frame = json_loadb((const char *)obuf_payload(b->v2), obuf_payload_len(b->v2), 0,
                                   NULL);
        assert_non_null(frame);
        assert_true(nd->n < MAX_SENT);
        nd->topic[nd->n] = strdup(b->topic);
        nd->payload[nd->n] = json_incref(json_array_get(frame, 4));
        nd->n++;
        json_decref(frame);
        bcast_unref(b);
    }
    pthread_cond_broadcast(&nd->cv);
    pthread_mutex_unlock(&nd->mu);
}

/* bus_sink.disconnect: presence batching never disconnects anyone. */
static void node_disconnect(void *arg, const char *user)
{
    fail_msg("unexpected disconnect of %s", user);
}

/* A node with nothing received, and a sink to it. */
static struct bus_sink node_init(struct node *nd)
{
    memset(nd, 0, sizeof *nd);
    pthread_mutex_init(&nd->mu, NULL);
    pthread_cond_init(&nd->cv, NULL);
    return (struct bus_sink){.publish = node_publish, .disconnect = node_disconnect, .arg = nd};
}

/* How many broadcasts the node has received. */
static size_t node_count(struct node *nd)
{
    pthread_mutex_lock(&nd->mu);
    size_t n = nd->n;
    pthread_mutex_unlock(&nd->mu);
    return n;
}

/* Waits (at most 10 s) until the node has received n broadcasts; returns how many. */
static size_t node_wait(struct node *nd, size_t n)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&nd->mu);
    while (nd->n < n && pthread_cond_timedwait(&nd->cv, &nd->mu, &until) == 0)
        ;
    size_t got = nd->n;
    pthread_mutex_unlock(&nd->mu);
    return got;
}

/* Checks that the node received exactly one diff for topic, equal to the JSON want. */
static void expect_diff(struct node *nd, const char *topic, const char *want)
{
    json_t *w = json_loads(want, 0, NULL);
    assert_non_null(w);
    size_t found = 0;
    for (size_t i = 0; i < nd->n; i++) {
        if (strcmp(nd->topic[i], topic))
            continue;
        found++;
        char *got = json_dumps(nd->payload[i], JSON_COMPACT | JSON_SORT_KEYS);
        if (!json_equal(nd->payload[i], w))
            fail_msg("%s: got %s, want %s", topic, got, want);
        free(got);
    }
    assert_int_equal(found, 1);
    json_decref(w);
}

/* Frees what the node received. */
static void node_cleanup(struct node *nd)
{
    for (size_t i = 0; i < nd->n; i++) {
        free(nd->topic[i]);
        json_decref(nd->payload[i]);
    }
    pthread_mutex_destroy(&nd->mu);
    pthread_cond_destroy(&nd->cv);
}

/* Emits a NUL-terminated diff. */
static void emit(struct presence_batch *pb, const char *topic, const char *diff)
{
    presence_batch_emit(topic, diff, strlen(diff), pb);
}

/* A node and a batcher that sends to it. */
struct fx {
    struct node nd;
    struct presence_batch *pb;
};

/* Starts a batcher with window_ms for a node with nothing received. */
static void fx_start(struct fx *x, int window_ms)
{
    struct bus_sink sink = node_init(&x->nd);
    x->pb = NULL;
    assert_int_equal(presence_batch_create(window_ms, &sink, &x->pb), 0);
}

/* Destroys the batcher (stopped or not) and frees what the node received. */
static void fx_finish(struct fx *x)
{
    presence_batch_destroy(x->pb);
    node_cleanup(&x->nd);
}

static const char join_a[] = "{\"joins\":{\"a\":{\"metas\":[{\"phx_ref\":\"1\"}]}},\"leaves\":{}}";
static const char join_a2[] = "{\"joins\":{\"a\":{\"metas\":[{\"phx_ref\":\"2\"}]}},\"leaves\":{}}";
static const char leave_b[] = "{\"joins\":{},\"leaves\":{\"b\":{\"metas\":[{\"phx_ref\":\"3\"}]}}}";

/* Stops x's batcher and checks that the node has want diffs, and still has after a later
 * diff and a second stop. */
static void stop_expect(struct fx *x, size_t want)
{
    presence_batch_stop(x->pb);
    assert_int_equal(node_count(&x->nd), want);
    emit(x->pb, "presence:r", leave_b);
    presence_batch_stop(x->pb);
    assert_int_equal(node_count(&x->nd), want);
}

/* Without a window each diff goes out at once, as it came, and there is no thread:
 * destroy without stop is enough. */
static void no_window_sends_at_once(void **state)
{
    struct fx x;
    fx_start(&x, 0);
    emit(x.pb, "presence:r", join_a);
    assert_int_equal(node_count(&x.nd), 1);
    emit(x.pb, "presence:s", leave_b);
    assert_int_equal(node_count(&x.nd), 2);
    expect_diff(&x.nd, "presence:r", join_a);
    expect_diff(&x.nd, "presence:s", leave_b);
    fx_finish(&x);
}

/* With a window the flusher sends one merged diff per topic: metas of one key join up,
 * joins and leaves stay apart. */
static void window_merges_per_topic(void **state)
{
    struct fx x;
    fx_start(&x, 200);
    emit(x.pb, "presence:r", join_a);
    emit(x.pb, "presence:r", join_a2);
    emit(x.pb, "presence:r", leave_b);
    emit(x.pb, "presence:s", leave_b);
    assert_int_equal(node_wait(&x.nd, 2), 2);
    expect_diff(&x.nd, "presence:r",
                "{\"joins\":{\"a\":{\"metas\":[{\"phx_ref\":\"1\"},{\"phx_ref\":\"2\"}]}},"
                "\"leaves\":{\"b\":{\"metas\":[{\"phx_ref\":\"3\"}]}}}");
    expect_diff(&x.nd, "presence:s", leave_b);
    stop_expect(&x, 2);
    fx_finish(&x);
}

/* Stop with nothing pending ends the flusher at once, whatever the window. */
static void stop_idle_then_drops(void **state)
{
    struct fx x;
    fx_start(&x, 60000);
    stop_expect(&x, 0);
    fx_finish(&x);
}

/* Stop sends what is pending before it returns. */
static void stop_sends_pending(void **state)
{
    struct fx x;
    fx_start(&x, 200);
    emit(x.pb, "presence:r", join_a);
    stop_expect(&x, 1);
    expect_diff(&x.nd, "presence:r", join_a);
    fx_finish(&x);
}

/* A diff that is not JSON is dropped; NULL is accepted by stop and destroy. */
static void bad_diff_and_null(void **state)
{
    struct fx x;
    fx_start(&x, 200);
    emit(x.pb, "presence:r", "{not json");
    stop_expect(&x, 0);
    fx_finish(&x);
    presence_batch_stop(NULL);
    presence_batch_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(no_window_sends_at_once),
        cmocka_unit_test(window_merges_per_topic),
        cmocka_unit_test(stop_idle_then_drops),
        cmocka_unit_test(stop_sends_pending),
        cmocka_unit_test(bad_diff_and_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
