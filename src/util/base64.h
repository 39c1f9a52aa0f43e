/* base64.h - base64 for tokens: URL-safe encoding without padding, tolerant decoding. */
#ifndef RC_BASE64_H
#define RC_BASE64_H

#include <stddef.h>
#include <stdint.h>

#include "../rc.h"

/* Length of the unpadded URL-safe encoding of n bytes (without the NUL). */
size_t b64url_encoded_len(size_t n);

/* Encodes n bytes as URL-safe base64 without padding into out, which must hold
 * b64url_encoded_len(n) + 1 bytes; NUL-terminates. Returns the length written. */
size_t b64url_encode(const uint8_t *in, size_t n, char *out);

/* Encodes n bytes as standard base64 with padding (RFC 4648 section 4) into out, which
 * must hold 4 * ((n + 2) / 3) + 1 bytes; NUL-terminates. Returns the length written. */
size_t b64std_encode(const uint8_t *in, size_t n, char *out);

/* Decodes n characters of base64 into out (which must hold at least 3 * n / 4 + 3
 * bytes). Accepts both the standard (+/) and the URL-safe (-_) alphabet, with or
 * without '=' padding. Sets *out_len. Returns 0, or RC_EINVAL for a character outside
 * both alphabets, misplaced padding, or an impossible length (n % 4 == 1). Non-zero
 * unused bits in the last character are ignored, so several inputs can decode to the same
 * bytes: callers that compare encodings (jwt.c) must check canonical form themselves.
 * On error the contents of out are unspecified. */
int b64_decode(const char *in, size_t n, uint8_t *out, size_t *out_len) MUSTCHECK;

#endif
