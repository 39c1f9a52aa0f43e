/* test_jwt.c - unit tests for src/jwt.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "jwt.h"
#include "util/base64.h"

#define KEY "secret-key-0123456789"
#define KEY_LEN (sizeof KEY - 1)
#define NOW 1700000000
#define EXP 2000000000

#define HS256_HEADER "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define GOOD_CLAIMS "{\"sub\":\"alice\",\"exp\":2000000000}"

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

/* malloc'd unpadded base64url of in[0..n). */
static char *b64url(const void *in, size_t n)
{
    char *out = malloc(b64url_encoded_len(n) + 1);

    assert_non_null(out);
    b64url_encode(in, n, out);
    return out;
}

/* malloc'd "h.p.sig" where sig is computed here with OpenSSL's one-shot HMAC(). */
static char *sign_segments_md(const EVP_MD *md, const char *key, size_t key_len, const char *h,
                              const char *p)
{
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    size_t n = strlen(h) + 1 + strlen(p);
    char *input = malloc(n + 1);
    char *sig;
    char *tok;

    assert_non_null(input);
    snprintf(input, n + 1, "%s.%s", h, p);
    assert_non_null(HMAC(md, key, (int)key_len, (const unsigned char *)input, n, mac, &mac_len));
    sig = b64url(mac, mac_len);
    tok = malloc(n + 1 + strlen(sig) + 1);
    assert_non_null(tok);
    sprintf(tok, "%s.%s", input, sig);
    free(sig);
    free(input);
    return tok;
}

/* malloc'd token over already-encoded segments, HS256 under KEY. */
static char *sign_segments(const char *h, const char *p)
{
    return sign_segments_md(EVP_sha256(), KEY, KEY_LEN, h, p);
}

/* malloc'd token for arbitrary header and claims JSON text, HS256 under KEY. */
static char *make_token(const char *header, const char *claims)
{
    char *h = b64url(header, strlen(header));
    char *p = b64url(claims, strlen(claims));
    char *tok = sign_segments(h, p);

    free(h);
    free(p);
    return tok;
}

/* jwt_verify of the NUL-terminated tok under KEY at NOW. */
static int verify(const char *tok, char *sub)
{
    return jwt_verify((const uint8_t *)KEY, KEY_LEN, tok, strlen(tok), NOW, sub, JWT_MAX_SUB + 1,
                      NULL);
}

/* Expects claims (signed correctly, standard header) to be refused with rc. */
static void expect_claims_rc(const char *claims, int rc)
{
    char sub[JWT_MAX_SUB + 1];
    char *tok = make_token(HS256_HEADER, claims);
    int got = verify(tok, sub);

    if (got != rc)
        fail_msg("claims %s: got %d, expected %d", claims, got, rc);
    if (rc != 0)
        assert_string_equal(sub, "");
    free(tok);
}

/* Expects header (signed correctly, good claims) to give rc. */
static void expect_header_rc(const char *header, int rc)
{
    char sub[JWT_MAX_SUB + 1];
    char *tok = make_token(header, GOOD_CLAIMS);
    int got = verify(tok, sub);

    if (got != rc)
        fail_msg("header %s: got %d, expected %d", header, got, rc);
    free(tok);
}

/* A signed token verifies and yields its sub and exp. */
static void test_sign_verify_round_trip(void **state)
{
    char sub[JWT_MAX_SUB + 1];
    int64_t exp = 0;
    char *tok = NULL;

    assert_int_equal(jwt_sign((const uint8_t *)KEY, KEY_LEN, "alice", NOW, NOW + 3600, &tok), 0);
    assert_non_null(tok);
    assert_int_equal(
        jwt_verify((const uint8_t *)KEY, KEY_LEN, tok, strlen(tok), NOW, sub, sizeof sub, &exp), 0);
    assert_string_equal(sub, "alice");
    assert_int_equal(exp, NOW + 3600);
    /* One second before expiry, and with exp_out NULL. */
    assert_int_equal(jwt_verify((const uint8_t *)KEY, KEY_LEN, tok, strlen(tok), NOW + 3599, sub,
                                sizeof sub, NULL),
                     0);
    /* The token need not be NUL-terminated: only len bytes are read. */
    char *copy = malloc(strlen(tok));
    assert_non_null(copy);
    memcpy(copy, tok, strlen(tok));
    assert_int_equal(
        jwt_verify((const uint8_t *)KEY, KEY_LEN, copy, strlen(tok), NOW, sub, sizeof sub, NULL),
        0);
    free(copy);
    free(tok);
}

/* jwt_sign output equals a token computed outside this code. */
static void test_sign_known_output(void **state)
{
    /* Computed independently (Python hmac + base64) from header HS256_HEADER and claims
     * {"sub":"alice","iat":1000,"exp":2000}. */
    static const char expect[] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
                                 "eyJzdWIiOiJhbGljZSIsImlhdCI6MTAwMCwiZXhwIjoyMDAwfQ."
                                 "TQ2q4KSccrjjj2CMMhnrumWR4i0E12gf9_-gYV3cef8";
    char *tok = NULL;

    assert_int_equal(jwt_sign((const uint8_t *)KEY, KEY_LEN, "alice", 1000, 2000, &tok), 0);
    assert_string_equal(tok, expect);
    free(tok);
}

/* A token built from fixed bytes and an independently computed HMAC verifies. */
static void test_known_vector(void **state)
{
    /* Computed independently (Python hmac + base64) from HS256_HEADER and
     * {"sub":"user-42","exp":2000000000} under KEY. */
    static const char tok[] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
                              "eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoyMDAwMDAwMDAwfQ."
                              "IKO-UWGmuz-XcB-0wUA3xC_ZkxYrOd2MP7WYDQrA2ow";
    static const char header[] = HS256_HEADER;
    static const char claims[] = "{\"sub\":\"user-42\",\"exp\":2000000000}";
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    uint8_t sig[40];
    size_t sig_len;
    char sub[JWT_MAX_SUB + 1];
    int64_t exp = 0;
    const char *dot2 = strrchr(tok, '.');

    /* The segments are the base64url of the fixed bytes... */
    char *h = b64url(header, sizeof header - 1);
    char *p = b64url(claims, sizeof claims - 1);
    assert_int_equal(strncmp(tok, h, strlen(h)), 0);
    assert_int_equal(strncmp(tok + strlen(h) + 1, p, strlen(p)), 0);
    free(h);
    free(p);

    /* ...and the signature is the HMAC-SHA256 of "header.payload" computed here. */
    assert_non_null(HMAC(EVP_sha256(), KEY, (int)KEY_LEN, (const unsigned char *)tok,
                         (size_t)(dot2 - tok), mac, &mac_len));
    assert_int_equal(mac_len, 32);
    assert_int_equal(b64_decode(dot2 + 1, strlen(dot2 + 1), sig, &sig_len), 0);
    assert_int_equal(sig_len, 32);
    assert_memory_equal(sig, mac, 32);

    assert_int_equal(
        jwt_verify((const uint8_t *)KEY, KEY_LEN, tok, sizeof tok - 1, NOW, sub, sizeof sub, &exp),
        0);
    assert_string_equal(sub, "user-42");
    assert_int_equal(exp, 2000000000);
}

/* RFC 7515 A.1: our HMAC and base64url give the RFC signature. */
static void test_rfc7515_example(void **state)
{
    /* RFC 7515 appendix A.1: HS256 with a JWK key. */
    static const char k[] = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4"
                            "hcgUuTwjAzZr1Z9CAow";
    static const char input[] =
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9."
        "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0"
        "cnVlfQ";
    static const char rfc_sig[] = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    uint8_t key[64];
    size_t key_len;
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    char sig[64];
    char tok[sizeof input + sizeof rfc_sig + 1];
    char sub[JWT_MAX_SUB + 1];

    assert_int_equal(b64_decode(k, sizeof k - 1, key, &key_len), 0);
    assert_int_equal(key_len, 64);
    assert_non_null(HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)input,
                         sizeof input - 1, mac, &mac_len));
    b64url_encode(mac, mac_len, sig);
    assert_string_equal(sig, rfc_sig);

    /* The RFC token is well signed but has no sub (and expired in 2011): refused. */
    snprintf(tok, sizeof tok, "%s.%s", input, rfc_sig);
    assert_int_equal(jwt_verify(key, key_len, tok, strlen(tok), 1300819379, sub, sizeof sub, NULL),
                     RC_EAUTH);
    assert_int_equal(jwt_verify(key, key_len, tok, strlen(tok), NOW, sub, sizeof sub, NULL),
                     RC_EAUTH);
}

/* Header member order, whitespace and extra members do not matter. */
static void test_header_whitespace_and_order(void **state)
{
    /* The RFC 7515 header: typ first, CRLF and spaces inside. */
    expect_header_rc("{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}", 0);
    expect_header_rc("{\"alg\":\"HS256\"}", 0);
    expect_header_rc(" { \"alg\" : \"HS256\" } ", 0);
    expect_header_rc("{\"alg\":\"HS256\",\"kid\":\"k1\",\"typ\":\"JWT\"}", 0);
}

/* exp <= now is RC_EEXPIRED, but only once the signature is good. */
static void test_expired(void **state)
{
    char sub[JWT_MAX_SUB + 1];
    int64_t exp = 7;
    char *tok = NULL;

    assert_int_equal(jwt_sign((const uint8_t *)KEY, KEY_LEN, "alice", NOW - 10, NOW, &tok), 0);
    /* exp == now is expired. */
    assert_int_equal(
        jwt_verify((const uint8_t *)KEY, KEY_LEN, tok, strlen(tok), NOW, sub, sizeof sub, &exp),
        RC_EEXPIRED);
    assert_string_equal(sub, "");
    assert_int_equal(exp, 7);
    assert_int_equal(jwt_verify((const uint8_t *)KEY, KEY_LEN, tok, strlen(tok), NOW + 1000, sub,
                                sizeof sub, NULL),
                     RC_EEXPIRED);
    assert_int_equal(
        jwt_verify((const uint8_t *)KEY, KEY_LEN, tok, strlen(tok), NOW - 1, sub, sizeof sub, &exp),
        0);
    assert_int_equal(exp, NOW);

    /* Expired but signed under another key: the signature is what fails. */
    assert_int_equal(
        jwt_verify((const uint8_t *)"other", 5, tok, strlen(tok), NOW, sub, sizeof sub, NULL),
        RC_EAUTH);
    /* Expired and tampered signature: RC_EAUTH, never RC_EEXPIRED. */
    tok[strlen(tok) - 5] = tok[strlen(tok) - 5] == 'A' ? 'B' : 'A';
    assert_int_equal(verify(tok, sub), RC_EAUTH);
    free(tok);

    /* exp far in the past, and negative. */
    expect_claims_rc("{\"sub\":\"alice\",\"exp\":1}", RC_EEXPIRED);
    expect_claims_rc("{\"sub\":\"alice\",\"exp\":-5}", RC_EEXPIRED);
    expect_claims_rc("{\"sub\":\"alice\",\"exp\":0}", RC_EEXPIRED);
}

/* Replaces tok[pos] with the base64url character whose top bit differs; twice restores. */
static void flip_char(char *tok, size_t pos)
{
    const char *at = strchr(url_alphabet, tok[pos]);

    assert_non_null(at);
    tok[pos] = url_alphabet[(size_t)(at - url_alphabet) ^ 32];
}

/* One changed character in any segment breaks the signature. */
static void test_bad_signature_each_segment(void **state)
{
    char sub[JWT_MAX_SUB + 1];
    char *tok = NULL;
    char *dot1, *dot2;

    assert_int_equal(jwt_sign((const uint8_t *)KEY, KEY_LEN, "alice", NOW, EXP, &tok), 0);
    assert_int_equal(verify(tok, sub), 0);
    dot1 = strchr(tok, '.');
    dot2 = strrchr(tok, '.');

    /* One character in each segment, the last one included; flipping back restores. */
    const size_t positions[] = {0,
                                3,
                                (size_t)(dot1 - tok) - 1,
                                (size_t)(dot1 - tok) + 1,
                                (size_t)(dot1 - tok) + 5,
                                (size_t)(dot2 - tok) - 1,
                                (size_t)(dot2 - tok) + 1,
                                (size_t)(dot2 - tok) + 20,
                                strlen(tok) - 1};
    for (size_t i = 0; i < sizeof positions / sizeof positions[0]; i++) {
        flip_char(tok, positions[i]);
        if (verify(tok, sub) != RC_EAUTH)
            fail_msg("flip at %zu accepted", positions[i]);
        assert_string_equal(sub, "");
        flip_char(tok, positions[i]);
        assert_int_equal(verify(tok, sub), 0);
    }
    free(tok);
}

/* Every single-character substitution anywhere is refused. */
static void test_every_single_char_change_refused(void **state)
{
    static const char extra[] = ".=+/ \t~!%*";
    char sub[JWT_MAX_SUB + 1];
    char *tok = NULL;
    size_t len;

    assert_int_equal(jwt_sign((const uint8_t *)KEY, KEY_LEN, "alice", NOW, EXP, &tok), 0);
    len = strlen(tok);
    for (size_t pos = 0; pos < len; pos++) {
        char orig = tok[pos];
        for (size_t c = 0; c < sizeof url_alphabet - 1 + sizeof extra; c++) {
            char r = c < sizeof url_alphabet - 1 ? url_alphabet[c]
                                                 : extra[c - (sizeof url_alphabet - 1)];
            if (r == orig)
                continue;
            tok[pos] = r; /* extra's last element is the NUL byte */
            int rc =
                jwt_verify((const uint8_t *)KEY, KEY_LEN, tok, len, NOW, sub, sizeof sub, NULL);
            if (rc != RC_EAUTH)
                fail_msg("pos %zu char 0x%02x: rc %d", pos, (unsigned char)r, rc);
        }
        tok[pos] = orig;
    }
    assert_int_equal(verify(tok, sub), 0);
    free(tok);
}

/* A signature with non-zero unused bits is refused though it decodes alike. */
static void test_non_canonical_signature(void **state)
{
    char sub[JWT_MAX_SUB + 1];
    uint8_t a[40], b[40];
    size_t alen, blen;
    char *tok = NULL;
    char *sig;
    size_t last;
    const char *at;

    assert_int_equal(jwt_sign((const uint8_t *)KEY, KEY_LEN, "alice", NOW, EXP, &tok), 0);
    sig = strrchr(tok, '.') + 1;
    assert_int_equal(b64_decode(sig, strlen(sig), a, &alen), 0);

    /* 43 characters hold 258 bits: changing the two unused low bits of the last
     * character yields the same 32 bytes, which must still be refused. */
    last = strlen(tok) - 1;
    at = strchr(url_alphabet, tok[last]);
    assert_non_null(at);
    for (int bits = 1; bits < 4; bits++) {
        char saved = tok[last];
        tok[last] = url_alphabet[(size_t)(at - url_alphabet) ^ (size_t)bits];
        assert_int_equal(b64_decode(sig, strlen(sig), b, &blen), 0);
        assert_int_equal(blen, alen);
        assert_memory_equal(a, b, alen);
        assert_int_equal(verify(tok, sub), RC_EAUTH);
        tok[last] = saved;
    }
    assert_int_equal(verify(tok, sub), 0);
    free(tok);
}

/* Other keys, prefixes and the empty key are refused. */
static void test_wrong_key(void **state)
{
    char sub[JWT_MAX_SUB + 1];
    char *tok = NULL;
    size_t len;

    assert_int_equal(jwt_sign((const uint8_t *)KEY, KEY_LEN, "alice", NOW, EXP, &tok), 0);
    len = strlen(tok);
    assert_int_equal(jwt_verify((const uint8_t *)"secret-key-0123456788", KEY_LEN, tok, len, NOW,
                                sub, sizeof sub, NULL),
                     RC_EAUTH);
    /* A prefix of the key, the key with one more byte, and no key. (The key plus a NUL
     * would verify: HMAC zero-pads short keys, so trailing zero bytes do not count.) */
    assert_int_equal(
        jwt_verify((const uint8_t *)KEY, KEY_LEN - 1, tok, len, NOW, sub, sizeof sub, NULL),
        RC_EAUTH);
    assert_int_equal(
        jwt_verify((const uint8_t *)KEY "x", KEY_LEN + 1, tok, len, NOW, sub, sizeof sub, NULL),
        RC_EAUTH);
    assert_int_equal(jwt_verify((const uint8_t *)KEY, 0, tok, len, NOW, sub, sizeof sub, NULL),
                     RC_EAUTH);
    assert_int_equal(jwt_verify(NULL, 0, tok, len, NOW, sub, sizeof sub, NULL), RC_EAUTH);
    assert_string_equal(sub, "");
    free(tok);

    /* A token really signed under the empty key is refused too: an empty key is never
     * a valid configuration. */
    char *h = b64url(HS256_HEADER, sizeof HS256_HEADER - 1);
    char *p = b64url(GOOD_CLAIMS, sizeof GOOD_CLAIMS - 1);
    tok = sign_segments_md(EVP_sha256(), "", 0, h, p);
    assert_int_equal(
        jwt_verify((const uint8_t *)"", 0, tok, strlen(tok), NOW, sub, sizeof sub, NULL), RC_EAUTH);
    free(tok);
    free(h);
    free(p);
}

/* Unsecured tokens (alg "none") are refused, signed or not. */
static void test_alg_none(void **state)
{
    static const char *const headers[] = {
        "{\"alg\":\"none\"}",
        "{\"alg\":\"none\",\"typ\":\"JWT\"}",
        "{\"alg\":\"None\"}",
        "{\"alg\":\"NONE\"}",
    };
    char sub[JWT_MAX_SUB + 1];

    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        char *h = b64url(headers[i], strlen(headers[i]));
        char *p = b64url(GOOD_CLAIMS, strlen(GOOD_CLAIMS));
        char tok[512];

        /* Unsecured JWS: empty signature. */
        snprintf(tok, sizeof tok, "%s.%s.", h, p);
        assert_int_equal(verify(tok, sub), RC_EAUTH);
        /* Without the trailing dot. */
        snprintf(tok, sizeof tok, "%s.%s", h, p);
        assert_int_equal(verify(tok, sub), RC_EAUTH);
        free(h);
        free(p);
        /* Even with a valid HS256 signature, the header's alg decides. */
        expect_header_rc(headers[i], RC_EAUTH);
    }
}

/* Any alg but exactly "HS256" is refused, HS512 included. */
static void test_alg_other(void **state)
{
    static const char *const headers[] = {
        "{\"alg\":\"HS512\",\"typ\":\"JWT\"}",
        "{\"alg\":\"HS384\"}",
        "{\"alg\":\"RS256\"}",
        "{\"alg\":\"ES256\"}",
        "{\"alg\":\"hs256\"}",
        "{\"alg\":\"HS256 \"}",
        "{\"alg\":\"HS2560\"}",
        "{\"alg\":\"HS25\"}",
        "{\"alg\":\"\"}",
        "{\"alg\":256}",
        "{\"alg\":null}",
        "{\"alg\":true}",
        "{\"alg\":[\"HS256\"]}",
        "{\"alg\":{\"name\":\"HS256\"}}",
        "{\"ALG\":\"HS256\"}",
        "{\"typ\":\"JWT\"}",
        "{}",
    };
    char sub[JWT_MAX_SUB + 1];

    /* Signed with HS256 so that only the header can be the reason. */
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++)
        expect_header_rc(headers[i], RC_EAUTH);

    /* A genuine HS512 token (86-character signature) under the same key. */
    char *h = b64url(headers[0], strlen(headers[0]));
    char *p = b64url(GOOD_CLAIMS, strlen(GOOD_CLAIMS));
    char *tok = sign_segments_md(EVP_sha512(), KEY, KEY_LEN, h, p);
    assert_int_equal(strlen(strrchr(tok, '.') + 1), 86);
    assert_int_equal(verify(tok, sub), RC_EAUTH);
    free(tok);
    free(h);
    free(p);
}

/* typ, crit, duplicate names and malformed headers. */
static void test_header_checks(void **state)
{
    expect_header_rc("{\"alg\":\"HS256\",\"typ\":\"JWS\"}", RC_EAUTH);
    expect_header_rc("{\"alg\":\"HS256\",\"typ\":\"jwt\"}", RC_EAUTH);
    expect_header_rc("{\"alg\":\"HS256\",\"typ\":\"\"}", RC_EAUTH);
    expect_header_rc("{\"alg\":\"HS256\",\"typ\":1}", RC_EAUTH);
    expect_header_rc("{\"alg\":\"HS256\",\"typ\":null}", RC_EAUTH);
    /* We understand no extension, so "crit" is always refused. */
    expect_header_rc("{\"alg\":\"HS256\",\"crit\":[\"exp\"],\"exp\":1}", RC_EAUTH);
    expect_header_rc("{\"alg\":\"HS256\",\"crit\":[]}", RC_EAUTH);
    /* Duplicate names could mean different things to different parsers. */
    expect_header_rc("{\"alg\":\"HS256\",\"alg\":\"none\"}", RC_EAUTH);
    expect_header_rc("{\"alg\":\"none\",\"alg\":\"HS256\"}", RC_EAUTH);
    expect_header_rc("{\"alg\":\"HS256\",\"alg\":\"HS256\"}", RC_EAUTH);
    /* Not an object, or not JSON. */
    expect_header_rc("[\"HS256\"]", RC_EAUTH);
    expect_header_rc("\"HS256\"", RC_EAUTH);
    expect_header_rc("256", RC_EAUTH);
    expect_header_rc("null", RC_EAUTH);
    expect_header_rc("{\"alg\":\"HS256\"", RC_EAUTH);
    expect_header_rc("{\"alg\":\"HS256\"}x", RC_EAUTH);
    expect_header_rc("{\"alg\":\"HS256\"}{}", RC_EAUTH);
    expect_header_rc("{'alg':'HS256'}", RC_EAUTH);
    expect_header_rc("\xEF\xBB\xBF{\"alg\":\"HS256\"}", RC_EAUTH);
    expect_header_rc("{\"alg\":\"HS\\u0000256\"}", RC_EAUTH);
    expect_header_rc("{\"alg\":\"HS256\",\"x\":\"\xC0\x80\"}", RC_EAUTH);
    /* Control: the same shape with a good header passes. */
    expect_header_rc("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", 0);
}

/* Claims must be one JSON object. */
static void test_claims_not_object(void **state)
{
    expect_claims_rc("[\"alice\",2000000000]", RC_EAUTH);
    expect_claims_rc("\"alice\"", RC_EAUTH);
    expect_claims_rc("2000000000", RC_EAUTH);
    expect_claims_rc("null", RC_EAUTH);
    expect_claims_rc("true", RC_EAUTH);
    expect_claims_rc("{\"sub\":\"alice\",\"exp\":2000000000", RC_EAUTH);
    expect_claims_rc("{\"sub\":\"alice\",\"exp\":2000000000}garbage", RC_EAUTH);
    expect_claims_rc("{\"sub\":\"alice\",\"sub\":\"bob\",\"exp\":2000000000}", RC_EAUTH);
    expect_claims_rc(" ", RC_EAUTH);
    expect_claims_rc(GOOD_CLAIMS, 0);
}

/* exp must be present and an integer. */
static void test_exp_checks(void **state)
{
    expect_claims_rc("{\"sub\":\"alice\"}", RC_EAUTH);
    expect_claims_rc("{\"sub\":\"alice\",\"exp\":\"2000000000\"}", RC_EAUTH);
    expect_claims_rc("{\"sub\":\"alice\",\"exp\":2000000000.0}", RC_EAUTH);
    expect_claims_rc("{\"sub\":\"alice\",\"exp\":2e9}", RC_EAUTH);
    expect_claims_rc("{\"sub\":\"alice\",\"exp\":null}", RC_EAUTH);
    expect_claims_rc("{\"sub\":\"alice\",\"exp\":true}", RC_EAUTH);
    expect_claims_rc("{\"sub\":\"alice\",\"exp\":[2000000000]}", RC_EAUTH);
    expect_claims_rc("{\"sub\":\"alice\",\"EXP\":2000000000}", RC_EAUTH);
    /* Too big for a 64-bit integer: jansson refuses to parse it. */
    expect_claims_rc("{\"sub\":\"alice\",\"exp\":99999999999999999999}", RC_EAUTH);
    expect_claims_rc("{\"sub\":\"alice\",\"exp\":9223372036854775807}", 0);
    /* A missing sub wins over expiry: the claims are malformed either way. */
    expect_claims_rc("{\"exp\":1}", RC_EAUTH);
}

/* nbf, when present, must be an integer not after now. */
static void test_nbf(void **state)
{
    expect_claims_rc("{\"sub\":\"alice\",\"exp\":2000000000,\"nbf\":1700000000}", 0);
    expect_claims_rc("{\"sub\":\"alice\",\"exp\":2000000000,\"nbf\":1699999999}", 0);
    expect_claims_rc("{\"sub\":\"alice\",\"exp\":2000000000,\"nbf\":1700000001}", RC_EAUTH);
    expect_claims_rc("{\"sub\":\"alice\",\"exp\":2000000000,\"nbf\":\"1\"}", RC_EAUTH);
    expect_claims_rc("{\"sub\":\"alice\",\"exp\":2000000000,\"nbf\":1.5}", RC_EAUTH);
    expect_claims_rc("{\"sub\":\"alice\",\"exp\":2000000000,\"nbf\":null}", RC_EAUTH);
}

/* sub must be a non-empty string of at most JWT_MAX_SUB bytes. */
static void test_sub_checks(void **state)
{
    char claims[1024];
    char sub[JWT_MAX_SUB + 1];
    char name[JWT_MAX_SUB + 2];
    char *tok;

    expect_claims_rc("{\"exp\":2000000000}", RC_EAUTH);
    expect_claims_rc("{\"sub\":\"\",\"exp\":2000000000}", RC_EAUTH);
    expect_claims_rc("{\"sub\":42,\"exp\":2000000000}", RC_EAUTH);
    expect_claims_rc("{\"sub\":null,\"exp\":2000000000}", RC_EAUTH);
    expect_claims_rc("{\"sub\":[\"alice\"],\"exp\":2000000000}", RC_EAUTH);
    expect_claims_rc("{\"sub\":{},\"exp\":2000000000}", RC_EAUTH);
    expect_claims_rc("{\"sub\":\"a\\u0000b\",\"exp\":2000000000}", RC_EAUTH);
    expect_claims_rc("{\"sub\":\"\\ud800\",\"exp\":2000000000}", RC_EAUTH);
    expect_claims_rc("{\"sub\":\"\xFF\",\"exp\":2000000000}", RC_EAUTH);

    /* JWT_MAX_SUB bytes is the limit, one more is refused. */
    memset(name, 'u', JWT_MAX_SUB);
    name[JWT_MAX_SUB] = '\0';
    snprintf(claims, sizeof claims, "{\"sub\":\"%s\",\"exp\":2000000000}", name);
    tok = make_token(HS256_HEADER, claims);
    assert_int_equal(verify(tok, sub), 0);
    assert_string_equal(sub, name);
    free(tok);
    name[JWT_MAX_SUB] = 'u';
    name[JWT_MAX_SUB + 1] = '\0';
    snprintf(claims, sizeof claims, "{\"sub\":\"%s\",\"exp\":2000000000}", name);
    expect_claims_rc(claims, RC_EAUTH);
    /* The limit is in bytes: 128 two-byte characters are 256 bytes. */
    claims[0] = '\0';
    strcat(claims, "{\"sub\":\"");
    for (int i = 0; i < 128; i++)
        strcat(claims, "\xC3\xA9");
    strcat(claims, "\",\"exp\":2000000000}");
    expect_claims_rc(claims, RC_EAUTH);

    /* Escapes are decoded before the copy. */
    tok = make_token(HS256_HEADER, "{\"sub\":\"a\\\"b\\\\c\\u00e9\\n\",\"exp\":2000000000}");
    assert_int_equal(verify(tok, sub), 0);
    assert_string_equal(sub, "a\"b\\c\xC3\xA9\n");
    free(tok);
}

/* A missing or short sub_out is a caller error. */
static void test_sub_out_args(void **state)
{
    char sub[JWT_MAX_SUB + 1];
    char *tok = NULL;

    assert_int_equal(jwt_sign((const uint8_t *)KEY, KEY_LEN, "alice", NOW, EXP, &tok), 0);
    assert_int_equal(
        jwt_verify((const uint8_t *)KEY, KEY_LEN, tok, strlen(tok), NOW, sub, JWT_MAX_SUB, NULL),
        RC_EINVAL);
    assert_int_equal(
        jwt_verify((const uint8_t *)KEY, KEY_LEN, tok, strlen(tok), NOW, NULL, sizeof sub, NULL),
        RC_EINVAL);
    free(tok);
}

/* jwt_sign refuses bad keys and subs and leaves *out NULL. */
static void test_sign_args(void **state)
{
    char name[JWT_MAX_SUB + 2];
    char *tok = (char *)"sentinel";

    assert_int_equal(jwt_sign((const uint8_t *)KEY, KEY_LEN, NULL, NOW, EXP, &tok), RC_EINVAL);
    assert_null(tok);
    assert_int_equal(jwt_sign((const uint8_t *)KEY, KEY_LEN, "", NOW, EXP, &tok), RC_EINVAL);
    assert_int_equal(jwt_sign((const uint8_t *)KEY, 0, "alice", NOW, EXP, &tok), RC_EINVAL);
    assert_int_equal(jwt_sign(NULL, 0, "alice", NOW, EXP, &tok), RC_EINVAL);
    assert_int_equal(jwt_sign((const uint8_t *)KEY, KEY_LEN, "alice", NOW, EXP, NULL), RC_EINVAL);
    /* Not UTF-8: an overlong NUL, a lone continuation, a surrogate. */
    assert_int_equal(jwt_sign((const uint8_t *)KEY, KEY_LEN, "a\xC0\x80", NOW, EXP, &tok),
                     RC_EINVAL);
    assert_int_equal(jwt_sign((const uint8_t *)KEY, KEY_LEN, "\x80", NOW, EXP, &tok), RC_EINVAL);
    assert_int_equal(jwt_sign((const uint8_t *)KEY, KEY_LEN, "\xED\xA0\x80", NOW, EXP, &tok),
                     RC_EINVAL);
    assert_null(tok);

    memset(name, 'u', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    assert_int_equal(jwt_sign((const uint8_t *)KEY, KEY_LEN, name, NOW, EXP, &tok), RC_EINVAL);
    assert_null(tok);
    name[JWT_MAX_SUB] = '\0';
    assert_int_equal(jwt_sign((const uint8_t *)KEY, KEY_LEN, name, NOW, EXP, &tok), 0);
    assert_non_null(tok);
    free(tok);
}

/* Subs that need JSON escaping round-trip, the worst case within JWT_MAX_LEN. */
static void test_sign_awkward_subs(void **state)
{
    char ctrl[JWT_MAX_SUB + 1];
    char big[JWT_MAX_SUB + 1];
    const char *subs[] = {"a\"b",       "back\\slash", "sl/ash",
                          "tab\there",  "caf\xC3\xA9", "\xF0\x9F\x98\x80",
                          "room:lobby", ctrl,          big};
    char sub[JWT_MAX_SUB + 1];
    int64_t exp = 0;

    /* 255 control characters escape to \u0001 each: the worst case must still fit. */
    memset(ctrl, 1, JWT_MAX_SUB);
    ctrl[JWT_MAX_SUB] = '\0';
    for (size_t i = 0; i + 4 <= JWT_MAX_SUB; i += 4)
        memcpy(big + i, "\xF0\x9F\x98\x80", 4);
    memset(big + JWT_MAX_SUB / 4 * 4, 'x', JWT_MAX_SUB % 4);
    big[JWT_MAX_SUB] = '\0';

    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        char *tok = NULL;
        assert_int_equal(jwt_sign((const uint8_t *)KEY, KEY_LEN, subs[i], NOW, EXP, &tok), 0);
        assert_true(strlen(tok) <= JWT_MAX_LEN);
        assert_int_equal(
            jwt_verify((const uint8_t *)KEY, KEY_LEN, tok, strlen(tok), NOW, sub, sizeof sub, &exp),
            0);
        assert_string_equal(sub, subs[i]);
        assert_int_equal(exp, EXP);
        free(tok);
    }
}

/* Malformed, truncated, decorated and huge inputs are refused. */
static void test_garbage(void **state)
{
    static const char *const bad[] = {
        "",     ".",     "..",
        "...",  "....",  "a",
        "a.b",  "a.b.c", "a.b.c.d",
        "a..c", ".b.c",  "a.b.",
        "..c",  "=.=.=", "eyJ9.e30.",
        " ",    "\n",    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIiwiZXhwIjoyMDAwMDAwMDAwfQ.x",
    };
    char sub[JWT_MAX_SUB + 1];
    char *tok = NULL;
    char buf[JWT_MAX_LEN + 64];
    size_t len;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (verify(bad[i], sub) != RC_EAUTH)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    assert_int_equal(jwt_verify((const uint8_t *)KEY, KEY_LEN, NULL, 0, NOW, sub, sizeof sub, NULL),
                     RC_EAUTH);
    assert_int_equal(
        jwt_verify((const uint8_t *)KEY, KEY_LEN, NULL, 10, NOW, sub, sizeof sub, NULL), RC_EAUTH);

    /* A good token with things around it. */
    assert_int_equal(jwt_sign((const uint8_t *)KEY, KEY_LEN, "alice", NOW, EXP, &tok), 0);
    len = strlen(tok);
    static const char *const around[][2] = {{"", "."}, {".", ""},       {"", " "},
                                            {" ", ""}, {"", "\n"},      {"", ".e30"},
                                            {"", "="}, {"Bearer ", ""}, {"\"", "\""}};
    for (size_t i = 0; i < sizeof around / sizeof around[0]; i++) {
        snprintf(buf, sizeof buf, "%s%s%s", around[i][0], tok, around[i][1]);
        if (verify(buf, sub) != RC_EAUTH)
            fail_msg("accepted \"%s\"", buf);
    }
    /* An embedded NUL, and the terminator counted in len. */
    assert_int_equal(
        jwt_verify((const uint8_t *)KEY, KEY_LEN, tok, len + 1, NOW, sub, sizeof sub, NULL),
        RC_EAUTH);
    memcpy(buf, tok, len + 1);
    buf[10] = '\0';
    assert_int_equal(
        jwt_verify((const uint8_t *)KEY, KEY_LEN, buf, len, NOW, sub, sizeof sub, NULL), RC_EAUTH);
    /* Truncated at every length. */
    for (size_t n = 0; n < len; n++)
        assert_int_equal(
            jwt_verify((const uint8_t *)KEY, KEY_LEN, tok, n, NOW, sub, sizeof sub, NULL),
            RC_EAUTH);
    free(tok);

    /* Very long inputs, with and without the dots. */
    char *huge = malloc(200000);
    assert_non_null(huge);
    memset(huge, 'A', 200000);
    assert_int_equal(
        jwt_verify((const uint8_t *)KEY, KEY_LEN, huge, 200000, NOW, sub, sizeof sub, NULL),
        RC_EAUTH);
    huge[100] = '.';
    huge[100000] = '.';
    assert_int_equal(
        jwt_verify((const uint8_t *)KEY, KEY_LEN, huge, 200000, NOW, sub, sizeof sub, NULL),
        RC_EAUTH);
    huge[JWT_MAX_LEN - 44] = '.';
    huge[100000] = 'A';
    assert_int_equal(
        jwt_verify((const uint8_t *)KEY, KEY_LEN, huge, JWT_MAX_LEN, NOW, sub, sizeof sub, NULL),
        RC_EAUTH);
    free(huge);
}

/* Standard-alphabet or padded segments are refused even when signed. */
static void test_std_alphabet_and_padding_refused(void **state)
{
    /* A sub chosen so that the claims segment contains both '-' and '_'. */
    static const char claims[] = "{\"sub\":\"a>>?\xC3\xBF~~~\",\"exp\":2000000000}";
    char sub[JWT_MAX_SUB + 1];
    char *h = b64url(HS256_HEADER, sizeof HS256_HEADER - 1);
    char *p = b64url(claims, sizeof claims - 1);
    char *tok;
    char padded[128];

    assert_non_null(strchr(p, '-'));
    assert_non_null(strchr(p, '_'));
    /* Control: as base64url it is accepted. */
    tok = sign_segments(h, p);
    assert_int_equal(verify(tok, sub), 0);
    free(tok);

    /* The same bytes in the standard alphabet, correctly signed over that text. */
    for (char *c = p; *c; c++) {
        if (*c == '-')
            *c = '+';
        else if (*c == '_')
            *c = '/';
    }
    tok = sign_segments(h, p);
    assert_int_equal(verify(tok, sub), RC_EAUTH);
    free(tok);

    free(p);
    free(h);

    /* Padding on either segment, correctly signed over the padded text; trailing spaces
     * set the JSON lengths to 1 or 2 mod 3, so that "==" or "=" is the right padding. */
    static const char *const pairs[][2] = {
        {"{\"alg\":\"HS256\"} ", GOOD_CLAIMS},  /* 16 bytes: "==" */
        {"{\"alg\":\"HS256\"}  ", GOOD_CLAIMS}, /* 17 bytes: "=" */
        {HS256_HEADER, GOOD_CLAIMS},            /* 32 bytes: "=" */
        {HS256_HEADER, GOOD_CLAIMS "  "},       /* 34 bytes: "==" */
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        h = b64url(pairs[i][0], strlen(pairs[i][0]));
        p = b64url(pairs[i][1], strlen(pairs[i][1]));
        /* Control: unpadded, it is accepted. */
        tok = sign_segments(h, p);
        assert_int_equal(verify(tok, sub), 0);
        free(tok);
        char *seg = i < 2 ? h : p;
        assert_int_not_equal(strlen(seg) % 4, 0);
        snprintf(padded, sizeof padded, "%s%s", seg, strlen(seg) % 4 == 2 ? "==" : "=");
        tok = i < 2 ? sign_segments(padded, p) : sign_segments(h, padded);
        assert_int_equal(verify(tok, sub), RC_EAUTH);
        free(tok);
        free(h);
        free(p);
    }
}

/* malloc'd well-signed token of exactly target bytes (claims padded with a filler). */
static char *token_of_len(size_t target)
{
    char *claims = malloc(JWT_MAX_LEN * 2);

    assert_non_null(claims);
    for (size_t fill = 0; fill < JWT_MAX_LEN; fill++) {
        int n = snprintf(claims, JWT_MAX_LEN * 2, "{\"sub\":\"alice\",\"exp\":2000000000,\"f\":\"");
        memset(claims + n, 'x', fill);
        strcpy(claims + n + fill, "\"}");
        char *tok = make_token(HS256_HEADER, claims);
        if (strlen(tok) == target) {
            free(claims);
            return tok;
        }
        free(tok);
    }
    fail_msg("no token of length %zu", target);
    return NULL;
}

/* A valid token of JWT_MAX_LEN bytes passes; one byte more is refused. */
static void test_max_len(void **state)
{
    char sub[JWT_MAX_SUB + 1];
    char *tok = token_of_len(JWT_MAX_LEN);

    assert_int_equal(verify(tok, sub), 0);
    assert_string_equal(sub, "alice");
    free(tok);
    tok = token_of_len(JWT_MAX_LEN + 1);
    assert_int_equal(verify(tok, sub), RC_EAUTH);
    free(tok);
}

/* Random edits of a good token and random dotted bytes are refused. */
static void test_random_mutations(void **state)
{
    uint64_t seed = 0xDEADBEEF;
    char sub[JWT_MAX_SUB + 1];
    char *tok = NULL;
    char buf[512];
    size_t len;

    assert_int_equal(jwt_sign((const uint8_t *)KEY, KEY_LEN, "alice", NOW, EXP, &tok), 0);
    len = strlen(tok);
    for (int round = 0; round < 20000; round++) {
        size_t n = len;
        memcpy(buf, tok, len);
        int edits = 1 + (int)(rng_next(&seed) % 4);
        for (int e = 0; e < edits; e++) {
            uint64_t r = rng_next(&seed);
            size_t pos = n ? (size_t)(r >> 8) % n : 0;
            switch (r % 4) {
            case 0: buf[pos] = (char)(r >> 40); break;
            case 1: buf[pos] = url_alphabet[(r >> 40) % 64]; break;
            case 2:
                if (n + 1 < sizeof buf) {
                    memmove(buf + pos + 1, buf + pos, n - pos);
                    buf[pos] = ".=+/A"[(r >> 40) % 5];
                    n++;
                }
                break;
            case 3:
                if (n) {
                    memmove(buf + pos, buf + pos + 1, n - pos - 1);
                    n--;
                }
                break;
            }
        }
        int rc = jwt_verify((const uint8_t *)KEY, KEY_LEN, buf, n, NOW, sub, sizeof sub, NULL);
        if (n == len && memcmp(buf, tok, len) == 0)
            assert_int_equal(rc, 0);
        else
            assert_int_equal(rc, RC_EAUTH);
    }
    /* Random bytes with two dots. */
    for (int round = 0; round < 20000; round++) {
        size_t n = 5 + rng_next(&seed) % 200;
        for (size_t i = 0; i < n; i++) {
            uint64_t r = rng_next(&seed);
            buf[i] = r & 1 ? url_alphabet[(r >> 8) % 64] : (char)(r >> 8);
        }
        buf[rng_next(&seed) % n] = '.';
        buf[rng_next(&seed) % n] = '.';
        assert_int_equal(
            jwt_verify((const uint8_t *)KEY, KEY_LEN, buf, n, NOW, sub, sizeof sub, NULL),
            RC_EAUTH);
    }
    free(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_verify_round_trip),
        cmocka_unit_test(test_sign_known_output),
        cmocka_unit_test(test_known_vector),
        cmocka_unit_test(test_rfc7515_example),
        cmocka_unit_test(test_header_whitespace_and_order),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_bad_signature_each_segment),
        cmocka_unit_test(test_every_single_char_change_refused),
        cmocka_unit_test(test_non_canonical_signature),
        cmocka_unit_test(test_wrong_key),
        cmocka_unit_test(test_alg_none),
        cmocka_unit_test(test_alg_other),
        cmocka_unit_test(test_header_checks),
        cmocka_unit_test(test_claims_not_object),
        cmocka_unit_test(test_exp_checks),
        cmocka_unit_test(test_nbf),
        cmocka_unit_test(test_sub_checks),
        cmocka_unit_test(test_sub_out_args),
        cmocka_unit_test(test_sign_args),
        cmocka_unit_test(test_sign_awkward_subs),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_std_alphabet_and_padding_refused),
        cmocka_unit_test(test_max_len),
        cmocka_unit_test(test_random_mutations),
    };

    return cmocka_run_group_tests_name("jwt", tests, NULL, NULL);
}
