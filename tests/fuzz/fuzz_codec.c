/* fuzz_codec.c - libFuzzer target for the Phoenix wire format (src/codec.h).
 *
 * Input: one control byte, then a frame. The control byte picks the serializer (bit 0:
 * V1 or V2) and the depth limit (bits 1..6: 0..63) for codec_decode_text. The frame is
 * decoded as text with that vsn and as a V2 binary frame (and as a V1 binary frame, which
 * must be refused). Whatever decodes is encoded again the way the router does it
 * (codec_ref_text of the refs, the payload as compact JSON text) and the encoding is
 * decoded once more: a message of ours must decode, to the same topic, event, refs and
 * payload. The frame is also tried as a vsn query value. */
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "util/sbuf.h"

/* Deep enough for anything we encode around a payload that passed a smaller limit. */
#define REDECODE_DEPTH 128
/* codec_parse_vsn inputs longer than this cannot be valid: not worth a copy. */
#define VSN_MAX 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts (a crash for libFuzzer) with a message when an invariant does not hold. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_codec: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* True when a and b are both NULL or equal strings. */
static bool same_text(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return !strcmp(a, b);
}

/* Compact JSON text of v (any value, NULL for NULL); the caller frees it. */
static char *value_text(const json_t *v)
{
    return v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
}

/* Decodes our own encoding enc (as vsn) and compares it with what was encoded. */
static void check_redecode(enum codec_vsn vsn, const struct sbuf *enc, const char *jr,
                           const char *ref, const struct phx_in *m, const char *payload)
{
    struct phx_in back;
    int rc = codec_decode_text(vsn, enc->data, enc->len, REDECODE_DEPTH, &back);
    if (rc == RC_ENOMEM)
        return;
    if (rc) {
        fprintf(stderr, "fuzz_codec: our V%d encoding does not decode (rc %d): %.*s\n", vsn, rc,
                (int)enc->len, enc->data);
        abort();
    }
    CHECK(back.topic_str && back.topic_len == m->topic_len &&
          !memcmp(back.topic_str, m->topic_str, m->topic_len));
    CHECK(!strcmp(back.event, m->event));
    CHECK(!back.binary && !back.bin && !back.bin_len);

    char *jr2 = codec_ref_text(back.join_ref);
    char *ref2 = codec_ref_text(back.ref);
    char *payload2 = value_text(back.payload);
    /* V1 output has no join_ref (Phoenix does not write one). */
    CHECK(same_text(jr2, vsn == CODEC_V2 ? jr : NULL));
    CHECK(same_text(ref2, ref));
    CHECK(same_text(payload2, payload ? payload : "{}"));
    free(jr2);
    free(ref2);
    free(payload2);
    codec_in_cleanup(&back);
}

/* Sends a decoded kind-3 push back as the kind-4 frame realtime-js reads: its layout, and
 * the 255-byte limit of each field. */
static void user_reencode(const struct phx_in *m, struct sbuf *enc)
{
    json_t *ev = json_object_get(m->payload, "event");
    CHECK(json_is_string(ev) && !strcmp(m->event, "broadcast"));
    const char *e = json_string_value(ev);
    size_t el = json_string_length(ev);
    char *pl = NULL;
    const uint8_t *bytes = m->bin;
    size_t n = m->bin_len;
    if (!m->binary) {
        pl = value_text(json_object_get(m->payload, "payload"));
        if (!pl)
            return; /* out of memory */
        bytes = (const uint8_t *)pl;
        n = strlen(pl);
    }
    static const char meta[] = "{\"id\":\"1\"}";
    sbuf_reset(enc);
    int rc = codec_encode_user_broadcast(enc, m->topic_str, m->topic_len, e, el, meta,
                                         sizeof meta - 1, !m->binary, bytes, n);
    if (m->topic_len > 255 || el > 255) {
        CHECK(rc == RC_EINVAL && enc->len == 0);
    } else {
        const uint8_t *d = (const uint8_t *)enc->data;
        CHECK(rc == 0 && enc->len == 5 + m->topic_len + el + sizeof meta - 1 + n);
        CHECK(d[0] == 4 && d[1] == m->topic_len && d[2] == el && d[3] == sizeof meta - 1 &&
              d[4] == !m->binary);
        CHECK(!memcmp(d + 5, m->topic_str, m->topic_len) && !memcmp(d + 5 + m->topic_len, e, el));
        CHECK(!memcmp(d + enc->len - n, bytes, n));
    }
    sbuf_reset(enc);
    free(pl);
}

/* Encodes a decoded message again in both serializers, as text and as binary frames. */
static void reencode(const struct phx_in *m)
{
    CHECK(m->event != NULL && m->_root != NULL);
    CHECK(m->topic_str == NULL || m->topic_len == strlen(m->topic_str));
    CHECK(m->user_broadcast ? json_is_object(m->payload) : true);
    CHECK(m->binary ? ((m->user_broadcast || m->payload == NULL) &&
                       (m->bin != NULL || m->bin_len == 0))
                    : (m->bin == NULL && m->bin_len == 0));
    if (!m->topic_str)
        return; /* the router answers those by hand; nothing to encode */

    char *jr = codec_ref_text(m->join_ref);
    char *ref = codec_ref_text(m->ref);
    /* A JSON null payload dumps as "null": encode it as it came. */
    char *payload = value_text(m->payload);
    size_t payload_len = payload ? strlen(payload) : 0;

    struct sbuf enc = SBUF_INIT;
    codec_encode(CODEC_V2, &enc, jr, ref, m->topic_str, m->topic_len, m->event, payload,
                 payload_len);
    check_redecode(CODEC_V2, &enc, jr, ref, m, payload);
    sbuf_reset(&enc);
    codec_encode(CODEC_V1, &enc, jr, ref, m->topic_str, m->topic_len, m->event, payload,
                 payload_len);
    check_redecode(CODEC_V1, &enc, jr, ref, m, payload);
    sbuf_reset(&enc);
    codec_encode_reply(CODEC_V2, &enc, jr, ref, m->topic_str, m->topic_len, m->event, payload);
    sbuf_reset(&enc);
    codec_encode_reply(CODEC_V1, &enc, jr, ref, m->topic_str, m->topic_len, m->event, payload);
    sbuf_reset(&enc);

    /* Binary frames take raw strings: the string refs of a binary push. */
    if (m->binary) {
        const char *bjr = json_string_value(m->join_ref);
        const char *bref = json_string_value(m->ref);
        size_t fixed = (bjr ? strlen(bjr) : 0) + m->topic_len + strlen(m->event);
        CHECK(codec_encode_binary_push(&enc, bjr, m->topic_str, m->event, m->bin, m->bin_len) == 0);
        CHECK(enc.len == 4 + fixed + m->bin_len);
        CHECK(enc.data[0] == 0);
        sbuf_reset(&enc);
        CHECK(codec_encode_binary_reply(&enc, bjr, bref, m->topic_str, m->event, m->bin,
                                        m->bin_len) == 0);
        CHECK(enc.len == 5 + fixed + (bref ? strlen(bref) : 0) + m->bin_len);
        CHECK(enc.data[0] == 1);
        sbuf_reset(&enc);
        CHECK(codec_encode_binary_broadcast(&enc, m->topic_str, m->event, m->bin, m->bin_len) == 0);
        CHECK(enc.len == 3 + m->topic_len + strlen(m->event) + m->bin_len);
        CHECK(enc.data[0] == 2);
    }
    if (m->user_broadcast)
        user_reencode(m, &enc);
    sbuf_cleanup(&enc);
    free(jr);
    free(ref);
    free(payload);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    enum codec_vsn vsn = data[0] & 1 ? CODEC_V2 : CODEC_V1;
    size_t max_depth = (data[0] >> 1) & 63;
    const uint8_t *frame = data + 1;
    size_t len = size - 1;

    /* Text: a copy of exactly len bytes, so ASan sees any read past the end. */
    char *text = malloc(len ? len : 1);
    if (!text)
        return 0;
    memcpy(text, frame, len);
    struct phx_in m;
    int rc = codec_decode_text(vsn, text, len, max_depth, &m);
    CHECK(rc == 0 || rc == RC_EPROTO || rc == RC_ENOMEM);
    if (rc == 0) {
        reencode(&m);
        codec_in_cleanup(&m);
        CHECK(m._root == NULL);
    } else {
        CHECK(m._root == NULL && m.event == NULL);
    }
    free(text);

    /* Binary: payload views point into the input. */
    rc = codec_decode_binary(CODEC_V1, frame, len, 32, &m);
    CHECK(rc == RC_EPROTO && m._root == NULL);
    rc = codec_decode_binary(CODEC_V2, frame, len, max_depth, &m);
    CHECK(rc == 0 || rc == RC_EPROTO || rc == RC_ENOMEM);
    if (rc == 0) {
        /* kind 0, or kind 3 with a binary payload: a view of the input's end */
        CHECK(m.user_broadcast || m.binary);
        CHECK(!m.binary || (m.bin >= frame && m.bin + m.bin_len == frame + len));
        reencode(&m);
        codec_in_cleanup(&m);
    }

    if (len <= VSN_MAX) {
        char vs[VSN_MAX + 1];
        memcpy(vs, frame, len);
        vs[len] = '\0';
        enum codec_vsn parsed;
        rc = codec_parse_vsn(vs, &parsed);
        CHECK(rc == 0 || rc == RC_EINVAL);
        if (rc == 0)
            CHECK((parsed == CODEC_V1 && !strncmp(vs, "1.0.", 4)) ||
                  (parsed == CODEC_V2 && !strncmp(vs, "2.0.", 4)));
    }
    return 0;
}
