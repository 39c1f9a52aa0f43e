/* fuzz_jwt.c - libFuzzer target for HS256 tokens (src/jwt.h).
 *
 * Input: one control byte, then data. Every input is verified as a raw token with a fixed
 * key at a fixed time. With bit 0 of the control byte set, the data is also cut in two at
 * its first '\n' (header JSON, claims JSON), which we encode and sign with the key
 * ourselves, so that the parts behind the signature check (jansson, the header rules,
 * the claims) see fuzzed input too. Last, a sub made from the data is signed with
 * jwt_sign and must verify to the same sub, and must be refused as expired later. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwt.h"
#include "util/base64.h"
#include "util/utf8.h"

#define NOW ((int64_t)1700000000)
#define TTL 3600

static const uint8_t key[] = "fuzz-secret-0123456789abcdef";
#define KEY_LEN (sizeof key - 1)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts (a crash for libFuzzer) with a message when an invariant does not hold. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_jwt: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Verifies token (len bytes, in its own allocation) and checks what a result promises. */
static int verify(const char *token, size_t len, int64_t now, char *sub, int64_t *exp)
{
    char *copy = malloc(len ? len : 1); /* exactly len bytes: ASan sees over-reads */
    if (!copy)
        return RC_ENOMEM;
    memcpy(copy, token, len);
    *exp = -1;
    int rc = jwt_verify(key, KEY_LEN, copy, len, now, sub, JWT_MAX_SUB + 1, exp);
    free(copy);
    CHECK(rc == 0 || rc == RC_EAUTH || rc == RC_EEXPIRED);
    if (rc == 0) {
        size_t n = strlen(sub);
        CHECK(n > 0 && n <= JWT_MAX_SUB);
        CHECK(*exp > now);
    } else {
        CHECK(sub[0] == '\0');
    }
    return rc;
}

/* Builds base64url(header) "." base64url(claims) "." signature under the fixed key and
 * verifies it. */
static void verify_signed(const uint8_t *h, size_t hl, const uint8_t *p, size_t pl)
{
    char *tok = malloc(b64url_encoded_len(hl) + b64url_encoded_len(pl) + 48);
    if (!tok)
        return;
    size_t o = b64url_encode(h, hl, tok);
    tok[o++] = '.';
    o += b64url_encode(p, pl, tok + o);
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    if (!HMAC(EVP_sha256(), key, (int)KEY_LEN, (const unsigned char *)tok, o, mac, &mac_len)) {
        free(tok);
        return;
    }
    tok[o++] = '.';
    o += b64url_encode(mac, mac_len, tok + o);
    char sub[JWT_MAX_SUB + 1];
    int64_t exp;
    int rc = verify(tok, o, NOW, sub, &exp);
    /* The same token under another key never verifies. */
    if (rc == 0 || rc == RC_EEXPIRED) {
        static const uint8_t other[] = "another-key";
        char sub2[JWT_MAX_SUB + 1];
        CHECK(jwt_verify(other, sizeof other - 1, tok, o, NOW, sub2, sizeof sub2, NULL) ==
              RC_EAUTH);
    }
    free(tok);
}

/* sign → verify: a sub that jwt_sign accepts comes back unchanged. */
static void round_trip(const uint8_t *data, size_t size)
{
    char sub[JWT_MAX_SUB + 2];
    size_t n = size < JWT_MAX_SUB + 1 ? size : JWT_MAX_SUB + 1;
    memcpy(sub, data, n);
    sub[n] = '\0';
    size_t sl = strlen(sub);
    char *tok = NULL;
    int rc = jwt_sign(key, KEY_LEN, sub, NOW, NOW + TTL, &tok);
    CHECK(rc == 0 || rc == RC_EINVAL);
    /* Refused exactly when the sub is empty, too long or not UTF-8 (jansson's UTF-8
     * check and ours must agree). */
    bool ok = sl > 0 && sl <= JWT_MAX_SUB && utf8_valid(sub, sl);
    if (rc) {
        CHECK(tok == NULL);
        CHECK(!ok);
        return;
    }
    CHECK(tok && ok);
    size_t len = strlen(tok);
    CHECK(len <= JWT_MAX_LEN);
    char out[JWT_MAX_SUB + 1];
    int64_t exp;
    rc = verify(tok, len, NOW, out, &exp);
    if (rc) {
        fprintf(stderr, "fuzz_jwt: signed token does not verify (rc %d): %s\n", rc, tok);
        abort();
    }
    CHECK(!strcmp(out, sub) && exp == NOW + TTL);
    CHECK(verify(tok, len, NOW + TTL, out, &exp) == RC_EEXPIRED);
    /* One flipped signature character is refused. */
    tok[len - 1] = tok[len - 1] == 'A' ? 'B' : 'A';
    CHECK(verify(tok, len, NOW, out, &exp) == RC_EAUTH);
    free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t ctl = data[0];
    data++;
    size--;

    char sub[JWT_MAX_SUB + 1];
    int64_t exp;
    verify((const char *)data, size, NOW, sub, &exp);

    if (ctl & 1) {
        const uint8_t *nl = memchr(data, '\n', size);
        size_t hl = nl ? (size_t)(nl - data) : size;
        const uint8_t *p = nl ? nl + 1 : data + size;
        verify_signed(data, hl, p, size - hl - (nl ? 1 : 0));
    }

    round_trip(data, size);
    return 0;
}
