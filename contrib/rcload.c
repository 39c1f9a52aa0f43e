/*
 * rcload: load and benchmark tool for rowcast.
 *
 *   rcload SCENARIO --url http://127.0.0.1:4000 --api-key KEY [options]
 *
 * One thread, one epoll loop, non-blocking sockets: a minimal HTTP/1.1 keep-alive client
 * for the REST API and a minimal WebSocket client (RFC 6455, masked client frames) that
 * speaks the Phoenix Channels V2 JSON protocol (fanout --realtime: realtime-js's, with
 * binary user-broadcast frames). Every scenario creates its own rooms,
 * members and tokens through the REST API (names carry the pid, so runs never collide),
 * stops by itself within --timeout seconds, prints a text report and one final JSON line.
 * fanout --floor needs no rowcast: it runs against rcload's own minimal reference server
 * (a child process on 127.0.0.1), the floor rowcast's fan-out figures are set against.
 *
 * Only 127.0.0.0/8 targets are accepted: this is a tool for benchmarking a local server,
 * not for loading somebody else's. Client sockets are bound to 127.0.0.1-127.0.0.250 in
 * turn (with IP_BIND_ADDRESS_NO_PORT), so the run is not limited to one address's
 * ephemeral ports.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define NSEC 1000000000ull
#define MSEC 1000000ull
#define SRC_ADDRS 250           /* client sockets bind to 127.0.0.1 .. 127.0.0.250 */
#define MAX_FRAME (16u << 20)   /* frame limit; presence raises it with --conns */
#define MAX_SEQ_SPAN (1u << 24) /* seqs this far above a client's base are bogus */
#define SETUP_CONNS 16          /* keep-alive connections used for REST setup */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* Largest server frame or HTTP body we accept: MAX_FRAME, or more for presence,
   whose presence_state frames carry every key of the room. */
static size_t max_frame = MAX_FRAME;

/* ------------------------------------------------------------------------------------ */
/* Small utilities                                                                       */

/* Reallocates or aborts: without memory the tool cannot report anything useful. */
static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fputs("rcload: out of memory\n", stderr);
        abort();
    }
    return q;
}

/* Zeroed allocation or abort. */
static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fputs("rcload: out of memory\n", stderr);
        abort();
    }
    return p;
}

/* Formats into a fresh string or aborts. */
__attribute__((format(printf, 1, 2))) static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        fputs("rcload: out of memory\n", stderr);
        abort();
    }
    return s;
}

/* Monotonic clock in nanoseconds; also the timestamp embedded in message bodies. */
static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NSEC + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_state;

/* xorshift64*: WebSocket masks and keys need no cryptographic quality here. */
static uint64_t rnd64(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

/* Growable byte buffer; live data is p[off, len). */
struct buf {
    char *p;
    size_t off, len, cap;
};

/* Makes room for `more` bytes after the live data. */
static void buf_reserve(struct buf *b, size_t more)
{
    if (b->off == b->len)
        b->off = b->len = 0;
    if (b->cap - b->len >= more)
        return;
    if (b->off) {
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->cap - b->len >= more)
            return;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < more)
        cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

/* Appends n bytes. */
static void buf_add(struct buf *b, const void *d, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

/* Appends formatted text (no terminating NUL counted). */
__attribute__((format(printf, 2, 3))) static void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    buf_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Bytes of live data. */
static size_t buf_used(const struct buf *b)
{
    return b->len - b->off;
}

/* First live byte. */
static char *buf_data(const struct buf *b)
{
    return b->p + b->off;
}

/* Drops n bytes from the front; the memory stays valid until the next reserve or free. */
static void buf_consume(struct buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        b->off = b->len = 0;
}

/* Releases the memory. */
static void buf_free(struct buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* Latency samples in nanoseconds; sorted once for the percentiles. */
struct lat {
    uint64_t *v;
    size_t n, cap;
};

/* Records one sample. */
static void lat_add(struct lat *l, uint64_t ns)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 1024;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = ns;
}

/* qsort comparator for uint64_t. */
static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorts the samples; call before lat_ms. */
static void lat_sort(struct lat *l)
{
    if (l->n > 1)
        qsort(l->v, l->n, sizeof *l->v, cmp_u64);
}

/* Nearest-rank percentile in milliseconds (pct 100 = max); 0 when empty. */
static double lat_ms(const struct lat *l, double pct)
{
    if (!l->n)
        return 0;
    double x = pct / 100.0 * (double)l->n;
    size_t rank = (size_t)x;
    if ((double)rank < x)
        rank++;
    if (rank < 1)
        rank = 1;
    if (rank > l->n)
        rank = l->n;
    return (double)l->v[rank - 1] / 1e6;
}

/* Standard base64 with padding; out needs 4*ceil(n/3)+1 bytes. */
static void b64(const unsigned char *in, size_t n, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = t[(v >> 18) & 63];
        out[o++] = t[(v >> 12) & 63];
        out[o++] = i + 1 < n ? t[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = '\0';
}

/* ------------------------------------------------------------------------------------ */
/* Options, errors, global state                                                         */

enum scenario { SC_REST, SC_FANOUT, SC_IDLE, SC_CHAT, SC_JOIN, SC_PRESENCE };

static const char *const scenario_names[] = {"rest", "fanout", "idle", "chat", "join", "presence"};

struct opts {
    enum scenario sc;
    const char *url, *sub_url;
    char hostport[64], sub_hostport[64]; /* HOST:PORT of --url and of --sub-url */
    struct sockaddr_in dst, sub_dst;
    const char *api_key;
    long conns, rooms, subs, messages, count, concurrency, history, body_bytes, server_pid;
    long rate;       /* fanout: publisher messages per second, open loop; 0: paced on acks */
    long notif_subs; /* fanout: subscribers also on notifications:<user>, counting unread */
    double duration, timeout, hold, heartbeat, drain, leave_fraction;
    bool rest_publisher;
    /* fanout --realtime: realtime-js's protocol on /realtime/v1 (realtime:<room>, binary
       user broadcasts), on the public channel or (rt_private) the room's private one */
    bool realtime, rt_private;
    bool floor; /* fanout --floor: against rcload's own minimal reference server */
};

static struct opts O = {
    .conns = -1,
    .rooms = -1,
    .subs = 1000,
    .messages = 200,
    .concurrency = -1,
    .history = 50,
    .duration = 10,
    .timeout = -1,
    .hold = 5,
    .heartbeat = 30,
    .drain = 5,
    .leave_fraction = 0.1,
};

/* Every failure the run saw, by kind; a few first messages are kept as samples. */
struct errors {
    uint64_t connect;      /* socket, bind or connect failed */
    uint64_t handshake;    /* WebSocket upgrade refused or malformed */
    uint64_t closed;       /* connection or channel ended unexpectedly */
    uint64_t reply;        /* phx_reply with status other than ok (not rate limits) */
    uint64_t rate_limited; /* phx_reply error rate_limited (retried) */
    uint64_t http;         /* REST answer with an unexpected status */
    uint64_t protocol;     /* unparsable frame, response or payload */
    uint64_t incomplete;   /* a phase did not finish before --timeout */
    char samples[10][200];
    int nsamples;
};

static struct errors E;

/* Keeps the first few distinct error messages for the report. */
__attribute__((format(printf, 1, 2))) static void err_sample(const char *fmt, ...)
{
    char m[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    for (int i = 0; i < E.nsamples; i++)
        if (!strcmp(E.samples[i], m))
            return;
    if (E.nsamples < (int)(sizeof E.samples / sizeof E.samples[0]))
        strcpy(E.samples[E.nsamples++], m);
}

/* Total of all error counters except rate limits (which are retried). */
static uint64_t err_total(void)
{
    return E.connect + E.handshake + E.closed + E.reply + E.http + E.protocol + E.incomplete;
}

/* The event loop. */
struct loop {
    int ep;
    int tfd;          /* timerfd for loop_wake(), -1 until first used */
    uint64_t wake_at; /* when the timerfd is armed for (0: disarmed) */
    uint64_t t_start, deadline;
    bool stopping; /* tearing down: closes are not errors, nothing new is sent */
};

static struct loop L;
static volatile sig_atomic_t got_sigint;
static char prefix[32]; /* "rcl<pid>": rooms and users of this run */

/* SIGINT: finish early and print what was measured. */
static void on_sigint(int sig)
{
    got_sigint = 1;
}

/* ------------------------------------------------------------------------------------ */
/* JSON scanning: just enough to pick fields out of server frames without copying.      */

struct span {
    const char *p;
    size_t n;
};

/* Skips JSON whitespace. */
static const char *jws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* End of the string whose opening quote is at p, or NULL. */
static const char *jstr_end(const char *p, const char *e)
{
    for (p++; p < e; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return NULL;
}

/* Bytes that matter when skipping a JSON container: 1 quote, 2 opening, 3 closing. */
static const unsigned char jcls[256] = {['"'] = 1, ['{'] = 2, ['['] = 2, ['}'] = 3, [']'] = 3};

/* First byte after the JSON value at p, or NULL if it is malformed or truncated. */
static const char *jskip(const char *p, const char *e)
{
    p = jws(p, e);
    if (p >= e)
        return NULL;
    if (*p == '"')
        return jstr_end(p, e);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < e) {
            unsigned k = jcls[(unsigned char)*p];
            if (!k) {
                p++;
                continue;
            }
            if (k == 1) {
                p = jstr_end(p, e);
                if (!p)
                    return NULL;
                continue;
            }
            if (k == 2)
                depth++;
            else if (--depth == 0)
                return p + 1;
            p++;
        }
        return NULL;
    }
    const char *s = p;
    while (p < e && *p != ',' && *p != ']' && *p != '}' && *p != ' ' && *p != '\t' && *p != '\r' &&
           *p != '\n')
        p++;
    return p > s ? p : NULL;
}

/* Finds key in the object obj; the value span is raw JSON (strings keep their quotes). */
static bool jget(struct span obj, const char *key, struct span *out)
{
    const char *p = obj.p, *e = obj.p + obj.n;
    size_t kl = strlen(key);
    p = jws(p, e);
    if (p >= e || *p != '{')
        return false;
    p++;
    for (;;) {
        p = jws(p, e);
        if (p >= e || *p != '"')
            return false;
        const char *ks = p + 1, *ke = jstr_end(p, e);
        if (!ke)
            return false;
        bool match = (size_t)(ke - 1 - ks) == kl && !memcmp(ks, key, kl);
        p = jws(ke, e);
        if (p >= e || *p != ':')
            return false;
        p = jws(p + 1, e);
        const char *v = p;
        if (!(p = jskip(p, e)))
            return false;
        if (match) {
            out->p = v;
            out->n = (size_t)(p - v);
            return true;
        }
        p = jws(p, e);
        if (p < e && *p == ',')
            p++;
    }
}

/* True if s is the JSON string "lit" (no escapes in lit). */
static bool jeq(struct span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n + 2 && s.p[0] == '"' && !memcmp(s.p + 1, lit, n);
}

/* Reads an integer, or a string holding one (refs are decimal strings). */
static bool jint(struct span s, int64_t *v)
{
    char tmp[32];
    if (s.n >= 2 && s.p[0] == '"') {
        s.p++;
        s.n -= 2;
    }
    if (!s.n || s.n >= sizeof tmp)
        return false;
    memcpy(tmp, s.p, s.n);
    tmp[s.n] = '\0';
    char *end;
    errno = 0;
    long long x = strtoll(tmp, &end, 10);
    if (errno || *end)
        return false;
    *v = x;
    return true;
}

/* Reads the "t=<ns>" timestamp at the start of a body we sent. */
static bool body_ts(struct span body, uint64_t *t)
{
    if (body.n < 4 || memcmp(body.p, "\"t=", 3))
        return false;
    char *end;
    unsigned long long x = strtoull(body.p + 3, &end, 10);
    if (end == body.p + 3)
        return false;
    *t = x;
    return true;
}

/* A decoded V2 message: [join_ref, ref, topic, event, payload], raw spans. */
struct pmsg {
    struct span jr, ref, topic, event, payload;
};

/* Splits a V2 text frame into its five fields. */
static bool pmsg_parse(const char *p, size_t n, struct pmsg *m)
{
    const char *e = p + n;
    struct span *f[5] = {&m->jr, &m->ref, &m->topic, &m->event, &m->payload};
    p = jws(p, e);
    if (p >= e || *p != '[')
        return false;
    p++;
    for (int i = 0; i < 5; i++) {
        p = jws(p, e);
        const char *v = p;
        if (i == 4 && (jeq(m->event, "presence_state") || jeq(m->event, "presence_diff"))) {
            /* a presence payload can be megabytes: it runs to the array's closing bracket
               here, and the presence parser checks it in its single pass */
            while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
                e--;
            if (e <= p || e[-1] != ']')
                return false;
            e--;
            while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
                e--;
            m->payload.p = p;
            m->payload.n = (size_t)(e - p);
            return true;
        }
        if (!(p = jskip(p, e)))
            return false;
        f[i]->p = v;
        f[i]->n = (size_t)(p - v);
        p = jws(p, e);
        if (i < 4) {
            if (p >= e || *p != ',')
                return false;
            p++;
        }
    }
    return true;
}

/* ------------------------------------------------------------------------------------ */
/* Connections: non-blocking TCP, HTTP/1.1 responses, WebSocket frames                   */

enum conn_state {
    CS_NONE,       /* no socket */
    CS_CONNECTING, /* connect() in progress */
    CS_UPGRADING,  /* WebSocket upgrade request sent, waiting for the 101 */
    CS_OPEN,       /* HTTP: ready for requests; WebSocket: frames flow */
};

struct conn;

/* What a connection's owner is told. */
struct conn_ops {
    void (*open)(struct conn *c);                                         /* connected / 101 */
    void (*http)(struct conn *c, int status, const char *body, size_t n); /* HTTP response */
    void (*text)(struct conn *c, const char *msg, size_t n);              /* WebSocket text */
    void (*binary)(struct conn *c, const char *msg, size_t n); /* binary; NULL: an error */
    void (*closed)(struct conn *c, const char *why); /* ended by peer or error, not by us */
};

struct conn {
    int fd;
    uint8_t state;   /* enum conn_state */
    bool ws;         /* WebSocket (true) or plain HTTP client (false) */
    bool pollout;    /* EPOLLOUT registered */
    bool in_frag;    /* inside a fragmented text message */
    bool resp_close; /* the last HTTP response said Connection: close */
    bool sub;        /* connects to --sub-url instead of --url */
    uint32_t gen;    /* bumped on every close, so parsers notice a close in a callback */
    uint32_t src;    /* source address index */
    const struct conn_ops *ops;
    void *ud;
    const char *path; /* WebSocket: request target of the upgrade */
    struct buf in, out, frag;
    char accept[32]; /* expected Sec-WebSocket-Accept */
};

/* Initializes an unconnected connection. */
static void conn_init(struct conn *c, const struct conn_ops *ops, void *ud, uint32_t src, bool ws)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->ops = ops;
    c->ud = ud;
    c->src = src;
    c->ws = ws;
}

/* Closes the socket; the owner's closed callback runs only when why is not NULL. */
static void conn_close(struct conn *c, const char *why)
{
    if (c->fd < 0)
        return;
    epoll_ctl(L.ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->state = CS_NONE;
    c->gen++;
    c->pollout = c->in_frag = c->resp_close = false;
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->frag);
    if (why && c->ops->closed)
        c->ops->closed(c, why);
}

/* Counts a failure of the given kind (unless tearing down) and closes the connection. */
__attribute__((format(printf, 3, 4))) static void conn_fail(struct conn *c, uint64_t *counter,
                                                            const char *fmt, ...)
{
    char why[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (!L.stopping) {
        (*counter)++;
        err_sample("%s", why);
    }
    conn_close(c, why);
}

/* Registers or drops interest in writability. */
static void conn_pollout(struct conn *c, bool on)
{
    if (c->pollout == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(L.ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->pollout = on;
}

/* Writes as much queued output as the socket takes. */
static void conn_flush(struct conn *c)
{
    if (c->fd < 0 || c->state == CS_CONNECTING)
        return;
    while (buf_used(&c->out)) {
        ssize_t w = send(c->fd, buf_data(&c->out), buf_used(&c->out), MSG_NOSIGNAL);
        if (w > 0) {
            buf_consume(&c->out, (size_t)w);
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            conn_pollout(c, true);
            return;
        }
        conn_fail(c, &E.closed, "write: %s", w < 0 ? strerror(errno) : "short write");
        return;
    }
    if (c->out.cap > 65536)
        buf_free(&c->out);
    conn_pollout(c, false);
}

/* The address a connection goes to: --sub-url's for fanout subscribers, else --url's. */
static const struct sockaddr_in *conn_dst(const struct conn *c)
{
    return c->sub ? &O.sub_dst : &O.dst;
}

/* The Host header of a connection's requests. */
static const char *conn_host(const struct conn *c)
{
    return c->sub ? O.sub_hostport : O.hostport;
}

/* Opens a non-blocking connection to the target from 127.0.0.(1 + src % 250). */
static bool conn_start(struct conn *c)
{
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        E.connect++;
        err_sample("socket: %s", strerror(errno));
        return false;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000001u + c->src % SRC_ADDRS);
    const char *what = "bind";
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0)
        goto fail;
    what = "connect";
    if (connect(fd, (const struct sockaddr *)conn_dst(c), sizeof O.dst) < 0 && errno != EINPROGRESS)
        goto fail;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    what = "epoll_ctl";
    if (epoll_ctl(L.ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        goto fail;
    c->fd = fd;
    c->state = CS_CONNECTING;
    c->pollout = true;
    return true;
fail:
    E.connect++;
    err_sample("%s: %s", what, strerror(errno));
    close(fd);
    return false;
}

/* The Sec-WebSocket-Accept of a Sec-WebSocket-Key of n <= 64 bytes: base64(SHA-1(key GUID));
   out needs 29 bytes. */
static void ws_accept(const char *key, size_t n, char *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    char cat[64 + sizeof WS_GUID];
    unsigned mdlen = 0;
    memcpy(cat, key, n);
    memcpy(cat + n, WS_GUID, sizeof WS_GUID - 1);
    EVP_Digest(cat, n + sizeof WS_GUID - 1, md, &mdlen, EVP_sha1(), NULL);
    b64(md, mdlen, out);
}

/* Queues one masked WebSocket frame and tries to send it. */
static void ws_send(struct conn *c, unsigned op, const char *d, size_t n)
{
    if (c->fd < 0)
        return;
    unsigned char h[14];
    size_t hl = 0;
    h[hl++] = (unsigned char)(0x80 | op);
    if (n < 126) {
        h[hl++] = (unsigned char)(0x80 | n);
    } else if (n < 65536) {
        h[hl++] = 0x80 | 126;
        h[hl++] = (unsigned char)(n >> 8);
        h[hl++] = (unsigned char)n;
    } else {
        h[hl++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            h[hl++] = (unsigned char)((uint64_t)n >> (8 * i));
    }
    uint32_t mask = (uint32_t)rnd64();
    memcpy(h + hl, &mask, 4);
    const unsigned char *mk = h + hl;
    hl += 4;
    buf_reserve(&c->out, hl + n);
    char *o = c->out.p + c->out.len;
    memcpy(o, h, hl);
    for (size_t i = 0; i < n; i++)
        o[hl + i] = (char)(d[i] ^ mk[i & 3]);
    c->out.len += hl + n;
    conn_flush(c);
}

/* Queues a REST request on a keep-alive connection. */
static void http_send(struct conn *c, const char *method, const char *path, const char *body)
{
    size_t bl = body ? strlen(body) : 0;
    buf_printf(&c->out,
               "%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
               "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
               method, path, conn_host(c), O.api_key, bl);
    if (bl)
        buf_add(&c->out, body, bl);
    conn_flush(c);
}

/* TCP is up: send the upgrade request (WebSocket) or tell the owner (HTTP). */
static void conn_connected(struct conn *c)
{
    conn_pollout(c, false);
    if (!c->ws) {
        c->state = CS_OPEN;
        c->ops->open(c);
        return;
    }
    unsigned char raw[16];
    char key[32];
    uint64_t r1 = rnd64(), r2 = rnd64();
    memcpy(raw, &r1, 8);
    memcpy(raw + 8, &r2, 8);
    b64(raw, 16, key);
    ws_accept(key, strlen(key), c->accept);
    c->state = CS_UPGRADING;
    buf_printf(&c->out,
               "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
               c->path, conn_host(c), key);
    conn_flush(c);
}

/* The head of an HTTP response. */
struct hresp {
    int status;
    size_t head; /* bytes up to and including the blank line */
    long clen;   /* Content-Length, -1 if absent */
    bool chunked, close;
    struct span accept;
};

/* Parses a response head: 1 complete, 0 needs more bytes, -1 malformed. */
static int http_head(const char *p, size_t n, struct hresp *r)
{
    const char *e = memmem(p, n, "\r\n\r\n", 4);
    if (!e)
        return n > 65536 ? -1 : 0;
    memset(r, 0, sizeof *r);
    r->clen = -1;
    r->head = (size_t)(e - p) + 4;
    if (r->head < 16 || memcmp(p, "HTTP/1.", 7) || p[8] != ' ')
        return -1;
    for (int i = 9; i < 12; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        r->status = r->status * 10 + (p[i] - '0');
    }
    const char *end = e + 2; /* every header line ends with \r\n before this point */
    const char *q = (const char *)memmem(p, (size_t)(end - p), "\r\n", 2) + 2;
    while (q < end) {
        const char *le = memmem(q, (size_t)(end - q), "\r\n", 2);
        const char *colon = memchr(q, ':', (size_t)(le - q));
        if (colon) {
            size_t nl = (size_t)(colon - q);
            const char *v = colon + 1;
            while (v < le && (*v == ' ' || *v == '\t'))
                v++;
            size_t vl = (size_t)(le - v);
            if (nl == 14 && !strncasecmp(q, "content-length", nl)) {
                r->clen = strtol(v, NULL, 10);
                if (r->clen < 0 || (size_t)r->clen > max_frame)
                    return -1;
            } else if (nl == 17 && !strncasecmp(q, "transfer-encoding", nl)) {
                r->chunked = vl >= 7 && !strncasecmp(v, "chunked", 7);
            } else if (nl == 10 && !strncasecmp(q, "connection", nl)) {
                r->close = vl >= 5 && !strncasecmp(v, "close", 5);
            } else if (nl == 20 && !strncasecmp(q, "sec-websocket-accept", nl)) {
                r->accept.p = v;
                r->accept.n = vl;
            }
        }
        q = le + 2;
    }
    return 1;
}

/* Decodes a chunked body into out: 1 done (*used bytes), 0 needs more, -1 malformed. */
static int dechunk(const char *p, size_t n, struct buf *out, size_t *used)
{
    size_t i = 0;
    out->off = out->len = 0;
    for (;;) {
        const char *le = memmem(p + i, n - i, "\r\n", 2);
        if (!le)
            return n - i > 64 ? -1 : 0;
        char *end;
        unsigned long sz = strtoul(p + i, &end, 16);
        if (end == p + i || sz > max_frame)
            return -1;
        size_t data = (size_t)(le - p) + 2;
        if (sz == 0) {
            const char *te = memmem(p + data - 2, n - data + 2, "\r\n\r\n", 4);
            if (!te)
                return 0;
            *used = (size_t)(te - p) + 4;
            return 1;
        }
        if (n < data + sz + 2)
            return 0;
        buf_add(out, p + data, sz);
        i = data + sz + 2;
    }
}

/* Handles the answer to the upgrade request. */
static bool parse_upgrade(struct conn *c)
{
    struct hresp r;
    int k = http_head(buf_data(&c->in), buf_used(&c->in), &r);
    if (k == 0)
        return false;
    if (k < 0) {
        conn_fail(c, &E.handshake, "upgrade: malformed HTTP response");
        return false;
    }
    if (r.status != 101) {
        conn_fail(c, &E.handshake, "upgrade refused: HTTP %d", r.status);
        return false;
    }
    if (r.accept.n != strlen(c->accept) || memcmp(r.accept.p, c->accept, r.accept.n)) {
        conn_fail(c, &E.handshake, "upgrade: wrong or missing Sec-WebSocket-Accept");
        return false;
    }
    buf_consume(&c->in, r.head);
    c->state = CS_OPEN;
    c->ops->open(c);
    return true;
}

/* Handles one complete HTTP response, if buffered. */
static bool parse_http(struct conn *c)
{
    struct hresp r;
    const char *p = buf_data(&c->in);
    size_t n = buf_used(&c->in);
    int k = http_head(p, n, &r);
    if (k == 0)
        return false;
    if (k < 0) {
        conn_fail(c, &E.protocol, "HTTP: malformed response");
        return false;
    }
    struct buf body = {0};
    size_t total;
    if (r.chunked) {
        size_t used = 0;
        k = dechunk(p + r.head, n - r.head, &body, &used);
        if (k <= 0) {
            buf_free(&body);
            if (k < 0)
                conn_fail(c, &E.protocol, "HTTP: malformed chunked body");
            return false;
        }
        total = r.head + used;
    } else {
        size_t bl = r.clen < 0 ? 0 : (size_t)r.clen;
        if (n < r.head + bl)
            return false;
        buf_add(&body, p + r.head, bl);
        total = r.head + bl;
    }
    buf_consume(&c->in, total);
    c->resp_close = r.close;
    buf_add(&body, "", 1); /* NUL-terminate for the owner's convenience */
    c->ops->http(c, r.status, buf_data(&body), buf_used(&body) - 1);
    buf_free(&body);
    return true;
}

/* The payload length of a frame whose first n >= 2 bytes are at p, and the header's size
   before any mask; false while the length bytes are incomplete. */
static bool ws_len(const unsigned char *p, size_t n, uint64_t *len, size_t *h)
{
    *len = p[1] & 0x7f;
    *h = 2;
    if (*len == 126) {
        if (n < 4)
            return false;
        *len = (uint64_t)p[2] << 8 | p[3];
        *h = 4;
    } else if (*len == 127) {
        if (n < 10)
            return false;
        *len = 0;
        for (int i = 0; i < 8; i++)
            *len = *len << 8 | p[2 + i];
        *h = 10;
    }
    return true;
}

/* Handles one complete WebSocket frame, if buffered. */
static bool parse_frame(struct conn *c)
{
    unsigned char *p = (unsigned char *)buf_data(&c->in);
    size_t n = buf_used(&c->in);
    if (n < 2)
        return false;
    bool fin = p[0] & 0x80, masked = p[1] & 0x80;
    unsigned op = p[0] & 0x0f;
    uint64_t len;
    size_t h;
    if (p[0] & 0x70) {
        conn_fail(c, &E.protocol, "WebSocket: reserved bits set");
        return false;
    }
    if (!ws_len(p, n, &len, &h))
        return false;
    if (len > max_frame) {
        conn_fail(c, &E.protocol, "WebSocket: frame of %" PRIu64 " bytes", len);
        return false;
    }
    if (masked)
        h += 4;
    if (n < h + len)
        return false;
    char *pl = (char *)p + h;
    if (masked) {
        E.protocol++;
        err_sample("WebSocket: server frame is masked");
        for (size_t i = 0; i < len; i++)
            pl[i] ^= (char)p[h - 4 + (i & 3)];
    }
    buf_consume(&c->in, h + (size_t)len);
    switch (op) {
    case 0x1:
        if (c->in_frag) {
            conn_fail(c, &E.protocol, "WebSocket: text frame inside a fragmented message");
            return false;
        }
        if (fin) {
            c->ops->text(c, pl, (size_t)len);
        } else {
            c->in_frag = true;
            buf_add(&c->frag, pl, (size_t)len);
        }
        break;
    case 0x0:
        if (!c->in_frag) {
            conn_fail(c, &E.protocol, "WebSocket: continuation without a first frame");
            return false;
        }
        buf_add(&c->frag, pl, (size_t)len);
        if (buf_used(&c->frag) > max_frame) {
            conn_fail(c, &E.protocol, "WebSocket: fragmented message too large");
            return false;
        }
        if (fin) {
            struct buf m = c->frag;
            memset(&c->frag, 0, sizeof c->frag);
            c->in_frag = false;
            c->ops->text(c, buf_data(&m), buf_used(&m));
            buf_free(&m);
        }
        break;
    case 0x2:
        if (c->ops->binary && fin && !c->in_frag) {
            c->ops->binary(c, pl, (size_t)len);
            break;
        }
        E.protocol++;
        err_sample("WebSocket: unexpected binary frame");
        break;
    case 0x8: {
        unsigned code =
            len >= 2 ? (unsigned)(unsigned char)pl[0] << 8 | (unsigned char)pl[1] : 1005;
        int rl = len > 2 ? (int)(len - 2 > 80 ? 80 : len - 2) : 0;
        char reason[84];
        memcpy(reason, len > 2 ? pl + 2 : "", (size_t)rl);
        reason[rl] = '\0';
        ws_send(c, 0x8, pl, len >= 2 ? 2 : 0);
        conn_fail(c, &E.closed, "server closed the WebSocket: %u %s", code, reason);
        return false;
    }
    case 0x9: ws_send(c, 0xA, pl, (size_t)len); break;
    case 0xA: break;
    default: conn_fail(c, &E.protocol, "WebSocket: unknown opcode %u", op); return false;
    }
    return true;
}

/* Consumes everything complete in the input buffer. */
static void conn_parse(struct conn *c)
{
    uint32_t gen = c->gen;
    while (c->gen == gen && c->fd >= 0 && buf_used(&c->in)) {
        bool progress = c->state == CS_UPGRADING ? parse_upgrade(c)
                        : c->ws                  ? parse_frame(c)
                                                 : parse_http(c);
        if (!progress)
            return;
    }
}

/* Reads what the socket has and parses it. */
static void conn_read(struct conn *c)
{
    uint32_t gen = c->gen;
    for (int i = 0; i < 16; i++) {
        buf_reserve(&c->in, 65536);
        size_t room = c->in.cap - c->in.len;
        ssize_t r = recv(c->fd, c->in.p + c->in.len, room, 0);
        if (r > 0) {
            c->in.len += (size_t)r;
            conn_parse(c);
            if (c->gen != gen)
                return;
            if ((size_t)r < room)
                break;
            continue;
        }
        if (r == 0) {
            conn_fail(c, &E.closed, "server closed the connection%s",
                      c->state == CS_UPGRADING ? " during the upgrade" : "");
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            conn_fail(c, &E.closed, "read: %s", strerror(errno));
        break;
    }
    if (c->gen == gen && !buf_used(&c->in))
        buf_free(&c->in);
}

/* Dispatches one epoll event. */
static void conn_event(struct conn *c, uint32_t ev)
{
    if (c->fd < 0)
        return;
    uint32_t gen = c->gen;
    if (c->state == CS_CONNECTING) {
        if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            conn_fail(c, &E.connect, "connect: %s", strerror(err));
            return;
        }
        conn_connected(c);
        return;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
        conn_read(c);
    if (c->gen == gen && (ev & EPOLLOUT) && c->pollout)
        conn_flush(c);
}

/* ------------------------------------------------------------------------------------ */
/* Phoenix clients, the join ramp, heartbeats                                            */

enum join_state {
    JS_IDLE,    /* not started */
    JS_PENDING, /* connecting, upgrading, or waiting for the join reply and history */
    JS_JOINED,  /* join reply ok and message_history received */
    JS_FAILED,  /* connect, upgrade or join failed (counted when it happened) */
    JS_CLOSED,  /* was joined, then the connection or the channel ended */
};

/* Which seqs of its room one client has received. */
struct seqtrack {
    int64_t base;   /* room's last_seq in the join reply: later seqs are expected */
    int64_t max;    /* highest seq seen */
    uint64_t *bits; /* bit i: seq base+1+i seen */
    size_t nwords;
    uint64_t uniq, dup, ooo, stray;
};

/* fanout --notif-subs: a subscriber's notifications:<user> channel on its room socket. */
struct nsub {
    char *topic;            /* "notifications:<user>" */
    uint64_t join_ref;      /* of the notifications join */
    uint8_t js;             /* enum join_state of that channel */
    int64_t unread0, read0; /* unread and last_read_seq of the room join reply (0 if absent) */
    struct seqtrack st;     /* the last_seq of each unread event received */
    uint64_t frames, wrong; /* unread events; those with a wrong room or count */
};

/* One WebSocket client joined to one room. */
struct client {
    struct conn c;
    uint32_t id;
    uint32_t room;
    bool publisher;
    bool replied, hist;
    uint8_t js; /* enum join_state */
    char *user, *path;
    uint64_t ref, join_ref;
    uint64_t t_start, t_open, t_join, t_reply, t_hist, last_send;
    /* sending new_message, one at a time */
    bool want_send;
    uint64_t pend_ref, t_sent, retry_at;
    uint32_t sent, acked;
    struct seqtrack st;
    uint32_t hist_n;
    bool hist_bad;
    struct pstate *ps; /* presence scenario: the client's presence list */
    struct nsub *ns;   /* fanout --notif-subs: its notifications channel, else NULL */
};

/* A room of this run, with the seqs its messages were acked with. */
struct room {
    char *id, *topic;
    int64_t *acked;
    size_t nacked, cap;
};

static struct room *ROOMS;
static size_t NROOMS;
static struct client *CL;
static size_t NCL;
static struct client **SND; /* clients that send messages */
static size_t NSND;

struct pmsg;

/* Scenario hooks for client events. */
struct hooks {
    bool join_on_reply; /* the join is done at its ok reply (no last_seq, no history) */
    /* any parsed frame, before the shared code sees it; true if the scenario took it */
    bool (*frame)(struct client *cl, const struct pmsg *m, uint64_t now);
    void (*joined)(struct client *cl, uint64_t now);
    void (*message)(struct client *cl, int64_t seq, struct span body, uint64_t now);
    bool (*may_send)(struct client *cl, uint64_t now);
    /* a push the shared code does not handle (presence_state, presence_diff, ...) */
    void (*event)(struct client *cl, const struct pmsg *m, size_t frame_bytes, uint64_t now);
    /* a joined client's connection or channel ended without us closing it */
    void (*ended)(struct client *cl);
    /* a phx_reply the shared code does not match; true if the scenario took it */
    bool (*reply)(struct client *cl, uint64_t ref, bool ok, struct span resp, uint64_t now);
    /* runs on every loop turn, after the shared timers */
    void (*timer)(uint64_t now);
};

static struct hooks H;
static struct lat ACK_LAT, DELIV_LAT;

/* Counters shared by the WebSocket scenarios. */
static struct {
    uint64_t hb_sent, hb_ok, deliveries, uniq, self, t_first_send, t_last_delivery;
} W;

/* The join ramp: starts clients in order, at most `conc` in flight. */
static struct {
    size_t n, next, inflight, ok, failed, conc;
} R;

static void client_connect(struct client *cl);

/* Starts waiting clients while the ramp has room. */
static void ramp_pump(void)
{
    while (R.next < R.n && R.inflight < R.conc && !L.stopping && !got_sigint) {
        R.inflight++;
        client_connect(&CL[R.next++]);
    }
}

/* True when every client has been started and has joined or failed. */
static bool ramp_done(void *arg)
{
    return R.next == R.n && R.inflight == 0;
}

/* A client's join attempt ended. */
static void ramp_finished(struct client *cl, bool ok, uint64_t now)
{
    R.inflight--;
    if (ok) {
        R.ok++;
        cl->js = JS_JOINED;
        if (H.joined)
            H.joined(cl, now);
    } else {
        R.failed++;
        cl->js = JS_FAILED;
    }
}

/* Sends a V2 frame built from a format string. */
__attribute__((format(printf, 2, 3))) static void client_sendf(struct client *cl, const char *fmt,
                                                               ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof tmp) {
        ws_send(&cl->c, 0x1, tmp, (size_t)n);
    } else {
        char *big = xrealloc(NULL, (size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(big, (size_t)n + 1, fmt, ap);
        va_end(ap);
        ws_send(&cl->c, 0x1, big, (size_t)n);
        free(big);
    }
    cl->last_send = now_ns();
}

/* Sends a realtime-js user broadcast push, event "msg", JSON payload: the binary kind-3
   frame (kind, join_ref/ref/topic/event/metadata lengths, encoding 1, then those fields and
   the payload). */
static void rt_broadcast_send(struct client *cl, uint64_t ref, const char *payload, size_t n)
{
    char jr[24], rf[24];
    const char *topic = ROOMS[cl->room].topic;
    int jl = snprintf(jr, sizeof jr, "%" PRIu64, cl->join_ref);
    int rl = snprintf(rf, sizeof rf, "%" PRIu64, ref);
    size_t tl = strlen(topic);
    unsigned char h[7] = {3, (unsigned char)jl, (unsigned char)rl, (unsigned char)tl, 3, 0, 1};
    struct buf f = {0};
    buf_add(&f, h, sizeof h);
    buf_add(&f, jr, (size_t)jl);
    buf_add(&f, rf, (size_t)rl);
    buf_add(&f, topic, tl);
    buf_add(&f, "msg", 3);
    buf_add(&f, payload, n);
    ws_send(&cl->c, 0x2, buf_data(&f), buf_used(&f));
    buf_free(&f);
    cl->last_send = now_ns();
}

/* Sends one new_message (--realtime: a broadcast) whose body starts with `now`; its ref goes to *ref first (a failed
   send closes the socket, and the close handlers must see it). */
static void message_send(struct client *cl, uint64_t now, uint64_t *ref)
{
    static char pad[4096];
    if (!pad[0])
        memset(pad, 'x', sizeof pad - 1);
    int padn = O.body_bytes > 0 ? (int)(O.body_bytes > 4000 ? 4000 : O.body_bytes) : 0;
    *ref = ++cl->ref;
    cl->sent++;
    if (!W.t_first_send)
        W.t_first_send = now;
    if (O.realtime) {
        char body[4200];
        int bl = snprintf(body, sizeof body, "{\"body\":\"t=%" PRIu64 " c=%u n=%u%s%.*s\"}", now,
                          cl->id, cl->sent, padn ? " " : "", padn, pad);
        rt_broadcast_send(cl, *ref, body, (size_t)bl);
        return;
    }
    client_sendf(cl,
                 "[\"%" PRIu64 "\",\"%" PRIu64 "\",\"%s\",\"new_message\","
                 "{\"body\":\"t=%" PRIu64 " c=%u n=%u%s%.*s\"}]",
                 cl->join_ref, *ref, ROOMS[cl->room].topic, now, cl->id, cl->sent, padn ? " " : "",
                 padn, pad);
}

/* Sends the client's next new_message and waits for its reply before the one after. */
static void sender_send(struct client *cl, uint64_t now)
{
    if (cl->c.fd < 0 || cl->js != JS_JOINED || L.stopping || !H.may_send(cl, now)) {
        cl->want_send = false;
        return;
    }
    cl->t_sent = now;
    message_send(cl, now, &cl->pend_ref);
}

/* Records a seq the server acked for a room. */
static void room_ack(struct room *rm, int64_t seq)
{
    if (rm->nacked == rm->cap) {
        rm->cap = rm->cap ? rm->cap * 2 : 256;
        rm->acked = xrealloc(rm->acked, rm->cap * sizeof *rm->acked);
    }
    rm->acked[rm->nacked++] = seq;
}

/* The reply to the client's pending new_message. */
static void sender_reply(struct client *cl, bool ok, struct span resp, uint64_t now)
{
    struct span v;
    int64_t seq;
    cl->pend_ref = 0;
    if (ok) {
        cl->acked++;
        lat_add(&ACK_LAT, now - cl->t_sent);
        if (O.realtime) {
            room_ack(&ROOMS[cl->room], cl->sent); /* broadcasts are numbered by their n= */
        } else if (jget(resp, "seq", &v) && jint(v, &seq)) {
            room_ack(&ROOMS[cl->room], seq);
        } else {
            E.protocol++;
            err_sample("new_message reply without a seq: %.*s", (int)resp.n, resp.p);
        }
        sender_send(cl, now);
        return;
    }
    if (jget(resp, "reason", &v) && jeq(v, "rate_limited")) {
        int64_t after = 1;
        if (jget(resp, "retry_after", &v))
            jint(v, &after);
        E.rate_limited++;
        cl->retry_at = now + (uint64_t)(after > 0 ? after : 1) * NSEC;
        return;
    }
    E.reply++;
    err_sample("new_message error reply: %.*s", (int)resp.n, resp.p);
    cl->retry_at = now + 10 * MSEC; /* do not spin on a persistent error */
}

/* Marks seq as received by the client; counts duplicates and order violations. */
static bool st_add(struct seqtrack *t, int64_t seq)
{
    if (seq <= t->base || seq - t->base > (int64_t)MAX_SEQ_SPAN) {
        t->stray++;
        return false;
    }
    size_t i = (size_t)(seq - t->base - 1);
    if (i / 64 >= t->nwords) {
        size_t nw = t->nwords ? t->nwords : 4;
        while (i / 64 >= nw)
            nw *= 2;
        t->bits = xrealloc(t->bits, nw * sizeof *t->bits);
        memset(t->bits + t->nwords, 0, (nw - t->nwords) * sizeof *t->bits);
        t->nwords = nw;
    }
    uint64_t bit = 1ull << (i % 64);
    if (t->bits[i / 64] & bit) {
        t->dup++;
        return false;
    }
    t->bits[i / 64] |= bit;
    t->uniq++;
    if (seq < t->max)
        t->ooo++;
    else
        t->max = seq;
    return true;
}

/* True if the client received seq. */
static bool st_has(const struct seqtrack *t, int64_t seq)
{
    if (seq <= t->base)
        return true; /* before its join: not expected */
    size_t i = (size_t)(seq - t->base - 1);
    return i / 64 < t->nwords && (t->bits[i / 64] >> (i % 64) & 1);
}

/* Sends phx_join as soon as the WebSocket is open. */
static void client_open(struct conn *c)
{
    struct client *cl = c->ud;
    cl->t_open = now_ns();
    cl->join_ref = ++cl->ref;
    cl->t_join = cl->t_open;
    if (O.realtime) {
        client_sendf(cl,
                     "[\"%" PRIu64 "\",\"%" PRIu64 "\",\"%s\",\"phx_join\",{\"config\":{\"broadcast\":"
                     "{\"self\":false,\"ack\":%s},\"presence\":{\"key\":\"\",\"enabled\":false},"
                     "\"postgres_changes\":[],\"private\":%s}}]",
                     cl->join_ref, cl->join_ref, ROOMS[cl->room].topic,
                     cl->publisher ? "true" : "false", O.rt_private ? "true" : "false");
        return;
    }
    client_sendf(cl, "[\"%" PRIu64 "\",\"%" PRIu64 "\",\"%s\",\"phx_join\",{}]", cl->join_ref,
                 cl->join_ref, ROOMS[cl->room].topic);
}

/* Counts and checks a message_history push. */
static void client_history(struct client *cl, struct span payload)
{
    struct span arr;
    cl->hist_n = 0;
    if (!jget(payload, "messages", &arr) || arr.n < 2 || arr.p[0] != '[') {
        cl->hist_bad = true;
        return;
    }
    const char *p = arr.p + 1, *e = arr.p + arr.n;
    int64_t prev = 0;
    for (;;) {
        p = jws(p, e);
        if (p >= e || *p == ']')
            break;
        const char *v = p;
        if (!(p = jskip(p, e)))
            break;
        struct span obj = {v, (size_t)(p - v)}, s;
        int64_t seq;
        if (!jget(obj, "seq", &s) || !jint(s, &seq) || seq <= prev)
            cl->hist_bad = true;
        else
            prev = seq;
        cl->hist_n++;
        p = jws(p, e);
        if (p < e && *p == ',')
            p++;
    }
}

/* Handles one V2 frame from the server. */
static void client_text(struct conn *c, const char *msg, size_t n)
{
    struct client *cl = c->ud;
    struct pmsg m;
    uint64_t now = now_ns();
    if (!pmsg_parse(msg, n, &m)) {
        E.protocol++;
        err_sample("unparsable frame: %.*s", (int)(n > 120 ? 120 : n), msg);
        return;
    }
    if (H.frame && H.frame(cl, &m, now))
        return;
    if (jeq(m.event, "new_message")) {
        struct span s, body;
        int64_t seq;
        if (!jget(m.payload, "seq", &s) || !jint(s, &seq) || !jget(m.payload, "body", &body)) {
            E.protocol++;
            err_sample("new_message without seq or body: %.*s", (int)m.payload.n, m.payload.p);
            return;
        }
        if (H.message)
            H.message(cl, seq, body, now);
        return;
    }
    if (jeq(m.event, "phx_reply")) {
        struct span st = {"", 0}, resp = {"{}", 2};
        int64_t ref = 0;
        jget(m.payload, "status", &st);
        jget(m.payload, "response", &resp);
        jint(m.ref, &ref);
        bool ok = jeq(st, "ok");
        if (jeq(m.topic, "phoenix")) {
            if (ok) {
                W.hb_ok++;
            } else {
                E.reply++;
                err_sample("heartbeat error reply: %.*s", (int)m.payload.n, m.payload.p);
            }
            return;
        }
        if (ref > 0 && (uint64_t)ref == cl->join_ref && !cl->replied) {
            cl->replied = true;
            cl->t_reply = now;
            if (!ok) {
                E.reply++;
                err_sample("join error reply: %.*s", (int)m.payload.n, m.payload.p);
                ramp_finished(cl, false, now);
                conn_close(c, NULL);
                return;
            }
            if (H.join_on_reply) {
                cl->t_hist = now;
                ramp_finished(cl, true, now);
                return;
            }
            struct span ls;
            int64_t last = 0;
            if (!jget(resp, "last_seq", &ls) || !jint(ls, &last)) {
                E.protocol++;
                err_sample("join reply without last_seq: %.*s", (int)resp.n, resp.p);
            }
            cl->st.base = cl->st.max = last;
            if (cl->hist) {
                cl->t_hist = now;
                ramp_finished(cl, true, now);
            }
            return;
        }
        if (ref > 0 && (uint64_t)ref == cl->pend_ref) {
            sender_reply(cl, ok, resp, now);
            return;
        }
        if (ref > 0 && H.reply && H.reply(cl, (uint64_t)ref, ok, resp, now))
            return;
        if (!ok) {
            E.reply++;
            err_sample("error reply: %.*s", (int)m.payload.n, m.payload.p);
        }
        return;
    }
    if (jeq(m.event, "message_history")) {
        if (cl->hist)
            return; /* only the first push after the join is the join's history */
        cl->hist = true;
        cl->t_hist = now;
        client_history(cl, m.payload);
        if (cl->replied && cl->js == JS_PENDING)
            ramp_finished(cl, true, now);
        return;
    }
    if (jeq(m.event, "phx_close") || jeq(m.event, "phx_error")) {
        if (!L.stopping) {
            E.closed++;
            err_sample("channel ended: %.*s %.*s", (int)m.event.n, m.event.p, (int)m.payload.n,
                       m.payload.p);
        }
        if (cl->js == JS_PENDING) {
            ramp_finished(cl, false, now);
        } else if (cl->js == JS_JOINED) {
            cl->js = JS_CLOSED;
            if (H.ended)
                H.ended(cl);
        }
        cl->pend_ref = 0;
        cl->want_send = false;
        return;
    }
    /* other events (user_left, user_typing, presence, ...) only if the scenario asks */
    if (H.event)
        H.event(cl, &m, n, now);
}

/* The message number in a body "t=... c=... n=N...". */
static bool body_num(struct span body, int64_t *n)
{
    for (size_t i = 0; i + 3 < body.n; i++)
        if (!memcmp(body.p + i, " n=", 3)) {
            char *end;
            long long x = strtoll(body.p + i + 3, &end, 10);
            if (end == body.p + i + 3)
                return false;
            *n = x;
            return true;
        }
    return false;
}

/* --realtime: a binary frame from the server, which must be a user broadcast (kind 4:
   topic, event, metadata lengths, encoding 1, then those fields and the JSON payload) of
   the client's topic whose payload's body carries the message number. */
static void client_binary(struct conn *c, const char *d, size_t n)
{
    struct client *cl = c->ud;
    const unsigned char *u = (const unsigned char *)d;
    const char *topic = ROOMS[cl->room].topic;
    size_t off = n >= 5 ? 5 + (size_t)u[1] + u[2] + u[3] : 0;
    struct span payload, body;
    int64_t num;
    if (n < 5 || u[0] != 4 || u[4] != 1 || off > n) {
        E.protocol++;
        err_sample("unexpected binary frame (%zu bytes, kind %d)", n, n ? u[0] : -1);
        return;
    }
    payload.p = d + off;
    payload.n = n - off;
    if (u[1] != strlen(topic) || memcmp(d + 5, topic, u[1]) || !jget(payload, "body", &body) ||
        !body_num(body, &num)) {
        E.protocol++;
        err_sample("user broadcast not of %s or without a numbered body: %.*s", topic,
                   (int)(payload.n > 100 ? 100 : payload.n), payload.p);
        return;
    }
    if (H.message)
        H.message(cl, num, body, now_ns());
}

/* The connection ended without us closing it. */
static void client_closed(struct conn *c, const char *why)
{
    struct client *cl = c->ud;
    if (cl->js == JS_PENDING) {
        ramp_finished(cl, false, now_ns());
    } else if (cl->js == JS_JOINED) {
        cl->js = JS_CLOSED;
        if (H.ended)
            H.ended(cl);
    }
    cl->pend_ref = 0;
    cl->want_send = false;
}

static const struct conn_ops client_ops = {
    .open = client_open,
    .text = client_text,
    .binary = client_binary,
    .closed = client_closed,
};

/* Starts one client: connect, upgrade, join. */
static void client_connect(struct client *cl)
{
    cl->js = JS_PENDING;
    cl->t_start = now_ns();
    if (!conn_start(&cl->c))
        ramp_finished(cl, false, cl->t_start);
}

static uint64_t last_hb_scan, last_progress;

/* Timers: sender retries, heartbeats, progress lines. */
static void tick(uint64_t now)
{
    ramp_pump();
    for (size_t i = 0; i < NSND; i++) {
        struct client *cl = SND[i];
        if (cl->want_send && !cl->pend_ref && cl->retry_at && now >= cl->retry_at) {
            cl->retry_at = 0;
            sender_send(cl, now);
        }
    }
    if (O.heartbeat > 0 && now - last_hb_scan >= NSEC) {
        last_hb_scan = now;
        uint64_t every = (uint64_t)(O.heartbeat * (double)NSEC);
        for (size_t i = 0; i < NCL; i++) {
            struct client *cl = &CL[i];
            if (cl->c.fd >= 0 && cl->c.state == CS_OPEN && now - cl->last_send >= every) {
                W.hb_sent++;
                client_sendf(cl, "[null,\"%" PRIu64 "\",\"phoenix\",\"heartbeat\",{}]", ++cl->ref);
            }
        }
    }
    if (H.timer)
        H.timer(now);
    if (R.n > 500 && now - last_progress >= 5 * NSEC && (R.next < R.n || R.inflight)) {
        last_progress = now;
        fprintf(stderr, "rcload: %.1f s: started %zu/%zu, joined %zu, failed %zu\n",
                (double)(now - L.t_start) / 1e9, R.next, R.n, R.ok, R.failed);
    }
}

static char timer_tag; /* epoll data of the timerfd: not a connection */

/* Makes the loop turn at `at` (CLOCK_MONOTONIC ns; 0: no wake-up) more precisely than its
   millisecond epoll timeout would. */
static void loop_wake(uint64_t at)
{
    if (at == L.wake_at)
        return;
    if (L.tfd < 0) {
        L.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &timer_tag};
        if (L.tfd < 0 || epoll_ctl(L.ep, EPOLL_CTL_ADD, L.tfd, &ev) < 0) {
            perror("rcload: timerfd");
            exit(2);
        }
    }
    struct itimerspec its = {.it_value = {(time_t)(at / NSEC), (long)(at % NSEC)}};
    timerfd_settime(L.tfd, TFD_TIMER_ABSTIME, &its, NULL);
    L.wake_at = at;
}

/* Runs the loop until done(arg) or `until` or the deadline; false if not done. */
static bool loop_run(bool (*done)(void *), void *arg, uint64_t until)
{
    struct epoll_event ev[512];
    for (;;) {
        uint64_t now = now_ns();
        tick(now);
        if (done(arg))
            return true;
        if (got_sigint || now >= until || now >= L.deadline)
            return false;
        uint64_t lim = until < L.deadline ? until : L.deadline;
        uint64_t wait = (lim - now) / MSEC;
        int k = epoll_wait(L.ep, ev, 512, wait > 5 ? 5 : (int)wait);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            perror("rcload: epoll_wait");
            return false;
        }
        for (int i = 0; i < k; i++) {
            if (ev[i].data.ptr == &timer_tag) {
                uint64_t x;
                if (read(L.tfd, &x, sizeof x) < 0 && errno != EAGAIN)
                    perror("rcload: timerfd read");
                L.wake_at = 0;
                continue;
            }
            conn_event(ev[i].data.ptr, ev[i].events);
        }
    }
}

/* Predicate that is never true: run until the time limit. */
static bool never(void *arg)
{
    return false;
}

/* ------------------------------------------------------------------------------------ */
/* REST: a pool of keep-alive connections fed by a callback                              */

struct hslot;

struct hpool {
    struct hslot *slots;
    size_t n, active;
    uint32_t reconnects;
    /* queues the next request on s (and sets s->t_sent); false: nothing more to do */
    bool (*next)(struct hpool *p, struct hslot *s);
    /* the response (status 0: transport failure, body is the reason) */
    void (*done)(struct hpool *p, struct hslot *s, int status, const char *body, size_t n);
    void *arg;
};

struct hslot {
    struct conn c;
    struct hpool *pool;
    size_t idx, job;
    uint64_t t_sent;
    bool busy;
};

/* Reconnects a slot whose connection ended, or retires it. */
static void slot_restart(struct hslot *s)
{
    if (!L.stopping && !got_sigint && s->pool->reconnects++ < 100 && conn_start(&s->c))
        return;
    s->pool->active--;
}

/* Gives the slot its next request, or retires it. */
static void slot_next(struct hslot *s)
{
    if (L.stopping || got_sigint || !s->pool->next(s->pool, s)) {
        conn_close(&s->c, NULL);
        s->pool->active--;
        return;
    }
    s->busy = true;
}

/* Connected: start issuing requests. */
static void slot_open(struct conn *c)
{
    slot_next(c->ud);
}

/* A response arrived. */
static void slot_http(struct conn *c, int status, const char *body, size_t n)
{
    struct hslot *s = c->ud;
    s->busy = false;
    s->pool->done(s->pool, s, status, body, n);
    if (c->resp_close) {
        conn_close(c, NULL);
        slot_restart(s);
        return;
    }
    slot_next(s);
}

/* The connection ended under a request (counted by conn_fail). */
static void slot_closed(struct conn *c, const char *why)
{
    struct hslot *s = c->ud;
    if (s->busy) {
        s->busy = false;
        s->pool->done(s->pool, s, 0, why, strlen(why));
    }
    slot_restart(s);
}

static const struct conn_ops slot_ops = {
    .open = slot_open,
    .http = slot_http,
    .closed = slot_closed,
};

/* True when every slot is retired. */
static bool hpool_idle(void *arg)
{
    return ((struct hpool *)arg)->active == 0;
}

/* Runs the pool with n connections until it has nothing left (or the deadline). */
static bool hpool_run(struct hpool *p, size_t n)
{
    p->slots = xcalloc(n, sizeof *p->slots);
    p->n = n;
    p->active = 0;
    for (size_t i = 0; i < n; i++) {
        struct hslot *s = &p->slots[i];
        conn_init(&s->c, &slot_ops, s, (uint32_t)i, false);
        s->pool = p;
        s->idx = i;
        if (conn_start(&s->c))
            p->active++;
    }
    bool ok = loop_run(hpool_idle, p, UINT64_MAX);
    for (size_t i = 0; i < n; i++)
        conn_close(&p->slots[i].c, NULL);
    free(p->slots);
    p->slots = NULL;
    return ok;
}

/* One setup request. */
struct job {
    const char *method;
    char *path, *body;
    int expect, status;
    char *resp;
};

struct jobset {
    struct job *v;
    size_t n, next, failed;
};

/* Issues the next setup request. */
static bool jobs_next(struct hpool *p, struct hslot *s)
{
    struct jobset *js = p->arg;
    if (js->next >= js->n)
        return false;
    struct job *j = &js->v[js->next];
    s->job = js->next++;
    s->t_sent = now_ns();
    http_send(&s->c, j->method, j->path, j->body);
    return true;
}

/* Stores a setup response. */
static void jobs_done(struct hpool *p, struct hslot *s, int status, const char *body, size_t n)
{
    struct jobset *js = p->arg;
    struct job *j = &js->v[s->job];
    j->status = status;
    if (status == j->expect) {
        j->resp = strndup(body, n);
        return;
    }
    js->failed++;
    if (status) {
        E.http++;
        err_sample("setup %s %s: HTTP %d %.*s", j->method, j->path, status,
                   (int)(n > 100 ? 100 : n), body);
    }
}

/* Runs setup requests over a few keep-alive connections; true if all succeeded. */
static bool jobs_run(struct job *v, size_t n, size_t conns, const char *what)
{
    struct jobset js = {.v = v, .n = n};
    struct hpool p = {.next = jobs_next, .done = jobs_done, .arg = &js};
    uint64_t t0 = now_ns();
    if (!n)
        return true;
    bool finished = hpool_run(&p, conns < n ? conns : n);
    size_t missing = 0;
    for (size_t i = 0; i < n; i++)
        missing += v[i].status != v[i].expect;
    printf("setup: %-8s %6zu requests in %6.2f s%s", what, n, (double)(now_ns() - t0) / 1e9,
           missing ? "" : "\n");
    if (missing)
        printf(", %zu FAILED%s\n", missing, finished ? "" : " (timeout)");
    if (!finished)
        E.incomplete++;
    return !missing;
}

/* Frees the strings of a job array. */
static void jobs_free(struct job *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].path);
        free(v[i].body);
        free(v[i].resp);
    }
    free(v);
}

/* Names nrooms rooms <prefix>-<scenario>-<k>, with their topics. */
static void rooms_init(size_t nrooms)
{
    NROOMS = nrooms;
    ROOMS = xcalloc(nrooms, sizeof *ROOMS);
    for (size_t i = 0; i < nrooms; i++) {
        ROOMS[i].id = xasprintf("%s-%s-%zu", prefix, scenario_names[O.sc], i);
        ROOMS[i].topic = xasprintf("%s:%s", O.realtime ? "realtime" : "room", ROOMS[i].id);
    }
}

/* Creates nrooms rooms named <prefix>-<scenario>-<k>. */
static bool setup_rooms(size_t nrooms)
{
    rooms_init(nrooms);
    struct job *v = xcalloc(nrooms, sizeof *v);
    for (size_t i = 0; i < nrooms; i++) {
        v[i].method = "POST";
        v[i].path = xasprintf("/api/rooms");
        v[i].body =
            xasprintf("{\"id\":\"%s\",\"name\":\"rcload %s\"}", ROOMS[i].id, scenario_names[O.sc]);
        v[i].expect = 201;
    }
    bool ok = jobs_run(v, nrooms, SETUP_CONNS, "rooms");
    jobs_free(v, nrooms);
    return ok;
}

/* Allocates n clients (and a publisher, the last, if asked) spread over the rooms. */
static void clients_init(size_t n, bool publisher)
{
    NCL = n + (publisher ? 1 : 0);
    CL = xcalloc(NCL, sizeof *CL);
    for (size_t i = 0; i < NCL; i++) {
        struct client *cl = &CL[i];
        conn_init(&cl->c, &client_ops, cl, (uint32_t)i, true);
        cl->id = (uint32_t)i;
        cl->publisher = publisher && i == n;
        cl->room = cl->publisher ? 0 : (uint32_t)(i % NROOMS);
        cl->user = cl->publisher ? xasprintf("%s-pub", prefix) : xasprintf("%s-u%zu", prefix, i);
    }
}

/* Creates the clients: users, memberships, tokens, upgrade paths. */
static bool setup_clients(size_t n, bool publisher)
{
    clients_init(n, publisher);
    struct job *v = xcalloc(NCL, sizeof *v);
    for (size_t i = 0; i < NCL; i++) {
        v[i].method = "PUT";
        v[i].path = xasprintf("/api/rooms/%s/members/%s", ROOMS[CL[i].room].id, CL[i].user);
        v[i].body = xasprintf("{\"role\":\"member\"}");
        v[i].expect = 200;
    }
    bool ok = jobs_run(v, NCL, SETUP_CONNS, "members");
    jobs_free(v, NCL);
    if (!ok)
        return false;
    v = xcalloc(NCL, sizeof *v);
    long ttl = (long)O.timeout + 600;
    for (size_t i = 0; i < NCL; i++) {
        v[i].method = "POST";
        v[i].path = xasprintf("/api/tokens");
        v[i].body = xasprintf("{\"user_id\":\"%s\",\"ttl\":%ld}", CL[i].user, ttl);
        v[i].expect = 200;
    }
    ok = jobs_run(v, NCL, SETUP_CONNS, "tokens");
    for (size_t i = 0; ok && i < NCL; i++) {
        struct span body = {v[i].resp, strlen(v[i].resp)}, t;
        if (!jget(body, "token", &t) || t.n < 3 || t.p[0] != '"') {
            E.protocol++;
            err_sample("token response without a token: %.100s", v[i].resp);
            ok = false;
            break;
        }
        CL[i].path = xasprintf(O.realtime ? "/realtime/v1/websocket?apikey=%.*s&vsn=2.0.0"
                                          : "/socket/websocket?token=%.*s&vsn=2.0.0",
                               (int)t.n - 2, t.p + 1);
        CL[i].c.path = CL[i].path;
    }
    jobs_free(v, NCL);
    return ok;
}

/* Posts n messages into room 0 (history for the join scenario), one at a time. */
static bool setup_history(size_t n)
{
    struct job *v = xcalloc(n, sizeof *v);
    for (size_t i = 0; i < n; i++) {
        v[i].method = "POST";
        v[i].path = xasprintf("/api/rooms/%s/messages", ROOMS[0].id);
        v[i].body = xasprintf("{\"user_id\":\"%s-hist\",\"body\":\"history %zu\"}", prefix, i);
        v[i].expect = 201;
    }
    bool ok = jobs_run(v, n, 1, "history");
    jobs_free(v, n);
    return ok;
}

/* Closes every client connection, with a 1000 close frame where the WebSocket is open. */
static void clients_close(void)
{
    static const char normal[2] = {0x03, (char)0xe8};
    L.stopping = true;
    for (size_t i = 0; i < NCL; i++) {
        if (CL[i].c.fd >= 0 && CL[i].c.state == CS_OPEN)
            ws_send(&CL[i].c, 0x8, normal, sizeof normal);
        conn_close(&CL[i].c, NULL);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Reporting                                                                             */

/* VmRSS of a process in KiB, or -1. */
static long proc_rss_kib(long pid)
{
    char path[64], line[256];
    long kib = -1;
    if (pid <= 0)
        return -1;
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kib;
}

/* User+system CPU seconds of a process, or -1. */
static double proc_cpu_s(long pid)
{
    char path[64], line[1024];
    if (pid <= 0)
        return -1;
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = '\0';
    char *p = strrchr(line, ')');
    unsigned long long ut, st;
    /* after "pid (comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt
       cmajflt utime stime */
    if (!p ||
        sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* This process's user+system CPU seconds. */
static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* CPU use of this process and the server over a measured interval. */
struct cpu_window {
    uint64_t t0, t1;
    double self0, self1, srv0, srv1;
};

/* Starts the window. */
static void cpu_begin(struct cpu_window *w)
{
    w->t0 = now_ns();
    w->self0 = self_cpu_s();
    w->srv0 = proc_cpu_s(O.server_pid);
}

/* Ends the window. */
static void cpu_end(struct cpu_window *w)
{
    w->t1 = now_ns();
    w->self1 = self_cpu_s();
    w->srv1 = proc_cpu_s(O.server_pid);
}

/* Percent of one core. */
static double cpu_pct(const struct cpu_window *w, bool server)
{
    double secs = (double)(w->t1 - w->t0) / 1e9;
    double used = server ? w->srv1 - w->srv0 : w->self1 - w->self0;
    if (secs <= 0 || (server && (w->srv0 < 0 || w->srv1 < 0)))
        return -1;
    return 100.0 * used / secs;
}

static struct buf J; /* the final JSON line */

/* Appends ,"key":<value> to the JSON line. */
__attribute__((format(printf, 2, 3))) static void jkv(const char *key, const char *fmt, ...)
{
    char v[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v, sizeof v, fmt, ap);
    va_end(ap);
    buf_printf(&J, "%s\"%s\":%s", buf_used(&J) > 1 ? "," : "", key, v);
}

/* Appends a latency summary object to the JSON line and prints it as text. */
static void report_lat(const char *key, const char *label, struct lat *l)
{
    lat_sort(l);
    printf("  %-22s n=%zu  p50 %.3f  p90 %.3f  p99 %.3f  max %.3f ms\n", label, l->n, lat_ms(l, 50),
           lat_ms(l, 90), lat_ms(l, 99), lat_ms(l, 100));
    jkv(key, "{\"n\":%zu,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f}", l->n,
        lat_ms(l, 50), lat_ms(l, 90), lat_ms(l, 99), lat_ms(l, 100));
}

/* Starts the JSON line with the scenario and target. */
static void report_begin(void)
{
    buf_add(&J, "{", 1);
    jkv("scenario", "\"%s\"", scenario_names[O.sc]);
    jkv("target", "\"%s\"", O.hostport);
}

/* Prints CPU use and errors, finishes and prints the JSON line; returns the exit code. */
static int report_end(const struct cpu_window *w, bool lost)
{
    double cs = cpu_pct(w, false), ss = cpu_pct(w, true);
    printf("  %-22s client %.0f%%", "cpu (of one core)", cs);
    if (ss >= 0)
        printf("  server %.0f%%", ss);
    printf("\n");
    jkv("client_cpu_pct", "%.1f", cs);
    if (ss >= 0)
        jkv("server_cpu_pct", "%.1f", ss);
    printf("  %-22s connect %" PRIu64 "  handshake %" PRIu64 "  closed %" PRIu64 "  reply %" PRIu64
           "  http %" PRIu64 "  protocol %" PRIu64 "  incomplete %" PRIu64
           "  (rate_limited %" PRIu64 ", retried)\n",
           "errors", E.connect, E.handshake, E.closed, E.reply, E.http, E.protocol, E.incomplete,
           E.rate_limited);
    for (int i = 0; i < E.nsamples; i++)
        printf("    e.g. %s\n", E.samples[i]);
    if (got_sigint)
        printf("  interrupted: the numbers cover the run until SIGINT\n");
    jkv("errors",
        "{\"connect\":%" PRIu64 ",\"handshake\":%" PRIu64 ",\"closed\":%" PRIu64
        ",\"reply\":%" PRIu64 ",\"rate_limited\":%" PRIu64 ",\"http\":%" PRIu64
        ",\"protocol\":%" PRIu64 ",\"incomplete\":%" PRIu64 "}",
        E.connect, E.handshake, E.closed, E.reply, E.rate_limited, E.http, E.protocol,
        E.incomplete);
    bool ok = !err_total() && !lost && !got_sigint;
    jkv("ok", "%s", ok ? "true" : "false");
    buf_add(&J, "}", 1);
    printf("%.*s\n", (int)buf_used(&J), buf_data(&J));
    fflush(stdout);
    return ok ? 0 : 1;
}

/* Checks which acked seqs each joined client missed; returns the total. */
static uint64_t count_missing(size_t *incomplete_clients)
{
    uint64_t missing = 0;
    *incomplete_clients = 0;
    for (size_t i = 0; i < NCL; i++) {
        struct client *cl = &CL[i];
        if (cl->publisher || !cl->replied || !cl->hist)
            continue; /* never joined: counted as a join failure instead */
        struct room *rm = &ROOMS[cl->room];
        uint64_t m = 0;
        for (size_t k = 0; k < rm->nacked; k++)
            m += !st_has(&cl->st, rm->acked[k]);
        missing += m;
        *incomplete_clients += m > 0;
    }
    return missing;
}

/* Sums duplicate, out-of-order and stray deliveries over all clients. */
static void count_order(uint64_t *dup, uint64_t *ooo, uint64_t *stray)
{
    *dup = *ooo = *stray = 0;
    for (size_t i = 0; i < NCL; i++) {
        *dup += CL[i].st.dup;
        *ooo += CL[i].st.ooo;
        *stray += CL[i].st.stray;
    }
}

/* Unique deliveries that can still be expected: every acked message of the room for a
   client still joined, what it already got for one whose socket or channel ended. */
static uint64_t expected_deliveries(void)
{
    uint64_t n = 0;
    for (size_t i = 0; i < NCL; i++) {
        const struct client *cl = &CL[i];
        if (cl->publisher || !cl->replied || !cl->hist)
            continue;
        n += cl->js == JS_JOINED ? ROOMS[cl->room].nacked : cl->st.uniq;
    }
    return n;
}

/* expected_deliveries(), recomputed at most every 10 ms: done predicates run per loop turn. */
static uint64_t expected_cached(void)
{
    static uint64_t value, at;
    uint64_t now = now_ns();
    if (!at || now - at >= 10 * MSEC) {
        value = expected_deliveries();
        at = now;
    }
    return value;
}

/* ------------------------------------------------------------------------------------ */
/* Scenario: rest                                                                        */

static struct {
    uint64_t t_end, issued, ok, t_last;
    struct lat lat;
    int64_t **seqs; /* per room */
    size_t *nseqs, *capseqs;
} RS;

/* Next POST /api/rooms/{room}/messages for slot s, until the duration or count is used. */
static bool rest_next(struct hpool *p, struct hslot *s)
{
    uint64_t now = now_ns();
    if (now >= RS.t_end || (O.count > 0 && RS.issued >= (uint64_t)O.count))
        return false;
    char path[256], body[512];
    size_t room = s->idx % NROOMS;
    RS.issued++;
    snprintf(path, sizeof path, "/api/rooms/%s/messages", ROOMS[room].id);
    snprintf(body, sizeof body,
             "{\"user_id\":\"%s-u%zu\",\"body\":\"t=%" PRIu64 " c=%zu n=%" PRIu64 "\"}", prefix,
             s->idx, now, s->idx, RS.issued);
    s->t_sent = now;
    http_send(&s->c, "POST", path, body);
    return true;
}

/* Records the latency and the seq of a 201. */
static void rest_done(struct hpool *p, struct hslot *s, int status, const char *body, size_t n)
{
    uint64_t now = now_ns();
    if (status != 201) {
        if (status) {
            E.http++;
            err_sample("POST message: HTTP %d %.*s", status, (int)(n > 100 ? 100 : n), body);
        }
        return;
    }
    RS.ok++;
    RS.t_last = now;
    lat_add(&RS.lat, now - s->t_sent);
    struct span b = {body, n}, v;
    int64_t seq;
    if (!jget(b, "seq", &v) || !jint(v, &seq)) {
        E.protocol++;
        err_sample("POST message: 201 without seq: %.100s", body);
        return;
    }
    size_t r = s->idx % NROOMS;
    if (RS.nseqs[r] == RS.capseqs[r]) {
        RS.capseqs[r] = RS.capseqs[r] ? RS.capseqs[r] * 2 : 1024;
        RS.seqs[r] = xrealloc(RS.seqs[r], RS.capseqs[r] * sizeof **RS.seqs);
    }
    RS.seqs[r][RS.nseqs[r]++] = seq;
}

/* qsort comparator for int64_t. */
static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* N keep-alive connections posting messages back to back. */
static int run_rest(void)
{
    if (!setup_rooms((size_t)O.rooms))
        return 2;
    RS.seqs = xcalloc(NROOMS, sizeof *RS.seqs);
    RS.nseqs = xcalloc(NROOMS, sizeof *RS.nseqs);
    RS.capseqs = xcalloc(NROOMS, sizeof *RS.capseqs);
    printf("rest: %ld connections, %ld rooms, %s\n", O.conns, O.rooms,
           O.count > 0 ? "until --count" : "for --duration");
    struct cpu_window w;
    cpu_begin(&w);
    uint64_t t0 = w.t0;
    RS.t_end = O.count > 0 ? UINT64_MAX : t0 + (uint64_t)(O.duration * (double)NSEC);
    struct hpool p = {.next = rest_next, .done = rest_done};
    if (!hpool_run(&p, (size_t)O.conns) && !got_sigint) {
        E.incomplete++;
        err_sample("rest: requests still in flight at the --timeout");
    }
    cpu_end(&w);
    double secs = RS.t_last > t0 ? (double)(RS.t_last - t0) / 1e9 : 0;
    double rate = secs > 0 ? (double)RS.ok / secs : 0;
    uint64_t dups = 0, gaps = 0;
    for (size_t r = 0; r < NROOMS; r++) {
        int64_t *v = RS.seqs[r];
        size_t n = RS.nseqs[r];
        if (n > 1)
            qsort(v, n, sizeof *v, cmp_i64);
        for (size_t i = 1; i < n; i++) {
            if (v[i] == v[i - 1])
                dups++;
            else if (v[i] != v[i - 1] + 1)
                gaps += (uint64_t)(v[i] - v[i - 1] - 1);
        }
        if (n && v[0] != 1)
            gaps += (uint64_t)(v[0] - 1);
    }
    report_begin();
    printf("  %-22s %" PRIu64 " in %.2f s = %.0f msg/s (issued %" PRIu64 ")\n", "acked messages",
           RS.ok, secs, rate, RS.issued);
    jkv("conns", "%ld", O.conns);
    jkv("rooms", "%ld", O.rooms);
    jkv("acked", "%" PRIu64, RS.ok);
    jkv("issued", "%" PRIu64, RS.issued);
    jkv("seconds", "%.3f", secs);
    jkv("msgs_per_s", "%.1f", rate);
    report_lat("latency", "latency", &RS.lat);
    printf("  %-22s %" PRIu64 " duplicate seqs, %" PRIu64 " missing seqs in %zu rooms\n",
           "seq check", dups, gaps, NROOMS);
    jkv("seq_duplicates", "%" PRIu64, dups);
    jkv("seq_gaps", "%" PRIu64, gaps);
    return report_end(&w, dups || gaps);
}

/* ------------------------------------------------------------------------------------ */
/* fanout --floor: a reference server, the least any server must do for this fan-out    */
/*
 * A child process (its own core to run on, its own CPU figure through O.server_pid) that
 * listens on 127.0.0.1 on an ephemeral port: epoll, non-blocking sockets. It accepts,
 * answers the WebSocket upgrade, replies ok to every phx_join (last_seq 0) with an empty
 * message_history, answers heartbeats, and for every new_message encodes ONE frame of the
 * shape rowcast broadcasts ([null,null,topic,"new_message",{body,id,inserted_at,reply_to,
 * seq,user_id,version}]), writes it to every joined socket, then replies ok with the seq
 * to the sender. Nothing else: no store, no channels, no checks beyond framing.
 */

/* One socket of the floor server. */
struct fsock {
    int fd;
    bool ws;       /* upgraded */
    bool pollout;  /* EPOLLOUT registered */
    bool dirty;    /* in FL.dirty: has output queued this loop turn */
    ssize_t ji;    /* index in FL.joined, -1: not joined */
    struct buf in, out;
};

static struct {
    int ep, lfd;
    size_t nsocks, max_socks;
    struct fsock **joined; /* sockets that get every message */
    size_t njoined, capj;
    struct fsock **dirty; /* sockets with output queued in this loop turn */
    size_t ndirty, capdirty;
    struct fsock **dead; /* closed, freed after the epoll batch that closed them */
    size_t ndead, capd;
    int64_t seq;
    struct buf body, frame; /* the message's payload text, then its one encoded frame */
    pid_t pid;              /* the child, in the parent */
} FL = {.ep = -1, .lfd = -1};

/* Appends p to a growable pointer array. */
static void fl_push(struct fsock ***v, size_t *n, size_t *cap, struct fsock *p)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 1024;
        *v = xrealloc(*v, *cap * sizeof **v);
    }
    (*v)[(*n)++] = p;
}

/* Closes a socket; its memory lives until the end of the epoll batch. */
static void fl_close(struct fsock *s)
{
    if (s->fd < 0)
        return;
    epoll_ctl(FL.ep, EPOLL_CTL_DEL, s->fd, NULL);
    close(s->fd);
    s->fd = -1;
    if (s->ji >= 0) {
        struct fsock *last = FL.joined[--FL.njoined];
        FL.joined[s->ji] = last;
        last->ji = s->ji;
        s->ji = -1;
    }
    FL.nsocks--;
    fl_push(&FL.dead, &FL.ndead, &FL.capd, s);
}

/* Registers or drops interest in writability. */
static void fl_pollout(struct fsock *s, bool on)
{
    if (s->pollout == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = s};
    epoll_ctl(FL.ep, EPOLL_CTL_MOD, s->fd, &ev);
    s->pollout = on;
}

/* Writes queued output while the socket takes it; closes it on an error. */
static void fl_flush(struct fsock *s)
{
    while (s->fd >= 0 && buf_used(&s->out)) {
        ssize_t w = send(s->fd, buf_data(&s->out), buf_used(&s->out), MSG_NOSIGNAL);
        if (w > 0) {
            buf_consume(&s->out, (size_t)w);
        } else if (w < 0 && errno == EAGAIN) {
            fl_pollout(s, true);
            return;
        } else if (!(w < 0 && errno == EINTR)) {
            fl_close(s);
            return;
        }
    }
    if (s->fd >= 0)
        fl_pollout(s, false);
}

/* Queues d on the socket; queues are written once per loop turn (fl_flush_dirty), so a
   socket that got several messages in one turn takes them in one send. */
static void fl_write(struct fsock *s, const char *d, size_t n)
{
    if (s->fd < 0)
        return;
    buf_add(&s->out, d, n);
    if (!s->dirty && !s->pollout) {
        s->dirty = true;
        fl_push(&FL.dirty, &FL.ndirty, &FL.capdirty, s);
    }
}

/* Writes every socket queued on in this loop turn. */
static void fl_flush_dirty(void)
{
    for (size_t i = 0; i < FL.ndirty; i++) {
        FL.dirty[i]->dirty = false;
        fl_flush(FL.dirty[i]);
    }
    FL.ndirty = 0;
}

/* An unmasked server frame header for n payload bytes; returns its length (<= 10). */
static size_t fl_head(unsigned char *h, unsigned op, size_t n)
{
    size_t hl = 0;
    h[hl++] = (unsigned char)(0x80 | op);
    if (n < 126) {
        h[hl++] = (unsigned char)n;
    } else if (n < 65536) {
        h[hl++] = 126;
        h[hl++] = (unsigned char)(n >> 8);
        h[hl++] = (unsigned char)n;
    } else {
        h[hl++] = 127;
        for (int i = 7; i >= 0; i--)
            h[hl++] = (unsigned char)((uint64_t)n >> (8 * i));
    }
    return hl;
}

/* Encodes payload d as one frame into FL.frame. */
static void fl_encode(unsigned op, const char *d, size_t n)
{
    unsigned char h[10];
    size_t hl = fl_head(h, op, n);
    FL.frame.off = FL.frame.len = 0;
    buf_add(&FL.frame, h, hl);
    buf_add(&FL.frame, d, n);
}

/* Sends one frame to one socket. */
static void fl_frame_to(struct fsock *s, unsigned op, const char *d, size_t n)
{
    fl_encode(op, d, n);
    fl_write(s, buf_data(&FL.frame), buf_used(&FL.frame));
}

/* Sends one text frame built from a format string. */
__attribute__((format(printf, 2, 3))) static void fl_textf(struct fsock *s, const char *fmt, ...)
{
    char tmp[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0 && (size_t)n < sizeof tmp)
        fl_frame_to(s, 0x1, tmp, (size_t)n);
}

/* One new_message: one frame to every joined socket, then the sender's ok with the seq. */
static void fl_message(struct fsock *s, const struct pmsg *m)
{
    struct span body;
    if (!jget(m->payload, "body", &body) || !body.n || body.p[0] != '"') {
        fl_textf(s, "[%.*s,%.*s,%.*s,\"phx_reply\",{\"response\":{\"reason\":\"invalid_body\"},"
                 "\"status\":\"error\"}]", (int)m->jr.n, m->jr.p, (int)m->ref.n, m->ref.p,
                 (int)m->topic.n, m->topic.p);
        return;
    }
    int64_t seq = ++FL.seq;
    struct timespec ts;
    struct tm tm;
    char when[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t wl = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + wl, sizeof when - wl, ".%06ldZ", ts.tv_nsec / 1000);
    FL.body.off = FL.body.len = 0;
    buf_printf(&FL.body,
               "[null,null,%.*s,\"new_message\",{\"body\":%.*s,\"id\":%" PRId64
               ",\"inserted_at\":\"%s\",\"reply_to\":null,\"seq\":%" PRId64
               ",\"user_id\":\"floor\",\"version\":1}]",
               (int)m->topic.n, m->topic.p, (int)body.n, body.p, seq, when, seq);
    fl_encode(0x1, buf_data(&FL.body), buf_used(&FL.body));
    for (size_t i = 0; i < FL.njoined; i++)
        fl_write(FL.joined[i], buf_data(&FL.frame), buf_used(&FL.frame));
    fl_textf(s, "[%.*s,%.*s,%.*s,\"phx_reply\",{\"response\":{\"message_id\":%" PRId64
             ",\"seq\":%" PRId64 "},\"status\":\"ok\"}]",
             (int)m->jr.n, m->jr.p, (int)m->ref.n, m->ref.p, (int)m->topic.n, m->topic.p, seq,
             seq);
}

/* One V2 text frame from a client: phx_join, heartbeat or new_message; others ignored. */
static void fl_text(struct fsock *s, const char *msg, size_t n)
{
    struct pmsg m;
    if (!pmsg_parse(msg, n, &m)) {
        fl_close(s);
        return;
    }
    if (jeq(m.event, "heartbeat")) {
        fl_textf(s, "[null,%.*s,\"phoenix\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]",
                 (int)m.ref.n, m.ref.p);
    } else if (jeq(m.event, "phx_join")) {
        fl_textf(s, "[%.*s,%.*s,%.*s,\"phx_reply\",{\"response\":{\"last_seq\":%" PRId64
                 "},\"status\":\"ok\"}]",
                 (int)m.jr.n, m.jr.p, (int)m.ref.n, m.ref.p, (int)m.topic.n, m.topic.p, FL.seq);
        fl_textf(s, "[%.*s,null,%.*s,\"message_history\",{\"messages\":[]}]", (int)m.jr.n,
                 m.jr.p, (int)m.topic.n, m.topic.p);
        if (s->fd >= 0 && s->ji < 0) {
            s->ji = (ssize_t)FL.njoined;
            fl_push(&FL.joined, &FL.njoined, &FL.capj, s);
        }
    } else if (jeq(m.event, "new_message")) {
        fl_message(s, &m);
    }
}

/* The upgrade request, once complete: 101 with the accept key, or 400 and close. */
static bool fl_upgrade(struct fsock *s)
{
    const char *p = buf_data(&s->in);
    size_t n = buf_used(&s->in);
    const char *e = memmem(p, n, "\r\n\r\n", 4);
    if (!e) {
        if (n > 16384)
            fl_close(s);
        return false;
    }
    const char *key = NULL;
    size_t kl = 0;
    for (const char *q = memmem(p, (size_t)(e - p), "\r\n", 2); q && q < e;) {
        q += 2;
        const char *le = memmem(q, (size_t)(e + 2 - q), "\r\n", 2);
        if (!le)
            break;
        if (le - q > 18 && !strncasecmp(q, "sec-websocket-key:", 18)) {
            key = q + 18;
            while (key < le && (*key == ' ' || *key == '\t'))
                key++;
            kl = (size_t)(le - key);
            while (kl && (key[kl - 1] == ' ' || key[kl - 1] == '\t'))
                kl--;
        }
        q = le;
    }
    if (strncmp(p, "GET ", 4) || !key || !kl || kl > 64) {
        static const char bad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                  "Connection: close\r\n\r\n";
        fl_write(s, bad, sizeof bad - 1);
        fl_flush(s);
        fl_close(s);
        return false;
    }
    char acc[32], resp[160];
    ws_accept(key, kl, acc);
    int rl = snprintf(resp, sizeof resp,
                      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                      acc);
    buf_consume(&s->in, (size_t)(e - p) + 4);
    s->ws = true;
    fl_write(s, resp, (size_t)rl);
    return true;
}

/* One complete masked client frame, if buffered: text, close, ping (pong), pong. */
static bool fl_frame(struct fsock *s)
{
    unsigned char *p = (unsigned char *)buf_data(&s->in);
    size_t n = buf_used(&s->in), h;
    if (n < 2)
        return false;
    unsigned op = p[0] & 0x0f;
    uint64_t len;
    if (!(p[1] & 0x80) || !(p[0] & 0x80) || (p[0] & 0x70)) {
        fl_close(s); /* unmasked, fragmented or with reserved bits: never sent by rcload */
        return false;
    }
    if (!ws_len(p, n, &len, &h))
        return false;
    h += 4; /* the mask */
    if (len > MAX_FRAME) {
        fl_close(s);
        return false;
    }
    if (n < h + len)
        return false;
    char *pl = (char *)p + h;
    for (size_t i = 0; i < len; i++)
        pl[i] ^= (char)p[h - 4 + (i & 3)];
    buf_consume(&s->in, h + (size_t)len); /* pl stays valid: nothing is read into `in` now */
    switch (op) {
    case 0x1: fl_text(s, pl, (size_t)len); break;
    case 0x8:
        fl_frame_to(s, 0x8, pl, len >= 2 ? 2 : 0);
        fl_flush(s);
        fl_close(s);
        return false;
    case 0x9: fl_frame_to(s, 0xA, pl, (size_t)len); break;
    case 0xA: break;
    default: fl_close(s); return false;
    }
    return s->fd >= 0;
}

/* Reads what a socket has and handles every complete request or frame in it. */
static void fl_read(struct fsock *s)
{
    for (int i = 0; i < 16 && s->fd >= 0; i++) {
        buf_reserve(&s->in, 65536);
        size_t room = s->in.cap - s->in.len;
        ssize_t r = recv(s->fd, s->in.p + s->in.len, room, 0);
        if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)) {
            fl_close(s);
            return;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return;
        s->in.len += (size_t)r;
        while (s->fd >= 0 && buf_used(&s->in) && (s->ws ? fl_frame(s) : fl_upgrade(s)))
            ;
        if ((size_t)r < room)
            return;
    }
}

/* Accepts every pending connection, up to the socket cap. */
static void fl_accept(void)
{
    int one = 1;
    for (;;) {
        int fd = accept4(FL.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        if (FL.nsocks >= FL.max_socks) {
            close(fd);
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct fsock *s = xcalloc(1, sizeof *s);
        s->fd = fd;
        s->ji = -1;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
        if (epoll_ctl(FL.ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            free(s);
            continue;
        }
        FL.nsocks++;
    }
}

/* The child's loop: serves until `until` or until the parent is gone. */
static void fl_serve(pid_t parent, uint64_t until)
{
    struct epoll_event ev[512];
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &FL};
    if (epoll_ctl(FL.ep, EPOLL_CTL_ADD, FL.lfd, &lev) < 0)
        return;
    while (now_ns() < until && getppid() == parent) {
        int k = epoll_wait(FL.ep, ev, 512, 100);
        for (int i = 0; i < k; i++) {
            if (ev[i].data.ptr == &FL) {
                fl_accept();
                continue;
            }
            struct fsock *s = ev[i].data.ptr;
            if (s->fd >= 0 && (ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                fl_read(s);
            if (s->fd >= 0 && (ev[i].events & EPOLLOUT))
                fl_flush(s);
        }
        fl_flush_dirty();
        for (size_t i = 0; i < FL.ndead; i++) {
            buf_free(&FL.dead[i]->in);
            buf_free(&FL.dead[i]->out);
            free(FL.dead[i]);
        }
        FL.ndead = 0;
    }
}

/* Starts the floor server in a child process on 127.0.0.1:<ephemeral>, points --url
   there and --server-pid at the child. */
static bool floor_start(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001u)};
    socklen_t al = sizeof a;
    int one = 1;
    FL.lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (FL.lfd < 0 || setsockopt(FL.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(FL.lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(FL.lfd, 4096) < 0 ||
        getsockname(FL.lfd, (struct sockaddr *)&a, &al) < 0) {
        perror("rcload: floor listen");
        return false;
    }
    O.dst = a;
    snprintf(O.hostport, sizeof O.hostport, "127.0.0.1:%u", (unsigned)ntohs(a.sin_port));
    pid_t parent = getpid();
    fflush(stdout);
    fflush(stderr);
    FL.pid = fork();
    if (FL.pid < 0) {
        perror("rcload: fork");
        return false;
    }
    if (FL.pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        signal(SIGINT, SIG_IGN); /* the parent reports first, then ends the child */
        FL.max_socks = (size_t)O.subs + 16;
        FL.ep = epoll_create1(EPOLL_CLOEXEC);
        if (FL.ep >= 0)
            fl_serve(parent, now_ns() + (uint64_t)((O.timeout + 10) * (double)NSEC));
        _exit(0);
    }
    close(FL.lfd);
    FL.lfd = -1;
    O.server_pid = FL.pid;
    return true;
}

/* Ends the floor server's child, if one was started. */
static void floor_stop(void)
{
    if (FL.pid <= 0)
        return;
    kill(FL.pid, SIGTERM);
    waitpid(FL.pid, NULL, 0);
    FL.pid = 0;
}

/* ------------------------------------------------------------------------------------ */
/* Scenario: fanout                                                                      */

static struct {
    uint64_t t_pub_done, last_activity;
    bool pub_done;
    uint64_t rest_issued;
    /* --rate: open-loop publisher */
    uint64_t t0, nsched, inflight; /* schedule start, sends made, sends awaiting a reply */
    uint64_t *ref_t;               /* send time by ref, 0: not an outstanding message */
    size_t nref;
    struct lat lag; /* how late each send was against its slot in the schedule */
} FO;

/* Grows the zero-filled array *v of *n entries until index i is in it. */
static void u64s_reach(uint64_t **v, size_t *n, size_t i)
{
    if (i < *n)
        return;
    size_t m = *n ? *n : 1024;
    while (i >= m)
        m *= 2;
    *v = xrealloc(*v, m * sizeof **v);
    memset(*v + *n, 0, (m - *n) * sizeof **v);
    *n = m;
}

/* The publisher has nothing more to send. */
static void fanout_pub_over(uint64_t now)
{
    if (!FO.pub_done) {
        FO.pub_done = true;
        FO.t_pub_done = FO.last_activity = now;
    }
}

/* --notif-subs: the notifications channels of the first K subscribers and their unread
   events. The publisher is another user, so each of its messages raises every one of
   them by one: for last_seq S, unread = unread0 + (S - base), seqs being gapless per room. */
static struct {
    size_t joining, joined, failed; /* notifications joins in flight, acked, refused */
    uint64_t *pub_t;                /* publish time (the body's timestamp) by seq, 0: unknown */
    size_t npub_t;
    struct {
        int64_t seq;
        uint64_t t;
    } * pend; /* unread receipts that came before any copy of their message */
    size_t npend, cap;
    uint64_t expect, expect_at; /* unread events still expected, and when it was counted */
    struct lat lat;             /* publish to unread receipt */
} NF;

/* Remembers when the message with this seq was published, from its body's timestamp. */
static void notif_pub_time(int64_t seq, struct span body)
{
    uint64_t t;
    if (!O.notif_subs || seq < 1 || seq > (int64_t)MAX_SEQ_SPAN || !body_ts(body, &t))
        return;
    u64s_reach(&NF.pub_t, &NF.npub_t, (size_t)seq);
    if (!NF.pub_t[seq])
        NF.pub_t[seq] = t;
}

/* Records the latency of an unread receipt, or keeps it until its publish time is known. */
static void notif_latency(int64_t seq, uint64_t now)
{
    uint64_t t = seq >= 1 && (size_t)seq < NF.npub_t ? NF.pub_t[seq] : 0;
    if (t) {
        if (t <= now)
            lat_add(&NF.lat, now - t);
        return;
    }
    if (NF.npend == NF.cap) {
        NF.cap = NF.cap ? NF.cap * 2 : 256;
        NF.pend = xrealloc(NF.pend, NF.cap * sizeof *NF.pend);
    }
    NF.pend[NF.npend].seq = seq;
    NF.pend[NF.npend++].t = now;
}

/* Gives every notifications subscriber its topic. */
static void notif_setup(void)
{
    for (size_t i = 0; i < (size_t)O.notif_subs; i++) {
        CL[i].ns = xcalloc(1, sizeof *CL[i].ns);
        CL[i].ns->topic = xasprintf("notifications:%s", CL[i].user);
    }
}

/* The room join is done: join notifications:<user> on the same socket. */
static void notif_joined_room(struct client *cl, uint64_t now)
{
    struct nsub *ns = cl->ns;
    if (!ns)
        return;
    ns->st.base = ns->st.max = cl->st.base;
    ns->join_ref = ++cl->ref;
    ns->js = JS_PENDING;
    NF.joining++;
    client_sendf(cl, "[\"%" PRIu64 "\",\"%" PRIu64 "\",\"%s\",\"phx_join\",{}]", ns->join_ref,
                 ns->join_ref, ns->topic);
}

/* The notifications join ended, with its ok reply (ok) or without one. */
static void notif_join_over(struct nsub *ns, bool ok)
{
    if (ns->js != JS_PENDING)
        return;
    NF.joining--;
    ns->js = ok ? JS_JOINED : JS_FAILED;
    if (ok)
        NF.joined++;
    else
        NF.failed++;
}

/* The socket ended: so did the notifications channel on it. */
static void notif_ended(struct client *cl)
{
    if (!cl->ns || cl->c.fd >= 0)
        return; /* only the room channel ended: the notifications channel goes on */
    notif_join_over(cl->ns, false);
    if (cl->ns->js == JS_JOINED)
        cl->ns->js = JS_CLOSED;
}

/* Checks one unread event against the message its last_seq names. */
static void notif_unread(struct client *cl, struct span pl, uint64_t now)
{
    struct nsub *ns = cl->ns;
    struct span rid, v;
    int64_t unread, last, read;
    ns->frames++;
    if (!jget(pl, "room_id", &rid) || !jget(pl, "unread", &v) || !jint(v, &unread) ||
        !jget(pl, "last_seq", &v) || !jint(v, &last) || !jget(pl, "last_read_seq", &v) ||
        !jint(v, &read)) {
        E.protocol++;
        err_sample("unread without room_id, unread, last_seq or last_read_seq: %.*s", (int)pl.n,
                   pl.p);
        return;
    }
    if (!jeq(rid, ROOMS[0].id) || read != ns->read0 ||
        unread != ns->unread0 + (last - ns->st.base)) {
        ns->wrong++;
        err_sample("%s: unread %.*s, expected room %s, unread %" PRId64 ", last_read_seq %" PRId64,
                   cl->user, (int)pl.n, pl.p, ROOMS[0].id, ns->unread0 + (last - ns->st.base),
                   ns->read0);
    }
    if (st_add(&ns->st, last))
        notif_latency(last, now);
}

/* Frames of a notifications subscriber: its room join reply gives the counts to start
   from; everything on its notifications topic is taken here. */
static bool notif_frame(struct client *cl, const struct pmsg *m, uint64_t now)
{
    struct nsub *ns = cl->ns;
    struct span st = {"", 0}, resp = {"{}", 2}, v;
    int64_t ref = 0;
    if (!ns)
        return false;
    bool reply = jeq(m->event, "phx_reply");
    if (reply) {
        jget(m->payload, "status", &st);
        jget(m->payload, "response", &resp);
        jint(m->ref, &ref);
    }
    if (!jeq(m->topic, ns->topic)) {
        if (reply && ref > 0 && (uint64_t)ref == cl->join_ref && !cl->replied) {
            if (jget(resp, "unread", &v))
                jint(v, &ns->unread0);
            if (jget(resp, "last_read_seq", &v))
                jint(v, &ns->read0);
        }
        return false;
    }
    if (jeq(m->event, "unread")) {
        notif_unread(cl, m->payload, now);
        FO.last_activity = now;
    } else if (reply && ref > 0 && (uint64_t)ref == ns->join_ref && ns->js == JS_PENDING) {
        notif_join_over(ns, jeq(st, "ok"));
        if (ns->js == JS_FAILED) {
            E.reply++;
            err_sample("notifications join error reply: %.*s", (int)m->payload.n, m->payload.p);
        }
    } else if (reply && !jeq(st, "ok")) {
        E.reply++;
        err_sample("notifications error reply: %.*s", (int)m->payload.n, m->payload.p);
    } else if (jeq(m->event, "phx_close") || jeq(m->event, "phx_error")) {
        if (!L.stopping) {
            E.closed++;
            err_sample("notifications channel ended: %.*s %.*s", (int)m->event.n, m->event.p,
                       (int)m->payload.n, m->payload.p);
        }
        notif_join_over(ns, false);
        if (ns->js == JS_JOINED)
            ns->js = JS_CLOSED;
    }
    return true; /* unread_notifications, new_notification: not counted */
}

/* True when no notifications join awaits its reply. */
static bool notif_joins_done(void *arg)
{
    return NF.joining == 0;
}

/* Unread events still expected: every acked message for a subscriber whose notifications
   channel is up, what it already got for one whose channel ended; at most every 10 ms. */
static uint64_t notif_expected(void)
{
    uint64_t now = now_ns();
    if (NF.expect_at && now - NF.expect_at < 10 * MSEC)
        return NF.expect;
    NF.expect_at = now;
    NF.expect = 0;
    for (size_t i = 0; i < (size_t)O.notif_subs; i++) {
        const struct nsub *ns = CL[i].ns;
        NF.expect += ns->js == JS_JOINED && CL[i].c.fd >= 0 ? ROOMS[0].nacked : ns->st.uniq;
    }
    return NF.expect;
}

/* Unique unread events received by all notifications subscribers. */
static uint64_t notif_received(void)
{
    uint64_t n = 0;
    for (size_t i = 0; i < (size_t)O.notif_subs; i++)
        n += CL[i].ns->st.uniq;
    return n;
}

/* Reports the unread events: expected, received, missing, wrong, latency; true if clean. */
static bool notif_report(void)
{
    uint64_t expect = 0, missing = 0, frames = 0, wrong = 0, dup = 0, ooo = 0, stray = 0;
    size_t subs = 0;
    struct room *rm = &ROOMS[0];
    for (size_t i = 0; i < NF.npend; i++) {
        int64_t seq = NF.pend[i].seq;
        uint64_t t = seq >= 1 && (size_t)seq < NF.npub_t ? NF.pub_t[seq] : 0;
        if (t && t <= NF.pend[i].t)
            lat_add(&NF.lat, NF.pend[i].t - t);
    }
    for (size_t i = 0; i < (size_t)O.notif_subs; i++) {
        const struct client *cl = &CL[i];
        const struct nsub *ns = cl->ns;
        frames += ns->frames;
        wrong += ns->wrong;
        dup += ns->st.dup;
        ooo += ns->st.ooo;
        stray += ns->st.stray;
        if (!cl->replied || !cl->hist)
            continue; /* not in the room: counted as a subscriber join failure */
        subs++;
        expect += rm->nacked;
        for (size_t k = 0; k < rm->nacked; k++)
            missing += !st_has(&ns->st, rm->acked[k]);
    }
    uint64_t got = notif_received();
    printf("  %-22s %zu of %ld joined notifications:<user>, %zu refused\n", "notif subscribers",
           NF.joined, O.notif_subs, NF.failed);
    printf("  %-22s expected %" PRIu64 ", received %" PRIu64 " (%" PRIu64
           " frames), missing %" PRIu64 ", wrong %" PRIu64 ", duplicate %" PRIu64
           ", out of order %" PRIu64 ", stray %" PRIu64 "\n",
           "unread events", expect, got, frames, missing, wrong, dup, ooo, stray);
    jkv("notif_subs", "%ld", O.notif_subs);
    jkv("notif_subs_joined", "%zu", NF.joined);
    jkv("unread_expected", "%" PRIu64, expect);
    jkv("unread_received", "%" PRIu64, got);
    jkv("unread_missing", "%" PRIu64, missing);
    jkv("unread_wrong", "%" PRIu64, wrong);
    jkv("unread_duplicate", "%" PRIu64, dup);
    jkv("unread_out_of_order", "%" PRIu64, ooo);
    jkv("unread_stray", "%" PRIu64, stray);
    report_lat("unread_latency", "unread latency", &NF.lat);
    return !missing && !wrong && !dup && !ooo && !stray && NF.joined == subs;
}

/* The publisher sends until --messages are acked. */
static bool fanout_may_send(struct client *cl, uint64_t now)
{
    bool more = cl->acked < (uint32_t)O.messages && cl->sent < (uint32_t)O.messages * 4;
    if (!more && !FO.pub_done) {
        FO.pub_done = true;
        FO.t_pub_done = FO.last_activity = now;
    }
    return more;
}

/* A subscriber's delivery: check order, record latency. */
static void fanout_message(struct client *cl, int64_t seq, struct span body, uint64_t now)
{
    notif_pub_time(seq, body);
    if (cl->publisher) {
        W.self++;
        return;
    }
    W.deliveries++;
    if (st_add(&cl->st, seq))
        W.uniq++;
    uint64_t t;
    if (body_ts(body, &t) && t <= now)
        lat_add(&DELIV_LAT, now - t);
    W.t_last_delivery = FO.last_activity = now;
}

/* Done when every joined subscriber has every acked message, or nothing moved for --drain. */
static bool fanout_done(void *arg)
{
    struct client *pub = &CL[NCL - 1];
    if (!FO.pub_done && !O.rest_publisher && (pub->c.fd < 0 || pub->js != JS_JOINED)) {
        FO.pub_done = true; /* the publisher's socket or channel ended: nothing more comes */
        FO.t_pub_done = FO.last_activity = now_ns();
    }
    if (!FO.pub_done)
        return false;
    if (W.uniq >= expected_cached() && (!O.notif_subs || notif_received() >= notif_expected()))
        return true;
    return now_ns() - FO.last_activity > (uint64_t)(O.drain * (double)NSEC);
}

/* --rate: sends every message whose slot in the schedule (t0 + k/rate) has come, while
   fewer than --messages are acked or awaiting replies; replies do not pace the sends. */
static void fanout_rate_timer(uint64_t now)
{
    struct client *pub = &CL[NCL - 1];
    if (FO.pub_done || !FO.t0)
        return;
    if (pub->c.fd < 0 || pub->js != JS_JOINED || L.stopping) {
        loop_wake(0); /* fanout_done sees the publisher gone */
        return;
    }
    for (;;) {
        if (pub->acked >= (uint32_t)O.messages ||
            (pub->sent >= (uint32_t)O.messages * 4 && !FO.inflight)) {
            fanout_pub_over(now);
            loop_wake(0);
            return;
        }
        if (pub->acked + FO.inflight >= (uint64_t)O.messages ||
            pub->sent >= (uint32_t)O.messages * 4) {
            loop_wake(0); /* a reply comes first */
            return;
        }
        uint64_t due = FO.t0 + (uint64_t)((double)FO.nsched * (double)NSEC / (double)O.rate);
        if (now < due) {
            loop_wake(due);
            return;
        }
        lat_add(&FO.lag, now - due);
        FO.nsched++;
        uint64_t ref = pub->ref + 1; /* the ref message_send gives it */
        u64s_reach(&FO.ref_t, &FO.nref, (size_t)ref);
        FO.ref_t[ref] = now;
        FO.inflight++;
        message_send(pub, now, &ref);
        if (pub->c.fd < 0)
            return; /* the send failed and closed the socket */
        now = now_ns();
    }
}

/* --rate: the reply to one of the publisher's outstanding messages. */
static bool fanout_rate_reply(struct client *cl, uint64_t ref, bool ok, struct span resp,
                              uint64_t now)
{
    if (!cl->publisher || ref >= FO.nref || !FO.ref_t[ref])
        return false;
    uint64_t t = FO.ref_t[ref];
    struct span v;
    int64_t seq;
    FO.ref_t[ref] = 0;
    FO.inflight--;
    if (ok) {
        cl->acked++;
        lat_add(&ACK_LAT, now - t);
        if (jget(resp, "seq", &v) && jint(v, &seq)) {
            room_ack(&ROOMS[cl->room], seq);
        } else {
            E.protocol++;
            err_sample("new_message reply without a seq: %.*s", (int)resp.n, resp.p);
        }
    } else if (jget(resp, "reason", &v) && jeq(v, "rate_limited")) {
        E.rate_limited++; /* a later slot of the schedule sends a replacement */
    } else {
        E.reply++;
        err_sample("new_message error reply: %.*s", (int)resp.n, resp.p);
    }
    fanout_rate_timer(now);
    return true;
}

/* Publisher over REST: one keep-alive connection, next POST after each 201. */
static bool fanout_rest_next(struct hpool *p, struct hslot *s)
{
    uint64_t now = now_ns();
    if (ROOMS[0].nacked >= (size_t)O.messages || FO.rest_issued >= (uint64_t)O.messages * 4) {
        if (!FO.pub_done) {
            FO.pub_done = true;
            FO.t_pub_done = FO.last_activity = now;
        }
        return false;
    }
    char path[256], body[512];
    FO.rest_issued++;
    if (O.realtime) {
        snprintf(path, sizeof path, "/api/broadcast");
        snprintf(body, sizeof body,
                 "{\"messages\":[{\"topic\":\"%s\",\"event\":\"msg\",\"payload\":{\"body\":"
                 "\"t=%" PRIu64 " c=pub n=%" PRIu64 "\"},\"private\":%s}]}",
                 ROOMS[0].id, now, FO.rest_issued, O.rt_private ? "true" : "false");
    } else {
        snprintf(path, sizeof path, "/api/rooms/%s/messages", ROOMS[0].id);
        snprintf(body, sizeof body,
                 "{\"user_id\":\"%s-pub\",\"body\":\"t=%" PRIu64 " c=pub n=%" PRIu64 "\"}",
                 prefix, now, FO.rest_issued);
    }
    s->t_sent = now;
    if (!W.t_first_send)
        W.t_first_send = now;
    http_send(&s->c, "POST", path, body);
    return true;
}

/* A REST publish was answered. */
static void fanout_rest_done(struct hpool *p, struct hslot *s, int status, const char *body,
                             size_t n)
{
    uint64_t now = now_ns();
    struct span b = {body, n}, v;
    int64_t seq;
    if (O.realtime && status == 202) { /* one request at a time: it is the last issued */
        lat_add(&ACK_LAT, now - s->t_sent);
        room_ack(&ROOMS[0], (int64_t)FO.rest_issued);
        return;
    }
    if (status == 201 && jget(b, "seq", &v) && jint(v, &seq)) {
        lat_add(&ACK_LAT, now - s->t_sent);
        room_ack(&ROOMS[0], seq);
        return;
    }
    if (status) {
        E.http++;
        err_sample("publish: HTTP %d %.*s", status, (int)(n > 100 ? 100 : n), body);
    }
}

/* --realtime: a realtime-js join is done at its ok reply, which has no history. */
static void rt_joined(struct client *cl, uint64_t now)
{
    cl->hist = true;
}

/* N subscribers in one room, one publisher pacing on its acks (or sending at --rate);
   with --sub-url the subscribers are on another node than the publisher; with --realtime
   everyone speaks realtime-js's protocol on realtime:<room>. */
static int run_fanout(void)
{
    struct client *pub;
    H.message = fanout_message;
    H.may_send = fanout_may_send;
    if (O.realtime) {
        H.join_on_reply = true;
        H.joined = rt_joined;
    }
    if (O.rate > 0) {
        H.reply = fanout_rate_reply;
        H.timer = fanout_rate_timer;
    }
    if (O.notif_subs > 0) {
        H.frame = notif_frame;
        H.joined = notif_joined_room;
        H.ended = notif_ended;
    }
    if (O.floor) { /* the floor server knows no rooms, users or tokens */
        rooms_init(1);
        clients_init((size_t)O.subs, true);
        for (size_t i = 0; i < NCL; i++)
            CL[i].c.path = "/socket/websocket?vsn=2.0.0";
    } else if (!setup_rooms(1) || !setup_clients((size_t)O.subs, true)) {
        return 2;
    }
    notif_setup();
    pub = &CL[NCL - 1];
    for (size_t i = 0; O.sub_url && i + 1 < NCL; i++)
        CL[i].c.sub = true;
    SND = &pub;
    NSND = 1;
    printf("fanout: %ld subscribers, %ld messages, publisher over %s\n", O.subs, O.messages,
           O.rest_publisher ? "REST" : "WebSocket");
    if (O.sub_url)
        printf("  subscribers on %s, publisher on %s\n", O.sub_hostport, O.hostport);
    if (O.realtime)
        printf("  realtime-js protocol: %s channel %s on /realtime/v1 (vsn 2.0.0)\n",
               O.rt_private ? "private" : "public", ROOMS[0].topic);
    if (O.rate > 0)
        printf("  publisher sends %ld messages/s, not waiting for replies\n", O.rate);
    if (O.floor)
        printf("  against the floor: rcload's minimal reference server, pid %ld\n",
               (long)FL.pid);
    if (O.notif_subs > 0)
        printf("  %ld subscribers also on notifications:<user>, counting unread events\n",
               O.notif_subs);
    uint64_t tj = now_ns();
    R.n = NCL;
    R.conc = (size_t)O.concurrency;
    if (!loop_run(ramp_done, NULL, UINT64_MAX)) {
        E.incomplete++;
        err_sample("fanout: joins not finished at the --timeout");
    }
    double join_s = (double)(now_ns() - tj) / 1e9;
    size_t subs_joined = R.ok - (pub->js == JS_JOINED);
    printf("  %-22s %zu of %ld in %.2f s\n", "subscribers joined", subs_joined, O.subs, join_s);
    if (O.notif_subs > 0 && !loop_run(notif_joins_done, NULL, UINT64_MAX)) {
        E.incomplete++;
        err_sample("fanout: notifications joins not finished at the --timeout");
    }
    struct cpu_window w;
    cpu_begin(&w);
    if (O.rest_publisher) {
        struct hpool p = {.next = fanout_rest_next, .done = fanout_rest_done};
        hpool_run(&p, 1);
        if (!FO.pub_done) { /* the pool gave up (connection failures) or timed out */
            FO.pub_done = true;
            FO.t_pub_done = FO.last_activity = now_ns();
        }
    } else if (pub->js == JS_JOINED && O.rate > 0) {
        FO.t0 = now_ns();
        fanout_rate_timer(FO.t0);
    } else if (pub->js == JS_JOINED) {
        pub->want_send = true;
        sender_send(pub, now_ns());
    } else {
        err_sample("fanout: the publisher could not join");
        FO.pub_done = true;
        FO.last_activity = now_ns();
    }
    if (!loop_run(fanout_done, NULL, UINT64_MAX) && !got_sigint) {
        E.incomplete++;
        err_sample("fanout: deliveries not finished at the --timeout");
    }
    cpu_end(&w);
    if (!FO.pub_done)
        FO.t_pub_done = now_ns();
    size_t incomplete;
    uint64_t missing = count_missing(&incomplete), dup, ooo, stray;
    count_order(&dup, &ooo, &stray);
    uint64_t span = W.t_last_delivery > W.t_first_send ? W.t_last_delivery - W.t_first_send : 0;
    double secs = (double)span / 1e9;
    double rate = secs > 0 ? (double)W.uniq / secs : 0;
    double pub_s = (double)(FO.t_pub_done - W.t_first_send) / 1e9;
    size_t acked = ROOMS[0].nacked;
    clients_close();
    report_begin();
    printf("  %-22s %zu of %ld in %.2f s = %.1f msg/s\n", "messages acked", acked, O.messages,
           pub_s, pub_s > 0 ? (double)acked / pub_s : 0);
    printf("  %-22s %" PRIu64 " unique (%" PRIu64 " frames) in %.3f s = %.0f deliveries/s\n",
           "deliveries", W.uniq, W.deliveries, secs, rate);
    jkv("subs", "%ld", O.subs);
    jkv("subs_joined", "%zu", subs_joined);
    jkv("join_seconds", "%.3f", join_s);
    jkv("publisher", "\"%s\"", O.rest_publisher ? "rest" : "ws");
    if (O.realtime)
        jkv("realtime", "\"%s\"", O.rt_private ? "private" : "public");
    if (O.sub_url)
        jkv("sub_target", "\"%s\"", O.sub_hostport);
    if (O.floor)
        jkv("floor", "true");
    if (O.rate > 0)
        jkv("rate", "%ld", O.rate);
    jkv("messages", "%ld", O.messages);
    jkv("acked", "%zu", acked);
    jkv("deliveries", "%" PRIu64, W.uniq);
    jkv("seconds", "%.3f", secs);
    jkv("deliveries_per_s", "%.1f", rate);
    report_lat("delivery_latency", "delivery latency", &DELIV_LAT);
    report_lat("ack_latency", "publisher ack latency", &ACK_LAT);
    if (O.rate > 0)
        report_lat("send_lag", "send lag vs schedule", &FO.lag);
    printf("  %-22s missing %" PRIu64 " (%zu subscribers incomplete), duplicate %" PRIu64
           ", out of order %" PRIu64 ", stray %" PRIu64 "\n",
           "lost", missing, incomplete, dup, ooo, stray);
    jkv("missing", "%" PRIu64, missing);
    jkv("subs_incomplete", "%zu", incomplete);
    jkv("duplicate", "%" PRIu64, dup);
    jkv("out_of_order", "%" PRIu64, ooo);
    jkv("stray", "%" PRIu64, stray);
    bool bad = missing || dup || ooo || stray || subs_joined < (size_t)O.subs ||
               acked < (size_t)O.messages;
    if (O.notif_subs > 0 && !notif_report())
        bad = true;
    return report_end(&w, bad);
}

/* ------------------------------------------------------------------------------------ */
/* Scenario: chat                                                                        */

static struct {
    uint64_t t_end, last_activity;
    bool sending_over;
} CH;

/* Clients send until --duration (or --count in total). */
static bool chat_may_send(struct client *cl, uint64_t now)
{
    if (now >= CH.t_end)
        return false;
    if (O.count > 0) {
        uint64_t sent = 0;
        for (size_t i = 0; i < NCL; i++)
            sent += CL[i].sent;
        return sent < (uint64_t)O.count;
    }
    return true;
}

/* A delivery to any client. */
static void chat_message(struct client *cl, int64_t seq, struct span body, uint64_t now)
{
    W.deliveries++;
    if (st_add(&cl->st, seq))
        W.uniq++;
    uint64_t t;
    if (body_ts(body, &t) && t <= now)
        lat_add(&DELIV_LAT, now - t);
    W.t_last_delivery = CH.last_activity = now;
}

/* Sending is over when the time is up and no send awaits its reply. */
static bool chat_sent(void *arg)
{
    uint64_t now = now_ns();
    if (now < CH.t_end && !(O.count > 0 && !chat_may_send(NULL, now)))
        return false;
    for (size_t i = 0; i < NCL; i++)
        if (CL[i].pend_ref && CL[i].c.fd >= 0)
            return false;
    return true;
}

/* Every client has every message of its room, or nothing moved for --drain. */
static bool chat_delivered(void *arg)
{
    return W.uniq >= expected_cached() ||
           now_ns() - CH.last_activity > (uint64_t)(O.drain * (double)NSEC);
}

/* C clients in R rooms, each sending back to back on its own acks. */
static int run_chat(void)
{
    H.message = chat_message;
    H.may_send = chat_may_send;
    CH.t_end = UINT64_MAX;
    if (!setup_rooms((size_t)O.rooms) || !setup_clients((size_t)O.conns, false))
        return 2;
    printf("chat: %ld clients in %ld rooms, %s\n", O.conns, O.rooms,
           O.count > 0 ? "until --count" : "for --duration");
    R.n = NCL;
    R.conc = (size_t)O.concurrency;
    if (!loop_run(ramp_done, NULL, UINT64_MAX)) {
        E.incomplete++;
        err_sample("chat: joins not finished at the --timeout");
    }
    printf("  %-22s %zu of %zu\n", "clients joined", R.ok, NCL);
    SND = xcalloc(NCL, sizeof *SND);
    for (size_t i = 0; i < NCL; i++)
        SND[NSND++] = &CL[i];
    struct cpu_window w;
    cpu_begin(&w);
    CH.t_end = w.t0 + (uint64_t)(O.duration * (double)NSEC);
    for (size_t i = 0; i < NCL; i++) {
        if (CL[i].js == JS_JOINED) {
            CL[i].want_send = true;
            sender_send(&CL[i], now_ns());
        }
    }
    if (!loop_run(chat_sent, NULL, UINT64_MAX) && !got_sigint) {
        E.incomplete++;
        err_sample("chat: replies still pending at the --timeout");
    }
    uint64_t t_sent = now_ns();
    CH.last_activity = t_sent;
    if (!loop_run(chat_delivered, NULL, UINT64_MAX) && !got_sigint) {
        E.incomplete++;
        err_sample("chat: deliveries not finished at the --timeout");
    }
    cpu_end(&w);
    uint64_t acked = 0, sent = 0;
    for (size_t i = 0; i < NCL; i++) {
        acked += CL[i].acked;
        sent += CL[i].sent;
    }
    size_t incomplete;
    uint64_t missing = count_missing(&incomplete), dup, ooo, stray;
    count_order(&dup, &ooo, &stray);
    double secs = (double)(t_sent - w.t0) / 1e9;
    double rate = secs > 0 ? (double)acked / secs : 0;
    uint64_t expect = W.uniq + missing;
    clients_close();
    report_begin();
    printf("  %-22s %" PRIu64 " in %.2f s = %.0f msg/s (sent %" PRIu64 ")\n", "acked messages",
           acked, secs, rate, sent);
    printf("  %-22s %" PRIu64 " of %" PRIu64 " expected (%" PRIu64 " frames)\n", "deliveries",
           W.uniq, expect, W.deliveries);
    jkv("conns", "%ld", O.conns);
    jkv("rooms", "%ld", O.rooms);
    jkv("joined", "%zu", R.ok);
    jkv("acked", "%" PRIu64, acked);
    jkv("seconds", "%.3f", secs);
    jkv("msgs_per_s", "%.1f", rate);
    jkv("deliveries", "%" PRIu64, W.uniq);
    report_lat("ack_latency", "ack latency", &ACK_LAT);
    report_lat("delivery_latency", "delivery latency", &DELIV_LAT);
    printf("  %-22s missing %" PRIu64 " (%zu clients incomplete), duplicate %" PRIu64
           ", out of order %" PRIu64 ", stray %" PRIu64 "\n",
           "lost", missing, incomplete, dup, ooo, stray);
    jkv("missing", "%" PRIu64, missing);
    jkv("clients_incomplete", "%zu", incomplete);
    jkv("duplicate", "%" PRIu64, dup);
    jkv("out_of_order", "%" PRIu64, ooo);
    jkv("stray", "%" PRIu64, stray);
    return report_end(&w, missing || dup || ooo || stray || R.ok < NCL);
}

/* ------------------------------------------------------------------------------------ */
/* Scenario: idle                                                                        */

/* N joined connections held open; the server's RSS per connection. */
static int run_idle(void)
{
    if (!setup_rooms((size_t)O.rooms) || !setup_clients((size_t)O.conns, false))
        return 2;
    printf("idle: %ld connections over %ld rooms, hold %.0f s\n", O.conns, O.rooms, O.hold);
    long rss0 = proc_rss_kib(O.server_pid);
    struct cpu_window w;
    cpu_begin(&w);
    R.n = NCL;
    R.conc = (size_t)O.concurrency;
    if (!loop_run(ramp_done, NULL, UINT64_MAX)) {
        E.incomplete++;
        err_sample("idle: joins not finished at the --timeout");
    }
    cpu_end(&w);
    double join_s = (double)(w.t1 - w.t0) / 1e9;
    /* let the server finish whatever the last joins started before measuring */
    loop_run(never, NULL, now_ns() + 500 * MSEC);
    long rss1 = proc_rss_kib(O.server_pid);
    printf("  %-22s %zu of %zu in %.2f s = %.0f joins/s\n", "joined", R.ok, NCL, join_s,
           join_s > 0 ? (double)R.ok / join_s : 0);
    uint64_t hold_end = now_ns() + (uint64_t)(O.hold * (double)NSEC);
    if (hold_end > L.deadline) {
        err_sample("idle: --hold cut short by --timeout");
        hold_end = L.deadline;
    }
    loop_run(never, NULL, hold_end);
    long rss2 = proc_rss_kib(O.server_pid);
    size_t still = 0;
    for (size_t i = 0; i < NCL; i++)
        still += CL[i].js == JS_JOINED && CL[i].c.fd >= 0;
    clients_close();
    report_begin();
    jkv("conns", "%ld", O.conns);
    jkv("rooms", "%ld", O.rooms);
    jkv("joined", "%zu", R.ok);
    jkv("join_seconds", "%.3f", join_s);
    jkv("joins_per_s", "%.1f", join_s > 0 ? (double)R.ok / join_s : 0);
    jkv("hold_seconds", "%.1f", O.hold);
    jkv("open_after_hold", "%zu", still);
    jkv("heartbeats", "{\"sent\":%" PRIu64 ",\"ok\":%" PRIu64 "}", W.hb_sent, W.hb_ok);
    printf("  %-22s %zu of %zu (heartbeats sent %" PRIu64 ", ok %" PRIu64 ")\n", "open after hold",
           still, R.ok, W.hb_sent, W.hb_ok);
    if (rss0 >= 0 && rss1 >= 0 && R.ok) {
        double per = (double)(rss1 - rss0) * 1024.0 / (double)R.ok;
        printf("  %-22s before %ld KiB, all joined %ld KiB, after hold %ld KiB\n", "server RSS",
               rss0, rss1, rss2);
        printf("  %-22s %.0f bytes = %.2f KiB\n", "RSS per connection", per, per / 1024.0);
        if (per < 512)
            printf("  %-22s the server's heap was probably grown by an earlier run: restart it "
                   "for a clean measure\n",
                   "note");
        jkv("server_rss_kib", "{\"before\":%ld,\"joined\":%ld,\"after_hold\":%ld}", rss0, rss1,
            rss2);
        jkv("rss_per_conn_bytes", "%.0f", per);
        jkv("rss_per_conn_kib", "%.2f", per / 1024.0);
    } else {
        printf("  %-22s not measured (pass --server-pid PID of the server)\n", "server RSS");
    }
    return report_end(&w, R.ok < NCL || still < R.ok);
}

/* ------------------------------------------------------------------------------------ */
/* Scenario: join                                                                        */

/* K connections connect and join a room with history, --concurrency at a time. */
static int run_join(void)
{
    if (!setup_rooms(1) || !setup_history((size_t)O.history) ||
        !setup_clients((size_t)O.conns, false))
        return 2;
    printf("join: %ld connections, %ld in flight, %ld messages of history\n", O.conns,
           O.concurrency, O.history);
    struct cpu_window w;
    cpu_begin(&w);
    R.n = NCL;
    R.conc = (size_t)O.concurrency;
    if (!loop_run(ramp_done, NULL, UINT64_MAX)) {
        E.incomplete++;
        err_sample("join: joins not finished at the --timeout");
    }
    cpu_end(&w);
    struct lat conn_lat = {0}, reply_lat = {0}, hist_lat = {0}, total_lat = {0};
    uint64_t t_first = UINT64_MAX, t_last = 0;
    size_t bad_hist = 0, want = (size_t)(O.history < 50 ? O.history : 50);
    for (size_t i = 0; i < NCL; i++) {
        struct client *cl = &CL[i];
        if (cl->t_start && cl->t_start < t_first)
            t_first = cl->t_start;
        if (cl->js != JS_JOINED)
            continue;
        if (cl->t_hist > t_last)
            t_last = cl->t_hist;
        lat_add(&conn_lat, cl->t_open - cl->t_start);
        lat_add(&reply_lat, cl->t_reply - cl->t_join);
        lat_add(&hist_lat, cl->t_hist - cl->t_join);
        lat_add(&total_lat, cl->t_hist - cl->t_start);
        bad_hist += cl->hist_bad || cl->hist_n != want;
    }
    double secs = t_last > t_first ? (double)(t_last - t_first) / 1e9 : 0;
    double rate = secs > 0 ? (double)R.ok / secs : 0;
    clients_close();
    report_begin();
    printf("  %-22s %zu of %zu in %.2f s = %.0f joins/s\n", "joined", R.ok, NCL, secs, rate);
    jkv("conns", "%ld", O.conns);
    jkv("concurrency", "%ld", O.concurrency);
    jkv("history", "%ld", O.history);
    jkv("joined", "%zu", R.ok);
    jkv("seconds", "%.3f", secs);
    jkv("joins_per_s", "%.1f", rate);
    report_lat("join_latency", "join -> history", &hist_lat);
    report_lat("join_reply_latency", "join -> reply", &reply_lat);
    report_lat("connect_latency", "connect+upgrade", &conn_lat);
    report_lat("total_latency", "connect -> history", &total_lat);
    printf("  %-22s %zu clients got a history other than %zu messages in seq order\n",
           "history check", bad_hist, want);
    jkv("bad_history", "%zu", bad_hist);
    free(conn_lat.v);
    free(reply_lat.v);
    free(hist_lat.v);
    free(total_lat.v);
    return report_end(&w, R.ok < NCL || bad_hist);
}

/* ------------------------------------------------------------------------------------ */
/* Scenario: presence                                                                    */

/* Interned strings: presence keys and phx_refs become dense ids, so N lists of N keys
   cost 4 bytes per entry. */
struct intern {
    uint32_t *tab; /* open addressing: id + 1 per slot, 0 = empty; power-of-two size */
    size_t tcap;
    struct buf arena; /* the strings back to back (never consumed, so off stays 0) */
    size_t *off;
    uint32_t *len;
    uint64_t *hash;
    size_t n, cap;
};

/* FNV-1a with a final mix (the low bits pick the slot). */
static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

/* The id of the n bytes at s, added if new. */
static uint32_t intern_id(struct intern *t, const char *s, size_t n)
{
    if ((t->n + 1) * 2 > t->tcap) {
        size_t cap = t->tcap ? t->tcap * 2 : 1024;
        uint32_t *tab = xcalloc(cap, sizeof *tab);
        for (size_t i = 0; i < t->n; i++) {
            size_t j = (size_t)t->hash[i] & (cap - 1);
            while (tab[j])
                j = (j + 1) & (cap - 1);
            tab[j] = (uint32_t)i + 1;
        }
        free(t->tab);
        t->tab = tab;
        t->tcap = cap;
    }
    uint64_t h = hash_bytes(s, n);
    size_t j = (size_t)h & (t->tcap - 1);
    for (; t->tab[j]; j = (j + 1) & (t->tcap - 1)) {
        uint32_t id = t->tab[j] - 1;
        if (t->hash[id] == h && t->len[id] == n && !memcmp(t->arena.p + t->off[id], s, n))
            return id;
    }
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 1024;
        t->off = xrealloc(t->off, t->cap * sizeof *t->off);
        t->len = xrealloc(t->len, t->cap * sizeof *t->len);
        t->hash = xrealloc(t->hash, t->cap * sizeof *t->hash);
    }
    t->off[t->n] = t->arena.len;
    t->len[t->n] = (uint32_t)n;
    t->hash[t->n] = h;
    if (n)
        buf_add(&t->arena, s, n);
    t->tab[j] = (uint32_t)t->n + 1;
    return (uint32_t)t->n++;
}

/* Four hex digits at p. */
static bool hex4(const char *p, const char *e, uint32_t *v)
{
    if (e - p < 4)
        return false;
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char ch = p[i];
        uint32_t d = ch >= '0' && ch <= '9'   ? (uint32_t)(ch - '0')
                     : ch >= 'a' && ch <= 'f' ? (uint32_t)(ch - 'a' + 10)
                     : ch >= 'A' && ch <= 'F' ? (uint32_t)(ch - 'A' + 10)
                                              : 16;
        if (d > 15)
            return false;
        *v = *v << 4 | d;
    }
    return true;
}

/* Appends code point cp as UTF-8 (a lone surrogate as its 3-byte form, so distinct
   escapes stay distinct strings). */
static void utf8_put(struct buf *b, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | cp >> 6);
        u[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | cp >> 12);
        u[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (char)(0xf0 | cp >> 18);
        u[1] = (char)(0x80 | (cp >> 12 & 0x3f));
        u[2] = (char)(0x80 | (cp >> 6 & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    buf_add(b, u, n);
}

/* Decodes the JSON string whose opening quote is at p into *out: a view of the input when
   it has no escapes, else the unescaped text in b (valid until b's next use). Returns the
   byte after the closing quote, or NULL if the string is malformed or truncated. */
static const char *jstr_decode(const char *p, const char *e, struct buf *b, struct span *out)
{
    const char *s = p + 1, *q = s;
    while (q < e && *q != '"' && *q != '\\')
        q++;
    if (q >= e)
        return NULL;
    if (*q == '"') {
        out->p = s;
        out->n = (size_t)(q - s);
        return q + 1;
    }
    b->off = b->len = 0;
    buf_add(b, s, (size_t)(q - s));
    while (q < e) {
        const char *run = q;
        while (q < e && *q != '"' && *q != '\\')
            q++;
        buf_add(b, run, (size_t)(q - run));
        if (q >= e)
            return NULL;
        if (*q++ == '"') {
            out->p = buf_data(b);
            out->n = buf_used(b);
            return q;
        }
        if (q >= e)
            return NULL;
        char esc = *q++, ch;
        switch (esc) {
        case '"':
        case '\\':
        case '/': ch = esc; break;
        case 'b': ch = '\b'; break;
        case 'f': ch = '\f'; break;
        case 'n': ch = '\n'; break;
        case 'r': ch = '\r'; break;
        case 't': ch = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (!hex4(q, e, &cp))
                return NULL;
            q += 4;
            if (cp >= 0xd800 && cp < 0xdc00 && e - q >= 6 && q[0] == '\\' && q[1] == 'u' &&
                hex4(q + 2, e, &lo) && lo >= 0xdc00 && lo < 0xe000) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                q += 6;
            }
            utf8_put(b, cp);
            continue;
        }
        default: return NULL;
        }
        buf_add(b, &ch, 1);
    }
    return NULL;
}

/* A cursor inside a JSON object or array, parsed in one pass: p is where to go on. */
struct jit {
    const char *p, *e;
    bool first;
};

/* Enters the object ('{') or array ('[') at p (after whitespace); false if it is not one. */
static bool jit_open(struct jit *it, const char *p, const char *e, char open)
{
    p = jws(p, e);
    if (p >= e || *p != open)
        return false;
    it->p = p + 1;
    it->e = e;
    it->first = true;
    return true;
}

/* Moves to the next item: 1 if there is one (it->p at its first byte), 0 past the
   closing bracket, -1 if malformed. */
static int jit_step(struct jit *it, char close)
{
    const char *p = jws(it->p, it->e);
    if (p >= it->e)
        return -1;
    if (*p == close) {
        it->p = p + 1;
        return 0;
    }
    if (!it->first) {
        if (*p != ',')
            return -1;
        p = jws(p + 1, it->e);
    }
    it->first = false;
    it->p = p;
    return p < it->e ? 1 : -1;
}

/* Next member of an object: 1 with the unescaped key in *k (see jstr_decode; in b if it
   had escapes) and it->p at the value, 0 at the end, -1 if malformed. The caller parses
   the value and leaves it->p after it, or calls jit_skip. */
static int jit_key(struct jit *it, struct buf *b, struct span *k)
{
    int r = jit_step(it, '}');
    if (r <= 0)
        return r;
    const char *p = it->p;
    if (*p != '"' || !(p = jstr_decode(p, it->e, b, k)))
        return -1;
    p = jws(p, it->e);
    if (p >= it->e || *p != ':')
        return -1;
    it->p = jws(p + 1, it->e);
    return it->p < it->e ? 1 : -1;
}

/* Skips the value at it->p; false if it is malformed. */
static bool jit_skip(struct jit *it)
{
    return (it->p = jskip(it->p, it->e)) != NULL;
}

/* True if the unescaped key k is lit. */
static bool key_is(struct span k, const char *lit)
{
    size_t n = strlen(lit);
    return k.n == n && !memcmp(k.p, lit, n);
}

#define PS_MULTI 0x80000000u /* slot flag: the key has several metas, index into multi[] */

/* The phx_refs of a key with more than one meta. */
struct refset {
    uint32_t n, cap;
    uint32_t *v;
};

/* One client's presence list, like phoenix.js's: key -> set of phx_refs. */
struct pstate {
    uint32_t *slot; /* by key id: 0 absent, ref id + 1 for one meta, PS_MULTI | i for more */
    size_t nslot;
    uint32_t nkeys; /* keys listed */
    uint32_t nwant; /* keys listed that should be */
    struct refset *multi;
    uint32_t nmulti;
    bool synced;   /* a presence_state arrived */
    bool complete; /* synced and listing exactly the wanted keys */
    uint64_t t_complete;
    struct buf pending; /* diffs before the first presence_state: u32 length + payload */
};

static struct {
    struct intern keys, refs;
    size_t nusers;   /* key ids 0 .. nusers-1 are this run's users, in client order */
    uint8_t *want;   /* by user key id: the key should be listed now */
    uint32_t nwant;  /* keys that should be listed */
    bool want_dirty; /* a joined client went away by itself: recompute the wanted keys */
    struct buf kb, rb;
    uint64_t last_check;
    /* everything received; diff_keys counts keys under joins+leaves of applied diffs */
    uint64_t state_frames, state_bytes, diff_frames, diff_bytes, diffs_applied, diff_joins,
        diff_leaves, queued;
} PR;

/* True if key id k should be listed. */
static bool key_wanted(uint32_t k)
{
    return k < PR.nusers && PR.want[k];
}

/* Makes the slot of key id k addressable. */
static void ps_ensure(struct pstate *ps, uint32_t k)
{
    if (k < ps->nslot)
        return;
    size_t n = PR.keys.n > (size_t)k + 1 ? PR.keys.n : (size_t)k + 1;
    if (n < ps->nslot * 2)
        n = ps->nslot * 2;
    ps->slot = xrealloc(ps->slot, n * sizeof *ps->slot);
    memset(ps->slot + ps->nslot, 0, (n - ps->nslot) * sizeof *ps->slot);
    ps->nslot = n;
}

/* Adds ref r to a refset. */
static void refset_push(struct refset *rs, uint32_t r)
{
    if (rs->n == rs->cap) {
        rs->cap = rs->cap ? rs->cap * 2 : 4;
        rs->v = xrealloc(rs->v, rs->cap * sizeof *rs->v);
    }
    rs->v[rs->n++] = r;
}

/* An unused refset index (keys with several metas are rare: a linear scan will do). */
static uint32_t ps_newset(struct pstate *ps)
{
    for (uint32_t i = 0; i < ps->nmulti; i++)
        if (!ps->multi[i].n)
            return i;
    ps->multi = xrealloc(ps->multi, (ps->nmulti + 1) * sizeof *ps->multi);
    memset(&ps->multi[ps->nmulti], 0, sizeof *ps->multi);
    return ps->nmulti++;
}

/* A meta joined: ref r under key k (re-sent refs are no-ops). */
static void ps_add(struct pstate *ps, uint32_t k, uint32_t r)
{
    ps_ensure(ps, k);
    uint32_t s = ps->slot[k];
    if (!s) {
        ps->slot[k] = r;
        ps->nkeys++;
        ps->nwant += key_wanted(k);
        return;
    }
    if (s == r)
        return;
    struct refset *rs;
    if (!(s & PS_MULTI)) {
        uint32_t i = ps_newset(ps);
        rs = &ps->multi[i];
        refset_push(rs, s);
        ps->slot[k] = PS_MULTI | i;
    } else {
        rs = &ps->multi[s & ~PS_MULTI];
        for (uint32_t i = 0; i < rs->n; i++)
            if (rs->v[i] == r)
                return;
    }
    refset_push(rs, r);
}

/* A meta left: drops ref r of key k, and the key with its last ref; unknown ones are
   ignored. */
static void ps_del(struct pstate *ps, uint32_t k, uint32_t r)
{
    if (k >= ps->nslot || !ps->slot[k])
        return;
    uint32_t s = ps->slot[k];
    if (!(s & PS_MULTI)) {
        if (s == r) {
            ps->slot[k] = 0;
            ps->nkeys--;
            ps->nwant -= key_wanted(k);
        }
        return;
    }
    struct refset *rs = &ps->multi[s & ~PS_MULTI];
    for (uint32_t i = 0; i < rs->n; i++) {
        if (rs->v[i] == r) {
            rs->v[i] = rs->v[--rs->n];
            break;
        }
    }
    if (rs->n == 1) {
        ps->slot[k] = rs->v[0];
        rs->n = 0;
    }
}

/* Empties the list (a presence_state replaces it). */
static void ps_clear(struct pstate *ps)
{
    if (ps->nslot)
        memset(ps->slot, 0, ps->nslot * sizeof *ps->slot);
    for (uint32_t i = 0; i < ps->nmulti; i++)
        ps->multi[i].n = 0;
    ps->nkeys = ps->nwant = 0;
}

/* Frees a list. */
static void ps_free(struct pstate *ps)
{
    if (!ps)
        return;
    for (uint32_t i = 0; i < ps->nmulti; i++)
        free(ps->multi[i].v);
    free(ps->multi);
    free(ps->slot);
    buf_free(&ps->pending);
    free(ps);
}

/* Parses the object key -> {"metas":[{"phx_ref":…,…},…],…} at p in one pass (other
   fields are skipped), adding (join) or removing every (key, phx_ref); counts its keys
   into *nkeys. Returns the byte after the object, or NULL if it has another shape (what
   came before the fault stays applied). */
static const char *ps_walk(struct pstate *ps, const char *p, const char *e, bool join,
                           uint64_t *nkeys)
{
    struct jit top, ent, arr, mi;
    struct span k, ek, mk, rs;
    int r;
    if (!jit_open(&top, p, e, '{'))
        return NULL;
    while ((r = jit_key(&top, &PR.kb, &k)) > 0) {
        uint32_t key = intern_id(&PR.keys, k.p, k.n);
        bool metas = false;
        (*nkeys)++;
        if (!jit_open(&ent, top.p, e, '{'))
            return NULL;
        while ((r = jit_key(&ent, &PR.rb, &ek)) > 0) {
            if (!key_is(ek, "metas")) {
                if (!jit_skip(&ent))
                    return NULL;
                continue;
            }
            metas = true;
            if (!jit_open(&arr, ent.p, e, '['))
                return NULL;
            while ((r = jit_step(&arr, ']')) > 0) {
                bool ref = false;
                if (!jit_open(&mi, arr.p, e, '{'))
                    return NULL;
                while ((r = jit_key(&mi, &PR.rb, &mk)) > 0) {
                    if (!key_is(mk, "phx_ref")) {
                        if (!jit_skip(&mi))
                            return NULL;
                        continue;
                    }
                    if (*mi.p != '"' || !(mi.p = jstr_decode(mi.p, e, &PR.rb, &rs)))
                        return NULL;
                    uint32_t id = intern_id(&PR.refs, rs.p, rs.n) + 1;
                    if (id >= PS_MULTI)
                        return NULL;
                    if (join)
                        ps_add(ps, key, id);
                    else
                        ps_del(ps, key, id);
                    ref = true;
                }
                if (r < 0 || !ref)
                    return NULL;
                arr.p = mi.p;
            }
            if (r < 0)
                return NULL;
            ent.p = arr.p;
        }
        if (r < 0 || !metas)
            return NULL;
        top.p = ent.p;
    }
    return r == 0 ? top.p : NULL;
}

/* ps_walk over a whole payload; false if it is malformed or followed by anything. */
static bool ps_apply(struct pstate *ps, struct span obj, bool join, uint64_t *nkeys)
{
    const char *e = obj.p + obj.n, *q = ps_walk(ps, obj.p, e, join, nkeys);
    return q && jws(q, e) == e;
}

/* Counts a malformed presence payload. */
static void pres_bad(const char *what, struct span payload)
{
    E.protocol++;
    err_sample("malformed %s: %.100s", what, payload.p);
}

/* Applies a presence_diff: joins first, then leaves (phoenix.js's syncDiff), parsed in
   one pass unless leaves come first. */
static void ps_diff(struct pstate *ps, struct span payload)
{
    struct jit it;
    struct span k;
    const char *e = payload.p + payload.n, *later = NULL;
    bool joins = false, leaves = false, ok = jit_open(&it, payload.p, e, '{');
    int r = -1;
    PR.diffs_applied++;
    while (ok && (r = jit_key(&it, &PR.kb, &k)) > 0) {
        if (key_is(k, "joins") && !joins) {
            joins = true;
            ok = (it.p = ps_walk(ps, it.p, e, true, &PR.diff_joins)) != NULL;
        } else if (key_is(k, "leaves") && !leaves) {
            leaves = true;
            if (joins)
                ok = (it.p = ps_walk(ps, it.p, e, false, &PR.diff_leaves)) != NULL;
            else
                ok = (later = it.p, jit_skip(&it));
        } else {
            ok = jit_skip(&it);
        }
    }
    if (ok && later && joins)
        ok = ps_walk(ps, later, e, false, &PR.diff_leaves) != NULL;
    if (!ok || r < 0 || !joins || !leaves || jws(it.p, e) != e)
        pres_bad("presence_diff", payload);
}

/* Updates the client's complete flag, and its time when it turns complete. */
static void pres_check(struct pstate *ps, uint64_t now)
{
    bool ok = ps->synced && ps->nwant == PR.nwant && ps->nkeys == PR.nwant;
    if (ok && !ps->complete)
        ps->t_complete = now;
    ps->complete = ok;
}

/* A presence_state or presence_diff for a client. */
static void pres_event(struct client *cl, const struct pmsg *m, size_t frame_bytes, uint64_t now)
{
    bool state = jeq(m->event, "presence_state");
    if (!state && !jeq(m->event, "presence_diff"))
        return;
    if (state) {
        PR.state_frames++;
        PR.state_bytes += frame_bytes;
    } else {
        PR.diff_frames++;
        PR.diff_bytes += frame_bytes;
    }
    struct pstate *ps = cl->ps;
    if (!ps)
        return; /* a client that left: nothing to keep */
    if (state) {
        uint64_t nk = 0;
        ps_clear(ps);
        if (!ps_apply(ps, m->payload, true, &nk))
            pres_bad("presence_state", m->payload);
        ps->synced = true;
        const char *p = buf_data(&ps->pending), *e = p + buf_used(&ps->pending);
        while (e - p >= 4) {
            uint32_t len;
            memcpy(&len, p, 4);
            ps_diff(ps, (struct span){p + 4, len});
            p += 4 + len;
        }
        buf_free(&ps->pending);
    } else if (!ps->synced) {
        uint32_t len = (uint32_t)m->payload.n;
        buf_add(&ps->pending, &len, 4);
        buf_add(&ps->pending, m->payload.p, len);
        PR.queued++;
    } else {
        ps_diff(ps, m->payload);
    }
    pres_check(ps, now);
}

/* A joined client's socket or channel ended by itself: its key will leave. */
static void pres_ended(struct client *cl)
{
    PR.want_dirty = true;
}

/* True for a client whose list is checked: joined, open, not made to leave. */
static bool pres_active(const struct client *cl)
{
    return cl->ps && cl->js == JS_JOINED && cl->c.fd >= 0;
}

/* Recomputes the wanted keys (those of the active clients) and every list's count of
   them. restart: a new phase begins, so lists complete already count as complete now. */
static void pres_rewant(bool restart, uint64_t now)
{
    memset(PR.want, 0, PR.nusers);
    PR.nwant = 0;
    for (size_t i = 0; i < NCL; i++) {
        if (pres_active(&CL[i])) {
            PR.want[i] = 1;
            PR.nwant++;
        }
    }
    for (size_t i = 0; i < NCL; i++) {
        struct pstate *ps = CL[i].ps;
        if (!ps)
            continue;
        size_t lim = ps->nslot < PR.nusers ? ps->nslot : PR.nusers;
        uint32_t n = 0;
        for (size_t k = 0; k < lim; k++)
            n += ps->slot[k] && PR.want[k];
        ps->nwant = n;
        if (restart)
            ps->complete = false;
        pres_check(ps, now);
    }
    PR.want_dirty = false;
}

/* Done when every active client's list is complete (checked every 5 ms). */
static bool pres_settled(void *arg)
{
    uint64_t now = now_ns();
    if (now - PR.last_check < 5 * MSEC)
        return false;
    PR.last_check = now;
    if (PR.want_dirty)
        pres_rewant(false, now);
    size_t active = 0, complete = 0;
    for (size_t i = 0; i < NCL; i++) {
        if (pres_active(&CL[i])) {
            active++;
            complete += CL[i].ps->complete;
        }
    }
    if (complete < active && now - last_progress >= 5 * NSEC) {
        last_progress = now;
        fprintf(stderr,
                "rcload: %.1f s: %zu of %zu presence lists complete, %" PRIu64
                " diff frames so far\n",
                (double)(now - L.t_start) / 1e9, complete, active, PR.diff_frames);
    }
    return complete == active;
}

/* Settling of one phase: when the last list turned complete, and the stragglers. */
struct pres_phase {
    size_t active, complete, least_keys, most_keys;
    uint64_t t_last;
};

/* Collects a phase's outcome over the active clients. */
static void pres_collect(struct pres_phase *ph)
{
    memset(ph, 0, sizeof *ph);
    ph->least_keys = SIZE_MAX;
    for (size_t i = 0; i < NCL; i++) {
        const struct client *cl = &CL[i];
        if (!pres_active(cl))
            continue;
        ph->active++;
        if (cl->ps->complete) {
            ph->complete++;
            if (cl->ps->t_complete > ph->t_last)
                ph->t_last = cl->ps->t_complete;
        } else {
            if (cl->ps->nkeys < ph->least_keys)
                ph->least_keys = cl->ps->nkeys;
            if (cl->ps->nkeys > ph->most_keys)
                ph->most_keys = cl->ps->nkeys;
        }
    }
    if (ph->least_keys == SIZE_MAX)
        ph->least_keys = 0;
}

/* Closes about --leave-fraction of the active clients' sockets without a close frame
   or phx_leave; returns how many. */
static size_t pres_churn(void)
{
    size_t n = 0;
    struct client **v = xcalloc(NCL, sizeof *v);
    for (size_t i = 0; i < NCL; i++)
        if (pres_active(&CL[i]))
            v[n++] = &CL[i];
    size_t k = (size_t)(O.leave_fraction * (double)n + 0.5);
    for (size_t i = 0; i < k; i++) {
        size_t j = i + (size_t)(rnd64() % (n - i));
        struct client *cl = v[j];
        v[j] = v[i];
        conn_close(&cl->c, NULL);
        cl->js = JS_CLOSED;
        ps_free(cl->ps);
        cl->ps = NULL;
    }
    free(v);
    return k;
}

/* Megabytes for the report. */
static double mb(uint64_t bytes)
{
    return (double)bytes / 1e6;
}

/* N users join presence:<room> from their own sockets; time until every list holds every
   key; then some sockets drop and the time until every remaining list is exact again. */
static int run_presence(void)
{
    H.join_on_reply = true;
    H.event = pres_event;
    H.ended = pres_ended;
    if (!setup_rooms(1))
        return 2;
    free(ROOMS[0].topic);
    ROOMS[0].topic = xasprintf("presence:%s", ROOMS[0].id);
    if (!setup_clients((size_t)O.conns, false))
        return 2;
    PR.nusers = NCL;
    PR.want = xcalloc(NCL, 1);
    for (size_t i = 0; i < NCL; i++) {
        if (intern_id(&PR.keys, CL[i].user, strlen(CL[i].user)) != i) {
            fprintf(stderr, "rcload: duplicate user id %s\n", CL[i].user);
            return 2;
        }
        PR.want[i] = 1;
        CL[i].ps = xcalloc(1, sizeof *CL[i].ps);
    }
    PR.nwant = (uint32_t)NCL;
    printf("presence: %zu users join %s, %ld in flight, then %.0f%% of the sockets drop\n", NCL,
           ROOMS[0].topic, O.concurrency, O.leave_fraction * 100);

    long rss0 = proc_rss_kib(O.server_pid);
    struct cpu_window w, wj, wl = {0};
    cpu_begin(&w);
    wj = w;
    uint64_t t0 = w.t0;
    R.n = NCL;
    R.conc = (size_t)O.concurrency;
    if (!loop_run(ramp_done, NULL, UINT64_MAX) && !got_sigint) {
        E.incomplete++;
        err_sample("presence: joins not finished at the --timeout");
    }
    struct lat join_lat = {0};
    uint64_t t_acked = t0;
    for (size_t i = 0; i < NCL; i++) {
        const struct client *cl = &CL[i];
        if (!cl->replied || cl->js == JS_PENDING || cl->js == JS_FAILED)
            continue;
        lat_add(&join_lat, cl->t_reply - cl->t_start);
        if (cl->t_reply > t_acked)
            t_acked = cl->t_reply;
    }
    size_t joined = R.ok;
    pres_rewant(false, now_ns());
    bool settled = loop_run(pres_settled, NULL, UINT64_MAX);
    if (!settled && !got_sigint) {
        E.incomplete++;
        err_sample("presence: lists not complete at the --timeout");
    }
    cpu_end(&wj);
    struct pres_phase p1, p2 = {0};
    pres_collect(&p1);
    uint32_t want1 = PR.nwant;
    long rss1 = proc_rss_kib(O.server_pid);
    uint64_t j_sf = PR.state_frames, j_sb = PR.state_bytes, j_df = PR.diff_frames,
             j_db = PR.diff_bytes, j_da = PR.diffs_applied, j_dk = PR.diff_joins + PR.diff_leaves;

    size_t left = 0;
    uint64_t t_churn = 0;
    bool churned = false, settled2 = false;
    long rss2 = -1;
    if (settled && !got_sigint && O.leave_fraction > 0) {
        churned = true;
        cpu_begin(&wl);
        t_churn = wl.t0;
        left = pres_churn();
        pres_rewant(true, now_ns());
        PR.last_check = 0;
        settled2 = loop_run(pres_settled, NULL, UINT64_MAX);
        if (!settled2 && !got_sigint) {
            E.incomplete++;
            err_sample("presence: lists not exact after the leaves at the --timeout");
        }
        cpu_end(&wl);
        pres_collect(&p2);
        rss2 = proc_rss_kib(O.server_pid);
    }
    cpu_end(&w);
    clients_close();

    report_begin();
    double acked_s = (double)(t_acked - t0) / 1e9;
    double complete_s = p1.t_last > t0 ? (double)(p1.t_last - t0) / 1e9 : 0;
    printf("  %-22s %zu of %zu%s, the last after %.3f s = %.0f joins/s\n", "joins acked", joined,
           NCL, joined < NCL ? " (NOT ALL)" : "", acked_s,
           acked_s > 0 ? (double)joined / acked_s : 0);
    jkv("conns", "%zu", NCL);
    jkv("concurrency", "%ld", O.concurrency);
    jkv("joined", "%zu", joined);
    jkv("acked_seconds", "%.3f", acked_s);
    report_lat("join_latency", "connect -> join ack", &join_lat);
    if (p1.complete == p1.active && settled)
        printf("  %-22s %zu of %zu lists hold all %zu keys after %.3f s (%.3f s after the last "
               "ack)\n",
               "complete", p1.complete, p1.active, (size_t)want1, complete_s, complete_s - acked_s);
    else
        printf("  %-22s %zu of %zu lists complete at the end; %zu INCOMPLETE holding %zu to %zu "
               "keys (want %" PRIu32 ")\n",
               "complete", p1.complete, p1.active, p1.active - p1.complete, p1.least_keys,
               p1.most_keys, want1);
    jkv("complete_seconds", "%.3f", settled ? complete_s : -1.0);
    jkv("clients_complete", "%zu", p1.complete);
    jkv("clients_incomplete", "%zu", p1.active - p1.complete);
    double avg1 = j_da ? (double)j_dk / (double)j_da : 0;
    printf("  %-22s state %" PRIu64 " frames %.1f MB, diff %" PRIu64 " frames %.1f MB "
           "(%.1f keys per diff), %" PRIu64 " diffs queued before a state\n",
           "presence received", j_sf, mb(j_sb), j_df, mb(j_db), avg1, PR.queued);
    jkv("join_phase",
        "{\"state_frames\":%" PRIu64 ",\"state_bytes\":%" PRIu64 ",\"diff_frames\":%" PRIu64
        ",\"diff_bytes\":%" PRIu64 ",\"keys_per_diff\":%.2f}",
        j_sf, j_sb, j_df, j_db, avg1);
    if (churned) {
        double s2 = p2.t_last > t_churn ? (double)(p2.t_last - t_churn) / 1e9 : 0;
        uint64_t df = PR.diff_frames - j_df, db = PR.diff_bytes - j_db,
                 da = PR.diffs_applied - j_da, dk = PR.diff_joins + PR.diff_leaves - j_dk;
        double avg2 = da ? (double)dk / (double)da : 0;
        if (settled2 && p2.complete == p2.active)
            printf("  %-22s %zu sockets dropped: %zu of %zu lists exact after %.3f s\n",
                   "leave churn", left, p2.complete, p2.active, s2);
        else
            printf("  %-22s %zu sockets dropped: %zu of %zu lists exact at the end; %zu "
                   "INCOMPLETE holding %zu to %zu keys (want %" PRIu32 ")\n",
                   "leave churn", left, p2.complete, p2.active, p2.active - p2.complete,
                   p2.least_keys, p2.most_keys, PR.nwant);
        printf("  %-22s diff %" PRIu64 " frames %.1f MB (%.1f keys per diff)\n", "churn received",
               df, mb(db), avg2);
        jkv("churn",
            "{\"left\":%zu,\"remaining\":%zu,\"settled_seconds\":%.3f,\"clients_complete\":%zu,"
            "\"clients_incomplete\":%zu,\"diff_frames\":%" PRIu64 ",\"diff_bytes\":%" PRIu64
            ",\"keys_per_diff\":%.2f}",
            left, p2.active, settled2 ? s2 : -1.0, p2.complete, p2.active - p2.complete, df, db,
            avg2);
    } else {
        printf("  %-22s skipped (%s)\n", "leave churn",
               O.leave_fraction > 0 ? "the join phase did not settle" : "--leave-fraction 0");
    }
    printf("  %-22s %" PRIu64 " frames, %.1f MB\n", "presence total",
           PR.state_frames + PR.diff_frames, mb(PR.state_bytes + PR.diff_bytes));
    jkv("presence_frames", "%" PRIu64, PR.state_frames + PR.diff_frames);
    jkv("presence_bytes", "%" PRIu64, PR.state_bytes + PR.diff_bytes);
    /* per phase, so a saturated client (one thread parsing every list) shows */
    double cj = cpu_pct(&wj, false), sj = cpu_pct(&wj, true);
    printf("  %-22s join phase client %.0f%%", "cpu by phase", cj);
    if (sj >= 0)
        printf(" server %.0f%% (%.1f cpu s)", sj, wj.srv1 - wj.srv0);
    if (churned) {
        double cl = cpu_pct(&wl, false), sl = cpu_pct(&wl, true);
        printf("; churn client %.0f%%", cl);
        if (sl >= 0)
            printf(" server %.0f%% (%.1f cpu s)", sl, wl.srv1 - wl.srv0);
        jkv("churn_cpu_pct", "{\"client\":%.1f,\"server\":%.1f}", cl, sl);
    }
    printf("\n");
    jkv("join_cpu_pct", "{\"client\":%.1f,\"server\":%.1f}", cj, sj);
    if (rss0 >= 0 && rss1 >= 0) {
        printf("  %-22s before %ld KiB, joined %ld KiB, after churn %ld KiB\n", "server RSS", rss0,
               rss1, rss2);
        jkv("server_rss_kib", "{\"before\":%ld,\"joined\":%ld,\"after_churn\":%ld}", rss0, rss1,
            rss2);
    } else {
        printf("  %-22s not measured (pass --server-pid PID of the server)\n", "server RSS");
    }
    free(join_lat.v);
    bool bad = joined < NCL || !settled || p1.complete < p1.active ||
               (churned && (!settled2 || p2.complete < p2.active));
    return report_end(&w, bad);
}

/* ------------------------------------------------------------------------------------ */
/* Command line                                                                          */

/* Prints usage. */
static void usage(FILE *f)
{
    fputs("usage: rcload SCENARIO --url http://127.0.0.1:PORT --api-key KEY [options]\n"
          "\n"
          "scenarios:\n"
          "  rest    keep-alive connections POSTing messages back to back (--conns 50, --rooms 5,\n"
          "          --duration or --count): acked msg/s, latency percentiles, seq check\n"
          "  fanout  --subs 1000 subscribers in one room, one publisher sends --messages 200 on\n"
          "          its acks (or at --rate): deliveries/s, delivery latency, missing/duplicate/\n"
          "          out-of-order; with --sub-url the subscribers are on another cluster node;\n"
          "          with --realtime everyone speaks realtime-js's protocol instead\n"
          "  idle    --conns 10000 connections join --rooms 10 and stay --hold 5 s: server RSS\n"
          "          per connection (needs --server-pid)\n"
          "  chat    --conns 50 clients in --rooms 5 send back to back for --duration: acked\n"
          "          msg/s, ack and delivery latency, every client gets every message in order\n"
          "  join    --conns 1000 connect+join a room with --history 50 messages, --concurrency\n"
          "          100 in flight: join latency percentiles and joins/s\n"
          "  presence --conns 5000 users join presence:<room>, --concurrency 200 in flight,\n"
          "          each keeping a phoenix.js-like list: time until all joins are acked and\n"
          "          until every list holds every key; then --leave-fraction 0.1 of the sockets\n"
          "          drop: time until every remaining list is exact again\n"
          "\n"
          "options:\n"
          "  --url URL            server (http:// or ws://, 127.0.0.0/8 or localhost only)\n"
          "  --api-key KEY        admin API key (or ROWCAST_API_KEY)\n"
          "  --conns N            connections/clients (rest 50, chat 50, idle 10000, join 1000,\n"
          "                       presence 5000)\n"
          "  --rooms N            rooms (rest 5, chat 5, idle 10)\n"
          "  --subs N             fanout subscribers (1000)\n"
          "  --messages N         fanout messages (200)\n"
          "  --publisher ws|rest  how the fanout publisher sends (ws)\n"
          "  --sub-url URL        fanout: subscribers connect here (another node of the\n"
          "                       cluster), the publisher and the setup to --url (--url)\n"
          "  --rate N             fanout: the WebSocket publisher sends N messages/s on a fixed\n"
          "                       schedule, not waiting for acks (0: next send on each ack)\n"
          "  --realtime[=public|private]\n"
          "                       fanout: realtime-js's protocol: clients on\n"
          "                       /realtime/v1/websocket?apikey=TOKEN&vsn=2.0.0 join\n"
          "                       realtime:<room> (public, the default: ephemeral; private:\n"
          "                       the room's channel, every broadcast stored); the publisher\n"
          "                       sends binary kind-3 user broadcasts (--publisher rest: POST\n"
          "                       /api/broadcast {messages}), the subscribers count the kind-4\n"
          "                       frames they get\n"
          "  --floor              fanout: no rowcast; rcload starts its own reference server\n"
          "                       on 127.0.0.1 (a child process: upgrade, join replies, one\n"
          "                       frame written to every socket per message, nothing else),\n"
          "                       the floor rowcast's figures are set against (no --url)\n"
          "  --notif-subs K       fanout: the first K subscribers also join\n"
          "                       notifications:<user> on their socket; every message must\n"
          "                       bring each an unread event (+1, last_seq = its seq) (0)\n"
          "  --duration S         rest/chat measuring time (10)\n"
          "  --count N            rest/chat: stop after N messages instead of --duration\n"
          "  --concurrency N      connects+joins in flight (100, presence 200)\n"
          "  --history N          join: messages of history to create first (50)\n"
          "  --hold S             idle: seconds to keep the connections open (5)\n"
          "  --heartbeat S        heartbeat a socket after S idle seconds, 0 never (30)\n"
          "  --drain S            wait this long for missing deliveries (5)\n"
          "  --body-bytes N       pad message bodies by N bytes (0)\n"
          "  --server-pid PID     read the server's RSS and CPU from /proc\n"
          "  --leave-fraction F   presence: share of the sockets closed abruptly after the joins\n"
          "                       (0.1; 0 skips the churn)\n"
          "  --timeout S          hard limit for the whole run, setup included (60, presence 120)\n"
          "\n"
          "Prints a text report and one final JSON line. Exit status: 0 clean, 1 errors or\n"
          "lost messages, 2 usage or setup failure.\n",
          f);
}

/* Parses a non-negative integer option. */
static long opt_long(const char *name, const char *v, long min, long max)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || x < min || x > max) {
        fprintf(stderr, "rcload: --%s wants an integer from %ld to %ld, got \"%s\"\n", name, min,
                max, v);
        exit(2);
    }
    return x;
}

/* Parses a seconds option. */
static double opt_secs(const char *name, const char *v, double min, double max)
{
    char *end;
    double x = strtod(v, &end);
    if (*end || !(x >= min && x <= max)) {
        fprintf(stderr, "rcload: --%s wants seconds from %g to %g, got \"%s\"\n", name, min, max,
                v);
        exit(2);
    }
    return x;
}

/* Accepts http://HOST:PORT[/] or ws://... where HOST is in 127.0.0.0/8 or localhost. */
static bool parse_url(const char *opt, const char *url, struct sockaddr_in *dst, char hostport[64])
{
    const char *p = url;
    char host[40];
    if (!strncmp(p, "http://", 7))
        p += 7;
    else if (!strncmp(p, "ws://", 5))
        p += 5;
    else {
        fprintf(stderr, "rcload: --%s must start with http:// or ws:// (no TLS): %s\n", opt, url);
        return false;
    }
    size_t hl = strcspn(p, ":/");
    if (!hl || hl >= sizeof host) {
        fprintf(stderr, "rcload: no host in --%s %s\n", opt, url);
        return false;
    }
    memcpy(host, p, hl);
    host[hl] = '\0';
    p += hl;
    long port = 80;
    if (*p == ':') {
        char *end;
        port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port < 1 || port > 65535) {
            fprintf(stderr, "rcload: bad port in --%s %s\n", opt, url);
            return false;
        }
        p = end;
    }
    if (*p && strcmp(p, "/")) {
        fprintf(stderr, "rcload: --%s takes no path (the tool knows the routes): %s\n", opt, url);
        return false;
    }
    const char *ip = !strcasecmp(host, "localhost") ? "127.0.0.1" : host;
    memset(dst, 0, sizeof *dst);
    dst->sin_family = AF_INET;
    dst->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, ip, &dst->sin_addr) != 1) {
        fprintf(stderr, "rcload: --%s host must be an IPv4 address in 127.0.0.0/8: %s\n", opt,
                host);
        return false;
    }
    if ((ntohl(dst->sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "rcload: refusing %s: only loopback targets (127.0.0.0/8) are allowed\n",
                host);
        return false;
    }
    snprintf(hostport, 64, "%s:%ld", ip, port);
    return true;
}

/* Raises the descriptor limit to the hard limit and checks it covers n connections. */
static bool raise_nofile(size_t n)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return true;
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur != RLIM_INFINITY && n + 64 > rl.rlim_cur) {
        fprintf(stderr,
                "rcload: %zu connections need more descriptors than RLIMIT_NOFILE allows "
                "(%llu); raise the hard limit (ulimit -Hn) or use fewer\n",
                n, (unsigned long long)rl.rlim_cur);
        return false;
    }
    return true;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"url", required_argument, NULL, 'u'},
        {"api-key", required_argument, NULL, 'k'},
        {"conns", required_argument, NULL, 'c'},
        {"rooms", required_argument, NULL, 'r'},
        {"subs", required_argument, NULL, 's'},
        {"messages", required_argument, NULL, 'm'},
        {"publisher", required_argument, NULL, 'P'},
        {"sub-url", required_argument, NULL, 'U'},
        {"rate", required_argument, NULL, 'R'},
        {"notif-subs", required_argument, NULL, 'N'},
        {"realtime", optional_argument, NULL, 'T'},
        {"floor", no_argument, NULL, 'L'},
        {"duration", required_argument, NULL, 'd'},
        {"count", required_argument, NULL, 'n'},
        {"concurrency", required_argument, NULL, 'C'},
        {"history", required_argument, NULL, 'y'},
        {"hold", required_argument, NULL, 'o'},
        {"heartbeat", required_argument, NULL, 'b'},
        {"drain", required_argument, NULL, 'D'},
        {"body-bytes", required_argument, NULL, 'B'},
        {"server-pid", required_argument, NULL, 'p'},
        {"timeout", required_argument, NULL, 't'},
        {"leave-fraction", required_argument, NULL, 'F'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    size_t nsc = sizeof scenario_names / sizeof scenario_names[0];
    size_t si = 0;
    while (si < nsc && strcmp(argv[1], scenario_names[si]))
        si++;
    if (si == nsc) {
        fprintf(stderr,
                "rcload: unknown scenario \"%s\" (rest, fanout, idle, chat, join, presence)\n",
                argv[1]);
        return 2;
    }
    O.sc = (enum scenario)si;
    O.api_key = getenv("ROWCAST_API_KEY");
    int ch;
    optind = 2;
    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'u': O.url = optarg; break;
        case 'k': O.api_key = optarg; break;
        case 'c': O.conns = opt_long("conns", optarg, 1, 1000000); break;
        case 'r': O.rooms = opt_long("rooms", optarg, 1, 100000); break;
        case 's': O.subs = opt_long("subs", optarg, 1, 1000000); break;
        case 'm': O.messages = opt_long("messages", optarg, 1, 10000000); break;
        case 'P':
            if (strcmp(optarg, "ws") && strcmp(optarg, "rest")) {
                fprintf(stderr, "rcload: --publisher is ws or rest\n");
                return 2;
            }
            O.rest_publisher = !strcmp(optarg, "rest");
            break;
        case 'U': O.sub_url = optarg; break;
        case 'R': O.rate = opt_long("rate", optarg, 0, 1000000); break;
        case 'N': O.notif_subs = opt_long("notif-subs", optarg, 0, 1000000); break;
        case 'T':
            if (optarg && strcmp(optarg, "public") && strcmp(optarg, "private")) {
                fprintf(stderr, "rcload: --realtime is public or private\n");
                return 2;
            }
            O.realtime = true;
            O.rt_private = optarg && !strcmp(optarg, "private");
            break;
        case 'L': O.floor = true; break;
        case 'd': O.duration = opt_secs("duration", optarg, 0.1, 86400); break;
        case 'n': O.count = opt_long("count", optarg, 1, 1000000000); break;
        case 'C': O.concurrency = opt_long("concurrency", optarg, 1, 100000); break;
        case 'y': O.history = opt_long("history", optarg, 0, 100000); break;
        case 'o': O.hold = opt_secs("hold", optarg, 0, 86400); break;
        case 'b': O.heartbeat = opt_secs("heartbeat", optarg, 0, 3600); break;
        case 'D': O.drain = opt_secs("drain", optarg, 0, 3600); break;
        case 'B': O.body_bytes = opt_long("body-bytes", optarg, 0, 4000); break;
        case 'p': O.server_pid = opt_long("server-pid", optarg, 1, 1L << 30); break;
        case 't': O.timeout = opt_secs("timeout", optarg, 1, 86400); break;
        case 'F': {
            char *end;
            O.leave_fraction = strtod(optarg, &end);
            if (*end || !(O.leave_fraction >= 0 && O.leave_fraction <= 1)) {
                fprintf(stderr, "rcload: --leave-fraction wants a number from 0 to 1, got \"%s\"\n",
                        optarg);
                return 2;
            }
            break;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "rcload: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    if (O.floor && (O.sc != SC_FANOUT || O.sub_url || O.notif_subs > 0 || O.realtime ||
                    O.rest_publisher)) {
        fprintf(stderr, "rcload: --floor is a fanout option, with neither --sub-url, "
                        "--notif-subs, --realtime nor --publisher rest\n");
        return 2;
    }
    if (!O.floor && (!O.url || !O.api_key)) {
        fprintf(stderr, "rcload: --url and --api-key (or ROWCAST_API_KEY) are required\n");
        return 2;
    }
    if (!O.floor && !parse_url("url", O.url, &O.dst, O.hostport))
        return 2;
    if (O.sub_url && !parse_url("sub-url", O.sub_url, &O.sub_dst, O.sub_hostport))
        return 2;
    if ((O.sub_url || O.rate > 0 || O.notif_subs > 0 || O.realtime) && O.sc != SC_FANOUT) {
        fprintf(stderr,
                "rcload: --sub-url, --rate, --notif-subs and --realtime are fanout options\n");
        return 2;
    }
    if (O.realtime && (O.rate > 0 || O.notif_subs > 0)) {
        fprintf(stderr, "rcload: --realtime goes with neither --rate nor --notif-subs\n");
        return 2;
    }
    if (O.notif_subs > O.subs) {
        fprintf(stderr, "rcload: --notif-subs %ld is more than the %ld --subs\n", O.notif_subs,
                O.subs);
        return 2;
    }
    if (O.rate > 0 && O.rest_publisher) {
        fprintf(stderr, "rcload: --rate needs the WebSocket publisher (--publisher ws)\n");
        return 2;
    }
    static const long def_conns[] = {50, 0, 10000, 50, 1000, 5000};
    static const long def_rooms[] = {5, 1, 10, 5, 1, 1};
    if (O.conns < 0)
        O.conns = def_conns[O.sc];
    if (O.rooms < 0)
        O.rooms = def_rooms[O.sc];
    if (O.concurrency < 0)
        O.concurrency = O.sc == SC_PRESENCE ? 200 : 100;
    if (O.timeout < 0)
        O.timeout = O.sc == SC_PRESENCE ? 120 : 60;
    if (O.sc == SC_PRESENCE) /* a presence_state lists every key with its meta (~150 bytes) */
        max_frame = MAX_FRAME + (size_t)O.conns * 1024;
    if ((O.sc == SC_REST || O.sc == SC_CHAT) && O.rooms > O.conns)
        O.rooms = O.conns;
    size_t need = O.sc == SC_FANOUT ? (size_t)O.subs + 1 : (size_t)O.conns;
    if (!raise_nofile(need + SETUP_CONNS))
        return 2;
    if ((O.sc == SC_REST || O.sc == SC_CHAT) && O.count <= 0 && O.duration >= O.timeout)
        fprintf(stderr,
                "rcload: warning: --duration %.0f s >= --timeout %.0f s; the timeout "
                "will cut the run short\n",
                O.duration, O.timeout);
    if (O.sc == SC_IDLE && O.hold >= O.timeout)
        fprintf(stderr, "rcload: warning: --hold is cut short by --timeout %.0f s\n", O.timeout);
    if (O.floor && !floor_start())
        return 2;

    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != sizeof seed)
        seed = now_ns();
    rng_state = seed | 1;
    snprintf(prefix, sizeof prefix, "rcl%ld", (long)getpid());
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_sigint};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    L.tfd = -1;
    L.ep = epoll_create1(EPOLL_CLOEXEC);
    if (L.ep < 0) {
        perror("rcload: epoll_create1");
        return 2;
    }
    L.t_start = now_ns();
    L.deadline = L.t_start + (uint64_t)(O.timeout * (double)NSEC);
    last_progress = L.t_start;
    printf("rcload %s against %s (run %s, timeout %.0f s)\n", scenario_names[O.sc], O.hostport,
           prefix, O.timeout);

    int rc = 2;
    switch (O.sc) {
    case SC_REST: rc = run_rest(); break;
    case SC_FANOUT: rc = run_fanout(); break;
    case SC_IDLE: rc = run_idle(); break;
    case SC_CHAT: rc = run_chat(); break;
    case SC_JOIN: rc = run_join(); break;
    case SC_PRESENCE: rc = run_presence(); break;
    }
    if (rc == 2) {
        fprintf(stderr, "rcload: setup failed\n");
        for (int i = 0; i < E.nsamples; i++)
            fprintf(stderr, "  e.g. %s\n", E.samples[i]);
    }
    clients_close();
    close(L.ep);
    floor_stop();
    return rc;
}
