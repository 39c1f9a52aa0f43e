/* longpoll.c - long-poll sessions: HTTP side (libmicrohttpd thread) and session side
 * (the owning I/O worker). */
#include <microhttpd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "config.h"
#include "conn.h"
#include "http.h"
#include "hub.h"
#include "longpoll.h"
#include "metrics.h"
#include "obuf.h"
#include "router.h"
#include "util/clock.h"
#include "socket.h"
#include "user_counter.h"
#include "util/base64.h"
#include "util/hmap.h"
#include "util/log.h"
#include "util/sbuf.h"
#include "util/utf8.h"
#include "util/xmalloc.h"
#include "worker.h"

#define TOKEN_PREFIX "lps."
#define TOKEN_MAX 48

/* ---------------------------------------------------------------------------------
 * HTTP side
 * --------------------------------------------------------------------------------- */

/* State of one long-poll HTTP request while a worker handles it (sock_cls). */
struct lp_http {
    struct socket_cls base;
    struct MHD_Connection *conn;
    atomic_bool ready;
    bool answered;
    char *response; /* JSON body once ready */
};

/* What an inbox item asks of the session's worker. */
enum lp_op {
    LP_OPEN, /* create the session (token, user, vsn) */
    LP_POLL, /* a GET: answer now or hold it */
    LP_POST, /* a POST: feed its lines, then answer */
};

/* A long-poll request, or a session to open, on its way to the session's worker. */
struct lp_item {
    struct inbox_item it;
    enum lp_op op;
    char token[TOKEN_MAX];
    struct lp_http *http;
    const char *body; /* owned by the suspended HTTP request */
    size_t body_len;
    bool ndjson;
    char *user_id;           /* LP_OPEN */
    struct user_counter *uc; /* LP_OPEN: holds one of the user's socket slots */
    enum codec_vsn vsn;      /* LP_OPEN */
    int64_t token_exp;       /* LP_OPEN: the token's exp */
};

static const struct socket_transport lp_transport_def;
static void run_item(struct worker *w, struct inbox_item *it);
static void drop_item(struct worker *w, struct inbox_item *it);

/* A new inbox item for op on the session named token. */
static struct lp_item *item_create(enum lp_op op, const char *token)
{
    struct lp_item *it = xcalloc(1, sizeof *it);
    it->it.run = run_item;
    it->it.drop = drop_item;
    it->op = op;
    snprintf(it->token, sizeof it->token, "%s", token);
    return it;
}

bool lp_is_session_token(const char *s)
{
    return s && !strncmp(s, TOKEN_PREFIX, strlen(TOKEN_PREFIX));
}

/* Parses "lps.<worker>.<random>" and returns the worker index, or -1. */
static int token_worker(const char *t, int nworkers)
{
    if (!lp_is_session_token(t) || strlen(t) >= TOKEN_MAX)
        return -1;
    char *end;
    long w = strtol(t + strlen(TOKEN_PREFIX), &end, 10);
    if (end == t + strlen(TOKEN_PREFIX) || *end != '.' || w < 0 || w >= nworkers)
        return -1;
    return (int)w;
}

/* Queues a JSON answer with the headers Phoenix sends on every long-poll response. */
static enum MHD_Result answer(struct MHD_Connection *conn, unsigned http_status,
                              const char *json)
{
    const char *body = json ? json : "";
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
    if (json) {
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                "application/json; charset=utf-8");
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    }
    enum MHD_Result ret = MHD_queue_response(conn, http_status, r);
    MHD_destroy_response(r);
    return ret;
}

/* The session token of a request: the X-Phoenix-Longpoll-Token header (phoenix 1.9),
 * else the last "token" query value when it is one of ours (1.8 appends it after the
 * app's own params, which may have a "token" too). */
static const char *session_token(struct MHD_Connection *conn)
{
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Phoenix-Longpoll-Token");
    if (h)
        return h;
    struct socket_tokens t;
    socket_query_tokens(conn, &t);
    if (t.n && lp_is_session_token(t.v[t.n - 1]))
        return t.v[t.n - 1];
    return NULL;
}

/* Hands a request to the session's worker and suspends it until the answer. */
static enum MHD_Result to_worker(struct socket_front *f, const struct http_socket_request *req,
                                 void **sock_cls, int w, enum lp_op op, const char *token,
                                 bool ndjson)
{
    struct lp_http *h = xcalloc(1, sizeof *h);
    h->base.transport = &lp_transport_def;
    h->conn = req->conn;
    *sock_cls = h;
    struct lp_item *it = item_create(op, token);
    it->http = h;
    it->body = req->body;
    it->body_len = req->body_len;
    it->ndjson = ndjson;
    http_note_suspend();
    MHD_suspend_connection(req->conn);
    if (!hub_post_to_worker(f->hub, w, &it->it)) /* workers stopped */
        drop_item(NULL, &it->it);
    return MHD_YES;
}

/* GET without a (live) session: the connect step, then a new session, answered 410
 * with its token ("session opened" for phoenix.js). */
static enum MHD_Result open_session(struct socket_front *f,
                                   const struct http_socket_request *req)
{
    enum codec_vsn vsn;
    int64_t exp = 0;
    const char *why = NULL;
    char *user = socket_connect_step(
        f->cfg, req->conn,
        MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "X-Phoenix-AuthToken"),
        lp_is_session_token, &vsn, &exp, &why);
    if (!user) {
        log_info("connect refused", "transport=longpoll reason=%s", why);
        return answer(req->conn, 200, "{\"status\":403}");
    }
    if (!socket_acquire_user(f, user, "longpoll")) {
        free(user);
        return answer(req->conn, 200, "{\"status\":403}");
    }
    uint8_t rnd[16];
    if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd) {
        user_counter_release(f->uc, user);
        free(user);
        return answer(req->conn, 200, "{\"status\":500}");
    }
    char r64[32], token[TOKEN_MAX];
    b64url_encode(rnd, sizeof rnd, r64);
    int w = hub_pick_worker(f->hub);
    snprintf(token, sizeof token, TOKEN_PREFIX "%d.%s", w, r64);
    struct lp_item *it = item_create(LP_OPEN, token);
    it->user_id = user;
    it->uc = f->uc;
    it->vsn = vsn;
    it->token_exp = exp;
    char body[128];
    snprintf(body, sizeof body, "{\"messages\":[],\"status\":410,\"token\":\"%s\"}", token);
    /* The worker creates the session before it sees any later request for it: its
     * inbox is processed in order. */
    if (!hub_post_to_worker(f->hub, w, &it->it)) {
        drop_item(NULL, &it->it);
        return answer(req->conn, 200, "{\"status\":410}");
    }
    return answer(req->conn, 200, body);
}

/* socket_transport.request for /socket/longpoll. */
static int lp_request(struct socket_front *f, const struct http_socket_request *req,
                      void **sock_cls)
{
    struct lp_http *h = *sock_cls;
    if (h) { /* resumed: the worker has answered */
        if (!atomic_load(&h->ready))
            return MHD_YES;
        if (!h->answered) {
            h->answered = true;
            http_note_resumed();
        }
        return answer(req->conn, 200, h->response);
    }
    const char *m = req->method;
    if (!strcmp(m, "OPTIONS")) {
        struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
        const char *rh = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
                                                     "Access-Control-Request-Headers");
        if (rh)
            MHD_add_response_header(r, "Access-Control-Allow-Headers", rh);
        MHD_add_response_header(r, "Access-Control-Allow-Methods", "get, post, options");
        MHD_add_response_header(r, "Access-Control-Max-Age", "3600");
        enum MHD_Result ret = MHD_queue_response(req->conn, 200, r);
        MHD_destroy_response(r);
        return ret;
    }
    bool get = !strcmp(m, "GET"), post = !strcmp(m, "POST");
    if (!get && !post)
        return answer(req->conn, 400, NULL);
    const char *token = session_token(req->conn);
    int w = token ? token_worker(token, hub_worker_count(f->hub)) : -1;
    if (post) {
        if (w < 0)
            return answer(req->conn, 200, "{\"status\":410}");
        if (req->too_large)
            return answer(req->conn, 200, "{\"status\":413}");
        const char *ct =
            MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        bool ndjson = ct && !strncasecmp(ct, "application/x-ndjson", 20);
        return to_worker(f, req, sock_cls, w, LP_POST, token, ndjson);
    }
    if (w >= 0)
        return to_worker(f, req, sock_cls, w, LP_POLL, token, false);
    return open_session(f, req);
}

/* socket_transport.cls_free */
static void lp_http_free(struct socket_front *f, void *cls)
{
    struct lp_http *h = cls;
    free(h->response);
    free(h);
}

static const struct socket_transport lp_transport_def = {
    .path = "/socket/longpoll",
    .request = lp_request,
    .cls_free = lp_http_free,
};
const struct socket_transport *const lp_transport = &lp_transport_def;

/* Sets the answer of a suspended request and wakes it (any thread; once). */
static void respond(struct lp_http *h, const char *json)
{
    h->response = xstrdup(json);
    atomic_store(&h->ready, true);
    MHD_resume_connection(h->conn);
}

/* ---------------------------------------------------------------------------------
 * Body parsing
 * --------------------------------------------------------------------------------- */

int lp_parse_body(bool ndjson, const char *body, size_t len, size_t max_lines,
                  void (*fn)(void *arg, bool binary, const uint8_t *data, size_t len), void *arg)
{
    if (!ndjson) {
        if (len)
            fn(arg, false, (const uint8_t *)body, len);
        return len ? 1 : 0;
    }
    int n = 0;
    size_t i = 0;
    while (i < len && (size_t)n < max_lines) {
        const char *nl = memchr(body + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - body) : len;
        size_t l = end - i;
        if (l && body[i + l - 1] == '\r')
            l--;
        if (l) {
            if (body[i] == '[') {
                fn(arg, false, (const uint8_t *)body + i, l);
            } else {
                uint8_t *bin = malloc(3 * l / 4 + 3);
                size_t bl = 0;
                if (!bin || b64_decode(body + i, l, bin, &bl)) {
                    free(bin);
                    return RC_EPROTO;
                }
                fn(arg, true, bin, bl);
                free(bin);
            }
            n++;
        }
        i = end + 1;
    }
    return n;
}

/* ---------------------------------------------------------------------------------
 * Sessions (worker thread)
 * --------------------------------------------------------------------------------- */

struct lp_session {
    struct conn base;
    char token[TOKEN_MAX];
    bool gone;              /* closed: no more input or output */
    struct sbuf out;        /* queued messages, each a JSON string, comma-separated */
    size_t out_n;
    bool slow;
    struct lp_http *poll;   /* the held GET, if any */
    int64_t poll_deadline;
    int64_t last_poll_ms;
    /* a POST whose remaining lines wait for a join to finish */
    struct lp_http *post;
    char *rest;
    size_t rest_len;
    bool rest_ndjson;
};

static const struct conn_ops lp_ops;

/* The worker's session table. */
static struct hmap *sessions(struct worker *w)
{
    if (!w->sessions)
        w->sessions = xcalloc(1, sizeof(struct hmap));
    return w->sessions;
}

/* Answers the held poll with whatever is queued (200) or, when empty, 204. */
static void answer_poll(struct lp_session *s)
{
    if (!s->poll)
        return;
    struct sbuf b = SBUF_INIT;
    sbuf_adds(&b, "{\"messages\":[");
    if (s->out_n)
        sbuf_add(&b, s->out.data, s->out.len);
    sbuf_printf(&b, "],\"status\":%d,\"token\":\"%s\"}", s->out_n ? 200 : 204, s->token);
    respond(s->poll, b.data);
    sbuf_cleanup(&b);
    s->poll = NULL;
    /* Idle time counts from the end of the last poll: a client that polls again at
     * once after each answer never idles out. */
    s->last_poll_ms = s->base.worker->now_ms;
    sbuf_reset(&s->out);
    s->out_n = 0;
}

/* conn_ops.send: queue the text frame's payload as one message. */
static void lp_send(struct conn *c, struct obuf *b)
{
    struct lp_session *s = (struct lp_session *)c;
    if (s->gone || s->slow || b->opcode != WS_OP_TEXT)
        return; /* long-poll carries text only */
    if (s->out_n)
        sbuf_addc(&s->out, ',');
    sbuf_add_json_str(&s->out, obuf_payload(b), obuf_payload_len(b));
    s->out_n++;
    if (s->out.len > (size_t)c->worker->env->cfg->outbound_queue_bytes) {
        log_warn("slow consumer", "conn=%llu user=%s transport=longpoll queued_bytes=%zu",
                 (unsigned long long)c->id, log_v(c->user_id), s->out.len);
        s->slow = true;
        metrics_slow_consumer();
    }
    conn_want_flush(c);
}

/* Ends a session: channels terminate, a held poll or POST learns it is gone (410). */
static void lp_end(struct lp_session *s, const char *why)
{
    if (s->gone)
        return;
    log_info("disconnect", "conn=%llu user=%s transport=longpoll reason=\"%s\"",
             (unsigned long long)s->base.id, log_v(s->base.user_id), why);
    s->gone = true;
    router_conn_closed(&s->base);
    char body[128];
    snprintf(body, sizeof body, "{\"messages\":[],\"status\":410,\"token\":\"%s\"}", s->token);
    if (s->poll) {
        respond(s->poll, body);
        s->poll = NULL;
    }
    if (s->post) {
        respond(s->post, "{\"status\":410}");
        s->post = NULL;
    }
    hmap_del(sessions(s->base.worker), s->token, strlen(s->token));
    conn_release(&s->base);
}

/* conn_ops.close */
static void lp_close(struct conn *c, uint16_t code, const char *why)
{
    lp_end((struct lp_session *)c, why);
}

/* Feeds one POSTed message to the router, as a WebSocket frame would be. */
static void feed(void *arg, bool binary, const uint8_t *data, size_t len)
{
    struct lp_session *s = arg;
    if (s->gone)
        return;
    struct phx_in m;
    int rc;
    if (binary)
        rc = codec_decode_binary(s->base.vsn, data, len,
                                 (size_t)s->base.worker->env->cfg->max_json_depth, &m);
    else if (!utf8_valid((const char *)data, len))
        rc = RC_EPROTO;
    else
        rc = codec_decode_text(s->base.vsn, (const char *)data, len,
                               (size_t)s->base.worker->env->cfg->max_json_depth, &m);
    if (rc) {
        metrics_protocol_error();
        log_info("protocol error", "conn=%llu user=%s transport=longpoll",
                 (unsigned long long)s->base.id, log_v(s->base.user_id));
        lp_end(s, "undecodable message");
        return;
    }
    router_handle(&s->base, &m);
    codec_in_cleanup(&m);
}

/* Processes POSTed lines until done or a join is pending (the rest waits for it, as a
 * WebSocket's input does). Answers the POST when all lines are through. */
static void process_post(struct lp_session *s)
{
    while (s->rest_len && !s->gone && !s->base.joins_pending) {
        /* One line (or the whole non-ndjson body) at a time. */
        size_t l = s->rest_len;
        if (s->rest_ndjson) {
            const char *nl = memchr(s->rest, '\n', s->rest_len);
            l = nl ? (size_t)(nl - s->rest) + 1 : s->rest_len;
        }
        if (lp_parse_body(s->rest_ndjson, s->rest, l, 1, feed, s) < 0 && !s->gone)
            lp_end(s, "bad base64 line");
        memmove(s->rest, s->rest + l, s->rest_len - l);
        s->rest_len -= l;
    }
    if (s->gone || s->rest_len)
        return;
    free(s->rest);
    s->rest = NULL;
    if (s->post) {
        respond(s->post, "{\"status\":200}");
        s->post = NULL;
    }
}

/* conn_ops.resume: a join finished; continue a POST held behind it. */
static void lp_resume(struct conn *c)
{
    conn_want_flush(c);
}

/* conn_ops.flush: continue held POST lines, answer the held poll if there is output. */
static void lp_flush(struct conn *c)
{
    struct lp_session *s = (struct lp_session *)c;
    if (s->gone)
        return;
    if (s->rest_len && !c->joins_pending)
        process_post(s);
    if (s->slow) {
        lp_end(s, "slow consumer");
        return;
    }
    if (s->poll && s->out_n)
        answer_poll(s);
}

/* conn_ops.tick: the poll window, sessions nobody polls any more, token expiry. */
static void lp_tick(struct conn *c, int64_t now)
{
    struct lp_session *s = (struct lp_session *)c;
    if (s->gone)
        return;
    if (s->poll && now >= s->poll_deadline)
        answer_poll(s);
    else if (!s->poll && now - s->last_poll_ms > LP_IDLE_MS) {
        lp_end(s, "no poll");
        return;
    }
    router_check_token(c, clock_unix());
}

/* conn_ops.destroy */
static void lp_destroy(struct conn *c)
{
    struct lp_session *s = (struct lp_session *)c;
    sbuf_cleanup(&s->out);
    free(s->rest);
    free(s);
}

/* conn_ops.abort: at shutdown there is no handshake to wait for. */
static void lp_abort(struct conn *c)
{
    lp_end((struct lp_session *)c, "server stopped");
}

static const struct conn_ops lp_ops = {
    .send = lp_send,
    .close = lp_close,
    .abort = lp_abort,
    .destroy = lp_destroy,
    .resume = lp_resume,
    .flush = lp_flush,
    .tick = lp_tick,
};

/* Handles a request or a session opening on the session's worker. */
static void handle_item(struct worker *w, struct lp_item *it)
{
    struct hmap *map = sessions(w);
    struct lp_session *s = hmap_get(map, it->token, strlen(it->token));
    switch (it->op) {
    case LP_OPEN: {
        s = xcalloc(1, sizeof *s);
        conn_init(&s->base, &lp_ops, w, &w->conns, it->uc, it->user_id, it->vsn);
        s->base.token_exp = it->token_exp;
        it->user_id = NULL; /* the session's now */
        snprintf(s->token, sizeof s->token, "%s", it->token);
        s->last_poll_ms = w->now_ms;
        hmap_put(map, s->token, strlen(s->token), s);
        conn_add(&s->base, MT_LONGPOLL);
        log_info("connect", "conn=%llu user=%s transport=longpoll vsn=%d",
                 (unsigned long long)s->base.id, log_v(s->base.user_id),
                 it->vsn == CODEC_V2 ? 2 : 1);
        return;
    }
    case LP_POLL: {
        if (!s || s->gone) {
            char body[128];
            snprintf(body, sizeof body, "{\"messages\":[],\"status\":410,\"token\":\"%s\"}",
                     it->token);
            respond(it->http, body);
            return;
        }
        if (s->poll) /* a newer poll replaces an older one */
            answer_poll(s);
        s->poll = it->http;
        s->poll_deadline = w->now_ms + LP_WINDOW_MS;
        s->last_poll_ms = w->now_ms;
        if (s->out_n)
            answer_poll(s);
        return;
    }
    case LP_POST: {
        if (!s || s->gone || s->post) {
            respond(it->http, s && s->post ? "{\"status\":409}" : "{\"status\":410}");
            return;
        }
        s->post = it->http;
        s->rest_ndjson = it->ndjson;
        /* Only the first LP_MAX_LINES lines count, as in Phoenix. */
        size_t len = it->body_len;
        if (it->ndjson) {
            size_t lines = 0, i = 0;
            while (i < len && lines < LP_MAX_LINES) {
                const char *nl = memchr(it->body + i, '\n', len - i);
                i = nl ? (size_t)(nl - it->body) + 1 : len;
                lines++;
            }
            len = i;
        }
        s->rest = len ? xmalloc(len) : NULL;
        if (len)
            memcpy(s->rest, it->body, len);
        s->rest_len = len;
        process_post(s);
        return;
    }
    }
}

/* inbox_item.run */
static void run_item(struct worker *w, struct inbox_item *it)
{
    if (w->stopping) {
        drop_item(w, it);
        return;
    }
    handle_item(w, (struct lp_item *)it);
    free(it);
}

/* inbox_item.drop: a request no worker will process (shutdown) is answered 410; a
 * session that will not open gives its socket slot back. */
static void drop_item(struct worker *w, struct inbox_item *item)
{
    struct lp_item *it = (struct lp_item *)item;
    if (it->op == LP_OPEN) {
        user_counter_release(it->uc, it->user_id);
        free(it->user_id);
    } else {
        respond(it->http, it->op == LP_POST ? "{\"status\":410}"
                                            : "{\"messages\":[],\"status\":410}");
    }
    free(it);
}
