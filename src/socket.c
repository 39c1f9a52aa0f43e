/* socket.c - the socket front: dispatch, connect step, token and origin checks. */
#include <microhttpd.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "conn.h"
#include "http.h"
#include "jwt.h"
#include "socket.h"
#include "user_counter.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/xmalloc.h"
#include "validate.h"

int socket_plain(struct MHD_Connection *conn, unsigned status, const char *text)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(text ? strlen(text) : 0,
                                                             (void *)(text ? text : ""),
                                                             MHD_RESPMEM_MUST_COPY);
    if (text)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

int socket_front_handler(void *arg, const struct http_socket_request *req, void **sock_cls)
{
    struct socket_front *f = arg;
    for (size_t i = 0; i < f->n_transports; i++)
        if (!strcmp(req->url, f->transports[i]->path))
            return f->transports[i]->request(f, req, sock_cls);
    return socket_plain(req->conn, 404, NULL);
}

void socket_front_cls_free(void *arg, void *sock_cls)
{
    struct socket_cls *s = sock_cls;
    if (s)
        s->transport->cls_free(arg, s);
}

char *socket_authenticate(const struct config *cfg, const char *token, int64_t *exp)
{
    return conn_token_user(cfg->jwt_secret, token, clock_unix(), exp);
}

/* Whether one --check-origin entry (p, n bytes) allows host h (hl bytes). */
static bool entry_allows(const char *p, size_t n, const char *h, size_t hl)
{
    const char *e = p;
    const char *sep = NULL;
    for (size_t i = 0; i + 2 < n; i++)
        if (!strncmp(p + i, "://", 3)) {
            sep = p + i + 3;
            break;
        }
    if (!sep && n > 2 && p[0] == '/' && p[1] == '/')
        sep = p + 2;
    if (sep)
        e = sep;
    size_t el = strcspn(e, ":/, ");
    if ((size_t)(e - p) + el > n)
        el = n - (size_t)(e - p);
    if (el > 2 && e[0] == '*' && e[1] == '.') {
        const char *suffix = e + 2;
        size_t sl = el - 2;
        return (hl == sl && !strncasecmp(h, suffix, sl)) ||
               (hl > sl && h[hl - sl - 1] == '.' && !strncasecmp(h + hl - sl, suffix, sl));
    }
    return el == hl && !strncasecmp(e, h, hl);
}

bool socket_origin_allowed(const struct config *cfg, const char *origin, const char *host)
{
    if (!origin)
        return true;
    const char *h = strstr(origin, "://");
    h = h ? h + 3 : origin;
    size_t hl = strcspn(h, ":/");
    const char *list = cfg->check_origin;
    if (!list || !*list) {
        if (strcmp(cfg->env, "prod"))
            return true;
        return host && strcspn(host, ":") == hl && !strncasecmp(host, h, hl);
    }
    const char *p = list;
    while (*p) {
        while (*p == ',' || *p == ' ')
            p++;
        size_t n = strcspn(p, ", ");
        if (!n)
            break;
        if (entry_allows(p, n, h, hl))
            return true;
        p += n;
    }
    return false;
}

/* MHD iterator for socket_query_tokens. */
static enum MHD_Result collect_tokens(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    struct socket_tokens *t = cls;
    if (!strcmp(key, "token") && value && t->n < 4)
        t->v[t->n++] = value;
    return MHD_YES;
}

void socket_query_tokens(struct MHD_Connection *conn, struct socket_tokens *t)
{
    t->n = 0;
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, collect_tokens, t);
}

/* Counts query arguments whose key starts with "vsn[" (a non-string vsn). */
static enum MHD_Result find_vsn_array(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    if (!strncmp(key, "vsn[", 4))
        (*(int *)cls)++;
    return MHD_YES;
}

char *socket_connect_step(const struct config *cfg, struct MHD_Connection *conn,
                          const char *token, bool (*is_own)(const char *value),
                          enum codec_vsn *vsn, int64_t *exp, const char **why)
{
    int vsn_arrays = 0;
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, find_vsn_array, &vsn_arrays);
    const char *vsn_s = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "vsn");
    if (vsn_arrays || codec_parse_vsn(vsn_s, vsn)) {
        *why = "bad_vsn";
        return NULL;
    }
    if (!socket_origin_allowed(cfg, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin"),
                               MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Host"))) {
        *why = "origin";
        return NULL;
    }
    if (!token) {
        struct socket_tokens t;
        socket_query_tokens(conn, &t);
        if (t.n && !(is_own && is_own(t.v[0])))
            token = t.v[0];
    }
    char *user = socket_authenticate(cfg, token, exp);
    if (!user)
        *why = token ? "bad_token" : "no_token";
    return user;
}

bool socket_acquire_user(struct socket_front *f, const char *user, const char *transport)
{
    if (user_counter_acquire(f->uc, user, f->cfg->max_conns_per_user))
        return true;
    log_info("connect refused", "transport=%s reason=too_many_sockets user=%s", transport,
             log_v(user));
    return false;
}
