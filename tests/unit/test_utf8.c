/* test_utf8.c - unit tests for src/util/utf8.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "util/utf8.h"

/* True when the NUL-terminated s is valid (the NUL itself not included). */
static bool valid(const char *s)
{
    return utf8_valid(s, strlen(s));
}

/* Deterministic xorshift64 so that failures reproduce. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

/* Reference validator: decode by bit pattern, then refuse overlongs, surrogates and
 * values above U+10FFFF by value, the way RFC 3629 section 3 states it. Counts code
 * points into *count. Deliberately unlike the table-driven code under test. */
static bool ref_valid(const uint8_t *p, size_t n, size_t *count)
{
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t i = 0;

    *count = 0;
    while (i < n) {
        size_t len;
        uint32_t cp;

        if ((p[i] & 0x80) == 0) {
            len = 1;
            cp = p[i];
        } else if ((p[i] & 0xE0) == 0xC0) {
            len = 2;
            cp = p[i] & 0x1F;
        } else if ((p[i] & 0xF0) == 0xE0) {
            len = 3;
            cp = p[i] & 0x0F;
        } else if ((p[i] & 0xF8) == 0xF0) {
            len = 4;
            cp = p[i] & 0x07;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (p[i + k] & 0x3F);
        }
        if (cp < min_cp[len] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return false;
        i += len;
        (*count)++;
    }
    return true;
}

/* Encodes code point cp (assumed a scalar value) into out; returns the length. */
static size_t encode_cp(uint32_t cp, uint8_t *out)
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* Empty input is valid and has no code points. */
static void test_empty(void **state)
{
    assert_true(utf8_valid("", 0));
    assert_true(utf8_valid(NULL, 0));
    assert_int_equal(utf8_count("", 0), 0);
    assert_int_equal(utf8_count(NULL, 0), 0);
}

/* All of ASCII, NUL included, is valid. */
static void test_ascii(void **state)
{
    char all[128];

    assert_true(valid("hello, world"));
    for (int i = 0; i < 128; i++)
        all[i] = (char)i;
    /* NUL is a valid code point: n, not the terminator, bounds the input. */
    assert_true(utf8_valid(all, sizeof all));
    assert_int_equal(utf8_count(all, sizeof all), 128);
    assert_true(utf8_valid("a\0b", 3));
    assert_int_equal(utf8_count("a\0b", 3), 3);
}

/* A bad byte is found at every offset of a long ASCII run. */
static void test_long_ascii_with_one_bad_byte(void **state)
{
    char buf[100];

    /* Exercise the word-at-a-time ASCII path: one bad byte at every offset. */
    for (size_t pos = 0; pos < sizeof buf; pos++) {
        memset(buf, 'x', sizeof buf);
        assert_true(utf8_valid(buf, sizeof buf));
        buf[pos] = (char)0x80;
        assert_false(utf8_valid(buf, sizeof buf));
        buf[pos] = (char)0xFF;
        assert_false(utf8_valid(buf, sizeof buf));
        /* A valid 2-byte sequence at the same place is fine. */
        if (pos + 1 < sizeof buf) {
            buf[pos] = (char)0xC3;
            buf[pos + 1] = (char)0xA9;
            assert_true(utf8_valid(buf, sizeof buf));
            assert_int_equal(utf8_count(buf, sizeof buf), sizeof buf - 1);
        }
    }
    /* Only n bytes are read: a bad byte just past n does not matter. */
    memset(buf, 'x', sizeof buf);
    buf[50] = (char)0x80;
    assert_true(utf8_valid(buf, 50));
    assert_false(utf8_valid(buf, 51));
}

/* Two-byte sequences U+0080..U+07FF. */
static void test_two_byte(void **state)
{
    assert_true(valid("\xC2\x80"));         /* U+0080, smallest */
    assert_true(valid("\xDF\xBF"));         /* U+07FF, largest */
    assert_true(valid("caf\xC3\xA9"));      /* café */
    assert_true(valid("\xD0\x9F\xD1\x80")); /* Пр */
    assert_int_equal(utf8_count("caf\xC3\xA9", 5), 4);
}

/* Three-byte sequences, around the surrogate gap too. */
static void test_three_byte(void **state)
{
    assert_true(valid("\xE0\xA0\x80"));             /* U+0800, smallest */
    assert_true(valid("\xEF\xBF\xBF"));             /* U+FFFF */
    assert_true(valid("\xED\x9F\xBF"));             /* U+D7FF, just below the surrogates */
    assert_true(valid("\xEE\x80\x80"));             /* U+E000, just above them */
    assert_true(valid("\xE2\x82\xAC"));             /* € */
    assert_true(valid("\xEF\xBB\xBF"));             /* BOM is just a code point */
    assert_true(valid("\xE6\x97\xA5\xE6\x9C\xAC")); /* 日本 */
    assert_int_equal(utf8_count("\xE6\x97\xA5\xE6\x9C\xAC", 6), 2);
}

/* Four-byte sequences U+10000..U+10FFFF. */
static void test_four_byte(void **state)
{
    assert_true(valid("\xF0\x90\x80\x80")); /* U+10000, smallest */
    assert_true(valid("\xF4\x8F\xBF\xBF")); /* U+10FFFF, largest */
    assert_true(valid("\xF0\x9F\x98\x80")); /* 😀 */
    assert_true(valid("\xF3\xBF\xBF\xBF")); /* U+FFFFF */
    assert_int_equal(utf8_count("\xF0\x9F\x98\x80", 4), 1);
}

/* Overlong encodings are refused (RFC 3629 section 10). */
static void test_overlongs(void **state)
{
    assert_false(valid("\xC0\x80"));         /* NUL in 2 bytes */
    assert_false(valid("\xC0\xAF"));         /* '/' in 2 bytes */
    assert_false(valid("\xC1\xBF"));         /* U+007F in 2 bytes */
    assert_false(valid("\xE0\x80\x80"));     /* NUL in 3 bytes */
    assert_false(valid("\xE0\x80\xAF"));     /* '/' in 3 bytes */
    assert_false(valid("\xE0\x9F\xBF"));     /* U+07FF in 3 bytes */
    assert_false(valid("\xF0\x80\x80\x80")); /* NUL in 4 bytes */
    assert_false(valid("\xF0\x8F\xBF\xBF")); /* U+FFFF in 4 bytes */
    assert_false(valid("\xF8\x80\x80\x80\xAF"));
    assert_false(valid("\xFC\x80\x80\x80\x80\xAF"));
    /* An overlong in the middle of good text still fails. */
    assert_false(valid("abc\xC0\x80xyz"));
}

/* UTF-16 surrogates U+D800..U+DFFF are refused. */
static void test_surrogates(void **state)
{
    assert_false(valid("\xED\xA0\x80")); /* U+D800 */
    assert_false(valid("\xED\xAD\xBF")); /* U+DB7F */
    assert_false(valid("\xED\xAE\x80")); /* U+DB80 */
    assert_false(valid("\xED\xB0\x80")); /* U+DC00 */
    assert_false(valid("\xED\xBF\xBF")); /* U+DFFF */
    /* A surrogate pair encoded as two 3-byte sequences (CESU-8) is not UTF-8. */
    assert_false(valid("\xED\xA0\xBD\xED\xB8\x80"));
}

/* Code points above U+10FFFF and 5/6-byte forms are refused. */
static void test_above_max(void **state)
{
    assert_false(valid("\xF4\x90\x80\x80")); /* U+110000 */
    assert_false(valid("\xF4\xBF\xBF\xBF"));
    assert_false(valid("\xF5\x80\x80\x80"));
    assert_false(valid("\xF7\xBF\xBF\xBF")); /* U+1FFFFF */
    assert_false(valid("\xF8\x88\x80\x80\x80"));
    assert_false(valid("\xFB\xBF\xBF\xBF\xBF"));
    assert_false(valid("\xFC\x84\x80\x80\x80\x80"));
    assert_false(valid("\xFD\xBF\xBF\xBF\xBF\xBF"));
    assert_false(valid("\xFE"));
    assert_false(valid("\xFF"));
}

/* Every truncation of a multi-byte sequence is refused. */
static void test_truncated(void **state)
{
    static const char *const seqs[] = {"\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80",
                                       "\xF4\x8F\xBF\xBF"};
    char buf[16];

    for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
        size_t len = strlen(seqs[i]);
        for (size_t cut = 1; cut < len; cut++) {
            /* At the end of the input... */
            memcpy(buf, "ab", 2);
            memcpy(buf + 2, seqs[i], cut);
            assert_false(utf8_valid(buf, 2 + cut));
            /* ...and followed by ASCII, which is not a continuation byte. */
            buf[2 + cut] = 'z';
            assert_false(utf8_valid(buf, 3 + cut));
        }
        assert_true(utf8_valid(seqs[i], len));
    }
    assert_false(valid("\xE2\x82"));
    assert_false(valid("\xF0\x9F\x98"));
    assert_false(valid("\xC3"));
}

/* Continuation bytes without a lead are refused. */
static void test_stray_continuation(void **state)
{
    assert_false(valid("\x80"));
    assert_false(valid("\xBF"));
    assert_false(valid("a\x80z"));
    assert_false(valid("\xC3\xA9\xA9"));         /* one continuation too many */
    assert_false(valid("\xE2\x82\xAC\x80"));     /* after a 3-byte sequence */
    assert_false(valid("\xF0\x9F\x98\x80\x80")); /* after a 4-byte sequence */
    assert_false(valid("\x80\x80\x80\x80"));
}

/* Code points, not bytes, are counted. */
static void test_count(void **state)
{
    /* h € l l o 😀 */
    static const char mixed[] = "h\xE2\x82\xAC"
                                "llo\xF0\x9F\x98\x80";

    assert_int_equal(utf8_count("abc", 3), 3);
    assert_int_equal(utf8_count(mixed, sizeof mixed - 1), 6);
    assert_int_equal(utf8_count("\xC3\xA9\xC3\xA9", 4), 2);
    assert_int_equal(utf8_count("\xF4\x8F\xBF\xBF\xF0\x90\x80\x80", 8), 2);
}

/* Every 1- and 2-byte input, and every 3-byte one with a non-ASCII lead, against the reference. */
static void test_exhaustive_short(void **state)
{
    uint8_t b[3];
    size_t count;

    /* Every 1- and 2-byte input. */
    for (unsigned x = 0; x < 256; x++) {
        b[0] = (uint8_t)x;
        assert_int_equal(utf8_valid((char *)b, 1), ref_valid(b, 1, &count));
        for (unsigned y = 0; y < 256; y++) {
            b[1] = (uint8_t)y;
            bool expect = ref_valid(b, 2, &count);
            if (utf8_valid((char *)b, 2) != expect)
                fail_msg("%02X %02X: expected %d", x, y, expect);
            if (expect)
                assert_int_equal(utf8_count((char *)b, 2), count);
        }
    }
    /* Every 3-byte input that starts with a non-ASCII byte (an ASCII lead just reduces
     * to the 2-byte case). */
    for (unsigned x = 0x80; x < 256; x++) {
        b[0] = (uint8_t)x;
        for (unsigned y = 0; y < 256; y++) {
            b[1] = (uint8_t)y;
            for (unsigned z = 0; z < 256; z++) {
                b[2] = (uint8_t)z;
                bool expect = ref_valid(b, 3, &count);
                if (utf8_valid((char *)b, 3) != expect)
                    fail_msg("%02X %02X %02X: expected %d", x, y, z, expect);
            }
        }
    }
}

/* Every 4-byte lead and second byte, with edge third and fourth bytes, against the reference. */
static void test_four_byte_leads(void **state)
{
    /* Bytes around every boundary that matters. */
    static const uint8_t edge[] = {0x00, 0x41, 0x7F, 0x80, 0x81, 0x8F, 0x90, 0x9F, 0xA0,
                                   0xBF, 0xC0, 0xC2, 0xDF, 0xE0, 0xED, 0xF0, 0xF4, 0xFF};
    uint8_t b[4];
    size_t count;
    size_t accepted = 0;

    for (unsigned x = 0xF0; x < 256; x++) {
        b[0] = (uint8_t)x;
        for (unsigned y = 0; y < 256; y++) {
            b[1] = (uint8_t)y;
            for (size_t z = 0; z < sizeof edge; z++) {
                b[2] = edge[z];
                for (size_t w = 0; w < sizeof edge; w++) {
                    b[3] = edge[w];
                    bool expect = ref_valid(b, 4, &count);
                    if (utf8_valid((char *)b, 4) != expect)
                        fail_msg("%02X %02X %02X %02X: expected %d", x, y, b[2], b[3], expect);
                    accepted += expect;
                }
            }
        }
    }
    /* Leads F0..F4 take 48/64/64/64/16 second bytes; 7 of the edges are continuations. */
    assert_int_equal(accepted, (48 + 64 * 3 + 16) * 7 * 7);
}

/* Random valid strings, then one corrupted byte, against the reference. */
static void test_random_strings(void **state)
{
    uint64_t seed = 0xC0FFEE;
    uint8_t buf[256];

    for (int round = 0; round < 20000; round++) {
        size_t n = 0;
        size_t cps = 0;
        size_t count;

        /* Build a valid string from random scalar values, weighted to all four lengths. */
        while (n + 4 <= sizeof buf && rng_next(&seed) % 40 != 0) {
            static const uint32_t span[4] = {0x80, 0x800, 0x10000, 0x110000};
            uint32_t cp = (uint32_t)(rng_next(&seed) % span[rng_next(&seed) % 4]);
            if (cp >= 0xD800 && cp <= 0xDFFF)
                continue;
            n += encode_cp(cp, buf + n);
            cps++;
        }
        assert_true(utf8_valid((char *)buf, n));
        assert_int_equal(utf8_count((char *)buf, n), cps);

        /* Corrupt one byte and agree with the reference. */
        if (n) {
            size_t pos = rng_next(&seed) % n;
            buf[pos] = (uint8_t)rng_next(&seed);
            bool expect = ref_valid(buf, n, &count);
            assert_int_equal(utf8_valid((char *)buf, n), expect);
            if (expect)
                assert_int_equal(utf8_count((char *)buf, n), count);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_ascii),
        cmocka_unit_test(test_long_ascii_with_one_bad_byte),
        cmocka_unit_test(test_two_byte),
        cmocka_unit_test(test_three_byte),
        cmocka_unit_test(test_four_byte),
        cmocka_unit_test(test_overlongs),
        cmocka_unit_test(test_surrogates),
        cmocka_unit_test(test_above_max),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_stray_continuation),
        cmocka_unit_test(test_count),
        cmocka_unit_test(test_exhaustive_short),
        cmocka_unit_test(test_four_byte_leads),
        cmocka_unit_test(test_random_strings),
    };

    return cmocka_run_group_tests_name("utf8", tests, NULL, NULL);
}
