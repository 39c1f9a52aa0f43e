/* hmap.h - string-keyed hash map with chaining. Single owner, not thread-safe.
 * Keys are copied; values are opaque pointers the caller owns. */
#ifndef RC_HMAP_H
#define RC_HMAP_H

#include <stdbool.h>
#include <stddef.h>

struct hmap_entry {
    struct hmap_entry *next;
    unsigned hash;
    size_t klen;
    void *value;
    char key[]; /* NUL-terminated copy */
};

struct hmap {
    struct hmap_entry **buckets;
    size_t nbuckets; /* power of two, 0 until the first insert */
    size_t count;
};

#define HMAP_INIT {NULL, 0, 0}

/* Returns the value for key (klen bytes) or NULL. */
void *hmap_get(const struct hmap *m, const char *key, size_t klen);
/* Inserts or replaces; returns the previous value or NULL. */
void *hmap_put(struct hmap *m, const char *key, size_t klen, void *value);
/* Removes key; returns its value or NULL. */
void *hmap_del(struct hmap *m, const char *key, size_t klen);
/* Calls fn for every entry; fn must not modify the map. */
void hmap_each(const struct hmap *m, void (*fn)(const char *key, void *value, void *arg),
               void *arg);
/* Frees the map's own memory (not the values). */
void hmap_cleanup(struct hmap *m);

#endif
