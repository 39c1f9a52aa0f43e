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
#include "util/base64.h"
#include "util/hmap.h"
#include "util/log.h"
#include "util/sbuf.h"
#include "util/utf8.h"
#include "util/xmalloc.h"
#include "worker.h"
#include "ws.h"

#define TOKEN_PREFIX "lps."
#define TOKEN_MAX 48

/* ---------------------------------------------------------------------------------
 * HTTP side
 * --------------------------------------------------------------------------------- */

/* State of one long-poll HTTP request while a worker handles it (sock_cls). */
struct lp_http {
    int kind; /* SOCK_KIND_LP: shares sock_cls with the WebSocket handshake */
    struct MHD_Connection *conn;
    atomic_bool ready;
    bool answered;
    char *response; /* JSON body once ready */
};

enum { SOCK_KIND_LP = 0x4c50 };

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
    struct ws_tokens t;
    ws_query_tokens(conn, &t);
    if (t.n && lp_is_session_token(t.v[t.n - 1]))
        return t.v[t.n - 1];
    return NULL;
}

/* Hands a request to the session's worker and suspends it until the answer. */
static enum MHD_Result to_worker(struct ws_front *f, const struct http_socket_request *req,
                                 void **sock_cls, int w, enum lp_op op, const char *token,
                                 bool ndjson)
{
    struct lp_http *h = xcalloc(1, sizeof *h);
    h->kind = SOCK_KIND_LP;
    h->conn = req->conn;
    *sock_cls = h;
    struct inbox_item *it = xcalloc(1, sizeof *it);
    it->kind = IN_LP;
    it->u.lp.op = op;
    snprintf(it->u.lp.token, sizeof it->u.lp.token, "%s", token);
    it->u.lp.http = h;
    it->u.lp.body = req->body;
    it->u.lp.body_len = req->body_len;
    it->u.lp.ndjson = ndjson;
    http_note_suspend();
    MHD_suspend_connection(req->conn);
    if (!hub_post_to_worker(f->hub, w, it)) { /* workers stopped */
        lp_drop_item(NULL, it);
        free(it);
    }
    return MHD_YES;
}

/* GET without a (live) session: the connect step, then a new session, answered 410
 * with its token ("session opened" for phoenix.js). */
static enum MHD_Result open_session(struct ws_front *f, const struct http_socket_request *req)
{
    enum codec_vsn vsn;
    const char *why = NULL;
    char *user = ws_connect_step(f->cfg, req->conn, true, &vsn, &why);
    if (!user) {
        log_info("connect refused", "transport=longpoll reason=%s", why);
        return answer(req->conn, 200, "{\"status\":403}");
    }
    if (!hub_acquire_user(f->hub, user)) {
        log_info("connect refused", "transport=longpoll reason=too_many_sockets user=%s", log_v(user));
        free(user);
        return answer(req->conn, 200, "{\"status\":403}");
    }
    uint8_t rnd[16];
    if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd) {
        hub_release_user(f->hub, user);
        free(user);
        return answer(req->conn, 200, "{\"status\":500}");
    }
    char r64[32];
    b64url_encode(rnd, sizeof rnd, r64);
    int w = hub_pick_worker(f->hub);
    struct inbox_item *it = xcalloc(1, sizeof *it);
    it->kind = IN_LP;
    it->u.lp.op = LP_OPEN;
    snprintf(it->u.lp.token, sizeof it->u.lp.token, TOKEN_PREFIX "%d.%s", w, r64);
    it->u.lp.user_id = user;
    it->u.lp.vsn = vsn;
    char body[128];
    snprintf(body, sizeof body, "{\"messages\":[],\"status\":410,\"token\":\"%s\"}",
             it->u.lp.token);
    /* The worker creates the session before it sees any later request for it: its
     * inbox is processed in order. */
    if (!hub_post_to_worker(f->hub, w, it)) {
        hub_release_user(f->hub, it->u.lp.user_id);
        free(it->u.lp.user_id);
        free(it);
        return answer(req->conn, 200, "{\"status\":410}");
    }
    return answer(req->conn, 200, body);
}

int lp_request(struct ws_front *f, const struct http_socket_request *req, void **sock_cls)
{
    struct lp_http *h = *sock_cls;
    if (h) { /* resumed: the worker has answered */
        if (h->kind != SOCK_KIND_LP || !atomic_load(&h->ready))
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

void lp_http_free(void *cls)
{
    struct lp_http *h = cls;
    free(h->response);
    free(h);
}

bool lp_http_is(void *cls)
{
    return cls && ((struct lp_http *)cls)->kind == SOCK_KIND_LP;
}

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
    if (!w->lp_sessions)
        w->lp_sessions = xcalloc(1, sizeof(struct hmap));
    return w->lp_sessions;
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
    if (s->out.len > (size_t)c->worker->cfg->outbound_queue_bytes) {
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
    conn_closed(&s->base);
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
        rc = codec_decode_binary(s->base.vsn, data, len, &m);
    else if (!utf8_valid((const char *)data, len))
        rc = RC_EPROTO;
    else
        rc = codec_decode_text(s->base.vsn, (const char *)data, len,
                               (size_t)s->base.worker->cfg->max_json_depth, &m);
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

/* conn_ops.tick: the poll window, and sessions nobody polls any more. */
static void lp_tick(struct conn *c, int64_t now)
{
    struct lp_session *s = (struct lp_session *)c;
    if (s->gone)
        return;
    if (s->poll && now >= s->poll_deadline)
        answer_poll(s);
    else if (!s->poll && now - s->last_poll_ms > LP_IDLE_MS)
        lp_end(s, "no poll");
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

void lp_handle_item(struct worker *w, struct inbox_item *it)
{
    struct hmap *map = sessions(w);
    struct lp_session *s = hmap_get(map, it->u.lp.token, strlen(it->u.lp.token));
    switch (it->u.lp.op) {
    case LP_OPEN: {
        if (w->stopping) {
            hub_release_user(w->hub, it->u.lp.user_id);
            free(it->u.lp.user_id);
            return;
        }
        s = xcalloc(1, sizeof *s);
        conn_init(&s->base, &lp_ops, w, it->u.lp.user_id, it->u.lp.vsn);
        snprintf(s->token, sizeof s->token, "%s", it->u.lp.token);
        s->last_poll_ms = w->now_ms;
        hmap_put(map, s->token, strlen(s->token), s);
        worker_add_conn(w, &s->base);
        s->base.transport = MT_LONGPOLL;
        metrics_socket_opened(MT_LONGPOLL);
        log_info("connect", "conn=%llu user=%s transport=longpoll vsn=%d",
                 (unsigned long long)s->base.id, log_v(s->base.user_id),
                 it->u.lp.vsn == CODEC_V2 ? 2 : 1);
        return;
    }
    case LP_POLL: {
        if (!s || s->gone) {
            char body[128];
            snprintf(body, sizeof body, "{\"messages\":[],\"status\":410,\"token\":\"%s\"}",
                     it->u.lp.token);
            respond(it->u.lp.http, body);
            return;
        }
        if (s->poll) /* a newer poll replaces an older one */
            answer_poll(s);
        s->poll = it->u.lp.http;
        s->poll_deadline = w->now_ms + LP_WINDOW_MS;
        s->last_poll_ms = w->now_ms;
        if (s->out_n)
            answer_poll(s);
        return;
    }
    case LP_POST: {
        if (!s || s->gone || s->post) {
            respond(it->u.lp.http, s && s->post ? "{\"status\":409}" : "{\"status\":410}");
            return;
        }
        s->post = it->u.lp.http;
        s->rest_ndjson = it->u.lp.ndjson;
        /* Only the first LP_MAX_LINES lines count, as in Phoenix. */
        size_t len = it->u.lp.body_len;
        if (it->u.lp.ndjson) {
            size_t lines = 0, i = 0;
            while (i < len && lines < LP_MAX_LINES) {
                const char *nl = memchr(it->u.lp.body + i, '\n', len - i);
                i = nl ? (size_t)(nl - it->u.lp.body) + 1 : len;
                lines++;
            }
            len = i;
        }
        s->rest = len ? xmalloc(len) : NULL;
        if (len)
            memcpy(s->rest, it->u.lp.body, len);
        s->rest_len = len;
        process_post(s);
        return;
    }
    }
}

void lp_drop_item(struct worker *w, struct inbox_item *it)
{
    if (it->u.lp.op == LP_OPEN) {
        if (w)
            hub_release_user(w->hub, it->u.lp.user_id);
        free(it->u.lp.user_id);
        return;
    }
    respond(it->u.lp.http, it->u.lp.op == LP_POST ? "{\"status\":410}"
                                                  : "{\"messages\":[],\"status\":410}");
}

/* Frees the worker's session table (sessions are gone by now). */
void lp_worker_cleanup(struct worker *w)
{
    if (w->lp_sessions) {
        hmap_cleanup(w->lp_sessions);
        free(w->lp_sessions);
        w->lp_sessions = NULL;
    }
}
