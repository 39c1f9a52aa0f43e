#include <stdio.h>
#include <string.h>

#include "sbuf.h"
#include "utf8.h"
#include "xmalloc.h"

void sbuf_reserve(struct sbuf *b, size_t n)
{
    if (b->len + n + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + n + 1)
        cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->data[b->len] = '\0'; /* a first allocation holds no terminator yet */
    b->cap = cap;
}

void sbuf_add(struct sbuf *b, const void *p, size_t n)
{
    sbuf_reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void sbuf_adds(struct sbuf *b, const char *s)
{
    sbuf_add(b, s, strlen(s));
}

void sbuf_addc(struct sbuf *b, char c)
{
    sbuf_reserve(b, 1);
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
}

void sbuf_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof tmp) {
        sbuf_add(b, tmp, (size_t)n);
        return;
    }
    sbuf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Length of the UTF-8 sequence a lead byte announces (1 for invalid leads). */
static size_t seq_len(unsigned char c)
{
    return c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
}

/* Appends s as a JSON string, replacing each byte of an invalid UTF-8 sequence with
 * U+FFFD so that the output is always valid UTF-8. */
static void add_json_str_lossy(struct sbuf *b, const char *s, size_t n)
{
    struct sbuf clean = SBUF_INIT;
    for (size_t i = 0; i < n;) {
        size_t k = seq_len((unsigned char)s[i]);
        if (k <= n - i && utf8_valid(s + i, k)) {
            sbuf_add(&clean, s + i, k);
            i += k;
        } else {
            sbuf_add(&clean, "\xef\xbf\xbd", 3);
            i++;
        }
    }
    sbuf_add_json_str(b, clean.data, clean.len);
    sbuf_cleanup(&clean);
}

void sbuf_add_json_str(struct sbuf *b, const char *s, size_t n)
{
    if (!utf8_valid(s, n)) {
        add_json_str_lossy(b, s, n);
        return;
    }
    static const char hex[] = "0123456789abcdef";
    sbuf_reserve(b, n + 2);
    sbuf_addc(b, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        sbuf_add(b, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"': sbuf_add(b, "\\\"", 2); break;
        case '\\': sbuf_add(b, "\\\\", 2); break;
        case '\n': sbuf_add(b, "\\n", 2); break;
        case '\r': sbuf_add(b, "\\r", 2); break;
        case '\t': sbuf_add(b, "\\t", 2); break;
        default: {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            sbuf_add(b, esc, 6);
        }
        }
    }
    sbuf_add(b, s + run, n - run);
    sbuf_addc(b, '"');
}

void sbuf_reset(struct sbuf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void sbuf_cleanup(struct sbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *sbuf_steal(struct sbuf *b, size_t *len)
{
    if (!b->data)
        sbuf_reserve(b, 0);
    char *p = b->data;
    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}
