/* fuzz_longpoll.c - libFuzzer target for the long-poll POST body splitter
 * (lp_parse_body in src/longpoll.h).
 *
 * The input is a body, split once as ndjson (at most LP_MAX_LINES lines) and once as a
 * single frame. The callback checks every message against the body: a text message is
 * a '['-line inside it, a binary one is the decoding of a base64 line, and there are
 * never more messages than lines. Each message is then decoded as the worker would
 * (V2 text or binary) so that the splitter's output meets the codec. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "longpoll.h"

#define DEPTH 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts (a crash for libFuzzer) with a message when an invariant does not hold. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_longpoll: %s:%d: check failed: %s\n", __FILE__, __LINE__,        \
                    #cond);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

struct seen {
    const char *body;
    size_t len;
    bool ndjson;
    size_t calls;
    size_t text_bytes;    /* total of text messages: never more than the body */
    const char *last_end; /* text messages come in order and do not overlap */
};

/* The callback: checks one message and decodes it. */
static void on_message(void *arg, bool binary, const uint8_t *msg, size_t n)
{
    struct seen *s = arg;
    s->calls++;
    CHECK(n > 0 || binary);
    CHECK(msg != NULL || n == 0);
    if (!binary) {
        const char *p = (const char *)msg;
        CHECK(p >= s->body && n <= s->len && p + n <= s->body + s->len);
        if (s->ndjson) {
            CHECK(p[0] == '[');
            CHECK(!memchr(p, '\n', n));
            CHECK(p == s->body || p[-1] == '\n');
            CHECK(p + n == s->body + s->len || p[n] == '\n' || p[n] == '\r');
            CHECK(!s->last_end || p > s->last_end);
            s->last_end = p + n;
        } else {
            CHECK(p == s->body && n == s->len);
        }
        s->text_bytes += n;
        CHECK(s->text_bytes <= s->len);
    } else {
        CHECK(s->ndjson);
        /* Binary is at most 3/4 of its line. */
        CHECK(n <= s->len / 4 * 3 + 2);
        if (n) {
            /* Read every byte: ASan notices a short buffer. */
            volatile uint8_t sum = 0;
            for (size_t i = 0; i < n; i++)
                sum ^= msg[i];
            (void)sum;
        }
    }

    struct phx_in m;
    int rc = binary ? codec_decode_binary(CODEC_V2, msg, n, 32, &m)
                    : codec_decode_text(CODEC_V2, (const char *)msg, n, DEPTH, &m);
    if (!rc)
        codec_in_cleanup(&m);
}

/* Counts the non-empty lines (after dropping a trailing '\r') of body. */
static size_t count_lines(const char *body, size_t len)
{
    size_t lines = 0;
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(body + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - body) : len;
        size_t l = end - i;
        if (l && body[end - 1] == '\r')
            l--;
        if (l)
            lines++;
        i = end + 1;
    }
    return lines;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Exactly size bytes, no terminator: the body of an HTTP request is not one either. */
    char *body = malloc(size ? size : 1);
    if (!body)
        return 0;
    memcpy(body, data, size);

    struct seen s = {.body = body, .len = size, .ndjson = true};
    int n = lp_parse_body(true, body, size, LP_MAX_LINES, on_message, &s);
    size_t lines = count_lines(body, size);
    CHECK(n == RC_EPROTO || n >= 0);
    if (n >= 0) {
        CHECK((size_t)n == s.calls);
        CHECK((size_t)n <= LP_MAX_LINES);
        CHECK((size_t)n == (lines < LP_MAX_LINES ? lines : LP_MAX_LINES));
    } else {
        CHECK(s.calls < LP_MAX_LINES && s.calls < lines);
    }

    /* A one-line budget, as the session's buffered-rest path uses it. */
    struct seen one = {.body = body, .len = size, .ndjson = true};
    n = lp_parse_body(true, body, size, 1, on_message, &one);
    CHECK(n == RC_EPROTO || (n >= 0 && n <= 1 && (size_t)n == one.calls));

    struct seen whole = {.body = body, .len = size, .ndjson = false};
    n = lp_parse_body(false, body, size, LP_MAX_LINES, on_message, &whole);
    CHECK(n == (size ? 1 : 0) && whole.calls == (size_t)n);

    free(body);
    return 0;
}
