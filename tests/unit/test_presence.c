/* test_presence.c - Presence state and diffs (docs/phoenix-protocol.md §7 and the
 * transcript of §11.6), through the public API. Outputs are parsed with jansson and
 * checked for structure, since phx_refs are minted from the clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <pthread.h>

#include "presence.h"
#include "util/sbuf.h"

#define TOPIC "presence:lobby"
#define META_ONLINE "{\"status\":\"online\",\"online_at\":1716900000}"

/* ---- recorded diffs -------------------------------------------------------------- */

struct rec {
    char **topics;
    char **diffs;
    size_t n, cap;
};

/* presence_emit_fn: keeps a copy of every diff, in order. */
static void record(const char *topic, const char *diff, size_t len, void *arg)
{
    struct rec *r = arg;
    assert_int_equal(strlen(diff), len);
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->topics = realloc(r->topics, r->cap * sizeof *r->topics);
        r->diffs = realloc(r->diffs, r->cap * sizeof *r->diffs);
        assert_non_null(r->topics);
        assert_non_null(r->diffs);
    }
    r->topics[r->n] = strdup(topic);
    r->diffs[r->n] = strdup(diff);
    r->n++;
}

/* Frees the recorded diffs. */
static void rec_clear(struct rec *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->topics[i]);
        free(r->diffs[i]);
    }
    free(r->topics);
    free(r->diffs);
    memset(r, 0, sizeof *r);
}

struct fx {
    struct presence *p;
    struct rec rec;
};

/* Creates a presence for node "node-a" that records its diffs. */
static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->p = presence_create("node-a", record, &f->rec);
    *state = f;
    return 0;
}

/* Destroys the presence and the recorded diffs. */
static int teardown(void **state)
{
    struct fx *f = *state;
    presence_destroy(f->p);
    rec_clear(&f->rec);
    free(f);
    return 0;
}

/* ---- JSON helpers ---------------------------------------------------------------- */

/* Parses text that must be valid JSON. */
static json_t *parse(const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);
    if (!j)
        fail_msg("invalid JSON (%s): %s", err.text, text);
    return j;
}

/* Parses diff i and checks it has exactly "joins" and "leaves", both objects. */
static json_t *diff_at(struct fx *f, size_t i)
{
    assert_true(i < f->rec.n);
    json_t *d = parse(f->rec.diffs[i]);
    assert_true(json_is_object(d));
    assert_int_equal(json_object_size(d), 2);
    assert_true(json_is_object(json_object_get(d, "joins")));
    assert_true(json_is_object(json_object_get(d, "leaves")));
    return d;
}

/* The parsed presence_state of topic. */
static json_t *state_of(struct presence *p, const char *topic)
{
    struct sbuf b = SBUF_INIT;
    presence_state(p, topic, &b);
    json_t *s = parse(b.data);
    sbuf_cleanup(&b);
    assert_true(json_is_object(s));
    return s;
}

/* The "metas" array of key in a state or a joins/leaves map, which must be exactly
 * {"metas":[...]}. */
static json_t *metas_of(json_t *map, const char *key)
{
    json_t *entry = json_object_get(map, key);
    if (!entry)
        fail_msg("key %s missing", key);
    assert_true(json_is_object(entry));
    assert_int_equal(json_object_size(entry), 1);
    json_t *metas = json_object_get(entry, "metas");
    assert_true(json_is_array(metas));
    return metas;
}

/* A string field of a meta (NULL if absent). */
static const char *str_of(json_t *meta, const char *field)
{
    return json_string_value(json_object_get(meta, field));
}

/* True when c may appear in a phx_ref. */
static bool ref_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* Checks a minted phx_ref's format. */
static void assert_ref_format(const char *ref)
{
    assert_non_null(ref);
    assert_int_equal(strlen(ref), PRESENCE_REF_LEN);
    for (size_t i = 0; i < PRESENCE_REF_LEN; i++)
        assert_true(ref_char(ref[i]));
}

/* ---- tests ----------------------------------------------------------------------- */

/* A track emits one diff with joins only; the state lists the same meta. */
static void track_joins_only(void **state)
{
    struct fx *f = *state;
    assert_int_equal(presence_track(f->p, TOPIC, "alice", 1, META_ONLINE), 0);
    assert_int_equal(f->rec.n, 1);
    assert_string_equal(f->rec.topics[0], TOPIC);
    json_t *d = diff_at(f, 0);
    assert_int_equal(json_object_size(json_object_get(d, "leaves")), 0);
    json_t *joins = json_object_get(d, "joins");
    assert_int_equal(json_object_size(joins), 1);
    json_t *metas = metas_of(joins, "alice");
    assert_int_equal(json_array_size(metas), 1);
    json_t *m = json_array_get(metas, 0);
    assert_int_equal(json_object_size(m), 3);
    assert_string_equal(str_of(m, "status"), "online");
    assert_int_equal(json_integer_value(json_object_get(m, "online_at")), 1716900000);
    assert_ref_format(str_of(m, "phx_ref"));
    assert_null(json_object_get(m, "phx_ref_prev"));
    /* Keys of a meta are sorted, as Phoenix sends them. */
    assert_non_null(strstr(f->rec.diffs[0], "{\"online_at\":1716900000,\"phx_ref\":\""));

    json_t *s = state_of(f->p, TOPIC);
    assert_int_equal(json_object_size(s), 1);
    json_t *sm = metas_of(s, "alice");
    assert_int_equal(json_array_size(sm), 1);
    assert_true(json_equal(json_array_get(sm, 0), m));
    assert_int_equal(presence_count_keys(f->p, TOPIC), 1);
    json_decref(s);
    json_decref(d);
}

/* Two connections under one key: two metas, oldest first; the second diff has only the
 * new meta. */
static void two_conns_same_key(void **state)
{
    struct fx *f = *state;
    assert_int_equal(presence_track(f->p, TOPIC, "42", 1, "{\"device\":\"laptop\"}"), 0);
    assert_int_equal(presence_track(f->p, TOPIC, "42", 2, "{\"device\":\"phone\"}"), 0);
    assert_int_equal(f->rec.n, 2);
    json_t *d = diff_at(f, 1);
    json_t *jm = metas_of(json_object_get(d, "joins"), "42");
    assert_int_equal(json_array_size(jm), 1);
    assert_string_equal(str_of(json_array_get(jm, 0), "device"), "phone");
    assert_int_equal(json_object_size(json_object_get(d, "leaves")), 0);

    json_t *s = state_of(f->p, TOPIC);
    json_t *sm = metas_of(s, "42");
    assert_int_equal(json_array_size(sm), 2);
    assert_string_equal(str_of(json_array_get(sm, 0), "device"), "laptop");
    assert_string_equal(str_of(json_array_get(sm, 1), "device"), "phone");
    assert_string_not_equal(str_of(json_array_get(sm, 0), "phx_ref"),
                            str_of(json_array_get(sm, 1), "phx_ref"));
    assert_int_equal(presence_count_keys(f->p, TOPIC), 1);
    json_decref(s);
    json_decref(d);
}

/* Untracking one of two metas: leaves carries only that meta, joins is {}. */
static void untrack_one_of_two(void **state)
{
    struct fx *f = *state;
    assert_int_equal(presence_track(f->p, TOPIC, "42", 1, "{\"device\":\"laptop\"}"), 0);
    assert_int_equal(presence_track(f->p, TOPIC, "42", 2, "{\"device\":\"phone\"}"), 0);
    json_t *before = state_of(f->p, TOPIC);
    json_t *laptop = json_array_get(metas_of(before, "42"), 0);

    assert_int_equal(presence_untrack(f->p, TOPIC, 2), 0);
    assert_int_equal(f->rec.n, 3);
    json_t *d = diff_at(f, 2);
    assert_int_equal(json_object_size(json_object_get(d, "joins")), 0);
    json_t *leaves = json_object_get(d, "leaves");
    assert_int_equal(json_object_size(leaves), 1);
    json_t *lm = metas_of(leaves, "42");
    assert_int_equal(json_array_size(lm), 1);
    assert_string_equal(str_of(json_array_get(lm, 0), "device"), "phone");

    json_t *s = state_of(f->p, TOPIC);
    json_t *sm = metas_of(s, "42");
    assert_int_equal(json_array_size(sm), 1);
    assert_true(json_equal(json_array_get(sm, 0), laptop));
    json_decref(s);
    json_decref(d);
    json_decref(before);
}

/* Untracking the last meta removes the key, and the topic with its last key. */
static void untrack_last_removes_key(void **state)
{
    struct fx *f = *state;
    assert_int_equal(presence_track(f->p, TOPIC, "alice", 1, META_ONLINE), 0);
    assert_int_equal(presence_track(f->p, TOPIC, "bob", 2, META_ONLINE), 0);
    assert_int_equal(presence_count_topics(f->p), 1);
    assert_int_equal(presence_untrack(f->p, TOPIC, 1), 0);
    json_t *s = state_of(f->p, TOPIC);
    assert_null(json_object_get(s, "alice"));
    assert_int_equal(json_object_size(s), 1);
    json_decref(s);
    json_t *d = diff_at(f, 2);
    assert_int_equal(json_array_size(metas_of(json_object_get(d, "leaves"), "alice")), 1);
    json_decref(d);

    assert_int_equal(presence_untrack(f->p, TOPIC, 2), 0);
    assert_int_equal(presence_count_keys(f->p, TOPIC), 0);
    assert_int_equal(presence_count_topics(f->p), 0);
    struct sbuf b = SBUF_INIT;
    presence_state(f->p, TOPIC, &b);
    assert_string_equal(b.data, "{}");
    sbuf_cleanup(&b);
}

/* An update joins the new meta (phx_ref_prev = old phx_ref) and leaves the old one. */
static void update_joins_and_leaves(void **state)
{
    struct fx *f = *state;
    assert_int_equal(presence_track(f->p, TOPIC, "alice", 1, META_ONLINE), 0);
    json_t *s0 = state_of(f->p, TOPIC);
    json_t *old = json_array_get(metas_of(s0, "alice"), 0);
    const char *r1 = str_of(old, "phx_ref");

    assert_int_equal(presence_update(f->p, TOPIC, 1, "{\"status\":\"away\"}"), 0);
    assert_int_equal(f->rec.n, 2);
    json_t *d = diff_at(f, 1);
    json_t *jm = metas_of(json_object_get(d, "joins"), "alice");
    json_t *lm = metas_of(json_object_get(d, "leaves"), "alice");
    assert_int_equal(json_array_size(jm), 1);
    assert_int_equal(json_array_size(lm), 1);
    json_t *nm = json_array_get(jm, 0);
    assert_int_equal(json_object_size(nm), 3);
    assert_string_equal(str_of(nm, "status"), "away");
    assert_string_equal(str_of(nm, "phx_ref_prev"), r1);
    assert_ref_format(str_of(nm, "phx_ref"));
    assert_string_not_equal(str_of(nm, "phx_ref"), r1);
    assert_true(json_equal(json_array_get(lm, 0), old));

    json_t *s = state_of(f->p, TOPIC);
    json_t *sm = metas_of(s, "alice");
    assert_int_equal(json_array_size(sm), 1);
    assert_true(json_equal(json_array_get(sm, 0), nm));
    json_decref(s);
    json_decref(d);
    json_decref(s0);
}

/* A second update chains: its leaves carry the older phx_ref_prev (§11.6). */
static void update_chains(void **state)
{
    struct fx *f = *state;
    assert_int_equal(presence_track(f->p, TOPIC, "alice", 1, META_ONLINE), 0);
    assert_int_equal(presence_update(f->p, TOPIC, 1, "{\"status\":\"away\"}"), 0);
    assert_int_equal(presence_update(f->p, TOPIC, 1, "{\"status\":\"busy\"}"), 0);
    assert_int_equal(f->rec.n, 3);
    json_t *d0 = diff_at(f, 0), *d1 = diff_at(f, 1), *d2 = diff_at(f, 2);
    const char *r1 =
        str_of(json_array_get(metas_of(json_object_get(d0, "joins"), "alice"), 0), "phx_ref");
    const char *r2 =
        str_of(json_array_get(metas_of(json_object_get(d1, "joins"), "alice"), 0), "phx_ref");
    json_t *j = json_array_get(metas_of(json_object_get(d2, "joins"), "alice"), 0);
    json_t *l = json_array_get(metas_of(json_object_get(d2, "leaves"), "alice"), 0);
    assert_string_equal(str_of(j, "status"), "busy");
    assert_string_equal(str_of(j, "phx_ref_prev"), r2);
    assert_string_equal(str_of(l, "status"), "away");
    assert_string_equal(str_of(l, "phx_ref"), r2);
    assert_string_equal(str_of(l, "phx_ref_prev"), r1);
    assert_string_not_equal(str_of(j, "phx_ref"), r2);
    json_decref(d2);
    json_decref(d1);
    json_decref(d0);
}

/* An update makes the meta its key's newest, as phoenix.js orders it. */
static void update_moves_meta_last(void **state)
{
    struct fx *f = *state;
    assert_int_equal(presence_track(f->p, TOPIC, "42", 1, "{\"device\":\"laptop\"}"), 0);
    assert_int_equal(presence_track(f->p, TOPIC, "42", 2, "{\"device\":\"phone\"}"), 0);
    assert_int_equal(presence_update(f->p, TOPIC, 1, "{\"device\":\"tablet\"}"), 0);
    json_t *s = state_of(f->p, TOPIC);
    json_t *sm = metas_of(s, "42");
    assert_int_equal(json_array_size(sm), 2);
    assert_string_equal(str_of(json_array_get(sm, 0), "device"), "phone");
    assert_string_equal(str_of(json_array_get(sm, 1), "device"), "tablet");
    json_decref(s);
}

/* Fields named phx_ref / phx_ref_prev in a local meta are replaced or dropped. */
static void caller_refs_overridden(void **state)
{
    struct fx *f = *state;
    assert_int_equal(
        presence_track(f->p, TOPIC, "alice", 1, "{\"phx_ref\":\"mine\",\"phx_ref_prev\":\"x\"}"),
        0);
    json_t *s = state_of(f->p, TOPIC);
    json_t *m = json_array_get(metas_of(s, "alice"), 0);
    assert_ref_format(str_of(m, "phx_ref"));
    assert_null(json_object_get(m, "phx_ref_prev"));
    json_decref(s);
}

/* qsort comparator for strings. */
static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* 10000 tracks mint 10000 distinct refs of 16 URL-safe base64 characters. */
static void refs_unique(void **state)
{
    struct fx *f = *state;
    enum { N = 10000 };
    char **refs = calloc(N, sizeof *refs);
    assert_non_null(refs);
    for (int i = 0; i < N; i++) {
        char key[16];
        snprintf(key, sizeof key, "u%d", i % 100);
        assert_int_equal(presence_track(f->p, TOPIC, key, (uint64_t)i + 1, "{}"), 0);
        json_t *d = diff_at(f, (size_t)i);
        const char *r =
            str_of(json_array_get(metas_of(json_object_get(d, "joins"), key), 0), "phx_ref");
        assert_ref_format(r);
        refs[i] = strdup(r);
        json_decref(d);
    }
    qsort(refs, N, sizeof *refs, cmp_str);
    for (int i = 1; i < N; i++)
        if (strcmp(refs[i - 1], refs[i]) == 0)
            fail_msg("duplicate phx_ref %s", refs[i]);
    for (int i = 0; i < N; i++)
        free(refs[i]);
    free(refs);
    assert_int_equal(presence_count_keys(f->p, TOPIC), 100);
}

/* Tracking the same (conn, topic) twice is a conflict and changes nothing. */
static void double_track_conflict(void **state)
{
    struct fx *f = *state;
    assert_int_equal(presence_track(f->p, TOPIC, "alice", 1, META_ONLINE), 0);
    assert_int_equal(presence_track(f->p, TOPIC, "alice", 1, META_ONLINE), RC_ECONFLICT);
    assert_int_equal(presence_track(f->p, TOPIC, "bob", 1, META_ONLINE), RC_ECONFLICT);
    assert_int_equal(f->rec.n, 1);
    json_t *s = state_of(f->p, TOPIC);
    assert_int_equal(json_object_size(s), 1);
    assert_int_equal(json_array_size(metas_of(s, "alice")), 1);
    json_decref(s);
    /* The same conn on another topic is another entry. */
    assert_int_equal(presence_track(f->p, "presence:other", "alice", 1, META_ONLINE), 0);
}

/* Untrack and update of something not tracked: RC_ENOTFOUND, no diff. */
static void unknown_not_found(void **state)
{
    struct fx *f = *state;
    assert_int_equal(presence_untrack(f->p, TOPIC, 1), RC_ENOTFOUND);
    assert_int_equal(presence_update(f->p, TOPIC, 1, META_ONLINE), RC_ENOTFOUND);
    assert_int_equal(presence_track(f->p, TOPIC, "alice", 1, META_ONLINE), 0);
    assert_int_equal(presence_untrack(f->p, TOPIC, 2), RC_ENOTFOUND);
    assert_int_equal(presence_update(f->p, TOPIC, 2, META_ONLINE), RC_ENOTFOUND);
    assert_int_equal(presence_untrack(f->p, "presence:other", 1), RC_ENOTFOUND);
    assert_int_equal(presence_untrack_remote(f->p, "node-b", TOPIC, 1), RC_ENOTFOUND);
    assert_int_equal(f->rec.n, 1);
    assert_int_equal(presence_untrack(f->p, TOPIC, 1), 0);
    assert_int_equal(presence_untrack(f->p, TOPIC, 1), RC_ENOTFOUND);
    assert_int_equal(f->rec.n, 2);
}

/* Topics do not see each other's entries. */
static void topics_independent(void **state)
{
    struct fx *f = *state;
    assert_int_equal(presence_track(f->p, "room:a", "alice", 1, META_ONLINE), 0);
    assert_int_equal(presence_track(f->p, "room:b", "bob", 1, META_ONLINE), 0);
    assert_string_equal(f->rec.topics[0], "room:a");
    assert_string_equal(f->rec.topics[1], "room:b");
    json_t *a = state_of(f->p, "room:a");
    json_t *b = state_of(f->p, "room:b");
    assert_int_equal(json_object_size(a), 1);
    assert_non_null(json_object_get(a, "alice"));
    assert_int_equal(json_object_size(b), 1);
    assert_non_null(json_object_get(b, "bob"));
    json_decref(a);
    json_decref(b);

    assert_int_equal(presence_untrack(f->p, "room:a", 1), 0);
    assert_string_equal(f->rec.topics[2], "room:a");
    assert_int_equal(presence_count_keys(f->p, "room:a"), 0);
    assert_int_equal(presence_count_keys(f->p, "room:b"), 1);
    assert_int_equal(presence_count_topics(f->p), 1);
}

/* Keys that need escaping come out as valid JSON with the same key. */
static void keys_escaped(void **state)
{
    struct fx *f = *state;
    static const char *keys[] = {"a\"b", "back\\slash", "line\nbreak\x01",
                                 "caf\xc3\xa9 \xf0\x9f\x99\x82", "</script>"};
    enum { NK = sizeof keys / sizeof *keys };
    for (size_t i = 0; i < NK; i++) {
        assert_int_equal(presence_track(f->p, TOPIC, keys[i], i + 1, "{\"name\":\"\\\"q\\\"\"}"),
                         0);
        json_t *d = diff_at(f, i);
        json_t *joins = json_object_get(d, "joins");
        assert_int_equal(json_object_size(joins), 1);
        json_t *m = json_array_get(metas_of(joins, keys[i]), 0);
        assert_string_equal(str_of(m, "name"), "\"q\"");
        json_decref(d);
    }
    json_t *s = state_of(f->p, TOPIC);
    assert_int_equal(json_object_size(s), NK);
    for (size_t i = 0; i < NK; i++)
        assert_int_equal(json_array_size(metas_of(s, keys[i])), 1);
    json_decref(s);
    assert_int_equal(presence_untrack(f->p, TOPIC, 1), 0);
    json_t *d = diff_at(f, NK);
    assert_int_equal(json_array_size(metas_of(json_object_get(d, "leaves"), "a\"b")), 1);
    json_decref(d);
}

/* A meta that is not a JSON object, or a key that is not UTF-8, is refused. */
static void invalid_input(void **state)
{
    struct fx *f = *state;
    static const char *bad[] = {
        "[]", "\"x\"", "42", "null", "{", "", "{\"a\":1} x", "{\"a\":1,\"a\":2}", "{'a':1}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(presence_track(f->p, TOPIC, "alice", 1, bad[i]), RC_EINVAL);
    assert_int_equal(presence_track(f->p, TOPIC, "\xff\xfe", 1, "{}"), RC_EINVAL);
    assert_int_equal(f->rec.n, 0);
    assert_int_equal(presence_count_topics(f->p), 0);
    assert_int_equal(presence_track(f->p, TOPIC, "alice", 1, META_ONLINE), 0);
    assert_int_equal(presence_update(f->p, TOPIC, 1, "[1]"), RC_EINVAL);
    assert_int_equal(f->rec.n, 1);
    json_t *s = state_of(f->p, TOPIC);
    assert_string_equal(str_of(json_array_get(metas_of(s, "alice"), 0), "status"), "online");
    json_decref(s);
}

/* Remote entries keep the refs they came with and do not clash with local conn ids. */
static void remote_entries(void **state)
{
    struct fx *f = *state;
    assert_int_equal(presence_track_remote(f->p, "node-b", TOPIC, "bob", 1, "{\"status\":\"x\"}"),
                     RC_EINVAL);
    assert_int_equal(
        presence_track_remote(f->p, "node-b", TOPIC, "bob", 1, "{\"phx_ref\":\"\",\"a\":1}"),
        RC_EINVAL);
    assert_int_equal(presence_track(f->p, TOPIC, "alice", 1, META_ONLINE), 0);
    assert_int_equal(presence_track_remote(f->p, "node-b", TOPIC, "bob", 1,
                                           "{\"phx_ref\":\"REMOTEREF0000001\",\"s\":1}"),
                     0);
    assert_int_equal(presence_track_remote(f->p, "node-b", TOPIC, "bob", 1,
                                           "{\"phx_ref\":\"REMOTEREF0000009\"}"),
                     RC_ECONFLICT);
    assert_int_equal(presence_update_remote(f->p, "node-b", TOPIC, 1,
                                            "{\"phx_ref\":\"REMOTEREF0000002\",\"phx_ref_"
                                            "prev\":\"REMOTEREF0000001\",\"s\":2}"),
                     0);
    json_t *d = diff_at(f, 2);
    json_t *j = json_array_get(metas_of(json_object_get(d, "joins"), "bob"), 0);
    json_t *l = json_array_get(metas_of(json_object_get(d, "leaves"), "bob"), 0);
    assert_string_equal(str_of(j, "phx_ref"), "REMOTEREF0000002");
    assert_string_equal(str_of(j, "phx_ref_prev"), "REMOTEREF0000001");
    assert_string_equal(str_of(l, "phx_ref"), "REMOTEREF0000001");
    json_decref(d);
    json_t *s = state_of(f->p, TOPIC);
    assert_int_equal(json_object_size(s), 2);
    assert_string_equal(str_of(json_array_get(metas_of(s, "bob"), 0), "phx_ref"),
                        "REMOTEREF0000002");
    json_decref(s);
    /* The local conn 1 is another entry than node-b's conn 1. */
    assert_int_equal(presence_untrack(f->p, TOPIC, 1), 0);
    assert_int_equal(presence_count_keys(f->p, TOPIC), 1);
    assert_int_equal(presence_untrack_remote(f->p, "node-b", TOPIC, 1), 0);
    assert_int_equal(presence_count_topics(f->p), 0);
}

/* Reaping a node removes all its entries, emitting one leaves-only diff per topic. */
static void untrack_node_reaps(void **state)
{
    struct fx *f = *state;
    /* room:a: alice local (conn 1) + alice on node-b (conns 7, 8) + bob on node-b;
     * room:b: carol on node-b only; room:c: dave local only. */
    assert_int_equal(presence_track(f->p, "room:a", "alice", 1, "{\"d\":\"local\"}"), 0);
    assert_int_equal(presence_track_remote(f->p, "node-b", "room:a", "alice", 7,
                                           "{\"phx_ref\":\"B7\",\"d\":\"b7\"}"),
                     0);
    assert_int_equal(
        presence_track_remote(f->p, "node-b", "room:a", "bob", 9, "{\"phx_ref\":\"B9\"}"), 0);
    assert_int_equal(presence_track_remote(f->p, "node-b", "room:a", "alice", 8,
                                           "{\"phx_ref\":\"B8\",\"d\":\"b8\"}"),
                     0);
    assert_int_equal(
        presence_track_remote(f->p, "node-b", "room:b", "carol", 7, "{\"phx_ref\":\"C7\"}"), 0);
    assert_int_equal(presence_track(f->p, "room:c", "dave", 2, "{}"), 0);
    assert_int_equal(presence_untrack_node(f->p, "node-zzz"), 0);
    size_t before = f->rec.n;
    assert_int_equal(before, 6);

    assert_int_equal(presence_untrack_node(f->p, "node-b"), 4);
    assert_int_equal(f->rec.n, before + 2);
    json_t *da = NULL, *db = NULL;
    for (size_t i = before; i < f->rec.n; i++) {
        json_t *d = diff_at(f, i);
        assert_int_equal(json_object_size(json_object_get(d, "joins")), 0);
        if (strcmp(f->rec.topics[i], "room:a") == 0 && !da)
            da = d;
        else if (strcmp(f->rec.topics[i], "room:b") == 0 && !db)
            db = d;
        else
            fail_msg("unexpected diff for %s", f->rec.topics[i]);
    }
    json_t *la = json_object_get(da, "leaves");
    assert_int_equal(json_object_size(la), 2);
    json_t *alice = metas_of(la, "alice");
    assert_int_equal(json_array_size(alice), 2);
    assert_string_equal(str_of(json_array_get(alice, 0), "phx_ref"), "B7");
    assert_string_equal(str_of(json_array_get(alice, 1), "phx_ref"), "B8");
    assert_int_equal(json_array_size(metas_of(la, "bob")), 1);
    json_t *lb = json_object_get(db, "leaves");
    assert_int_equal(json_object_size(lb), 1);
    assert_string_equal(str_of(json_array_get(metas_of(lb, "carol"), 0), "phx_ref"), "C7");
    json_decref(da);
    json_decref(db);

    json_t *s = state_of(f->p, "room:a");
    assert_int_equal(json_object_size(s), 1);
    json_t *am = metas_of(s, "alice");
    assert_int_equal(json_array_size(am), 1);
    assert_string_equal(str_of(json_array_get(am, 0), "d"), "local");
    json_decref(s);
    assert_int_equal(presence_count_keys(f->p, "room:b"), 0);
    assert_int_equal(presence_count_keys(f->p, "room:c"), 1);
    assert_int_equal(presence_count_topics(f->p), 2);

    /* This node's own entries go the same way. */
    assert_int_equal(presence_untrack_node(f->p, "node-a"), 2);
    assert_int_equal(presence_count_topics(f->p), 0);
    assert_int_equal(f->rec.n, before + 4);
}

struct seen {
    char buf[512];
};

/* presence_each_key callback: appends "key:n:status;". */
static void each_cb(const char *key, size_t n_metas, const char *newest, void *arg)
{
    struct seen *s = arg;
    json_t *m = parse(newest);
    size_t len = strlen(s->buf);
    snprintf(s->buf + len, sizeof s->buf - len, "%s:%zu:%s;", key, n_metas, str_of(m, "status"));
    json_decref(m);
}

/* each_key reports every key once with its meta count and newest meta. */
static void each_key_newest(void **state)
{
    struct fx *f = *state;
    assert_int_equal(presence_track(f->p, TOPIC, "bob", 1, "{\"status\":\"online\"}"), 0);
    assert_int_equal(presence_track(f->p, TOPIC, "alice", 2, "{\"status\":\"online\"}"), 0);
    assert_int_equal(presence_track(f->p, TOPIC, "alice", 3, "{\"status\":\"busy\"}"), 0);
    assert_int_equal(presence_track(f->p, "other", "carol", 4, "{\"status\":\"online\"}"), 0);
    struct seen s = {{0}};
    presence_each_key(f->p, TOPIC, each_cb, &s);
    assert_string_equal(s.buf, "alice:2:busy;bob:1:online;");
    assert_int_equal(presence_update(f->p, TOPIC, 2, "{\"status\":\"away\"}"), 0);
    s.buf[0] = '\0';
    presence_each_key(f->p, TOPIC, each_cb, &s);
    assert_string_equal(s.buf, "alice:2:away;bob:1:online;");
    s.buf[0] = '\0';
    presence_each_key(f->p, "nothing", each_cb, &s);
    assert_string_equal(s.buf, "");
}

/* ---- concurrency: diffs reach the callback in the order of the changes ----------- */

/* Applies diffs like phoenix.js syncDiff, on key -> {ref: true}. */
struct replay {
    pthread_mutex_t mu;
    json_t *state;
};

/* presence_emit_fn: joins then leaves, ignoring leaves of unknown refs. */
static void replay_cb(const char *topic, const char *diff, size_t len, void *arg)
{
    struct replay *r = arg;
    (void)topic;
    (void)len;
    json_t *d = json_loads(diff, 0, NULL);
    pthread_mutex_lock(&r->mu);
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(d, "joins"), key, v)
    {
        json_t *refs = json_object_get(r->state, key);
        if (!refs) {
            refs = json_object();
            json_object_set_new(r->state, key, refs);
        }
        size_t i;
        json_t *m;
        json_array_foreach(json_object_get(v, "metas"), i, m)
            json_object_set_new(refs, str_of(m, "phx_ref"), json_true());
    }
    json_object_foreach(json_object_get(d, "leaves"), key, v)
    {
        json_t *refs = json_object_get(r->state, key);
        size_t i;
        json_t *m;
        json_array_foreach(json_object_get(v, "metas"), i, m) if (refs)
            json_object_del(refs, str_of(m, "phx_ref"));
        if (refs && json_object_size(refs) == 0)
            json_object_del(r->state, key);
    }
    pthread_mutex_unlock(&r->mu);
    json_decref(d);
}

struct worker_arg {
    struct presence *p;
    uint32_t seed;
    size_t n_ok;
};

/* Tracks, updates and untracks conns of a small pool shared by all threads, so changes
 * to one entry come from different threads. */
static void *churn(void *arg)
{
    struct worker_arg *w = arg;
    uint32_t x = w->seed;
    for (int i = 0; i < 5000; i++) {
        x = x * 1103515245u + 12345u;
        uint64_t conn = (x >> 8) % 8 + 1;
        char key[8];
        snprintf(key, sizeof key, "k%d", (int)(conn % 3));
        int rc;
        switch ((x >> 16) % 3) {
        case 0:
            rc = presence_track(w->p, TOPIC, key, conn, "{}");
            if (rc != 0 && rc != RC_ECONFLICT)
                return (void *)1;
            break;
        case 1:
            rc = presence_update(w->p, TOPIC, conn, "{\"s\":1}");
            if (rc != 0 && rc != RC_ENOTFOUND)
                return (void *)1;
            break;
        default:
            rc = presence_untrack(w->p, TOPIC, conn);
            if (rc != 0 && rc != RC_ENOTFOUND)
                return (void *)1;
        }
        w->n_ok += rc == 0;
    }
    return NULL;
}

/* Concurrent changes: replaying the diffs in emit order yields exactly the state. */
static void concurrent_order(void **state)
{
    (void)state;
    struct replay r = {PTHREAD_MUTEX_INITIALIZER, json_object()};
    struct presence *p = presence_create("node-a", replay_cb, &r);
    enum { NT = 4 };
    pthread_t th[NT];
    struct worker_arg wa[NT];
    for (int i = 0; i < NT; i++) {
        wa[i] = (struct worker_arg){p, (uint32_t)i * 7919u + 1, 0};
        assert_int_equal(pthread_create(&th[i], NULL, churn, &wa[i]), 0);
    }
    for (int i = 0; i < NT; i++) {
        void *res;
        pthread_join(th[i], &res);
        assert_null(res);
        assert_true(wa[i].n_ok > 100);
    }
    /* The replayed view must hold exactly the refs of the final state. */
    json_t *s = state_of(p, TOPIC);
    json_t *expect = json_object();
    const char *key;
    json_t *v;
    json_object_foreach(s, key, v)
    {
        json_t *refs = json_object();
        size_t i;
        json_t *m;
        json_array_foreach(json_object_get(v, "metas"), i, m)
            json_object_set_new(refs, str_of(m, "phx_ref"), json_true());
        json_object_set_new(expect, key, refs);
    }
    if (!json_equal(expect, r.state))
        fail_msg("replayed diffs disagree with presence_state");
    json_decref(expect);
    json_decref(s);
    presence_destroy(p);
    json_decref(r.state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(track_joins_only, setup, teardown),
        cmocka_unit_test_setup_teardown(two_conns_same_key, setup, teardown),
        cmocka_unit_test_setup_teardown(untrack_one_of_two, setup, teardown),
        cmocka_unit_test_setup_teardown(untrack_last_removes_key, setup, teardown),
        cmocka_unit_test_setup_teardown(update_joins_and_leaves, setup, teardown),
        cmocka_unit_test_setup_teardown(update_chains, setup, teardown),
        cmocka_unit_test_setup_teardown(update_moves_meta_last, setup, teardown),
        cmocka_unit_test_setup_teardown(caller_refs_overridden, setup, teardown),
        cmocka_unit_test_setup_teardown(refs_unique, setup, teardown),
        cmocka_unit_test_setup_teardown(double_track_conflict, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(topics_independent, setup, teardown),
        cmocka_unit_test_setup_teardown(keys_escaped, setup, teardown),
        cmocka_unit_test_setup_teardown(invalid_input, setup, teardown),
        cmocka_unit_test_setup_teardown(remote_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(untrack_node_reaps, setup, teardown),
        cmocka_unit_test_setup_teardown(each_key_newest, setup, teardown),
        cmocka_unit_test(concurrent_order),
    };
    return cmocka_run_group_tests_name("presence", tests, NULL, NULL);
}
