/* utf8.h - UTF-8 checks for peer input. Pure functions; any thread. */
#ifndef RC_UTF8_H
#define RC_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* True when s[0..n) is well-formed UTF-8 (RFC 3629: no overlongs, no surrogates,
 * nothing above U+10FFFF). */
bool utf8_valid(const char *s, size_t n);

/* Number of code points in s[0..n), which must be valid UTF-8. */
size_t utf8_count(const char *s, size_t n);

#endif
