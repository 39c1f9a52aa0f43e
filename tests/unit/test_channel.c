/* test_channel.c - the per-worker channel index and its watches (chan_watch): a chan that
 * watches another topic gets that topic's broadcasts through its type's watch hook, in
 * order with its own (held while it joins), never as frames, and loses every watch when
 * it ends. Driven on a worker that is never started, with conns whose transport writes
 * into one shared log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bcast.h"
#include "channel.h"
#include "config.h"
#include "conn.h"
#include "obuf.h"
#include "util/log.h"
#include "worker.h"

#define NCONNS 3
#define LOG_MAX 32

/* What every conn sent and every watch hook saw, in order: "A frame …", "B watch …". */
static char *journal[LOG_MAX];
static size_t n_journal;

/* Appends one line to the journal. */
static void note(const char *fmt, ...)
{
    assert_true(n_journal < LOG_MAX);
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    journal[n_journal++] = strdup(line);
}

/* Empties the journal. */
static void journal_clear(void)
{
    while (n_journal)
        free(journal[--n_journal]);
}

/* Checks the journal holds exactly the NULL-terminated lines, then empties it. */
static void expect_journal(const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    size_t i = 0;
    for (const char *want = first; want; want = va_arg(ap, const char *), i++) {
        if (i >= n_journal)
            fail_msg("line %zu missing: %s", i, want);
        assert_string_equal(journal[i], want);
    }
    va_end(ap);
    if (i != n_journal)
        fail_msg("%zu lines, %zu expected; next: %s", n_journal, i, journal[i]);
    journal_clear();
}

/* The letter naming a conn in the journal: its user id. */
static const char *who(const struct conn *c)
{
    return c->user_id;
}

/* conn_ops.send: journals the frame text. */
static void log_send(struct conn *c, struct obuf *b)
{
    note("%s frame %.*s", who(c), (int)obuf_payload_len(b), obuf_payload(b));
}

/* conn_ops.destroy */
static void log_destroy(struct conn *c)
{
    free(c);
}

/* conn_ops.resume: nothing to record. */
static void log_resume(struct conn *c)
{
}

/* conn_ops.close: nothing to record. */
static void log_close(struct conn *c, uint16_t code, const char *why)
{
}

static const struct conn_ops log_ops = {
    .send = log_send,
    .close = log_close,
    .destroy = log_destroy,
    .resume = log_resume,
};

/* channel_type.watch: journals what was seen. */
static void w_watch(struct chan *ch, const struct bcast *b)
{
    note("%s watch %s %s %lld", who(ch->conn), b->topic, b->event, (long long)b->msg_seq);
}

static const struct channel_type watcher_type = {
    .prefix = "w:",
    .watch = w_watch,
};

struct fx {
    struct config cfg;
    struct worker_env env;
    struct worker *w;
    struct conn *c[NCONNS]; /* users "A", "B", "C" */
};

/* A worker with three conns. */
static int setup(void **state)
{
    struct fx *x = calloc(1, sizeof *x);
    assert_non_null(x);
    x->cfg.max_channels = 10;
    x->env.cfg = &x->cfg;
    x->w = worker_create(0, &x->env, 50);
    x->w->topics = chan_index_create();
    for (int i = 0; i < NCONNS; i++) {
        x->c[i] = calloc(1, sizeof *x->c[i]);
        char name[2] = {(char)('A' + i), 0};
        conn_init(x->c[i], &log_ops, x->w, &x->w->conns, NULL, strdup(name), CODEC_V2);
    }
    n_journal = 0;
    *state = x;
    return 0;
}

/* Ends what is left, checks the index is empty, frees everything. */
static int teardown(void **state)
{
    struct fx *x = *state;
    for (int i = 0; i < NCONNS; i++) {
        while (x->c[i]->chans)
            chan_end(x->c[i]->chans);
        x->c[i]->closed = true;
        conn_release(x->c[i]);
    }
    for (struct conn *c; (c = x->w->conns.dead);) {
        x->w->conns.dead = c->_dead_next;
        conn_unref(c);
    }
    assert_int_equal(chan_index_topics(x->w->topics), 0);
    chan_index_destroy(x->w->topics);
    worker_free(x->w);
    journal_clear();
    free(x);
    return 0;
}

/* A chan of type on conn i for topic, joined unless joining is asked. */
static struct chan *open_chan(struct fx *x, int i, const struct channel_type *type,
                              const char *topic, bool joining)
{
    struct chan *ch = chan_create(x->c[i], type, topic, strlen(topic), "\"1\"", "\"1\"");
    if (!joining) {
        chan_join_ok(ch, "{}");
        chan_release_held(ch);
        journal_clear();
    }
    return ch;
}

/* Fans a broadcast out through the index (about message msg_seq, excluding conn id
 * exclude); our reference is dropped after. */
static void fan_out(struct fx *x, const char *topic, const char *event, int64_t msg_seq,
                    uint64_t exclude)
{
    struct bcast *b = bcast_create(topic, event, "{}", 2, exclude, msg_seq);
    assert_non_null(b);
    b->msg_seq = msg_seq;
    chan_index_deliver(x->w->topics, b);
    bcast_unref(b);
}

/* ---- tests ------------------------------------------------------------------------ */

static void watch_runs_the_hook_not_a_frame(void **state)
{
    struct fx *x = *state;
    struct chan *ch = open_chan(x, 0, &watcher_type, "w:a", false);
    chan_watch(ch, "room:1", 6);
    chan_watch(ch, "room:2", 6);
    assert_int_equal(chan_index_watchers(x->w->topics, "room:1"), 1);
    assert_false(chan_index_has(x->w->topics, "room:1")); /* watched, not subscribed */
    fan_out(x, "room:1", "new_message", 4, 0);
    fan_out(x, "room:3", "new_message", 5, 0);
    fan_out(x, "room:2", "message_deleted", 6, 0);
    expect_journal("A watch room:1 new_message 4", "A watch room:2 message_deleted 6", NULL);
    /* its own topic still reaches the client */
    fan_out(x, "w:a", "ping", 0, 0);
    expect_journal("A frame [null,null,\"w:a\",\"ping\",{}]", NULL);
}

static void subscribers_and_watchers_of_one_topic(void **state)
{
    struct fx *x = *state;
    open_chan(x, 1, &watcher_type, "room:1", false); /* B is subscribed to room:1 */
    struct chan *a = open_chan(x, 0, &watcher_type, "w:a", false);
    chan_watch(a, "room:1", 6);
    assert_true(chan_index_has(x->w->topics, "room:1"));
    fan_out(x, "room:1", "new_message", 1, 0);
    expect_journal("B frame [null,null,\"room:1\",\"new_message\",{}]",
                   "A watch room:1 new_message 1", NULL);
}

static void held_while_joining_then_in_order(void **state)
{
    struct fx *x = *state;
    struct chan *ch = open_chan(x, 0, &watcher_type, "w:a", true);
    chan_watch(ch, "room:1", 6);
    fan_out(x, "w:a", "first", 0, 0);
    fan_out(x, "room:1", "new_message", 2, 0);
    fan_out(x, "w:a", "third", 0, 0);
    assert_int_equal(n_journal, 0);
    chan_join_ok(ch, "{}");
    fan_out(x, "room:1", "new_message", 3, 0); /* after the reply, still behind the held */
    chan_release_held(ch);
    fan_out(x, "room:1", "new_message", 4, 0);
    expect_journal("A frame [\"1\",\"1\",\"w:a\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]",
                   "A frame [null,null,\"w:a\",\"first\",{}]", "A watch room:1 new_message 2",
                   "A frame [null,null,\"w:a\",\"third\",{}]", "A watch room:1 new_message 3",
                   "A watch room:1 new_message 4", NULL);
}

static void ending_removes_every_watch(void **state)
{
    struct fx *x = *state;
    struct chan *ch[NCONNS];
    for (int i = 0; i < NCONNS; i++) {
        char topic[8];
        snprintf(topic, sizeof topic, "w:%d", i);
        ch[i] = open_chan(x, i, &watcher_type, topic, false);
        chan_watch(ch[i], "room:1", 6);
        chan_watch(ch[i], "room:2", 6);
    }
    chan_end(ch[0]); /* the first watcher of each topic: the last one takes its place */
    assert_int_equal(chan_index_watchers(x->w->topics, "room:1"), 2);
    fan_out(x, "room:1", "new_message", 7, 0);
    expect_journal("C watch room:1 new_message 7", "B watch room:1 new_message 7", NULL);
    chan_end(ch[2]);
    fan_out(x, "room:2", "new_message", 8, 0);
    expect_journal("B watch room:2 new_message 8", NULL);
    chan_end(ch[1]);
    fan_out(x, "room:1", "new_message", 9, 0);
    expect_journal(NULL);
    assert_int_equal(chan_index_watchers(x->w->topics, "room:2"), 0);
    assert_int_equal(chan_index_topics(x->w->topics), 0);
}

static void refused_join_removes_its_watches(void **state)
{
    struct fx *x = *state;
    struct chan *ch = open_chan(x, 0, &watcher_type, "w:a", true);
    chan_watch(ch, "room:1", 6);
    chan_join_error(ch, "unavailable");
    journal_clear();
    assert_int_equal(chan_index_topics(x->w->topics), 0);
    fan_out(x, "room:1", "new_message", 1, 0);
    expect_journal(NULL);
}

static void closed_and_excluded_conns_are_skipped(void **state)
{
    struct fx *x = *state;
    for (int i = 0; i < 2; i++)
        chan_watch(open_chan(x, i, &watcher_type, i ? "w:b" : "w:a", false), "room:1", 6);
    fan_out(x, "room:1", "typing", 0, x->c[0]->id);
    expect_journal("B watch room:1 typing 0", NULL);
    x->c[1]->closed = true;
    fan_out(x, "room:1", "new_message", 1, 0);
    expect_journal("A watch room:1 new_message 1", NULL);
    x->c[1]->closed = false;
}

/* Quiet logs. */
static int group_setup(void **state)
{
    log_min_level = LOG_ERROR;
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(watch_runs_the_hook_not_a_frame, setup, teardown),
        cmocka_unit_test_setup_teardown(subscribers_and_watchers_of_one_topic, setup, teardown),
        cmocka_unit_test_setup_teardown(held_while_joining_then_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(ending_removes_every_watch, setup, teardown),
        cmocka_unit_test_setup_teardown(refused_join_removes_its_watches, setup, teardown),
        cmocka_unit_test_setup_teardown(closed_and_excluded_conns_are_skipped, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
