/* api.c - REST routes. Validation happens here, before anything reaches the store, so
 * a refused request changes nothing. */
#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "config.h"
#include "bus.h"
#include "metrics.h"
#include "jwt.h"
#include "store.h"
#include "util/clock.h"
#include "util/sbuf.h"
#include "util/utf8.h"
#include "util/xmalloc.h"
#include "validate.h"

#define PAGE_DEFAULT 50
#define PAGE_MAX 200
#define CHANGES_DEFAULT 100
#define CHANGES_MAX 10000
#define TOKEN_TTL_DEFAULT 3600
#define TOKEN_TTL_MAX 31536000

void api_error(struct api_response *resp, int status, const char *code, const char *message)
{
    json_t *j = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
    resp->status = status;
    resp->body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
}

/* Serializes j (stealing it) as the response body. */
static void respond_json(struct api_response *resp, int status, json_t *j)
{
    if (!j) {
        api_error(resp, 500, "internal", "a stored value is not valid UTF-8");
        return;
    }
    resp->status = status;
    resp->body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
}

/* SHA-256, fetched once: the one-shot SHA256() looks the algorithm up on every call. */
static EVP_MD *sha256_md;

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static void digest(const char *s, unsigned char out[SHA256_DIGEST_LENGTH])
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, sha256_fetch);
    if (!sha256_md || !EVP_Digest(s, strlen(s), out, NULL, sha256_md, NULL))
        SHA256((const unsigned char *)s, strlen(s), out);
}

/* True when the Authorization header carries the API key; compares digests in
 * constant time so neither content nor length leaks through timing. */
static bool authorized(const struct config *cfg, const char *header)
{
    if (!header || strncmp(header, "Bearer ", 7))
        return false;
    unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
    digest(header + 7, a);
    digest(cfg->api_key, b);
    return CRYPTO_memcmp(a, b, sizeof a) == 0;
}

/* Splits a path into at most max segments (copies into buf); returns the count, or -1
 * when there are more. */
static int split_path(const char *path, char *buf, size_t cap, char **seg, int max)
{
    snprintf(buf, cap, "%s", path);
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        if (n == max)
            return -1;
        seg[n++] = t;
    }
    return n;
}

/* Parses the body as a JSON object; on failure fills resp and returns NULL. */
static json_t *parse_object(const struct api_request *req, struct api_response *resp)
{
    json_error_t jerr;
    json_t *j = json_loadb(req->body ? req->body : "", req->body_len,
                           JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
                           &jerr);
    if (!j) {
        char msg[256];
        snprintf(msg, sizeof msg, "malformed JSON body: %s", jerr.text);
        api_error(resp, 400, "invalid_json", msg);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        api_error(resp, 400, "invalid_request", "the request body must be a JSON object");
        return NULL;
    }
    return j;
}

/* Reads an optional string field; false (with resp filled) when present but not a
 * string (null counts as absent). */
static bool opt_string(json_t *obj, const char *key, const char **out, struct api_response *resp)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v)) {
        char msg[128];
        snprintf(msg, sizeof msg, "\"%s\" must be a string", key);
        api_error(resp, 400, "invalid_request", msg);
        return false;
    }
    *out = json_string_value(v);
    return true;
}

/* Reads a required string field. */
static bool req_string(json_t *obj, const char *key, const char **out, struct api_response *resp)
{
    if (!opt_string(obj, key, out, resp))
        return false;
    if (!*out) {
        char msg[128];
        snprintf(msg, sizeof msg, "\"%s\" is required", key);
        api_error(resp, 400, "invalid_request", msg);
        return false;
    }
    return true;
}

/* Parses a decimal query parameter in [min, max]; absent leaves *out unchanged. */
static bool query_int(const struct api_request *req, const char *name, int64_t min, int64_t max,
                      int64_t *out)
{
    const char *v = req->query(req->query_arg, name);
    if (!v)
        return true;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < min || x > max)
        return false;
    *out = x;
    return true;
}

/* Fills resp for a known path with the wrong method. */
static bool bad_method(struct api_response *resp)
{
    api_error(resp, 405, "method_not_allowed", "method not allowed on this path");
    return false;
}

/* Validates a room id from the path. */
static bool check_room(const char *id, struct api_response *resp)
{
    if (validate_room_id(id))
        return true;
    api_error(resp, 422, "invalid_room_id",
              "room ids are 1 to 100 characters of letters, digits, '_', '.' and '-'");
    return false;
}

/* Validates a user id. */
static bool check_user(const char *id, struct api_response *resp)
{
    if (validate_user_id(id))
        return true;
    api_error(resp, 422, "invalid_user_id",
              "user ids are 1 to 255 bytes of UTF-8 without control characters");
    return false;
}

/* PUT /api/users/{id} */
static bool put_user(const struct api_request *req, const char *id, struct api_response *resp,
                     struct store_req **pending)
{
    if (!check_user(id, resp))
        return false;
    json_t *j = parse_object(req, resp);
    if (!j)
        return false;
    const char *name, *avatar;
    bool ok = opt_string(j, "name", &name, resp) && opt_string(j, "avatar_url", &avatar, resp);
    if (ok) {
        struct store_req *s = store_req_create(STORE_USER_PUT);
        s->user_id = xstrdup(id);
        s->name = xstrdup(name ? name : id);
        s->avatar_url = avatar ? xstrdup(avatar) : NULL;
        *pending = s;
    }
    json_decref(j);
    return ok;
}

/* POST /api/rooms */
static bool create_room(const struct api_request *req, struct api_response *resp,
                        struct store_req **pending)
{
    json_t *j = parse_object(req, resp);
    if (!j)
        return false;
    const char *id, *name;
    bool ok = req_string(j, "id", &id, resp) && opt_string(j, "name", &name, resp) &&
              check_room(id, resp);
    if (ok) {
        struct store_req *s = store_req_create(STORE_ROOM_CREATE);
        s->room_id = xstrdup(id);
        s->name = xstrdup(name ? name : id);
        *pending = s;
    }
    json_decref(j);
    return ok;
}

/* PUT /api/rooms/{id}/members/{user} */
static bool put_member(const struct api_request *req, const char *room, const char *user,
                       struct api_response *resp, struct store_req **pending)
{
    json_t *j = parse_object(req, resp);
    if (!j)
        return false;
    const char *role;
    bool ok = req_string(j, "role", &role, resp);
    if (ok && !validate_role(role)) {
        api_error(resp, 422, "invalid_role", "role must be owner, editor, member or viewer");
        ok = false;
    }
    if (ok) {
        struct store_req *s = store_req_create(STORE_MEMBER_PUT);
        s->room_id = xstrdup(room);
        s->user_id = xstrdup(user);
        s->role = xstrdup(role);
        *pending = s;
    }
    json_decref(j);
    return ok;
}

/* Validates a message body as new_message does; a refusal gets status with the
 * channel's reason as its code. */
static bool check_body(json_t *body, int status, struct api_response *resp)
{
    enum body_check c = json_is_string(body)
                            ? validate_body(json_string_value(body), json_string_length(body))
                            : BODY_INVALID;
    if (c == BODY_OK)
        return true;
    const char *why = c == BODY_EMPTY      ? "the message body is empty"
                      : c == BODY_TOO_LONG ? "the message body is over 10000 characters"
                                           : "the message body must be a string";
    api_error(resp, status, validate_body_reason(c), why);
    return false;
}

/* Reads the optional "reply_to" (a message seq; absent or null: 0). */
static bool opt_reply_to(json_t *obj, int64_t *out, struct api_response *resp)
{
    json_t *v = json_object_get(obj, "reply_to");
    *out = 0;
    if (!v || json_is_null(v))
        return true;
    if (json_is_integer(v) && json_integer_value(v) >= 1) {
        *out = json_integer_value(v);
        return true;
    }
    api_error(resp, 400, "invalid_reply_to", "reply_to must be the seq of a message of the room");
    return false;
}

/* POST /api/rooms/{id}/messages {user_id, body, reply_to?} */
static bool post_message(const struct api_request *req, const char *room,
                         struct api_response *resp, struct store_req **pending)
{
    json_t *j = parse_object(req, resp);
    if (!j)
        return false;
    const char *user;
    int64_t reply_to;
    json_t *body = json_object_get(j, "body");
    bool ok = req_string(j, "user_id", &user, resp) && check_user(user, resp) &&
              check_body(body, 422, resp) && opt_reply_to(j, &reply_to, resp);
    if (ok) {
        struct store_req *s = store_req_create(STORE_MESSAGE_ADD);
        s->room_id = xstrdup(room);
        s->user_id = xstrdup(user);
        s->body = xstrndup(json_string_value(body), json_string_length(body));
        s->reply_to = reply_to;
        *pending = s;
    }
    json_decref(j);
    return ok;
}

/* Parses a message seq from the path: a positive decimal integer. */
static bool check_seq(const char *v, int64_t *out, struct api_response *resp)
{
    char *end;
    errno = 0;
    long long x = v[0] >= '0' && v[0] <= '9' ? strtoll(v, &end, 10) : 0;
    if (x < 1 || errno || *end) {
        api_error(resp, 400, "invalid_seq", "a message seq is a positive integer");
        return false;
    }
    *out = x;
    return true;
}

/* The acting user of a write from the query (?user_id=): NULL when absent (the API key
 * acts for anyone). False (resp filled) when present but invalid, or absent and
 * required. */
static bool query_user(const struct api_request *req, bool required, const char **out,
                       struct api_response *resp)
{
    *out = req->query(req->query_arg, "user_id");
    if (!*out && required) {
        api_error(resp, 400, "invalid_request", "the user_id query parameter is required");
        return false;
    }
    return !*out || check_user(*out, resp);
}

/* A write about message seq of room, made by user (NULL: the API key). */
static struct store_req *message_req(enum store_op op, const char *room, int64_t seq,
                                     const char *user)
{
    struct store_req *s = store_req_create(op);
    s->room_id = xstrdup(room);
    s->seq = seq;
    s->user_id = user ? xstrdup(user) : NULL;
    return s;
}

/* PATCH /api/rooms/{id}/messages/{seq} {body, user_id?}: an edit as user_id (the author
 * only), or without it by the API key, whoever wrote the message. */
static bool patch_message(const struct api_request *req, const char *room, int64_t seq,
                          struct api_response *resp, struct store_req **pending)
{
    json_t *j = parse_object(req, resp);
    if (!j)
        return false;
    const char *user;
    json_t *body = json_object_get(j, "body");
    bool ok = opt_string(j, "user_id", &user, resp) && (!user || check_user(user, resp)) &&
              check_body(body, 400, resp);
    if (ok) {
        *pending = message_req(STORE_MESSAGE_EDIT, room, seq, user);
        (*pending)->body = xstrndup(json_string_value(body), json_string_length(body));
    }
    json_decref(j);
    return ok;
}

/* PUT or DELETE /api/rooms/{id}/messages/{seq}/reactions/{emoji}?user_id= (the path
 * arrives percent-decoded). */
static bool put_reaction(const struct api_request *req, bool put, const char *room, int64_t seq,
                         const char *emoji, struct api_response *resp, struct store_req **pending)
{
    const char *user;
    if (!query_user(req, true, &user, resp))
        return false;
    if (!validate_emoji(emoji, strlen(emoji))) {
        api_error(resp, 400, "invalid_emoji", "an emoji is 1 to 32 bytes of UTF-8");
        return false;
    }
    *pending = message_req(put ? STORE_REACTION_PUT : STORE_REACTION_DELETE, room, seq, user);
    (*pending)->name = xstrdup(emoji);
    return true;
}

/* PUT /api/rooms/{id}/members/{user}/read {seq}: moves the user's read cursor. */
static bool put_read(const struct api_request *req, const char *room, const char *user,
                     struct api_response *resp, struct store_req **pending)
{
    json_t *j = parse_object(req, resp);
    if (!j)
        return false;
    json_t *seq = json_object_get(j, "seq");
    bool ok = json_is_integer(seq) && json_integer_value(seq) >= 0;
    if (ok) {
        struct store_req *s = store_req_create(STORE_READ_MARK);
        s->room_id = xstrdup(room);
        s->user_id = xstrdup(user);
        s->seq = json_integer_value(seq);
        *pending = s;
    } else {
        api_error(resp, 400, "invalid_seq", "seq must be an integer >= 0");
    }
    json_decref(j);
    return ok;
}

/* GET /api/rooms/{id}/changes?since_version=&limit= */
static bool get_changes(const struct api_request *req, const char *room,
                        struct api_response *resp, struct store_req **pending)
{
    int64_t since = 0, limit = CHANGES_DEFAULT;
    if (!query_int(req, "since_version", 0, INT64_MAX, &since)) {
        api_error(resp, 400, "invalid_version", "since_version must be an integer >= 0");
        return false;
    }
    if (!query_int(req, "limit", 1, CHANGES_MAX, &limit)) {
        api_error(resp, 400, "invalid_limit", "limit must be an integer from 1 to 10000");
        return false;
    }
    struct store_req *s = store_req_create(STORE_CHANGES_PAGE);
    s->room_id = xstrdup(room);
    s->since_version = since;
    s->limit = (int)limit;
    *pending = s;
    return true;
}

/* GET /api/rooms/{id}/messages/{seq}/replies?after_seq=&limit= */
static bool get_replies(const struct api_request *req, const char *room, int64_t seq,
                        struct api_response *resp, struct store_req **pending)
{
    int64_t after = 0, limit = PAGE_DEFAULT;
    if (!query_int(req, "limit", 1, PAGE_MAX, &limit)) {
        api_error(resp, 400, "invalid_limit", "limit must be an integer from 1 to 200");
        return false;
    }
    if (!query_int(req, "after_seq", 0, INT64_MAX, &after)) {
        api_error(resp, 400, "invalid_seq", "after_seq must be an integer >= 0");
        return false;
    }
    struct store_req *s = message_req(STORE_REPLIES_PAGE, room, seq, NULL);
    s->after_seq = after;
    s->limit = (int)limit;
    *pending = s;
    return true;
}

/* Routes /api/rooms/{id}/messages/{seq}[/…] (n path segments). */
static bool message_route(const struct api_request *req, char **seg, int n,
                          struct api_response *resp, struct store_req **pending)
{
    const char *m = req->method;
    int64_t seq;
    if (n == 5 && strcmp(m, "PATCH") && strcmp(m, "DELETE"))
        return bad_method(resp);
    if (n == 6 && strcmp(seg[5], "replies")) {
        api_error(resp, 404, "not_found", "no such route");
        return false;
    }
    if (n == 6 && strcmp(m, "GET"))
        return bad_method(resp);
    if (n == 7 && strcmp(seg[5], "reactions")) {
        api_error(resp, 404, "not_found", "no such route");
        return false;
    }
    if (n == 7 && strcmp(m, "PUT") && strcmp(m, "DELETE"))
        return bad_method(resp);
    if (!check_seq(seg[4], &seq, resp))
        return false;
    const char *room = seg[2], *user;
    if (n == 6)
        return get_replies(req, room, seq, resp, pending);
    if (n == 7)
        return put_reaction(req, !strcmp(m, "PUT"), room, seq, seg[6], resp, pending);
    if (!strcmp(m, "PATCH"))
        return patch_message(req, room, seq, resp, pending);
    if (!query_user(req, false, &user, resp))
        return false;
    *pending = message_req(STORE_MESSAGE_DELETE, room, seq, user);
    return true;
}

/* GET /api/rooms/{id}/messages */
static bool get_messages(const struct api_request *req, const char *room,
                         struct api_response *resp, struct store_req **pending)
{
    int64_t limit = PAGE_DEFAULT, after = -1, before = -1;
    if (!query_int(req, "limit", 1, PAGE_MAX, &limit)) {
        api_error(resp, 422, "invalid_limit", "limit must be an integer from 1 to 200");
        return false;
    }
    if (!query_int(req, "after_seq", 0, INT64_MAX, &after) ||
        !query_int(req, "before_seq", 0, INT64_MAX, &before)) {
        api_error(resp, 422, "invalid_seq", "after_seq and before_seq must be integers >= 0");
        return false;
    }
    struct store_req *s = store_req_create(STORE_MESSAGES_PAGE);
    s->room_id = xstrdup(room);
    s->limit = (int)limit;
    s->after_seq = after;
    s->before_seq = before;
    *pending = s;
    return true;
}

/* POST /api/tokens */
static void post_token(const struct config *cfg, const struct api_request *req,
                       struct api_response *resp)
{
    json_t *j = parse_object(req, resp);
    if (!j)
        return;
    const char *user;
    if (!req_string(j, "user_id", &user, resp) || !check_user(user, resp))
        goto out;
    json_t *ttlv = json_object_get(j, "ttl");
    json_int_t ttl = TOKEN_TTL_DEFAULT;
    if (ttlv && !json_is_null(ttlv)) {
        if (!json_is_integer(ttlv)) {
            api_error(resp, 400, "invalid_request", "\"ttl\" must be an integer");
            goto out;
        }
        ttl = json_integer_value(ttlv);
        if (ttl < 1 || ttl > TOKEN_TTL_MAX) {
            api_error(resp, 422, "invalid_ttl", "ttl must be from 1 to 31536000 seconds");
            goto out;
        }
    }
    int64_t now = clock_unix();
    char *token = NULL;
    if (jwt_sign((const uint8_t *)cfg->jwt_secret, strlen(cfg->jwt_secret), user, now,
                 now + ttl, &token)) {
        api_error(resp, 500, "internal", "could not sign the token");
        goto out;
    }
    respond_json(resp, 200, json_pack("{s:s,s:I}", "token", token, "expires_at", (json_int_t)(now + ttl)));
    free(token);
out:
    json_decref(j);
}

/* Whether a realtime-js broadcast's topic (without "realtime:") and event may be sent;
 * false with resp filled. */
static bool realtime_names_ok(const char *topic, const char *event, struct api_response *resp)
{
    size_t tl = strlen(topic), el = strlen(event);
    if (tl && tl <= 255 - 9 && el && el <= 255 && strncmp(event, "phx_", 4))
        return true;
    api_error(resp, 422, "invalid_broadcast",
              "topic is 1 to 246 bytes, event 1 to 255; phx_* events are reserved");
    return false;
}

/* A realtime-js broadcast (the client's `broadcast` event) of event and payload (NULL:
 * {}) on realtime:<topic>: public, published to every node's subscribers now; private,
 * *pending becomes the room's durable broadcast (202 once committed). */
static void realtime_broadcast(struct bus *bus, const char *topic, const char *event,
                               json_t *payload, bool private_, struct store_req **pending)
{
    if (private_) {
        struct store_req *s = store_req_create(STORE_BROADCAST_ADD);
        s->room_id = xstrdup(topic);
        s->name = xstrdup(event);
        s->data = payload ? json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY) : xstrdup("{}");
        *pending = s;
        return;
    }
    json_t *o = json_pack("{s:s,s:s,s:o}", "type", "broadcast", "event", event, "payload",
                          payload ? json_incref(payload) : json_object());
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    struct sbuf t = SBUF_INIT;
    sbuf_adds(&t, "realtime:");
    sbuf_adds(&t, topic);
    bus_broadcast(bus, t.data, "broadcast", text, strlen(text), 0);
    sbuf_cleanup(&t);
    free(text);
}

/* A private message must name a room; false with resp filled. */
static bool private_topic_ok(const char *topic, struct api_response *resp)
{
    if (validate_room_id(topic))
        return true;
    api_error(resp, 404, "not_found", "no such room");
    return false;
}

/* POST /api/broadcast {messages: [{topic, event, payload, private}]}, realtime-js's
 * shape: every message is checked first, then sent; at most one may be private (its
 * commit answers the request). Returns whether *pending was set. */
static bool post_messages(struct bus *bus, json_t *msgs, struct api_response *resp,
                          struct store_req **pending)
{
    size_t i, n_private = 0;
    json_t *m;
    if (!json_array_size(msgs) || json_array_size(msgs) > 100) {
        api_error(resp, 422, "invalid_broadcast", "\"messages\" holds 1 to 100 messages");
        return false;
    }
    json_array_foreach(msgs, i, m) {
        json_t *t = json_object_get(m, "topic"), *e = json_object_get(m, "event");
        json_t *pv = json_object_get(m, "private");
        if (!json_is_string(t) || !json_is_string(e) || (pv && !json_is_boolean(pv))) {
            api_error(resp, 400, "invalid_request",
                      "each message has string topic and event, and private a boolean");
            return false;
        }
        if (!realtime_names_ok(json_string_value(t), json_string_value(e), resp))
            return false;
        if (json_is_true(pv) && (!private_topic_ok(json_string_value(t), resp) ||
                                 ++n_private > 1)) {
            if (n_private > 1)
                api_error(resp, 422, "invalid_broadcast",
                          "at most one private message per request");
            return false;
        }
    }
    json_array_foreach(msgs, i, m)
        realtime_broadcast(bus, json_string_value(json_object_get(m, "topic")),
                           json_string_value(json_object_get(m, "event")),
                           json_object_get(m, "payload"),
                           json_is_true(json_object_get(m, "private")), pending);
    if (!*pending)
        respond_json(resp, 202, json_object());
    return *pending != NULL;
}

/* POST /api/broadcast {topic, event, payload}: an ephemeral broadcast to a topic's
 * subscribers; event "disconnect" to "user_socket:<user>" closes that user's sockets.
 * {messages: [...]} is realtime-js's form (post_messages). Returns whether *pending was
 * set. */
static bool post_broadcast(struct bus *bus, const struct api_request *req,
                           struct api_response *resp, struct store_req **pending)
{
    json_t *j = parse_object(req, resp);
    if (!j)
        return false;
    bool queued = false;
    const char *topic, *event;
    json_t *msgs = json_object_get(j, "messages");
    if (msgs) {
        if (json_is_array(msgs))
            queued = post_messages(bus, msgs, resp, pending);
        else
            api_error(resp, 400, "invalid_request", "\"messages\" must be an array");
        goto out;
    }
    if (!req_string(j, "topic", &topic, resp) || !req_string(j, "event", &event, resp))
        goto out;
    json_t *payload = json_object_get(j, "payload");
    if (payload && !json_is_null(payload) && !json_is_object(payload)) {
        api_error(resp, 400, "invalid_request", "\"payload\" must be a JSON object");
        goto out;
    }
    size_t tl = strlen(topic);
    if (tl == 0 || tl > 255 || !*event || strlen(event) > 255 || !strncmp(event, "phx_", 4)) {
        api_error(resp, 422, "invalid_broadcast",
                  "topic and event are 1 to 255 bytes; phx_* events are reserved");
        goto out;
    }
    if (!strncmp(topic, "user_socket:", 12) && !strcmp(event, "disconnect")) {
        bus_disconnect_user(bus, topic + 12);
    } else {
        char *text = payload && json_is_object(payload) ? json_dumps(payload, JSON_COMPACT)
                                                         : strdup("{}");
        bus_broadcast(bus, topic, event, text, strlen(text), 0);
        free(text);
    }
    respond_json(resp, 200, json_pack("{s:s}", "status", "ok"));
out:
    json_decref(j);
    return queued;
}

/* POST /api/broadcast/{topic}/events/{event}[?private=true]: realtime-js's httpSend; the
 * body is the payload (any JSON value; empty: {}). Returns whether *pending was set. */
static bool post_event(struct bus *bus, const struct api_request *req, const char *topic,
                       const char *event, struct api_response *resp, struct store_req **pending)
{
    const char *pq = req->query ? req->query(req->query_arg, "private") : NULL;
    bool private_ = pq && !strcmp(pq, "true");
    if (!realtime_names_ok(topic, event, resp) || (private_ && !private_topic_ok(topic, resp)))
        return false;
    json_t *payload = NULL;
    if (req->body_len) {
        json_error_t jerr;
        payload = json_loadb(req->body, req->body_len, JSON_DECODE_ANY, &jerr);
        if (!payload) {
            char msg[256];
            snprintf(msg, sizeof msg, "the body must be JSON (binary payloads are not "
                                      "supported): %s", jerr.text);
            api_error(resp, 400, "invalid_json", msg);
            return false;
        }
    }
    realtime_broadcast(bus, topic, event, payload, private_, pending);
    json_decref(payload);
    if (!*pending)
        respond_json(resp, 202, json_object());
    return *pending != NULL;
}

/* POST /api/notifications {user_id, message, data?} */
static bool post_notification(const struct api_request *req, struct api_response *resp,
                              struct store_req **pending)
{
    json_t *j = parse_object(req, resp);
    if (!j)
        return false;
    bool ok = false;
    const char *user;
    if (!req_string(j, "user_id", &user, resp) || !check_user(user, resp))
        goto out;
    json_t *msg = json_object_get(j, "message");
    json_t *data = json_object_get(j, "data");
    if (data && !json_is_null(data) && !json_is_object(data)) {
        api_error(resp, 400, "invalid_request", "\"data\" must be a JSON object");
        goto out;
    }
    if (!json_is_string(msg) ||
        validate_body(json_string_value(msg), json_string_length(msg)) != BODY_OK) {
        api_error(resp, 422, "invalid_notification",
                  "message must be a non-empty string of at most 10000 characters");
        goto out;
    }
    struct store_req *s = store_req_create(STORE_NOTIFY_ADD);
    s->user_id = xstrdup(user);
    s->body = xstrndup(json_string_value(msg), json_string_length(msg));
    s->data = data && json_is_object(data) ? json_dumps(data, JSON_COMPACT) : NULL;
    *pending = s;
    ok = true;
out:
    json_decref(j);
    return ok;
}

/* POST /dev/token {user_id} (--env dev with the demo only): a token for anyone, and
 * membership of the demo rooms. Never in prod: there it is a 404. */
static bool dev_token(const struct config *cfg, const struct api_request *req,
                      struct api_response *resp, struct store_req **pending)
{
    json_t *j = parse_object(req, resp);
    if (!j)
        return false;
    const char *user;
    bool ok = req_string(j, "user_id", &user, resp) && check_user(user, resp);
    char *token = NULL;
    int64_t now = clock_unix();
    if (ok && jwt_sign((const uint8_t *)cfg->jwt_secret, strlen(cfg->jwt_secret), user, now,
                       now + 86400, &token)) {
        api_error(resp, 500, "internal", "could not sign the token");
        ok = false;
    }
    if (ok) {
        struct store_req *s = store_req_create(STORE_DEV_SETUP);
        s->user_id = xstrdup(user);
        s->body = token; /* handed back by api_finish */
        *pending = s;
    }
    json_decref(j);
    return ok;
}

bool api_handle(const struct config *cfg, struct bus *bus, const struct api_request *req,
                struct api_response *resp, struct store_req **pending)
{
    const char *m = req->method;
    bool get = !strcmp(m, "GET"), post = !strcmp(m, "POST"), put = !strcmp(m, "PUT"),
         del = !strcmp(m, "DELETE");
    *pending = NULL;
    if (!strcmp(req->path, "/metrics")) {
        if (!authorized(cfg, req->authorization)) {
            api_error(resp, 401, "unauthorized", "missing or wrong API key (Authorization: Bearer)");
            return false;
        }
        struct sbuf b = SBUF_INIT;
        metrics_render(&b);
        resp->status = 200;
        resp->body = sbuf_steal(&b, NULL);
        resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
        return false;
    }
    if (!strcmp(req->path, "/healthz")) {
        if (!get)
            return bad_method(resp);
        /* With the cluster bus down PostgreSQL is unreachable: answer at once (probes
         * time out long before a database request would give up). */
        if (bus && bus_state(bus) == BUS_DOWN) {
            respond_json(resp, 503, json_pack("{s:s,s:s,s:s}", "status", "unavailable",
                                              "database", "unreachable", "bus", "down"));
            return false;
        }
        *pending = store_req_create(STORE_PING);
        return true;
    }
    if (!strcmp(req->path, "/dev/token") && !strcmp(cfg->env, "dev") && cfg->demo)
        return post ? dev_token(cfg, req, resp, pending) : bad_method(resp);
    char buf[1024];
    char *seg[7];
    int n = strlen(req->path) < sizeof buf ? split_path(req->path, buf, sizeof buf, seg, 7) : -1;
    /* realtime-js's REST broadcasts go to <socket URL's /realtime/v1>/api/broadcast… */
    if (n >= 4 && !strcmp(seg[0], "realtime") && !strcmp(seg[1], "v1") &&
        !strcmp(seg[2], "api") && !strcmp(seg[3], "broadcast")) {
        memmove(seg, seg + 2, (size_t)(n - 2) * sizeof *seg);
        n -= 2;
    }
    if (n < 2 || strcmp(seg[0], "api")) {
        api_error(resp, 404, "not_found", "no such route");
        return false;
    }
    if (!authorized(cfg, req->authorization)) {
        api_error(resp, 401, "unauthorized", "missing or wrong API key (Authorization: Bearer)");
        return false;
    }
    if (!strcmp(seg[1], "users") && n == 3)
        return put ? put_user(req, seg[2], resp, pending) : bad_method(resp);
    if (!strcmp(seg[1], "users") && n == 4 && !strcmp(seg[3], "rooms")) {
        if (!get)
            return bad_method(resp);
        if (!check_user(seg[2], resp))
            return false;
        struct store_req *s = store_req_create(STORE_USER_ROOMS);
        s->user_id = xstrdup(seg[2]);
        *pending = s;
        return true;
    }
    if (!strcmp(seg[1], "users") && n == 4 && !strcmp(seg[3], "disconnect")) {
        if (!post)
            return bad_method(resp);
        if (check_user(seg[2], resp)) {
            bus_disconnect_user(bus, seg[2]);
            respond_json(resp, 200, json_pack("{s:s}", "status", "ok"));
        }
        return false;
    }
    if (!strcmp(seg[1], "notifications") && n == 2)
        return post ? post_notification(req, resp, pending) : bad_method(resp);
    if (!strcmp(seg[1], "broadcast") && n == 2)
        return post ? post_broadcast(bus, req, resp, pending) : bad_method(resp);
    if (!strcmp(seg[1], "broadcast") && n == 5 && !strcmp(seg[3], "events"))
        return post ? post_event(bus, req, seg[2], seg[4], resp, pending) : bad_method(resp);
    if (!strcmp(seg[1], "tokens") && n == 2) {
        if (!post)
            return bad_method(resp);
        post_token(cfg, req, resp);
        return false;
    }
    if (strcmp(seg[1], "rooms")) {
        api_error(resp, 404, "not_found", "no such route");
        return false;
    }
    if (n == 2)
        return post ? create_room(req, resp, pending) : bad_method(resp);
    if (n == 3 && !get && !del)
        return bad_method(resp);
    if (n >= 3 && !check_room(seg[2], resp)) {
        if (n > 3 || get || del)
            api_error(resp, 404, "not_found", "no such room");
        return false;
    }
    if (n == 3) {
        struct store_req *s = store_req_create(get ? STORE_ROOM_GET : STORE_ROOM_DELETE);
        s->room_id = xstrdup(seg[2]);
        *pending = s;
        return true;
    }
    if (!strcmp(seg[3], "members") && n == 4) {
        if (!get)
            return bad_method(resp);
        struct store_req *s = store_req_create(STORE_MEMBERS_LIST);
        s->room_id = xstrdup(seg[2]);
        *pending = s;
        return true;
    }
    if (!strcmp(seg[3], "members") && n == 5) {
        if (!check_user(seg[4], resp))
            return false;
        if (put)
            return put_member(req, seg[2], seg[4], resp, pending);
        if (!del)
            return bad_method(resp);
        struct store_req *s = store_req_create(STORE_MEMBER_DELETE);
        s->room_id = xstrdup(seg[2]);
        s->user_id = xstrdup(seg[4]);
        *pending = s;
        return true;
    }
    if (!strcmp(seg[3], "members") && n == 6 && !strcmp(seg[5], "read")) {
        if (!put)
            return bad_method(resp);
        return check_user(seg[4], resp) && put_read(req, seg[2], seg[4], resp, pending);
    }
    if (!strcmp(seg[3], "messages") && n == 4) {
        if (post)
            return post_message(req, seg[2], resp, pending);
        if (get)
            return get_messages(req, seg[2], resp, pending);
        return bad_method(resp);
    }
    if (!strcmp(seg[3], "messages") && n >= 5)
        return message_route(req, seg, n, resp, pending);
    if (!strcmp(seg[3], "changes") && n == 4)
        return get ? get_changes(req, seg[2], resp, pending) : bad_method(resp);
    api_error(resp, 404, "not_found", "no such route");
    return false;
}

/* A room as REST shows it. */
static json_t *room_json(const struct store_room *r)
{
    return json_pack("{s:s,s:s,s:I,s:s}", "id", r->id, "name", r->name, "last_seq",
                     (json_int_t)r->last_seq, "created_at", r->created_at);
}

/* Whether op is about one message of a room (so a 404 names the message too). */
static bool about_message(enum store_op op)
{
    return op == STORE_MESSAGE_EDIT || op == STORE_MESSAGE_DELETE || op == STORE_REACTION_PUT ||
           op == STORE_REACTION_DELETE || op == STORE_REPLIES_PAGE;
}

/* The error response of a store request that failed with s->rc. */
static void refused(const struct store_req *s, struct api_response *resp)
{
    bool author_only = s->op == STORE_MESSAGE_EDIT || s->op == STORE_MESSAGE_DELETE;
    switch (s->rc) {
    case RC_ENOTFOUND:
        api_error(resp, 404, "not_found",
                  s->op == STORE_MEMBER_DELETE ? "no such member"
                  : about_message(s->op)       ? "no such room or message"
                                               : "no such room");
        return;
    case RC_ECONFLICT: api_error(resp, 409, "conflict", "a room with this id exists"); return;
    case RC_EFORBIDDEN:
        if (author_only)
            api_error(resp, 403, "insufficient_permissions",
                      s->op == STORE_MESSAGE_EDIT
                          ? "only the author may edit a message"
                          : "only the author or an owner of the room may delete a message");
        else
            api_error(resp, 404, "not_found", "no such member");
        return;
    case RC_EGONE: api_error(resp, 409, "message_deleted", "the message was deleted"); return;
    case RC_EINVAL:
        if (s->op == STORE_MESSAGE_ADD) {
            api_error(resp, 400, "invalid_reply_to",
                      "reply_to names no message of this room that is there and not deleted");
            return;
        }
        break;
    default: break;
    }
    api_error(resp, 503, "store_unavailable", "the database failed; nothing was changed");
}

/* A committed read mark: tells the user's notifications channels on every node, as
 * mark_read on a room does. */
static void publish_unread(struct bus *bus, const struct store_req *s, json_t *read)
{
    if (!bus || !read)
        return;
    json_t *ev = json_deep_copy(read);
    json_object_set_new(ev, "room_id", json_string(s->room_id));
    char *text = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    if (!text)
        return;
    struct sbuf topic = SBUF_INIT;
    sbuf_adds(&topic, "notifications:");
    sbuf_adds(&topic, s->user_id);
    bus_broadcast(bus, topic.data, "unread", text, strlen(text), 0);
    sbuf_cleanup(&topic);
    free(text);
}

/* Answers a page of messages (a room's or a thread's), {"messages":[…]}. */
static void messages_page(const struct store_req *s, struct api_response *resp)
{
    /* The same encoder as the channels: rows written by other processes may hold
     * invalid UTF-8, which it replaces instead of failing the page. */
    struct sbuf b = SBUF_INIT;
    sbuf_adds(&b, "{\"messages\":[");
    for (size_t i = 0; i < s->n_msgs; i++) {
        if (i)
            sbuf_addc(&b, ',');
        store_msg_append_json(&b, &s->msgs[i]);
    }
    sbuf_adds(&b, "]}");
    resp->status = 200;
    resp->body = sbuf_steal(&b, NULL);
}

/* Answers a page of a room's changes, {"changes":[…],"has_more","version"}. */
static void changes_page(const struct store_req *s, struct api_response *resp)
{
    struct sbuf b = SBUF_INIT;
    store_changes_append_json(&b, s);
    resp->status = 200;
    resp->body = sbuf_steal(&b, NULL);
}

/* Answers a user's rooms with their read state, {"rooms":[…]}. */
static void rooms_of_user(const struct store_req *s, struct api_response *resp)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < s->n_user_rooms; i++) {
        const struct store_user_room *r = &s->user_rooms[i];
        json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:I,s:I}", "room_id", r->room_id, "name", r->name,
                              "role", r->role, "last_seq", (json_int_t)r->last_seq,
                              "last_read_seq", (json_int_t)r->last_read_seq, "unread",
                              (json_int_t)r->unread);
        if (!o) {
            json_decref(arr);
            respond_json(resp, 200, NULL);
            return;
        }
        json_array_append_new(arr, o);
    }
    respond_json(resp, 200, json_pack("{s:o}", "rooms", arr));
}

void api_finish(struct bus *bus, const struct store_req *s, struct api_response *resp)
{
    if (s->op == STORE_PING) {
        /* PostgreSQL mode: the LISTEN connection counts too; without it this node misses
         * other nodes' rows (its local sockets are still served). */
        enum bus_state st = bus ? bus_state(bus) : BUS_LOCAL;
        bool ok = !s->rc && st != BUS_DOWN;
        respond_json(resp, ok ? 200 : 503,
                     json_pack("{s:s,s:s,s:s}", "status", ok ? "ok" : "unavailable", "database",
                               s->rc ? rc_strerror(s->rc) : "ok", "bus", bus_state_name(st)));
        return;
    }
    if (s->rc) {
        refused(s, resp);
        return;
    }
    switch (s->op) {
    case STORE_USER_PUT:
        respond_json(resp, 200,
                     json_pack("{s:s,s:s,s:s?,s:s}", "id", s->user.id, "name", s->user.name,
                               "avatar_url", s->user.avatar_url, "created_at", s->user.created_at));
        return;
    case STORE_ROOM_CREATE: respond_json(resp, 201, room_json(&s->room)); return;
    case STORE_ROOM_GET: respond_json(resp, 200, room_json(&s->room)); return;
    case STORE_ROOM_DELETE:
    case STORE_MEMBER_DELETE: resp->status = 204; resp->body = NULL; return;
    case STORE_MEMBER_PUT:
        respond_json(resp, 200,
                     json_pack("{s:s,s:s,s:s,s:s}", "room_id", s->member.room_id, "user_id",
                               s->member.user_id, "role", s->member.role, "name", s->member.name));
        return;
    case STORE_MEMBERS_LIST: {
        json_t *arr = json_array();
        for (size_t i = 0; i < s->n_members; i++)
            json_array_append_new(arr, json_pack("{s:s,s:s,s:s}", "user_id",
                                                 s->members[i].user_id, "role",
                                                 s->members[i].role, "name", s->members[i].name));
        respond_json(resp, 200, json_pack("{s:o}", "members", arr));
        return;
    }
    case STORE_MESSAGE_ADD:
        respond_json(resp, 201, json_pack("{s:I,s:I,s:s}", "id", (json_int_t)s->msg.id, "seq",
                                          (json_int_t)s->msg.seq, "inserted_at",
                                          s->msg.inserted_at));
        return;
    case STORE_BROADCAST_ADD: respond_json(resp, 202, json_object()); return;
    case STORE_DEV_SETUP:
        respond_json(resp, 200, json_pack("{s:s,s:s}", "token", s->body, "user_id", s->user_id));
        return;
    case STORE_NOTIFY_ADD: {
        struct sbuf b = SBUF_INIT;
        store_notif_append_json(&b, &s->notif);
        json_t *j = json_loadb(b.data, b.len, 0, NULL);
        sbuf_cleanup(&b);
        if (j)
            json_object_set_new(j, "user_id", json_string(s->notif.user_id));
        respond_json(resp, 201, j);
        return;
    }
    case STORE_MESSAGES_PAGE:
    case STORE_REPLIES_PAGE: messages_page(s, resp); return;
    case STORE_CHANGES_PAGE: changes_page(s, resp); return;
    case STORE_USER_ROOMS: rooms_of_user(s, resp); return;
    case STORE_MESSAGE_EDIT:
    case STORE_MESSAGE_DELETE:
        respond_json(resp, 200, json_pack("{s:I,s:I}", "seq", (json_int_t)s->seq, "version",
                                          (json_int_t)s->version));
        return;
    case STORE_REACTION_PUT:
    case STORE_REACTION_DELETE:
        /* version 0: nothing changed, the room's current version answers */
        respond_json(resp, 200,
                     json_pack("{s:I,s:s,s:I}", "seq", (json_int_t)s->seq, "emoji", s->name,
                               "version", (json_int_t)(s->version ? s->version : s->room.version)));
        return;
    case STORE_READ_MARK: {
        json_t *read = json_pack("{s:I,s:I,s:I}", "last_read_seq",
                                 (json_int_t)s->member.last_read_seq, "unread",
                                 (json_int_t)s->member.unread, "last_seq",
                                 (json_int_t)s->room.last_seq);
        publish_unread(bus, s, read);
        respond_json(resp, 200, read);
        return;
    }
    default: api_error(resp, 500, "internal", "unexpected request"); return;
    }
}
