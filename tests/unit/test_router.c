/* test_router.c - Phoenix channel semantics of the router (docs/phoenix-protocol.md §4
 * and the transcripts of §11.2-11.4), driven through its public API on a worker that is
 * never started and a fake transport that records what it is asked to send. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "channel.h"
#include "codec.h"
#include "config.h"
#include "conn.h"
#include "bcast.h"
#include "obuf.h"
#include "router.h"
#include "util/hmap.h"
#include "util/log.h"
#include "worker.h"

/* Deep enough for every test frame. */
#define DEPTH 32
#define MAX_OUT 64

/* ---- fake transport --------------------------------------------------------------- */

struct fake {
    struct conn base; /* first: the router hands us a struct conn * */
    char *out[MAX_OUT];
    size_t n_out;
    int n_close;
    uint16_t close_code;
    int n_resume;
    int n_flush;
    int n_tick;
};

static int n_destroyed;

/* conn_ops.send: keeps a copy of the frame's text. */
static void fake_send(struct conn *c, struct obuf *b)
{
    struct fake *f = (struct fake *)c;
    assert_int_equal(b->opcode, WS_OP_TEXT);
    assert_true(f->n_out < MAX_OUT);
    f->out[f->n_out++] = strndup(obuf_payload(b), obuf_payload_len(b));
}

/* conn_ops.close: records the code. */
static void fake_close(struct conn *c, uint16_t code, const char *why)
{
    struct fake *f = (struct fake *)c;
    (void)why;
    f->n_close++;
    f->close_code = code;
}

/* Frees the recorded frames. */
static void fake_clear(struct fake *f)
{
    for (size_t i = 0; i < f->n_out; i++)
        free(f->out[i]);
    f->n_out = 0;
}

/* conn_ops.destroy */
static void fake_destroy(struct conn *c)
{
    struct fake *f = (struct fake *)c;
    fake_clear(f);
    free(f);
    n_destroyed++;
}

/* conn_ops.resume: counted. */
static void fake_resume(struct conn *c)
{
    ((struct fake *)c)->n_resume++;
}

/* conn_ops.flush: counted. */
static void fake_flush(struct conn *c)
{
    ((struct fake *)c)->n_flush++;
}

/* conn_ops.tick: counted. */
static void fake_tick(struct conn *c, int64_t now_ms)
{
    (void)now_ms;
    ((struct fake *)c)->n_tick++;
}

static const struct conn_ops fake_ops = {
    .send = fake_send,
    .close = fake_close,
    .destroy = fake_destroy,
    .resume = fake_resume,
    .flush = fake_flush,
    .tick = fake_tick,
};

/* ---- test channel type ------------------------------------------------------------ */

static int n_join, n_handle_in, n_terminate;
static struct chan *slow_chan; /* a "test:slow*" join left pending */

/* Accepts test:*, refuses test:deny, leaves test:slow* pending. */
static void test_join(struct chan *ch, json_t *params)
{
    (void)params;
    n_join++;
    if (!strcmp(ch->topic, "test:deny")) {
        chan_join_error(ch, "unauthorized");
        return;
    }
    if (!strncmp(ch->topic, "test:slow", 9)) {
        slow_chan = ch;
        return;
    }
    chan_join_ok(ch, "{}");
    chan_release_held(ch);
}

/* "fail" gets an error reply, "quiet" none, anything else {"echo": event}. */
static void test_handle_in(struct chan *ch, const char *event, const struct phx_in *m,
                           const char *ref)
{
    (void)m;
    n_handle_in++;
    if (!strcmp(event, "fail")) {
        chan_reply_error(ch, ref, "bad");
        return;
    }
    if (!strcmp(event, "quiet"))
        return;
    char resp[128];
    snprintf(resp, sizeof resp, "{\"echo\":\"%s\"}", event);
    chan_reply(ch, ref, "ok", resp);
}

/* Counts terminations. */
static void test_terminate(struct chan *ch)
{
    (void)ch;
    n_terminate++;
}

static const struct channel_type test_channel = {
    .prefix = "test:",
    .join = test_join,
    .handle_in = test_handle_in,
    .terminate = test_terminate,
};

/* ---- fixture ---------------------------------------------------------------------- */

struct fx {
    struct config cfg;
    struct worker_env env;
    struct worker *w;
    struct fake *f;
    struct conn *c;
};

/* A worker (not started) and one fake conn speaking vsn. */
static int fx_setup(void **state, enum codec_vsn vsn)
{
    struct fx *x = calloc(1, sizeof *x);
    assert_non_null(x);
    x->cfg.max_channels = 100;
    x->cfg.max_json_depth = DEPTH;
    x->cfg.idle_timeout = 60;
    x->env.cfg = &x->cfg;
    x->w = worker_create(0, &x->env, 50);
    assert_non_null(x->w);
    x->w->topics = chan_index_create();
    x->f = calloc(1, sizeof *x->f);
    assert_non_null(x->f);
    conn_init(&x->f->base, &fake_ops, x->w, &x->w->conns, NULL, strdup("alice"), vsn);
    x->c = &x->f->base;
    n_join = n_handle_in = n_terminate = 0;
    n_destroyed = 0;
    slow_chan = NULL;
    *state = x;
    return 0;
}

/* V2 fixture. */
static int setup_v2(void **state)
{
    return fx_setup(state, CODEC_V2);
}

/* V1 fixture. */
static int setup_v1(void **state)
{
    return fx_setup(state, CODEC_V1);
}

/* Closes and releases the conn, drops the worker's reference as before_sleep does,
 * then frees the worker. */
static int teardown(void **state)
{
    struct fx *x = *state;
    struct worker *w = x->w;
    router_conn_closed(x->c);
    conn_release(x->c);
    while (w->conns.dead) {
        struct conn *c = w->conns.dead;
        w->conns.dead = c->_dead_next;
        conn_unref(c);
    }
    assert_int_equal(n_destroyed, 1);
    assert_int_equal(chan_index_topics(w->topics), 0);
    chan_index_destroy(w->topics);
    worker_free(w);
    free(x);
    return 0;
}

/* ---- helpers ---------------------------------------------------------------------- */

/* Decodes one text frame for the conn's serializer and routes it. */
static void feed(struct fx *x, const char *text)
{
    struct phx_in m;
    int rc = codec_decode_text(x->c->vsn, text, strlen(text), DEPTH, &m);
    if (rc)
        fail_msg("cannot decode %s: %d", text, rc);
    router_handle(x->c, &m);
    codec_in_cleanup(&m);
}

/* Checks that exactly the NULL-terminated list of frames was sent, in order, and
 * forgets them. */
static void expect_frames(struct fx *x, ...)
{
    va_list ap;
    size_t n = 0;
    va_start(ap, x);
    for (const char *want; (want = va_arg(ap, const char *)); n++) {
        if (n >= x->f->n_out)
            fail_msg("frame %zu missing, wanted %s", n, want);
        assert_string_equal(x->f->out[n], want);
    }
    va_end(ap);
    if (x->f->n_out != n)
        fail_msg("%zu frames sent, %zu expected; frame %zu: %s", x->f->n_out, n, n, x->f->out[n]);
    fake_clear(x->f);
}

/* Nothing was sent. */
static void expect_nothing(struct fx *x)
{
    expect_frames(x, NULL);
}

/* Checks that frame text was sent (anywhere in the recorded output). */
static void expect_sent(struct fx *x, const char *text)
{
    for (size_t i = 0; i < x->f->n_out; i++)
        if (!strcmp(x->f->out[i], text))
            return;
    for (size_t i = 0; i < x->f->n_out; i++)
        print_message("sent %zu: %s\n", i, x->f->out[i]);
    fail_msg("not sent: %s", text);
}

/* The conn's chan on topic, or NULL. */
static struct chan *chan_of(struct fx *x, const char *topic)
{
    for (struct chan *ch = x->c->chans; ch; ch = ch->next)
        if (!strcmp(ch->topic, topic))
            return ch;
    return NULL;
}

/* Whether the worker's subscriber index has an entry for topic. */
static bool subscribed(struct fx *x, const char *topic)
{
    return chan_index_has(x->w->topics, topic);
}

/* Joins topic with jr = ref = r and checks the ok reply. */
static void join_ok(struct fx *x, const char *topic, const char *r)
{
    char in[256], want[256];
    snprintf(in, sizeof in, "[\"%s\",\"%s\",\"%s\",\"phx_join\",{}]", r, r, topic);
    snprintf(want, sizeof want,
             "[\"%s\",\"%s\",\"%s\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]", r, r,
             topic);
    feed(x, in);
    expect_frames(x, want, NULL);
}

/* A broadcast delivered straight to ch; our reference is dropped after. */
static void deliver(struct chan *ch, const char *topic, const char *event, const char *payload)
{
    struct bcast *b = bcast_create(topic, event, payload, strlen(payload), 0, 0);
    assert_non_null(b);
    chan_deliver(ch, b);
    bcast_unref(b);
}

/* ---- heartbeat and unrouted topics ------------------------------------------------ */

static void heartbeat_ok(void **state)
{
    struct fx *x = *state;
    feed(x, "[null,\"1\",\"phoenix\",\"heartbeat\",{}]");
    expect_frames(x, "[null,\"1\",\"phoenix\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]",
                  NULL);
}

static void heartbeat_with_jr_and_numeric_ref(void **state)
{
    struct fx *x = *state;
    /* §11.2: jr given and a numeric ref: null jr, the ref echoed as a number. */
    feed(x, "[\"9\",2,\"phoenix\",\"heartbeat\",{}]");
    expect_frames(x, "[null,2,\"phoenix\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]",
                  NULL);
    feed(x, "[\"9\",\"7\",\"phoenix\",\"heartbeat\",{}]");
    expect_frames(x, "[null,\"7\",\"phoenix\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]",
                  NULL);
    assert_int_equal(x->c->n_chans, 0);
}

static void phoenix_other_event_unmatched(void **state)
{
    struct fx *x = *state;
    feed(x, "[null,\"3\",\"phoenix\",\"whatever\",{}]");
    expect_frames(x,
                  "[null,\"3\",\"phoenix\",\"phx_reply\",{\"response\":{\"reason\":\"unmatched "
                  "topic\"},\"status\":\"error\"}]",
                  NULL);
}

static void non_string_topic_echoed(void **state)
{
    struct fx *x = *state;
    /* §2.1: a non-string topic is echoed in an "unmatched topic" reply. */
    feed(x, "[null,\"1\",5,\"heartbeat\",{}]");
    expect_frames(x,
                  "[null,\"1\",5,\"phx_reply\",{\"response\":{\"reason\":\"unmatched "
                  "topic\"},\"status\":\"error\"}]",
                  NULL);
}

/* ---- join ------------------------------------------------------------------------- */

static void join_ok_reply(void **state)
{
    struct fx *x = *state;
    feed(x, "[\"3\",\"3\",\"test:ok\",\"phx_join\",{}]");
    expect_frames(x, "[\"3\",\"3\",\"test:ok\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]",
                  NULL);
    assert_int_equal(n_join, 1);
    assert_int_equal(x->c->n_chans, 1);
    assert_int_equal(x->c->joins_pending, 0);
    struct chan *ch = chan_of(x, "test:ok");
    assert_non_null(ch);
    assert_int_equal(ch->state, CHAN_JOINED);
    assert_string_equal(ch->jr, "\"3\"");
    assert_true(subscribed(x, "test:ok"));
    assert_int_equal(x->f->n_close, 0);
}

static void join_unmatched_prefix(void **state)
{
    struct fx *x = *state;
    /* §11.2: no route → null jr even though the join carried one. */
    feed(x, "[\"2\",\"2\",\"nope:1\",\"phx_join\",{}]");
    expect_frames(x,
                  "[null,\"2\",\"nope:1\",\"phx_reply\",{\"response\":{\"reason\":\"unmatched "
                  "topic\"},\"status\":\"error\"}]",
                  NULL);
    /* The prefix alone is not a topic of the type: the rest must be non-empty. */
    feed(x, "[\"4\",\"4\",\"test:\",\"phx_join\",{}]");
    expect_frames(x,
                  "[null,\"4\",\"test:\",\"phx_reply\",{\"response\":{\"reason\":\"unmatched "
                  "topic\"},\"status\":\"error\"}]",
                  NULL);
    assert_int_equal(n_join, 0);
    assert_int_equal(x->c->n_chans, 0);
    assert_null(x->c->chans);
    assert_false(subscribed(x, "nope:1"));
}

static void join_refused(void **state)
{
    struct fx *x = *state;
    feed(x, "[\"4\",\"4\",\"test:deny\",\"phx_join\",{}]");
    expect_frames(x,
                  "[\"4\",\"4\",\"test:deny\",\"phx_reply\",{\"response\":{\"reason\":"
                  "\"unauthorized\"},\"status\":\"error\"}]",
                  NULL);
    assert_int_equal(n_join, 1);
    assert_int_equal(x->c->n_chans, 0);
    assert_null(x->c->chans);
    assert_int_equal(x->c->joins_pending, 0);
    assert_false(subscribed(x, "test:deny"));
    /* Nothing registered: a push gets "unmatched topic", the type never sees it. */
    feed(x, "[\"4\",\"5\",\"test:deny\",\"ping\",{}]");
    expect_frames(x,
                  "[null,\"5\",\"test:deny\",\"phx_reply\",{\"response\":{\"reason\":"
                  "\"unmatched topic\"},\"status\":\"error\"}]",
                  NULL);
    assert_int_equal(n_handle_in, 0);
    assert_int_equal(n_terminate, 0);
}

static void join_null_jr_uses_ref(void **state)
{
    struct fx *x = *state;
    /* §4.2: a join with a null jr; the channel uses its ref as jr for pushes and
     * replies. */
    feed(x, "[null,\"21\",\"test:ok\",\"phx_join\",{}]");
    assert_int_equal(x->f->n_out, 1);
    fake_clear(x->f);
    struct chan *ch = chan_of(x, "test:ok");
    assert_non_null(ch);
    assert_int_equal(ch->state, CHAN_JOINED);
    chan_push(ch, "msg", "{\"m\":1}", 7);
    expect_frames(x, "[\"21\",null,\"test:ok\",\"msg\",{\"m\":1}]", NULL);
    feed(x, "[null,\"22\",\"test:ok\",\"ping\",{}]");
    expect_frames(x,
                  "[\"21\",\"22\",\"test:ok\",\"phx_reply\",{\"response\":{\"echo\":\"ping\"},"
                  "\"status\":\"ok\"}]",
                  NULL);
    feed(x, "[\"21\",\"23\",\"test:ok\",\"ping\",{}]");
    expect_frames(x,
                  "[\"21\",\"23\",\"test:ok\",\"phx_reply\",{\"response\":{\"echo\":\"ping\"},"
                  "\"status\":\"ok\"}]",
                  NULL);
    feed(x, "[null,\"24\",\"test:ok\",\"phx_leave\",{}]");
    expect_sent(x, "[\"21\",\"24\",\"test:ok\",\"phx_reply\",{\"response\":{},\"status\":"
                   "\"ok\"}]");
    fake_clear(x->f);
    assert_int_equal(n_terminate, 1);
    assert_int_equal(x->c->n_chans, 0);
}

static void join_null_jr_reply_and_close(void **state)
{
    struct fx *x = *state;
    /* §4.2: join [null,"21",…] → reply [null,"21",…]; its phx_close carries
     * null/null. */
    feed(x, "[null,\"21\",\"test:ok\",\"phx_join\",{}]");
    expect_frames(x, "[null,\"21\",\"test:ok\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]",
                  NULL);
    feed(x, "[null,\"22\",\"test:ok\",\"phx_leave\",{}]");
    expect_frames(x,
                  "[\"21\",\"22\",\"test:ok\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]",
                  "[null,null,\"test:ok\",\"phx_close\",{}]", NULL);
}

static void duplicate_join(void **state)
{
    struct fx *x = *state;
    join_ok(x, "test:ok", "3");
    feed(x, "[\"16\",\"16\",\"test:ok\",\"phx_join\",{}]");
    /* §4.5: the old instance's close (old jr) and the new join's reply (new jr); either
     * order is valid for phoenix.js, ours sends the close first. */
    assert_int_equal(x->f->n_out, 2);
    expect_sent(x, "[\"3\",\"3\",\"test:ok\",\"phx_close\",{}]");
    expect_sent(x, "[\"16\",\"16\",\"test:ok\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]");
    fake_clear(x->f);
    assert_int_equal(n_terminate, 1);
    assert_int_equal(n_join, 2);
    assert_int_equal(x->c->n_chans, 1);
    assert_true(subscribed(x, "test:ok"));
    struct chan *ch = chan_of(x, "test:ok");
    assert_non_null(ch);
    assert_string_equal(ch->jr, "\"16\"");
    /* The old jr is stale now, the new one is current. */
    feed(x, "[\"3\",\"17\",\"test:ok\",\"ping\",{}]");
    expect_nothing(x);
    feed(x, "[\"16\",\"18\",\"test:ok\",\"ping\",{}]");
    expect_frames(x,
                  "[\"16\",\"18\",\"test:ok\",\"phx_reply\",{\"response\":{\"echo\":\"ping\"},"
                  "\"status\":\"ok\"}]",
                  NULL);
}

static void max_channels(void **state)
{
    struct fx *x = *state;
    x->cfg.max_channels = 2;
    join_ok(x, "test:a", "1");
    join_ok(x, "test:b", "2");
    feed(x, "[\"3\",\"3\",\"test:c\",\"phx_join\",{}]");
    expect_frames(x,
                  "[\"3\",\"3\",\"test:c\",\"phx_reply\",{\"response\":{\"reason\":\"too many "
                  "channels joined\"},\"status\":\"error\"}]",
                  NULL);
    assert_int_equal(x->c->n_chans, 2);
    assert_null(chan_of(x, "test:c"));
    assert_false(subscribed(x, "test:c"));
    assert_int_equal(n_join, 2);
    /* A rejoin of a joined topic at the limit replaces it. */
    feed(x, "[\"4\",\"4\",\"test:a\",\"phx_join\",{}]");
    expect_sent(x, "[\"4\",\"4\",\"test:a\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]");
    fake_clear(x->f);
    assert_int_equal(x->c->n_chans, 2);
    /* After a leave there is room again. */
    feed(x, "[\"2\",\"5\",\"test:b\",\"phx_leave\",{}]");
    fake_clear(x->f);
    join_ok(x, "test:c", "6");
    assert_int_equal(x->c->n_chans, 2);
}

/* ---- pushes ----------------------------------------------------------------------- */

static void push_unjoined(void **state)
{
    struct fx *x = *state;
    feed(x, "[\"3\",\"12\",\"test:ok\",\"new\",{\"body\":\"x\"}]");
    expect_frames(x,
                  "[null,\"12\",\"test:ok\",\"phx_reply\",{\"response\":{\"reason\":"
                  "\"unmatched topic\"},\"status\":\"error\"}]",
                  NULL);
    feed(x, "[null,\"13\",\"nope:1\",\"new\",{}]");
    expect_frames(x,
                  "[null,\"13\",\"nope:1\",\"phx_reply\",{\"response\":{\"reason\":"
                  "\"unmatched topic\"},\"status\":\"error\"}]",
                  NULL);
    assert_int_equal(n_handle_in, 0);
}

static void push_current_and_null_jr(void **state)
{
    struct fx *x = *state;
    join_ok(x, "test:ok", "3");
    feed(x, "[\"3\",\"4\",\"test:ok\",\"ping\",{}]");
    expect_frames(x,
                  "[\"3\",\"4\",\"test:ok\",\"phx_reply\",{\"response\":{\"echo\":\"ping\"},"
                  "\"status\":\"ok\"}]",
                  NULL);
    /* §4.3: null jr is delivered; the reply carries the channel's jr. */
    feed(x, "[null,\"8\",\"test:ok\",\"whatever\",{}]");
    expect_frames(x,
                  "[\"3\",\"8\",\"test:ok\",\"phx_reply\",{\"response\":{\"echo\":"
                  "\"whatever\"},\"status\":\"ok\"}]",
                  NULL);
    feed(x, "[\"3\",\"5\",\"test:ok\",\"fail\",{}]");
    expect_frames(x,
                  "[\"3\",\"5\",\"test:ok\",\"phx_reply\",{\"response\":{\"reason\":\"bad\"},"
                  "\"status\":\"error\"}]",
                  NULL);
    feed(x, "[\"3\",\"7\",\"test:ok\",\"quiet\",{}]");
    expect_nothing(x);
    assert_int_equal(n_handle_in, 4);
}

static void push_stale_jr_dropped(void **state)
{
    struct fx *x = *state;
    join_ok(x, "test:ok", "3");
    /* §4.3, Phoenix 1.8.3+: a stale non-null jr is dropped without a reply. */
    feed(x, "[\"99\",\"9\",\"test:ok\",\"whatever\",{}]");
    expect_nothing(x);
    assert_int_equal(n_handle_in, 0);
    assert_int_equal(x->c->n_chans, 1);
}

/* ---- leave ------------------------------------------------------------------------ */

static void leave_matching_jr(void **state)
{
    struct fx *x = *state;
    join_ok(x, "test:ok", "3");
    feed(x, "[\"3\",\"19\",\"test:ok\",\"phx_leave\",{}]");
    expect_frames(x, "[\"3\",\"19\",\"test:ok\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]",
                  "[\"3\",\"3\",\"test:ok\",\"phx_close\",{}]", NULL);
    assert_int_equal(n_terminate, 1);
    assert_int_equal(x->c->n_chans, 0);
    assert_null(x->c->chans);
    assert_false(subscribed(x, "test:ok"));
    /* §11.3: use after leave → unmatched topic. */
    feed(x, "[\"3\",\"20\",\"test:ok\",\"whatever\",{}]");
    expect_frames(x,
                  "[null,\"20\",\"test:ok\",\"phx_reply\",{\"response\":{\"reason\":"
                  "\"unmatched topic\"},\"status\":\"error\"}]",
                  NULL);
    assert_int_equal(n_terminate, 1);
    assert_int_equal(n_handle_in, 0);
}

static void leave_null_jr(void **state)
{
    struct fx *x = *state;
    join_ok(x, "test:ok", "3");
    /* §4.3, 1.8.12 rule: a null jr matches. */
    feed(x, "[null,\"31\",\"test:ok\",\"phx_leave\",{}]");
    expect_frames(x, "[\"3\",\"31\",\"test:ok\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]",
                  "[\"3\",\"3\",\"test:ok\",\"phx_close\",{}]", NULL);
    assert_int_equal(n_terminate, 1);
    assert_int_equal(x->c->n_chans, 0);
    assert_false(subscribed(x, "test:ok"));
}

static void leave_stale_jr(void **state)
{
    struct fx *x = *state;
    join_ok(x, "test:ok", "16");
    feed(x, "[\"3\",\"18\",\"test:ok\",\"phx_leave\",{}]");
    expect_nothing(x);
    assert_int_equal(n_terminate, 0);
    assert_int_equal(x->c->n_chans, 1);
    assert_true(subscribed(x, "test:ok"));
    /* Still joined under the current jr. */
    feed(x, "[\"16\",\"19\",\"test:ok\",\"phx_leave\",{}]");
    expect_frames(x,
                  "[\"16\",\"19\",\"test:ok\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]",
                  "[\"16\",\"16\",\"test:ok\",\"phx_close\",{}]", NULL);
}

static void leave_unjoined(void **state)
{
    struct fx *x = *state;
    /* §4.4: ok reply echoing the request's jr, no phx_close. */
    feed(x, "[\"15\",\"15\",\"test:x\",\"phx_leave\",{}]");
    expect_frames(x, "[\"15\",\"15\",\"test:x\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]",
                  NULL);
    feed(x, "[null,\"16\",\"nope:1\",\"phx_leave\",{}]");
    expect_frames(x, "[null,\"16\",\"nope:1\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]",
                  NULL);
    assert_int_equal(n_terminate, 0);
    assert_int_equal(x->c->n_chans, 0);
}

/* ---- broadcasts ------------------------------------------------------------------- */

static void broadcast_to_joined(void **state)
{
    struct fx *x = *state;
    join_ok(x, "test:ok", "3");
    deliver(chan_of(x, "test:ok"), "test:ok", "ev", "{\"a\":1}");
    expect_frames(x, "[null,null,\"test:ok\",\"ev\",{\"a\":1}]", NULL);
}

static void broadcast_held_while_joining(void **state)
{
    struct fx *x = *state;
    feed(x, "[\"5\",\"5\",\"test:slow\",\"phx_join\",{}]");
    expect_nothing(x);
    assert_non_null(slow_chan);
    assert_int_equal(slow_chan->state, CHAN_JOINING);
    assert_int_equal(x->c->joins_pending, 1);
    assert_int_equal(x->f->n_resume, 0);
    assert_true(subscribed(x, "test:slow"));

    struct bcast *b1 = bcast_create("test:slow", "first", "{\"n\":1}", 7, 0, 0);
    struct bcast *b2 = bcast_create("test:slow", "second", "{\"n\":2}", 7, 0, 0);
    assert_non_null(b1);
    assert_non_null(b2);
    chan_deliver(slow_chan, b1);
    chan_deliver(slow_chan, b2);
    expect_nothing(x);
    /* Held: each holds a reference of its own. */
    assert_int_equal(atomic_load(&b1->refs), 2);

    struct chan *ch = slow_chan;
    slow_chan = NULL;
    chan_join_ok(ch, "{}");
    /* Nothing overtakes the reply: a broadcast arriving between the reply and the
     * release queues behind the held ones. */
    struct bcast *b3 = bcast_create("test:slow", "third", "{\"n\":3}", 7, 0, 0);
    assert_non_null(b3);
    chan_deliver(ch, b3);
    chan_release_held(ch);
    expect_frames(x,
                  "[\"5\",\"5\",\"test:slow\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]",
                  "[null,null,\"test:slow\",\"first\",{\"n\":1}]",
                  "[null,null,\"test:slow\",\"second\",{\"n\":2}]",
                  "[null,null,\"test:slow\",\"third\",{\"n\":3}]", NULL);
    assert_int_equal(atomic_load(&b1->refs), 1);
    assert_int_equal(atomic_load(&b3->refs), 1);
    assert_null(ch->held);
    assert_int_equal(ch->state, CHAN_JOINED);
    assert_int_equal(x->c->joins_pending, 0);
    assert_int_equal(x->f->n_resume, 1);
    bcast_unref(b1);
    bcast_unref(b2);
    bcast_unref(b3);
    /* Joined now: straight through. */
    deliver(ch, "test:slow", "fourth", "{}");
    expect_frames(x, "[null,null,\"test:slow\",\"fourth\",{}]", NULL);
}

static void slow_join_refused_drops_held(void **state)
{
    struct fx *x = *state;
    feed(x, "[\"5\",\"5\",\"test:slow\",\"phx_join\",{}]");
    assert_non_null(slow_chan);
    struct bcast *b = bcast_create("test:slow", "ev", "{}", 2, 0, 0);
    assert_non_null(b);
    chan_deliver(slow_chan, b);
    struct chan *ch = slow_chan;
    slow_chan = NULL;
    chan_join_error(ch, "nope");
    expect_frames(x,
                  "[\"5\",\"5\",\"test:slow\",\"phx_reply\",{\"response\":{\"reason\":\"nope\"},"
                  "\"status\":\"error\"}]",
                  NULL);
    assert_int_equal(atomic_load(&b->refs), 1);
    bcast_unref(b);
    assert_int_equal(x->c->n_chans, 0);
    assert_int_equal(x->c->joins_pending, 0);
    assert_int_equal(x->f->n_resume, 1);
    assert_false(subscribed(x, "test:slow"));
    assert_int_equal(n_terminate, 0);
}

/* ---- conn closed ------------------------------------------------------------------ */

static void conn_closed_terminates_all(void **state)
{
    struct fx *x = *state;
    join_ok(x, "test:a", "1");
    join_ok(x, "test:b", "2");
    join_ok(x, "test:c", "3");
    feed(x, "[\"4\",\"4\",\"test:slow\",\"phx_join\",{}]");
    assert_non_null(slow_chan);
    struct bcast *b = bcast_create("test:slow", "ev", "{}", 2, 0, 0);
    assert_non_null(b);
    chan_deliver(slow_chan, b);
    slow_chan = NULL;
    assert_int_equal(x->c->n_chans, 4);
    assert_int_equal(x->c->joins_pending, 1);

    router_conn_closed(x->c);
    assert_true(x->c->closed);
    /* Joined channels terminate; the pending join just goes. No output after close. */
    assert_int_equal(n_terminate, 3);
    assert_int_equal(x->c->n_chans, 0);
    assert_null(x->c->chans);
    assert_int_equal(x->c->joins_pending, 0);
    assert_int_equal(x->f->n_resume, 3); /* the three synchronous joins only */
    assert_false(subscribed(x, "test:a"));
    assert_false(subscribed(x, "test:b"));
    assert_false(subscribed(x, "test:c"));
    assert_false(subscribed(x, "test:slow"));
    assert_int_equal(atomic_load(&b->refs), 1);
    bcast_unref(b);
    expect_nothing(x);
    /* A closed conn ignores input. */
    feed(x, "[null,\"9\",\"phoenix\",\"heartbeat\",{}]");
    expect_nothing(x);
    router_conn_closed(x->c);
    assert_int_equal(n_terminate, 3);
}

/* ---- V1 --------------------------------------------------------------------------- */

static void v1_replies(void **state)
{
    struct fx *x = *state;
    feed(x, "{\"topic\":\"phoenix\",\"event\":\"heartbeat\",\"payload\":{},\"ref\":\"1\"}");
    expect_frames(x,
                  "{\"event\":\"phx_reply\",\"payload\":{\"response\":{},\"status\":\"ok\"},"
                  "\"ref\":\"1\",\"topic\":\"phoenix\"}",
                  NULL);
    feed(x, "{\"topic\":\"test:ok\",\"event\":\"phx_join\",\"payload\":{},\"ref\":\"2\","
            "\"join_ref\":\"2\"}");
    expect_frames(x,
                  "{\"event\":\"phx_reply\",\"payload\":{\"response\":{},\"status\":\"ok\"},"
                  "\"ref\":\"2\",\"topic\":\"test:ok\"}",
                  NULL);
    deliver(chan_of(x, "test:ok"), "test:ok", "ev", "{\"a\":1}");
    expect_frames(x, "{\"event\":\"ev\",\"payload\":{\"a\":1},\"ref\":null,\"topic\":\"test:ok\"}",
                  NULL);
    feed(x, "{\"topic\":\"test:ok\",\"event\":\"ping\",\"payload\":{},\"ref\":\"3\","
            "\"join_ref\":\"2\"}");
    expect_frames(x,
                  "{\"event\":\"phx_reply\",\"payload\":{\"response\":{\"echo\":\"ping\"},"
                  "\"status\":\"ok\"},\"ref\":\"3\",\"topic\":\"test:ok\"}",
                  NULL);
    feed(x, "{\"topic\":\"nope:1\",\"event\":\"phx_join\",\"payload\":{},\"ref\":\"4\","
            "\"join_ref\":\"4\"}");
    expect_frames(x,
                  "{\"event\":\"phx_reply\",\"payload\":{\"response\":{\"reason\":\"unmatched "
                  "topic\"},\"status\":\"error\"},\"ref\":\"4\",\"topic\":\"nope:1\"}",
                  NULL);
    feed(x, "{\"topic\":\"test:ok\",\"event\":\"phx_leave\",\"payload\":{},\"ref\":\"6\","
            "\"join_ref\":\"2\"}");
    expect_frames(x,
                  "{\"event\":\"phx_reply\",\"payload\":{\"response\":{},\"status\":\"ok\"},"
                  "\"ref\":\"6\",\"topic\":\"test:ok\"}",
                  "{\"event\":\"phx_close\",\"payload\":{},\"ref\":\"2\",\"topic\":\"test:ok\"}",
                  NULL);
    assert_int_equal(n_terminate, 1);
}

static void v1_join_without_join_ref(void **state)
{
    struct fx *x = *state;
    /* §11.4: a join without join_ref, then a duplicate: the close's ref is the join_ref
     * as it arrived, null. */
    feed(x, "{\"topic\":\"test:ok\",\"event\":\"phx_join\",\"payload\":{},\"ref\":\"7\"}");
    expect_frames(x,
                  "{\"event\":\"phx_reply\",\"payload\":{\"response\":{},\"status\":\"ok\"},"
                  "\"ref\":\"7\",\"topic\":\"test:ok\"}",
                  NULL);
    feed(x, "{\"topic\":\"test:ok\",\"event\":\"phx_join\",\"payload\":{},\"ref\":\"8\"}");
    assert_int_equal(x->f->n_out, 2);
    expect_sent(x, "{\"event\":\"phx_reply\",\"payload\":{\"response\":{},\"status\":"
                   "\"ok\"},\"ref\":\"8\",\"topic\":\"test:ok\"}");
    expect_sent(x, "{\"event\":\"phx_close\",\"payload\":{},\"ref\":null,\"topic\":\"test:ok\"}");
    fake_clear(x->f);
    assert_int_equal(n_terminate, 1);
}

/* Registers the test channel type once. */
static int group_setup(void **state)
{
    (void)state;
    log_min_level = LOG_ERROR;
    return router_add_type(&test_channel);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(heartbeat_ok, setup_v2, teardown),
        cmocka_unit_test_setup_teardown(heartbeat_with_jr_and_numeric_ref, setup_v2, teardown),
        cmocka_unit_test_setup_teardown(phoenix_other_event_unmatched, setup_v2, teardown),
        cmocka_unit_test_setup_teardown(non_string_topic_echoed, setup_v2, teardown),
        cmocka_unit_test_setup_teardown(join_ok_reply, setup_v2, teardown),
        cmocka_unit_test_setup_teardown(join_unmatched_prefix, setup_v2, teardown),
        cmocka_unit_test_setup_teardown(join_refused, setup_v2, teardown),
        cmocka_unit_test_setup_teardown(join_null_jr_uses_ref, setup_v2, teardown),
        cmocka_unit_test_setup_teardown(join_null_jr_reply_and_close, setup_v2, teardown),
        cmocka_unit_test_setup_teardown(duplicate_join, setup_v2, teardown),
        cmocka_unit_test_setup_teardown(max_channels, setup_v2, teardown),
        cmocka_unit_test_setup_teardown(push_unjoined, setup_v2, teardown),
        cmocka_unit_test_setup_teardown(push_current_and_null_jr, setup_v2, teardown),
        cmocka_unit_test_setup_teardown(push_stale_jr_dropped, setup_v2, teardown),
        cmocka_unit_test_setup_teardown(leave_matching_jr, setup_v2, teardown),
        cmocka_unit_test_setup_teardown(leave_null_jr, setup_v2, teardown),
        cmocka_unit_test_setup_teardown(leave_stale_jr, setup_v2, teardown),
        cmocka_unit_test_setup_teardown(leave_unjoined, setup_v2, teardown),
        cmocka_unit_test_setup_teardown(broadcast_to_joined, setup_v2, teardown),
        cmocka_unit_test_setup_teardown(broadcast_held_while_joining, setup_v2, teardown),
        cmocka_unit_test_setup_teardown(slow_join_refused_drops_held, setup_v2, teardown),
        cmocka_unit_test_setup_teardown(conn_closed_terminates_all, setup_v2, teardown),
        cmocka_unit_test_setup_teardown(v1_replies, setup_v1, teardown),
        cmocka_unit_test_setup_teardown(v1_join_without_join_ref, setup_v1, teardown),
    };
    return cmocka_run_group_tests_name("router", tests, group_setup, NULL);
}
