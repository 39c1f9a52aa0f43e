/* validate.h - the rules for ids, roles and message bodies, shared by the REST API and
 * the channels so that both refuse the same input the same way. Pure; any thread. */
#ifndef RC_VALIDATE_H
#define RC_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>

#define ROOM_ID_MAX 100
#define USER_ID_MAX 255
#define MESSAGE_MAX_CHARS 10000
#define EMOJI_MAX_BYTES 32

/* Room ids: 1..ROOM_ID_MAX characters of [A-Za-z0-9_.-]. */
bool validate_room_id(const char *s);

/* User ids: 1..USER_ID_MAX bytes of valid UTF-8 without control characters. */
bool validate_user_id(const char *s);

/* Roles: owner, editor, member, viewer. */
bool validate_role(const char *s);

/* Reaction emoji ("invalid_emoji" otherwise): 1..EMOJI_MAX_BYTES bytes (n) of valid
 * UTF-8 without NUL. Any string of that shape is accepted, not only emoji. */
bool validate_emoji(const char *s, size_t n);

enum body_check {
    BODY_OK = 0,
    BODY_EMPTY,    /* "message_empty": empty or only whitespace */
    BODY_TOO_LONG, /* "message_too_long": more than MESSAGE_MAX_CHARS code points */
    BODY_INVALID,  /* "invalid_message": not valid UTF-8 or contains a NUL */
};

/* Checks a message body of n bytes. */
enum body_check validate_body(const char *s, size_t n);

/* The error code/reason for a body_check ("message_empty", …); NULL for BODY_OK. */
const char *validate_body_reason(enum body_check c);

#endif
