/* test_codec.c - the Phoenix wire format against the golden frames in tests/data and
 * the examples of docs/phoenix-protocol.md §1.3, §2, §3 and §11. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec.h"

#ifndef TEST_DATADIR
#define TEST_DATADIR "tests/data"
#endif

/* Deep enough for every golden frame. */
#define DEPTH 32
#define MAX_COLS 8

/* ---- helpers ---------------------------------------------------------------------- */

/* Called for each data line of a golden file with its TAB-separated columns. */
typedef void (*line_fn)(char **cols, size_t ncols, const char *where, void *arg);

/* Runs fn over every non-comment line of TEST_DATADIR/name; returns the line count. */
static size_t for_each_line(const char *name, line_fn fn, void *arg)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", TEST_DATADIR, name);
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("cannot open %s", path);
    char *line = NULL;
    size_t cap = 0, lineno = 0, count = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0 || line[0] == '#')
            continue;
        char *cols[MAX_COLS];
        size_t ncols = 0;
        for (char *p = line;; p++) {
            char *tab = strchr(p, '\t');
            if (ncols == MAX_COLS)
                fail_msg("%s:%zu: too many columns", name, lineno);
            cols[ncols++] = p;
            if (!tab)
                break;
            *tab = '\0';
            p = tab;
        }
        char where[1100];
        snprintf(where, sizeof where, "%s:%zu", name, lineno);
        fn(cols, ncols, where, arg);
        count++;
    }
    free(line);
    fclose(f);
    return count;
}

/* Parses "00 0a ff" (or "-" for nothing) into a malloc'd buffer of exactly *len bytes. */
static uint8_t *parse_hex(const char *hex, size_t *len)
{
    uint8_t *buf = malloc(strlen(hex) / 2 + 1);
    assert_non_null(buf);
    size_t n = 0;
    if (strcmp(hex, "-") != 0) {
        for (const char *p = hex; *p;) {
            if (*p == ' ') {
                p++;
                continue;
            }
            unsigned v;
            assert_int_equal(sscanf(p, "%2x", &v), 1);
            buf[n++] = (uint8_t)v;
            p += 2;
        }
    }
    *len = n;
    /* Shrink to the exact size so that ASan/valgrind see any read past the frame. */
    uint8_t *exact = malloc(n ? n : 1);
    assert_non_null(exact);
    memcpy(exact, buf, n);
    free(buf);
    return exact;
}

/* Parses a JSON column (any value). */
static json_t *load_json(const char *text, const char *where)
{
    json_error_t err;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &err);
    if (!v)
        fail_msg("%s: bad expected JSON %s: %s", where, text, err.text);
    return v;
}

/* Decodes s[0..len) from an exact-size heap copy, so reads past len are caught. */
static int decode_exact(enum codec_vsn vsn, const char *s, size_t len, size_t depth,
                        struct phx_in *out)
{
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, s, len);
    int rc = codec_decode_text(vsn, copy, len, depth, out);
    free(copy); /* text decodes own their strings: nothing may point into copy */
    return rc;
}

/* Fails unless the ref value v serializes to want ("null" meaning a NULL pointer). */
static void check_ref(const json_t *v, const char *want, const char *what, const char *where)
{
    if (strcmp(want, "null") == 0) {
        if (v)
            fail_msg("%s: %s should be NULL", where, what);
        assert_null(codec_ref_text(v));
        return;
    }
    if (!v)
        fail_msg("%s: %s is NULL, want %s", where, what, want);
    char *got = codec_ref_text(v);
    assert_non_null(got);
    if (strcmp(got, want) != 0)
        fail_msg("%s: %s is %s, want %s", where, what, got, want);
    free(got);
}

/* Fails unless topic/topic_str/topic_len describe the JSON text want. */
static void check_topic(const struct phx_in *m, const char *want, const char *where)
{
    json_t *exp = load_json(want, where);
    if (!m->topic || !json_equal(m->topic, exp))
        fail_msg("%s: topic differs from %s", where, want);
    if (json_is_string(exp)) {
        if (!m->topic_str || m->topic_len != json_string_length(exp) ||
            memcmp(m->topic_str, json_string_value(exp), m->topic_len) != 0)
            fail_msg("%s: topic_str differs from %s", where, want);
    } else if (m->topic_str || m->topic_len) {
        fail_msg("%s: topic_str should be NULL for non-string topic %s", where, want);
    }
    json_decref(exp);
}

/* Fails unless event equals the JSON string want. */
static void check_event(const struct phx_in *m, const char *want, const char *where)
{
    json_t *exp = load_json(want, where);
    assert_true(json_is_string(exp));
    if (!m->event || strlen(m->event) != json_string_length(exp) ||
        strcmp(m->event, json_string_value(exp)) != 0)
        fail_msg("%s: event differs from %s", where, want);
    json_decref(exp);
}

/* Fails unless m is all zero bytes (what an error must leave behind). */
static void check_zeroed(const struct phx_in *m, const char *where)
{
    static const struct phx_in zero;
    if (memcmp(m, &zero, sizeof zero) != 0)
        fail_msg("%s: *out not cleared after an error", where);
}

/* Returns a malloc'd kind-0 frame with fields f[0..3] (lengths fl) and the payload. */
static uint8_t *make_push(const uint8_t *const f[4], const size_t fl[4], const uint8_t *payload,
                          size_t payload_len, size_t *len)
{
    size_t n = 5 + fl[0] + fl[1] + fl[2] + fl[3] + payload_len;
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    buf[0] = 0;
    size_t off = 5;
    for (int i = 0; i < 4; i++) {
        buf[1 + i] = (uint8_t)fl[i];
        memcpy(buf + off, f[i], fl[i]);
        off += fl[i];
    }
    memcpy(buf + off, payload, payload_len);
    *len = n;
    return buf;
}

/* Fails unless out holds exactly want. */
static void check_sbuf(const struct sbuf *out, const char *want)
{
    assert_non_null(out->data);
    assert_string_equal(out->data, want);
    assert_int_equal(out->len, strlen(want));
}

/* ---- vsn (§1.3) ------------------------------------------------------------------- */

static void test_vsn_table(void **state)
{
    static const struct {
        const char *vsn;
        int rc;
        enum codec_vsn want;
    } cases[] = {
        {NULL, 0, CODEC_V1},
        {"1.0.0", 0, CODEC_V1},
        {"1.0.5", 0, CODEC_V1},
        {"1.0.12", 0, CODEC_V1},
        {"2.0.0", 0, CODEC_V2},
        {"2.0.9", 0, CODEC_V2},
        {"2.0.10", 0, CODEC_V2},
        {"2.0.123456", 0, CODEC_V2},
        /* §1.3: refused with 403 */
        {"2.1.0", RC_EINVAL, 0},
        {"3.0.0", RC_EINVAL, 0},
        {"2.0", RC_EINVAL, 0},
        {"garbage", RC_EINVAL, 0},
        {"", RC_EINVAL, 0},
        {"2.0.0-rc.1", RC_EINVAL, 0},
        /* other near misses */
        {"1.1.0", RC_EINVAL, 0},
        {"0.0.0", RC_EINVAL, 0},
        {"1.0", RC_EINVAL, 0},
        {"2", RC_EINVAL, 0},
        {"2.0.", RC_EINVAL, 0},
        {"1.0.", RC_EINVAL, 0},
        {"2.0.x", RC_EINVAL, 0},
        {"2.0.0.0", RC_EINVAL, 0},
        {"2.0.0 ", RC_EINVAL, 0},
        {" 2.0.0", RC_EINVAL, 0},
        {"2.0.0\n", RC_EINVAL, 0},
        {"v2.0.0", RC_EINVAL, 0},
        {"20.0.0", RC_EINVAL, 0},
        {"12.0.0", RC_EINVAL, 0},
        {"2.00.0", RC_EINVAL, 0},
        {"02.0.0", RC_EINVAL, 0},
        {"2.0.-1", RC_EINVAL, 0},
        {"2.0.+1", RC_EINVAL, 0},
        {"2.0.0+build", RC_EINVAL, 0},
        /* Elixir's Version (which Phoenix uses) refuses leading zeros */
        {"2.0.00", RC_EINVAL, 0},
        {"2.0.01", RC_EINVAL, 0},
        {"1.0.007", RC_EINVAL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum codec_vsn got = (enum codec_vsn)0;
        int rc = codec_parse_vsn(cases[i].vsn, &got);
        if (rc != cases[i].rc)
            fail_msg("vsn \"%s\": rc %d, want %d", cases[i].vsn ? cases[i].vsn : "(null)", rc,
                     cases[i].rc);
        if (rc == 0 && got != cases[i].want)
            fail_msg("vsn \"%s\": got V%d, want V%d", cases[i].vsn ? cases[i].vsn : "(null)",
                     (int)got, (int)cases[i].want);
    }
}

/* ---- text decoding, golden files ---------------------------------------------------- */

struct text_golden {
    enum codec_vsn vsn;
    size_t ok, bad;
};

/* Checks one line of v1_frames.txt / v2_frames.txt. */
static void text_line(char **cols, size_t ncols, const char *where, void *arg)
{
    struct text_golden *g = arg;
    struct phx_in m;
    memset(&m, 0xab, sizeof m);
    int rc = decode_exact(g->vsn, cols[1], strlen(cols[1]), DEPTH, &m);
    if (strcmp(cols[0], "eproto") == 0) {
        assert_int_equal(ncols, 2);
        if (rc != RC_EPROTO)
            fail_msg("%s: rc %d, want RC_EPROTO for %s", where, rc, cols[1]);
        check_zeroed(&m, where);
        codec_in_cleanup(&m); /* harmless after an error */
        g->bad++;
        return;
    }
    assert_string_equal(cols[0], "ok");
    assert_int_equal(ncols, 7);
    if (rc != 0)
        fail_msg("%s: rc %d for %s", where, rc, cols[1]);
    check_ref(m.join_ref, cols[2], "join_ref", where);
    check_ref(m.ref, cols[3], "ref", where);
    check_topic(&m, cols[4], where);
    check_event(&m, cols[5], where);
    json_t *payload = load_json(cols[6], where);
    if (!m.payload || !json_equal(m.payload, payload))
        fail_msg("%s: payload differs from %s", where, cols[6]);
    json_decref(payload);
    assert_false(m.binary);
    assert_null(m.bin);
    assert_int_equal(m.bin_len, 0);
    assert_non_null(m._root);
    codec_in_cleanup(&m);
    check_zeroed(&m, where);
    g->ok++;
}

static void test_v2_golden(void **state)
{
    struct text_golden g = {CODEC_V2, 0, 0};
    for_each_line("v2_frames.txt", text_line, &g);
    /* guards against a truncated or mis-split file passing vacuously */
    assert_true(g.ok >= 50);
    assert_true(g.bad >= 30);
}

static void test_v1_golden(void **state)
{
    struct text_golden g = {CODEC_V1, 0, 0};
    for_each_line("v1_frames.txt", text_line, &g);
    assert_true(g.ok >= 17);
    assert_true(g.bad >= 18);
}

/* Checks that every proper prefix of an "ok" frame is refused. */
static void prefix_line(char **cols, size_t ncols, const char *where, void *arg)
{
    const struct text_golden *g = arg;
    if (strcmp(cols[0], "ok") != 0)
        return;
    size_t len = strlen(cols[1]);
    for (size_t k = 0; k < len; k++) {
        struct phx_in m;
        int rc = decode_exact(g->vsn, cols[1], k, DEPTH, &m);
        if (rc != RC_EPROTO)
            fail_msg("%s: prefix of %zu bytes gave rc %d", where, k, rc);
        check_zeroed(&m, where);
    }
}

static void test_text_truncations(void **state)
{
    struct text_golden g2 = {CODEC_V2, 0, 0}, g1 = {CODEC_V1, 0, 0};
    assert_true(for_each_line("v2_frames.txt", prefix_line, &g2) > 0);
    assert_true(for_each_line("v1_frames.txt", prefix_line, &g1) > 0);
}

/* ---- text decoding, specific rules -------------------------------------------------- */

static void test_v2_numeric_ref_and_topic(void **state)
{
    /* §11.2: ["9",2,"phoenix","heartbeat",{}] → reply [null,2,"phoenix","phx_reply",…] */
    const char *in = "[\"9\",2,\"phoenix\",\"heartbeat\",{}]";
    struct phx_in m;
    assert_int_equal(codec_decode_text(CODEC_V2, in, strlen(in), DEPTH, &m), 0);
    assert_true(json_is_integer(m.ref));
    char *ref = codec_ref_text(m.ref);
    assert_string_equal(ref, "2");
    struct sbuf out = SBUF_INIT;
    codec_encode_reply(CODEC_V2, &out, NULL, ref, m.topic_str, m.topic_len, "ok", "{}");
    check_sbuf(&out, "[null,2,\"phoenix\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]");
    free(ref);
    sbuf_cleanup(&out);
    codec_in_cleanup(&m);

    /* §2.1: a non-string topic is kept, topic_str is NULL */
    in = "[null,\"1\",5,\"heartbeat\",{}]";
    assert_int_equal(codec_decode_text(CODEC_V2, in, strlen(in), DEPTH, &m), 0);
    assert_true(json_is_integer(m.topic));
    assert_int_equal(json_integer_value(m.topic), 5);
    assert_null(m.topic_str);
    assert_int_equal(m.topic_len, 0);
    assert_string_equal(m.event, "heartbeat");
    codec_in_cleanup(&m);
}

static void test_text_whitespace_and_len(void **state)
{
    struct phx_in m;
    /* surrounding whitespace is allowed JSON, not trailing garbage */
    const char *ws = " \t\r\n[null,\"1\",\"phoenix\",\"heartbeat\",{}] \r\n";
    assert_int_equal(decode_exact(CODEC_V2, ws, strlen(ws), DEPTH, &m), 0);
    assert_string_equal(m.event, "heartbeat");
    codec_in_cleanup(&m);

    /* only len bytes are read: what follows is not trailing garbage */
    const char *more = "[null,\"1\",\"phoenix\",\"heartbeat\",{}]GARBAGE";
    size_t len = strlen(more) - strlen("GARBAGE");
    assert_int_equal(codec_decode_text(CODEC_V2, more, len, DEPTH, &m), 0);
    codec_in_cleanup(&m);
    assert_int_equal(codec_decode_text(CODEC_V2, more, strlen(more), DEPTH, &m), RC_EPROTO);

    /* a raw NUL byte after the document, and an empty frame */
    const char nul[] = "[null,\"1\",\"phoenix\",\"heartbeat\",{}]\0";
    assert_int_equal(decode_exact(CODEC_V2, nul, sizeof nul - 1, DEPTH, &m), RC_EPROTO);
    assert_int_equal(decode_exact(CODEC_V2, "", 0, DEPTH, &m), RC_EPROTO);
    assert_int_equal(decode_exact(CODEC_V1, "", 0, DEPTH, &m), RC_EPROTO);
    assert_int_equal(codec_decode_text(CODEC_V2, NULL, 0, DEPTH, &m), RC_EPROTO);

    /* invalid UTF-8 and raw control characters inside strings */
    const char bad8[] = "[null,\"1\",\"room:\xff\",\"ev\",{}]";
    assert_int_equal(decode_exact(CODEC_V2, bad8, sizeof bad8 - 1, DEPTH, &m), RC_EPROTO);
    const char ctl[] = "[null,\"1\",\"room\tx\",\"ev\",{}]";
    assert_int_equal(decode_exact(CODEC_V2, ctl, sizeof ctl - 1, DEPTH, &m), RC_EPROTO);
    check_zeroed(&m, "control character");
}

static void test_decode_error_clears_out(void **state)
{
    struct phx_in m;
    const char *cases[] = {
        "[null,\"1\",\"phoenix\",5,{}]",     /* wrong shape after a successful parse */
        "{\"topic\":\"t\",\"event\":\"e\"}", /* object on V2 */
        "[",                                 /* not JSON */
    };
    for (size_t i = 0; i < 3; i++) {
        memset(&m, 0x5a, sizeof m);
        assert_int_equal(codec_decode_text(CODEC_V2, cases[i], strlen(cases[i]), DEPTH, &m),
                         RC_EPROTO);
        check_zeroed(&m, cases[i]);
    }
    memset(&m, 0x5a, sizeof m);
    const uint8_t kind1[] = {1, 0, 0, 0, 0};
    assert_int_equal(codec_decode_binary(CODEC_V2, kind1, sizeof kind1, 32, &m), RC_EPROTO);
    check_zeroed(&m, "binary kind 1");
}

static void test_cleanup_zeroed(void **state)
{
    struct phx_in m;
    memset(&m, 0, sizeof m);
    codec_in_cleanup(&m);
    codec_in_cleanup(NULL);
    const char *in = "[\"3\",\"3\",\"room:lobby\",\"phx_join\",{\"token\":\"xyz\"}]";
    assert_int_equal(codec_decode_text(CODEC_V2, in, strlen(in), DEPTH, &m), 0);
    codec_in_cleanup(&m);
    check_zeroed(&m, "after cleanup");
    codec_in_cleanup(&m); /* twice is harmless */
}

/* ---- depth limit -------------------------------------------------------------------- */

/* Returns a V2 frame whose total nesting (outer array included) is depth >= 2. */
static char *nested_frame(size_t depth)
{
    const char *head = "[null,\"1\",\"t\",\"e\",";
    size_t inner = depth - 1, n = strlen(head) + 2 * inner + 2;
    char *s = malloc(n);
    assert_non_null(s);
    size_t off = strlen(head);
    memcpy(s, head, off);
    for (size_t i = 0; i < inner; i++)
        s[off++] = '[';
    for (size_t i = 0; i < inner; i++)
        s[off++] = ']';
    s[off++] = ']';
    s[off] = '\0';
    return s;
}

/* Fails unless frame decodes with max_depth == depth and is refused with depth - 1. */
static void check_depth(enum codec_vsn vsn, const char *frame, size_t depth)
{
    struct phx_in m;
    int rc = decode_exact(vsn, frame, strlen(frame), depth, &m);
    if (rc != 0)
        fail_msg("depth %zu refused at max %zu: %s", depth, depth, frame);
    codec_in_cleanup(&m);
    rc = decode_exact(vsn, frame, strlen(frame), depth - 1, &m);
    if (rc != RC_EPROTO)
        fail_msg("depth %zu accepted at max %zu: %s", depth, depth - 1, frame);
    check_zeroed(&m, "depth");
}

static void test_depth_limit(void **state)
{
    static const size_t depths[] = {2, 3, 4, 16, 32, 100, 1000};
    for (size_t i = 0; i < sizeof depths / sizeof depths[0]; i++) {
        char *f = nested_frame(depths[i]);
        check_depth(CODEC_V2, f, depths[i]);
        free(f);
    }
    /* objects count like arrays */
    check_depth(CODEC_V2, "[null,\"1\",\"t\",\"e\",{\"a\":[{\"b\":{}}]}]", 5);
    check_depth(CODEC_V1, "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{\"a\":{}},\"ref\":null}",
                3);
    /* siblings do not add up */
    check_depth(CODEC_V2, "[null,\"1\",\"t\",\"e\",{\"a\":[[]],\"b\":[[]],\"c\":{\"d\":[]}}]", 4);
    /* brackets inside strings are ignored: values, topic, event and keys */
    check_depth(CODEC_V2, "[null,\"1\",\"t\",\"e\",{\"s\":\"[[[[{{{{\"}]", 2);
    check_depth(CODEC_V2, "[\"[[\",\"{{\",\"room:[[[\",\"{{{\",{\"[[[[\":\"]]]]}}}}\"}]", 2);
    check_depth(CODEC_V2, "[null,\"1\",\"t\",\"e\",{\"s\":\"]]]]]][\"}]", 2);
    /* an escaped quote does not end the string */
    check_depth(CODEC_V2, "[null,\"1\",\"t\",\"e\",{\"s\":\"\\\"[[[[\\\"{{\"}]", 2);
    check_depth(CODEC_V2, "[null,\"1\",\"t\\\"[[[\",\"e\",{}]", 2);
    /* an escaped backslash does: the brackets after it count */
    check_depth(CODEC_V2, "[null,\"1\",\"t\",\"e\",{\"s\":\"a\\\\\",\"t\":[[]]}]", 4);
    check_depth(CODEC_V2, "[null,\"1\",\"t\",\"e\",{\"s\":\"\\\\\\\\\",\"t\":[[]]}]", 4);
    /* other escapes are skipped as a whole byte pair */
    check_depth(CODEC_V2, "[null,\"1\",\"t\",\"e\",{\"s\":\"\\u005b\\n[\"}]", 2);

    /* max_depth 0 refuses everything; refusal does not depend on valid JSON */
    struct phx_in m;
    const char *hb = "[null,\"1\",\"phoenix\",\"heartbeat\",{}]";
    assert_int_equal(decode_exact(CODEC_V2, hb, strlen(hb), 0, &m), RC_EPROTO);
    assert_int_equal(decode_exact(CODEC_V2, "[[[[[[[[", 8, 3, &m), RC_EPROTO);
}

static size_t alloc_count;

/* Counting allocator for jansson. */
static void *counting_malloc(size_t n)
{
    alloc_count++;
    return malloc(n);
}

static void test_depth_refused_before_parsing(void **state)
{
    /* jansson allocates for any parse; a refused deep frame must not reach it */
    char *f = nested_frame(200);
    struct phx_in m;
    json_set_alloc_funcs(counting_malloc, free);
    alloc_count = 0;
    int rc = codec_decode_text(CODEC_V2, f, strlen(f), 199, &m);
    size_t refused_allocs = alloc_count;
    alloc_count = 0;
    int rc2 = codec_decode_text(CODEC_V2, f, strlen(f), 200, &m);
    size_t parsed_allocs = alloc_count;
    if (rc2 == 0)
        codec_in_cleanup(&m);
    json_set_alloc_funcs(malloc, free);
    free(f);
    assert_int_equal(rc, RC_EPROTO);
    assert_int_equal(refused_allocs, 0);
    assert_int_equal(rc2, 0);
    assert_true(parsed_allocs > 0); /* the counter works */
}

/* ---- binary decoding ---------------------------------------------------------------- */

struct bin_golden {
    size_t ok, bad;
};

/* Checks one line of binary_frames.txt. */
static void bin_line(char **cols, size_t ncols, const char *where, void *arg)
{
    struct bin_golden *g = arg;
    size_t len;
    uint8_t *data = parse_hex(cols[1], &len);
    struct phx_in m;
    memset(&m, 0xab, sizeof m);
    int rc = codec_decode_binary(CODEC_V2, data, len, 32, &m);
    if (strcmp(cols[0], "eproto") == 0) {
        assert_int_equal(ncols, 2);
        if (rc != RC_EPROTO)
            fail_msg("%s: rc %d, want RC_EPROTO", where, rc);
        check_zeroed(&m, where);
        free(data);
        g->bad++;
        return;
    }
    assert_string_equal(cols[0], "ok");
    assert_int_equal(ncols, 7);
    if (rc != 0)
        fail_msg("%s: rc %d", where, rc);
    check_ref(m.join_ref, cols[2], "join_ref", where);
    check_ref(m.ref, cols[3], "ref", where);
    check_topic(&m, cols[4], where);
    check_event(&m, cols[5], where);
    assert_true(m.binary);
    assert_null(m.payload);
    size_t plen;
    uint8_t *payload = parse_hex(cols[6], &plen);
    if (m.bin_len != plen || (plen && memcmp(m.bin, payload, plen) != 0))
        fail_msg("%s: payload differs", where);
    /* the payload is a view into the frame, ending where the frame ends */
    assert_ptr_equal(m.bin + m.bin_len, data + len);
    free(payload);
    codec_in_cleanup(&m);
    check_zeroed(&m, where);
    free(data);
    g->ok++;
}

static void test_binary_golden(void **state)
{
    struct bin_golden g = {0, 0};
    for_each_line("binary_frames.txt", bin_line, &g);
    assert_true(g.ok >= 10);
    assert_true(g.bad >= 20);
}

/* Decodes every prefix of an "ok" frame: short of the fields → refused, else a shorter
 * payload. */
static void bin_prefix_line(char **cols, size_t ncols, const char *where, void *arg)
{
    size_t *frames = arg;
    if (strcmp(cols[0], "ok") != 0)
        return;
    size_t len;
    uint8_t *data = parse_hex(cols[1], &len);
    size_t fields_end = 5 + (size_t)data[1] + data[2] + data[3] + data[4];
    for (size_t k = 0; k <= len; k++) {
        uint8_t *copy = malloc(k ? k : 1);
        assert_non_null(copy);
        memcpy(copy, data, k);
        struct phx_in m;
        int rc = codec_decode_binary(CODEC_V2, copy, k, 32, &m);
        if (k < fields_end) {
            if (rc != RC_EPROTO)
                fail_msg("%s: %zu-byte prefix gave rc %d", where, k, rc);
            check_zeroed(&m, where);
        } else {
            if (rc != 0)
                fail_msg("%s: %zu-byte prefix refused", where, k);
            assert_int_equal(m.bin_len, k - fields_end);
            assert_ptr_equal(m.bin, copy + fields_end);
            codec_in_cleanup(&m);
        }
        free(copy);
    }
    free(data);
    (*frames)++;
}

static void test_binary_truncations(void **state)
{
    size_t frames = 0;
    for_each_line("binary_frames.txt", bin_prefix_line, &frames);
    assert_true(frames >= 10);
}

static void test_binary_refusals(void **state)
{
    /* §3.1 example */
    static const uint8_t ex[] = {0x00, 0x02, 0x02, 0x06, 0x03, 0x31, 0x32, 0x31, 0x33, 0x72, 0x6f,
                                 0x6f, 0x6d, 0x3a, 0x31, 0x69, 0x6d, 0x67, 0x01, 0x02, 0x03};
    struct phx_in m;
    assert_int_equal(codec_decode_binary(CODEC_V2, ex, sizeof ex, 32, &m), 0);
    codec_in_cleanup(&m);
    /* V1 has no binary frames (§2.2) */
    assert_int_equal(codec_decode_binary(CODEC_V1, ex, sizeof ex, 32, &m), RC_EPROTO);
    check_zeroed(&m, "V1");
    /* empty frame */
    assert_int_equal(codec_decode_binary(CODEC_V2, NULL, 0, 32, &m), RC_EPROTO);
    assert_int_equal(codec_decode_binary(CODEC_V2, ex, 0, 32, &m), RC_EPROTO);
    /* every kind but 0, with an otherwise valid layout (as kind 3, its encoding byte is
     * 0x31: unknown) */
    uint8_t copy[sizeof ex];
    memcpy(copy, ex, sizeof ex);
    for (unsigned kind = 1; kind <= 255; kind++) {
        copy[0] = (uint8_t)kind;
        if (codec_decode_binary(CODEC_V2, copy, sizeof copy, 32, &m) != RC_EPROTO)
            fail_msg("kind %u accepted", kind);
    }
}

static void test_binary_utf8(void **state)
{
    static const struct {
        const char *bytes;
        size_t len;
        int rc;
    } cases[] = {
        {"\xff", 1, RC_EPROTO},
        {"\x80", 1, RC_EPROTO},
        {"\xc0\x80", 2, RC_EPROTO},         /* overlong NUL */
        {"\xc1\xbf", 2, RC_EPROTO},         /* overlong */
        {"\xe0\x80\xaf", 3, RC_EPROTO},     /* overlong */
        {"\xed\xa0\x80", 3, RC_EPROTO},     /* surrogate */
        {"\xe2\x82", 2, RC_EPROTO},         /* truncated */
        {"\xf4\x90\x80\x80", 4, RC_EPROTO}, /* above U+10FFFF */
        {"ab\xf0\x9f\x98", 5, RC_EPROTO},   /* truncated at the end of the field */
        {"a\0b", 3, RC_EPROTO},             /* NUL (see codec.h) */
        {"\xc3\xa9", 2, 0},                 /* é */
        {"\xe2\x82\xac", 3, 0},             /* € */
        {"\xf0\x9f\x98\x80", 4, 0},         /* 😀 */
        {"\xf4\x8f\xbf\xbf", 4, 0},         /* U+10FFFF */
        {"plain", 5, 0},
    };
    const uint8_t *base[4] = {(const uint8_t *)"1", (const uint8_t *)"2", (const uint8_t *)"room:1",
                              (const uint8_t *)"img"};
    const size_t base_len[4] = {1, 1, 6, 3};
    static const uint8_t payload[] = {0xff, 0x00};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int field = 0; field < 4; field++) {
            const uint8_t *f[4];
            size_t fl[4];
            memcpy(f, base, sizeof f);
            memcpy(fl, base_len, sizeof fl);
            f[field] = (const uint8_t *)cases[c].bytes;
            fl[field] = cases[c].len;
            size_t len;
            uint8_t *frame = make_push(f, fl, payload, sizeof payload, &len);
            struct phx_in m;
            int rc = codec_decode_binary(CODEC_V2, frame, len, 32, &m);
            if (rc != cases[c].rc)
                fail_msg("case %zu in field %d: rc %d, want %d", c, field, rc, cases[c].rc);
            if (rc == 0) {
                const json_t *v = field == 0   ? m.join_ref
                                  : field == 1 ? m.ref
                                  : field == 2 ? m.topic
                                               : NULL;
                const char *s = field == 3 ? m.event : json_string_value(v);
                assert_non_null(s);
                assert_int_equal(strlen(s), cases[c].len);
                assert_memory_equal(s, cases[c].bytes, cases[c].len);
                assert_int_equal(m.bin_len, sizeof payload);
                codec_in_cleanup(&m);
            } else {
                check_zeroed(&m, "utf8");
            }
            free(frame);
        }
    }
}

static void test_binary_heartbeat_text_reply(void **state)
{
    /* §11.7: binary heartbeat, jr empty → reply [null,"8","phoenix","phx_reply",…] */
    static const uint8_t hb[] = {0x00, 0x00, 0x01, 0x07, 0x09, 0x38, 0x70, 0x68, 0x6f, 0x65, 0x6e,
                                 0x69, 0x78, 0x68, 0x65, 0x61, 0x72, 0x74, 0x62, 0x65, 0x61, 0x74};
    struct phx_in m;
    assert_int_equal(codec_decode_binary(CODEC_V2, hb, sizeof hb, 32, &m), 0);
    assert_null(m.join_ref);
    char *jr = codec_ref_text(m.join_ref);
    char *ref = codec_ref_text(m.ref);
    assert_null(jr);
    assert_string_equal(ref, "\"8\"");
    assert_string_equal(m.event, "heartbeat");
    assert_int_equal(m.bin_len, 0);
    struct sbuf out = SBUF_INIT;
    codec_encode_reply(CODEC_V2, &out, jr, ref, m.topic_str, m.topic_len, "ok", "{}");
    check_sbuf(&out, "[null,\"8\",\"phoenix\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]");
    free(ref);
    sbuf_cleanup(&out);
    codec_in_cleanup(&m);
}

/* ---- codec_ref_text ----------------------------------------------------------------- */

static void test_ref_text(void **state)
{
    assert_null(codec_ref_text(NULL));
    assert_null(codec_ref_text(json_null()));
    static const char *texts[] = {
        "\"3\"",
        "2",
        "-7",
        "true",
        "false",
        "\"\"",
        "{\"a\":[1,null]}",
        "[1,\"x\"]",
        "\"a\\\"b\\\\c\\n\"",
        "\"é😀\"",
        "\"a/b\"",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        json_t *v = json_loads(texts[i], JSON_DECODE_ANY, NULL);
        assert_non_null(v);
        char *got = codec_ref_text(v);
        assert_non_null(got);
        if (strcmp(got, texts[i]) != 0)
            fail_msg("ref %s serialized as %s", texts[i], got);
        free(got);
        json_decref(v);
    }
}

/* ---- text encoding ------------------------------------------------------------------ */

struct enc_golden {
    enum codec_vsn vsn;
    size_t replies, others;
};

/* Decodes one line of v1_encode.txt / v2_encode.txt and re-encodes it. */
static void enc_line(char **cols, size_t ncols, const char *where, void *arg)
{
    struct enc_golden *g = arg;
    assert_int_equal(ncols, 1);
    const char *line = cols[0];
    struct phx_in m;
    if (codec_decode_text(g->vsn, line, strlen(line), DEPTH, &m) != 0)
        fail_msg("%s: does not decode", where);
    assert_non_null(m.topic_str);
    char *jr = codec_ref_text(m.join_ref);
    char *ref = codec_ref_text(m.ref);
    struct sbuf out = SBUF_INIT;
    if (strcmp(m.event, "phx_reply") == 0) {
        json_t *status = json_object_get(m.payload, "status");
        json_t *response = json_object_get(m.payload, "response");
        assert_true(json_is_string(status));
        assert_non_null(response);
        assert_int_equal(json_object_size(m.payload), 2);
        char *resp = json_dumps(response, JSON_COMPACT | JSON_ENCODE_ANY);
        codec_encode_reply(g->vsn, &out, jr, ref, m.topic_str, m.topic_len,
                           json_string_value(status), resp);
        free(resp);
        g->replies++;
    } else {
        char *payload = json_dumps(m.payload, JSON_COMPACT | JSON_ENCODE_ANY);
        codec_encode(g->vsn, &out, jr, ref, m.topic_str, m.topic_len, m.event, payload,
                     strlen(payload));
        free(payload);
        g->others++;
    }
    if (out.len != strlen(line) || memcmp(out.data, line, out.len) != 0)
        fail_msg("%s:\n  want %s\n  got  %.*s", where, line, (int)out.len, out.data);
    sbuf_cleanup(&out);
    free(jr);
    free(ref);
    codec_in_cleanup(&m);
}

static void test_encode_v2_golden(void **state)
{
    struct enc_golden g = {CODEC_V2, 0, 0};
    for_each_line("v2_encode.txt", enc_line, &g);
    assert_true(g.replies >= 25);
    assert_true(g.others >= 15);
}

static void test_encode_v1_golden(void **state)
{
    struct enc_golden g = {CODEC_V1, 0, 0};
    for_each_line("v1_encode.txt", enc_line, &g);
    assert_true(g.replies >= 8);
    assert_true(g.others >= 5);
}

static void test_encode_v2_exact(void **state)
{
    struct sbuf out = SBUF_INIT;
    codec_encode_reply(CODEC_V2, &out, "\"3\"", "\"3\"", "room:lobby", 10, "ok", "{}");
    check_sbuf(&out,
               "[\"3\",\"3\",\"room:lobby\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]");
    sbuf_reset(&out);
    codec_encode_reply(CODEC_V2, &out, NULL, "\"14\"", "nope:1", 6, "error",
                       "{\"reason\":\"unmatched topic\"}");
    check_sbuf(&out, "[null,\"14\",\"nope:1\",\"phx_reply\",{\"response\":{\"reason\":"
                     "\"unmatched topic\"},\"status\":\"error\"}]");
    sbuf_reset(&out);
    const char *p = "{\"body\":\"hi\",\"user\":\"ann\"}";
    codec_encode(CODEC_V2, &out, NULL, NULL, "room:lobby", 10, "new_msg", p, strlen(p));
    check_sbuf(&out, "[null,null,\"room:lobby\",\"new_msg\",{\"body\":\"hi\",\"user\":\"ann\"}]");
    sbuf_reset(&out);
    p = "{\"messages\":[]}";
    codec_encode(CODEC_V2, &out, "\"3\"", NULL, "room:lobby", 10, "message_history", p, strlen(p));
    check_sbuf(&out, "[\"3\",null,\"room:lobby\",\"message_history\",{\"messages\":[]}]");
    sbuf_reset(&out);
    /* phx_close carries ref = jr; numeric refs are echoed as numbers */
    codec_encode(CODEC_V2, &out, "23", "23", "room:x", 6, "phx_close", "{}", 2);
    check_sbuf(&out, "[23,23,\"room:x\",\"phx_close\",{}]");
    sbuf_reset(&out);
    /* topic_len is honoured; payload_len too */
    codec_encode(CODEC_V2, &out, NULL, NULL, "room:lobbyXYZ", 10, "ev", "{\"a\":1}JUNK", 7);
    check_sbuf(&out, "[null,null,\"room:lobby\",\"ev\",{\"a\":1}]");
    sbuf_reset(&out);
    /* no payload / no response means {} */
    codec_encode(CODEC_V2, &out, NULL, NULL, "t", 1, "ev", NULL, 0);
    check_sbuf(&out, "[null,null,\"t\",\"ev\",{}]");
    sbuf_reset(&out);
    codec_encode_reply(CODEC_V2, &out, NULL, "\"1\"", "t", 1, "ok", NULL);
    check_sbuf(&out, "[null,\"1\",\"t\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]");
    sbuf_cleanup(&out);
}

static void test_encode_v1_exact(void **state)
{
    struct sbuf out = SBUF_INIT;
    /* a join_ref given to a V1 encode never appears (§2.2) */
    codec_encode_reply(CODEC_V1, &out, "\"1\"", "\"1\"", "room:lobby", 10, "ok", "{}");
    check_sbuf(&out, "{\"event\":\"phx_reply\",\"payload\":{\"response\":{},\"status\":\"ok\"},"
                     "\"ref\":\"1\",\"topic\":\"room:lobby\"}");
    sbuf_reset(&out);
    codec_encode(CODEC_V1, &out, "\"3\"", NULL, "room:lobby", 10, "new_msg", "{\"body\":\"hi\"}",
                 13);
    check_sbuf(&out, "{\"event\":\"new_msg\",\"payload\":{\"body\":\"hi\"},\"ref\":null,"
                     "\"topic\":\"room:lobby\"}");
    sbuf_reset(&out);
    /* phx_close: the caller passes ref = jr */
    codec_encode(CODEC_V1, &out, "\"1\"", "\"1\"", "room:lobby", 10, "phx_close", "{}", 2);
    check_sbuf(&out,
               "{\"event\":\"phx_close\",\"payload\":{},\"ref\":\"1\",\"topic\":\"room:lobby\"}");
    assert_null(strstr(out.data, "join_ref"));
    sbuf_cleanup(&out);
}

static void test_encode_appends(void **state)
{
    struct sbuf out = SBUF_INIT;
    sbuf_adds(&out, "X");
    codec_encode(CODEC_V2, &out, NULL, NULL, "t", 1, "e", "{}", 2);
    codec_encode_reply(CODEC_V1, &out, NULL, "1", "t", 1, "ok", "{}");
    check_sbuf(&out, "X[null,null,\"t\",\"e\",{}]{\"event\":\"phx_reply\",\"payload\":"
                     "{\"response\":{},\"status\":\"ok\"},\"ref\":1,\"topic\":\"t\"}");
    sbuf_cleanup(&out);
}

static void test_encode_escaping(void **state)
{
    /* quotes, backslashes and control characters in topic, event and status; NUL via
     * topic_len; non-ASCII and '/' pass through */
    const char topic[] = "a\"b\\c\n\t\r\x01\x1f\xc3\xa9/\0z";
    size_t topic_len = sizeof topic - 1;
    struct sbuf out = SBUF_INIT;
    codec_encode(CODEC_V2, &out, "\"1\"", NULL, topic, topic_len, "e\"v\\\x7f", "{}", 2);
    check_sbuf(&out, "[\"1\",null,\"a\\\"b\\\\c\\n\\t\\r\\u0001\\u001f\xc3\xa9/\\u0000z\","
                     "\"e\\\"v\\\\\x7f\",{}]");
    sbuf_reset(&out);
    codec_encode(CODEC_V1, &out, NULL, NULL, "q\"", 2, "\\", "{}", 2);
    check_sbuf(&out, "{\"event\":\"\\\\\",\"payload\":{},\"ref\":null,\"topic\":\"q\\\"\"}");
    sbuf_reset(&out);
    codec_encode_reply(CODEC_V2, &out, NULL, NULL, "t", 1, "o\"k\n", "{}");
    check_sbuf(&out, "[null,null,\"t\",\"phx_reply\",{\"response\":{},\"status\":\"o\\\"k\\n\"}]");
    sbuf_reset(&out);

    /* what we write, jansson reads back to the same bytes (without the NUL) */
    const char topic2[] = "a\"b\\c\n\t\r\x01\x1f\xc3\xa9/z";
    codec_encode(CODEC_V2, &out, NULL, NULL, topic2, sizeof topic2 - 1, "e\"v\\", "{}", 2);
    struct phx_in m;
    assert_int_equal(codec_decode_text(CODEC_V2, out.data, out.len, DEPTH, &m), 0);
    assert_int_equal(m.topic_len, sizeof topic2 - 1);
    assert_memory_equal(m.topic_str, topic2, sizeof topic2 - 1);
    assert_string_equal(m.event, "e\"v\\");
    codec_in_cleanup(&m);
    sbuf_cleanup(&out);
}

/* ---- binary encoding ---------------------------------------------------------------- */

/* Returns the JSON string column as a malloc'd C string, NULL for `null`. */
static char *str_col(const char *col, const char *where)
{
    if (strcmp(col, "null") == 0)
        return NULL;
    json_t *v = load_json(col, where);
    assert_true(json_is_string(v));
    char *s = strdup(json_string_value(v));
    json_decref(v);
    return s;
}

/* Checks one line of binary_encode.txt. */
static void bin_enc_line(char **cols, size_t ncols, const char *where, void *arg)
{
    size_t *count = arg;
    assert_int_equal(ncols, 7);
    char *jr = str_col(cols[1], where), *ref = str_col(cols[2], where);
    char *topic = str_col(cols[3], where), *ev = str_col(cols[4], where);
    size_t plen, wlen;
    uint8_t *payload = parse_hex(cols[5], &plen);
    uint8_t *want = parse_hex(cols[6], &wlen);
    struct sbuf out = SBUF_INIT;
    int rc;
    if (strcmp(cols[0], "push") == 0) {
        assert_null(ref);
        rc = codec_encode_binary_push(&out, jr, topic, ev, payload, plen);
    } else if (strcmp(cols[0], "reply") == 0) {
        rc = codec_encode_binary_reply(&out, jr, ref, topic, ev, payload, plen);
    } else {
        assert_string_equal(cols[0], "broadcast");
        assert_null(jr);
        assert_null(ref);
        rc = codec_encode_binary_broadcast(&out, topic, ev, payload, plen);
    }
    if (rc != 0)
        fail_msg("%s: rc %d", where, rc);
    if (out.len != wlen || memcmp(out.data, want, wlen) != 0)
        fail_msg("%s: encoded frame differs", where);
    sbuf_cleanup(&out);
    free(jr);
    free(ref);
    free(topic);
    free(ev);
    free(payload);
    free(want);
    (*count)++;
}

static void test_binary_encode_golden(void **state)
{
    size_t count = 0;
    for_each_line("binary_encode.txt", bin_enc_line, &count);
    assert_true(count >= 6);
}

static void test_binary_encode_limits(void **state)
{
    char f255[256], f256[257];
    memset(f255, 'a', 255);
    f255[255] = '\0';
    memset(f256, 'b', 256);
    f256[256] = '\0';
    static const uint8_t pl[] = {1, 2};
    struct sbuf out = SBUF_INIT;
    sbuf_adds(&out, "keep");

    /* 256 bytes in any field: RC_EINVAL, nothing appended */
    assert_int_equal(codec_encode_binary_push(&out, f256, "t", "e", pl, 2), RC_EINVAL);
    assert_int_equal(codec_encode_binary_push(&out, "1", f256, "e", pl, 2), RC_EINVAL);
    assert_int_equal(codec_encode_binary_push(&out, "1", "t", f256, pl, 2), RC_EINVAL);
    assert_int_equal(codec_encode_binary_reply(&out, f256, "1", "t", "ok", pl, 2), RC_EINVAL);
    assert_int_equal(codec_encode_binary_reply(&out, "1", f256, "t", "ok", pl, 2), RC_EINVAL);
    assert_int_equal(codec_encode_binary_reply(&out, "1", "1", f256, "ok", pl, 2), RC_EINVAL);
    assert_int_equal(codec_encode_binary_reply(&out, "1", "1", "t", f256, pl, 2), RC_EINVAL);
    assert_int_equal(codec_encode_binary_broadcast(&out, f256, "e", pl, 2), RC_EINVAL);
    assert_int_equal(codec_encode_binary_broadcast(&out, "t", f256, pl, 2), RC_EINVAL);
    check_sbuf(&out, "keep");

    /* 255 bytes fit, in every field at once; the payload has no limit */
    size_t big = 100000;
    uint8_t *bp = malloc(big);
    assert_non_null(bp);
    memset(bp, 0xee, big);
    sbuf_reset(&out);
    assert_int_equal(codec_encode_binary_reply(&out, f255, f255, f255, f255, bp, big), 0);
    assert_int_equal(out.len, 5 + 4 * 255 + big);
    const uint8_t *o = (const uint8_t *)out.data;
    assert_int_equal(o[0], 1);
    for (int i = 1; i <= 4; i++)
        assert_int_equal(o[i], 255);
    assert_memory_equal(o + 5, f255, 255);
    assert_memory_equal(o + 5 + 3 * 255, f255, 255);
    assert_memory_equal(o + 5 + 4 * 255, bp, big);
    sbuf_reset(&out);
    assert_int_equal(codec_encode_binary_push(&out, f255, f255, f255, pl, 2), 0);
    assert_int_equal(out.len, 4 + 3 * 255 + 2);
    sbuf_reset(&out);
    assert_int_equal(codec_encode_binary_broadcast(&out, f255, f255, pl, 2), 0);
    assert_int_equal(out.len, 3 + 2 * 255 + 2);
    free(bp);
    sbuf_cleanup(&out);
}

static void test_binary_encode_appends(void **state)
{
    struct sbuf out = SBUF_INIT;
    static const uint8_t a[] = {0xaa};
    assert_int_equal(codec_encode_binary_broadcast(&out, "t", "e", a, 1), 0);
    assert_int_equal(codec_encode_binary_push(&out, NULL, "t", "e", NULL, 0), 0);
    assert_int_equal(codec_encode_binary_reply(&out, NULL, "9", "t", "ok", NULL, 0), 0);
    static const uint8_t want[] = {0x02, 1, 1, 't', 'e', 0xaa,                 /* broadcast */
                                   0x00, 0, 1, 1,   't', 'e',                  /* push */
                                   0x01, 0, 1, 1,   2,   '9',  't', 'o', 'k'}; /* reply */
    assert_int_equal(out.len, sizeof want);
    assert_memory_equal(out.data, want, sizeof want);
    sbuf_cleanup(&out);
}

/* A kind-3 frame: the header, then join_ref, ref, topic, user event, metadata, payload. */
static size_t user_push(uint8_t *out, const char *jr, const char *ref, const char *topic,
                        const char *ev, const char *meta, uint8_t enc, const char *payload,
                        size_t plen)
{
    const char *f[5] = {jr, ref, topic, ev, meta};
    size_t n = 7;
    out[0] = 3;
    for (int i = 0; i < 5; i++)
        out[1 + i] = (uint8_t)strlen(f[i]);
    out[6] = enc;
    for (int i = 0; i < 5; i++) {
        memcpy(out + n, f[i], strlen(f[i]));
        n += strlen(f[i]);
    }
    memcpy(out + n, payload, plen);
    return n + plen;
}

static void test_user_push_decode(void **state)
{
    uint8_t fr[256];
    struct phx_in m;
    size_t n = user_push(fr, "1", "7", "realtime:lobby", "cursor", "{\"persist\":true}", 1,
                         "{\"x\":1}", 7);
    assert_int_equal(codec_decode_binary(CODEC_V2, fr, n, 32, &m), 0);
    assert_true(m.user_broadcast);
    assert_false(m.binary);
    assert_string_equal(json_string_value(m.join_ref), "1");
    assert_string_equal(json_string_value(m.ref), "7");
    assert_string_equal(m.topic_str, "realtime:lobby");
    assert_string_equal(m.event, "broadcast");
    char *text = json_dumps(m.payload, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(text,
                        "{\"event\":\"cursor\",\"payload\":{\"x\":1},\"persist\":true,"
                        "\"type\":\"broadcast\"}");
    free(text);
    codec_in_cleanup(&m);

    /* no refs, no metadata, any JSON value; metadata never overrides the message */
    n = user_push(fr, "", "", "realtime:a", "e", "{\"event\":\"x\",\"type\":1}", 1, "[1,2]", 5);
    assert_int_equal(codec_decode_binary(CODEC_V2, fr, n, 32, &m), 0);
    assert_null(m.join_ref);
    assert_null(m.ref);
    text = json_dumps(m.payload, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(text, "{\"event\":\"e\",\"payload\":[1,2],\"type\":\"broadcast\"}");
    free(text);
    codec_in_cleanup(&m);

    /* a binary payload stays bytes */
    n = user_push(fr, "1", "2", "realtime:a", "blob", "", 0, "\x00\x01\xff", 3);
    assert_int_equal(codec_decode_binary(CODEC_V2, fr, n, 32, &m), 0);
    assert_true(m.user_broadcast);
    assert_true(m.binary);
    assert_int_equal(m.bin_len, 3);
    assert_memory_equal(m.bin, "\x00\x01\xff", 3);
    assert_null(json_object_get(m.payload, "payload"));
    assert_string_equal(json_string_value(json_object_get(m.payload, "event")), "blob");
    codec_in_cleanup(&m);
}

static void test_user_push_refusals(void **state)
{
    uint8_t fr[256];
    struct phx_in m;
    size_t n = user_push(fr, "1", "2", "realtime:a", "e", "", 1, "{}", 2);
    assert_int_equal(codec_decode_binary(CODEC_V1, fr, n, 32, &m), RC_EPROTO);
    check_zeroed(&m, "V1");
    for (size_t k = 0; k < n - 2; k++) /* every truncation before the payload */
        if (codec_decode_binary(CODEC_V2, fr, k, 32, &m) != RC_EPROTO)
            fail_msg("truncated to %zu accepted", k);
    static const struct {
        const char *meta;
        uint8_t enc;
        const char *payload;
        const char *why;
    } bad[] = {
        {"", 2, "{}", "unknown encoding"},
        {"[1]", 1, "{}", "metadata not an object"},
        {"{", 1, "{}", "metadata not JSON"},
        {"", 1, "{\"a\":", "payload not JSON"},
        {"", 1, "", "empty JSON payload"},
        {"", 1, "\"\\u0000\"", "NUL in the payload"},
        {"", 1, "[[[[[[[[[[]]]]]]]]]]", "payload too deep"},
        {"{\"a\":[[[[[[[[[[]]]]]]]]]]}", 1, "{}", "metadata too deep"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        n = user_push(fr, "1", "2", "realtime:a", "e", bad[i].meta, bad[i].enc, bad[i].payload,
                      strlen(bad[i].payload));
        if (codec_decode_binary(CODEC_V2, fr, n, 8, &m) != RC_EPROTO)
            fail_msg("accepted: %s", bad[i].why);
        check_zeroed(&m, bad[i].why);
    }
    n = user_push(fr, "1", "2", "realtime:a", "e\xff", "", 1, "{}", 2);
    assert_int_equal(codec_decode_binary(CODEC_V2, fr, n, 32, &m), RC_EPROTO);
    n = user_push(fr, "1", "2", "realtime:a", "", "", 1, "{}", 2);
    fr[7 + 2] = 0; /* a NUL in the topic */
    assert_int_equal(codec_decode_binary(CODEC_V2, fr, n, 32, &m), RC_EPROTO);
}

static size_t oom_at, oom_calls;
static long oom_live;

/* jansson allocator failing its oom_at-th call, counting what is live. */
static void *oom_malloc(size_t n)
{
    if (++oom_calls == oom_at)
        return NULL;
    void *p = malloc(n);
    if (p)
        oom_live++;
    return p;
}

/* Its free. */
static void oom_free(void *p)
{
    if (p)
        oom_live--;
    free(p);
}

/* Out of memory at every allocation of a kind-3 decode: an error (jansson reports some
 * of its failures as bad JSON, hence RC_EPROTO too), *out zeroed and nothing kept, until
 * enough memory gives the full message. */
static void test_user_push_oom(void **state)
{
    uint8_t fr[256];
    size_t n = user_push(fr, "1", "2", "realtime:a", "cursor", "{\"persist\":true}", 1,
                         "{\"x\":[1,{\"y\":\"z\"}]}", 19);
    json_set_alloc_funcs(oom_malloc, oom_free);
    int rc = -1;
    size_t at;
    for (at = 1; rc != 0 && at < 1000; at++) {
        struct phx_in m;
        oom_at = at;
        oom_calls = 0;
        oom_live = 0;
        rc = codec_decode_binary(CODEC_V2, fr, n, 32, &m);
        size_t calls = oom_calls;
        oom_at = 0; /* checking needs memory */
        if (rc == 0) {
            char *text = json_dumps(m.payload, JSON_COMPACT | JSON_SORT_KEYS);
            if (!text || strcmp(text, "{\"event\":\"cursor\",\"payload\":{\"x\":[1,{\"y\":"
                                      "\"z\"}]},\"persist\":true,\"type\":\"broadcast\"}"))
                fail_msg("allocation %zu failed: got %s", at, text ? text : "(null)");
            oom_free(text);
            codec_in_cleanup(&m);
        } else if (calls < at || (rc != RC_ENOMEM && rc != RC_EPROTO)) {
            fail_msg("allocation %zu: rc %d after %zu allocations", at, rc, calls);
        } else if (m._root || m.payload || m.event || m.user_broadcast) {
            fail_msg("allocation %zu failed: out not zeroed", at);
        }
        if (oom_live != 0)
            fail_msg("allocation %zu failed: rc %d, %ld allocations kept", at, rc, oom_live);
    }
    json_set_alloc_funcs(malloc, free);
    assert_int_equal(rc, 0);
    assert_true(at > 10); /* the frame's decode allocates, so the failures were reached */
}

static void test_user_broadcast_encode(void **state)
{
    struct sbuf out = SBUF_INIT;
    assert_int_equal(codec_encode_user_broadcast(&out, "realtime:a", 10, "cursor", 6,
                                                 "{\"id\":\"4\"}", 10, true,
                                                 (const uint8_t *)"{\"x\":1}", 7),
                     0);
    static const char want[] = "\x04\x0a\x06\x0a\x01realtime:acursor{\"id\":\"4\"}{\"x\":1}";
    assert_int_equal(out.len, sizeof want - 1);
    assert_memory_equal(out.data, want, sizeof want - 1);
    sbuf_reset(&out);
    assert_int_equal(
        codec_encode_user_broadcast(&out, "t", 1, "e", 1, NULL, 0, false, (const uint8_t *)"\x00", 1),
        0);
    assert_int_equal(out.len, 8);
    assert_memory_equal(out.data, "\x04\x01\x01\x00\x00te\x00", 8);
    /* 255 bytes fit; 256 in any field is refused with nothing appended */
    char f256[257];
    memset(f256, 'a', 256);
    f256[256] = 0;
    sbuf_reset(&out);
    assert_int_equal(codec_encode_user_broadcast(&out, f256, 255, f256, 255, f256, 255, true,
                                                 (const uint8_t *)"1", 1),
                     0);
    assert_int_equal(out.len, 5 + 3 * 255 + 1);
    sbuf_reset(&out);
    assert_int_equal(codec_encode_user_broadcast(&out, f256, 256, "e", 1, NULL, 0, true,
                                                 (const uint8_t *)"1", 1),
                     RC_EINVAL);
    assert_int_equal(codec_encode_user_broadcast(&out, "t", 1, f256, 256, NULL, 0, true,
                                                 (const uint8_t *)"1", 1),
                     RC_EINVAL);
    assert_int_equal(codec_encode_user_broadcast(&out, "t", 1, "e", 1, f256, 256, true,
                                                 (const uint8_t *)"1", 1),
                     RC_EINVAL);
    assert_int_equal(out.len, 0);
    sbuf_cleanup(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vsn_table),
        cmocka_unit_test(test_v2_golden),
        cmocka_unit_test(test_v1_golden),
        cmocka_unit_test(test_text_truncations),
        cmocka_unit_test(test_v2_numeric_ref_and_topic),
        cmocka_unit_test(test_text_whitespace_and_len),
        cmocka_unit_test(test_decode_error_clears_out),
        cmocka_unit_test(test_cleanup_zeroed),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_depth_refused_before_parsing),
        cmocka_unit_test(test_binary_golden),
        cmocka_unit_test(test_binary_truncations),
        cmocka_unit_test(test_binary_refusals),
        cmocka_unit_test(test_binary_utf8),
        cmocka_unit_test(test_binary_heartbeat_text_reply),
        cmocka_unit_test(test_ref_text),
        cmocka_unit_test(test_encode_v2_golden),
        cmocka_unit_test(test_encode_v1_golden),
        cmocka_unit_test(test_encode_v2_exact),
        cmocka_unit_test(test_encode_v1_exact),
        cmocka_unit_test(test_encode_appends),
        cmocka_unit_test(test_encode_escaping),
        cmocka_unit_test(test_binary_encode_golden),
        cmocka_unit_test(test_binary_encode_limits),
        cmocka_unit_test(test_binary_encode_appends),
        cmocka_unit_test(test_user_push_decode),
        cmocka_unit_test(test_user_push_refusals),
        cmocka_unit_test(test_user_push_oom),
        cmocka_unit_test(test_user_broadcast_encode),
    };
    return cmocka_run_group_tests_name("codec", tests, NULL, NULL);
}
