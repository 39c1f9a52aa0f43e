/* test_conn.c - a worker's set of conns: the before-sleep flush pass writes in order,
 * replies ahead of the fan-out, and lets its owner take input during a long pass. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "conn.h"
#include "obuf.h"

#define MAXC 300

/* A conn whose transport counts what it was given and what it wrote. */
struct tconn {
    struct conn base;
    int index;
    int queued;  /* frames sent and not yet flushed */
    int written; /* frames written by flushes */
    int writes;  /* flushes that wrote at least one frame (one writev each) */
};

/* The order in which conns were written, by index. */
static int order[4 * MAXC];
static int n_order;

/* conn_ops.send: queued until the flush, which is asked for as a transport does. */
static void t_send(struct conn *c, struct obuf *b)
{
    ((struct tconn *)c)->queued++;
    conn_want_flush(c);
}

/* conn_ops.flush: writes every queued frame at once. */
static void t_flush(struct conn *c)
{
    struct tconn *t = (struct tconn *)c;
    if (!t->queued)
        return;
    t->written += t->queued;
    t->queued = 0;
    t->writes++;
    order[n_order++] = t->index;
}

/* conn_ops.destroy: the test owns the memory. */
static void t_destroy(struct conn *c)
{
}

static const struct conn_ops t_ops = {.send = t_send, .flush = t_flush, .destroy = t_destroy};

struct fx {
    struct conn_set set;
    struct tconn c[MAXC];
    int betweens;
};

/* A set of MAXC conns, nothing queued. */
static int setup(void **state)
{
    struct fx *x = calloc(1, sizeof *x);
    assert_non_null(x);
    for (int i = 0; i < MAXC; i++) {
        conn_init(&x->c[i].base, &t_ops, NULL, &x->set, NULL, NULL, CODEC_V2);
        x->c[i].index = i;
    }
    n_order = 0;
    *state = x;
    return 0;
}

/* Frees the test's state. */
static int teardown(void **state)
{
    free(*state);
    return 0;
}

/* Sends one broadcast-like frame to conn i. */
static void push(struct fx *x, int i)
{
    conn_send_text(&x->c[i].base, "x", 1);
}

/* Output is written in the order it was asked for, one write per conn. */
static void pass_is_fifo(void **state)
{
    struct fx *x = *state;
    push(x, 2);
    push(x, 0);
    push(x, 2);
    push(x, 1);
    conn_set_before_sleep(&x->set, NULL, NULL);
    assert_int_equal(n_order, 3);
    assert_int_equal(order[0], 2);
    assert_int_equal(order[1], 0);
    assert_int_equal(order[2], 1);
    assert_int_equal(x->c[2].written, 2);
    assert_int_equal(x->c[2].writes, 1);
    assert_null(x->set.flush);
    assert_null(x->set.flush_tail);
}

/* A reply to a conn that is behind a fan-out in the pass is written before that fan-out,
 * together with the frames it already had. */
static void reply_goes_first(void **state)
{
    struct fx *x = *state;
    for (int i = 0; i < 10; i++)
        push(x, i);
    conn_reply(&x->c[7].base, NULL, "\"1\"", "room:a", 6, "ok", "{}");
    conn_set_before_sleep(&x->set, NULL, NULL);
    assert_int_equal(n_order, 10);
    assert_int_equal(order[0], 7);
    assert_int_equal(x->c[7].written, 2);
    assert_int_equal(x->c[7].writes, 1);
    for (int i = 1; i < 10; i++)
        assert_int_equal(order[i], i <= 7 ? i - 1 : i);
    /* a reply to a conn with nothing else waiting goes first too; a closed conn's none */
    n_order = 0;
    push(x, 3);
    conn_reply(&x->c[5].base, NULL, "\"2\"", "room:a", 6, "ok", "{}");
    x->c[6].base.closed = true;
    conn_reply(&x->c[6].base, NULL, "\"3\"", "room:a", 6, "ok", "{}");
    conn_set_before_sleep(&x->set, NULL, NULL);
    assert_int_equal(n_order, 2);
    assert_int_equal(order[0], 5);
    assert_int_equal(order[1], 3);
    assert_int_equal(x->c[6].written, 1);
}

/* The between hook of the test: a second broadcast to every conn arrives once, after the
 * first slice of the pass. */
static void second_broadcast(void *arg)
{
    struct fx *x = arg;
    if (x->betweens++ == 0)
        for (int i = 0; i < MAXC; i++)
            push(x, i);
}

/* A long pass calls between after every slice; a broadcast taken then joins the frames
 * still waiting (one write for both) and reaches the conns already written in the same
 * pass. */
static void long_pass_takes_input(void **state)
{
    struct fx *x = *state;
    for (int i = 0; i < MAXC; i++)
        push(x, i);
    conn_set_before_sleep(&x->set, second_broadcast, x);
    /* MAXC conns, then the CONN_FLUSH_SLICE - 1 written before the hook again */
    assert_int_equal(x->betweens, (MAXC + CONN_FLUSH_SLICE - 1) / CONN_FLUSH_SLICE);
    int both_at_once = 0;
    for (int i = 0; i < MAXC; i++) {
        assert_int_equal(x->c[i].written, 2);
        assert_int_equal(x->c[i].queued, 0);
        both_at_once += x->c[i].writes == 1;
    }
    /* written before the hook ran: CONN_FLUSH_SLICE - 1 conns, each twice */
    assert_int_equal(both_at_once, MAXC - (CONN_FLUSH_SLICE - 1));
    assert_int_equal(n_order, MAXC + CONN_FLUSH_SLICE - 1);
    assert_null(x->set.flush);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(pass_is_fifo, setup, teardown),
        cmocka_unit_test_setup_teardown(reply_goes_first, setup, teardown),
        cmocka_unit_test_setup_teardown(long_pass_takes_input, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
