/* ws.h - the WebSocket transport: the upgrade at /socket/websocket (a socket front
 * transport, on a libmicrohttpd thread) and the WebSocket session on an I/O worker
 * (wslay's frame parser in, our own refcounted frames out, one writev per loop turn). */
#ifndef RC_WS_H
#define RC_WS_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"

struct worker;
struct conn;
struct socket_transport;

/* The transport for the socket front (socket.h). */
extern const struct socket_transport *const ws_transport;

/* Creates the session for an upgraded socket on worker w (worker thread). Takes
 * ownership of fd and user_id (and of one of the user's socket slots); extra
 * (extra_len bytes, copied) is input that arrived with the handshake. */
void ws_conn_create(struct worker *w, int fd, const uint8_t *extra, size_t extra_len,
                    char *user_id, enum codec_vsn vsn);

/* Closes a session's socket at once, without a close handshake (shutdown deadline). */
void ws_conn_abort(struct conn *c);

#endif
