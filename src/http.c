/* http.c - libmicrohttpd front. REST requests are collected (bounded by
 * --max-body-bytes), handed to api.c, and, when they need the database, suspended until
 * the store's completion resumes them: no HTTP thread ever waits on SQL. */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "config.h"
#include "http.h"
#include "metrics.h"
#include "store.h"
#include "util/log.h"
#include "util/thread.h"
#include "util/sbuf.h"
#include "util/xmalloc.h"

struct http {
    struct MHD_Daemon *daemon;
    struct http_options opts;
    uint16_t port;
    int listen_fd;
    pthread_t acceptor;
    bool acceptor_running;
    atomic_bool closing;
};

/* Requests suspended right now (REST waiting on the store, long-poll waiting on a
 * worker): libmicrohttpd must not be stopped while any is. One daemon per process. */
static atomic_int suspended_requests;
static atomic_bool stopping;

void http_note_suspend(void)
{
    atomic_fetch_add(&suspended_requests, 1);
}

void http_note_resumed(void)
{
    atomic_fetch_sub(&suspended_requests, 1);
}

bool http_stopping(void)
{
    return atomic_load(&stopping);
}

/* Where a request is in its life. */
enum req_state {
    REQ_READING,   /* collecting the body */
    REQ_WAITING,   /* suspended, store request in flight */
    REQ_RESPONDED, /* response queued */
    REQ_SOCKET,    /* owned by the socket transport handler */
};

struct http_req {
    struct http *http;
    struct MHD_Connection *conn;
    enum req_state state;
    struct sbuf body;
    bool too_large;
    struct store_req *pending;
    atomic_bool done;
    void *sock_cls; /* the socket handler's own state */
};

/* Queues resp on conn and frees its body. */
static enum MHD_Result send_response(struct MHD_Connection *conn, struct api_response *resp)
{
    const char *body = resp->body ? resp->body : "";
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (resp->body)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                resp->content_type ? resp->content_type : "application/json");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)resp->status, r);
    MHD_destroy_response(r);
    free(resp->body);
    resp->body = NULL;
    return ret;
}

/* Store completion: runs on a store thread; only wakes the suspended connection. */
static void req_done(struct store_req *sreq)
{
    struct http_req *hr = sreq->arg;
    atomic_store(&hr->done, true);
    MHD_resume_connection(hr->conn);
}

/* Query-parameter lookup for api.c. */
static const char *lookup_query(void *arg, const char *name)
{
    return MHD_lookup_connection_value(arg, MHD_GET_ARGUMENT_KIND, name);
}

/* The content type for a static file name. */
static const char *content_type(const char *name)
{
    const char *dot = strrchr(name, '.');
    static const char *const types[][2] = {
        {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"}, {".css", "text/css; charset=utf-8"},
        {".png", "image/png"}, {".svg", "image/svg+xml"}, {".ico", "image/x-icon"},
        {".json", "application/json"}, {".map", "application/json"},
    };
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(dot, types[i][0]))
            return types[i][1];
    return "application/octet-stream";
}

/* GET of the demo page's files: "/" is index.html, "/vendor/phoenix.mjs" is the npm
 * package's build, other names are plain files of the demo directory (no '/', no
 * leading '.'). Returns MHD_NO-like -1 when the path is not a static one. */
static int serve_static(struct http *h, struct MHD_Connection *conn, const char *url)
{
    const struct config *cfg = h->opts.cfg;
    char path[4096];
    const char *name = url + 1;
    if (!strcmp(url, "/"))
        name = "index.html";
    if (!strcmp(url, "/vendor/phoenix.mjs")) {
        snprintf(path, sizeof path, "%s/../node_modules/phoenix/priv/static/phoenix.mjs",
                 cfg->demo_dir);
        name = "phoenix.mjs";
    } else {
        if (!*name || *name == '.' || strlen(name) > 200)
            return -1;
        for (const char *p = name; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-'))
                return -1;
        snprintf(path, sizeof path, "%s/%s", cfg->demo_dir, name);
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    struct MHD_Response *r = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type(name));
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    enum MHD_Result ret = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    return ret;
}

/* Hands a fully read request to the API. */
static enum MHD_Result dispatch(struct http_req *hr, const char *url, const char *method)
{
    struct api_response resp = {0};
    if (hr->too_large) {
        api_error(&resp, 413, "payload_too_large", "the request body is over the size limit");
        hr->state = REQ_RESPONDED;
        return send_response(hr->conn, &resp);
    }
    struct api_request req = {
        .method = method,
        .path = url,
        .body = hr->body.data,
        .body_len = hr->body.len,
        .authorization =
            MHD_lookup_connection_value(hr->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
        .query = lookup_query,
        .query_arg = hr->conn,
    };
    if (hr->http->opts.cfg->demo && (!strcmp(method, "GET") || !strcmp(method, "HEAD")) &&
        strncmp(url, "/api/", 5) && strcmp(url, "/healthz")) {
        int r = serve_static(hr->http, hr->conn, url);
        if (r >= 0) {
            hr->state = REQ_RESPONDED;
            return (enum MHD_Result)r;
        }
    }
    struct store_req *pending = NULL;
    if (atomic_load(&stopping)) {
        api_error(&resp, 503, "shutting_down", "the server is shutting down");
        hr->state = REQ_RESPONDED;
        return send_response(hr->conn, &resp);
    }
    if (!api_handle(hr->http->opts.cfg, hr->http->opts.bus, &req, &resp, &pending)) {
        hr->state = REQ_RESPONDED;
        return send_response(hr->conn, &resp);
    }
    hr->pending = pending;
    hr->state = REQ_WAITING;
    pending->done = req_done;
    pending->arg = hr;
    http_note_suspend();
    MHD_suspend_connection(hr->conn);
    store_submit(hr->http->opts.store, pending);
    return MHD_YES;
}

/* Builds the response of a resumed request. */
static enum MHD_Result finish(struct http_req *hr)
{
    struct api_response resp = {0};
    api_finish(hr->http->opts.bus, hr->pending, &resp);
    store_req_destroy(hr->pending);
    hr->pending = NULL;
    http_note_resumed();
    hr->state = REQ_RESPONDED;
    return send_response(hr->conn, &resp);
}

/* The libmicrohttpd access handler: called once at the headers, once per body chunk,
 * and once more at the end (and again after a resume). */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
    struct http *h = cls;
    struct http_req *hr = *req_cls;
    if (!hr) {
        metrics_http_request();
        hr = xcalloc(1, sizeof *hr);
        hr->http = h;
        hr->conn = conn;
        *req_cls = hr;
        if (!strncmp(url, "/socket/", 8) || !strcmp(url, "/realtime/v1/websocket")) {
            hr->state = REQ_SOCKET;
            return MHD_YES;
        }
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > (unsigned long long)h->opts.cfg->max_body_bytes) {
            struct api_response resp = {0};
            api_error(&resp, 413, "payload_too_large", "the request body is over the size limit");
            hr->state = REQ_RESPONDED;
            return send_response(conn, &resp);
        }
        return MHD_YES;
    }
    if (hr->state == REQ_SOCKET) {
        /* Socket transports get the whole body (long-poll POSTs carry up to 100
         * messages), then are called again after every resume. */
        size_t limit = (size_t)h->opts.cfg->max_frame_bytes * 2 + (size_t)h->opts.cfg->max_body_bytes;
        if (*upload_data_size) {
            if (!hr->too_large && hr->body.len + *upload_data_size > limit) {
                hr->too_large = true;
                sbuf_cleanup(&hr->body);
            }
            if (!hr->too_large)
                sbuf_add(&hr->body, upload_data, *upload_data_size);
            *upload_data_size = 0;
            return MHD_YES;
        }
        if (!h->opts.socket_handler) {
            struct api_response resp = {0};
            api_error(&resp, 404, "not_found", "no such route");
            hr->state = REQ_RESPONDED;
            return send_response(conn, &resp);
        }
        struct http_socket_request sr = {
            .conn = conn,
            .url = url,
            .method = method,
            .body = hr->too_large ? NULL : hr->body.data,
            .body_len = hr->too_large ? 0 : hr->body.len,
            .too_large = hr->too_large,
        };
        return (enum MHD_Result)h->opts.socket_handler(h->opts.socket_arg, &sr, &hr->sock_cls);
    }
    if (hr->state == REQ_RESPONDED) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!hr->too_large &&
            hr->body.len + *upload_data_size > (size_t)h->opts.cfg->max_body_bytes) {
            hr->too_large = true;
            sbuf_cleanup(&hr->body);
        }
        if (!hr->too_large)
            sbuf_add(&hr->body, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (hr->state == REQ_WAITING)
        return atomic_load(&hr->done) ? finish(hr) : MHD_YES;
    return dispatch(hr, url, method);
}

/* Frees a request's state when libmicrohttpd is done with it. */
static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct http_req *hr = *req_cls;
    if (!hr)
        return;
    sbuf_cleanup(&hr->body);
    store_req_destroy(hr->pending);
    if (hr->sock_cls && hr->http->opts.socket_cls_free)
        hr->http->opts.socket_cls_free(hr->http->opts.socket_arg, hr->sock_cls);
    else
        free(hr->sock_cls);
    free(hr);
    *req_cls = NULL;
}

/* Logs libmicrohttpd's own errors. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '"'))
        msg[--n] = '\0';
    for (char *p = msg; *p; p++)
        if (*p == '"')
            *p = '\'';
    log_warn("http", "detail=\"%s\"", msg);
}

/* Parses "host:port" or "[v6]:port" into a socket address. */
static int parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[256];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host)
        return RC_EINVAL;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port < 0 || port > 65535)
        return RC_EINVAL;
    memset(ss, 0, sizeof *ss);
    size_t hl = strlen(host);
    if (hl > 2 && host[0] == '[' && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1)
            return RC_EINVAL;
        *len = sizeof *a;
        return 0;
    }
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    if (!strcmp(host, "localhost"))
        snprintf(host, sizeof host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
        return RC_EINVAL;
    *len = sizeof *a;
    return 0;
}

/* Opens the listening socket for ss; -1 with errno on failure. */
static int listen_on(const struct sockaddr_storage *ss, socklen_t sl)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ss->ss_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)ss, sl) < 0 || listen(fd, 4096) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* The acceptor thread. libmicrohttpd's own pool lets every worker race for the shared
 * listening socket, and one worker often wins a whole burst of connections while the
 * others idle; handing each accepted socket to MHD_add_connection spreads them over the
 * pool (by descriptor number), so keep-alive clients load every HTTP thread. */
static void *acceptor_main(void *arg)
{
    thread_name("rc-accept");
    struct http *h = arg;
    while (!atomic_load(&h->closing)) {
        struct sockaddr_storage peer;
        socklen_t pl = sizeof peer;
        int fd = accept4(h->listen_fd, (struct sockaddr *)&peer, &pl, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (atomic_load(&h->closing))
                break;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                log_warn("accept failed; pausing 100 ms", "error=\"%s\"", strerror(errno));
                struct timespec ts = {0, 100 * 1000000L};
                nanosleep(&ts, NULL);
            }
            continue; /* EINTR, ECONNABORTED, a peer's network error: next one */
        }
        /* On failure libmicrohttpd has closed the socket already. */
        if (MHD_add_connection(h->daemon, fd, (const struct sockaddr *)&peer, pl) != MHD_YES)
            log_warn("connection refused by the HTTP front", "error=\"%s\"", strerror(errno));
    }
    return NULL;
}

/* Stops accepting: the acceptor ends and the listening socket is closed. */
static void stop_accepting(struct http *h)
{
    if (!h->acceptor_running)
        return;
    atomic_store(&h->closing, true);
    shutdown(h->listen_fd, SHUT_RDWR); /* wakes accept4() */
    pthread_join(h->acceptor, NULL);
    h->acceptor_running = false;
    close(h->listen_fd);
    h->listen_fd = -1;
}

int http_start(const struct http_options *opts, struct http **out, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    if (parse_listen(opts->cfg->listen, &ss, &sl)) {
        snprintf(err, errlen, "--listen wants HOST:PORT (e.g. 127.0.0.1:4000), got \"%s\"",
                 opts->cfg->listen);
        return RC_EINVAL;
    }
    int lfd = listen_on(&ss, sl);
    if (lfd < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", opts->cfg->listen, strerror(errno));
        return RC_EIO;
    }
    struct http *h = xcalloc(1, sizeof *h);
    h->opts = *opts;
    h->listen_fd = lfd;
    /* poll(), not epoll: with libmicrohttpd 0.9.75's epoll loop, a pool thread whose
     * connections were all suspended at once sometimes missed their resumes and slept in
     * epoll_wait(-1), leaving every one of those requests unanswered until other traffic
     * woke it (`rcload rest --conns 400`, two at once: 9 of ~45 runs ended with the last
     * 200 requests stuck; 0 of 165 with poll, which is also a little faster, having no
     * epoll_ctl per suspend and resume). The poll set stays small: upgraded sockets
     * leave libmicrohttpd at once and held long-polls are suspended. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC |
                     MHD_USE_NO_LISTEN_SOCKET | MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE |
                     MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    unsigned threads = (unsigned)opts->cfg->http_threads;
    struct MHD_OptionItem ops[12];
    int n = 0;
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)on_mhd_log, h};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, h};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, 120, NULL};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, 65000, NULL};
    if (threads > 1)
        ops[n++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, threads, NULL};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    h->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h, MHD_OPTION_ARRAY, ops,
                                 MHD_OPTION_END);
    if (!h->daemon) {
        snprintf(err, errlen, "cannot start the HTTP front for %s", opts->cfg->listen);
        close(lfd);
        free(h);
        return RC_EIO;
    }
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    if (getsockname(lfd, (struct sockaddr *)&bound, &bl) == 0)
        h->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                    : ((struct sockaddr_in *)&bound)->sin_port);
    if (pthread_create(&h->acceptor, NULL, acceptor_main, h) != 0) {
        snprintf(err, errlen, "cannot start the acceptor thread");
        MHD_stop_daemon(h->daemon);
        close(lfd);
        free(h);
        return RC_EIO;
    }
    h->acceptor_running = true;
    *out = h;
    return 0;
}

uint16_t http_port(const struct http *h)
{
    return h->port;
}

void http_stop(struct http *h)
{
    if (!h)
        return;
    /* New REST requests are refused from here; wait (bounded) for the suspended ones to
     * be answered, since libmicrohttpd cannot stop while any is suspended. */
    atomic_store(&stopping, true);
    stop_accepting(h);
    for (int i = 0; i < 500 && atomic_load(&suspended_requests) > 0; i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&suspended_requests) > 0) {
        log_error("requests still suspended at shutdown; exiting without stopping HTTP",
                  "count=%d", atomic_load(&suspended_requests));
        free(h);
        return;
    }
    MHD_stop_daemon(h->daemon);
    free(h);
}
