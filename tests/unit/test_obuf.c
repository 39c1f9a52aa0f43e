/* test_obuf.c - unit tests for src/obuf.c: RFC 6455 server frames (FIN set, no mask,
 * 7/16/64-bit lengths), close frames and atomic refcounting, through the public API.
 * Expected headers are written out byte by byte here, never computed by the code under
 * test. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "obuf.h"

#define N_THREADS 4
#define REFS_PER_THREAD 20000

/* One frame to build and the header RFC 6455 section 5.2 says it must start with. */
struct frame_case {
    uint8_t opcode;
    size_t n;
    size_t hdr_len;
    uint8_t hdr[10];
};

static const struct frame_case frame_len_0 = {WS_OP_TEXT, 0, 2, {0x81, 0x00}};
static const struct frame_case frame_len_1 = {WS_OP_TEXT, 1, 2, {0x81, 0x01}};
static const struct frame_case frame_len_125 = {WS_OP_TEXT, 125, 2, {0x81, 0x7d}};
/* 126 is the first length that needs the 16-bit form, and is written in it too. */
static const struct frame_case frame_len_126 = {WS_OP_TEXT, 126, 4, {0x81, 0x7e, 0x00, 0x7e}};
static const struct frame_case frame_len_127 = {WS_OP_BINARY, 127, 4, {0x82, 0x7e, 0x00, 0x7f}};
static const struct frame_case frame_len_258 = {WS_OP_BINARY, 258, 4, {0x82, 0x7e, 0x01, 0x02}};
static const struct frame_case frame_len_65535 = {WS_OP_TEXT, 65535, 4, {0x81, 0x7e, 0xff, 0xff}};
static const struct frame_case frame_len_65536 = {
    WS_OP_TEXT, 65536, 10, {0x81, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00}};
/* Every byte of the 64-bit length distinct, to catch a swapped or shifted byte. */
static const struct frame_case frame_len_16909060 = {
    WS_OP_BINARY, 0x01020304, 10, {0x82, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04}};

/* malloc'd n bytes of a position-dependent pattern (so a shifted copy shows). */
static uint8_t *pattern(size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 31 + (i >> 8) + 7);
    return p;
}

/* Checks that b is exactly c's header followed by payload (c->n bytes). */
static void assert_frame(const struct obuf *b, const struct frame_case *c, const void *payload)
{
    assert_non_null(b);
    assert_int_equal(b->opcode, c->opcode);
    assert_int_equal(b->hdr, c->hdr_len);
    assert_int_equal(b->len, c->hdr_len + c->n);
    assert_memory_equal(b->data, c->hdr, c->hdr_len);
    /* FIN set, RSV1-3 clear: the server never fragments nor uses extensions. */
    assert_int_equal(b->data[0] & 0xf0, 0x80);
    /* MASK clear: a server must not mask (RFC 6455 section 5.1). */
    assert_int_equal(b->data[1] & 0x80, 0);
    assert_ptr_equal(obuf_payload(b), (const char *)b->data + c->hdr_len);
    assert_int_equal(obuf_payload_len(b), c->n);
    if (c->n)
        assert_memory_equal(obuf_payload(b), payload, c->n);
}

/* Builds the frame of the case in *state and checks every byte of it. */
static void frame_for_length(void **state)
{
    const struct frame_case *c = *state;
    uint8_t *p = pattern(c->n);
    struct obuf *b = obuf_create(c->opcode, p, c->n);
    assert_frame(b, c, p);
    obuf_unref(b);
    free(p);
}

/* An empty payload is not read, so it may be NULL (as an empty sbuf's data is). */
static void empty_payload_null(void **state)
{
    struct obuf *b = obuf_create(WS_OP_PONG, NULL, 0);
    static const struct frame_case pong = {WS_OP_PONG, 0, 2, {0x8a, 0x00}};
    assert_frame(b, &pong, NULL);
    obuf_unref(b);
}

/* Each opcode the server sends lands in the low nibble of the first byte. */
static void opcodes(void **state)
{
    static const struct {
        uint8_t op;
        uint8_t byte0;
    } ops[] = {{WS_OP_CONT, 0x80},  {WS_OP_TEXT, 0x81}, {WS_OP_BINARY, 0x82},
               {WS_OP_CLOSE, 0x88}, {WS_OP_PING, 0x89}, {WS_OP_PONG, 0x8a}};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        struct obuf *b = obuf_create(ops[i].op, "hi", 2);
        assert_non_null(b);
        assert_int_equal(b->data[0], ops[i].byte0);
        assert_int_equal(b->data[1], 0x02);
        assert_int_equal(b->opcode, ops[i].op);
        assert_memory_equal(obuf_payload(b), "hi", 2);
        obuf_unref(b);
    }
}

/* The payload is copied: changing the source afterwards does not change the frame. */
static void payload_is_copied(void **state)
{
    char src[] = "hello";
    struct obuf *b = obuf_create(WS_OP_TEXT, src, 5);
    assert_non_null(b);
    memset(src, 'x', 5);
    assert_int_equal(obuf_payload_len(b), 5);
    assert_memory_equal(obuf_payload(b), "hello", 5);
    obuf_unref(b);
}

/* Binary payloads keep NUL and high bytes. */
static void binary_payload(void **state)
{
    static const uint8_t bytes[] = {0x00, 0xff, 0x80, 0x00, 0x7f, 0x0a};
    struct obuf *b = obuf_create(WS_OP_BINARY, bytes, sizeof bytes);
    static const struct frame_case bin = {WS_OP_BINARY, sizeof bytes, 2, {0x82, 0x06}};
    assert_frame(b, &bin, bytes);
    obuf_unref(b);
}

/* A length that cannot be framed in a uint32_t buffer is refused, not truncated. */
static void too_large(void **state)
{
    static const char one = 'x';
    assert_null(obuf_create(WS_OP_BINARY, &one, (size_t)UINT32_MAX + 1));
    assert_null(obuf_create(WS_OP_BINARY, &one, SIZE_MAX));
}

/* Checks that close is a close frame carrying exactly the two bytes hi, lo. */
static void assert_close(struct obuf *close, uint8_t hi, uint8_t lo)
{
    const uint8_t want[4] = {0x88, 0x02, hi, lo};
    assert_non_null(close);
    assert_int_equal(close->opcode, WS_OP_CLOSE);
    assert_int_equal(close->len, 4);
    assert_memory_equal(close->data, want, 4);
    assert_int_equal(obuf_payload_len(close), 2);
    assert_memory_equal(obuf_payload(close), want + 2, 2);
    obuf_unref(close);
}

/* Close frames carry the status code big-endian and no reason. */
static void close_frames(void **state)
{
    assert_close(obuf_create_close(1000), 0x03, 0xe8); /* normal closure */
    assert_close(obuf_create_close(1001), 0x03, 0xe9); /* going away */
    assert_close(obuf_create_close(1008), 0x03, 0xf0); /* policy violation */
    assert_close(obuf_create_close(1011), 0x03, 0xf3); /* internal error */
    assert_close(obuf_create_close(4000), 0x0f, 0xa0); /* application range */
    assert_close(obuf_create_close(0xabcd), 0xab, 0xcd);
    assert_close(obuf_create_close(0), 0x00, 0x00);
    assert_close(obuf_create_close(0xffff), 0xff, 0xff);
}

/* A new buffer holds one reference; ref adds one and returns the same buffer; the
 * buffer stays readable until the last unref (ASan sees any early free or leak). */
static void ref_unref(void **state)
{
    struct obuf *b = obuf_create(WS_OP_TEXT, "abc", 3);
    assert_non_null(b);
    assert_int_equal(atomic_load(&b->refs), 1);
    assert_ptr_equal(obuf_ref(b), b);
    assert_ptr_equal(obuf_ref(b), b);
    assert_int_equal(atomic_load(&b->refs), 3);
    obuf_unref(b);
    obuf_unref(b);
    assert_int_equal(atomic_load(&b->refs), 1);
    assert_memory_equal(obuf_payload(b), "abc", 3);
    obuf_unref(b);
}

/* unref accepts NULL. */
static void unref_null(void **state)
{
    obuf_unref(NULL);
}

/* Takes REFS_PER_THREAD references, then drops them all. */
static void *ref_churn(void *arg)
{
    struct obuf *b = arg;
    for (int i = 0; i < REFS_PER_THREAD; i++)
        obuf_ref(b);
    for (int i = 0; i < REFS_PER_THREAD; i++)
        obuf_unref(b);
    return NULL;
}

/* References taken and dropped from several threads at once are all counted. */
static void refs_across_threads(void **state)
{
    struct obuf *b = obuf_create(WS_OP_TEXT, "shared", 6);
    pthread_t th[N_THREADS];
    assert_non_null(b);
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, ref_churn, b), 0);
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(atomic_load(&b->refs), 1);
    assert_memory_equal(obuf_payload(b), "shared", 6);
    obuf_unref(b);
}

/* A test case named after c that runs frame_for_length on it. */
#define FRAME_TEST(c)                                                                              \
    {                                                                                              \
        .name = #c, .test_func = frame_for_length, .initial_state = (void *)&(c)                   \
    }

int main(void)
{
    const struct CMUnitTest tests[] = {
        FRAME_TEST(frame_len_0),          FRAME_TEST(frame_len_1),
        FRAME_TEST(frame_len_125),        FRAME_TEST(frame_len_126),
        FRAME_TEST(frame_len_127),        FRAME_TEST(frame_len_258),
        FRAME_TEST(frame_len_65535),      FRAME_TEST(frame_len_65536),
        FRAME_TEST(frame_len_16909060),   cmocka_unit_test(empty_payload_null),
        cmocka_unit_test(opcodes),        cmocka_unit_test(payload_is_copied),
        cmocka_unit_test(binary_payload), cmocka_unit_test(too_large),
        cmocka_unit_test(close_frames),   cmocka_unit_test(ref_unref),
        cmocka_unit_test(unref_null),     cmocka_unit_test(refs_across_threads),
    };
    return cmocka_run_group_tests_name("obuf", tests, NULL, NULL);
}
