/* test_sbuf.c - unit tests for src/util/sbuf.c: appends, printf, reset/cleanup/steal and
 * JSON string literals, through the public API. JSON output is parsed back with jansson,
 * which accepts only valid UTF-8 and no raw control characters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "util/sbuf.h"

/* U+FFFD REPLACEMENT CHARACTER in UTF-8. */
#define FFFD "\xef\xbf\xbd"

/* Checks that b holds exactly want (n bytes) followed by a NUL. */
static void assert_sbuf(const struct sbuf *b, const void *want, size_t n)
{
    assert_int_equal(b->len, n);
    assert_non_null(b->data);
    assert_true(b->cap > n);
    if (n)
        assert_memory_equal(b->data, want, n);
    assert_int_equal(b->data[n], '\0');
}

/* malloc'd n printable bytes of a position-dependent pattern, NUL-terminated. */
static char *pattern(size_t n)
{
    char *p = malloc(n + 1);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)('!' + (i * 7 + i / 94) % 94);
    p[n] = '\0';
    return p;
}

/* Next value of a small deterministic generator, so that failures reproduce. */
static uint32_t next_rand(uint64_t *s)
{
    *s = *s * 6364136223846793005u + 1442695040888963407u;
    return (uint32_t)(*s >> 33);
}

/* Checks that json (n bytes) is one JSON string that decodes to want (want_len bytes). */
static void assert_json_decodes(const char *json, size_t n, const char *want, size_t want_len)
{
    json_error_t err;
    json_t *j = json_loadb(json, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!j)
        fail_msg("not JSON (%s): %.*s", err.text, (int)n, json);
    assert_true(json_is_string(j));
    assert_int_equal(json_string_length(j), want_len);
    if (want_len)
        assert_memory_equal(json_string_value(j), want, want_len);
    json_decref(j);
}

/* Checks that s (n bytes) is written as exactly want_json, which decodes to want (wlen
 * bytes): s itself when it is valid UTF-8, s with U+FFFD for its bad bytes when not. */
static void check_json(const char *s, size_t n, const char *want_json, const char *want,
                       size_t wlen)
{
    struct sbuf b = SBUF_INIT;
    sbuf_add_json_str(&b, s, n);
    assert_sbuf(&b, want_json, strlen(want_json));
    assert_json_decodes(b.data, b.len, want, wlen);
    sbuf_cleanup(&b);
}

/* check_json for valid UTF-8 input, which must decode to itself. */
static void check_json_same(const char *s, size_t n, const char *want_json)
{
    check_json(s, n, want_json, s, n);
}

/* Appending bytes, NULs included, strings and single characters. */
static void add_adds_addc(void **state)
{
    struct sbuf b = SBUF_INIT;
    assert_null(b.data);
    assert_int_equal(b.len, 0);

    sbuf_add(&b, "ab\0cd", 5);
    assert_sbuf(&b, "ab\0cd", 5);
    sbuf_adds(&b, "efg");
    assert_sbuf(&b, "ab\0cdefg", 8);
    sbuf_addc(&b, 'h');
    sbuf_addc(&b, '\0');
    sbuf_addc(&b, 'i');
    assert_sbuf(&b, "ab\0cdefgh\0i", 11);
    sbuf_add(&b, "zzz", 0);
    sbuf_adds(&b, "");
    assert_sbuf(&b, "ab\0cdefgh\0i", 11);
    sbuf_cleanup(&b);

    /* An empty append to a fresh buffer leaves it empty (and NUL-terminated if allocated). */
    sbuf_add(&b, "x", 0);
    assert_int_equal(b.len, 0);
    assert_true(b.data == NULL || b.data[0] == '\0');
    sbuf_cleanup(&b);
}

/* Growth through many appends of every size keeps every byte in place. */
static void growth(void **state)
{
    const size_t total = 1 << 20;
    char *want = pattern(total);
    struct sbuf b = SBUF_INIT;
    uint64_t seed = 42;
    size_t n = 0;
    while (n < total) {
        size_t k = next_rand(&seed) % 3000;
        if (k > total - n)
            k = total - n;
        if (k == 1)
            sbuf_addc(&b, want[n]);
        else
            sbuf_add(&b, want + n, k);
        n += k;
        assert_int_equal(b.len, n);
    }
    assert_sbuf(&b, want, total);

    /* One byte at a time across the first growths too. */
    sbuf_reset(&b);
    for (size_t i = 0; i < 5000; i++)
        sbuf_addc(&b, want[i]);
    assert_sbuf(&b, want, 5000);
    sbuf_cleanup(&b);
    free(want);
}

/* After reserve(n), n more bytes fit without moving the data. */
static void reserve_keeps_room(void **state)
{
    struct sbuf b = SBUF_INIT;
    char *want = pattern(10000);
    sbuf_adds(&b, "head");
    sbuf_reserve(&b, 10000);
    const char *data = b.data;
    for (size_t i = 0; i < 10000; i++)
        sbuf_addc(&b, want[i]);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.len, 10004);
    assert_memory_equal(b.data, "head", 4);
    assert_memory_equal(b.data + 4, want, 10000);
    assert_int_equal(b.data[b.len], '\0');

    /* Reserving less than is free changes nothing. */
    sbuf_reserve(&b, 0);
    assert_ptr_equal(b.data, data);
    sbuf_cleanup(&b);
    free(want);
}

/* sbuf_printf of "%s" on s appended to "pre:" gives what snprintf gives. */
static void check_printf_len(size_t n)
{
    char *s = pattern(n);
    char *want = malloc(n + 16);
    assert_non_null(want);
    int wn = snprintf(want, n + 16, "pre:%s|%d", s, -7);
    struct sbuf b = SBUF_INIT;
    sbuf_adds(&b, "pre:");
    sbuf_printf(&b, "%s|%d", s, -7);
    assert_sbuf(&b, want, (size_t)wn);
    sbuf_cleanup(&b);
    free(want);
    free(s);
}

/* printf output of every length around and far beyond any internal buffer. */
static void printf_lengths(void **state)
{
    for (size_t n = 0; n < 600; n++)
        check_printf_len(n);
    check_printf_len(4095);
    check_printf_len(4096);
    check_printf_len(100000);
}

/* Repeated printf appends, and an empty format result. */
static void printf_appends(void **state)
{
    struct sbuf b = SBUF_INIT;
    char want[8192];
    size_t n = 0;
    for (int i = 0; i < 1000; i++) {
        sbuf_printf(&b, "%d,", i * 37);
        n += (size_t)snprintf(want + n, sizeof want - n, "%d,", i * 37);
    }
    assert_sbuf(&b, want, n);
    sbuf_printf(&b, "%s", "");
    assert_sbuf(&b, want, n);
    sbuf_printf(&b, "%c%5.2f%-4s|%x", 'q', 3.14159, "ab", 255u);
    memcpy(want + n, "q 3.14ab  |ff", 13);
    assert_sbuf(&b, want, n + 13);
    sbuf_cleanup(&b);
}

/* reset empties but keeps the memory; cleanup frees it; both leave a usable buffer. */
static void reset_vs_cleanup(void **state)
{
    struct sbuf b = SBUF_INIT;
    sbuf_reset(&b); /* on a never-used buffer */
    assert_null(b.data);
    assert_int_equal(b.len, 0);

    char *big = pattern(3000);
    sbuf_adds(&b, big);
    const char *data = b.data;
    size_t cap = b.cap;
    sbuf_reset(&b);
    assert_sbuf(&b, "", 0);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, cap);
    /* The kept memory is reused. */
    sbuf_adds(&b, big);
    assert_ptr_equal(b.data, data);
    assert_sbuf(&b, big, 3000);

    sbuf_cleanup(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    sbuf_cleanup(&b); /* twice is fine */
    sbuf_adds(&b, "again");
    assert_sbuf(&b, "again", 5);
    sbuf_cleanup(&b);
    free(big);
}

/* steal hands over the NUL-terminated data and its length and empties the buffer. */
static void steal(void **state)
{
    struct sbuf b = SBUF_INIT;
    size_t len = 99;
    sbuf_add(&b, "a\0b", 3);
    char *p = sbuf_steal(&b, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(p, "a\0b", 4);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    free(p);

    /* len may be NULL, and the buffer is usable afterwards. */
    sbuf_adds(&b, "xyz");
    p = sbuf_steal(&b, NULL);
    assert_string_equal(p, "xyz");
    free(p);
    sbuf_adds(&b, "next");
    assert_sbuf(&b, "next", 4);
    sbuf_cleanup(&b);
}

/* A buffer that has only been reserved holds the empty string, and steal of a
 * never-used buffer gives an empty string, not NULL nor unwritten memory. */
static void unused_buffer_is_empty_string(void **state)
{
    struct sbuf b = SBUF_INIT;
    sbuf_reserve(&b, 100);
    assert_non_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.data[0], '\0');
    sbuf_cleanup(&b);

    size_t len = 99;
    char *p = sbuf_steal(&b, &len);
    assert_non_null(p);
    assert_int_equal(len, 0);
    assert_string_equal(p, "");
    free(p);
}

/* Quotes, backslashes and control characters, with the escapes written out. */
static void json_escapes(void **state)
{
    check_json_same("", 0, "\"\"");
    check_json_same("hello", 5, "\"hello\"");
    check_json_same("say \"hi\"", 8, "\"say \\\"hi\\\"\"");
    check_json_same("a\\b", 3, "\"a\\\\b\"");
    check_json_same("\\\"", 2, "\"\\\\\\\"\"");
    check_json_same("l1\nl2\r\n\tx", 9, "\"l1\\nl2\\r\\n\\tx\"");
    check_json_same("\0", 1, "\"\\u0000\"");
    check_json_same("a\0b", 3, "\"a\\u0000b\"");
    check_json_same("\x01\x08\x0c\x1b\x1f", 5, "\"\\u0001\\u0008\\u000c\\u001b\\u001f\"");
    /* Space, DEL, '/' and everything printable stay as they are. */
    check_json_same(" \x7f/<>'", 6, "\" \x7f/<>'\"");
    /* Valid UTF-8 is copied through. */
    check_json_same("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14,
                    "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
    check_json_same("\xef\xbf\xbf\xf4\x8f\xbf\xbf", 7, "\"\xef\xbf\xbf\xf4\x8f\xbf\xbf\"");
}

/* Every single byte: ASCII decodes to itself, controls as \u00xx or a short escape,
 * a byte above 0x7f alone is invalid UTF-8 and becomes U+FFFD. */
static void json_every_byte(void **state)
{
    for (unsigned c = 0; c < 256; c++) {
        char in = (char)c;
        char want[16];
        if (c == '"')
            strcpy(want, "\"\\\"\"");
        else if (c == '\\')
            strcpy(want, "\"\\\\\"");
        else if (c == '\n')
            strcpy(want, "\"\\n\"");
        else if (c == '\r')
            strcpy(want, "\"\\r\"");
        else if (c == '\t')
            strcpy(want, "\"\\t\"");
        else if (c < 0x20)
            snprintf(want, sizeof want, "\"\\u%04x\"", c);
        else if (c < 0x80)
            snprintf(want, sizeof want, "\"%c\"", (int)c);
        else
            strcpy(want, "\"" FFFD "\"");
        if (c < 0x80)
            check_json_same(&in, 1, want);
        else
            check_json(&in, 1, want, FFFD, 3);
    }
}

/* Each byte of an invalid sequence becomes one U+FFFD; valid text around it stays. */
static void json_invalid_utf8(void **state)
{
    check_json("a\x80z", 3, "\"a" FFFD "z\"", "a" FFFD "z", 5);
    check_json("\xff\xfe", 2, "\"" FFFD FFFD "\"", FFFD FFFD, 6);
    /* Truncated sequences, at the end and before ASCII. */
    check_json("\xe2\x82", 2, "\"" FFFD FFFD "\"", FFFD FFFD, 6);
    check_json("\xe2\x82x", 3, "\"" FFFD FFFD "x\"", FFFD FFFD "x", 7);
    check_json("\xc3\xa9\xc3", 3, "\"\xc3\xa9" FFFD "\"", "\xc3\xa9" FFFD, 5);
    check_json("\xf0\x9f\x98", 3, "\"" FFFD FFFD FFFD "\"", FFFD FFFD FFFD, 9);
    /* A lead byte followed by a whole valid sequence: only the lead is replaced. */
    check_json("\xc3\xc3\xa9", 3, "\"" FFFD "\xc3\xa9\"", FFFD "\xc3\xa9", 5);
    check_json("\xf0\xe2\x82\xac", 4, "\"" FFFD "\xe2\x82\xac\"", FFFD "\xe2\x82\xac", 6);
    /* Overlongs, surrogates and code points above U+10FFFF. */
    check_json("\xc0\xaf", 2, "\"" FFFD FFFD "\"", FFFD FFFD, 6);
    check_json("\xed\xa0\x80", 3, "\"" FFFD FFFD FFFD "\"", FFFD FFFD FFFD, 9);
    check_json("\xf4\x90\x80\x80", 4, "\"" FFFD FFFD FFFD FFFD "\"", FFFD FFFD FFFD FFFD, 12);
    /* Escaping still applies on the replacing path. */
    check_json("\"\x01\xff\\\n", 5, "\"\\\"\\u0001" FFFD "\\\\\\n\"", "\"\x01" FFFD "\\\n", 7);
    check_json("\0\x80", 2, "\"\\u0000" FFFD "\"", "\0" FFFD, 4);
}

/* The literal is appended after what the buffer already holds. */
static void json_appends(void **state)
{
    struct sbuf b = SBUF_INIT;
    sbuf_adds(&b, "{\"k\":");
    sbuf_add_json_str(&b, "v\"1", 3);
    sbuf_addc(&b, ',');
    sbuf_add_json_str(&b, "\xff", 1);
    sbuf_addc(&b, '}');
    assert_sbuf(&b,
                "{\"k\":\"v\\\"1\","
                "\"" FFFD "\"}",
                18);
    sbuf_cleanup(&b);
}

/* Random mixes of text, escapes, multi-byte characters and bytes that are invalid
 * wherever they stand: the output always parses, to the input with each invalid byte
 * replaced by U+FFFD. */
static void json_random(void **state)
{
    static const char *const units[] = {"a",
                                        "Z",
                                        " ",
                                        "\"",
                                        "\\",
                                        "/",
                                        "\n",
                                        "\r",
                                        "\t",
                                        "\b",
                                        "\x01",
                                        "\x1f",
                                        "\x7f",
                                        "\xc3\xa9",
                                        "\xe2\x82\xac",
                                        "\xf0\x9f\x98\x80",
                                        "\xed\x9f\xbf",
                                        "\xf4\x8f\xbf\xbf"};
    const size_t nunits = sizeof units / sizeof units[0];
    uint64_t seed = 7;
    char in[512], want[1024];

    for (int round = 0; round < 20000; round++) {
        size_t n = 0, wn = 0;
        size_t count = next_rand(&seed) % 80;
        for (size_t i = 0; i < count; i++) {
            uint32_t r = next_rand(&seed);
            if (r % 5 == 0) {
                /* 0x80..0xbf (continuation), 0xc0, 0xc1 or 0xf5..0xff: never valid here,
                 * since every lead byte in the input starts a complete unit. */
                static const uint8_t bad[] = {0x80, 0x8f, 0x90, 0xa0, 0xbf, 0xc0,
                                              0xc1, 0xf5, 0xf8, 0xfc, 0xfe, 0xff};
                in[n++] = (char)bad[(r >> 8) % sizeof bad];
                memcpy(want + wn, FFFD, 3);
                wn += 3;
            } else if (r % 5 == 1) {
                in[n++] = '\0';
                want[wn++] = '\0';
            } else {
                const char *u = units[(r >> 8) % nunits];
                size_t k = strlen(u);
                memcpy(in + n, u, k);
                memcpy(want + wn, u, k);
                n += k;
                wn += k;
            }
        }
        struct sbuf b = SBUF_INIT;
        sbuf_add_json_str(&b, in, n);
        assert_int_equal(b.data[b.len], '\0');
        assert_json_decodes(b.data, b.len, want, wn);
        sbuf_cleanup(&b);
    }
}

/* A long string full of escapes round-trips. */
static void json_long(void **state)
{
    const size_t n = 200000;
    char *s = pattern(n);
    for (size_t i = 0; i < n; i += 97)
        s[i] = "\"\\\n\x01"[i % 4];
    struct sbuf b = SBUF_INIT;
    sbuf_add_json_str(&b, s, n);
    assert_json_decodes(b.data, b.len, s, n);
    sbuf_cleanup(&b);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(add_adds_addc),
        cmocka_unit_test(growth),
        cmocka_unit_test(reserve_keeps_room),
        cmocka_unit_test(printf_lengths),
        cmocka_unit_test(printf_appends),
        cmocka_unit_test(reset_vs_cleanup),
        cmocka_unit_test(steal),
        cmocka_unit_test(unused_buffer_is_empty_string),
        cmocka_unit_test(json_escapes),
        cmocka_unit_test(json_every_byte),
        cmocka_unit_test(json_invalid_utf8),
        cmocka_unit_test(json_appends),
        cmocka_unit_test(json_random),
        cmocka_unit_test(json_long),
    };
    return cmocka_run_group_tests_name("sbuf", tests, NULL, NULL);
}
