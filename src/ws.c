/* ws.c - WebSocket transport: the upgrade on the HTTP front, sessions on the workers. */
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "config.h"
#include "conn.h"
#include "http.h"
#include "hub.h"
#include "jwt.h"
#include "metrics.h"
#include "obuf.h"
#include "router.h"
#include "socket.h"
#include "user_counter.h"
#include "util/base64.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/utf8.h"
#include "util/xmalloc.h"
#include "validate.h"
#include "worker.h"
#include "ws.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define AUTH_PROTOCOL_PREFIX "base64url.bearer.phx."
/* How long a closing session waits for the peer's close before dropping the socket. */
#define CLOSE_WAIT_MS 2000
/* iovecs per writev. */
#define WRITE_BATCH 64

/* ---------------------------------------------------------------------------------
 * Handshake (libmicrohttpd thread)
 * --------------------------------------------------------------------------------- */

/* What the upgrade callback needs; freed by the front when the request completes. */
struct upgrade_info {
    struct socket_cls base;
    struct socket_front *front;
    enum codec_vsn vsn;
    int64_t token_exp;
    bool realtime;
    bool counted;    /* holds one of the user's socket slots */
    char user_id[USER_ID_MAX + 1];
};

/* Header value contains token (comma-separated, case-insensitive). */
static bool header_has_token(const char *value, const char *token)
{
    if (!value)
        return false;
    size_t tl = strlen(token);
    const char *p = value;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *start = p;
        while (*p && *p != ',')
            p++;
        const char *end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if ((size_t)(end - start) == tl && !strncasecmp(start, token, tl))
            return true;
    }
    return false;
}

/* Finds the phoenix.js authToken entry in Sec-WebSocket-Protocol and decodes it. */
static char *subprotocol_token(const char *protocols)
{
    if (!protocols)
        return NULL;
    const char *p = strstr(protocols, AUTH_PROTOCOL_PREFIX);
    if (!p)
        return NULL;
    p += strlen(AUTH_PROTOCOL_PREFIX);
    size_t n = strcspn(p, ", \t");
    if (n == 0 || n > JWT_MAX_LEN * 2)
        return NULL;
    uint8_t *out = malloc(n);
    size_t len = 0;
    if (!out || b64_decode(p, n, out, &len)) {
        free(out);
        return NULL;
    }
    char *tok = xstrndup((const char *)out, len);
    free(out);
    return tok;
}

/* An upgraded socket on its way to a worker. */
struct ws_open {
    struct inbox_item it;
    int fd;
    struct ws_identity id;
    struct user_counter *uc;
    size_t extra_len;
    uint8_t extra[]; /* what libmicrohttpd read past the handshake */
};

/* inbox_item.run: the worker adopts the socket. */
static void run_open(struct worker *w, struct inbox_item *it)
{
    struct ws_open *o = (struct ws_open *)it;
    if (w->stopping) {
        it->drop(w, it);
        return;
    }
    ws_conn_create(w, o->fd, o->extra, o->extra_len, &o->id);
    free(o);
}

/* inbox_item.drop: the socket closes, its slot goes back. */
static void drop_open(struct worker *w, struct inbox_item *it)
{
    struct ws_open *o = (struct ws_open *)it;
    close(o->fd);
    user_counter_release(o->uc, o->id.user_id);
    free(o->id.user_id);
    free(o);
}

/* Hands an upgraded socket (fd, owned from now on) to the least-loaded worker with the
 * authenticated user (id->user_id: ownership passes) and the bytes read past the
 * handshake. */
static void hand_over(struct socket_front *f, int fd, const uint8_t *extra, size_t extra_len,
                      const struct ws_identity *id)
{
    struct ws_open *o = xcalloc(1, sizeof *o + extra_len);
    o->it.run = run_open;
    o->it.drop = drop_open;
    o->fd = fd;
    o->id = *id;
    o->uc = f->uc;
    o->extra_len = extra_len;
    if (extra_len)
        memcpy(o->extra, extra, extra_len);
    if (!hub_post_to_worker(f->hub, hub_pick_worker(f->hub), &o->it))
        drop_open(NULL, &o->it);
}

/* libmicrohttpd hands over the upgraded socket: take a duplicate, let libmicrohttpd
 * close (and free the memory of) its own, and pass ours to a worker. */
static void on_upgraded(void *cls, struct MHD_Connection *connection, void *req_cls,
                        const char *extra_in, size_t extra_in_size, MHD_socket sock,
                        struct MHD_UpgradeResponseHandle *urh)
{
    struct upgrade_info *ui = cls;
    int fd = fcntl(sock, F_DUPFD_CLOEXEC, 0);
    struct ws_identity id = {
        .user_id = xstrdup(ui->user_id),
        .vsn = ui->vsn,
        .token_exp = ui->token_exp,
        .realtime = ui->realtime,
    };
    struct socket_front *f = ui->front;
    ui->counted = false; /* the socket slot goes with the session from here */
    MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE); /* may free ui */
    if (fd < 0) {
        log_warn("cannot take over an upgraded socket", "errno=%d", errno);
        user_counter_release(f->uc, id.user_id);
        free(id.user_id);
        return;
    }
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    /* Frames are written whole, one writev per loop turn: Nagle would only add the
     * peer's delayed-ACK time to every reply that follows a broadcast. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    hand_over(f, fd, (const uint8_t *)extra_in, extra_in_size, &id);
}

static const struct socket_transport ws_transport_def, ws_realtime_transport_def;

/* GET /socket/websocket or /realtime/v1/websocket (realtime): the connect step, the
 * upgrade's own checks, then upgrade. realtime-js sends its token as the apikey query
 * argument; phoenix.js as the token argument or in the subprotocol. */
static int upgrade_request(struct socket_front *f, const struct http_socket_request *req,
                           void **sock_cls, bool realtime)
{
    if (*sock_cls)
        return MHD_YES; /* upgrade already queued */
    struct MHD_Connection *conn = req->conn;
    if (strcmp(req->method, "GET"))
        return socket_plain(conn, 400, NULL);
    enum codec_vsn vsn;
    const char *why = NULL;
    const char *protocols =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Sec-WebSocket-Protocol");
    char *sub_token = realtime ? NULL : subprotocol_token(protocols);
    const char *apikey =
        realtime ? MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "apikey") : NULL;
    int64_t exp = 0;
    char *user = socket_connect_step(f->cfg, conn, realtime ? (apikey ? apikey : "") : sub_token,
                                     NULL, &vsn, &exp, &why);
    free(sub_token);
    if (!user) {
        log_info("connect refused", "transport=%s reason=%s",
                 realtime ? "realtime" : "websocket", realtime && !apikey ? "no_token" : why);
        return socket_plain(conn, 403, NULL);
    }
    bool offered_phoenix = header_has_token(protocols, "phoenix");
    const char *upgrade = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Upgrade");
    const char *connection = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Connection");
    const char *key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Sec-WebSocket-Key");
    const char *version =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Sec-WebSocket-Version");
    if (!header_has_token(connection, "upgrade") || !header_has_token(upgrade, "websocket")) {
        free(user);
        return socket_plain(conn, 400, "'connection' header must contain 'upgrade'");
    }
    if (!version || strcmp(version, "13") || !key || strlen(key) != 24) {
        free(user);
        return socket_plain(conn, 400, "unsupported WebSocket version or missing key");
    }
    if (!socket_acquire_user(f, user, "websocket")) {
        free(user);
        return socket_plain(conn, 429, "too many sockets for this user");
    }
    struct upgrade_info *ui = xcalloc(1, sizeof *ui);
    ui->base.transport = realtime ? &ws_realtime_transport_def : &ws_transport_def;
    ui->front = f;
    ui->vsn = vsn;
    ui->token_exp = exp;
    ui->realtime = realtime;
    ui->counted = true;
    snprintf(ui->user_id, sizeof ui->user_id, "%s", user);
    free(user);
    *sock_cls = ui; /* freed by ws_cls_free when the request completes */

    char concat[64];
    snprintf(concat, sizeof concat, "%s%s", key, WS_GUID);
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)concat, strlen(concat), digest);
    char accept[32];
    b64std_encode(digest, sizeof digest, accept);

    struct MHD_Response *r = MHD_create_response_for_upgrade(on_upgraded, ui);
    MHD_add_response_header(r, MHD_HTTP_HEADER_UPGRADE, "websocket");
    MHD_add_response_header(r, "Sec-WebSocket-Accept", accept);
    if (offered_phoenix)
        MHD_add_response_header(r, "Sec-WebSocket-Protocol", "phoenix");
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_SWITCHING_PROTOCOLS, r);
    MHD_destroy_response(r);
    return ret;
}

/* socket_transport.cls_free */
static void ws_cls_free(struct socket_front *f, void *cls)
{
    struct upgrade_info *ui = cls;
    if (ui->counted) /* the upgrade never happened */
        user_counter_release(f->uc, ui->user_id);
    free(ui);
}

/* socket_transport.request for /socket/websocket. */
static int websocket_request(struct socket_front *f, const struct http_socket_request *req,
                             void **sock_cls)
{
    return upgrade_request(f, req, sock_cls, false);
}

/* socket_transport.request for /realtime/v1/websocket. */
static int realtime_request(struct socket_front *f, const struct http_socket_request *req,
                            void **sock_cls)
{
    return upgrade_request(f, req, sock_cls, true);
}

static const struct socket_transport ws_transport_def = {
    .path = "/socket/websocket",
    .request = websocket_request,
    .cls_free = ws_cls_free,
};
static const struct socket_transport ws_realtime_transport_def = {
    .path = "/realtime/v1/websocket",
    .request = realtime_request,
    .cls_free = ws_cls_free,
};
const struct socket_transport *const ws_transport = &ws_transport_def;
const struct socket_transport *const ws_realtime_transport = &ws_realtime_transport_def;

/* ---------------------------------------------------------------------------------
 * Sessions (worker thread)
 * --------------------------------------------------------------------------------- */

/* Where a session is in its close. */
enum ws_state {
    WS_OPEN,      /* normal traffic */
    WS_CLOSING,   /* our close frame is queued; input is discarded */
    WS_CLOSE_SENT /* our close frame is written; waiting for the peer's close or EOF */
};

struct ws_conn {
    struct conn base;
    struct ep_handler ep;
    int fd;
    enum ws_state state;
    bool peer_closed;   /* the peer sent its close frame */
    bool input_pending; /* input stopped early (paused): resume when possible */
    bool io_eof;        /* recv saw EOF or an error */
    bool slow;          /* outbound queue overflowed: close at the next flush */
    bool want_out;      /* EPOLLOUT registered (only while the socket buffer is full) */
    wslay_frame_context_ptr wf;
    int64_t last_rx_ms;
    int64_t close_deadline;
    /* bytes libmicrohttpd had read past the handshake */
    uint8_t *extra;
    size_t extra_len, extra_off;
    /* the frame being received */
    uint64_t frame_left; /* payload bytes of the current frame still to come */
    bool in_frame;
    uint8_t frame_op;
    bool frame_fin;
    /* the message being assembled (data frames) */
    uint8_t *msg;
    size_t msg_len, msg_cap;
    uint8_t msg_op; /* 0: no message in progress */
    /* the control frame being assembled */
    uint8_t ctrl[125];
    uint8_t ctrl_len;
    /* outbound queue: a ring of frames, the first possibly partly written */
    struct obuf **q;
    uint32_t q_head, q_n, q_cap;
    size_t q_off;
    size_t q_bytes;
};

static const struct conn_ops ws_ops;

/* Reads into wslay's buffer: first what libmicrohttpd read ahead, then the socket. */
static ssize_t ws_recv_cb(uint8_t *buf, size_t len, int flags, void *user_data)
{
    struct ws_conn *c = user_data;
    if (c->extra_off < c->extra_len) {
        size_t n = c->extra_len - c->extra_off;
        if (n > len)
            n = len;
        memcpy(buf, c->extra + c->extra_off, n);
        c->extra_off += n;
        if (c->extra_off == c->extra_len) {
            free(c->extra);
            c->extra = NULL;
            c->extra_len = c->extra_off = 0;
        }
        return (ssize_t)n;
    }
    ssize_t r = recv(c->fd, buf, len, 0);
    if (r > 0)
        return r;
    if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        c->io_eof = true;
    return -1;
}

/* The frame API's send side is unused: server frames are built by obuf. */
static ssize_t ws_send_cb(const uint8_t *data, size_t len, int flags, void *user_data)
{
    return -1;
}

static const struct wslay_frame_callbacks frame_callbacks = {
    .send_callback = ws_send_cb,
    .recv_callback = ws_recv_cb,
    .genmask_callback = NULL,
};

/* Appends a frame to the outbound queue (takes a reference). */
static void queue_frame(struct ws_conn *c, struct obuf *b)
{
    if (c->q_n == c->q_cap) {
        uint32_t cap = c->q_cap ? c->q_cap * 2 : 4;
        struct obuf **q = xmalloc(cap * sizeof *q);
        for (uint32_t i = 0; i < c->q_n; i++)
            q[i] = c->q[(c->q_head + i) % c->q_cap];
        free(c->q);
        c->q = q;
        c->q_cap = cap;
        c->q_head = 0;
    }
    c->q[(c->q_head + c->q_n) % c->q_cap] = obuf_ref(b);
    c->q_n++;
    c->q_bytes += b->len;
    conn_want_flush(&c->base);
}

/* Drops every queued frame except a partly written first one. */
static void drop_queue(struct ws_conn *c)
{
    uint32_t keep = c->q_off ? 1 : 0;
    while (c->q_n > keep) {
        uint32_t i = (c->q_head + c->q_n - 1) % c->q_cap;
        c->q_bytes -= c->q[i]->len;
        obuf_unref(c->q[i]);
        c->q_n--;
    }
}

/* Starts the closing handshake: channels end, the close frame is queued. */
static void ws_start_close(struct ws_conn *c, uint16_t code, const char *why)
{
    if (c->state != WS_OPEN)
        return;
    log_info("disconnect", "conn=%llu user=%s code=%u reason=\"%s\"",
             (unsigned long long)c->base.id, log_v(c->base.user_id), code, why);
    router_conn_closed(&c->base);
    c->state = WS_CLOSING;
    struct obuf *b = obuf_create_close(code);
    if (b) {
        queue_frame(c, b);
        obuf_unref(b);
    }
    c->close_deadline = c->base.worker->now_ms + CLOSE_WAIT_MS;
    conn_want_flush(&c->base);
}

/* Closes the socket and releases the session. */
static void ws_finish(struct ws_conn *c)
{
    if (c->fd < 0)
        return;
    epoll_ctl(c->base.worker->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    drop_queue(c);
    if (c->q_n) { /* the partly written frame */
        obuf_unref(c->q[c->q_head]);
        c->q_n = 0;
    }
    c->q_bytes = 0;
    conn_release(&c->base);
}

void ws_conn_abort(struct conn *base)
{
    struct ws_conn *c = (struct ws_conn *)base;
    router_conn_closed(base);
    ws_finish(c);
}

/* conn_ops.send */
static void ws_send(struct conn *base, struct obuf *b)
{
    struct ws_conn *c = (struct ws_conn *)base;
    if (c->state != WS_OPEN || c->slow)
        return;
    queue_frame(c, b);
    if (c->q_bytes > (size_t)base->worker->env->cfg->outbound_queue_bytes) {
        /* Closing here could unsubscribe chans while a broadcast is being fanned out:
         * the flush pass closes it. */
        log_warn("slow consumer", "conn=%llu user=%s queued_bytes=%zu",
                 (unsigned long long)base->id, log_v(base->user_id), c->q_bytes);
        drop_queue(c);
        c->slow = true;
        metrics_slow_consumer();
        conn_want_flush(base);
    }
}

/* conn_ops.close */
static void ws_close(struct conn *base, uint16_t code, const char *why)
{
    ws_start_close((struct ws_conn *)base, code, why);
}

/* A protocol violation: counted, logged, closed with code. */
static void protocol_error(struct ws_conn *c, uint16_t code, const char *why)
{
    if (c->state == WS_OPEN)
        metrics_protocol_error();
    log_info("protocol error", "conn=%llu user=%s code=%u reason=\"%s\"",
             (unsigned long long)c->base.id, log_v(c->base.user_id), code, why);
    ws_start_close(c, code, why);
}

/* Handles one complete data message. */
static void handle_message(struct ws_conn *c, uint8_t op, const uint8_t *data, size_t len)
{
    struct phx_in m;
    const struct config *cfg = c->base.worker->env->cfg;
    if (op == WS_OP_TEXT) {
        if (!utf8_valid((const char *)data, len)) {
            protocol_error(c, 1007, "invalid UTF-8");
            return;
        }
        if (codec_decode_text(c->base.vsn, (const char *)data, len, (size_t)cfg->max_json_depth,
                              &m)) {
            protocol_error(c, 1011, "undecodable message");
            return;
        }
    } else if (codec_decode_binary(c->base.vsn, data, len, (size_t)cfg->max_json_depth, &m)) {
        protocol_error(c, 1011, "undecodable binary message");
        return;
    }
    router_handle(&c->base, &m);
    codec_in_cleanup(&m);
}

/* Handles one complete control frame. */
static void handle_control(struct ws_conn *c, uint8_t op)
{
    if (op == WS_OP_PING) {
        struct obuf *b = obuf_create(WS_OP_PONG, c->ctrl, c->ctrl_len);
        if (b) {
            queue_frame(c, b);
            obuf_unref(b);
        }
    } else if (op == WS_OP_CLOSE) {
        c->peer_closed = true;
        if (c->state == WS_OPEN)
            ws_start_close(c, 1000, "peer closed");
    }
}

/* Appends payload bytes to the message being assembled, within the size limit. */
static bool msg_append(struct ws_conn *c, const uint8_t *p, size_t n)
{
    if (c->msg_len + n > c->msg_cap) {
        size_t cap = c->msg_cap ? c->msg_cap : 256;
        while (cap < c->msg_len + n)
            cap *= 2;
        uint8_t *m = realloc(c->msg, cap);
        if (!m)
            return false;
        c->msg = m;
        c->msg_cap = cap;
    }
    memcpy(c->msg + c->msg_len, p, n);
    c->msg_len += n;
    return true;
}

/* Frees the assembly buffer (idle sessions keep no input memory). */
static void msg_reset(struct ws_conn *c)
{
    free(c->msg);
    c->msg = NULL;
    c->msg_len = c->msg_cap = 0;
    c->msg_op = 0;
}

/* Validates a frame header (first chunk of a frame); false after closing. */
static bool frame_start(struct ws_conn *c, const struct wslay_frame_iocb *io)
{
    uint8_t op = io->opcode;
    if (io->rsv)
        return protocol_error(c, 1002, "reserved bits set"), false;
    if (!io->mask)
        return protocol_error(c, 1002, "unmasked client frame"), false;
    if (wslay_is_ctrl_frame(op)) {
        if (op != WS_OP_CLOSE && op != WS_OP_PING && op != WS_OP_PONG)
            return protocol_error(c, 1002, "unknown opcode"), false;
        if (!io->fin || io->payload_length > 125)
            return protocol_error(c, 1002, "bad control frame"), false;
        c->ctrl_len = 0;
        return true;
    }
    if (op == WS_OP_CONT) {
        if (!c->msg_op)
            return protocol_error(c, 1002, "continuation without a message"), false;
    } else if (op == WS_OP_TEXT || op == WS_OP_BINARY) {
        if (c->msg_op)
            return protocol_error(c, 1002, "new message inside a fragmented one"), false;
        c->msg_op = op;
        c->msg_len = 0;
    } else {
        return protocol_error(c, 1002, "unknown opcode"), false;
    }
    size_t max = (size_t)c->base.worker->env->cfg->max_frame_bytes;
    if (io->payload_length > max || c->msg_len + io->payload_length > max)
        return protocol_error(c, 1009, "message too big"), false;
    return true;
}

/* Reads and handles frames until the socket is drained, the session pauses for a
 * join, or it closes. */
static void ws_read(struct ws_conn *c)
{
    while (c->fd >= 0) {
        if (c->state == WS_OPEN && c->base.joins_pending) {
            c->input_pending = true;
            return;
        }
        struct wslay_frame_iocb io;
        ssize_t r = wslay_frame_recv(c->wf, &io);
        if (r == WSLAY_ERR_WANT_READ) {
            if (c->io_eof) {
                if (c->state == WS_OPEN)
                    log_info("disconnect", "conn=%llu user=%s reason=\"connection lost\"",
                             (unsigned long long)c->base.id, log_v(c->base.user_id));
                ws_conn_abort(&c->base);
            }
            return;
        }
        if (r < 0) {
            protocol_error(c, 1002, "malformed frame");
            if (c->state != WS_OPEN)
                c->input_pending = false;
            return;
        }
        c->last_rx_ms = c->base.worker->now_ms;
        if (c->state != WS_OPEN) {
            /* Closing: discard data, but notice the peer's close frame. */
            if (!c->in_frame) {
                c->in_frame = true;
                c->frame_left = io.payload_length;
                c->frame_op = io.opcode;
            }
            c->frame_left -= (uint64_t)io.data_length;
            if (!c->frame_left) {
                c->in_frame = false;
                if (c->frame_op == WS_OP_CLOSE)
                    c->peer_closed = true;
            }
            continue;
        }
        if (!c->in_frame) {
            c->in_frame = true;
            c->frame_left = io.payload_length;
            c->frame_op = io.opcode;
            c->frame_fin = io.fin;
            if (!frame_start(c, &io)) {
                /* Closing now: the rest of this frame is discarded above. */
                c->frame_left -= (uint64_t)io.data_length;
                if (!c->frame_left)
                    c->in_frame = false;
                continue;
            }
        }
        c->frame_left -= (uint64_t)io.data_length;
        if (wslay_is_ctrl_frame(c->frame_op)) {
            memcpy(c->ctrl + c->ctrl_len, io.data, io.data_length);
            c->ctrl_len = (uint8_t)(c->ctrl_len + io.data_length);
        } else if (io.data_length && !msg_append(c, io.data, io.data_length)) {
            protocol_error(c, 1009, "out of memory for message");
            continue;
        }
        if (c->frame_left)
            continue;
        c->in_frame = false;
        if (wslay_is_ctrl_frame(c->frame_op)) {
            handle_control(c, c->frame_op);
        } else if (c->frame_fin) {
            uint8_t op = c->msg_op;
            handle_message(c, op, c->msg, c->msg_len);
            msg_reset(c);
        }
    }
}

/* Asks epoll for EPOLLOUT only while a write is blocked: with it always on, every
 * ACK from the peer would wake the worker for nothing. */
static void want_output(struct ws_conn *c, bool on)
{
    if (c->want_out == on)
        return;
    c->want_out = on;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET | (on ? EPOLLOUT : 0),
                             .data.ptr = &c->ep};
    epoll_ctl(c->base.worker->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Writes queued frames with writev; after our close frame is out, half-closes. */
static void ws_flush(struct conn *base)
{
    struct ws_conn *c = (struct ws_conn *)base;
    if (c->fd < 0)
        return;
    if (c->slow && c->state == WS_OPEN)
        ws_start_close(c, 1013, "slow consumer");
    if (c->input_pending && !base->joins_pending && c->state == WS_OPEN) {
        c->input_pending = false;
        ws_read(c);
        if (c->fd < 0)
            return;
    }
    while (c->q_n) {
        struct iovec iov[WRITE_BATCH];
        int n = 0;
        for (uint32_t i = 0; i < c->q_n && n < WRITE_BATCH; i++) {
            struct obuf *b = c->q[(c->q_head + i) % c->q_cap];
            size_t off = i == 0 ? c->q_off : 0;
            iov[n].iov_base = b->data + off;
            iov[n].iov_len = b->len - off;
            n++;
        }
        /* one frame (the usual fan-out delivery): send() skips writev's iovec import */
        ssize_t w = n == 1 ? send(c->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL)
                           : writev(c->fd, iov, n);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                want_output(c, true); /* EPOLLOUT brings us back */
                return;
            }
            if (errno == EINTR)
                continue;
            ws_conn_abort(base);
            return;
        }
        size_t left = (size_t)w;
        while (left && c->q_n) {
            struct obuf *b = c->q[c->q_head];
            size_t rest = b->len - c->q_off;
            if (left < rest) {
                c->q_off += left;
                left = 0;
                break;
            }
            left -= rest;
            c->q_off = 0;
            c->q_bytes -= b->len;
            bool was_close = b->opcode == WS_OP_CLOSE;
            obuf_unref(b);
            c->q_head = (c->q_head + 1) % c->q_cap;
            c->q_n--;
            if (was_close && c->state == WS_CLOSING) {
                c->state = WS_CLOSE_SENT;
                shutdown(c->fd, SHUT_WR);
            }
        }
    }
    want_output(c, false);
    if (c->q_cap > 4 && c->q_n == 0) { /* give back a burst's queue memory */
        free(c->q);
        c->q = NULL;
        c->q_cap = c->q_head = 0;
    }
    if (c->state == WS_CLOSE_SENT && (c->peer_closed || c->io_eof))
        ws_finish(c);
}

/* epoll events for the session's socket. */
static void ws_on_event(struct ep_handler *h, uint32_t events)
{
    struct ws_conn *c = (struct ws_conn *)((char *)h - offsetof(struct ws_conn, ep));
    if (c->fd < 0)
        return;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        ws_read(c);
    if (c->fd >= 0 && (events & EPOLLOUT) && c->q_n)
        conn_want_flush(&c->base);
    if (c->fd >= 0 && c->state == WS_CLOSE_SENT && (c->peer_closed || c->io_eof))
        ws_finish(c);
}

/* conn_ops.resume: a join finished; the flush pass picks up held-back input. */
static void ws_resume(struct conn *base)
{
    struct ws_conn *c = (struct ws_conn *)base;
    if (c->input_pending)
        conn_want_flush(base);
}

/* conn_ops.tick: idle timeout, token expiry, and the close handshake's deadline. */
static void ws_tick(struct conn *base, int64_t now)
{
    struct ws_conn *c = (struct ws_conn *)base;
    if (c->fd < 0)
        return;
    if (c->state != WS_OPEN) {
        if (now >= c->close_deadline)
            ws_finish(c);
        return;
    }
    if (now - c->last_rx_ms >= base->worker->env->cfg->idle_timeout * 1000)
        ws_start_close(c, 1002, "idle timeout");
    else
        router_check_token(base, clock_unix());
}

/* conn_ops.destroy */
static void ws_destroy(struct conn *base)
{
    struct ws_conn *c = (struct ws_conn *)base;
    wslay_frame_context_free(c->wf);
    free(c->extra);
    free(c->msg);
    free(c->q);
    free(c);
}

static const struct conn_ops ws_ops = {
    .send = ws_send,
    .close = ws_close,
    .abort = ws_conn_abort,
    .destroy = ws_destroy,
    .resume = ws_resume,
    .flush = ws_flush,
    .tick = ws_tick,
};

void ws_conn_create(struct worker *w, int fd, const uint8_t *extra, size_t extra_len,
                    const struct ws_identity *id)
{
    struct ws_conn *c = xcalloc(1, sizeof *c);
    conn_init(&c->base, &ws_ops, w, &w->conns, w->env->uc, id->user_id, id->vsn);
    c->base.token_exp = id->token_exp;
    c->base.realtime = id->realtime;
    c->fd = fd;
    c->ep.on_event = ws_on_event;
    c->last_rx_ms = w->now_ms;
    if (wslay_frame_context_init(&c->wf, &frame_callbacks, c)) {
        close(fd);
        conn_unref(&c->base); /* before ops->destroy has anything to free */
        return;
    }
    if (extra_len) {
        c->extra = xmalloc(extra_len);
        memcpy(c->extra, extra, extra_len);
        c->extra_len = extra_len;
    }
    conn_add(&c->base, MT_WEBSOCKET);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = &c->ep};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev)) {
        log_error("epoll_ctl failed", "errno=%d", errno);
        ws_conn_abort(&c->base);
        return;
    }
    log_info("connect", "conn=%llu user=%s transport=%s vsn=%d",
             (unsigned long long)c->base.id, log_v(id->user_id),
             id->realtime ? "realtime" : "websocket", id->vsn == CODEC_V2 ? 2 : 1);
    if (c->extra_len)
        ws_read(c);
}
