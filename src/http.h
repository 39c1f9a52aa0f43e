/* http.h - the HTTP front (libmicrohttpd): REST API, health, metrics, and the requests
 * of the socket transports (handed to a socket handler: socket.h). Runs libmicrohttpd's own threads; REST requests that need the database
 * are suspended while the store works and resumed by its completion. */
#ifndef RC_HTTP_H
#define RC_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rc.h"

struct http;
struct store;
struct config;
struct bus;
struct MHD_Connection;

/* A request to a socket transport, with its whole body. */
struct http_socket_request {
    struct MHD_Connection *conn;
    const char *url;
    const char *method;
    const char *body; /* NULL when empty or too large */
    size_t body_len;
    bool too_large;   /* the body was over the limit and was dropped */
};

/* Called for requests whose path starts with "/socket/" (or is "/realtime/v1/websocket")
 * once the body is in, and again after each MHD_resume_connection; *sock_cls is the handler's own state (NULL at first).
 * Returns an MHD result, as an MHD access handler does. NULL handler: 404. */
typedef int (*http_socket_handler)(void *arg, const struct http_socket_request *req,
                                   void **sock_cls);

struct http_options {
    const struct config *cfg;
    struct store *store;
    struct bus *bus; /* for REST broadcasts and disconnects */
    http_socket_handler socket_handler;
    void *socket_arg;
    /* frees what the handler left in sock_cls (arg: socket_arg) */
    void (*socket_cls_free)(void *arg, void *sock_cls);
};

/* Binds cfg->listen and starts serving. Returns 0 and sets *out, or RC_EIO (bind
 * failed; message in err). Main thread. */
int http_start(const struct http_options *opts, struct http **out, char *err,
               size_t errlen) MUSTCHECK;

/* The bound TCP port (useful with port 0). */
uint16_t http_port(const struct http *h);

/* Stops accepting, refuses new REST requests (503), waits up to 5 s for suspended
 * requests to be answered, then stops serving and frees h. Accepts NULL. Main thread. */
void http_stop(struct http *h);

/* Socket transports that suspend a request call these around it (any thread). */
void http_note_suspend(void);
void http_note_resumed(void);
/* True once http_stop has begun. */
bool http_stopping(void);

#endif
