/* test_bcast.c - broadcasts: encoded once per serializer into shared frames, the
 * broadcasts of committed rows, and reference counting. */
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

#include "bcast.h"
#include "obuf.h"
#include "store.h"

/* Checks that frame b is a final unmasked text frame carrying exactly want. */
static void expect_text(const struct obuf *b, const char *want)
{
    assert_int_equal(b->opcode, WS_OP_TEXT);
    assert_int_equal(b->data[0], 0x81);
    assert_int_equal(obuf_payload_len(b), strlen(want));
    assert_memory_equal(obuf_payload(b), want, strlen(want));
}

/* One event, both serializers, with the fields kept. */
static void create_encodes_both(void **state)
{
    struct bcast *b = bcast_create("room:lobby", "user_typing", "{\"typing\":true}", 15, 7, 0);
    assert_non_null(b);
    assert_string_equal(b->topic, "room:lobby");
    assert_int_equal(b->topic_len, 10);
    assert_string_equal(b->event, "user_typing");
    assert_int_equal(b->exclude, 7);
    assert_int_equal(b->seq, 0);
    expect_text(b->v2, "[null,null,\"room:lobby\",\"user_typing\",{\"typing\":true}]");
    expect_text(b->v1, "{\"event\":\"user_typing\",\"payload\":{\"typing\":true},\"ref\":null,"
                       "\"topic\":\"room:lobby\"}");
    bcast_unref(b);
}

/* A room change becomes its event on room:<id>, its payload as stored, its version as the
 * order, with the message's seq and author kept for the notifications channel. */
static void of_change(void **state)
{
    struct store_change c = {.id = 5, .version = 7, .seq = 3, .room_id = "lobby",
                             .user_id = "alice", .event = "message_updated",
                             .payload = "{\"body\":\"hi\",\"seq\":3,\"version\":7}"};
    struct bcast_scratch sc = BCAST_SCRATCH_INIT;
    struct bcast *b = bcast_of_change(&c, &sc);
    bcast_scratch_cleanup(&sc);
    assert_non_null(b);
    assert_string_equal(b->topic, "room:lobby");
    assert_string_equal(b->event, "message_updated");
    assert_int_equal(b->seq, 7);
    assert_int_equal(b->msg_seq, 3);
    assert_string_equal(b->user_id, "alice");
    expect_text(b->v2, "[null,null,\"room:lobby\",\"message_updated\","
                       "{\"body\":\"hi\",\"seq\":3,\"version\":7}]");
    bcast_unref(b);
}

/* A stored payload that is not one JSON object is never pasted into a frame. */
static void of_change_bad_payload(void **state)
{
    const char *bad[] = {"", "{", "[1]", "\"x\"", "{\"a\":1} {\"b\":2}", "{\"a\":1}]"};
    struct bcast_scratch sc = BCAST_SCRATCH_INIT;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct store_change c = {.version = 1, .seq = 1, .room_id = "r", .user_id = "u",
                                 .event = "new_message", .payload = (char *)bad[i]};
        assert_null(bcast_of_change(&c, &sc));
    }
    bcast_scratch_cleanup(&sc);
}

/* Notifications and document operations go to their own topics and carry their order. */
static void of_notif_and_docop(void **state)
{
    struct store_notif n = {.id = 9, .user_id = "bob", .payload = "{\"message\":\"m\",\"data\":null}",
                            .inserted_at = "2026-01-02T03:04:05Z"};
    struct bcast_scratch sc = BCAST_SCRATCH_INIT;
    struct bcast *b = bcast_of_notif(&n, &sc);
    assert_non_null(b);
    assert_string_equal(b->topic, "notifications:bob");
    assert_string_equal(b->event, "new_notification");
    assert_int_equal(b->seq, 9);
    bcast_unref(b);
    struct store_docop op = {.id = 1, .seq = 4, .room_id = "d1", .user_id = "bob",
                             .operation = "insert", .data = "{}", .inserted_at = "x"};
    b = bcast_of_docop(&op, &sc);
    assert_non_null(b);
    assert_string_equal(b->topic, "document:d1");
    assert_string_equal(b->event, "document_updated");
    assert_int_equal(b->seq, 4);
    bcast_unref(b);
    bcast_scratch_cleanup(&sc);
}

/* One scratch serves a batch: each row starts from empty buffers, a shorter row after a
 * longer one carries nothing of it, and every broadcast keeps its own copy. */
static void scratch_reused(void **state)
{
    struct bcast_scratch sc = BCAST_SCRATCH_INIT;
    struct store_change c1 = {.version = 1, .seq = 1, .room_id = "a-rather-long-room-id",
                              .user_id = "alice", .event = "new_message",
                              .payload = "{\"body\":\"a much longer body than the next\"}"};
    struct store_change c2 = {.version = 2, .seq = 2, .room_id = "r", .user_id = "bo",
                              .event = "new_message", .payload = "{\"body\":\"x\"}"};
    struct bcast *b1 = bcast_of_change(&c1, &sc);
    struct bcast *b2 = bcast_of_change(&c2, &sc);
    struct store_notif n = {.id = 3, .user_id = "bo", .payload = "{}", .inserted_at = "t"};
    struct bcast *b3 = bcast_of_notif(&n, &sc);
    assert_non_null(b1);
    assert_non_null(b2);
    assert_non_null(b3);
    bcast_scratch_cleanup(&sc);
    assert_string_equal(b1->topic, "room:a-rather-long-room-id");
    expect_text(b1->v2, "[null,null,\"room:a-rather-long-room-id\",\"new_message\","
                        "{\"body\":\"a much longer body than the next\"}]");
    assert_string_equal(b2->topic, "room:r");
    assert_int_equal(b2->topic_len, 6);
    expect_text(b2->v2, "[null,null,\"room:r\",\"new_message\",{\"body\":\"x\"}]");
    expect_text(b2->v1, "{\"event\":\"new_message\",\"payload\":{\"body\":\"x\"},"
                        "\"ref\":null,\"topic\":\"room:r\"}");
    assert_string_equal(b3->topic, "notifications:bo");
    assert_int_equal(b3->seq, 3);
    bcast_unref(b1);
    bcast_unref(b2);
    bcast_unref(b3);
    bcast_scratch_cleanup(&sc); /* twice is fine: it is empty */
}

/* References: bcast_ref adds n, the frames live until the last unref; NULL is fine. */
static void refcount(void **state)
{
    struct bcast *b = bcast_create("t:x", "e", "{}", 2, 0, 0);
    assert_non_null(b);
    bcast_ref(b, 2);
    assert_int_equal(atomic_load(&b->refs), 3);
    struct obuf *keep = obuf_ref(b->v2);
    bcast_unref(b);
    bcast_unref(b);
    assert_int_equal(atomic_load(&b->refs), 1);
    bcast_unref(b);
    expect_text(keep, "[null,null,\"t:x\",\"e\",{}]"); /* the frame outlives the bcast */
    obuf_unref(keep);
    bcast_unref(NULL);
}

/* Checks that frame b is a final binary frame carrying exactly want (n bytes). */
static void expect_binary(const struct obuf *b, const char *want, size_t n)
{
    assert_non_null(b);
    assert_int_equal(b->opcode, WS_OP_BINARY);
    assert_int_equal(b->data[0], 0x82);
    assert_int_equal(obuf_payload_len(b), n);
    assert_memory_equal(obuf_payload(b), want, n);
}

/* A room's broadcast (a change with event "broadcast") keeps the room form for phoenix.js
 * members and gets realtime-js's forms on realtime:<room>, with its version as meta.id. */
static void of_change_broadcast(void **state)
{
    struct store_change c = {.version = 12, .seq = 0, .room_id = "lobby", .user_id = "alice",
                             .event = "broadcast",
                             .payload = "{\"event\":\"cursor\",\"payload\":{\"x\":1},"
                                        "\"user_id\":\"alice\",\"version\":12}"};
    struct bcast_scratch sc = BCAST_SCRATCH_INIT;
    struct bcast *b = bcast_of_change(&c, &sc);
    bcast_scratch_cleanup(&sc);
    assert_non_null(b);
    assert_string_equal(b->topic, "room:lobby");
    assert_int_equal(b->seq, 12);
    expect_text(b->v2, "[null,null,\"room:lobby\",\"broadcast\",{\"event\":\"cursor\",\"payload\":"
                       "{\"x\":1},\"user_id\":\"alice\",\"version\":12}]");
    expect_text(b->rt_v2, "[null,null,\"realtime:lobby\",\"broadcast\",{\"event\":\"cursor\","
                          "\"meta\":{\"id\":\"12\"},\"payload\":{\"x\":1},\"type\":\"broadcast\"}]");
    expect_text(b->rt_v1, "{\"event\":\"broadcast\",\"payload\":{\"event\":\"cursor\",\"meta\":{"
                          "\"id\":\"12\"},\"payload\":{\"x\":1},\"type\":\"broadcast\"},\"ref\":null,"
                          "\"topic\":\"realtime:lobby\"}");
    static const char bin[] = "\x04\x0e\x06\x0b\x01realtime:lobbycursor{\"id\":\"12\"}{\"x\":1}";
    expect_binary(b->rt_bin, bin, sizeof bin - 1);
    bcast_unref(b);

    /* other changes, and a broadcast row without a string event, get none */
    struct store_change m = {.version = 13, .seq = 4, .room_id = "lobby", .user_id = "bob",
                             .event = "new_message", .payload = "{\"event\":\"x\"}"};
    struct store_change odd = {.version = 14, .room_id = "lobby", .user_id = "",
                               .event = "broadcast", .payload = "{\"event\":5}"};
    const struct store_change *none[] = {&m, &odd};
    for (int i = 0; i < 2; i++) {
        b = bcast_of_change(none[i], &sc);
        assert_non_null(b);
        assert_null(b->rt_v2);
        assert_null(b->rt_v1);
        assert_null(b->rt_bin);
        bcast_unref(b);
    }
    bcast_scratch_cleanup(&sc);
}

/* An ephemeral broadcast on a realtime: topic gets the binary form beside its text ones;
 * other topics and events do not. */
static void create_realtime_topic(void **state)
{
    const char *p = "{\"event\":\"hi\",\"payload\":[1],\"type\":\"broadcast\"}";
    struct bcast *b = bcast_create("realtime:r", "broadcast", p, strlen(p), 0, 0);
    assert_non_null(b);
    static const char bin[] = "\x04\x0a\x02\x00\x01realtime:rhi[1]";
    expect_binary(b->rt_bin, bin, sizeof bin - 1);
    assert_null(b->rt_v2);
    bcast_unref(b);
    b = bcast_create("realtime:r", "presence_diff", "{}", 2, 0, 0);
    assert_null(b->rt_bin);
    bcast_unref(b);
    b = bcast_create("room:r", "broadcast", p, strlen(p), 0, 0);
    assert_null(b->rt_bin);
    bcast_unref(b);
}

/* The binary form of a realtime: broadcast: meta is the "meta" member when it is an object
 * (else none), a missing payload is {}, and a field over 255 bytes leaves only the text
 * forms; a payload that is no such object gets no binary form. */
static void create_realtime_parts(void **state)
{
#define BIN(lit) lit, sizeof lit - 1
    static const struct {
        const char *payload;
        const char *bin; /* NULL: none */
        size_t bin_len;
    } cases[] = {
        {"{\"event\":\"e\",\"payload\":{\"a\":\"\\u00e9\"},\"meta\":{\"replayed\":true}}",
         BIN("\x04\x0a\x01\x11\x01realtime:re{\"replayed\":true}{\"a\":\"\xc3\xa9\"}")},
        {"{\"event\":\"e\",\"payload\":null,\"meta\":[1]}", BIN("\x04\x0a\x01\x00\x01realtime:renull")},
        {"{\"event\":\"e\",\"meta\":\"x\"}", BIN("\x04\x0a\x01\x00\x01realtime:re{}")},
        {"{\"event\":\"\",\"payload\":\"s\"}", BIN("\x04\x0a\x00\x00\x01realtime:r\"s\"")},
        {"{\"event\":7,\"payload\":{}}", NULL, 0},
        {"{\"payload\":{}}", NULL, 0},
        {"[\"event\"]", NULL, 0},
        {"\"event\"", NULL, 0},
    };
#undef BIN
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *p = cases[i].payload;
        struct bcast *b = bcast_create("realtime:r", "broadcast", p, strlen(p), 0, 0);
        assert_non_null(b);
        assert_non_null(b->v2);
        if (cases[i].bin)
            expect_binary(b->rt_bin, cases[i].bin, cases[i].bin_len);
        else if (b->rt_bin)
            fail_msg("case %zu got a binary form", i);
        bcast_unref(b);
    }

    /* 255 bytes of event or meta fit, 256 do not; neither does a 256-byte topic */
    char big[600];
    for (int len = 255; len <= 256; len++) {
        snprintf(big, sizeof big, "{\"event\":\"%0*d\",\"payload\":1}", len, 0);
        struct bcast *b = bcast_create("realtime:r", "broadcast", big, strlen(big), 0, 0);
        assert_non_null(b->v2);
        assert_true(len == 255 ? b->rt_bin != NULL : b->rt_bin == NULL);
        if (b->rt_bin)
            assert_int_equal(obuf_payload_len(b->rt_bin), 5 + 10 + 255 + 1);
        bcast_unref(b);
        snprintf(big, sizeof big, "{\"event\":\"e\",\"payload\":1,\"meta\":{\"k\":\"%0*d\"}}",
                 len - 8, 0); /* {"k":"…"} is 8 bytes more than its value */
        b = bcast_create("realtime:r", "broadcast", big, strlen(big), 0, 0);
        assert_true(len == 255 ? b->rt_bin != NULL : b->rt_bin == NULL);
        bcast_unref(b);
    }
    char topic[300] = "realtime:";
    memset(topic + 9, 't', 256 - 9);
    topic[256] = 0;
    const char *p = "{\"event\":\"e\",\"payload\":1}";
    struct bcast *b = bcast_create(topic, "broadcast", p, strlen(p), 0, 0);
    assert_non_null(b->v2);
    assert_null(b->rt_bin);
    bcast_unref(b);
}

/* A room broadcast whose user event is over 255 bytes still gets the realtime-js text
 * forms, without the binary one. */
static void of_change_broadcast_long_event(void **state)
{
    char payload[400];
    snprintf(payload, sizeof payload, "{\"event\":\"%0256d\",\"payload\":{},\"version\":3}", 0);
    struct store_change c = {.version = 3, .room_id = "r", .user_id = "",
                             .event = "broadcast", .payload = payload};
    struct bcast_scratch sc = BCAST_SCRATCH_INIT;
    struct bcast *b = bcast_of_change(&c, &sc);
    bcast_scratch_cleanup(&sc);
    assert_non_null(b);
    assert_non_null(b->rt_v2);
    assert_non_null(b->rt_v1);
    assert_null(b->rt_bin);
    bcast_unref(b);
}

static size_t oom_at, oom_calls;

/* jansson allocator failing its oom_at-th call. */
static void *oom_malloc(size_t n)
{
    return ++oom_calls == oom_at ? NULL : malloc(n);
}

/* Out of memory at each of jansson's allocations in turn: a realtime-js frame is either
 * whole or absent, never built from a part that failed. */
static void realtime_frames_oom(void **state)
{
    const char *p = "{\"event\":\"e\",\"payload\":{\"x\":[1]},\"meta\":{\"k\":true}}";
    static const char bin[] = "\x04\x0a\x01\x0a\x01realtime:re{\"k\":true}{\"x\":[1]}";
    struct store_change c = {.version = 4, .room_id = "r", .user_id = "u", .event = "broadcast",
                             .payload = "{\"event\":\"e\",\"payload\":{\"x\":[1]},\"version\":4}"};
    static const char rt_v2[] = "[null,null,\"realtime:r\",\"broadcast\",{\"event\":\"e\",\"meta\":"
                                "{\"id\":\"4\"},\"payload\":{\"x\":[1]},\"type\":\"broadcast\"}]";
    static const char room_bin[] = "\x04\x0a\x01\x0a\x01realtime:re{\"id\":\"4\"}{\"x\":[1]}";
    struct bcast_scratch sc = BCAST_SCRATCH_INIT;
    bool whole = false;
    json_set_alloc_funcs(oom_malloc, free);
    for (oom_at = 1; !whole && oom_at < 1000; oom_at++) {
        oom_calls = 0;
        struct bcast *b = bcast_create("realtime:r", "broadcast", p, strlen(p), 0, 0);
        struct bcast *r = bcast_of_change(&c, &sc);
        assert_non_null(b);
        if (b->rt_bin)
            expect_binary(b->rt_bin, bin, sizeof bin - 1);
        if (r && r->rt_v2)
            expect_text(r->rt_v2, rt_v2);
        if (r && r->rt_bin)
            expect_binary(r->rt_bin, room_bin, sizeof room_bin - 1);
        whole = b->rt_bin && r && r->rt_v2 && r->rt_bin && oom_calls < oom_at;
        bcast_unref(b);
        bcast_unref(r);
    }
    json_set_alloc_funcs(malloc, free);
    bcast_scratch_cleanup(&sc);
    assert_true(whole);
    assert_true(oom_at > 5); /* the frames need jansson's memory: failures were reached */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(create_encodes_both),
        cmocka_unit_test(of_change),
        cmocka_unit_test(of_change_bad_payload),
        cmocka_unit_test(of_change_broadcast),
        cmocka_unit_test(create_realtime_topic),
        cmocka_unit_test(create_realtime_parts),
        cmocka_unit_test(of_change_broadcast_long_event),
        cmocka_unit_test(realtime_frames_oom),
        cmocka_unit_test(of_notif_and_docop),
        cmocka_unit_test(scratch_reused),
        cmocka_unit_test(refcount),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
