/* base64.c - RFC 4648 base64: URL-safe unpadded and standard padded encoders, one decoder
 * for both alphabets. */
#include "base64.h"

static const char std_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t b64url_encoded_len(size_t n)
{
    static const size_t tail[3] = {0, 2, 3};

    return n / 3 * 4 + tail[n % 3];
}

/* Encodes in[0..n) with alphabet, appending '=' padding when pad is set. */
static size_t b64_encode(const uint8_t *in, size_t n, char *out, const char *alphabet, int pad)
{
    size_t i = 0;
    size_t o = 0;
    uint32_t v;

    for (; n - i >= 3; i += 3) {
        v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
        out[o++] = alphabet[v >> 6 & 63];
        out[o++] = alphabet[v & 63];
    }
    if (n - i == 1) {
        v = (uint32_t)in[i] << 16;
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
        if (pad) {
            out[o++] = '=';
            out[o++] = '=';
        }
    } else if (n - i == 2) {
        v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
        out[o++] = alphabet[v >> 6 & 63];
        if (pad)
            out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

size_t b64url_encode(const uint8_t *in, size_t n, char *out)
{
    return b64_encode(in, n, out, url_alphabet, 0);
}

size_t b64std_encode(const uint8_t *in, size_t n, char *out)
{
    return b64_encode(in, n, out, std_alphabet, 1);
}

/* Value 0..63 of c in either alphabet, or -1 (which covers '=' and NUL). */
static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

/* Decodes k (2..4) characters at in into k - 1 bytes at out; -1 on a bad character. */
static int b64_decode_quantum(const char *in, size_t k, uint8_t *out)
{
    uint32_t v = 0;

    for (size_t j = 0; j < 4; j++) {
        int d = j < k ? b64_value((unsigned char)in[j]) : 0;
        if (d < 0)
            return -1;
        v = v << 6 | (uint32_t)d;
    }
    out[0] = (uint8_t)(v >> 16);
    if (k > 2)
        out[1] = (uint8_t)(v >> 8);
    if (k > 3)
        out[2] = (uint8_t)v;
    return 0;
}

int b64_decode(const char *in, size_t n, uint8_t *out, size_t *out_len)
{
    size_t pad = 0;
    size_t i;
    size_t o = 0;

    /* Padding, when present, is one or two '=' completing the last quantum of four; an
     * '=' anywhere else is not in the alphabet and fails below. */
    while (pad < n && in[n - 1 - pad] == '=')
        pad++;
    if (pad > 2 || (pad && n % 4 != 0))
        return RC_EINVAL;
    n -= pad;
    if (n % 4 == 1)
        return RC_EINVAL;

    for (i = 0; n - i >= 4; i += 4, o += 3) {
        if (b64_decode_quantum(in + i, 4, out + o) < 0)
            return RC_EINVAL;
    }
    if (n - i > 0) {
        if (b64_decode_quantum(in + i, n - i, out + o) < 0)
            return RC_EINVAL;
        o += n - i - 1;
    }
    *out_len = o;
    return 0;
}
