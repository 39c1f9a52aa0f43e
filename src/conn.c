/* conn.c - sessions and the set of them one worker owns, and the encode → frame → send
 * step every reply and push takes. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "jwt.h"
#include "metrics.h"
#include "obuf.h"
#include "user_counter.h"
#include "util/sbuf.h"
#include "util/xmalloc.h"
#include "validate.h"

char *conn_token_user(const char *secret, const char *token, int64_t now, int64_t *exp)
{
    if (!token || !*token)
        return NULL;
    char sub[JWT_MAX_SUB + 1];
    int64_t e = 0;
    int rc = jwt_verify((const uint8_t *)secret, strlen(secret), token, strlen(token), now, sub,
                        sizeof sub, &e);
    if (rc || !validate_user_id(sub))
        return NULL;
    if (exp)
        *exp = e;
    return xstrdup(sub);
}

void conn_init(struct conn *c, const struct conn_ops *ops, struct worker *w,
               struct conn_set *set, struct user_counter *uc, char *user_id, enum codec_vsn vsn)
{
    static atomic_ullong next_id = 1;
    c->ops = ops;
    c->worker = w;
    c->_set = set;
    c->_uc = uc;
    c->id = atomic_fetch_add(&next_id, 1);
    c->user_id = user_id;
    c->vsn = vsn;
    c->refs = 1;
}

void conn_add(struct conn *c, uint8_t transport)
{
    struct conn_set *s = c->_set;
    c->_prev = NULL;
    c->_next = s->all;
    if (s->all)
        s->all->_prev = c;
    s->all = c;
    atomic_fetch_add(&s->n, 1);
    c->transport = transport;
    metrics_socket_opened((enum metric_transport)transport);
}

/* Unlinks c from its set's live list (if it is on it). */
static bool set_remove(struct conn *c)
{
    struct conn_set *s = c->_set;
    if (c->_prev)
        c->_prev->_next = c->_next;
    else if (s->all == c)
        s->all = c->_next;
    else
        return false;
    if (c->_next)
        c->_next->_prev = c->_prev;
    c->_prev = c->_next = NULL;
    atomic_fetch_sub(&s->n, 1);
    return true;
}

void conn_want_flush(struct conn *c)
{
    if (c->_in_flush)
        return;
    /* FIFO: whoever got output first is written first (a sender's reply before the
     * fan-out that followed it). */
    struct conn_set *s = c->_set;
    c->_in_flush = true;
    c->_flush_next = NULL;
    if (s->flush_tail)
        s->flush_tail->_flush_next = c;
    else
        s->flush = c;
    s->flush_tail = c;
}

/* Puts c, whose output now holds a reply, ahead of the fan-out in the flush pass: a
 * sender waits for its reply, and its next message waits for the reply. */
static void want_flush_first(struct conn *c)
{
    struct conn_set *s = c->_set;
    if (c->_in_urgent)
        return;
    c->_in_urgent = true;
    c->_urgent_next = s->urgent;
    s->urgent = c;
}

void conn_release(struct conn *c)
{
    if (c->_dead)
        return;
    assert(c->closed);
    if (set_remove(c))
        metrics_socket_closed((enum metric_transport)c->transport);
    c->_dead = true;
    c->_dead_next = c->_set->dead;
    c->_set->dead = c;
}

void conn_unref(struct conn *c)
{
    if (--c->refs > 0)
        return;
    char *user = c->user_id;
    user_counter_release(c->_uc, user);
    c->ops->destroy(c);
    free(user);
}

void conn_set_before_sleep(struct conn_set *s, void (*between)(void *arg), void *arg)
{
    unsigned n = 0;
    while (s->urgent || s->flush) {
        if (between && ++n % CONN_FLUSH_SLICE == 0)
            between(arg);
        struct conn *c = s->urgent;
        if (c) { /* it stays on the flush list, where its turn then finds nothing */
            s->urgent = c->_urgent_next;
            c->_in_urgent = false;
        } else {
            c = s->flush;
            s->flush = c->_flush_next;
            if (!s->flush)
                s->flush_tail = NULL;
            c->_in_flush = false;
        }
        c->ops->flush(c);
    }
    while (s->dead) {
        struct conn *c = s->dead;
        s->dead = c->_dead_next;
        conn_unref(c);
    }
}

void conn_send_text(struct conn *c, const char *text, size_t len)
{
    if (c->closed)
        return;
    struct obuf *o = obuf_create(WS_OP_TEXT, text, len);
    if (!o) {
        c->ops->close(c, 1011, "out of memory");
        return;
    }
    conn_send(c, o);
    obuf_unref(o);
}

void conn_push(struct conn *c, const char *jr, const char *ref, const char *topic,
               size_t topic_len, const char *event, const char *payload, size_t payload_len)
{
    if (c->closed)
        return;
    struct sbuf b = SBUF_INIT;
    codec_encode(c->vsn, &b, jr, ref, topic, topic_len, event, payload, payload_len);
    conn_send_text(c, b.data, b.len);
    sbuf_cleanup(&b);
}

void conn_reply(struct conn *c, const char *jr, const char *ref, const char *topic,
                size_t topic_len, const char *status, const char *response)
{
    if (c->closed)
        return;
    struct sbuf b = SBUF_INIT;
    codec_encode_reply(c->vsn, &b, jr, ref, topic, topic_len, status, response);
    conn_send_text(c, b.data, b.len);
    sbuf_cleanup(&b);
    if (!c->closed && c->_in_flush)
        want_flush_first(c);
}
