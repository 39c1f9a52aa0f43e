/* utf8.c - UTF-8 validation (RFC 3629, Unicode table 3-7) and code point counting. */
#include <stdint.h>
#include <string.h>

#include "utf8.h"

#define ASCII_MASK 0x8080808080808080ULL

/* True when the 8 bytes at p are all ASCII. */
static bool ascii8(const unsigned char *p)
{
    uint64_t w;

    memcpy(&w, p, sizeof w);
    return (w & ASCII_MASK) == 0;
}

bool utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    while (i < n) {
        unsigned char c = p[i];
        unsigned char lo = 0x80;
        unsigned char hi = 0xBF;
        size_t need;

        if (c < 0x80) {
            /* Peer text is mostly ASCII: skip it a word at a time. */
            i++;
            while (n - i >= 8 && ascii8(p + i))
                i += 8;
            continue;
        }
        /* The second byte's range is what excludes overlongs (E0, F0), surrogates (ED)
         * and code points above U+10FFFF (F4); C0, C1 and F5..FF never start a sequence. */
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c == 0xE0) {
            need = 2;
            lo = 0xA0;
        } else if (c == 0xED) {
            need = 2;
            hi = 0x9F;
        } else if (c >= 0xE1 && c <= 0xEF) {
            need = 2;
        } else if (c == 0xF0) {
            need = 3;
            lo = 0x90;
        } else if (c >= 0xF1 && c <= 0xF3) {
            need = 3;
        } else if (c == 0xF4) {
            need = 3;
            hi = 0x8F;
        } else {
            return false;
        }
        if (n - i - 1 < need)
            return false;
        if (p[i + 1] < lo || p[i + 1] > hi)
            return false;
        for (size_t k = 2; k <= need; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
        }
        i += need + 1;
    }
    return true;
}

size_t utf8_count(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t count = 0;

    /* Every code point has exactly one byte that is not a continuation byte (10xxxxxx).
     * On invalid input this still returns a bounded, harmless number. */
    for (size_t i = 0; i < n; i++)
        count += (p[i] & 0xC0) != 0x80;
    return count;
}
