/* ratelimit.h - per-(user, topic) token buckets that bound how fast a user may push to a
 * topic, and a per-user counter that bounds connections per user. Both are shared by the
 * I/O workers: every function may be called from any thread, each object has one mutex
 * held only for a hash lookup and a little arithmetic. Time is passed in (monotonic
 * milliseconds, as clock_mono_ms() returns) so that tests never sleep. */
#ifndef RC_RATELIMIT_H
#define RC_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ratelimit;
struct user_counter;

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

/* Creates an empty set of per-user counters. The caller owns the result and frees it with
 * user_counter_destroy. Aborts on out-of-memory. */
struct user_counter *user_counter_create(void);

/* Frees uc; accepts NULL. No other thread may still be using uc. */
void user_counter_destroy(struct user_counter *uc);

/* Increments user's count if it is below max (so max <= 0 refuses everyone). user is
 * copied. Returns true if incremented; the caller then owes one user_counter_release.
 * Aborts on out-of-memory. Any thread. */
bool user_counter_acquire(struct user_counter *uc, const char *user, long max);

/* Decrements user's count and removes the entry when it reaches 0, so only users with a
 * count are held. Releasing a user with no count does nothing. Any thread. */
void user_counter_release(struct user_counter *uc, const char *user);

/* user's current count (0 if none). Any thread. */
long user_counter_get(struct user_counter *uc, const char *user);

/* The number of users with a count above 0. Any thread. */
size_t user_counter_size(struct user_counter *uc);

#endif
