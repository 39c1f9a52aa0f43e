/* socket.h - the socket front: what every socket transport does on the HTTP side before
 * it has a session. It serves "/socket/…" (http.h's socket handler): each request goes to
 * the transport registered for its path (struct socket_transport: WebSocket in ws.c,
 * long-poll in longpoll.c), and the transports share its connect step — the vsn check,
 * the origin check (--check-origin), and the token (JWT) check that yields the user —
 * and the per-user socket limit. Runs on libmicrohttpd's threads. */
#ifndef RC_SOCKET_H
#define RC_SOCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"

struct config;
struct hub;
struct user_counter;
struct socket_front;
struct MHD_Connection;
struct http_socket_request;

/* A socket transport's HTTP side. */
struct socket_transport {
    const char *path; /* e.g. "/socket/websocket" */
    /* Handles a request to path, as http_socket_handler does; what it leaves in *cls
     * must begin with a struct socket_cls naming this transport. */
    int (*request)(struct socket_front *f, const struct http_socket_request *req, void **cls);
    /* Frees what request left in cls. */
    void (*cls_free)(struct socket_front *f, void *cls);
};

/* First member of a transport's per-request state. */
struct socket_cls {
    const struct socket_transport *transport;
};

struct socket_front {
    const struct config *cfg;
    struct hub *hub;         /* the workers that sessions live on */
    struct user_counter *uc; /* open sockets per user (--max-conns-per-user) */
    const struct socket_transport *const *transports;
    size_t n_transports;
};

/* The http_socket_handler for "/socket/…" paths (arg: struct socket_front): dispatches
 * to the transport of the path, 404 for any other path. */
int socket_front_handler(void *arg, const struct http_socket_request *req, void **sock_cls);
/* http_options.socket_cls_free: frees a request's transport state (arg: the front). */
void socket_front_cls_free(void *arg, void *sock_cls);

/* Verifies a socket token (HS256 JWT signed with cfg->jwt_secret, unexpired at the
 * current time, with a valid user id as sub) and returns the user id (malloc'd), with
 * the token's exp in *exp (may be NULL), or NULL. Any thread. */
char *socket_authenticate(const struct config *cfg, const char *token, int64_t *exp);

/* Whether a socket request with this Origin header (NULL: none, a non-browser client,
 * allowed) and Host header may connect: --check-origin is a comma-separated list of
 * hosts or scheme://host[:port] entries ("*.example.com" matches the domain and its
 * subdomains, case-insensitively); an empty list allows any origin in dev, and in prod
 * only one whose host equals the Host header's host. Pure; any thread. */
bool socket_origin_allowed(const struct config *cfg, const char *origin, const char *host);

/* The first four values of the "token" query argument, in order (long-poll appends its
 * session token after the app's own "token"). */
struct socket_tokens {
    const char *v[4];
    int n;
};
void socket_query_tokens(struct MHD_Connection *conn, struct socket_tokens *t);

/* The connect step shared by the transports: checks vsn (refused for a bad or
 * non-string vsn) and the origin, then the token: token when the transport found one in
 * its own place (the WebSocket subprotocol, a long-poll header), else the first "token"
 * query value unless is_own(value) says the transport minted it. Returns the user id
 * (malloc'd) with the token's exp in *exp, or NULL (refused; *why is "bad_vsn",
 * "origin", "no_token" or "bad_token"). */
char *socket_connect_step(const struct config *cfg, struct MHD_Connection *conn,
                          const char *token, bool (*is_own)(const char *value),
                          enum codec_vsn *vsn, int64_t *exp, const char **why);

/* Takes one of user's socket slots (false: the user has --max-conns-per-user open; the
 * refusal is logged). Every true is matched by one user_counter_release. */
bool socket_acquire_user(struct socket_front *f, const char *user, const char *transport);

/* Queues a response with an empty body, or a short text/plain one. */
int socket_plain(struct MHD_Connection *conn, unsigned status, const char *text);

#endif
