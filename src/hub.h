/* hub.h - the node's I/O workers (the worker pool) and the fan-out between them. A
 * broadcast is encoded once into a refcounted struct bcast and posted to every worker;
 * each delivers it to its own subscribers of the topic, so the hot path takes no lock
 * but the inbox's. The hub is the bus's sink on this node (hub_sink). */
#ifndef RC_HUB_H
#define RC_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus.h"
#include "rc.h"

struct config;
struct bcast;
struct hub;
struct inbox_item;
struct worker_env;

/* Creates cfg->workers I/O workers (0: one per core), not yet running, with a shared
 * environment holding cfg, a rate limiter (--rate-limit) and the per-user socket
 * counter. Main thread. */
struct hub *hub_create(const struct config *cfg);
/* The workers' shared environment: set its store, bus and presence before hub_start
 * (the bus may be set later, before any traffic). Main thread. */
struct worker_env *hub_env(struct hub *h);
/* Starts the workers. Main thread. Returns 0 or RC_EIO. */
int hub_start(struct hub *h) MUSTCHECK;
/* Closes every socket with 1001 (going away), stops the worker threads and drops what
 * waits in their inboxes (long-poll requests are answered, so that the HTTP front can
 * stop); store completions that arrive later wait for hub_free. Main thread. */
void hub_shutdown(struct hub *h);
/* Finishes what is left and frees. After hub_shutdown and store_close. Accepts NULL. */
void hub_free(struct hub *h);

/* Posts each broadcast to every worker; consumes one reference of each. Any thread. */
void hub_publish(struct hub *h, struct bcast **list, size_t n);
/* Closes every socket of user_id on this node with 1001. Any thread. */
void hub_disconnect_local(struct hub *h, const char *user_id);
/* hub_publish and hub_disconnect_local as a bus sink. */
struct bus_sink hub_sink(struct hub *h);

/* Workers by index, for transports that route requests to a session's worker. */
int hub_worker_count(struct hub *h);
int hub_pick_worker(struct hub *h); /* the least loaded */
/* Posts it to worker w; false (nothing posted) once the workers have stopped. Any
 * thread. */
bool hub_post_to_worker(struct hub *h, int w, struct inbox_item *it);

#endif
