/* xmalloc.h - allocation for small fixed structs: aborts on out-of-memory.
 * Anything whose size a peer controls uses plain malloc and handles NULL. */
#ifndef RC_XMALLOC_H
#define RC_XMALLOC_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

void xoom(size_t n) __attribute__((noreturn));

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        xoom(n);
    return p;
}

static inline void *xcalloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (!p)
        xoom(nmemb * size);
    return p;
}

static inline void *xrealloc(void *ptr, size_t n)
{
    void *p = realloc(ptr, n ? n : 1);
    if (!p)
        xoom(n);
    return p;
}

static inline char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = xmalloc(n);
    memcpy(p, s, n);
    return p;
}

static inline char *xstrndup(const char *s, size_t len)
{
    char *p = xmalloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

/* Makes room for one more element in a growable array ptr of n used, cap allocated. */
#define ARRAY_GROW(ptr, n, cap)                                                                \
    do {                                                                                       \
        if ((n) == (cap)) {                                                                    \
            (cap) = (cap) ? (cap) * 2 : 16;                                                    \
            (ptr) = xrealloc((ptr), (cap) * sizeof *(ptr));                                    \
        }                                                                                      \
    } while (0)

#endif
