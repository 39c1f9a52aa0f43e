/* test_ratelimit.c - unit tests for src/ratelimit.c: token buckets per (user, topic) and
 * connection counters per user, through the public API. Time is passed in, never slept
 * on. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ratelimit.h"

#define N_THREADS 4
#define TAKES_PER_THREAD 1000

/* Counts the tokens granted to (user, topic) by n takes at now_ms; every refusal must
 * report retry_after (when want_retry > 0). */
static int take_n(struct ratelimit *rl, const char *user, const char *topic, int64_t now_ms, int n,
                  int want_retry)
{
    int allowed = 0;
    for (int i = 0; i < n; i++) {
        int retry = -1;
        if (ratelimit_take(rl, user, topic, now_ms, &retry)) {
            allowed++;
            assert_int_equal(retry, -1); /* untouched when allowed */
        } else if (want_retry > 0) {
            assert_int_equal(retry, want_retry);
        }
    }
    return allowed;
}

/* malloc'd string of n copies of c. */
static char *repeat_char(char c, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void create_rejects_bad_args(void **state)
{
    assert_null(ratelimit_create(0, 20));
    assert_null(ratelimit_create(-1, 20));
    assert_null(ratelimit_create(10, 0.5));
    assert_null(ratelimit_create(0.0 / 0.0, 20));
    assert_null(ratelimit_create(10, 1.0 / 0.0));
    ratelimit_destroy(NULL);
}

static void burst_at_one_instant(void **state)
{
    struct ratelimit *rl = ratelimit_create(10, 20);
    int allowed = 0, refused = 0;
    for (int i = 0; i < 50; i++) {
        int retry = -1;
        if (ratelimit_take(rl, "alice", "room:lobby", 1000, &retry)) {
            allowed++;
        } else {
            refused++;
            assert_int_equal(retry, 1);
        }
    }
    assert_int_equal(allowed, 20);
    assert_int_equal(refused, 30);
    assert_int_equal(ratelimit_size(rl), 1);
    ratelimit_destroy(rl);
}

static void refill_100ms_gives_one(void **state)
{
    struct ratelimit *rl = ratelimit_create(10, 20);
    assert_int_equal(take_n(rl, "alice", "room:lobby", 1000, 50, 1), 20);
    assert_int_equal(take_n(rl, "alice", "room:lobby", 1099, 5, 1), 0);
    assert_int_equal(take_n(rl, "alice", "room:lobby", 1100, 5, 1), 1);
    ratelimit_destroy(rl);
}

static void refill_caps_at_burst(void **state)
{
    struct ratelimit *rl = ratelimit_create(10, 20);
    assert_int_equal(take_n(rl, "alice", "room:lobby", 1000, 50, 1), 20);
    assert_int_equal(take_n(rl, "alice", "room:lobby", 3000, 50, 1), 20);
    /* Idle far longer than needed still gives only burst. */
    assert_int_equal(take_n(rl, "alice", "room:lobby", 3600000, 50, 1), 20);
    ratelimit_destroy(rl);
}

/* Many small refills summing to one token (0.1 ten times is 0.999…) still grant it. */
static void small_refills_add_up(void **state)
{
    struct ratelimit *rl = ratelimit_create(10, 1);
    assert_true(ratelimit_take(rl, "u", "t", 0, NULL));
    for (int64_t t = 10; t < 100; t += 10)
        assert_false(ratelimit_take(rl, "u", "t", t, NULL));
    assert_true(ratelimit_take(rl, "u", "t", 100, NULL));
    assert_false(ratelimit_take(rl, "u", "t", 100, NULL));
    ratelimit_destroy(rl);
}

static void pairs_independent(void **state)
{
    struct ratelimit *rl = ratelimit_create(10, 20);
    assert_int_equal(take_n(rl, "alice", "room:a", 0, 50, 1), 20);
    assert_int_equal(take_n(rl, "alice", "room:b", 0, 50, 1), 20); /* same user, other topic */
    assert_int_equal(take_n(rl, "bob", "room:a", 0, 50, 1), 20);   /* other user, same topic */
    assert_int_equal(ratelimit_size(rl), 3);
    ratelimit_destroy(rl);
}

/* With a bare "|" separator both pairs would be "a|b|c". */
static void separator_cannot_collide(void **state)
{
    struct ratelimit *rl = ratelimit_create(1, 1);
    assert_true(ratelimit_take(rl, "a|b", "c", 0, NULL));
    assert_true(ratelimit_take(rl, "a", "b|c", 0, NULL));
    assert_false(ratelimit_take(rl, "a|b", "c", 0, NULL));
    assert_false(ratelimit_take(rl, "a", "b|c", 0, NULL));
    /* A user that looks like a length prefix. */
    assert_true(ratelimit_take(rl, "1:a", "b", 0, NULL));
    assert_true(ratelimit_take(rl, "", "3:1:a|b", 0, NULL));
    assert_true(ratelimit_take(rl, "", "", 0, NULL));
    assert_int_equal(ratelimit_size(rl), 5);
    ratelimit_destroy(rl);
}

/* A key longer than the on-stack buffer takes the heap path. */
static void long_key(void **state)
{
    struct ratelimit *rl = ratelimit_create(1, 2);
    char *user = repeat_char('u', 255);
    char *topic = repeat_char('t', 4000);
    assert_int_equal(take_n(rl, user, topic, 0, 5, 1), 2);
    topic[3999] = 's';
    assert_int_equal(take_n(rl, user, topic, 0, 5, 1), 2);
    assert_int_equal(ratelimit_size(rl), 2);
    free(user);
    free(topic);
    ratelimit_destroy(rl);
}

static void retry_after_slow_rate(void **state)
{
    struct ratelimit *rl = ratelimit_create(0.5, 1);
    int retry = -1;
    assert_true(ratelimit_take(rl, "alice", "room:lobby", 0, &retry));
    assert_false(ratelimit_take(rl, "alice", "room:lobby", 0, &retry));
    assert_int_equal(retry, 2);
    /* Half a token later: one more second. */
    assert_false(ratelimit_take(rl, "alice", "room:lobby", 1000, &retry));
    assert_int_equal(retry, 1);
    /* Just short of a token still says at least 1. */
    assert_false(ratelimit_take(rl, "alice", "room:lobby", 1999, &retry));
    assert_int_equal(retry, 1);
    assert_true(ratelimit_take(rl, "alice", "room:lobby", 2000, &retry));
    /* retry_after_s may be NULL. */
    assert_false(ratelimit_take(rl, "alice", "room:lobby", 2000, NULL));
    ratelimit_destroy(rl);
}

/* A very slow rate does not overflow retry_after. */
static void retry_after_very_slow_rate(void **state)
{
    struct ratelimit *rl = ratelimit_create(1e-12, 1);
    int retry = -1;
    assert_true(ratelimit_take(rl, "u", "t", 0, &retry));
    assert_false(ratelimit_take(rl, "u", "t", 0, &retry));
    assert_true(retry > 1000000);
    ratelimit_destroy(rl);
}

static void sweep_drops_idle_full(void **state)
{
    struct ratelimit *rl = ratelimit_create(10, 20);
    assert_int_equal(ratelimit_sweep(rl, 0), 0);                  /* empty */
    assert_int_equal(take_n(rl, "idle", "room:a", 0, 1, 0), 1);   /* refills in 100 ms */
    assert_int_equal(take_n(rl, "idle2", "room:b", 0, 5, 0), 5);  /* refills in 500 ms */
    assert_int_equal(take_n(rl, "busy", "room:a", 0, 20, 0), 20); /* refills in 2 s */
    assert_int_equal(ratelimit_size(rl), 3);

    /* Nothing has refilled yet. */
    assert_int_equal(ratelimit_sweep(rl, 50), 0);
    assert_int_equal(ratelimit_size(rl), 3);

    assert_int_equal(ratelimit_sweep(rl, 500), 2);
    assert_int_equal(ratelimit_size(rl), 1);

    /* The kept bucket kept its state: 10 tokens at 1000 ms, not a fresh 20. */
    assert_int_equal(take_n(rl, "busy", "room:a", 1000, 50, 1), 10);

    /* A dropped bucket comes back full, as it would have been. */
    assert_int_equal(take_n(rl, "idle", "room:a", 1000, 50, 1), 20);

    assert_int_equal(ratelimit_sweep(rl, 100000), 2);
    assert_int_equal(ratelimit_size(rl), 0);
    ratelimit_destroy(rl);
}

static void clock_backwards(void **state)
{
    struct ratelimit *rl = ratelimit_create(10, 20);
    assert_int_equal(take_n(rl, "alice", "room:lobby", 10000, 20, 1), 20);
    /* Going back adds nothing, and does not crash. */
    assert_int_equal(take_n(rl, "alice", "room:lobby", 5000, 5, 1), 0);
    assert_int_equal(take_n(rl, "alice", "room:lobby", INT64_MIN, 5, 1), 0);
    /* Nor does coming forward again count the same time twice. */
    assert_int_equal(take_n(rl, "alice", "room:lobby", 10099, 5, 1), 0);
    assert_int_equal(take_n(rl, "alice", "room:lobby", 10100, 5, 1), 1);
    /* A sweep in the past drops nothing that is not full. */
    assert_int_equal(ratelimit_sweep(rl, 0), 0);
    assert_int_equal(ratelimit_size(rl), 1);
    /* Extreme times neither overflow nor exceed burst. */
    assert_int_equal(take_n(rl, "bob", "room:lobby", INT64_MIN, 20, 1), 20);
    assert_int_equal(take_n(rl, "bob", "room:lobby", INT64_MAX, 50, 1), 20);
    ratelimit_destroy(rl);
}

struct thread_arg {
    struct ratelimit *rl;
    int allowed;
};

/* Takes TAKES_PER_THREAD tokens from one shared key at a fixed time. */
static void *taker(void *p)
{
    struct thread_arg *a = p;
    for (int i = 0; i < TAKES_PER_THREAD; i++)
        if (ratelimit_take(a->rl, "alice", "room:lobby", 42, NULL))
            a->allowed++;
    return NULL;
}

static void threads_share_one_bucket(void **state)
{
    struct ratelimit *rl = ratelimit_create(10, 100);
    pthread_t th[N_THREADS];
    struct thread_arg args[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        args[i] = (struct thread_arg){rl, 0};
        assert_int_equal(pthread_create(&th[i], NULL, taker, &args[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < N_THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        total += args[i].allowed;
    }
    assert_int_equal(total, 100);
    assert_int_equal(ratelimit_size(rl), 1);
    ratelimit_destroy(rl);
}

/* Destroying a limiter that still holds buckets frees them (valgrind checks). */
static void destroy_with_buckets(void **state)
{
    struct ratelimit *rl = ratelimit_create(10, 20);
    char user[16];
    for (int i = 0; i < 100; i++) {
        snprintf(user, sizeof user, "user%d", i);
        assert_true(ratelimit_take(rl, user, "room:lobby", 0, NULL));
    }
    assert_int_equal(ratelimit_size(rl), 100);
    ratelimit_destroy(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(create_rejects_bad_args),  cmocka_unit_test(burst_at_one_instant),
        cmocka_unit_test(refill_100ms_gives_one),   cmocka_unit_test(refill_caps_at_burst),
        cmocka_unit_test(small_refills_add_up),     cmocka_unit_test(pairs_independent),
        cmocka_unit_test(separator_cannot_collide), cmocka_unit_test(long_key),
        cmocka_unit_test(retry_after_slow_rate),    cmocka_unit_test(retry_after_very_slow_rate),
        cmocka_unit_test(sweep_drops_idle_full),    cmocka_unit_test(clock_backwards),
        cmocka_unit_test(threads_share_one_bucket), cmocka_unit_test(destroy_with_buckets),
    };
    return cmocka_run_group_tests_name("ratelimit", tests, NULL, NULL);
}
