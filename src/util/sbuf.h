/* sbuf.h - growable byte buffer (string builder). Single owner, not thread-safe.
 * Growth uses xrealloc: use it only for sizes bounded by configuration. */
#ifndef RC_SBUF_H
#define RC_SBUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

struct sbuf {
    char *data; /* always NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
};

#define SBUF_INIT {NULL, 0, 0}

/* Makes room for n more bytes. */
void sbuf_reserve(struct sbuf *b, size_t n);
/* Appends n bytes. */
void sbuf_add(struct sbuf *b, const void *p, size_t n);
/* Appends a NUL-terminated string. */
void sbuf_adds(struct sbuf *b, const char *s);
/* Appends one byte. */
void sbuf_addc(struct sbuf *b, char c);
/* Appends printf-formatted text. */
void sbuf_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s (n bytes) as a JSON string literal, quotes included. Control characters
 * are escaped; invalid UTF-8 bytes become U+FFFD, so the output is always valid. */
void sbuf_add_json_str(struct sbuf *b, const char *s, size_t n);
/* Empties the buffer, keeping its memory. */
void sbuf_reset(struct sbuf *b);
/* Frees the memory. */
void sbuf_cleanup(struct sbuf *b);
/* Hands the data to the caller (who frees it) and empties the buffer. */
char *sbuf_steal(struct sbuf *b, size_t *len);

#endif
