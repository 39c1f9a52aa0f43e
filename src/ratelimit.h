/* ratelimit.h - per-(user, topic) token buckets that bound how fast a user may push to a
 * topic. Shared by the I/O workers: every function may be called from any thread; one
 * mutex is held only for a hash lookup and a little arithmetic. Time is passed in (monotonic
 * milliseconds, as clock_mono_ms() returns) so that tests never sleep. */
#ifndef RC_RATELIMIT_H
#define RC_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ratelimit;

/* Creates a limiter whose buckets refill at rate tokens per second (finite, > 0) and hold
 * at most burst tokens (finite, >= 1). The caller owns the result and frees it with
 * ratelimit_destroy. Returns NULL if rate or burst is out of range; aborts on
 * out-of-memory. */
struct ratelimit *ratelimit_create(double rate, double burst);

/* Frees rl and all its buckets; accepts NULL. No other thread may still be using rl. */
void ratelimit_destroy(struct ratelimit *rl);

/* Takes one token from the bucket of (user, topic) at time now_ms. A new bucket starts
 * full; a bucket refills by rate * elapsed seconds up to burst, and a clock that goes
 * backwards adds nothing. user and topic are NUL-terminated strings the caller keeps
 * (they are copied into the key). Returns true if the token was taken. When refused,
 * *retry_after_s (if retry_after_s is not NULL) gets the whole seconds until a token is
 * available, at least 1; a key too long to allocate is refused the same way. Any
 * thread. */
bool ratelimit_take(struct ratelimit *rl, const char *user, const char *topic, int64_t now_ms,
                    int *retry_after_s);

/* Drops the buckets that have refilled to burst by now_ms (idle long enough that
 * forgetting them changes nothing), so memory stays bounded by the active (user, topic)
 * pairs. Holds the lock for one pass over all buckets: call it periodically, not per
 * message. Returns how many buckets were dropped. Any thread. */
size_t ratelimit_sweep(struct ratelimit *rl, int64_t now_ms);

/* The number of buckets currently held. Any thread. */
size_t ratelimit_size(struct ratelimit *rl);

#endif
