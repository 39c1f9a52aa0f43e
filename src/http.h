/* http.h - the HTTP front (libmicrohttpd): REST API, health, and (later) the socket
 * transports. Runs libmicrohttpd's own threads; REST requests that need the database
 * are suspended while the store works and resumed by its completion. */
#ifndef RC_HTTP_H
#define RC_HTTP_H

#include <stdint.h>

#include "rc.h"

struct http;
struct store;
struct config;
struct hub;
struct MHD_Connection;

/* Called for requests whose path starts with "/socket/"; returns an MHD result, as an
 * MHD access handler does (it owns the request from there). NULL: 404. */
typedef int (*http_socket_handler)(void *arg, struct MHD_Connection *conn, const char *url,
                                   const char *method, void **req_cls);

struct http_options {
    const struct config *cfg;
    struct store *store;
    struct hub *hub; /* for REST broadcasts and disconnects */
    http_socket_handler socket_handler;
    void *socket_arg;
    void (*socket_cls_free)(void *sock_cls); /* frees what the handler left in sock_cls */
};

/* Binds cfg->listen and starts serving. Returns 0 and sets *out, or RC_EIO (bind
 * failed; message in err). Main thread. */
int http_start(const struct http_options *opts, struct http **out, char *err,
               size_t errlen) MUSTCHECK;

/* The bound TCP port (useful with port 0). */
uint16_t http_port(const struct http *h);

/* Stops accepting, then stops serving and frees h. Accepts NULL. Main thread. */
void http_stop(struct http *h);

#endif
