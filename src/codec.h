/* codec.h - the Phoenix Channels wire format: V1 JSON objects, V2 JSON arrays and V2
 * binary frames (see docs/phoenix-protocol.md). Pure functions; any thread.
 *
 * Decoding gives a struct phx_in that owns its JSON. Encoding appends text to an sbuf;
 * join_ref/ref are passed as already-serialized JSON text ("\"3\"", "7", or NULL for
 * null) because refs are opaque values the server echoes byte for byte. */
#ifndef RC_CODEC_H
#define RC_CODEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rc.h"
#include "util/sbuf.h"

enum codec_vsn {
    CODEC_V1 = 1, /* JSON objects, no binary frames */
    CODEC_V2 = 2, /* JSON arrays [jr, ref, topic, event, payload] + binary kinds 0..2 */
};

/* Parses a `vsn` query value: NULL (absent) or "1.0.x" → V1, "2.0.x" → V2 (x digits).
 * Returns 0 and sets *out, or RC_EINVAL for anything else ("2.1.0", "", "2.0", …). */
int codec_parse_vsn(const char *vsn, enum codec_vsn *out) MUSTCHECK;

/* One decoded client → server message. */
struct phx_in {
    json_t *join_ref;      /* NULL when null or absent (or zero-length in binary) */
    json_t *ref;           /* NULL when null */
    json_t *topic;         /* the topic value as it arrived; may be a non-string */
    const char *topic_str; /* topic as a C string, NULL when the topic is not a string */
    size_t topic_len;
    const char *event;     /* always a string without NUL (non-string event is RC_EPROTO) */
    json_t *payload;       /* text: the value as it arrived (any type, null too); binary: NULL */
    bool binary;           /* decoded from a binary kind-0 frame, or a kind-3 one with a
                            * binary payload */
    bool user_broadcast;   /* decoded from a kind-3 frame (realtime-js's broadcast) */
    const uint8_t *bin;    /* binary frames: view of the payload inside the input buffer */
    size_t bin_len;
    json_t *_root;         /* owns everything above */
};

/* Decodes one text frame of len bytes (no NUL terminator needed). V2: a JSON array of
 * at least 5 elements; V1: a JSON object with keys topic, event, payload, ref
 * (join_ref optional). Arrays/objects nested deeper than max_depth (the outer
 * array/object is depth 1) are refused before jansson parses anything. Trailing
 * garbage and "\u0000" in any string are refused. On success the caller owns *out and
 * must call codec_in_cleanup. Returns 0, RC_EPROTO (invalid JSON, wrong shape,
 * non-string event, too deep) or RC_ENOMEM; on error *out is zeroed and needs no
 * cleanup. */
int codec_decode_text(enum codec_vsn vsn, const char *data, size_t len, size_t max_depth,
                      struct phx_in *out) MUSTCHECK;

/* Decodes one binary frame (V2 only): a kind-0 push, or realtime-js's kind-3 user
 * broadcast push. Field bytes must be valid UTF-8 without NUL; zero-length join_ref/ref
 * become NULL. Kind 0: payload is NULL and bin/bin_len point into data, which must
 * outlive *out. Kind 3 ([3, join_ref len, ref len, topic len, user event len, metadata
 * len, encoding 0 binary | 1 JSON], then those fields and the payload) reads as the text
 * form: event "broadcast", payload {"type":"broadcast","event":<user event>,
 * "payload":<JSON payload>, ...the metadata object's other keys}, user_broadcast set; a
 * binary payload is left in bin/bin_len with binary set. JSON in it (metadata, payload)
 * nests at most max_depth deep. Returns 0, RC_EPROTO for V1, an empty frame, another
 * kind, lengths running past the end, a bad field, an unknown encoding, metadata that is
 * not an object or invalid JSON, or RC_ENOMEM; on error *out is zeroed and needs no
 * cleanup. */
int codec_decode_binary(enum codec_vsn vsn, const uint8_t *data, size_t len, size_t max_depth,
                        struct phx_in *out) MUSTCHECK;
/* Releases what a successful decode produced and zeroes *m. Accepts NULL and a zeroed
 * struct. */
void codec_in_cleanup(struct phx_in *m);

/* Serializes a JSON value for use as a join_ref/ref argument below: returns compact
 * JSON text allocated by jansson (free() it unless json_set_alloc_funcs changed that),
 * or NULL when v is NULL/null (and when out of memory, which then reads as null). */
char *codec_ref_text(const json_t *v);

/* Appends one message. jr and ref are JSON text or NULL (null). topic (topic_len bytes)
 * and event (NUL-terminated) are plain strings, escaped here. payload is JSON object
 * text (payload_len bytes); NULL or 0 bytes writes {}. Nothing is validated.
 * V1 writes {"event","payload","ref","topic"} (no join_ref, as Phoenix does; for
 * phx_close/phx_error pass ref = jr); V2 writes [jr,ref,topic,event,payload]. */
void codec_encode(enum codec_vsn vsn, struct sbuf *out, const char *jr, const char *ref,
                  const char *topic, size_t topic_len, const char *event, const char *payload,
                  size_t payload_len);

/* Appends a phx_reply: payload {"response":<response>,"status":"<status>"};
 * response is JSON text (NULL or "{}" for none); status is escaped here. */
void codec_encode_reply(enum codec_vsn vsn, struct sbuf *out, const char *jr, const char *ref,
                        const char *topic, size_t topic_len, const char *status,
                        const char *response);

/* V2 binary frames, server → client (§3.2–3.4; the kind-0 push has no ref field).
 * Fields over 255 bytes → RC_EINVAL with nothing appended. jr/ref here are raw strings
 * (NULL → length 0), not JSON text: a ref that arrived as a JSON number has no binary
 * form. topic/event/status must not be NULL. */
int codec_encode_binary_push(struct sbuf *out, const char *jr, const char *topic,
                             const char *event, const uint8_t *payload,
                             size_t payload_len) MUSTCHECK;
int codec_encode_binary_reply(struct sbuf *out, const char *jr, const char *ref,
                              const char *topic, const char *status, const uint8_t *response,
                              size_t response_len) MUSTCHECK;
int codec_encode_binary_broadcast(struct sbuf *out, const char *topic, const char *event,
                                  const uint8_t *payload, size_t payload_len) MUSTCHECK;
/* realtime-js's kind-4 user broadcast: [4, topic len, user event len, metadata len,
 * encoding] then topic, user event, metadata (JSON object text, or none: NULL) and the
 * payload (JSON text when json, else bytes). A field over 255 bytes → RC_EINVAL with
 * nothing appended. */
int codec_encode_user_broadcast(struct sbuf *out, const char *topic, size_t topic_len,
                                const char *event, size_t event_len, const char *meta,
                                size_t meta_len, bool json, const uint8_t *payload,
                                size_t payload_len) MUSTCHECK;

#endif
