#include <stdlib.h>
#include <string.h>

#include "hmap.h"
#include "xmalloc.h"

/* FNV-1a over the key bytes. */
static unsigned hash_bytes(const char *s, size_t n)
{
    unsigned h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

/* Doubles the bucket array and rehashes every entry. */
static void grow(struct hmap *m)
{
    size_t nb = m->nbuckets ? m->nbuckets * 2 : 16;
    struct hmap_entry **b = xcalloc(nb, sizeof *b);
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct hmap_entry *e = m->buckets[i];
        while (e) {
            struct hmap_entry *next = e->next;
            size_t j = e->hash & (nb - 1);
            e->next = b[j];
            b[j] = e;
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = nb;
}

/* Finds the link that points at key's entry (or at the NULL ending its chain). */
static struct hmap_entry **find(const struct hmap *m, const char *key, size_t klen, unsigned h)
{
    struct hmap_entry **pp = &m->buckets[h & (m->nbuckets - 1)];
    while (*pp) {
        struct hmap_entry *e = *pp;
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
            break;
        pp = &e->next;
    }
    return pp;
}

void *hmap_get(const struct hmap *m, const char *key, size_t klen)
{
    if (!m->nbuckets)
        return NULL;
    struct hmap_entry *e = *find(m, key, klen, hash_bytes(key, klen));
    return e ? e->value : NULL;
}

void *hmap_put(struct hmap *m, const char *key, size_t klen, void *value)
{
    if (m->count + 1 > m->nbuckets * 3 / 4)
        grow(m);
    unsigned h = hash_bytes(key, klen);
    struct hmap_entry **pp = find(m, key, klen, h);
    if (*pp) {
        void *old = (*pp)->value;
        (*pp)->value = value;
        return old;
    }
    struct hmap_entry *e = xmalloc(sizeof *e + klen + 1);
    e->next = NULL;
    e->hash = h;
    e->klen = klen;
    e->value = value;
    memcpy(e->key, key, klen);
    e->key[klen] = '\0';
    *pp = e;
    m->count++;
    return NULL;
}

void *hmap_del(struct hmap *m, const char *key, size_t klen)
{
    if (!m->nbuckets)
        return NULL;
    struct hmap_entry **pp = find(m, key, klen, hash_bytes(key, klen));
    struct hmap_entry *e = *pp;
    if (!e)
        return NULL;
    void *v = e->value;
    *pp = e->next;
    free(e);
    m->count--;
    return v;
}

void hmap_each(const struct hmap *m, void (*fn)(const char *key, void *value, void *arg),
               void *arg)
{
    for (size_t i = 0; i < m->nbuckets; i++)
        for (struct hmap_entry *e = m->buckets[i]; e; e = e->next)
            fn(e->key, e->value, arg);
}

void hmap_cleanup(struct hmap *m)
{
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct hmap_entry *e = m->buckets[i];
        while (e) {
            struct hmap_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = NULL;
    m->nbuckets = m->count = 0;
}
