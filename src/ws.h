/* ws.h - the WebSocket transport: the authenticated upgrade at /socket/websocket (on a
 * libmicrohttpd thread) and the WebSocket session on an I/O worker (wslay's frame
 * parser in, our own refcounted frames out, one writev per loop turn). */
#ifndef RC_WS_H
#define RC_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"

struct config;
struct hub;
struct worker;
struct conn;
struct MHD_Connection;

struct ws_front {
    const struct config *cfg;
    struct hub *hub;
};

struct http_socket_request;

/* The http_socket_handler for "/socket/…" paths (arg: struct ws_front): the WebSocket
 * upgrade here, long-poll in longpoll.c. */
int ws_socket_handler(void *arg, const struct http_socket_request *req, void **sock_cls);

/* The first four values of the "token" query argument, in order (long-poll appends its
 * session token after the app's own "token"). */
struct ws_tokens {
    const char *v[4];
    int n;
};
void ws_query_tokens(struct MHD_Connection *conn, struct ws_tokens *t);

/* The connect step shared by both transports: checks vsn (403 on a bad or non-string
 * vsn) and origin, finds the token (query "token" or, for WebSocket, the phoenix.js
 * authToken subprotocol; for long-poll, X-Phoenix-AuthToken), verifies it and returns
 * the user id (malloc'd) or NULL (refused; *why says why). */
char *ws_connect_step(const struct config *cfg, struct MHD_Connection *conn, bool longpoll,
                      enum codec_vsn *vsn, const char **why);

/* Frees what ws_socket_handler stored in *sock_cls (http_options.socket_cls_free). */
void ws_socket_cls_free(void *cls);

/* Creates the session for an upgraded socket on worker w (worker thread). Takes
 * ownership of fd and user_id; extra (extra_len bytes, copied) is input that arrived
 * with the handshake. */
void ws_conn_create(struct worker *w, int fd, const uint8_t *extra, size_t extra_len,
                    char *user_id, enum codec_vsn vsn);

/* Closes a session's socket at once, without a close handshake (shutdown deadline). */
void ws_conn_abort(struct conn *c);

/* Verifies a socket token and returns the user id (malloc'd) or NULL. Also used by the
 * long-poll transport. */
char *ws_authenticate(const struct config *cfg, const char *token);

#endif
