/* test_channel.c - the per-worker channel index and its watches (chan_watch): a chan that
 * watches another topic gets that topic's broadcasts through its type's watch hook, in
 * order with its own (held while it joins), never as frames, and loses every watch when
 * it ends. Then the watcher it exists for, notifications:<user>, counting unread messages
 * of the user's rooms from those broadcasts and from read marks. Driven on a worker that
 * is never started (its inbox turned by hand), with conns whose transport writes into one
 * shared log and a store that answers what the test tells it to. */
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
#include "presence.h"
#include "store.h"
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

/* A store that keeps what is submitted until the test answers it. */
struct fake_store {
    struct store base;
    struct store_req *q[8];
    size_t n;
};

/* store_ops.submit: queued for the test. */
static void fake_submit(struct store *s, struct store_req *req)
{
    struct fake_store *f = (struct fake_store *)s;
    assert_true(f->n < 8);
    f->q[f->n++] = req;
}

static const struct store_ops fake_store_ops = {.scheme = "fake:", .submit = fake_submit};

struct fx {
    struct config cfg;
    struct worker_env env;
    struct fake_store store;
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
    x->store.base.ops = &fake_store_ops;
    x->env.store = &x->store.base;
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

/* Ends what is left (requests still queued fail), checks the index is empty, frees
 * everything. */
static int teardown(void **state)
{
    struct fx *x = *state;
    for (int i = 0; i < NCONNS; i++) {
        while (x->c[i]->chans)
            chan_end(x->c[i]->chans);
        x->c[i]->closed = true;
    }
    for (size_t i = 0; i < x->store.n; i++) {
        x->store.q[i]->rc = RC_ESTORE;
        store_complete(x->store.q[i]);
    }
    worker_drain_inbox(x->w);
    for (int i = 0; i < NCONNS; i++)
        conn_release(x->c[i]);
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
    expect_journal(
        "A frame [\"1\",\"1\",\"w:a\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]",
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

/* ---- notifications:<user> -------------------------------------------------------- */

/* The oldest request the store holds, which must be for op; the test answers it. */
static struct store_req *take_req(struct fx *x, enum store_op op)
{
    assert_true(x->store.n > 0);
    struct store_req *req = x->store.q[0];
    memmove(x->store.q, x->store.q + 1, --x->store.n * sizeof *x->store.q);
    assert_int_equal(req->op, op);
    return req;
}

/* Completes req and runs its continuation on the worker. */
static void answer(struct fx *x, struct store_req *req)
{
    store_complete(req);
    worker_drain_inbox(x->w);
}

/* Answers the oldest request, a read of A's rooms, with one room "r" at (last_seq,
 * last_read_seq, unread). */
static void answer_rooms(struct fx *x, int64_t last_seq, int64_t read, int64_t unread)
{
    struct store_req *req = take_req(x, STORE_USER_ROOMS);
    assert_string_equal(req->user_id, "A");
    req->user_rooms = calloc(1, sizeof *req->user_rooms);
    req->user_rooms[0] = (struct store_user_room){.room_id = strdup("r"),
                                                  .name = strdup("R"),
                                                  .role = strdup("member"),
                                                  .last_seq = last_seq,
                                                  .last_read_seq = read,
                                                  .unread = unread};
    req->n_user_rooms = 1;
    answer(x, req);
}

/* A room change broadcast on room:r: event about message msg_seq by author. */
static void change(struct fx *x, const char *event, int64_t msg_seq, const char *author)
{
    static int64_t version;
    struct bcast *b = bcast_create("room:r", event, "{}", 2, 0, ++version);
    assert_non_null(b);
    b->msg_seq = msg_seq;
    b->user_id = strdup(author);
    chan_index_deliver(x->w->topics, b);
    bcast_unref(b);
}

/* A read mark's unread event on notifications:A. */
static void read_mark(struct fx *x, int64_t unread, int64_t last_seq, int64_t read)
{
    char p[128];
    snprintf(p, sizeof p,
             "{\"last_read_seq\":%lld,\"last_seq\":%lld,\"room_id\":\"r\",\"unread\":%lld}",
             (long long)read, (long long)last_seq, (long long)unread);
    struct bcast *b = bcast_create("notifications:A", "unread", p, strlen(p), 0, 0);
    assert_non_null(b);
    chan_index_deliver(x->w->topics, b);
    bcast_unref(b);
}

/* The push of the channel's own count (jr "1"). */
#define PUSHED(unread, last_seq, read)                                                             \
    "A frame [\"1\",null,\"notifications:A\",\"unread\",{\"last_read_seq\":" #read                 \
    ",\"last_seq\":" #last_seq ",\"room_id\":\"r\",\"unread\":" #unread "}]"
/* A read mark's event, passed on as it came. */
#define PASSED(unread, last_seq, read)                                                             \
    "A frame [null,null,\"notifications:A\",\"unread\",{\"last_read_seq\":" #read                  \
    ",\"last_seq\":" #last_seq ",\"room_id\":\"r\",\"unread\":" #unread "}]"

/* Joins notifications:A with room r at (5, 3, 2); a message by B committed between the two
 * room reads (6, in the second) and one after it (7) arrive while the join runs. */
static struct chan *join_notifications(struct fx *x)
{
    struct chan *ch =
        chan_create(x->c[0], &notifications_channel, "notifications:A", 15, "\"1\"", "\"1\"");
    notifications_channel.join(ch, NULL);
    answer_rooms(x, 5, 3, 2);
    assert_int_equal(chan_index_watchers(x->w->topics, "room:r"), 1);
    change(x, "new_message", 6, "B");
    change(x, "new_message", 7, "B");
    answer_rooms(x, 6, 3, 3);
    struct store_req *n = take_req(x, STORE_NOTIFY_UNREAD);
    n->id = 0;
    answer(x, n);
    expect_journal(
        "A frame "
        "[\"1\",\"1\",\"notifications:A\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]",
        "A frame [\"1\",null,\"notifications:A\",\"unread_notifications\",{\"notifications\":[]}]",
        PUSHED(4, 7, 3), NULL);
    return ch;
}

static void notifications_count_others_messages(void **state)
{
    struct fx *x = *state;
    join_notifications(x);
    change(x, "new_message", 8, "A"); /* her own */
    change(x, "new_message", 7, "B"); /* again */
    change(x, "message_updated", 7, "B");
    change(x, "new_message", 9, "C");
    expect_journal(PUSHED(5, 9, 3), NULL);
    change(x, "message_deleted", 9, "C");
    change(x, "message_deleted", 8, "A"); /* her own: never counted */
    change(x, "message_deleted", 2, "B"); /* before the cursor */
    change(x, "message_deleted", 6, "B"); /* unread, from the snapshot */
    expect_journal(PUSHED(4, 9, 3), PUSHED(3, 9, 3), NULL);
}

static void notifications_take_read_marks(void **state)
{
    struct fx *x = *state;
    join_notifications(x);
    read_mark(x, 1, 7, 6); /* a mark that knows every message: taken and passed on */
    change(x, "new_message", 8, "B");
    expect_journal(PASSED(1, 7, 6), PUSHED(2, 8, 6), NULL);
    read_mark(x, 2, 7, 5); /* an older mark: dropped */
    read_mark(x, 1, 7, 6); /* the same cursor, fewer messages known: dropped */
    expect_journal(NULL);
    read_mark(x, 0, 9, 9);                /* ahead of the room's broadcasts */
    change(x, "new_message", 9, "B");     /* counted in the mark already */
    change(x, "message_deleted", 8, "B"); /* read */
    expect_journal(PASSED(0, 9, 9), NULL);
}

static void notifications_merge_a_mark_that_raced_messages(void **state)
{
    struct fx *x = *state;
    join_notifications(x); /* 7 counted live */
    change(x, "new_message", 8, "B");
    change(x, "new_message", 9, "A");
    change(x, "new_message", 10, "B");
    expect_journal(PUSHED(5, 8, 3), PUSHED(6, 10, 3), NULL);
    /* a mark at 7 made before 8-10 arrived: its count plus the 2 others' since */
    read_mark(x, 0, 7, 7);
    expect_journal(PUSHED(2, 10, 7), NULL);
    change(x, "message_deleted", 10, "B");
    change(x, "message_deleted", 7, "B"); /* read by then */
    expect_journal(PUSHED(1, 10, 7), NULL);
}

static void notifications_join_fails_cleanly(void **state)
{
    struct fx *x = *state;
    struct chan *ch =
        chan_create(x->c[0], &notifications_channel, "notifications:A", 15, "\"1\"", "\"1\"");
    notifications_channel.join(ch, NULL);
    answer_rooms(x, 5, 3, 2);
    struct store_req *r = take_req(x, STORE_USER_ROOMS);
    r->rc = RC_ESTORE;
    answer(x, r);
    expect_journal("A frame [\"1\",\"1\",\"notifications:A\",\"phx_reply\",{\"response\":{"
                   "\"reason\":\"unavailable\"},\"status\":\"error\"}]",
                   NULL);
    assert_int_equal(chan_index_topics(x->w->topics), 0);
    answer(x, take_req(x, STORE_NOTIFY_UNREAD)); /* finds the chan gone */
    change(x, "new_message", 6, "B");
    expect_journal(NULL);
}

/* ---- realtime:<name>, private ---------------------------------------------------- */

/* The frames of a private realtime channel on room r (jr "1"). */
#define RT_REPLY(ref, response, status)                                                            \
    "A frame [\"1\"," ref ",\"realtime:r\",\"phx_reply\",{\"response\":" response                  \
    ",\"status\":\"" status "\"}]"
#define RT_STATE "A frame [\"1\",null,\"realtime:r\",\"presence_state\",{}]"
/* A watched broadcast of room r as the harness sends it: the room form, {"v":N}. */
#define RT_SEEN(v) "A frame [null,null,\"room:r\",\"broadcast\",{\"v\":" #v "}]"

/* A committed broadcast of room r at version v by author, through the index. */
static void room_broadcast(struct fx *x, int64_t v, const char *author)
{
    char p[32];
    snprintf(p, sizeof p, "{\"v\":%lld}", (long long)v);
    struct bcast *b = bcast_create("room:r", "broadcast", p, strlen(p), 0, v);
    assert_non_null(b);
    b->user_id = strdup(author);
    chan_index_deliver(x->w->topics, b);
    bcast_unref(b);
}

/* A joins realtime:r privately (config.broadcast.self as given), the room at version 3
 * with nothing to replay; a broadcast at 3 (in the snapshot) and one at 4 arrive while
 * the join reads. */
static struct chan *join_private(struct fx *x, bool self)
{
    x->env.presence = presence_create("n1", NULL, NULL);
    struct chan *ch =
        chan_create(x->c[0], &realtime_channel, "realtime:r", 10, "\"1\"", "\"1\"");
    json_t *params = json_pack("{s:{s:b,s:{s:b}}}", "config", "private", 1, "broadcast",
                               "self", self);
    realtime_channel.join(ch, params);
    json_decref(params);
    assert_int_equal(chan_index_watchers(x->w->topics, "room:r"), 1);
    room_broadcast(x, 3, "B");
    room_broadcast(x, 4, "B");
    struct store_req *req = take_req(x, STORE_BROADCAST_JOIN);
    assert_string_equal(req->room_id, "r");
    assert_string_equal(req->user_id, "A");
    assert_int_equal(req->since_ms, -1); /* no replay asked */
    req->member.role = strdup("member");
    req->room.version = 3;
    answer(x, req);
    expect_journal(RT_REPLY("\"1\"", "{}", "ok"), RT_STATE, RT_SEEN(4), NULL);
    return ch;
}

/* A sends a broadcast (ref "2"): a write of the room's log, not a fan-out. */
static struct store_req *send_broadcast(struct fx *x, struct chan *ch)
{
    struct phx_in m = {0};
    m.payload = json_pack("{s:s,s:s,s:{s:i}}", "type", "broadcast", "event", "cursor",
                          "payload", "x", 1);
    realtime_channel.handle_in(ch, "broadcast", &m, "\"2\"");
    json_decref(m.payload);
    struct store_req *req = take_req(x, STORE_BROADCAST_ADD);
    assert_string_equal(req->room_id, "r");
    assert_string_equal(req->name, "cursor");
    assert_string_equal(req->data, "{\"x\":1}");
    return req;
}

/* Frees the presence the join made (after teardown's ends). */
static int teardown_presence(void **state)
{
    struct fx *x = *state;
    struct presence *p = x->env.presence;
    int rc = teardown(state);
    presence_destroy(p);
    return rc;
}

static void realtime_private_own_broadcast_seen_before_its_commit(void **state)
{
    struct fx *x = *state;
    struct chan *ch = join_private(x, false);
    struct store_req *w = send_broadcast(x, ch);
    room_broadcast(x, 5, "B"); /* another user's: nothing to wait for */
    room_broadcast(x, 6, "A"); /* maybe A's own: waits for the commit */
    room_broadcast(x, 7, "B"); /* behind it, in order */
    expect_journal(RT_SEEN(5), NULL);
    w->version = 6;
    answer(x, w);
    expect_journal(RT_REPLY("\"2\"", "{}", "ok"), RT_SEEN(7), NULL);
    room_broadcast(x, 8, "A"); /* A's other device */
    expect_journal(RT_SEEN(8), NULL);
}

static void realtime_private_own_broadcast_seen_after_its_commit(void **state)
{
    struct fx *x = *state;
    struct chan *ch = join_private(x, false);
    struct store_req *w = send_broadcast(x, ch);
    w->version = 5;
    answer(x, w);
    expect_journal(RT_REPLY("\"2\"", "{}", "ok"), NULL);
    room_broadcast(x, 5, "A"); /* its own: dropped */
    room_broadcast(x, 5, "A"); /* a repeat */
    room_broadcast(x, 6, "A");
    expect_journal(RT_SEEN(6), NULL);
}

static void realtime_private_refused_write_releases_what_waited(void **state)
{
    struct fx *x = *state;
    struct chan *ch = join_private(x, false);
    struct store_req *w = send_broadcast(x, ch);
    room_broadcast(x, 5, "A"); /* A's other device, while the write runs */
    expect_journal(NULL);
    w->rc = RC_ENOTFOUND;
    answer(x, w);
    expect_journal(RT_REPLY("\"2\"", "{\"reason\":\"not_found\"}", "error"), RT_SEEN(5), NULL);
}

static void realtime_private_self_gets_its_own(void **state)
{
    struct fx *x = *state;
    struct chan *ch = join_private(x, true);
    struct store_req *w = send_broadcast(x, ch);
    room_broadcast(x, 5, "A");
    expect_journal(RT_SEEN(5), NULL);
    w->version = 5;
    answer(x, w);
    expect_journal(RT_REPLY("\"2\"", "{}", "ok"), NULL);
}

static void realtime_private_replays_then_goes_live(void **state)
{
    struct fx *x = *state;
    x->env.presence = presence_create("n1", NULL, NULL);
    struct chan *ch =
        chan_create(x->c[0], &realtime_channel, "realtime:r", 10, "\"1\"", "\"1\"");
    json_t *params = json_pack("{s:{s:b,s:{s:{s:i,s:i,s:s}}}}", "config", "private", 1,
                               "broadcast", "replay", "since", 1000, "limit", 50, "after", "1");
    realtime_channel.join(ch, params);
    json_decref(params);
    struct store_req *req = take_req(x, STORE_BROADCAST_JOIN);
    assert_int_equal(req->since_ms, 1000);
    assert_int_equal(req->since_version, 1);
    assert_int_equal(req->limit, 50);
    room_broadcast(x, 3, "B"); /* in the replay */
    room_broadcast(x, 4, "B"); /* after the snapshot */
    req->member.role = strdup("viewer");
    req->room.version = 3;
    req->changes = calloc(2, sizeof *req->changes);
    req->n_changes = 2;
    req->changes[0].version = 2;
    req->changes[0].payload = strdup("{\"event\":\"e\",\"payload\":[1],\"user_id\":\"B\"}");
    req->changes[1].version = 3;
    req->changes[1].payload = strdup("{\"event\":\"e\",\"payload\":{\"k\":2},\"user_id\":\"\"}");
    answer(x, req);
    expect_journal(RT_REPLY("\"1\"", "{}", "ok"),
                   "A frame [\"1\",null,\"realtime:r\",\"broadcast\",{\"event\":\"e\",\"meta\":{"
                   "\"id\":\"2\",\"replayed\":true},\"payload\":[1],\"type\":\"broadcast\"}]",
                   "A frame [\"1\",null,\"realtime:r\",\"broadcast\",{\"event\":\"e\",\"meta\":{"
                   "\"id\":\"3\",\"replayed\":true},\"payload\":{\"k\":2},\"type\":\"broadcast\"}]",
                   RT_STATE, RT_SEEN(4), NULL);
    /* a viewer listens but may not send */
    struct phx_in m = {0};
    m.payload = json_pack("{s:s,s:s}", "type", "broadcast", "event", "cursor");
    realtime_channel.handle_in(ch, "broadcast", &m, "\"2\"");
    json_decref(m.payload);
    expect_journal(RT_REPLY("\"2\"", "{\"reason\":\"insufficient_permissions\"}", "error"), NULL);
    assert_int_equal(x->store.n, 0);
}

static void realtime_refuses_what_it_does_not_serve(void **state)
{
    struct fx *x = *state;
    x->env.presence = presence_create("n1", NULL, NULL);
    struct chan *ch =
        chan_create(x->c[0], &realtime_channel, "realtime:r", 10, "\"1\"", "\"1\"");
    json_t *params = json_pack("{s:{s:[{s:s}]}}", "config", "postgres_changes", "event", "*");
    realtime_channel.join(ch, params);
    json_decref(params);
    expect_journal(RT_REPLY("\"1\"", "{\"reason\":\"postgres_changes is not supported by rowcast\"}",
                            "error"),
                   NULL);
    ch = chan_create(x->c[0], &realtime_channel, "realtime:r", 10, "\"1\"", "\"1\"");
    params = json_pack("{s:{s:b,s:{s:{s:s}}}}", "config", "private", 1, "broadcast", "replay",
                       "since", "yesterday");
    realtime_channel.join(ch, params);
    json_decref(params);
    expect_journal(RT_REPLY("\"1\"", "{\"reason\":\"invalid_replay\"}", "error"), NULL);
    ch = chan_create(x->c[0], &realtime_channel, "realtime:r", 10, "\"1\"", "\"1\"");
    params = json_pack("{s:{s:b}}", "config", "private", 1);
    realtime_channel.join(ch, params);
    json_decref(params);
    struct store_req *req = take_req(x, STORE_BROADCAST_JOIN);
    req->rc = RC_EFORBIDDEN;
    answer(x, req);
    expect_journal(RT_REPLY("\"1\"", "{\"reason\":\"unauthorized\"}", "error"), NULL);
    assert_int_equal(chan_index_topics(x->w->topics), 0);
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
        cmocka_unit_test_setup_teardown(notifications_count_others_messages, setup, teardown),
        cmocka_unit_test_setup_teardown(notifications_take_read_marks, setup, teardown),
        cmocka_unit_test_setup_teardown(notifications_merge_a_mark_that_raced_messages, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(notifications_join_fails_cleanly, setup, teardown),
        cmocka_unit_test_setup_teardown(realtime_private_own_broadcast_seen_before_its_commit,
                                        setup, teardown_presence),
        cmocka_unit_test_setup_teardown(realtime_private_own_broadcast_seen_after_its_commit,
                                        setup, teardown_presence),
        cmocka_unit_test_setup_teardown(realtime_private_refused_write_releases_what_waited,
                                        setup, teardown_presence),
        cmocka_unit_test_setup_teardown(realtime_private_self_gets_its_own, setup,
                                        teardown_presence),
        cmocka_unit_test_setup_teardown(realtime_private_replays_then_goes_live, setup,
                                        teardown_presence),
        cmocka_unit_test_setup_teardown(realtime_refuses_what_it_does_not_serve, setup,
                                        teardown_presence),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
