/* jwt.c - HS256 JSON Web Tokens (RFC 7519 / RFC 7515). */
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "jwt.h"
#include "util/base64.h"

#define JWT_SIG_LEN 32     /* HMAC-SHA256 output */
#define JWT_SIG_B64_LEN 43 /* its unpadded base64url encoding */

static const char jwt_header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

/* HMAC-SHA256 of data[0..n) under key into mac; 0 or -1. */
static int jwt_hs256(const uint8_t *key, size_t key_len, const char *data, size_t n,
                     uint8_t mac[JWT_SIG_LEN])
{
    unsigned int mac_len = 0;

    if (!HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)data, n, mac, &mac_len))
        return -1;
    return mac_len == JWT_SIG_LEN ? 0 : -1;
}

/* True when key is usable as an HMAC key here. */
static bool jwt_key_ok(const uint8_t *key, size_t key_len)
{
    return key && key_len > 0 && key_len <= INT_MAX;
}

int jwt_sign(const uint8_t *key, size_t key_len, const char *sub, int64_t now, int64_t exp,
             char **out)
{
    char payload[JWT_MAX_LEN];
    uint8_t mac[JWT_SIG_LEN];
    json_error_t err;
    json_t *claims = NULL;
    char *tok = NULL;
    size_t sub_len;
    size_t plen;
    size_t o;
    int rc;

    if (!out)
        return RC_EINVAL;
    *out = NULL;
    if (!jwt_key_ok(key, key_len) || !sub)
        return RC_EINVAL;
    sub_len = strnlen(sub, JWT_MAX_SUB + 1);
    if (sub_len == 0 || sub_len > JWT_MAX_SUB)
        return RC_EINVAL;

    /* jansson refuses a sub that is not valid UTF-8; tell that apart from OOM. */
    claims = json_pack_ex(&err, 0, "{s:s, s:I, s:I}", "sub", sub, "iat", (json_int_t)now, "exp",
                          (json_int_t)exp);
    if (!claims) {
        rc = json_error_code(&err) == json_error_out_of_memory ? RC_ENOMEM : RC_EINVAL;
        goto out;
    }
    /* At most 6 bytes per sub byte (\u00XX) plus two integers: always fits. */
    plen = json_dumpb(claims, payload, sizeof payload, JSON_COMPACT);
    if (plen == 0 || plen > sizeof payload) {
        rc = RC_ENOMEM;
        goto out;
    }

    tok = malloc(b64url_encoded_len(sizeof jwt_header - 1) + 1 + b64url_encoded_len(plen) + 1 +
                 JWT_SIG_B64_LEN + 1);
    if (!tok) {
        rc = RC_ENOMEM;
        goto out;
    }
    o = b64url_encode((const uint8_t *)jwt_header, sizeof jwt_header - 1, tok);
    tok[o++] = '.';
    o += b64url_encode((const uint8_t *)payload, plen, tok + o);
    if (jwt_hs256(key, key_len, tok, o, mac) < 0) {
        rc = RC_ENOMEM;
        goto out;
    }
    tok[o++] = '.';
    b64url_encode(mac, sizeof mac, tok + o);
    *out = tok;
    tok = NULL;
    rc = 0;
out:
    free(tok);
    json_decref(claims);
    return rc;
}

/* True when c belongs to the base64url alphabet (RFC 4648 section 5). */
static bool jwt_b64url_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* Decodes the base64url segment seg[0..n) and parses it as JSON; NULL on any failure. */
static json_t *jwt_decode_json(const char *seg, size_t n)
{
    uint8_t buf[JWT_MAX_LEN];
    json_error_t err;
    size_t len;

    if (n > JWT_MAX_LEN || b64_decode(seg, n, buf, &len) < 0)
        return NULL;
    /* Duplicate names are refused so that {"alg":"HS256","alg":"none"} cannot mean
     * different things to us and to another parser. */
    return json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &err);
}

/* True when v is the JSON string s exactly. */
static bool jwt_str_is(const json_t *v, const char *s)
{
    size_t n = strlen(s);

    return json_is_string(v) && json_string_length(v) == n &&
           memcmp(json_string_value(v), s, n) == 0;
}

/* True when the JOSE header h is an object naming HS256, with typ "JWT" if any. */
static bool jwt_header_ok(const json_t *h)
{
    const json_t *typ;

    if (!json_is_object(h) || !jwt_str_is(json_object_get(h, "alg"), "HS256"))
        return false;
    typ = json_object_get(h, "typ");
    if (typ && !jwt_str_is(typ, "JWT"))
        return false;
    /* RFC 7515 section 4.1.11: we implement no extension, so any "crit" must be refused. */
    return json_object_get(h, "crit") == NULL;
}

int jwt_verify(const uint8_t *key, size_t key_len, const char *token, size_t len, int64_t now,
               char *sub_out, size_t sub_cap, int64_t *exp_out)
{
    uint8_t mac[JWT_SIG_LEN];
    uint8_t sig[3 * JWT_SIG_B64_LEN / 4 + 3];
    char canon[JWT_SIG_B64_LEN + 1];
    const char *dot[2];
    size_t ndots = 0;
    size_t hlen, plen, slen, sig_len, sub_len;
    json_t *header = NULL;
    json_t *claims = NULL;
    const json_t *sub, *exp, *nbf;
    int rc = RC_EAUTH;

    if (!sub_out || sub_cap < JWT_MAX_SUB + 1)
        return RC_EINVAL;
    sub_out[0] = '\0';
    if (!jwt_key_ok(key, key_len) || !token || len == 0 || len > JWT_MAX_LEN)
        return RC_EAUTH;

    /* JWS compact serialization: three base64url segments, no padding (RFC 7515 section 2),
     * so '+', '/', '=' and anything else b64_decode would tolerate are refused here. */
    for (size_t i = 0; i < len; i++) {
        if (token[i] == '.') {
            if (ndots == 2)
                goto out;
            dot[ndots++] = token + i;
        } else if (!jwt_b64url_char((unsigned char)token[i])) {
            goto out;
        }
    }
    if (ndots != 2)
        goto out;
    hlen = (size_t)(dot[0] - token);
    plen = (size_t)(dot[1] - dot[0] - 1);
    slen = (size_t)(token + len - dot[1] - 1);
    if (hlen == 0 || plen == 0 || slen != JWT_SIG_B64_LEN)
        goto out;

    /* 43 characters carry 258 bits: the last two must be zero, or many strings would
     * verify as the same signature. */
    if (b64_decode(dot[1] + 1, slen, sig, &sig_len) < 0 || sig_len != JWT_SIG_LEN)
        goto out;
    b64url_encode(sig, sig_len, canon);
    if (memcmp(canon, dot[1] + 1, slen) != 0)
        goto out;

    /* Authenticate before parsing: jansson only ever sees input we signed. */
    if (jwt_hs256(key, key_len, token, (size_t)(dot[1] - token), mac) < 0)
        goto out;
    if (CRYPTO_memcmp(mac, sig, JWT_SIG_LEN) != 0)
        goto out;

    header = jwt_decode_json(token, hlen);
    if (!jwt_header_ok(header))
        goto out;
    claims = jwt_decode_json(dot[0] + 1, plen);
    if (!json_is_object(claims))
        goto out;
    sub = json_object_get(claims, "sub");
    exp = json_object_get(claims, "exp");
    nbf = json_object_get(claims, "nbf");
    if (!json_is_string(sub) || !json_is_integer(exp) || (nbf && !json_is_integer(nbf)))
        goto out;
    sub_len = json_string_length(sub);
    if (sub_len == 0 || sub_len > JWT_MAX_SUB)
        goto out;
    if (json_integer_value(exp) <= now) {
        rc = RC_EEXPIRED;
        goto out;
    }
    if (nbf && json_integer_value(nbf) > now)
        goto out;

    memcpy(sub_out, json_string_value(sub), sub_len);
    sub_out[sub_len] = '\0';
    if (exp_out)
        *exp_out = json_integer_value(exp);
    rc = 0;
out:
    json_decref(claims);
    json_decref(header);
    return rc;
}
