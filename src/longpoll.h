/* longpoll.h - the long-poll transport at /socket/longpoll, exactly what phoenix.js's
 * LongPoll speaks (docs/phoenix-protocol.md §6). A session is a conn like a WebSocket
 * one (same channels, limits, broadcasts) that lives on an I/O worker; HTTP requests
 * reach it through the worker's inbox while libmicrohttpd holds the request suspended,
 * so a held poll costs no thread. */
#ifndef RC_LONGPOLL_H
#define RC_LONGPOLL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "rc.h"

struct socket_transport;

/* How long a poll is held without messages before it is answered 204. */
#define LP_WINDOW_MS 10000
/* A session with no poll for this long ends (Phoenix: 1.5 windows). */
#define LP_IDLE_MS 15000
/* Lines of one POST that are processed (phoenix.js sends at most 100). */
#define LP_MAX_LINES 100

/* The transport for the socket front (socket.h): /socket/longpoll. */
extern const struct socket_transport *const lp_transport;

/* True when s has the shape of a session token minted here. */
bool lp_is_session_token(const char *s);

/* Splits a POST body into messages: with ndjson, one per line (split on "\n" or "\r\n",
 * empty lines skipped, at most max_lines), a line starting with '[' is a text frame and
 * any other line the standard base64 of a binary frame; without ndjson the whole body
 * is one text frame. Calls fn for each (binary: data is the decoded bytes). Returns the
 * number of messages, or RC_EPROTO for a line that is not valid base64 (fn has been
 * called for the lines before it). Pure; any thread. */
int lp_parse_body(bool ndjson, const char *body, size_t len, size_t max_lines,
                  void (*fn)(void *arg, bool binary, const uint8_t *data, size_t len),
                  void *arg);

#endif
