/* presence.c - Phoenix Presence state and diffs (docs/phoenix-protocol.md §7). Metas are
 * stored as finished JSON text, so presence_state and diffs are concatenations. Meta text
 * is parsed and validated outside the lock; refs are minted and the text serialized inside
 * it, because an update's phx_ref_prev is only known there. */
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "presence.h"
#include "util/base64.h"
#include "util/hmap.h"
#include "util/utf8.h"
#include "util/xmalloc.h"

/* One tracked (node, conn, topic): a meta of one key. */
struct pmeta {
    struct pmeta *prev, *next; /* in its key, oldest first */
    struct pkey *key;
    char *node; /* owning node id */
    uint64_t conn_id;
    char *ref;  /* its phx_ref */
    char *json; /* the meta object as sent, phx_ref included (jansson-allocated) */
};

/* One presence key of a topic; present while it has metas. */
struct pkey {
    char *name;
    size_t len;
    struct pmeta *head, *tail;
    size_t n;
};

/* One topic; present while it has keys. */
struct ptopic {
    char *name;
    struct hmap keys;   /* key name -> struct pkey */
    struct hmap owners; /* owner_key(node, conn) -> struct pmeta */
};

struct presence {
    pthread_mutex_t mu;
    char *node_id;
    uint8_t node_hash[4];
    uint64_t last_ns; /* of the last minted ref, so refs strictly increase */
    presence_emit_fn emit;
    void *emit_arg;
    struct hmap topics; /* topic name -> struct ptopic */
};

/* Where a change comes from: this node (refs minted) or another (refs given). */
struct origin {
    const char *node;
    bool mint;
};

struct presence *presence_create(const char *node_id, presence_emit_fn emit, void *arg)
{
    struct presence *p = xcalloc(1, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    p->node_id = xstrdup(node_id);
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *s = node_id; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    for (int i = 0; i < 4; i++)
        p->node_hash[i] = (uint8_t)(h >> (24 - 8 * i));
    p->emit = emit;
    p->emit_arg = arg;
    return p;
}

/* Frees one meta (already unlinked). */
static void meta_free(struct pmeta *m)
{
    free(m->node);
    free(m->ref);
    free(m->json);
    free(m);
}

/* Frees a key and its metas. */
static void key_free_cb(const char *name, void *value, void *arg)
{
    struct pkey *k = value;
    (void)name;
    (void)arg;
    for (struct pmeta *m = k->head, *next; m; m = next) {
        next = m->next;
        meta_free(m);
    }
    free(k->name);
    free(k);
}

/* Frees a topic, its keys and their metas. */
static void topic_free(const char *name, void *value, void *arg)
{
    struct ptopic *t = value;
    (void)name;
    (void)arg;
    hmap_each(&t->keys, key_free_cb, NULL);
    hmap_cleanup(&t->keys);
    hmap_cleanup(&t->owners);
    free(t->name);
    free(t);
}

void presence_destroy(struct presence *p)
{
    if (!p)
        return;
    hmap_each(&p->topics, topic_free, NULL);
    hmap_cleanup(&p->topics);
    pthread_mutex_destroy(&p->mu);
    free(p->node_id);
    free(p);
}

/* The owners-map key of (node, conn): the conn id's 8 bytes then the node id. */
static char *owner_key(const char *node, uint64_t conn_id, size_t *len)
{
    size_t nlen = strlen(node);
    char *k = xmalloc(sizeof conn_id + nlen);
    memcpy(k, &conn_id, sizeof conn_id);
    memcpy(k + sizeof conn_id, node, nlen);
    *len = sizeof conn_id + nlen;
    return k;
}

/* The meta of (node, conn) on topic, or NULL; *tp gets the topic (or NULL). */
static struct pmeta *find_meta(struct presence *p, const char *topic, const char *node,
                               uint64_t conn_id, struct ptopic **tp)
{
    struct ptopic *t = hmap_get(&p->topics, topic, strlen(topic));
    *tp = t;
    if (!t)
        return NULL;
    size_t klen;
    char *k = owner_key(node, conn_id, &klen);
    struct pmeta *m = hmap_get(&t->owners, k, klen);
    free(k);
    return m;
}

/* Writes a fresh phx_ref into out (PRESENCE_REF_LEN + 1 bytes). Lock held. */
static void mint_ref(struct presence *p, char *out)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    /* Strictly increasing even when the clock stalls or steps back: unique per node. */
    if (ns <= p->last_ns)
        ns = p->last_ns + 1;
    p->last_ns = ns;
    uint8_t raw[12];
    for (int i = 0; i < 8; i++)
        raw[i] = (uint8_t)(ns >> (56 - 8 * i));
    memcpy(raw + 8, p->node_hash, 4);
    b64url_encode(raw, sizeof raw, out);
}

/* Parses meta_json; RC_EINVAL unless it is an object (and, for given refs, has phx_ref). */
static int parse_meta(const char *meta_json, const struct origin *o, json_t **out)
{
    json_error_t err;
    json_t *obj = json_loads(meta_json, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (!json_is_object(obj))
        goto invalid;
    if (o->mint) {
        json_object_del(obj, "phx_ref_prev");
    } else {
        json_t *ref = json_object_get(obj, "phx_ref");
        if (!json_is_string(ref) || json_string_length(ref) == 0)
            goto invalid;
    }
    *out = obj;
    return 0;
invalid:
    json_decref(obj);
    return RC_EINVAL;
}

/* Finishes a meta under the lock: mints its refs if needed, serializes it into *json and
 * copies its phx_ref into *ref. Returns 0 or RC_ENOMEM. */
static int finish_meta(struct presence *p, json_t *obj, const struct origin *o,
                       const char *prev_ref, char **json, char **ref)
{
    if (o->mint) {
        char fresh[PRESENCE_REF_LEN + 1];
        mint_ref(p, fresh);
        if (json_object_set_new(obj, "phx_ref", json_string(fresh)) != 0)
            return RC_ENOMEM;
        if (prev_ref && json_object_set_new(obj, "phx_ref_prev", json_string(prev_ref)) != 0)
            return RC_ENOMEM;
    }
    char *text = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text)
        return RC_ENOMEM;
    *json = text;
    *ref = xstrdup(json_string_value(json_object_get(obj, "phx_ref")));
    return 0;
}

/* Appends "key":{"metas":[json]} for a single meta. */
static void add_one(struct sbuf *b, const char *key, size_t klen, const char *json)
{
    sbuf_add_json_str(b, key, klen);
    sbuf_adds(b, ":{\"metas\":[");
    sbuf_adds(b, json);
    sbuf_adds(b, "]}");
}

/* Builds a diff with at most one meta joining and one leaving, both under key. */
static void build_diff(struct sbuf *b, const char *key, size_t klen, const char *join,
                       const char *leave)
{
    sbuf_adds(b, "{\"joins\":{");
    if (join)
        add_one(b, key, klen, join);
    sbuf_adds(b, "},\"leaves\":{");
    if (leave)
        add_one(b, key, klen, leave);
    sbuf_adds(b, "}}");
}

/* Hands a finished diff to the emit callback. Lock held. */
static void emit_diff(struct presence *p, const char *topic, const struct sbuf *diff)
{
    if (p->emit)
        p->emit(topic, diff->data, diff->len, p->emit_arg);
}

/* Appends m as its key's newest meta. */
static void link_tail(struct pkey *k, struct pmeta *m)
{
    m->key = k;
    m->next = NULL;
    m->prev = k->tail;
    if (k->tail)
        k->tail->next = m;
    else
        k->head = m;
    k->tail = m;
    k->n++;
}

/* Takes m out of its key's list. */
static void unlink_meta(struct pmeta *m)
{
    struct pkey *k = m->key;
    if (m->prev)
        m->prev->next = m->next;
    else
        k->head = m->next;
    if (m->next)
        m->next->prev = m->prev;
    else
        k->tail = m->prev;
    m->prev = m->next = NULL;
    k->n--;
}

/* Removes and frees m, then its key and topic if they became empty. Lock held. */
static void remove_meta(struct presence *p, struct ptopic *t, struct pmeta *m)
{
    size_t klen;
    char *ok = owner_key(m->node, m->conn_id, &klen);
    hmap_del(&t->owners, ok, klen);
    free(ok);
    struct pkey *k = m->key;
    unlink_meta(m);
    meta_free(m);
    if (k->n == 0) {
        hmap_del(&t->keys, k->name, k->len);
        free(k->name);
        free(k);
    }
    if (t->keys.count == 0) {
        hmap_del(&p->topics, t->name, strlen(t->name));
        topic_free(NULL, t, NULL);
    }
}

/* Tracks (o->node, conn_id) on topic under key. */
static int track(struct presence *p, const struct origin *o, const char *topic, const char *key,
                 uint64_t conn_id, const char *meta_json)
{
    size_t klen = strlen(key);
    if (!utf8_valid(key, klen))
        return RC_EINVAL;
    json_t *obj;
    int rc = parse_meta(meta_json, o, &obj);
    if (rc)
        return rc;
    struct sbuf diff = SBUF_INIT;
    pthread_mutex_lock(&p->mu);
    struct ptopic *t;
    if (find_meta(p, topic, o->node, conn_id, &t)) {
        rc = RC_ECONFLICT;
        goto out;
    }
    char *json, *ref;
    rc = finish_meta(p, obj, o, NULL, &json, &ref);
    if (rc)
        goto out;
    if (!t) {
        t = xcalloc(1, sizeof *t);
        t->name = xstrdup(topic);
        hmap_put(&p->topics, topic, strlen(topic), t);
    }
    struct pkey *k = hmap_get(&t->keys, key, klen);
    if (!k) {
        k = xcalloc(1, sizeof *k);
        k->name = xstrndup(key, klen);
        k->len = klen;
        hmap_put(&t->keys, key, klen, k);
    }
    struct pmeta *m = xcalloc(1, sizeof *m);
    m->node = xstrdup(o->node);
    m->conn_id = conn_id;
    m->ref = ref;
    m->json = json;
    link_tail(k, m);
    size_t oklen;
    char *ok = owner_key(o->node, conn_id, &oklen);
    hmap_put(&t->owners, ok, oklen, m);
    free(ok);
    build_diff(&diff, key, klen, json, NULL);
    emit_diff(p, topic, &diff);
out:
    pthread_mutex_unlock(&p->mu);
    sbuf_cleanup(&diff);
    json_decref(obj);
    return rc;
}

/* Replaces the meta of (o->node, conn_id) on topic. */
static int update(struct presence *p, const struct origin *o, const char *topic, uint64_t conn_id,
                  const char *meta_json)
{
    json_t *obj;
    int rc = parse_meta(meta_json, o, &obj);
    if (rc)
        return rc;
    struct sbuf diff = SBUF_INIT;
    pthread_mutex_lock(&p->mu);
    struct ptopic *t;
    struct pmeta *m = find_meta(p, topic, o->node, conn_id, &t);
    if (!m) {
        rc = RC_ENOTFOUND;
        goto out;
    }
    char *json, *ref;
    rc = finish_meta(p, obj, o, m->ref, &json, &ref);
    if (rc)
        goto out;
    struct pkey *k = m->key;
    build_diff(&diff, k->name, k->len, json, m->json);
    free(m->json);
    free(m->ref);
    m->json = json;
    m->ref = ref;
    /* phoenix.js appends joined metas after the ones it keeps: match its order. */
    unlink_meta(m);
    link_tail(k, m);
    emit_diff(p, topic, &diff);
out:
    pthread_mutex_unlock(&p->mu);
    sbuf_cleanup(&diff);
    json_decref(obj);
    return rc;
}

/* Removes the meta of (node, conn_id) on topic. */
static int untrack(struct presence *p, const char *node, const char *topic, uint64_t conn_id)
{
    int rc = 0;
    struct sbuf diff = SBUF_INIT;
    pthread_mutex_lock(&p->mu);
    struct ptopic *t;
    struct pmeta *m = find_meta(p, topic, node, conn_id, &t);
    if (!m) {
        rc = RC_ENOTFOUND;
        goto out;
    }
    build_diff(&diff, m->key->name, m->key->len, NULL, m->json);
    remove_meta(p, t, m);
    emit_diff(p, topic, &diff);
out:
    pthread_mutex_unlock(&p->mu);
    sbuf_cleanup(&diff);
    return rc;
}

int presence_track(struct presence *p, const char *topic, const char *key, uint64_t conn_id,
                   const char *meta_json)
{
    struct origin o = {p->node_id, true};
    return track(p, &o, topic, key, conn_id, meta_json);
}

int presence_update(struct presence *p, const char *topic, uint64_t conn_id, const char *meta_json)
{
    struct origin o = {p->node_id, true};
    return update(p, &o, topic, conn_id, meta_json);
}

int presence_untrack(struct presence *p, const char *topic, uint64_t conn_id)
{
    return untrack(p, p->node_id, topic, conn_id);
}

int presence_track_remote(struct presence *p, const char *node_id, const char *topic,
                          const char *key, uint64_t conn_id, const char *meta_json)
{
    struct origin o = {node_id, false};
    return track(p, &o, topic, key, conn_id, meta_json);
}

int presence_update_remote(struct presence *p, const char *node_id, const char *topic,
                           uint64_t conn_id, const char *meta_json)
{
    struct origin o = {node_id, false};
    return update(p, &o, topic, conn_id, meta_json);
}

int presence_untrack_remote(struct presence *p, const char *node_id, const char *topic,
                            uint64_t conn_id)
{
    return untrack(p, node_id, topic, conn_id);
}

/* A growable array of pointers collected from an hmap. */
struct ptrs {
    void **v;
    size_t n;
};

/* hmap_each callback: collects the value. */
static void collect_cb(const char *name, void *value, void *arg)
{
    struct ptrs *a = arg;
    (void)name;
    a->v[a->n++] = value;
}

/* Orders keys bytewise, a shorter prefix first. */
static int key_cmp(const void *a, const void *b)
{
    const struct pkey *x = *(struct pkey *const *)a, *y = *(struct pkey *const *)b;
    int c = memcmp(x->name, y->name, x->len < y->len ? x->len : y->len);
    if (c)
        return c;
    return (x->len > y->len) - (x->len < y->len);
}

/* The keys of t, sorted; the caller frees the array. */
static struct pkey **sorted_keys(const struct ptopic *t)
{
    struct ptrs a = {xcalloc(t->keys.count, sizeof *a.v), 0};
    hmap_each(&t->keys, collect_cb, &a);
    qsort(a.v, a.n, sizeof *a.v, key_cmp);
    return (struct pkey **)a.v;
}

/* Appends k's metas owned by node as one "key":{"metas":[...]} entry and removes them;
 * returns how many. */
static size_t reap_key(struct presence *p, struct ptopic *t, struct pkey *k, const char *node,
                       struct sbuf *b, bool first)
{
    size_t n = 0;
    for (struct pmeta *m = k->head; m; m = m->next)
        n += strcmp(m->node, node) == 0;
    if (n == 0)
        return 0;
    if (!first)
        sbuf_addc(b, ',');
    sbuf_add_json_str(b, k->name, k->len);
    sbuf_adds(b, ":{\"metas\":[");
    size_t i = 0;
    for (struct pmeta *m = k->head, *next; m; m = next) {
        next = m->next;
        if (strcmp(m->node, node) != 0)
            continue;
        if (i++)
            sbuf_addc(b, ',');
        sbuf_adds(b, m->json);
        remove_meta(p, t, m); /* may free k (and t) with the last meta: loop ends then */
    }
    sbuf_adds(b, "]}");
    return n;
}

size_t presence_untrack_node(struct presence *p, const char *node_id)
{
    size_t total = 0;
    struct sbuf diff = SBUF_INIT;
    pthread_mutex_lock(&p->mu);
    struct ptrs topics = {xcalloc(p->topics.count, sizeof *topics.v), 0};
    hmap_each(&p->topics, collect_cb, &topics);
    for (size_t i = 0; i < topics.n; i++) {
        struct ptopic *t = topics.v[i];
        /* reap_key may free t with its last key: keep the name and the key list. */
        char *name = xstrdup(t->name);
        size_t nkeys = t->keys.count;
        struct pkey **keys = sorted_keys(t);
        size_t n = 0;
        sbuf_reset(&diff);
        sbuf_adds(&diff, "{\"joins\":{},\"leaves\":{");
        for (size_t j = 0; j < nkeys; j++)
            n += reap_key(p, t, keys[j], node_id, &diff, n == 0);
        sbuf_adds(&diff, "}}");
        if (n)
            emit_diff(p, name, &diff);
        total += n;
        free(keys);
        free(name);
    }
    free(topics.v);
    pthread_mutex_unlock(&p->mu);
    sbuf_cleanup(&diff);
    return total;
}

void presence_state(struct presence *p, const char *topic, struct sbuf *out)
{
    pthread_mutex_lock(&p->mu);
    struct ptopic *t = hmap_get(&p->topics, topic, strlen(topic));
    sbuf_addc(out, '{');
    if (t) {
        struct pkey **keys = sorted_keys(t);
        for (size_t i = 0; i < t->keys.count; i++) {
            if (i)
                sbuf_addc(out, ',');
            sbuf_add_json_str(out, keys[i]->name, keys[i]->len);
            sbuf_adds(out, ":{\"metas\":[");
            for (struct pmeta *m = keys[i]->head; m; m = m->next) {
                sbuf_adds(out, m->json);
                if (m->next)
                    sbuf_addc(out, ',');
            }
            sbuf_adds(out, "]}");
        }
        free(keys);
    }
    sbuf_addc(out, '}');
    pthread_mutex_unlock(&p->mu);
}

void presence_each_key(struct presence *p, const char *topic,
                       void (*fn)(const char *key, size_t n_metas, const char *newest_meta_json,
                                  void *arg),
                       void *arg)
{
    pthread_mutex_lock(&p->mu);
    struct ptopic *t = hmap_get(&p->topics, topic, strlen(topic));
    if (t) {
        struct pkey **keys = sorted_keys(t);
        for (size_t i = 0; i < t->keys.count; i++)
            fn(keys[i]->name, keys[i]->n, keys[i]->tail->json, arg);
        free(keys);
    }
    pthread_mutex_unlock(&p->mu);
}

size_t presence_count_keys(struct presence *p, const char *topic)
{
    pthread_mutex_lock(&p->mu);
    struct ptopic *t = hmap_get(&p->topics, topic, strlen(topic));
    size_t n = t ? t->keys.count : 0;
    pthread_mutex_unlock(&p->mu);
    return n;
}

size_t presence_count_topics(struct presence *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = p->topics.count;
    pthread_mutex_unlock(&p->mu);
    return n;
}

int presence_meta_of(struct presence *p, const char *topic, uint64_t conn_id, struct sbuf *out)
{
    pthread_mutex_lock(&p->mu);
    struct ptopic *t;
    struct pmeta *m = find_meta(p, topic, p->node_id, conn_id, &t);
    if (m)
        sbuf_adds(out, m->json);
    pthread_mutex_unlock(&p->mu);
    return m ? 0 : RC_ENOTFOUND;
}
