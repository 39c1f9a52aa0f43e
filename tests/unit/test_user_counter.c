/* test_user_counter.c - open sockets per user: the limit, release, entries that go at
 * zero, and threads sharing one counter. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "user_counter.h"

#define N_THREADS 4
#define TAKES_PER_THREAD 1000

/* NULL is accepted where the header says so. */
static void null_accepted(void **state)
{
    user_counter_destroy(NULL);
    user_counter_release(NULL, "alice");
}

static void user_counter_limits(void **state)
{
    struct user_counter *uc = user_counter_create();
    assert_int_equal(user_counter_get(uc, "alice"), 0);
    assert_int_equal(user_counter_size(uc), 0);

    assert_true(user_counter_acquire(uc, "alice", 3));
    assert_true(user_counter_acquire(uc, "alice", 3));
    assert_true(user_counter_acquire(uc, "alice", 3));
    assert_false(user_counter_acquire(uc, "alice", 3));
    assert_int_equal(user_counter_get(uc, "alice"), 3);

    /* Other users are counted apart. */
    assert_true(user_counter_acquire(uc, "bob", 3));
    assert_int_equal(user_counter_get(uc, "bob"), 1);
    assert_int_equal(user_counter_size(uc), 2);

    user_counter_release(uc, "alice");
    assert_int_equal(user_counter_get(uc, "alice"), 2);
    assert_true(user_counter_acquire(uc, "alice", 3));
    assert_false(user_counter_acquire(uc, "alice", 3));

    user_counter_release(uc, "alice");
    user_counter_release(uc, "alice");
    user_counter_release(uc, "alice");
    assert_int_equal(user_counter_get(uc, "alice"), 0);
    assert_int_equal(user_counter_size(uc), 1); /* alice's entry is gone at 0 */

    /* Releasing a user with no count does nothing. */
    user_counter_release(uc, "alice");
    user_counter_release(uc, "carol");
    assert_int_equal(user_counter_get(uc, "alice"), 0);

    user_counter_release(uc, "bob");
    assert_int_equal(user_counter_size(uc), 0);

    /* max <= 0 refuses and creates no entry. */
    assert_false(user_counter_acquire(uc, "dave", 0));
    assert_false(user_counter_acquire(uc, "dave", -1));
    assert_int_equal(user_counter_size(uc), 0);
    user_counter_destroy(uc);
}

/* Destroying a counter set that still holds counts (valgrind checks). */
static void user_counter_destroy_nonempty(void **state)
{
    struct user_counter *uc = user_counter_create();
    assert_true(user_counter_acquire(uc, "alice", 10));
    assert_true(user_counter_acquire(uc, "bob", 10));
    user_counter_destroy(uc);
}

struct counter_arg {
    struct user_counter *uc;
    int acquired;
};

/* Acquires "alice" TAKES_PER_THREAD times against a max of 100. */
static void *acquirer(void *p)
{
    struct counter_arg *a = p;
    for (int i = 0; i < TAKES_PER_THREAD; i++)
        if (user_counter_acquire(a->uc, "alice", 100))
            a->acquired++;
    return NULL;
}

static void user_counter_threads(void **state)
{
    struct user_counter *uc = user_counter_create();
    pthread_t th[N_THREADS];
    struct counter_arg args[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        args[i] = (struct counter_arg){uc, 0};
        assert_int_equal(pthread_create(&th[i], NULL, acquirer, &args[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < N_THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        total += args[i].acquired;
    }
    assert_int_equal(total, 100);
    assert_int_equal(user_counter_get(uc, "alice"), 100);
    for (int i = 0; i < 100; i++)
        user_counter_release(uc, "alice");
    assert_int_equal(user_counter_size(uc), 0);
    user_counter_destroy(uc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(null_accepted),
        cmocka_unit_test(user_counter_limits),
        cmocka_unit_test(user_counter_destroy_nonempty),
        cmocka_unit_test(user_counter_threads),
    };
    return cmocka_run_group_tests_name("user_counter", tests, NULL, NULL);
}
