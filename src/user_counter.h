/* user_counter.h - how many sockets each user has open, to bound connections per user
 * (--max-conns-per-user). Shared by the HTTP front and the I/O workers: every function
 * may be called from any thread. */
#ifndef RC_USER_COUNTER_H
#define RC_USER_COUNTER_H

#include <stdbool.h>
#include <stddef.h>

struct user_counter;

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
 * count are held. Releasing a user with no count does nothing; uc may be NULL (nothing
 * counted). Any thread. */
void user_counter_release(struct user_counter *uc, const char *user);

/* user's current count (0 if none). Any thread. */
long user_counter_get(struct user_counter *uc, const char *user);

/* The number of users with a count above 0. Any thread. */
size_t user_counter_size(struct user_counter *uc);

#endif
