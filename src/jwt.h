/* jwt.h - JSON Web Tokens, HS256 only (RFC 7519 / RFC 7515), for socket and API auth.
 * Pure functions; any thread. */
#ifndef RC_JWT_H
#define RC_JWT_H

#include <stddef.h>
#include <stdint.h>

#include "rc.h"

/* Longest token jwt_verify looks at; longer input is refused without parsing. */
#define JWT_MAX_LEN 4096
/* Longest user id (the `sub` claim) accepted, in bytes. */
#define JWT_MAX_SUB 255

/* Signs {"sub":sub,"iat":now,"exp":exp} with HMAC-SHA256 under key.
 * *out receives a malloc'd NUL-terminated token (caller frees).
 * Returns 0, RC_EINVAL (key empty, sub empty, longer than JWT_MAX_SUB or not valid
 * UTF-8), RC_ENOMEM. */
int jwt_sign(const uint8_t *key, size_t key_len, const char *sub, int64_t now, int64_t exp,
             char **out) MUSTCHECK;

/* Verifies token (len bytes, need not be NUL-terminated) at time `now` (Unix seconds).
 * The header must be {"alg":"HS256"} (typ optional, "JWT" if present); any other alg,
 * "none" included, is refused. The signature is compared in constant time. `exp` is
 * required and must be > now; `nbf`, if present, must be <= now; `sub` is required,
 * a non-empty string of at most JWT_MAX_SUB bytes. On success copies sub into
 * sub_out (sub_cap >= JWT_MAX_SUB + 1) and exp into *exp_out (may be NULL).
 * Only unpadded base64url segments are accepted, the signature must be canonical
 * (its unused low bits zero), and a header carrying "crit" or duplicate names is refused.
 * There is no clock leeway: pass a skewed `now` to allow some. On failure sub_out is "".
 * Returns 0, RC_EAUTH (malformed, bad signature, wrong alg, missing claims, empty key),
 * RC_EEXPIRED (valid signature but expired), or RC_EINVAL (sub_out NULL or sub_cap too
 * small: a caller bug). */
int jwt_verify(const uint8_t *key, size_t key_len, const char *token, size_t len, int64_t now,
               char *sub_out, size_t sub_cap, int64_t *exp_out) MUSTCHECK;

#endif
