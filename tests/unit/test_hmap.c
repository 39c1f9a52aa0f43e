/* test_hmap.c - unit tests for src/util/hmap.c: a map keyed by (ptr, len) byte strings,
 * through the public API. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/hmap.h"

#define MANY 100000

/* A distinct non-NULL value for i. */
#define VAL(i) ((void *)(uintptr_t)((i) + 1))

/* Writes the key for i into buf; returns its length. */
static size_t key_of(size_t i, char buf[32])
{
    int n = snprintf(buf, 32, "key:%zu", i);
    assert_true(n > 0 && n < 32);
    return (size_t)n;
}

/* Puts key i with VAL(i), which must be new. */
static void put_i(struct hmap *m, size_t i)
{
    char k[32];
    size_t n = key_of(i, k);
    assert_null(hmap_put(m, k, n, VAL(i)));
}

/* The value stored under key i. */
static void *get_i(const struct hmap *m, size_t i)
{
    char k[32];
    size_t n = key_of(i, k);
    return hmap_get(m, k, n);
}

/* Removes key i; returns its value. */
static void *del_i(struct hmap *m, size_t i)
{
    char k[32];
    size_t n = key_of(i, k);
    return hmap_del(m, k, n);
}

/* What hmap_each saw: how often each VAL(i) was visited, i < n. */
struct visits {
    unsigned *seen;
    size_t n;
    size_t calls;
};

/* hmap_each callback: counts the visit and checks the key belongs to the value. */
static void visit(const char *key, void *value, void *arg)
{
    struct visits *v = arg;
    size_t i = (size_t)(uintptr_t)value - 1;
    char k[32];
    assert_true(i < v->n);
    key_of(i, k);
    assert_string_equal(key, k);
    v->seen[i]++;
    v->calls++;
}

/* Runs hmap_each over a map whose values are VAL(i), i < n, and returns the visit
 * counts (the caller frees v->seen). */
static struct visits each_visits(const struct hmap *m, size_t n)
{
    struct visits v = {calloc(n ? n : 1, sizeof(unsigned)), n, 0};
    assert_non_null(v.seen);
    hmap_each(m, visit, &v);
    return v;
}

/* hmap_each callback that must not be called. */
static void never(const char *key, void *value, void *arg)
{
    fail_msg("visited key %s in an empty map", key);
}

/* Up to four keys seen by hmap_each. */
struct key_list {
    char keys[4][16];
    size_t n;
};

/* hmap_each callback: copies the NUL-terminated key into the list. */
static void collect_key(const char *key, void *value, void *arg)
{
    struct key_list *l = arg;
    assert_true(l->n < 4 && strlen(key) < 16);
    strcpy(l->keys[l->n++], key);
}

/* An unused map answers NULL, visits nothing and cleans up. */
static void empty_map(void **state)
{
    struct hmap m = HMAP_INIT;
    assert_null(hmap_get(&m, "a", 1));
    assert_null(hmap_get(&m, "", 0));
    assert_null(hmap_del(&m, "a", 1));
    hmap_each(&m, never, NULL);
    assert_int_equal(m.count, 0);
    hmap_cleanup(&m);
    hmap_cleanup(&m);
}

/* put, get and del of a few keys. */
static void put_get_del(void **state)
{
    struct hmap m = HMAP_INIT;
    int a, b, c;
    assert_null(hmap_put(&m, "alice", 5, &a));
    assert_null(hmap_put(&m, "bob", 3, &b));
    assert_null(hmap_put(&m, "carol", 5, &c));
    assert_int_equal(m.count, 3);
    assert_ptr_equal(hmap_get(&m, "alice", 5), &a);
    assert_ptr_equal(hmap_get(&m, "bob", 3), &b);
    assert_ptr_equal(hmap_get(&m, "carol", 5), &c);
    assert_null(hmap_get(&m, "dave", 4));

    assert_ptr_equal(hmap_del(&m, "bob", 3), &b);
    assert_int_equal(m.count, 2);
    assert_null(hmap_get(&m, "bob", 3));
    assert_null(hmap_del(&m, "bob", 3));  /* already gone */
    assert_null(hmap_del(&m, "dave", 4)); /* never there */
    assert_int_equal(m.count, 2);
    assert_ptr_equal(hmap_get(&m, "alice", 5), &a);
    assert_ptr_equal(hmap_get(&m, "carol", 5), &c);

    /* A deleted key can be put again. */
    assert_null(hmap_put(&m, "bob", 3, &c));
    assert_ptr_equal(hmap_get(&m, "bob", 3), &c);
    hmap_cleanup(&m);
}

/* put on an existing key replaces the value and returns the old one. */
static void overwrite(void **state)
{
    struct hmap m = HMAP_INIT;
    int a, b, c;
    assert_null(hmap_put(&m, "k", 1, &a));
    assert_ptr_equal(hmap_put(&m, "k", 1, &b), &a);
    assert_ptr_equal(hmap_put(&m, "k", 1, &c), &b);
    assert_int_equal(m.count, 1);
    assert_ptr_equal(hmap_get(&m, "k", 1), &c);
    assert_ptr_equal(hmap_del(&m, "k", 1), &c);
    assert_int_equal(m.count, 0);
    hmap_cleanup(&m);
}

/* Keys are (ptr, len): equal prefixes, embedded NULs and the empty key are all distinct. */
static void keys_are_byte_strings(void **state)
{
    static const struct {
        const char *k;
        size_t n;
    } keys[] = {{"", 0},     {"\0", 1},   {"\0\0", 2}, {"a", 1},       {"a\0", 2},
                {"a\0b", 3}, {"a\0c", 3}, {"ab", 2},   {"abc", 3},     {"abcd", 4},
                {"b", 1},    {"\xff", 1}, {"\x80", 1}, {"abc\0\0", 5}, {"abc\0\0\0", 6}};
    const size_t nk = sizeof keys / sizeof keys[0];
    struct hmap m = HMAP_INIT;
    for (size_t i = 0; i < nk; i++)
        assert_null(hmap_put(&m, keys[i].k, keys[i].n, VAL(i)));
    assert_int_equal(m.count, nk);
    for (size_t i = 0; i < nk; i++)
        assert_ptr_equal(hmap_get(&m, keys[i].k, keys[i].n), VAL(i));
    /* Only len bytes count: "abcdef" cut to 3 is "abc". */
    assert_ptr_equal(hmap_get(&m, "abcdef", 3), VAL(8));
    assert_null(hmap_get(&m, "abcde", 5));
    assert_null(hmap_get(&m, "a\0d", 3));

    /* Deleting one leaves its neighbours. */
    assert_ptr_equal(hmap_del(&m, "a\0", 2), VAL(4));
    assert_null(hmap_get(&m, "a\0", 2));
    assert_ptr_equal(hmap_get(&m, "a", 1), VAL(3));
    assert_ptr_equal(hmap_get(&m, "a\0b", 3), VAL(5));
    assert_ptr_equal(hmap_del(&m, "", 0), VAL(0));
    assert_null(hmap_get(&m, "", 0));
    assert_ptr_equal(hmap_get(&m, "\0", 1), VAL(1));
    assert_int_equal(m.count, nk - 2);
    hmap_cleanup(&m);
}

/* Keys that share a hash are still told apart. Under the map's FNV-1a, "room:a" and
 * "room:aumdh1xa" (a key and its extension) collide, and so do "user:lrnw" and
 * "user:4pba"; with another hash this is just more distinct keys. */
static void hash_collisions(void **state)
{
    int a, b, c, d;
    for (int order = 0; order < 2; order++) {
        struct hmap m = HMAP_INIT;
        /* The longer key first, then the shorter, and the other way round. */
        if (order == 0) {
            assert_null(hmap_put(&m, "room:aumdh1xa", 13, &b));
            assert_null(hmap_put(&m, "room:a", 6, &a));
        } else {
            assert_null(hmap_put(&m, "room:a", 6, &a));
            assert_null(hmap_put(&m, "room:aumdh1xa", 13, &b));
        }
        assert_null(hmap_put(&m, "user:lrnw", 9, &c));
        assert_null(hmap_put(&m, "user:4pba", 9, &d));
        assert_int_equal(m.count, 4);
        assert_ptr_equal(hmap_get(&m, "room:a", 6), &a);
        assert_ptr_equal(hmap_get(&m, "room:aumdh1xa", 13), &b);
        assert_ptr_equal(hmap_get(&m, "user:lrnw", 9), &c);
        assert_ptr_equal(hmap_get(&m, "user:4pba", 9), &d);

        assert_ptr_equal(hmap_del(&m, "room:a", 6), &a);
        assert_null(hmap_get(&m, "room:a", 6));
        assert_ptr_equal(hmap_get(&m, "room:aumdh1xa", 13), &b);
        assert_ptr_equal(hmap_del(&m, "user:4pba", 9), &d);
        assert_ptr_equal(hmap_get(&m, "user:lrnw", 9), &c);
        assert_int_equal(m.count, 2);
        hmap_cleanup(&m);
    }
}

/* The map keeps its own copy of the key, NUL-terminated as hmap_each hands it out. */
static void keys_are_copied(void **state)
{
    struct hmap m = HMAP_INIT;
    char k[] = "room:lobby";
    int a;
    assert_null(hmap_put(&m, k, 10, &a));
    memset(k, 'x', 10);
    assert_null(hmap_get(&m, k, 10));
    assert_ptr_equal(hmap_get(&m, "room:lobby", 10), &a);

    /* Only len bytes are copied: the key hmap_each hands out ends there. */
    assert_null(hmap_put(&m, "abcdef", 3, &a));
    struct key_list seen = {0};
    hmap_each(&m, collect_key, &seen);
    assert_int_equal(seen.n, 2);
    assert_true((strcmp(seen.keys[0], "abc") == 0 && strcmp(seen.keys[1], "room:lobby") == 0) ||
                (strcmp(seen.keys[1], "abc") == 0 && strcmp(seen.keys[0], "room:lobby") == 0));
    hmap_cleanup(&m);
}

/* hmap_each visits every entry exactly once, with its own key. */
static void each_visits_all_once(void **state)
{
    struct hmap m = HMAP_INIT;
    for (size_t i = 0; i < 1000; i++)
        put_i(&m, i);
    struct visits v = each_visits(&m, 1000);
    assert_int_equal(v.calls, 1000);
    for (size_t i = 0; i < 1000; i++)
        assert_int_equal(v.seen[i], 1);
    free(v.seen);
    hmap_cleanup(&m);
}

/* Many keys through many growths; deleting half leaves exactly the other half. */
static void many_keys(void **state)
{
    struct hmap m = HMAP_INIT;
    for (size_t i = 0; i < MANY; i++) {
        put_i(&m, i);
        /* The first key survives every rehash. */
        if ((i & (i - 1)) == 0)
            assert_ptr_equal(get_i(&m, 0), VAL(0));
    }
    assert_int_equal(m.count, MANY);
    for (size_t i = 0; i < MANY; i++)
        assert_ptr_equal(get_i(&m, i), VAL(i));
    assert_null(get_i(&m, MANY));

    for (size_t i = 0; i < MANY; i += 2)
        assert_ptr_equal(del_i(&m, i), VAL(i));
    assert_int_equal(m.count, MANY / 2);
    for (size_t i = 0; i < MANY; i++) {
        if (i % 2)
            assert_ptr_equal(get_i(&m, i), VAL(i));
        else
            assert_null(get_i(&m, i));
    }

    struct visits v = each_visits(&m, MANY);
    assert_int_equal(v.calls, MANY / 2);
    for (size_t i = 0; i < MANY; i++)
        assert_int_equal(v.seen[i], i % 2);
    free(v.seen);

    /* The deleted half comes back. */
    for (size_t i = 0; i < MANY; i += 2)
        put_i(&m, i);
    assert_int_equal(m.count, MANY);
    for (size_t i = 0; i < MANY; i++)
        assert_ptr_equal(get_i(&m, i), VAL(i));
    hmap_cleanup(&m);
}

/* After cleanup the map is empty and usable again (LSan checks nothing leaks). */
static void cleanup_and_reuse(void **state)
{
    struct hmap m = HMAP_INIT;
    for (size_t i = 0; i < 100; i++)
        put_i(&m, i);
    hmap_cleanup(&m);
    assert_int_equal(m.count, 0);
    assert_null(get_i(&m, 5));
    assert_null(del_i(&m, 5));
    hmap_each(&m, never, NULL);

    put_i(&m, 5);
    assert_ptr_equal(get_i(&m, 5), VAL(5));
    assert_null(get_i(&m, 6));
    assert_int_equal(m.count, 1);
    hmap_cleanup(&m);
}

/* Deleting every key empties the map; each then visits nothing. */
static void delete_all(void **state)
{
    struct hmap m = HMAP_INIT;
    for (size_t i = 0; i < 500; i++)
        put_i(&m, i);
    for (size_t i = 500; i-- > 0;)
        assert_ptr_equal(del_i(&m, i), VAL(i));
    assert_int_equal(m.count, 0);
    hmap_each(&m, never, NULL);
    hmap_cleanup(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(empty_map),
        cmocka_unit_test(put_get_del),
        cmocka_unit_test(overwrite),
        cmocka_unit_test(keys_are_byte_strings),
        cmocka_unit_test(hash_collisions),
        cmocka_unit_test(keys_are_copied),
        cmocka_unit_test(each_visits_all_once),
        cmocka_unit_test(many_keys),
        cmocka_unit_test(cleanup_and_reuse),
        cmocka_unit_test(delete_all),
    };
    return cmocka_run_group_tests_name("hmap", tests, NULL, NULL);
}
