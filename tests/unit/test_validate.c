/* test_validate.c - unit tests for src/validate.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "validate.h"

/* malloc'd string of n copies of c. */
static char *repeat_char(char c, size_t n)
{
    char *s = malloc(n + 1);

    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* malloc'd string of count copies of the NUL-terminated unit. */
static char *repeat_str(const char *unit, size_t count, size_t *len)
{
    size_t u = strlen(unit);
    char *s = malloc(u * count + 1);

    assert_non_null(s);
    for (size_t i = 0; i < count; i++)
        memcpy(s + i * u, unit, u);
    s[u * count] = '\0';
    *len = u * count;
    return s;
}

/* validate_body on a NUL-terminated string. */
static enum body_check body(const char *s)
{
    return validate_body(s, strlen(s));
}

/* Room ids of [A-Za-z0-9_.-] are accepted. */
static void test_room_id_ok(void **state)
{
    (void)state;
    assert_true(validate_room_id("lobby"));
    assert_true(validate_room_id("a"));
    assert_true(validate_room_id("Room_1.2-3"));
    assert_true(validate_room_id("0123456789"));
    assert_true(validate_room_id("ABCXYZabcxyz_.-"));
}

/* The empty room id is refused. */
static void test_room_id_empty(void **state)
{
    (void)state;
    assert_false(validate_room_id(""));
}

/* Room ids: 100 characters pass, 101 do not. */
static void test_room_id_length(void **state)
{
    (void)state;
    char *s100 = repeat_char('r', ROOM_ID_MAX);
    char *s101 = repeat_char('r', ROOM_ID_MAX + 1);

    assert_int_equal(ROOM_ID_MAX, 100);
    assert_true(validate_room_id(s100));
    assert_false(validate_room_id(s101));
    free(s100);
    free(s101);
}

/* Every byte outside [A-Za-z0-9_.-] is refused in a room id. */
static void test_room_id_bad_chars(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "a b",
        "a:b",
        "a/b",
        "room:lobby",
        "a\tb",
        "a\nb",
        "caf\xc3\xa9",
        "a+b",
        "a@b",
        "a#b",
        "a%b",
        "a*b",
        "a,b",
        "a\"b",
        "a'b",
        "a\\b",
        "\x7f",
        "a~b",
        "a!b",
        "a?b",
        "a=b",
        "a\x01"
        "b",
        "(a)",
        "[a]",
        "{a}",
        "a<b>",
        "a|b",
        "a;b",
        "a&b",
        "a$b",
        "a^b",
        "a`b",
    };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (validate_room_id(bad[i]))
            fail_msg("room id \"%s\" accepted", bad[i]);
    }
    /* Every byte outside [A-Za-z0-9_.-] is refused on its own, too. */
    for (int c = 1; c < 256; c++) {
        char s[4] = {'a', (char)c, 'b', '\0'};
        bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       c == '_' || c == '.' || c == '-';

        if (validate_room_id(s) != allowed)
            fail_msg("room id with byte 0x%02x: got %d, want %d", c, !allowed, allowed);
    }
}

/* User ids may be any UTF-8 text without control characters. */
static void test_user_id_ok(void **state)
{
    (void)state;
    assert_true(validate_user_id("alice"));
    assert_true(validate_user_id("u"));
    assert_true(validate_user_id("alice@example.com"));
    assert_true(validate_user_id("Jos\xc3\xa9 Garc\xc3\xad"
                                 "a"));                           /* José García */
    assert_true(validate_user_id("\xe6\x9d\xb1\xe4\xba\xac"));    /* 東京 */
    assert_true(validate_user_id("\xf0\x9f\x98\x80 smile"));      /* U+1F600 */
    assert_true(validate_user_id("with space and: colon/slash")); /* only controls refused */
}

/* The empty user id is refused. */
static void test_user_id_empty(void **state)
{
    (void)state;
    assert_false(validate_user_id(""));
}

/* C0 control characters and DEL are refused in user ids. */
static void test_user_id_control_chars(void **state)
{
    (void)state;
    for (int c = 1; c < 0x20; c++) {
        char s[4] = {'a', (char)c, 'b', '\0'};

        if (validate_user_id(s))
            fail_msg("user id with control byte 0x%02x accepted", c);
    }
    assert_false(validate_user_id("a\x7f"));
    assert_false(validate_user_id("\tbob"));
    assert_false(validate_user_id("bob\n"));
    assert_false(validate_user_id("\x1b[31mred"));
}

/* C1 control characters (U+0080..U+009F) are refused in user ids. */
static void test_user_id_c1_control_chars(void **state)
{
    (void)state;
    /* U+0080..U+009F are control characters too (Unicode category Cc); U+009B is the
     * one-character CSI that starts terminal escape sequences. */
    assert_false(validate_user_id("a\xc2\x80"));
    assert_false(validate_user_id("a\xc2\x85"
                                  "b"));
    assert_false(validate_user_id("\xc2\x9b"
                                  "31mred"));
    assert_false(validate_user_id("a\xc2\x9f"));
    /* Their neighbours are ordinary characters. */
    assert_true(validate_user_id("a\xc2\xa0"
                                 "b"));        /* U+00A0 no-break space */
    assert_true(validate_user_id("\xc2\xa9")); /* U+00A9 copyright sign */
}

/* Invalid UTF-8 is refused in user ids. */
static void test_user_id_invalid_utf8(void **state)
{
    (void)state;
    assert_false(validate_user_id("\xff"));
    assert_false(validate_user_id("a\xc3"));            /* truncated */
    assert_false(validate_user_id("\xc0\xaf"));         /* overlong '/' */
    assert_false(validate_user_id("\xed\xa0\x80"));     /* surrogate U+D800 */
    assert_false(validate_user_id("\xf4\x90\x80\x80")); /* above U+10FFFF */
    assert_false(validate_user_id("caf\xe9"));          /* Latin-1, not UTF-8 */
    assert_false(validate_user_id("\x80\x80\x80"));     /* lone continuation bytes */
}

/* User ids: 255 bytes pass, 256 do not, counted in bytes. */
static void test_user_id_length(void **state)
{
    (void)state;
    char *s255 = repeat_char('u', USER_ID_MAX);
    char *s256 = repeat_char('u', USER_ID_MAX + 1);
    size_t n;
    /* The limit is in bytes: 127 two-byte characters + 1 = 255 bytes is fine, 128 two-byte
     * characters = 256 bytes is not, even though it is only 128 characters. */
    char *e254 = repeat_str("\xc3\xa9", 127, &n);
    char *e255 = malloc(n + 2);
    char *e256 = repeat_str("\xc3\xa9", 128, &n);

    assert_non_null(e255);
    assert_int_equal(USER_ID_MAX, 255);
    assert_true(validate_user_id(s255));
    assert_false(validate_user_id(s256));
    memcpy(e255, e254, 254);
    e255[254] = 'x';
    e255[255] = '\0';
    assert_int_equal(strlen(e255), 255);
    assert_true(validate_user_id(e255));
    assert_int_equal(n, 256);
    assert_false(validate_user_id(e256));
    free(s255);
    free(s256);
    free(e254);
    free(e255);
    free(e256);
}

/* Exactly owner, editor, member and viewer are roles. */
static void test_roles(void **state)
{
    (void)state;
    assert_true(validate_role("owner"));
    assert_true(validate_role("editor"));
    assert_true(validate_role("member"));
    assert_true(validate_role("viewer"));
    assert_false(validate_role(""));
    assert_false(validate_role("admin"));
    assert_false(validate_role("Owner"));
    assert_false(validate_role("owner "));
    assert_false(validate_role(" owner"));
    assert_false(validate_role("own"));
    assert_false(validate_role("viewers"));
}

/* Ordinary bodies pass. */
/* Emoji: 1..32 bytes of valid UTF-8 without NUL; any such string, multi-code-point
 * emoji included; the limit counts bytes, not characters. */
static void test_emoji(void **state)
{
    assert_true(validate_emoji("\xf0\x9f\x91\x8d", 4));   /* U+1F44D */
    assert_true(validate_emoji("+1", 2));
    const char *family = "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d"
                         "\xf0\x9f\x91\xa7"; /* man ZWJ woman ZWJ girl: 18 bytes */
    assert_true(validate_emoji(family, strlen(family)));
    char b32[33], b33[34];
    memset(b32, 'x', 32);
    b32[32] = 0;
    memset(b33, 'x', 33);
    b33[33] = 0;
    assert_true(validate_emoji(b32, 32));
    assert_false(validate_emoji(b33, 33));
    assert_false(validate_emoji("", 0));
    assert_false(validate_emoji("a\0b", 3));
    assert_false(validate_emoji("\xf0\x9f\x91", 3)); /* truncated */
    assert_false(validate_emoji("\xc0\xaf", 2));     /* overlong */
}

static void test_body_ok(void **state)
{
    (void)state;
    assert_int_equal(body("hello"), BODY_OK);
    assert_int_equal(body("x"), BODY_OK);
    assert_int_equal(body("  padded  "), BODY_OK);
    assert_int_equal(body("line1\nline2"), BODY_OK);
    assert_int_equal(body("caf\xc3\xa9 \xf0\x9f\x98\x80"), BODY_OK);
    /* Only the first n bytes count. */
    assert_int_equal(validate_body("hi\xff", 2), BODY_OK);
}

/* Empty and whitespace-only bodies are BODY_EMPTY. */
static void test_body_empty(void **state)
{
    (void)state;
    assert_int_equal(validate_body("", 0), BODY_EMPTY);
    assert_int_equal(body(" "), BODY_EMPTY);
    assert_int_equal(body("   "), BODY_EMPTY);
    assert_int_equal(body("\t\r\n\v\f "), BODY_EMPTY);
    assert_int_equal(body("\n\n"), BODY_EMPTY);
    assert_int_equal(validate_body("   x", 3), BODY_EMPTY);
}

/* The limit counts characters: 10000 "é" pass, 10001 do not. */
static void test_body_length_two_byte_chars(void **state)
{
    (void)state;
    size_t n;
    char *ok = repeat_str("\xc3\xa9", MESSAGE_MAX_CHARS, &n); /* 10000 "é", 20000 bytes */

    assert_int_equal(MESSAGE_MAX_CHARS, 10000);
    assert_int_equal(n, 20000);
    assert_int_equal(validate_body(ok, n), BODY_OK);
    free(ok);

    char *too_long = repeat_str("\xc3\xa9", MESSAGE_MAX_CHARS + 1, &n);

    assert_int_equal(n, 20002);
    assert_int_equal(validate_body(too_long, n), BODY_TOO_LONG);
    free(too_long);
}

/* 10000 ASCII characters pass, 10001 do not. */
static void test_body_length_ascii(void **state)
{
    (void)state;
    char *ok = repeat_char('a', MESSAGE_MAX_CHARS);
    char *too_long = repeat_char('a', MESSAGE_MAX_CHARS + 1);

    assert_int_equal(validate_body(ok, MESSAGE_MAX_CHARS), BODY_OK);
    assert_int_equal(validate_body(too_long, MESSAGE_MAX_CHARS + 1), BODY_TOO_LONG);
    free(ok);
    free(too_long);
}

/* 10000 four-byte characters pass, 10001 do not. */
static void test_body_length_four_byte_chars(void **state)
{
    (void)state;
    size_t n;
    char *ok = repeat_str("\xf0\x9f\x98\x80", MESSAGE_MAX_CHARS, &n);

    assert_int_equal(n, 40000);
    assert_int_equal(validate_body(ok, n), BODY_OK);
    free(ok);

    char *too_long = repeat_str("\xf0\x9f\x98\x80", MESSAGE_MAX_CHARS + 1, &n);

    assert_int_equal(validate_body(too_long, n), BODY_TOO_LONG);
    free(too_long);
}

/* A long blank body is BODY_EMPTY, not BODY_TOO_LONG. */
static void test_body_whitespace_too_long_is_empty(void **state)
{
    (void)state;
    /* Blank wins over long: 20000 spaces say nothing. */
    char *blank = repeat_char(' ', 2 * MESSAGE_MAX_CHARS);

    assert_int_equal(validate_body(blank, 2 * MESSAGE_MAX_CHARS), BODY_EMPTY);
    free(blank);
}

/* Invalid UTF-8 is BODY_INVALID. */
static void test_body_invalid_utf8(void **state)
{
    (void)state;
    assert_int_equal(body("\xff"), BODY_INVALID);
    assert_int_equal(body("caf\xe9"), BODY_INVALID);
    assert_int_equal(body("abc\xc3"), BODY_INVALID);          /* truncated at the end */
    assert_int_equal(body("\xc0\x80"), BODY_INVALID);         /* overlong NUL */
    assert_int_equal(body("\xed\xb0\x80"), BODY_INVALID);     /* surrogate */
    assert_int_equal(body("\xf4\x90\x80\x80"), BODY_INVALID); /* above U+10FFFF */
    assert_int_equal(body("   \xff   "), BODY_INVALID);       /* invalid beats blank */
    /* Cutting a valid character in half makes it invalid. */
    assert_int_equal(validate_body("\xc3\xa9", 1), BODY_INVALID);
}

/* A NUL anywhere in the body is BODY_INVALID. */
static void test_body_embedded_nul(void **state)
{
    (void)state;
    assert_int_equal(validate_body("a\0b", 3), BODY_INVALID);
    assert_int_equal(validate_body("\0", 1), BODY_INVALID);
    assert_int_equal(validate_body("hello\0", 6), BODY_INVALID);
    assert_int_equal(validate_body(" \0 ", 3), BODY_INVALID);
}

/* Invalid UTF-8 past the length limit is still BODY_INVALID. */
static void test_body_invalid_in_long_body(void **state)
{
    (void)state;
    /* An invalid byte after the length limit is still reported as invalid. */
    char *s = repeat_char('a', MESSAGE_MAX_CHARS + 10);

    s[MESSAGE_MAX_CHARS + 5] = '\xff';
    assert_int_equal(validate_body(s, MESSAGE_MAX_CHARS + 10), BODY_INVALID);
    free(s);
}

/* Each body_check has its reason string; BODY_OK has none. */
static void test_body_reasons(void **state)
{
    (void)state;
    assert_null(validate_body_reason(BODY_OK));
    assert_string_equal(validate_body_reason(BODY_EMPTY), "message_empty");
    assert_string_equal(validate_body_reason(BODY_TOO_LONG), "message_too_long");
    assert_string_equal(validate_body_reason(BODY_INVALID), "invalid_message");
    assert_string_equal(validate_body_reason(validate_body("", 0)), "message_empty");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_room_id_ok),
        cmocka_unit_test(test_room_id_empty),
        cmocka_unit_test(test_room_id_length),
        cmocka_unit_test(test_room_id_bad_chars),
        cmocka_unit_test(test_user_id_ok),
        cmocka_unit_test(test_user_id_empty),
        cmocka_unit_test(test_user_id_control_chars),
        cmocka_unit_test(test_user_id_c1_control_chars),
        cmocka_unit_test(test_user_id_invalid_utf8),
        cmocka_unit_test(test_user_id_length),
        cmocka_unit_test(test_roles),
        cmocka_unit_test(test_emoji),
        cmocka_unit_test(test_body_ok),
        cmocka_unit_test(test_body_empty),
        cmocka_unit_test(test_body_length_two_byte_chars),
        cmocka_unit_test(test_body_length_ascii),
        cmocka_unit_test(test_body_length_four_byte_chars),
        cmocka_unit_test(test_body_whitespace_too_long_is_empty),
        cmocka_unit_test(test_body_invalid_utf8),
        cmocka_unit_test(test_body_embedded_nul),
        cmocka_unit_test(test_body_invalid_in_long_body),
        cmocka_unit_test(test_body_reasons),
    };

    return cmocka_run_group_tests_name("validate", tests, NULL, NULL);
}
