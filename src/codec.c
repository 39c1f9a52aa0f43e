/* codec.c - Phoenix Channels wire format (docs/phoenix-protocol.md §1.3, §2, §3).
 *
 * Decoding goes through jansson; encoding writes text straight into an sbuf because it
 * runs for every outbound message and a json_t tree per message would cost more than
 * the message itself. */
#include <assert.h>
#include <string.h>

#include "codec.h"
#include "util/utf8.h"

/* Binary frame kinds (§3). */
enum {
    BIN_PUSH = 0,
    BIN_REPLY = 1,
    BIN_BROADCAST = 2,
    BIN_USER_PUSH = 3,      /* realtime-js: a client's broadcast */
    BIN_USER_BROADCAST = 4, /* realtime-js: a broadcast to a client */
};

/* A user broadcast's payload encodings (kinds 3 and 4). */
enum { USER_BINARY = 0, USER_JSON = 1 };

#define BIN_FIELD_MAX 255

/* True when s is "0" or digits without a leading zero (a semver numeric identifier). */
static bool vsn_patch_ok(const char *s)
{
    if (s[0] == '0')
        return s[1] == '\0';
    if (s[0] < '1' || s[0] > '9')
        return false;
    for (s++; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

int codec_parse_vsn(const char *vsn, enum codec_vsn *out)
{
    /* Phoenix parses vsn with Elixir's Version and matches "~> 1.0.0" / "~> 2.0.0": a
     * pre-release never matches, and Version refuses leading zeros. */
    if (!vsn) {
        *out = CODEC_V1;
        return 0;
    }
    if (strncmp(vsn, "1.0.", 4) == 0 && vsn_patch_ok(vsn + 4)) {
        *out = CODEC_V1;
        return 0;
    }
    if (strncmp(vsn, "2.0.", 4) == 0 && vsn_patch_ok(vsn + 4)) {
        *out = CODEC_V2;
        return 0;
    }
    return RC_EINVAL;
}

/* True when the arrays/objects in data nest no deeper than max_depth. */
static bool depth_ok(const char *data, size_t len, size_t max_depth)
{
    /* Runs before jansson so that a peer cannot make the parser recurse (and allocate)
     * deeply; it only counts, malformed input is left for jansson to refuse. */
    size_t depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char c = data[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
            continue;
        }
        switch (c) {
        case '"': in_str = true; break;
        case '[':
        case '{':
            if (++depth > max_depth)
                return false;
            break;
        case ']':
        case '}':
            if (depth)
                depth--;
            break;
        default: break;
        }
    }
    return true;
}

/* Sets out's topic fields from the topic value v (any JSON type). */
static void set_topic(struct phx_in *out, json_t *v)
{
    out->topic = v;
    if (json_is_string(v)) {
        out->topic_str = json_string_value(v);
        out->topic_len = json_string_length(v);
    }
}

/* Fills out from a V2 array [join_ref, ref, topic, event, payload, ...]. */
static int decode_v2(json_t *root, struct phx_in *out)
{
    if (!json_is_array(root) || json_array_size(root) < 5)
        return RC_EPROTO;
    json_t *event = json_array_get(root, 3);
    if (!json_is_string(event))
        return RC_EPROTO;
    json_t *jr = json_array_get(root, 0);
    json_t *ref = json_array_get(root, 1);
    out->join_ref = json_is_null(jr) ? NULL : jr;
    out->ref = json_is_null(ref) ? NULL : ref;
    set_topic(out, json_array_get(root, 2));
    out->event = json_string_value(event);
    out->payload = json_array_get(root, 4);
    return 0;
}

/* Fills out from a V1 object {topic, event, payload, ref[, join_ref]}. */
static int decode_v1(json_t *root, struct phx_in *out)
{
    if (!json_is_object(root))
        return RC_EPROTO;
    json_t *topic = json_object_get(root, "topic");
    json_t *event = json_object_get(root, "event");
    json_t *payload = json_object_get(root, "payload");
    json_t *ref = json_object_get(root, "ref");
    if (!topic || !payload || !ref || !json_is_string(event))
        return RC_EPROTO;
    json_t *jr = json_object_get(root, "join_ref");
    out->join_ref = json_is_null(jr) ? NULL : jr; /* json_is_null(NULL) is false */
    out->ref = json_is_null(ref) ? NULL : ref;
    set_topic(out, topic);
    out->event = json_string_value(event);
    out->payload = payload;
    return 0;
}

int codec_decode_text(enum codec_vsn vsn, const char *data, size_t len, size_t max_depth,
                      struct phx_in *out)
{
    memset(out, 0, sizeof *out);
    if (!depth_ok(data, len, max_depth))
        return RC_EPROTO;

    /* Flags 0: the top level must be an array or object, trailing garbage is refused,
     * and so is "\u0000" anywhere: topic and event are handed on as C strings, and
     * later code reading payload strings with json_string_value would truncate them. */
    json_error_t err;
    json_t *root = json_loadb(data, len, 0, &err);
    if (!root)
        return json_error_code(&err) == json_error_out_of_memory ? RC_ENOMEM : RC_EPROTO;

    int rc = vsn == CODEC_V2 ? decode_v2(root, out) : decode_v1(root, out);
    if (rc < 0) {
        json_decref(root);
        memset(out, 0, sizeof *out);
        return rc;
    }
    out->_root = root;
    return 0;
}

/* Appends the field p[0..n) to holder as a string; *v gets it, or NULL when n is 0 and
 * empty_is_null. */
static int bin_field(json_t *holder, const uint8_t *p, size_t n, bool empty_is_null, json_t **v)
{
    *v = NULL;
    if (n == 0 && empty_is_null)
        return 0;
    /* A NUL would cut event (which has no length) short for every later strcmp, and the
     * text path refuses "\u0000" too. */
    if (memchr(p, 0, n) || !utf8_valid((const char *)p, n))
        return RC_EPROTO;
    json_t *s = json_stringn((const char *)p, n);
    /* Having checked the bytes, NULL here is an allocation failure. */
    if (!s || json_array_append_new(holder, s) < 0)
        return RC_ENOMEM;
    *v = s;
    return 0;
}

/* A binary payload: n bytes at p, a view into the frame. */
static void set_bin(struct phx_in *out, const uint8_t *p, size_t n)
{
    out->binary = true;
    out->bin = p;
    out->bin_len = n;
}

/* Parses len bytes of JSON (any value; no deeper than max_depth) into *v. */
static int bin_json(const uint8_t *p, size_t len, size_t max_depth, json_t **v)
{
    if (!depth_ok((const char *)p, len, max_depth))
        return RC_EPROTO;
    json_error_t err;
    *v = json_loadb((const char *)p, len, JSON_DECODE_ANY, &err);
    if (!*v)
        return json_error_code(&err) == json_error_out_of_memory ? RC_ENOMEM : RC_EPROTO;
    return 0;
}

/* Kind 3, realtime-js's broadcast push: [3, jl, rl, tl, el, ml, encoding] then join_ref,
 * ref, topic, user event, metadata (a JSON object or nothing) and the payload. Read as
 * the text form's event "broadcast" with {"type":"broadcast","event","payload",...meta}
 * (a binary payload stays in bin). */
static int decode_user_push(const uint8_t *data, size_t len, size_t max_depth,
                            struct phx_in *out)
{
    if (len < 7 || data[6] > USER_JSON)
        return RC_EPROTO;
    size_t l[5] = {data[1], data[2], data[3], data[4], data[5]};
    size_t off = 7 + l[0] + l[1] + l[2] + l[3] + l[4];
    if (off > len)
        return RC_EPROTO;
    json_t *root = json_array();
    json_t *obj = json_object();
    json_t *event = json_string("broadcast");
    json_t *f[4], *meta = NULL, *payload = NULL;
    int rc = RC_ENOMEM;
    if (!root || !obj || !event || json_array_append(root, obj) || json_array_append(root, event))
        goto fail;
    const uint8_t *p = data + 7;
    for (int i = 0; i < 4; p += l[i], i++)
        if ((rc = bin_field(root, p, l[i], i < 2, &f[i])) < 0)
            goto fail;
    if (l[4] && (rc = bin_json(p, l[4], max_depth, &meta)) < 0)
        goto fail;
    if (meta && !json_is_object(meta)) {
        rc = RC_EPROTO;
        goto fail;
    }
    if (data[6] == USER_JSON && (rc = bin_json(data + off, len - off, max_depth, &payload)) < 0)
        goto fail;
    rc = RC_ENOMEM;
    json_t *pl = payload; /* set_new takes it, even when it fails: tried first */
    payload = NULL;
    if ((pl && json_object_set_new(obj, "payload", pl)) ||
        json_object_set_new(obj, "type", json_string("broadcast")) ||
        json_object_set(obj, "event", f[3]))
        goto fail;
    /* By hand: json_object_update_missing ignores a failed set (a key silently lost). */
    const char *key;
    json_t *v;
    json_object_foreach(meta, key, v)
    {
        if (!json_object_get(obj, key) && json_object_set(obj, key, v))
            goto fail;
    }
    json_decref(meta);
    json_decref(obj);
    out->join_ref = f[0];
    out->ref = f[1];
    set_topic(out, f[2]);
    out->event = json_string_value(event);
    json_decref(event);
    out->payload = obj;
    out->user_broadcast = true;
    if (data[6] == USER_BINARY)
        set_bin(out, data + off, len - off);
    out->_root = root;
    return 0;

fail:
    json_decref(payload);
    json_decref(meta);
    json_decref(event);
    json_decref(obj);
    json_decref(root);
    return rc;
}

int codec_decode_binary(enum codec_vsn vsn, const uint8_t *data, size_t len, size_t max_depth,
                        struct phx_in *out)
{
    memset(out, 0, sizeof *out);
    if (vsn == CODEC_V2 && len && data[0] == BIN_USER_PUSH) {
        int rc = decode_user_push(data, len, max_depth, out);
        if (rc)
            memset(out, 0, sizeof *out);
        return rc;
    }
    if (vsn != CODEC_V2 || len < 5 || data[0] != BIN_PUSH)
        return RC_EPROTO;
    size_t jl = data[1], rl = data[2], tl = data[3], el = data[4];
    size_t off = 5 + jl + rl + tl + el;
    if (off > len)
        return RC_EPROTO;

    json_t *root = json_array();
    if (!root)
        return RC_ENOMEM;
    const uint8_t *p = data + 5;
    json_t *jr, *ref, *topic, *event;
    int rc;
    if ((rc = bin_field(root, p, jl, true, &jr)) < 0)
        goto fail;
    p += jl;
    if ((rc = bin_field(root, p, rl, true, &ref)) < 0)
        goto fail;
    p += rl;
    if ((rc = bin_field(root, p, tl, false, &topic)) < 0)
        goto fail;
    p += tl;
    if ((rc = bin_field(root, p, el, false, &event)) < 0)
        goto fail;

    out->join_ref = jr;
    out->ref = ref;
    set_topic(out, topic);
    out->event = json_string_value(event);
    set_bin(out, data + off, len - off);
    out->_root = root;
    return 0;

fail:
    json_decref(root);
    return rc;
}

void codec_in_cleanup(struct phx_in *m)
{
    if (!m)
        return;
    json_decref(m->_root);
    memset(m, 0, sizeof *m);
}

char *codec_ref_text(const json_t *v)
{
    if (!v || json_is_null(v))
        return NULL;
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* Appends a ref (JSON text) or null. */
static void put_ref(struct sbuf *out, const char *ref, size_t ref_len)
{
    if (ref)
        sbuf_add(out, ref, ref_len);
    else
        sbuf_add(out, "null", 4);
}

/* Appends everything before the payload, reserving room for the whole message. */
static void encode_head(enum codec_vsn vsn, struct sbuf *out, const char *jr, const char *ref,
                        size_t ref_len, const char *topic, size_t topic_len, const char *event,
                        size_t rest)
{
    size_t jr_len = jr ? strlen(jr) : 0;
    size_t event_len = strlen(event);
    /* 56 covers punctuation, V1 keys and two nulls; escapes may still grow the buffer. */
    sbuf_reserve(out, jr_len + ref_len + topic_len + event_len + rest + 56);
    if (vsn == CODEC_V2) {
        sbuf_addc(out, '[');
        put_ref(out, jr, jr_len);
        sbuf_addc(out, ',');
        put_ref(out, ref, ref_len);
        sbuf_addc(out, ',');
        sbuf_add_json_str(out, topic, topic_len);
        sbuf_addc(out, ',');
        sbuf_add_json_str(out, event, event_len);
        sbuf_addc(out, ',');
    } else {
        /* Alphabetical keys, as Phoenix writes them; V1 output never has join_ref. */
        sbuf_add(out, "{\"event\":", 9);
        sbuf_add_json_str(out, event, event_len);
        sbuf_add(out, ",\"payload\":", 11);
    }
}

/* Appends everything after the payload. */
static void encode_tail(enum codec_vsn vsn, struct sbuf *out, const char *ref, size_t ref_len,
                        const char *topic, size_t topic_len)
{
    if (vsn == CODEC_V2) {
        sbuf_addc(out, ']');
    } else {
        sbuf_add(out, ",\"ref\":", 7);
        put_ref(out, ref, ref_len);
        sbuf_add(out, ",\"topic\":", 9);
        sbuf_add_json_str(out, topic, topic_len);
        sbuf_addc(out, '}');
    }
}

void codec_encode(enum codec_vsn vsn, struct sbuf *out, const char *jr, const char *ref,
                  const char *topic, size_t topic_len, const char *event, const char *payload,
                  size_t payload_len)
{
    if (!payload || !payload_len) {
        payload = "{}";
        payload_len = 2;
    }
    size_t ref_len = ref ? strlen(ref) : 0;
    encode_head(vsn, out, jr, ref, ref_len, topic, topic_len, event, payload_len);
    sbuf_add(out, payload, payload_len);
    encode_tail(vsn, out, ref, ref_len, topic, topic_len);
}

void codec_encode_reply(enum codec_vsn vsn, struct sbuf *out, const char *jr, const char *ref,
                        const char *topic, size_t topic_len, const char *status,
                        const char *response)
{
    if (!response)
        response = "{}";
    size_t ref_len = ref ? strlen(ref) : 0;
    size_t response_len = strlen(response);
    size_t status_len = strlen(status);
    encode_head(vsn, out, jr, ref, ref_len, topic, topic_len, "phx_reply",
                response_len + status_len + 26);
    sbuf_add(out, "{\"response\":", 12);
    sbuf_add(out, response, response_len);
    sbuf_add(out, ",\"status\":", 10);
    sbuf_add_json_str(out, status, status_len);
    sbuf_addc(out, '}');
    encode_tail(vsn, out, ref, ref_len, topic, topic_len);
}

/* Length of an optional binary field (NULL → 0). */
static size_t opt_len(const char *s)
{
    return s ? strlen(s) : 0;
}

/* Appends the header bytes and the fields of a binary frame whose fields all fit. */
static void bin_put(struct sbuf *out, uint8_t kind, const char *const *fields, const size_t *lens,
                    size_t n, const uint8_t *payload, size_t payload_len)
{
    size_t total = 1 + n + payload_len;
    for (size_t i = 0; i < n; i++)
        total += lens[i];
    sbuf_reserve(out, total);
    sbuf_addc(out, (char)kind);
    for (size_t i = 0; i < n; i++)
        sbuf_addc(out, (char)(uint8_t)lens[i]);
    for (size_t i = 0; i < n; i++)
        sbuf_add(out, fields[i], lens[i]);
    sbuf_add(out, payload, payload_len);
}

/* True when every one of the n lengths fits a length byte. */
static bool bin_lens_ok(const size_t *lens, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lens[i] > BIN_FIELD_MAX)
            return false;
    return true;
}

int codec_encode_binary_push(struct sbuf *out, const char *jr, const char *topic, const char *event,
                             const uint8_t *payload, size_t payload_len)
{
    assert(topic && event);
    const char *f[3] = {jr, topic, event};
    size_t l[3] = {opt_len(jr), strlen(topic), strlen(event)};
    if (!bin_lens_ok(l, 3))
        return RC_EINVAL;
    bin_put(out, BIN_PUSH, f, l, 3, payload, payload_len);
    return 0;
}

int codec_encode_binary_reply(struct sbuf *out, const char *jr, const char *ref, const char *topic,
                              const char *status, const uint8_t *response, size_t response_len)
{
    assert(topic && status);
    const char *f[4] = {jr, ref, topic, status};
    size_t l[4] = {opt_len(jr), opt_len(ref), strlen(topic), strlen(status)};
    if (!bin_lens_ok(l, 4))
        return RC_EINVAL;
    bin_put(out, BIN_REPLY, f, l, 4, response, response_len);
    return 0;
}

int codec_encode_binary_broadcast(struct sbuf *out, const char *topic, const char *event,
                                  const uint8_t *payload, size_t payload_len)
{
    assert(topic && event);
    const char *f[2] = {topic, event};
    size_t l[2] = {strlen(topic), strlen(event)};
    if (!bin_lens_ok(l, 2))
        return RC_EINVAL;
    bin_put(out, BIN_BROADCAST, f, l, 2, payload, payload_len);
    return 0;
}

int codec_encode_user_broadcast(struct sbuf *out, const char *topic, size_t topic_len,
                                const char *event, size_t event_len, const char *meta,
                                size_t meta_len, bool json, const uint8_t *payload,
                                size_t payload_len)
{
    size_t l[3] = {topic_len, event_len, meta ? meta_len : 0};
    if (!bin_lens_ok(l, 3))
        return RC_EINVAL;
    sbuf_reserve(out, 5 + l[0] + l[1] + l[2] + payload_len);
    sbuf_addc(out, (char)BIN_USER_BROADCAST);
    for (int i = 0; i < 3; i++)
        sbuf_addc(out, (char)(uint8_t)l[i]);
    sbuf_addc(out, (char)(json ? USER_JSON : USER_BINARY));
    sbuf_add(out, topic, topic_len);
    sbuf_add(out, event, event_len);
    sbuf_add(out, meta, l[2]);
    sbuf_add(out, payload, payload_len);
    return 0;
}
