/* obuf.h - outbound messages: immutable, refcounted buffers holding one complete
 * WebSocket frame (header + payload). A broadcast is encoded once and the same obuf is
 * queued on every subscriber's connection; references are atomic because broadcasts
 * are built on one thread and sent from the I/O workers. */
#ifndef RC_OBUF_H
#define RC_OBUF_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* WebSocket opcodes used by the server. */
enum ws_opcode {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

struct obuf {
    atomic_uint refs;
    uint32_t len; /* bytes in data: frame header + payload */
    uint32_t hdr; /* frame header length; the payload is data[hdr..len) */
    uint8_t opcode;
    uint8_t data[];
};

/* Creates an unmasked final frame of opcode carrying payload (n bytes), refs = 1.
 * Returns NULL when out of memory (n is peer-controlled for some callers). */
struct obuf *obuf_create(uint8_t opcode, const void *payload, size_t n);

/* A close frame with a status code (and no reason text). */
struct obuf *obuf_create_close(uint16_t code);

/* Payload view. */
static inline const char *obuf_payload(const struct obuf *b)
{
    return (const char *)b->data + b->hdr;
}
static inline size_t obuf_payload_len(const struct obuf *b)
{
    return b->len - b->hdr;
}

/* Takes another reference. Any thread. */
static inline struct obuf *obuf_ref(struct obuf *b)
{
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
    return b;
}

/* Drops a reference, freeing on the last. Accepts NULL. Any thread. */
void obuf_unref(struct obuf *b);

#endif
