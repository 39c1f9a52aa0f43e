#include <stdlib.h>
#include <string.h>

#include "obuf.h"

struct obuf *obuf_create(uint8_t opcode, const void *payload, size_t n)
{
    if (n > UINT32_MAX - 16)
        return NULL;
    uint32_t hdr = n < 126 ? 2 : n <= 0xffff ? 4 : 10;
    struct obuf *b = malloc(sizeof *b + hdr + n);
    if (!b)
        return NULL;
    atomic_init(&b->refs, 1);
    b->len = (uint32_t)(hdr + n);
    b->hdr = hdr;
    b->opcode = opcode;
    b->data[0] = (uint8_t)(0x80 | (opcode & 0x0f));
    if (hdr == 2) {
        b->data[1] = (uint8_t)n;
    } else if (hdr == 4) {
        b->data[1] = 126;
        b->data[2] = (uint8_t)(n >> 8);
        b->data[3] = (uint8_t)n;
    } else {
        b->data[1] = 127;
        for (int i = 0; i < 8; i++)
            b->data[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
    }
    if (n)
        memcpy(b->data + hdr, payload, n);
    return b;
}

struct obuf *obuf_create_close(uint16_t code)
{
    uint8_t p[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    return obuf_create(WS_OP_CLOSE, p, sizeof p);
}

void obuf_unref(struct obuf *b)
{
    if (b && atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
        free(b);
}
