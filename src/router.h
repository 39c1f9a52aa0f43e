/* router.h - what Phoenix's socket and channel server do between the wire and a channel
 * type (docs/phoenix-protocol.md §4), for any transport: heartbeat, join (duplicate
 * joins, the channel limit), leave, stale join_refs, unmatched topics, rate limits, and
 * the end of a session. Worker thread only. */
#ifndef RC_ROUTER_H
#define RC_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "rc.h"

struct conn;
struct channel_type;

/* Adds a channel type to the routing table (built-in types are already there). Main
 * thread, before any worker starts. Returns 0 or RC_ELIMIT. */
int router_add_type(const struct channel_type *t);

/* The channel type serving topic, or NULL. */
const struct channel_type *router_match(const char *topic, size_t len);

/* Handles one decoded client message. */
void router_handle(struct conn *c, const struct phx_in *m);

/* The close code of a session whose token expired (4001, reason "token_expired"). */
#define ROUTER_CLOSE_TOKEN_EXPIRED 4001

/* Closes c when its token has expired (c->token_exp <= now_unix) without a fresh one:
 * realtime-js channels get a system error first. Transports call it from their tick. */
void router_check_token(struct conn *c, int64_t now_unix);

/* The session is over: no more output, every channel terminates (running their
 * terminate callbacks). Transports call it when they decide to close or see the peer
 * go, before conn_release; idempotent. */
void router_conn_closed(struct conn *c);

#endif
