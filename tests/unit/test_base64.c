/* test_base64.c - unit tests for src/util/base64.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "util/base64.h"

#define SENTINEL 0x5A

struct vector {
    const char *plain;
    const char *std; /* padded, standard alphabet */
    const char *url; /* unpadded, URL-safe alphabet */
};

/* RFC 4648 section 10. */
static const struct vector rfc_vectors[] = {
    {"", "", ""},
    {"f", "Zg==", "Zg"},
    {"fo", "Zm8=", "Zm8"},
    {"foo", "Zm9v", "Zm9v"},
    {"foob", "Zm9vYg==", "Zm9vYg"},
    {"fooba", "Zm9vYmE=", "Zm9vYmE"},
    {"foobar", "Zm9vYmFy", "Zm9vYmFy"},
};

/* These 48 bytes encode to the whole standard alphabet, in order. */
static const uint8_t alphabet_bytes[48] = {
    0x00, 0x10, 0x83, 0x10, 0x51, 0x87, 0x20, 0x92, 0x8b, 0x30, 0xd3, 0x8f, 0x41, 0x14, 0x93, 0x51,
    0x55, 0x97, 0x61, 0x96, 0x9b, 0x71, 0xd7, 0x9f, 0x82, 0x18, 0xa3, 0x92, 0x59, 0xa7, 0xa2, 0x9a,
    0xab, 0xb2, 0xdb, 0xaf, 0xc3, 0x1c, 0xb3, 0xd3, 0x5d, 0xb7, 0xe3, 0x9e, 0xbb, 0xf3, 0xdf, 0xbf,
};
static const char std_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

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

/* A bit-at-a-time encoder, deliberately unlike the one under test, used as reference. */
static size_t ref_encode(const uint8_t *in, size_t n, char *out, const char *alphabet, int pad)
{
    size_t nbits = n * 8;
    size_t o = 0;

    for (size_t bit = 0; bit < nbits; bit += 6) {
        unsigned v = 0;
        for (size_t k = 0; k < 6; k++) {
            size_t b = bit + k;
            unsigned set = b < nbits ? (in[b / 8] >> (7 - b % 8)) & 1 : 0;
            v = v << 1 | set;
        }
        out[o++] = alphabet[v];
    }
    while (pad && o % 4 != 0)
        out[o++] = '=';
    out[o] = '\0';
    return o;
}

/* Decodes the NUL-terminated s and returns the rc; *len receives the output length. */
static int decode_str(const char *s, uint8_t *out, size_t *len)
{
    return b64_decode(s, strlen(s), out, len);
}

/* RFC 4648 section 10 vectors through the padded standard encoder. */
static void test_rfc4648_std_encode(void **state)
{
    char out[16];

    for (size_t i = 0; i < sizeof rfc_vectors / sizeof rfc_vectors[0]; i++) {
        const struct vector *v = &rfc_vectors[i];
        size_t n = b64std_encode((const uint8_t *)v->plain, strlen(v->plain), out);
        assert_string_equal(out, v->std);
        assert_int_equal(n, strlen(v->std));
    }
}

/* The same vectors through the unpadded URL-safe encoder and its length. */
static void test_rfc4648_url_encode(void **state)
{
    char out[16];

    for (size_t i = 0; i < sizeof rfc_vectors / sizeof rfc_vectors[0]; i++) {
        const struct vector *v = &rfc_vectors[i];
        size_t n = b64url_encode((const uint8_t *)v->plain, strlen(v->plain), out);
        assert_string_equal(out, v->url);
        assert_int_equal(n, strlen(v->url));
        assert_int_equal(b64url_encoded_len(strlen(v->plain)), strlen(v->url));
    }
}

/* Both encodings of every RFC vector decode back to the plain text. */
static void test_rfc4648_decode(void **state)
{
    uint8_t out[16];
    size_t len;

    for (size_t i = 0; i < sizeof rfc_vectors / sizeof rfc_vectors[0]; i++) {
        const struct vector *v = &rfc_vectors[i];
        size_t plen = strlen(v->plain);

        len = 999;
        assert_int_equal(decode_str(v->std, out, &len), 0);
        assert_int_equal(len, plen);
        assert_memory_equal(out, v->plain, plen);

        len = 999;
        assert_int_equal(decode_str(v->url, out, &len), 0);
        assert_int_equal(len, plen);
        assert_memory_equal(out, v->plain, plen);
    }
}

/* b64url_encoded_len for short and typical sizes. */
static void test_encoded_len(void **state)
{
    static const size_t expect[] = {0, 2, 3, 4, 6, 7, 8, 10, 11, 12, 14};

    for (size_t n = 0; n < sizeof expect / sizeof expect[0]; n++)
        assert_int_equal(b64url_encoded_len(n), expect[n]);
    assert_int_equal(b64url_encoded_len(32), 43);
    assert_int_equal(b64url_encoded_len(3000), 4000);
}

/* Every character of both alphabets encodes and decodes at its index. */
static void test_full_alphabets(void **state)
{
    char out[80];
    uint8_t back[80];
    size_t len;

    assert_int_equal(b64std_encode(alphabet_bytes, sizeof alphabet_bytes, out), 64);
    assert_string_equal(out, std_alphabet);
    assert_int_equal(b64url_encode(alphabet_bytes, sizeof alphabet_bytes, out), 64);
    assert_string_equal(out, url_alphabet);

    assert_int_equal(decode_str(std_alphabet, back, &len), 0);
    assert_int_equal(len, sizeof alphabet_bytes);
    assert_memory_equal(back, alphabet_bytes, sizeof alphabet_bytes);
    assert_int_equal(decode_str(url_alphabet, back, &len), 0);
    assert_int_equal(len, sizeof alphabet_bytes);
    assert_memory_equal(back, alphabet_bytes, sizeof alphabet_bytes);
}

/* Values 62 and 63 are "+/" or "-_"; a decoder input may mix them. */
static void test_alphabets_differ_only_in_62_63(void **state)
{
    static const uint8_t in[] = {0xfb, 0xff, 0xbf, 0xfb, 0xef};
    char out[16];
    uint8_t back[16];
    size_t len;

    b64std_encode(in, sizeof in, out);
    assert_string_equal(out, "+/+/++8=");
    b64url_encode(in, sizeof in, out);
    assert_string_equal(out, "-_-_--8");

    /* Mixed alphabets in one input are tolerated. */
    assert_int_equal(decode_str("+_-/--8", back, &len), 0);
    assert_int_equal(len, sizeof in);
    assert_memory_equal(back, in, sizeof in);
}

/* Padded and unpadded forms decode alike, in both alphabets. */
static void test_decode_padding_optional(void **state)
{
    uint8_t out[16];
    size_t len;

    assert_int_equal(decode_str("Zg==", out, &len), 0);
    assert_int_equal(len, 1);
    assert_int_equal(out[0], 'f');
    assert_int_equal(decode_str("Zg", out, &len), 0);
    assert_int_equal(len, 1);
    assert_int_equal(out[0], 'f');
    assert_int_equal(decode_str("Zm8=", out, &len), 0);
    assert_int_equal(len, 2);
    assert_memory_equal(out, "fo", 2);
    assert_int_equal(decode_str("Zm8", out, &len), 0);
    assert_int_equal(len, 2);
    assert_memory_equal(out, "fo", 2);
    /* URL-safe alphabet with padding is accepted too. */
    assert_int_equal(decode_str("-_8=", out, &len), 0);
    assert_int_equal(len, 2);
    assert_int_equal(out[0], 0xfb);
    assert_int_equal(out[1], 0xff);
}

/* Empty input decodes to nothing; bytes past n are never read. */
static void test_decode_empty(void **state)
{
    uint8_t out[4] = {SENTINEL, SENTINEL, SENTINEL, SENTINEL};
    size_t len = 999;

    assert_int_equal(b64_decode("", 0, out, &len), 0);
    assert_int_equal(len, 0);
    assert_int_equal(out[0], SENTINEL);
    len = 999;
    assert_int_equal(b64_decode(NULL, 0, out, &len), 0);
    assert_int_equal(len, 0);
    /* n counts: characters past n are not looked at. */
    assert_int_equal(b64_decode("Zm9v!!!!", 4, out, &len), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(out, "foo", 3);
}

/* A character outside both alphabets fails wherever it sits. */
static void test_decode_invalid_chars(void **state)
{
    static const char bad[] = {' ',  '\n', '\r', '\t', '.',  '*', '~',        '!',
                               '"',  '\\', '@',  '[',  '`',  '{', (char)0x80, (char)0xff,
                               '\0', ',',  ':',  '%',  '\'', '#', '$',        '&'};
    uint8_t out[32];
    size_t len;

    for (size_t b = 0; b < sizeof bad; b++) {
        /* Put the bad character at every position of an 8-character input. */
        for (size_t pos = 0; pos < 8; pos++) {
            char in[9] = "Zm9vYmFy";
            in[pos] = bad[b];
            len = 999;
            assert_int_equal(b64_decode(in, 8, out, &len), RC_EINVAL);
            assert_int_equal(len, 999);
        }
        /* ... and in a short final quantum. */
        for (size_t pos = 0; pos < 3; pos++) {
            char in[4] = "Zm8";
            in[pos] = bad[b];
            assert_int_equal(b64_decode(in, 3, out, &len), RC_EINVAL);
        }
    }
}

/* Lengths with n % 4 == 1 cannot be base64. */
static void test_decode_bad_length(void **state)
{
    static const char *const bad[] = {
        "A", "Z", "-", "AAAAA", "Zm9vY", "Zm9vYmFyZ", "Zm9vYmFyZm9vY"};
    uint8_t out[32];
    size_t len;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(decode_str(bad[i], out, &len), RC_EINVAL);

    /* Every n with n % 4 == 1 is impossible, whatever the characters. */
    for (size_t n = 1; n < 30; n += 4)
        assert_int_equal(b64_decode("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", n, out, &len), RC_EINVAL);
}

/* '=' anywhere but one or two at the end of a full quantum fails. */
static void test_decode_misplaced_padding(void **state)
{
    static const char *const bad[] = {
        "=",      "==",     "===",      "====",     "=====",   "=AAA",      "A=AA",
        "AA=A",   "=Zm8",   "Z=m8",     "Zg=",      "Zg===",   "Zm8==",     "Zm9v=",
        "Zm9v==", "A===",   "Zg==Zg==", "Zm8=Zm9v", "Zm9vYg=", "Zm9vYmE==", "Zg==\n",
        "Zg== ",  "Zg=\n=", "====Zm9v", "Zm9v====", "Zg===="};
    uint8_t out[32];
    size_t len;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        len = 999;
        if (decode_str(bad[i], out, &len) != RC_EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_int_equal(len, 999);
    }
}

/* Non-canonical trailing bits decode (documented in the header). */
static void test_decode_ignores_unused_bits(void **state)
{
    uint8_t out[4];
    size_t len;

    /* "Zh" carries a non-zero bit past the byte: documented as tolerated. */
    assert_int_equal(decode_str("Zh", out, &len), 0);
    assert_int_equal(len, 1);
    assert_int_equal(out[0], 'f');
    assert_int_equal(decode_str("Zm9=", out, &len), 0);
    assert_int_equal(len, 2);
    assert_memory_equal(out, "fo", 2);
}

/* All 256 byte values against the reference encoder and back. */
static void test_all_byte_values(void **state)
{
    uint8_t in[256];
    char enc[400];
    char ref[400];
    uint8_t back[400];
    size_t len;

    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (uint8_t)i;
    assert_int_equal(b64std_encode(in, sizeof in, enc),
                     ref_encode(in, sizeof in, ref, std_alphabet, 1));
    assert_string_equal(enc, ref);
    assert_int_equal(decode_str(enc, back, &len), 0);
    assert_int_equal(len, sizeof in);
    assert_memory_equal(back, in, sizeof in);
}

/* Random inputs of every length up to 300: encoders match the reference, round trip. */
static void test_round_trip_random(void **state)
{
    uint64_t seed = 0x9E3779B97F4A7C15ULL;
    uint8_t in[300];
    char enc[420];
    char ref[420];
    uint8_t back[420];
    size_t len;

    for (int round = 0; round < 20; round++) {
        for (size_t n = 0; n <= sizeof in; n++) {
            for (size_t i = 0; i < n; i++)
                in[i] = (uint8_t)rng_next(&seed);

            /* URL-safe, unpadded; check nothing is written past the NUL. */
            memset(enc, SENTINEL, sizeof enc);
            size_t elen = b64url_encode(in, n, enc);
            assert_int_equal(elen, b64url_encoded_len(n));
            assert_int_equal(enc[elen], '\0');
            assert_int_equal((unsigned char)enc[elen + 1], SENTINEL);
            assert_int_equal(ref_encode(in, n, ref, url_alphabet, 0), elen);
            assert_string_equal(enc, ref);
            assert_null(memchr(enc, '=', elen));

            memset(back, SENTINEL, sizeof back);
            len = 999;
            assert_int_equal(b64_decode(enc, elen, back, &len), 0);
            assert_int_equal(len, n);
            if (n)
                assert_memory_equal(back, in, n);
            assert_int_equal(back[n], SENTINEL);

            /* Standard, padded. */
            memset(enc, SENTINEL, sizeof enc);
            elen = b64std_encode(in, n, enc);
            assert_int_equal(elen, 4 * ((n + 2) / 3));
            assert_int_equal((unsigned char)enc[elen + 1], SENTINEL);
            assert_int_equal(ref_encode(in, n, ref, std_alphabet, 1), elen);
            assert_string_equal(enc, ref);

            len = 999;
            assert_int_equal(b64_decode(enc, elen, back, &len), 0);
            assert_int_equal(len, n);
            if (n)
                assert_memory_equal(back, in, n);
        }
    }
}

/* Random input never crashes; what is accepted re-encodes consistently. */
static void test_decode_random_garbage(void **state)
{
    uint64_t seed = 12345;
    char in[64];
    uint8_t out[3 * sizeof in / 4 + 3];
    size_t len;

    /* Arbitrary bytes never crash; whatever is accepted re-encodes to the same bytes. */
    for (int round = 0; round < 20000; round++) {
        size_t n = rng_next(&seed) % sizeof in;
        for (size_t i = 0; i < n; i++) {
            uint64_t r = rng_next(&seed);
            in[i] = r & 1 ? url_alphabet[(r >> 8) % 64] : (char)(r >> 8);
        }
        if (b64_decode(in, n, out, &len) == 0) {
            char enc[sizeof in + 4];
            uint8_t again[sizeof out];
            size_t len2;

            assert_true(len <= 3 * n / 4);
            b64url_encode(out, len, enc);
            assert_int_equal(b64_decode(enc, strlen(enc), again, &len2), 0);
            assert_int_equal(len2, len);
            if (len)
                assert_memory_equal(again, out, len);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_std_encode),
        cmocka_unit_test(test_rfc4648_url_encode),
        cmocka_unit_test(test_rfc4648_decode),
        cmocka_unit_test(test_encoded_len),
        cmocka_unit_test(test_full_alphabets),
        cmocka_unit_test(test_alphabets_differ_only_in_62_63),
        cmocka_unit_test(test_decode_padding_optional),
        cmocka_unit_test(test_decode_empty),
        cmocka_unit_test(test_decode_invalid_chars),
        cmocka_unit_test(test_decode_bad_length),
        cmocka_unit_test(test_decode_misplaced_padding),
        cmocka_unit_test(test_decode_ignores_unused_bits),
        cmocka_unit_test(test_all_byte_values),
        cmocka_unit_test(test_round_trip_random),
        cmocka_unit_test(test_decode_random_garbage),
    };

    return cmocka_run_group_tests_name("base64", tests, NULL, NULL);
}
