#include <string.h>

#include "util/utf8.h"
#include "validate.h"

bool validate_room_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > ROOM_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

bool validate_emoji(const char *s, size_t n)
{
    return n >= 1 && n <= EMOJI_MAX_BYTES && utf8_valid(s, n) && !memchr(s, '\0', n);
}

bool validate_user_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > USER_ID_MAX || !utf8_valid(s, n))
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f ||
            ((unsigned char)s[i] == 0xc2 && (unsigned char)s[i + 1] < 0xa0)) /* U+0080..9F */
            return false;
    return true;
}

bool validate_role(const char *s)
{
    return !strcmp(s, "owner") || !strcmp(s, "editor") || !strcmp(s, "member") ||
           !strcmp(s, "viewer");
}

enum body_check validate_body(const char *s, size_t n)
{
    if (memchr(s, '\0', n) || !utf8_valid(s, n))
        return BODY_INVALID;
    bool blank = true;
    for (size_t i = 0; i < n && blank; i++)
        if (!strchr(" \t\r\n\v\f", s[i]))
            blank = false;
    if (blank)
        return BODY_EMPTY;
    if (n > MESSAGE_MAX_CHARS && utf8_count(s, n) > MESSAGE_MAX_CHARS)
        return BODY_TOO_LONG;
    return BODY_OK;
}

const char *validate_body_reason(enum body_check c)
{
    switch (c) {
    case BODY_OK: return NULL;
    case BODY_EMPTY: return "message_empty";
    case BODY_TOO_LONG: return "message_too_long";
    case BODY_INVALID: return "invalid_message";
    }
    return "invalid_message";
}
