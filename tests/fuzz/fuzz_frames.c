/* fuzz_frames.c - libFuzzer target for a WebSocket session (src/ws.h): the bytes a
 * client sends after the handshake go through wslay's frame parser, our frame checks
 * (ws_read/frame_start), the UTF-8 check, the codec, the router and the channels.
 *
 * Input: one control byte, then the bytes that arrived with the handshake (`extra`).
 *   bit 0     vsn: 0 = V1, 1 = V2
 *   bit 1     store: 0 = every request fails with RC_ENOTFOUND and the worker's
 *             environment has no bus, presence or limits; 1 = the store grants joins
 *             and writes, and a real hub, never started, is the sink of a local bus and
 *             serves presence and limits (broadcasts go to its own idle workers: this
 *             session never receives one)
 *   bits 2-3  the member's role when granted: member, owner, viewer, editor
 *   bits 4-5  the end of the session: 0 abort at once (ws_conn_create, ws_conn_abort,
 *             worker_free: the loop never turns, so input stops at the first join and
 *             its store completion is left in the inbox for worker_free); 1 the peer
 *             has gone before the input is read (EOF); 2 server shutdown (close 1001,
 *             then the peer closes); 3 idle timeout, then the close deadline
 *   bit 6     tight: max_channels 3 instead of 100, an outbound queue of 8 KiB instead of
 *             1 MiB, the smallest socket send buffer, a client that reads only when the
 *             server has nothing else to do (writes block: partial writes, EPOLLOUT, slow
 *             consumers), and the second half of the input sent through the socket
 *             instead of with the handshake (recv)
 *   bit 7     rate limit 1/s, burst 2 (with a hub only)
 *
 * The worker is never started: this file turns its loop by hand, as worker_main does
 * (epoll without waiting, the inbox for store completions, then the before-sleep pass:
 * flush and free), until nothing is left to do. Store completions are posted to the
 * worker's inbox at once from submit (on this thread), so a join pauses the input and
 * the next turn resumes it, exactly as on a server. Everything the server writes is read
 * from the other end of the socketpair and checked: server frames are final, unmasked,
 * text/pong/close; a text frame decodes as a Phoenix message of the session's vsn;
 * nothing follows the close frame, whose code is one we use.
 *
 * FUZZ_LOG=1 keeps the server's log lines, FUZZ_DUMP=1 prints what it wrote. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "codec.h"
#include "config.h"
#include "bus.h"
#include "channel.h"
#include "conn.h"
#include "hub.h"
#include "presence.h"
#include "router.h"
#include "store.h"
#include "user_counter.h"
#include "util/log.h"
#include "util/utf8.h"
#include "worker.h"
#include "ws.h"

#define USER "fuzz"
/* The loop's clock never moves by itself: time is what the end phase says. */
#define START_MS 1000000
/* A session that still has work after this many turns is stuck (a bug). */
#define MAX_TURNS 100000
/* Server output kept for checking; more than the outbound queue limit allows per turn. */
#define OUT_MAX (8u << 20)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts (a crash for libFuzzer) with a message when an invariant does not hold. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_frames: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

enum end_mode {
    END_ABORT = 0,
    END_PEER_GONE = 1,
    END_SHUTDOWN = 2,
    END_IDLE = 3,
};

/* ---- the fake store ------------------------------------------------------------------ */

struct fake_store {
    struct store base; /* first: the store API sees a struct store */
    bool grant;
    const char *role;
    int64_t next_id;
    unsigned submitted;
};

/* Fills a member row for req's room and user. */
static void fake_member(struct fake_store *fs, struct store_req *req)
{
    req->member.room_id = strdup(req->room_id ? req->room_id : "");
    req->member.user_id = strdup(req->user_id ? req->user_id : "");
    req->member.role = strdup(fs->role);
    req->member.name = strdup("Fuzz User");
    req->member.avatar_url = NULL;
    req->room.id = strdup(req->room_id ? req->room_id : "");
    req->room.name = strdup("Fuzz Room");
    req->room.last_seq = 7;
    req->room.doc_last_seq = 5;
    snprintf(req->room.created_at, sizeof req->room.created_at, "2025-06-01T12:00:00Z");
}

/* One message row (seq) for a history. */
static void fake_msg(struct store_msg *m, const struct store_req *req, int64_t seq)
{
    m->id = 100 + seq;
    m->seq = seq;
    m->room_id = strdup(req->room_id ? req->room_id : "");
    m->user_id = strdup("someone");
    m->body = strdup("hi \"there\"\n");
    snprintf(m->inserted_at, sizeof m->inserted_at, "2025-06-01T12:00:00Z");
}

/* store_ops.submit: completes at once, on this thread, through req->done (which posts
 * the completion to the worker's inbox, as a store thread would). */
static void fake_submit(struct store *s, struct store_req *req)
{
    struct fake_store *fs = (struct fake_store *)s;
    fs->submitted++;
    req->rc = RC_ENOTFOUND;
    if (fs->grant) {
        switch (req->op) {
        case STORE_JOIN_ROOM:
            fake_member(fs, req);
            if (req->limit > 0) {
                req->msgs = calloc(2, sizeof *req->msgs);
                if (req->msgs) {
                    req->n_msgs = 2;
                    fake_msg(&req->msgs[0], req, 6);
                    fake_msg(&req->msgs[1], req, 7);
                }
            }
            req->rc = 0;
            break;
        case STORE_DOC_JOIN:
            fake_member(fs, req);
            req->docops = calloc(1, sizeof *req->docops);
            if (req->docops) {
                req->n_docops = 1;
                req->docops->id = 1;
                req->docops->seq = 5;
                req->docops->room_id = strdup(req->room_id);
                req->docops->user_id = strdup("someone");
                req->docops->operation = strdup("insert");
                req->docops->data = strdup("{\"at\":0,\"text\":\"x\"}");
            }
            req->rc = 0;
            break;
        case STORE_NOTIFY_UNREAD:
            req->notifs = calloc(1, sizeof *req->notifs);
            if (req->notifs) {
                req->n_notifs = 1;
                req->notifs->id = 3;
                req->notifs->user_id = strdup(req->user_id);
                req->notifs->payload = strdup("{\"data\":null,\"message\":\"hello\"}");
            }
            req->id = 3;
            req->rc = 0;
            break;
        case STORE_MESSAGE_ADD:
            req->msg.id = ++fs->next_id;
            req->msg.seq = 7 + fs->next_id;
            req->rc = 0;
            break;
        case STORE_NOTIFY_READ: req->rc = req->id <= 3 ? 0 : RC_ENOTFOUND; break;
        case STORE_DOC_EDIT:
            req->docop.id = ++fs->next_id;
            req->docop.seq = 5 + fs->next_id;
            req->rc = 0;
            break;
        default: break;
        }
    }
    req->done(req);
}

/* store_ops.close: nothing to stop. */
static void fake_close(struct store *s)
{
}

static const struct store_ops fake_ops = {
    .scheme = "fuzz:",
    .submit = fake_submit,
    .close = fake_close,
};

/* ---- the worker loop, by hand ------------------------------------------------------- */

/* What the peer (the client end of the socketpair) has received. */
struct peer {
    int fd;
    bool lazy; /* reads only when the server is idle */
    uint8_t *out;
    size_t out_len;
};

/* Reads what the server wrote, keeping it for the checks; returns the bytes read. */
static size_t peer_read(struct peer *p)
{
    if (p->fd < 0)
        return 0;
    uint8_t buf[65536];
    size_t total = 0;
    for (;;) {
        ssize_t n = read(p->fd, buf, sizeof buf);
        if (n <= 0)
            return total;
        total += (size_t)n;
        size_t keep = (size_t)n;
        if (p->out_len + keep > OUT_MAX)
            keep = OUT_MAX - p->out_len;
        if (keep) {
            uint8_t *o = realloc(p->out, p->out_len + keep);
            if (!o)
                return total;
            p->out = o;
            memcpy(p->out + p->out_len, buf, keep);
            p->out_len += keep;
        }
    }
}

/* Turns the loop until there is nothing left to do. */
static void run(struct worker *w, struct peer *p)
{
    for (int turn = 0;; turn++) {
        if (turn == MAX_TURNS) {
            fprintf(stderr, "fuzz_frames: the session is still busy after %d turns\n", turn);
            abort();
        }
        struct epoll_event evs[8];
        int n = epoll_wait(w->epfd, evs, 8, 0);
        worker_dispatch(w, evs, n);
        bool busy = n > 0 || w->conns.flush || w->conns.dead || w->in_head;
        worker_before_sleep(w);
        if (!p->lazy)
            peer_read(p);
        if (!busy && !(p->lazy && peer_read(p)))
            return;
    }
}

/* ---- checks on the server's output ---------------------------------------------------- */

/* True for the close codes the server sends. */
static bool our_close_code(unsigned code)
{
    return code == 1000 || code == 1001 || code == 1002 || code == 1007 || code == 1009 ||
           code == 1011 || code == 1013;
}

/* FUZZ_DUMP=1: print what the server wrote (to look at what a reproducer does). */
static bool dump;

/* Parses the server's frames and checks each. */
static void check_output(const struct peer *p, enum codec_vsn vsn)
{
    size_t i = 0;
    bool closed = false;
    while (i < p->out_len) {
        const uint8_t *f = p->out + i;
        size_t left = p->out_len - i;
        if (left < 2)
            break;      /* cut off by OUT_MAX */
        CHECK(!closed); /* nothing after our close frame */
        uint8_t op = f[0] & 0x0f;
        CHECK((f[0] & 0xf0) == 0x80); /* FIN, no RSV */
        CHECK(!(f[1] & 0x80));        /* server frames are not masked */
        size_t hdr = 2;
        uint64_t len = f[1] & 0x7f;
        if (len == 126) {
            if (left < 4)
                break;
            len = (uint64_t)f[2] << 8 | f[3];
            CHECK(len >= 126);
            hdr = 4;
        } else if (len == 127) {
            if (left < 10)
                break;
            len = 0;
            for (int k = 0; k < 8; k++)
                len = len << 8 | f[2 + k];
            CHECK(len > 0xffff);
            hdr = 10;
        }
        if (left - hdr < len)
            break;
        const uint8_t *pl = f + hdr;
        if (dump)
            fprintf(stderr, "<< op=%u len=%llu %.*s\n", op, (unsigned long long)len,
                    op == 0x1 ? (int)len : 0, (const char *)pl);
        switch (op) {
        case 0x1: {
            CHECK(utf8_valid((const char *)pl, len));
            struct phx_in m;
            int rc = codec_decode_text(vsn, (const char *)pl, len, 2048, &m);
            if (rc) {
                fprintf(stderr, "fuzz_frames: server frame does not decode (rc %d): %.*s\n", rc,
                        (int)len, (const char *)pl);
                abort();
            }
            codec_in_cleanup(&m);
            break;
        }
        case 0x8:
            CHECK(len == 2 && our_close_code((unsigned)pl[0] << 8 | pl[1]));
            closed = true;
            break;
        case 0xA: CHECK(len <= 125); break;
        default: fprintf(stderr, "fuzz_frames: server sent opcode %u\n", op); abort();
        }
        i += hdr + (size_t)len;
    }
}

/* ---- the target ------------------------------------------------------------------------ */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    /* A write to a peer that has gone must fail with EPIPE, not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    /* FUZZ_LOG=1 keeps the server's log lines (slow). */
    const char *l = getenv("FUZZ_LOG");
    if (!l || strcmp(l, "1"))
        log_min_level = LOG_ERROR + 1;
    const char *d = getenv("FUZZ_DUMP");
    dump = d && !strcmp(d, "1");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const roles[4] = {"member", "owner", "viewer", "editor"};
    if (size < 1)
        return 0;
    uint8_t ctl = data[0];
    enum codec_vsn vsn = ctl & 1 ? CODEC_V2 : CODEC_V1;
    bool grant = ctl & 2;
    bool tight = ctl & 0x40;
    enum end_mode end = (enum end_mode)((ctl >> 4) & 3);
    const uint8_t *extra = data + 1;
    size_t extra_len = size - 1;
    size_t sent_len = tight ? extra_len / 2 : 0; /* the tail, through the socket */
    extra_len -= sent_len;

    struct config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.env = (char *)"dev";
    cfg.workers = 1;
    cfg.idle_timeout = 60;
    cfg.max_frame_bytes = 65536;
    cfg.max_json_depth = 32;
    cfg.max_channels = tight ? 3 : 100;
    cfg.outbound_queue_bytes = tight ? 8192 : 1 << 20;
    cfg.rate_limit = ctl & 0x80 ? 1 : 0;
    cfg.rate_burst = 2;
    cfg.max_conns_per_user = 10;
    cfg.presence_batch_ms = 0;

    struct fake_store fs = {.base.ops = &fake_ops, .grant = grant, .role = roles[(ctl >> 2) & 3]};
    struct hub *hub = NULL;
    struct worker_env bare = {.cfg = &cfg};
    struct worker_env *env = &bare;
    if (grant) {
        hub = hub_create(&cfg);
        env = hub_env(hub);
        struct bus_sink sink = hub_sink(hub);
        env->bus = bus_local_create(&sink);
        env->presence = presence_create("fuzz-node", NULL, NULL);
    }
    env->store = &fs.base;
    struct worker *w = worker_create(0, env, 50);
    w->topics = chan_index_create();
    w->now_ms = START_MS;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    CHECK(w->epfd >= 0 && w->evfd >= 0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    CHECK(epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->evfd, &ev) == 0);

    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    struct peer peer = {.fd = sv[1], .lazy = tight};
    if (tight) {
        int one = 1; /* the kernel's minimum, a few KiB */
        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &one, sizeof one);
        const uint8_t *p = extra + extra_len;
        size_t left = sent_len;
        while (left) {
            ssize_t n = write(peer.fd, p, left);
            if (n <= 0)
                break; /* the rest does not fit: it is not sent */
            p += n;
            left -= (size_t)n;
        }
    }
    if (end == END_PEER_GONE) {
        close(peer.fd);
        peer.fd = -1;
    }

    /* The handshake took one of the user's socket slots; the session gives it back. */
    if (env->uc)
        CHECK(user_counter_acquire(env->uc, USER, cfg.max_conns_per_user));
    char *user = strdup(USER);
    CHECK(user);
    struct ws_identity id = {.user_id = user, .vsn = vsn};
    ws_conn_create(w, sv[0], extra, extra_len, &id);
    if (end != END_ABORT)
        run(w, &peer);

    switch (end) {
    case END_ABORT:
    case END_PEER_GONE: break;
    case END_SHUTDOWN:
        /* What the shutdown item does; then the client answers by going away. */
        w->stopping = true;
        for (struct conn *c = w->conns.all; c; c = c->_next)
            c->ops->close(c, 1001, "server shutting down");
        run(w, &peer);
        if (peer.fd >= 0) {
            close(peer.fd);
            peer.fd = -1;
        }
        run(w, &peer);
        break;
    case END_IDLE:
        w->now_ms += cfg.idle_timeout * 1000;
        for (struct conn *c = w->conns.all, *nx; c; c = nx) {
            nx = c->_next;
            c->ops->tick(c, w->now_ms);
        }
        run(w, &peer);
        w->now_ms += 3000; /* past the close handshake's deadline */
        for (struct conn *c = w->conns.all, *nx; c; c = nx) {
            nx = c->_next;
            c->ops->tick(c, w->now_ms);
        }
        run(w, &peer);
        break;
    }

    /* As worker_main ends: anything left is closed hard. */
    while (w->conns.all) {
        ws_conn_abort(w->conns.all);
        worker_before_sleep(w);
    }
    worker_before_sleep(w);
    if (end != END_ABORT) {
        run(w, &peer);
        CHECK(!w->in_head);
    }
    CHECK(!w->conns.all && !w->conns.flush && !w->conns.dead);
    CHECK(atomic_load(&w->conns.n) == 0);

    if (peer.fd >= 0)
        close(peer.fd);
    check_output(&peer, vsn);
    free(peer.out);

    struct chan_index *topics = w->topics;
    worker_free(w); /* finishes the store completions still in the inbox */
    chan_index_destroy(topics);
    if (hub) {
        bus_stop(env->bus);
        presence_destroy(env->presence);
        hub_free(hub);
    }
    return 0;
}
