/* test_bcast.c - broadcasts: encoded once per serializer into shared frames, the
 * broadcasts of committed rows, and reference counting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

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

/* A message row becomes new_message on room:<id> with its seq and JSON. */
static void of_msg(void **state)
{
    struct store_msg m = {.id = 5, .seq = 3, .room_id = "lobby", .user_id = "alice",
                          .body = "hi", .inserted_at = "2026-01-02T03:04:05Z"};
    struct bcast *b = bcast_of_msg(&m);
    assert_non_null(b);
    assert_string_equal(b->topic, "room:lobby");
    assert_string_equal(b->event, "new_message");
    assert_int_equal(b->seq, 3);
    expect_text(b->v2, "[null,null,\"room:lobby\",\"new_message\",{\"body\":\"hi\",\"id\":5,"
                       "\"inserted_at\":\"2026-01-02T03:04:05Z\",\"seq\":3,\"user_id\":\"alice\"}]");
    bcast_unref(b);
}

/* Notifications and document operations go to their own topics and carry their order. */
static void of_notif_and_docop(void **state)
{
    struct store_notif n = {.id = 9, .user_id = "bob", .payload = "{\"message\":\"m\",\"data\":null}",
                            .inserted_at = "2026-01-02T03:04:05Z"};
    struct bcast *b = bcast_of_notif(&n);
    assert_non_null(b);
    assert_string_equal(b->topic, "notifications:bob");
    assert_string_equal(b->event, "new_notification");
    assert_int_equal(b->seq, 9);
    bcast_unref(b);
    struct store_docop op = {.id = 1, .seq = 4, .room_id = "d1", .user_id = "bob",
                             .operation = "insert", .data = "{}", .inserted_at = "x"};
    b = bcast_of_docop(&op);
    assert_non_null(b);
    assert_string_equal(b->topic, "document:d1");
    assert_string_equal(b->event, "document_updated");
    assert_int_equal(b->seq, 4);
    bcast_unref(b);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(create_encodes_both),
        cmocka_unit_test(of_msg),
        cmocka_unit_test(of_notif_and_docop),
        cmocka_unit_test(refcount),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
