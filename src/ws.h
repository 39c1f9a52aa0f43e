/* ws.h - the WebSocket transport: the upgrade at /socket/websocket (a socket front
 * transport, on a libmicrohttpd thread) and the WebSocket session on an I/O worker
 * (wslay's frame parser in, our own refcounted frames out, one writev per loop turn). */
#ifndef RC_WS_H
#define RC_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"

struct worker;
struct conn;
struct socket_transport;

/* The transports for the socket front (socket.h): Phoenix's /socket/websocket, and
 * /realtime/v1/websocket for realtime-js (the token in the apikey query argument;
 * realtime-js broadcasts as binary user-broadcast frames on V2). */
extern const struct socket_transport *const ws_transport;
extern const struct socket_transport *const ws_realtime_transport;

/* Who an upgraded socket is: the user (malloc'd), the serializer, the token's exp, and
 * whether it came through the realtime-js endpoint. */
struct ws_identity {
    char *user_id;
    enum codec_vsn vsn;
    int64_t token_exp;
    bool realtime;
};
/* Creates the session for an upgraded socket on worker w (worker thread). Takes
 * ownership of fd and id->user_id (and of one of the user's socket slots); extra
 * (extra_len bytes, copied) is input that arrived with the handshake. */
void ws_conn_create(struct worker *w, int fd, const uint8_t *extra, size_t extra_len,
                    const struct ws_identity *id);

/* Closes a session's socket at once, without a close handshake (shutdown deadline). */
void ws_conn_abort(struct conn *c);

#endif
