/* channel.c - channel instances on a conn: replies and pushes, the join's end (ok,
 * error, history), held broadcasts, store requests made for a channel, and the
 * per-worker index of subscribed (and watching) channels by topic. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bcast.h"
#include "config.h"
#include "channel.h"
#include "conn.h"
#include "metrics.h"
#include "store.h"
#include "util/clock.h"
#include "util/hmap.h"
#include "util/log.h"
#include "util/sbuf.h"
#include "util/xmalloc.h"
#include "worker.h"

/* ---- the subscriber index --------------------------------------------------------- */

/* One chan watching a topic: which of its watches this is. */
struct watcher {
    struct chan *ch;
    size_t slot; /* index in ch->watches */
};

/* The subscribers and watchers of one topic on a worker. */
struct subs {
    struct chan **v;
    size_t n, cap;
    struct watcher *w; /* chans watching the topic (chan_watch) */
    size_t nw, capw;
};

struct chan_index {
    struct hmap topics; /* topic → struct subs */
};

struct chan_index *chan_index_create(void)
{
    return xcalloc(1, sizeof(struct chan_index));
}

/* Frees one topic's subscriber and watcher arrays. */
static void free_subs(const char *key, void *value, void *arg)
{
    struct subs *s = value;
    free(s->v);
    free(s->w);
    free(s);
}

void chan_index_destroy(struct chan_index *x)
{
    if (!x)
        return;
    hmap_each(&x->topics, free_subs, NULL);
    hmap_cleanup(&x->topics);
    free(x);
}

/* The topic's entry, created if it has none. */
static struct subs *subs_get(struct chan_index *x, const char *topic, size_t len)
{
    struct subs *s = hmap_get(&x->topics, topic, len);
    if (!s) {
        s = xcalloc(1, sizeof *s);
        hmap_put(&x->topics, topic, len, s);
    }
    return s;
}

/* Drops the topic's entry once no chan subscribes to or watches it. */
static void subs_trim(struct chan_index *x, const char *topic, size_t len, struct subs *s)
{
    if (s->n || s->nw)
        return;
    hmap_del(&x->topics, topic, len);
    free_subs(topic, s, NULL);
}

/* Adds ch to its topic's subscribers. */
static void subscribe(struct chan_index *x, struct chan *ch)
{
    struct subs *s = subs_get(x, ch->topic, ch->topic_len);
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4;
        s->v = xrealloc(s->v, s->cap * sizeof *s->v);
    }
    ch->sub_index = s->n;
    s->v[s->n++] = ch;
}

/* Removes ch from its topic's subscribers (if it is there). */
static void unsubscribe(struct chan_index *x, struct chan *ch)
{
    struct subs *s = hmap_get(&x->topics, ch->topic, ch->topic_len);
    if (!s || ch->sub_index >= s->n || s->v[ch->sub_index] != ch)
        return;
    struct chan *last = s->v[--s->n];
    s->v[ch->sub_index] = last;
    last->sub_index = ch->sub_index;
    ch->sub_index = SIZE_MAX;
    subs_trim(x, ch->topic, ch->topic_len, s);
}

/* Removes every watch of ch from the index and forgets them. */
static void unwatch_all(struct chan_index *x, struct chan *ch)
{
    for (size_t i = 0; i < ch->n_watches; i++) {
        struct chan_watch *cw = &ch->watches[i];
        struct subs *s = hmap_get(&x->topics, cw->topic, cw->topic_len);
        if (s && cw->pos < s->nw && s->w[cw->pos].ch == ch && s->w[cw->pos].slot == i) {
            struct watcher last = s->w[--s->nw];
            s->w[cw->pos] = last;
            last.ch->watches[last.slot].pos = cw->pos;
            subs_trim(x, cw->topic, cw->topic_len, s);
        }
        free(cw->topic);
    }
    free(ch->watches);
    ch->watches = NULL;
    ch->n_watches = ch->cap_watches = 0;
}

void chan_watch(struct chan *ch, const char *topic, size_t topic_len)
{
    assert(ch->type->watch);
    struct subs *s = subs_get(ch->conn->worker->topics, topic, topic_len);
    if (ch->n_watches == ch->cap_watches) {
        ch->cap_watches = ch->cap_watches ? ch->cap_watches * 2 : 4;
        ch->watches = xrealloc(ch->watches, ch->cap_watches * sizeof *ch->watches);
    }
    if (s->nw == s->capw) {
        s->capw = s->capw ? s->capw * 2 : 4;
        s->w = xrealloc(s->w, s->capw * sizeof *s->w);
    }
    size_t slot = ch->n_watches++;
    ch->watches[slot] = (struct chan_watch){xstrndup(topic, topic_len), topic_len, s->nw};
    s->w[s->nw++] = (struct watcher){ch, slot};
}

/* Holds b for ch until the held broadcasts are released; watched: for the watch hook. */
static void hold(struct chan *ch, struct bcast *b, bool watched)
{
    struct held_bcast *h = xmalloc(sizeof *h);
    bcast_ref(b, 1);
    h->b = b;
    h->watched = watched;
    h->next = NULL;
    if (ch->held_tail)
        ch->held_tail->next = h;
    else
        ch->held = h;
    ch->held_tail = h;
}

/* Runs ch's watch hook on b now, or holds it while ch joins or has held broadcasts. */
static void deliver_watched(struct chan *ch, struct bcast *b)
{
    if (ch->state == CHAN_JOINING || ch->held)
        hold(ch, b, true);
    else
        ch->type->watch(ch, b);
}

void chan_index_deliver(struct chan_index *x, struct bcast *b)
{
    struct subs *s = hmap_get(&x->topics, b->topic, b->topic_len);
    if (!s)
        return;
    uint64_t n = 0;
    for (size_t i = 0; i < s->n; i++) {
        struct chan *ch = s->v[i];
        struct conn *c = ch->conn;
        if (c->id == b->exclude || c->closed)
            continue;
        chan_deliver(ch, b);
        n++;
    }
    for (size_t i = 0; i < s->nw; i++) {
        struct chan *ch = s->w[i].ch;
        if (ch->conn->id != b->exclude && !ch->conn->closed)
            deliver_watched(ch, b);
    }
    metrics_deliveries(n);
}

bool chan_index_has(struct chan_index *x, const char *topic)
{
    struct subs *s = hmap_get(&x->topics, topic, strlen(topic));
    return s && s->n;
}

size_t chan_index_watchers(struct chan_index *x, const char *topic)
{
    struct subs *s = hmap_get(&x->topics, topic, strlen(topic));
    return s ? s->nw : 0;
}

size_t chan_index_topics(struct chan_index *x)
{
    return x->topics.count;
}

/* ---- chans ----------------------------------------------------------------------- */

const struct worker_env *chan_env(const struct chan *ch)
{
    return ch->conn->worker->env;
}

const char *chan_jr(const struct chan *ch)
{
    return ch->jr ? ch->jr : ch->join_ref;
}

struct chan *chan_create(struct conn *c, const struct channel_type *type, const char *topic,
                         size_t topic_len, const char *jr, const char *ref)
{
    struct chan *ch = xcalloc(1, sizeof *ch);
    ch->conn = c;
    ch->type = type;
    ch->topic = xstrndup(topic, topic_len);
    ch->topic_len = topic_len;
    ch->jr = jr ? xstrdup(jr) : NULL;
    ch->join_ref = ref ? xstrdup(ref) : NULL;
    ch->id = c->worker->next_chan_id++;
    ch->state = CHAN_JOINING;
    ch->next = c->chans;
    c->chans = ch;
    c->n_chans++;
    c->joins_pending++;
    subscribe(c->worker->topics, ch);
    return ch;
}

struct chan *chan_find(struct conn *c, const char *topic, size_t len)
{
    for (struct chan *ch = c->chans; ch; ch = ch->next)
        if (ch->topic_len == len && !memcmp(ch->topic, topic, len))
            return ch;
    return NULL;
}

/* Drops held broadcasts. */
static void drop_held(struct chan *ch)
{
    while (ch->held) {
        struct held_bcast *h = ch->held;
        ch->held = h->next;
        bcast_unref(h->b);
        free(h);
    }
    ch->held_tail = NULL;
}

/* Unlinks ch from its conn and frees it. */
static void chan_free(struct chan *ch)
{
    struct conn *c = ch->conn;
    for (struct chan **pp = &c->chans; *pp; pp = &(*pp)->next)
        if (*pp == ch) {
            *pp = ch->next;
            break;
        }
    c->n_chans--;
    unsubscribe(c->worker->topics, ch);
    unwatch_all(c->worker->topics, ch);
    drop_held(ch);
    free(ch->topic);
    free(ch->jr);
    free(ch->join_ref);
    free(ch->role);
    if (ch->priv_free)
        ch->priv_free(ch->priv);
    free(ch->priv);
    free(ch);
}

/* One fewer join pending on the conn: input may flow again. */
static void join_finished(struct conn *c)
{
    if (c->joins_pending && --c->joins_pending == 0 && !c->closed)
        c->ops->resume(c);
}

void chan_end(struct chan *ch)
{
    unsubscribe(ch->conn->worker->topics, ch);
    unwatch_all(ch->conn->worker->topics, ch);
    if (ch->state == CHAN_JOINED && ch->type->terminate)
        ch->type->terminate(ch);
    if (ch->state == CHAN_JOINING)
        join_finished(ch->conn);
    chan_free(ch);
}

/* Builds {"reason":"…"}. */
static void reason_json(struct sbuf *b, const char *reason)
{
    sbuf_adds(b, "{\"reason\":");
    sbuf_add_json_str(b, reason, strlen(reason));
    sbuf_addc(b, '}');
}

void chan_reply(struct chan *ch, const char *ref, const char *status, const char *response)
{
    conn_reply(ch->conn, chan_jr(ch), ref, ch->topic, ch->topic_len, status,
               response ? response : "{}");
}

void chan_reply_error(struct chan *ch, const char *ref, const char *reason)
{
    struct sbuf b = SBUF_INIT;
    reason_json(&b, reason);
    chan_reply(ch, ref, "error", b.data);
    sbuf_cleanup(&b);
}

bool chan_token_refresh(struct chan *ch, const json_t *token)
{
    struct conn *c = ch->conn;
    if (!json_is_string(token))
        return false;
    int64_t exp = 0;
    char *user = conn_token_user(c->worker->env->cfg->jwt_secret, json_string_value(token),
                                 clock_unix(), &exp);
    bool ok = user && !strcmp(user, c->user_id);
    free(user);
    if (ok)
        c->token_exp = exp;
    return ok;
}

void chan_push_system(struct chan *ch, const char *status, const char *message)
{
    size_t pl = strlen(ch->type->prefix);
    const char *name = ch->topic_len > pl ? ch->topic + pl : ch->topic;
    struct sbuf b = SBUF_INIT;
    sbuf_adds(&b, "{\"channel\":");
    sbuf_add_json_str(&b, name, strlen(name));
    sbuf_adds(&b, ",\"extension\":\"system\",\"message\":");
    sbuf_add_json_str(&b, message, strlen(message));
    sbuf_adds(&b, ",\"status\":");
    sbuf_add_json_str(&b, status, strlen(status));
    sbuf_addc(&b, '}');
    chan_push(ch, "system", b.data, b.len);
    sbuf_cleanup(&b);
}

void chan_push(struct chan *ch, const char *event, const char *payload, size_t payload_len)
{
    conn_push(ch->conn, chan_jr(ch), NULL, ch->topic, ch->topic_len, event, payload,
              payload_len);
}

/* Replies to the join push itself (its ref, the join's own join_ref) and counts it. */
static void join_reply(struct chan *ch, const char *status, const char *response)
{
    conn_reply(ch->conn, ch->jr, ch->join_ref, ch->topic, ch->topic_len, status, response);
    metrics_join(metrics_channel_of(ch->topic), !strcmp(status, "ok"));
}

void chan_join_ok(struct chan *ch, const char *response)
{
    join_reply(ch, "ok", response);
    ch->state = CHAN_JOINED;
    log_info("join", "conn=%llu user=%s topic=%s", (unsigned long long)ch->conn->id,
             log_v(ch->conn->user_id), log_v(ch->topic));
    join_finished(ch->conn);
}

void chan_join_error(struct chan *ch, const char *reason)
{
    struct sbuf b = SBUF_INIT;
    reason_json(&b, reason);
    join_reply(ch, "error", b.data);
    sbuf_cleanup(&b);
    log_info("join refused", "conn=%llu user=%s topic=%s reason=%s",
             (unsigned long long)ch->conn->id, log_v(ch->conn->user_id), log_v(ch->topic), reason);
    struct conn *c = ch->conn;
    chan_free(ch);
    join_finished(c);
}

void chan_join_failed(struct chan *ch, int rc)
{
    chan_join_error(ch, rc == RC_ENOTFOUND    ? "not_found"
                        : rc == RC_EFORBIDDEN ? "unauthorized"
                                              : "unavailable");
}

void chan_history_bounds(json_t *params, struct store_req *req, int history, int recovery)
{
    json_t *ls = json_is_object(params) ? json_object_get(params, "last_seq") : NULL;
    req->limit = history;
    if (json_is_integer(ls) && json_integer_value(ls) >= 0) {
        req->after_seq = json_integer_value(ls);
        req->limit = recovery;
    }
}

void chan_push_history(struct chan *ch, const struct store_req *req, const char *event,
                       const char *field, const void *items, size_t n, size_t size,
                       void (*append)(struct sbuf *out, const void *item),
                       int64_t (*item_seq)(const void *item), int64_t last_seq)
{
    const char *p = items;
    struct sbuf b = SBUF_INIT;
    sbuf_addc(&b, '{');
    if (req->after_seq >= 0 && (size_t)req->limit == n && n &&
        item_seq(p + (n - 1) * size) < last_seq)
        sbuf_adds(&b, "\"has_more\":true,");
    sbuf_add_json_str(&b, field, strlen(field));
    sbuf_adds(&b, ":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            sbuf_addc(&b, ',');
        append(&b, p + i * size);
    }
    sbuf_adds(&b, "]}");
    chan_push(ch, event, b.data, b.len);
    sbuf_cleanup(&b);
    ch->last_seq = last_seq;
    chan_release_held(ch);
}

bool chan_join_read_ok(struct chan *ch, const struct store_req *req)
{
    if (!ch)
        return false;
    if (req->rc) {
        chan_join_failed(ch, req->rc);
        return false;
    }
    return true;
}

bool chan_accept_seq(struct chan *ch, const struct bcast *b)
{
    if (b->seq <= 0)
        return true;
    if (b->seq <= ch->last_seq)
        return false;
    ch->last_seq = b->seq;
    return true;
}

struct obuf *chan_frame_of(const struct chan *ch, const struct bcast *b)
{
    const struct conn *c = ch->conn;
    if (ch->type->realtime_frames) {
        if (c->realtime && c->vsn == CODEC_V2 && b->rt_bin)
            return b->rt_bin;
        if (b->rt_v2)
            return c->vsn == CODEC_V1 ? b->rt_v1 : b->rt_v2;
    }
    return c->vsn == CODEC_V1 ? b->v1 : b->v2;
}

/* Sends a broadcast to a joined chan if its type accepts it. */
static void send_bcast(struct chan *ch, struct bcast *b)
{
    if (ch->type->accept && !ch->type->accept(ch, b))
        return;
    struct obuf *f = chan_frame_of(ch, b);
    if (f)
        conn_send(ch->conn, f);
}

void chan_release_held(struct chan *ch)
{
    while (ch->held) {
        struct held_bcast *h = ch->held;
        ch->held = h->next;
        if (!ch->conn->closed && h->watched)
            ch->type->watch(ch, h->b);
        else if (!ch->conn->closed)
            send_bcast(ch, h->b);
        bcast_unref(h->b);
        free(h);
    }
    ch->held_tail = NULL;
}

void chan_deliver(struct chan *ch, struct bcast *b)
{
    if (ch->state == CHAN_JOINING || ch->held)
        hold(ch, b, false);
    else
        send_bcast(ch, b);
}

/* ---- store requests -------------------------------------------------------------- */

/* A store request in flight for a chan, and then its completion in the worker's inbox. */
struct pending {
    struct inbox_item it;
    struct store_req *req;
    struct conn *conn;
    uint32_t chan_id;
    char *ref;
    void (*cont)(struct chan *ch, struct store_req *req, const char *ref);
};

/* Runs the continuation with ch (or NULL), then frees the request and the conn's hold. */
static void finish(struct pending *p, struct chan *ch)
{
    struct conn *c = p->conn;
    p->cont(ch, p->req, p->ref);
    store_req_destroy(p->req);
    free(p->ref);
    free(p);
    conn_unref(c);
}

/* inbox_item.run: the continuation, on the conn's worker. */
static void store_done(struct worker *w, struct inbox_item *it)
{
    struct pending *p = (struct pending *)it;
    struct chan *ch = NULL;
    if (!p->conn->closed)
        for (ch = p->conn->chans; ch && ch->id != p->chan_id; ch = ch->next)
            ;
    finish(p, ch);
}

/* inbox_item.drop: the worker has stopped; the continuation learns the chan is gone. */
static void store_dropped(struct worker *w, struct inbox_item *it)
{
    finish((struct pending *)it, NULL);
}

/* Store completion on a store thread: hand the request to the conn's worker. */
static void post_done(struct store_req *req)
{
    struct pending *p = req->arg;
    p->req = req;
    worker_post(p->conn->worker, &p->it, &p->it);
}

void chan_store(struct chan *ch, struct store_req *req, const char *ref,
                void (*cont)(struct chan *ch, struct store_req *req, const char *ref))
{
    struct pending *p = xcalloc(1, sizeof *p);
    p->it.run = store_done;
    p->it.drop = store_dropped;
    p->conn = ch->conn;
    p->chan_id = ch->id;
    p->ref = ref ? xstrdup(ref) : NULL;
    p->cont = cont;
    ch->conn->refs++;
    req->arg = p;
    req->done = post_done;
    store_submit(chan_env(ch)->store, req);
}
