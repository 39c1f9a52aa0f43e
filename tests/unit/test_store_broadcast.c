/* test_store_broadcast.c - broadcasts on a room's private channel in the store, cases of
 * the store suite (tests/unit/test_store, harness in store_test.h): each is a change of the
 * room's log with event "broadcast" and seq 0, takes the room's next version, reaches the
 * listener, is replayed to a member by version and by time, can be written with SQL, and
 * goes with the room. BROADCAST_CASES run against every backend. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>

#include "store.h"
#include "store_test.h"

/* The time of the backend's old_inserted_at, 2001-02-03T04:05:06.789Z, in ms. */
static int64_t old_ms(void)
{
    struct tm tm = {
        .tm_year = 101, .tm_mon = 1, .tm_mday = 3, .tm_hour = 4, .tm_min = 5, .tm_sec = 6};

    return (int64_t)timegm(&tm) * 1000 + 789;
}

/* A broadcast of event with payload data to room by user (NULL: the server). */
static struct store_req *bc_req(const char *room, const char *user, const char *event,
                                const char *data)
{
    return req_named(STORE_BROADCAST_ADD, room, user, event, data);
}

/* Sends a broadcast that must succeed; returns the version it took. */
static int64_t bc(struct fixture *f, const char *room, const char *user, const char *event,
                  const char *data)
{
    struct store_req *r = bc_req(room, user, event, data);
    int rc = run(f->s, r);

    if (rc)
        fail_msg("broadcast %s to %s: rc %d (%s)", event, room, rc, rc_strerror(rc));
    int64_t v = r->version;

    assert_true(v > 0);
    store_req_destroy(r);
    return v;
}

/* A BROADCAST_JOIN of room by user; the caller runs and frees it. */
static struct store_req *join_req(const char *room, const char *user, int64_t since_version,
                                  int64_t since_ms, int limit)
{
    struct store_req *r = req_page(STORE_BROADCAST_JOIN, room, user, -1, -1, limit);

    r->since_version = since_version;
    r->since_ms = since_ms;
    return r;
}

/* Runs a BROADCAST_JOIN that must succeed and asserts the versions it replays, in order
 * (want ends with 0); returns the request (the caller frees it). */
static struct store_req *joined(struct fixture *f, const char *user, int64_t since_version,
                                int64_t since_ms, int limit, const int64_t *want)
{
    struct store_req *r = join_req("lobby", user, since_version, since_ms, limit);
    int rc = run(f->s, r);

    if (rc)
        fail_msg("join by %s: rc %d (%s)", user, rc, rc_strerror(rc));
    size_t n = 0;

    while (want[n])
        n++;
    if (r->n_changes != n)
        fail_msg("join since v%lld / %lld ms, limit %d: %zu broadcasts, want %zu",
                 (long long)since_version, (long long)since_ms, limit, r->n_changes, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(r->changes[i].version, want[i]);
        assert_string_equal(r->changes[i].event, "broadcast");
        assert_string_equal(r->changes[i].room_id, "lobby");
        assert_int_equal(r->changes[i].seq, 0);
    }
    assert_int_equal(r->n_msgs, 0);
    return r;
}

/* The integer of member key of JSON object text, or -1 when it has none. */
static int64_t json_int_of(const char *text, const char *key)
{
    json_t *j = json_loads(text, 0, NULL);
    json_t *v = json_object_get(j, key);
    int64_t x = json_is_integer(v) ? json_integer_value(v) : -1;

    json_decref(j);
    return x;
}

/* Asserts a broadcast's payload as logged: {"event","payload","user_id","version"}, the
 * user's payload as the JSON text want_payload, user_id null for the server (user NULL). */
static void assert_payload(const char *payload, const char *event, const char *want_payload,
                           const char *user, int64_t version)
{
    json_error_t err;
    json_t *j = json_loads(payload, 0, &err);

    if (!json_is_object(j))
        fail_msg("payload is no JSON object (%s): %s", err.text, payload);
    assert_int_equal(json_object_size(j), 4);
    assert_string_equal(json_string_value(json_object_get(j, "event")), event);
    json_t *want = json_loads(want_payload, JSON_DECODE_ANY, NULL);

    assert_non_null(want);
    if (!json_equal(json_object_get(j, "payload"), want))
        fail_msg("payload %s, want its payload %s", payload, want_payload);
    json_decref(want);
    json_t *u = json_object_get(j, "user_id");

    if (user)
        assert_string_equal(json_string_value(u), user);
    else
        assert_true(json_is_null(u));
    assert_int_equal(json_integer_value(json_object_get(j, "version")), version);
    json_decref(j);
}

/* The room's version (ROOM_GET). */
static int64_t version_now(struct fixture *f, const char *room)
{
    struct store_req *r = req_room(STORE_ROOM_GET, room, NULL);

    assert_int_equal(run(f->s, r), 0);
    int64_t v = r->room.version;

    store_req_destroy(r);
    return v;
}

/* Waits until the listener has given n changes; fails after WAIT_MS. */
static void wait_n(struct fixture *f, size_t n)
{
    size_t got = wait_collected(&f->col, n, WAIT_MS);

    if (got < n)
        fail_msg("the listener got %zu changes, want %zu", got, n);
}

/* ---- cases ------------------------------------------------------------------------- */

/* A broadcast takes the room's next version, between the messages' ones; any JSON value is
 * a payload; no room, no event or a payload that is not JSON changes nothing. */
void test_broadcast_add(void **state)
{
    struct fixture *f = *state;
    static const char *const payloads[] = {"{\"n\":1}", "\"text\"", "42", "null", "[1,{}]", "true"};

    life_scene(f);
    assert_int_equal(bc(f, "lobby", "alice", "ping", "{\"n\":1}"), 1);
    assert_int_equal(bc(f, "lobby", NULL, "server", "{}"), 2);
    assert_int_equal(add_msg(f->s, "lobby", "bob", "hi"), 1);
    assert_int_equal(version_now(f, "lobby"), 3);
    assert_int_equal(bc(f, "lobby", "bob", "pong", "[]"), 4);
    assert_int_equal(bc(f, "other", "bob", "elsewhere", "{}"), 1);
    for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++)
        assert_int_equal(bc(f, "lobby", "alice", "any", payloads[i]), (int64_t)i + 5);

    run_expect(f->s, bc_req("nowhere", "alice", "ping", "{}"), RC_ENOTFOUND);
    run_expect(f->s, bc_req("lobby", "alice", "ping", "{\"n\":"), RC_EINVAL);
    run_expect(f->s, bc_req("lobby", "alice", "ping", "not json"), RC_EINVAL);
    run_expect(f->s, bc_req("lobby", "alice", "ping", NULL), RC_EINVAL);
    run_expect(f->s, bc_req("lobby", "alice", NULL, "{}"), RC_EINVAL);
    assert_int_equal(version_now(f, "lobby"), 10);
    assert_int_equal(
        ext_int(ext(f),
                "SELECT count(*) FROM room_changes WHERE room_id = 'lobby' AND event = 'broadcast'",
                NULL),
        9);
    /* the next message still takes the next seq and version */
    assert_int_equal(add_msg(f->s, "lobby", "bob", "after"), 2);
    assert_int_equal(version_now(f, "lobby"), 11);
}

/* The listener gets each broadcast once, in version order with the room's other changes,
 * as a change "broadcast" of no message, from its sender ('' for the server). */
void test_broadcast_listener(void **state)
{
    struct fixture *f = *state;
    struct collector *c = &f->col;

    life_scene(f);
    int64_t v1 = bc(f, "lobby", "alice", "ping", "{\"n\":1}");

    wait_n(f, 1);
    add_msg(f->s, "lobby", "bob", "between");
    int64_t v3 = bc(f, "lobby", NULL, "notice", "\"from the server\"");

    wait_n(f, 3);
    run_expect(f->s, bc_req("lobby", "alice", "ping", "{bad"), RC_EINVAL);
    add_msg(f->s, "other", "bob", "marker");
    wait_n(f, 4);
    assert_false(c->bad_call);
    assert_int_equal(c->n, 4);

    assert_string_equal(c->v[0].event, "broadcast");
    assert_string_equal(c->v[0].room_id, "lobby");
    assert_int_equal(c->v[0].version, v1);
    assert_int_equal(c->v[0].seq, 0);
    assert_string_equal(c->v[0].user_id, "alice");
    assert_payload(c->v[0].payload, "ping", "{\"n\":1}", "alice", v1);
    assert_string_equal(c->v[1].event, "new_message");
    assert_int_equal(c->v[1].version, 2);
    assert_string_equal(c->v[2].event, "broadcast");
    assert_int_equal(c->v[2].version, v3);
    assert_int_equal(c->v[2].seq, 0);
    assert_string_equal(c->v[2].user_id, "");
    assert_payload(c->v[2].payload, "notice", "\"from the server\"", NULL, v3);
    assert_true(c->v[2].id > c->v[1].id && c->v[1].id > c->v[0].id);
    assert_string_equal(c->v[3].room_id, "other");

    /* what a change page or a join replays is the same row */
    struct store_req *r = req_room(STORE_JOIN_ROOM, "lobby", NULL);

    r->user_id = dup_or_null("bob");
    r->since_version = 0;
    assert_int_equal(run(f->s, r), 0);
    assert_int_equal(r->n_changes, 3);
    assert_string_equal(r->changes[2].payload, c->v[2].payload);
    assert_true(store_change_payload_ok(&r->changes[2]));
    store_req_destroy(r);
}

/* A member's join: the role, the room's version, and the broadcasts (not the other
 * changes) after since_version logged at or after since_ms, the first `limit` by version. */
void test_broadcast_join(void **state)
{
    struct fixture *f = *state;
    char sql[256];

    life_scene(f);
    int64_t v1 = bc(f, "lobby", "alice", "a", "1");
    int64_t v2 = bc(f, "lobby", "bob", "b", "2");

    add_msg(f->s, "lobby", "bob", "not a broadcast");
    int64_t v4 = bc(f, "lobby", NULL, "d", "4");
    int64_t v5 = bc(f, "lobby", "carol", "e", "5");

    bc(f, "other", "bob", "elsewhere", "{}");
    /* v2 and v4 were logged long ago: time and version orders differ */
    snprintf(sql, sizeof sql,
             "UPDATE room_changes SET inserted_at = %s "
             "WHERE room_id = 'lobby' AND version IN (%lld, %lld)",
             f->be->old_inserted_at, (long long)v2, (long long)v4);
    ext_exec(ext(f), sql);

    const int64_t all[] = {v1, v2, v4, v5, 0}, recent[] = {v1, v5, 0}, none[] = {0};
    const int64_t first_two[] = {v1, v2, 0}, after_v2[] = {v4, v5, 0}, after_v2_one[] = {v4, 0};
    struct store_req *r = joined(f, "bob", -1, 0, 100, all);

    assert_string_equal(r->member.role, "member");
    assert_string_equal(r->member.user_id, "bob");
    assert_int_equal(r->room.version, v5);
    assert_string_equal(r->room.id, "lobby");
    assert_payload(r->changes[0].payload, "a", "1", "alice", v1);
    assert_payload(r->changes[2].payload, "d", "4", NULL, v4);
    assert_string_equal(r->changes[2].user_id, "");
    assert_iso8601(r->changes[2].inserted_at);
    assert_string_equal(r->changes[2].inserted_at, "2001-02-03T04:05:06.789Z");
    store_req_destroy(r);

    store_req_destroy(joined(f, "bob", -1, old_ms(), 100, all)); /* at the time: included */
    store_req_destroy(joined(f, "bob", -1, old_ms() + 1, 100, recent));
    store_req_destroy(joined(f, "bob", 0, 0, 2, first_two));
    store_req_destroy(joined(f, "bob", v2, 0, 100, after_v2));
    store_req_destroy(joined(f, "bob", v2, 0, 1, after_v2_one));
    store_req_destroy(joined(f, "bob", v2, old_ms() + 1, 100, (const int64_t[]){v5, 0}));
    store_req_destroy(joined(f, "bob", v5, 0, 100, none));
    store_req_destroy(joined(f, "bob", -1, INT64_MAX / 2, 100, none)); /* the future */
    /* since_ms < 0: no replay, the role and version only */
    r = joined(f, "carol", -1, -1, 100, none);
    assert_string_equal(r->member.role, "viewer");
    assert_int_equal(r->room.version, v5);
    store_req_destroy(r);

    r = join_req("lobby", "mallory", -1, 0, 100);
    assert_int_equal(run(f->s, r), RC_EFORBIDDEN);
    assert_int_equal(r->n_changes, 0);
    store_req_destroy(r);
    run_expect(f->s, join_req("nowhere", "bob", -1, 0, 100), RC_ENOTFOUND);
    run_expect(f->s, join_req("nowhere", "bob", -1, -1, 100), RC_ENOTFOUND);
}

/* Another client inserts into room_broadcasts (PostgreSQL: or calls rowcast_room_broadcast):
 * the same change as the store's own, read back through the view. */
void test_broadcast_sql(void **state)
{
    struct fixture *f = *state;
    struct client *db;
    struct sql_error e;
    bool pg = f->be == &backend_pg;

    life_scene(f);
    int64_t v1 = bc(f, "lobby", "alice", "own", "{\"k\":\"v\"}");

    db = ext(f);
    ext_exec(db, "INSERT INTO room_broadcasts(room_id, event, payload) "
                 "VALUES ('lobby', 'cron', '{\"k\":\"v\"}')");
    ext_exec(db, "INSERT INTO room_broadcasts(room_id, event, payload, user_id) "
                 "VALUES ('lobby', 'bot', '[1,2]', 'bob')");
    if (pg)
        assert_int_equal(
            ext_int(db, "SELECT rowcast_room_broadcast('lobby', 'fn', '\"s\"', 'carol')", NULL), 4);
    else
        ext_exec(db, "INSERT INTO room_broadcasts(room_id, event, payload, user_id) "
                     "VALUES ('lobby', 'fn', '\"s\"', 'carol')");
    assert_int_equal(version_now(f, "lobby"), 4);

    struct store_req *r = joined(f, "bob", -1, 0, 100, (const int64_t[]){v1, 2, 3, 4, 0});

    assert_payload(r->changes[0].payload, "own", "{\"k\":\"v\"}", "alice", v1);
    assert_payload(r->changes[1].payload, "cron", "{\"k\":\"v\"}", NULL, 2);
    assert_string_equal(r->changes[1].user_id, "");
    assert_payload(r->changes[2].payload, "bot", "[1,2]", "bob", 3);
    assert_string_equal(r->changes[2].user_id, "bob");
    assert_payload(r->changes[3].payload, "fn", "\"s\"", "carol", 4);
    store_req_destroy(r);

    /* the view: seq the version, event and payload the user's */
    assert_int_equal(
        ext_int(db, "SELECT count(*) FROM room_broadcasts WHERE room_id = 'lobby'", NULL), 4);
    assert_int_equal(ext_int(db,
                             "SELECT seq FROM room_broadcasts WHERE event = 'bot' "
                             "AND payload = '[1,2]' AND user_id = 'bob'",
                             NULL),
                     3);
    assert_int_equal(ext_int(db,
                             "SELECT count(*) FROM room_broadcasts WHERE event = 'cron' "
                             "AND payload = '{\"k\":\"v\"}' AND user_id = ''",
                             NULL),
                     1);
    ext_exec(db, "INSERT INTO messages(room_id, user_id, body) VALUES ('lobby', 'bob', 'x')");
    assert_int_equal(ext_int(db, "SELECT count(*) FROM room_broadcasts", NULL), 4);

    /* refused: no such room, no event; nothing is logged */
    ext_fail(db,
             "INSERT INTO room_broadcasts(room_id, event, payload) VALUES ('nowhere', 'x', '1')",
             &e);
    assert_string_equal(e.code, f->be->no_room_code);
    ext_fail(db, "INSERT INTO room_broadcasts(room_id, event, payload) VALUES ('lobby', NULL, '1')",
             &e);
    if (pg)
        ext_fail(db, "SELECT rowcast_room_broadcast('nowhere', 'x', '1')", &e);
    assert_int_equal(version_now(f, "lobby"), 5);

    /* SQLite delivers other processes' changes to the listener too */
    if (!pg) {
        wait_n(f, 5);
        assert_string_equal(f->col.v[1].event, "broadcast");
        assert_payload(f->col.v[1].payload, "cron", "{\"k\":\"v\"}", NULL, 2);
        assert_string_equal(f->col.v[4].event, "new_message");
        assert_int_equal(json_int_of(f->col.v[4].payload, "version"), 5);
    }
}

/* Deleting the room removes its broadcasts; a room created again under the id counts from
 * version 1 and replays only its own. */
void test_broadcast_room_delete(void **state)
{
    struct fixture *f = *state;

    life_scene(f);
    bc(f, "lobby", "alice", "old", "{}");
    bc(f, "lobby", "alice", "old", "{}");
    bc(f, "other", "bob", "stays", "{}");
    run_expect(f->s, req_room(STORE_ROOM_DELETE, "lobby", NULL), 0);
    assert_int_equal(
        ext_int(ext(f), "SELECT count(*) FROM room_changes WHERE room_id = 'lobby'", NULL), 0);
    assert_int_equal(ext_int(ext(f), "SELECT count(*) FROM room_broadcasts", NULL), 1);
    run_expect(f->s, bc_req("lobby", "alice", "gone", "{}"), RC_ENOTFOUND);

    create_room(f->s, "lobby");
    put_member(f->s, "lobby", "alice", "owner");
    assert_int_equal(bc(f, "lobby", "alice", "new", "{}"), 1);
    struct store_req *r = joined(f, "alice", -1, 0, 100, (const int64_t[]){1, 0});

    assert_payload(r->changes[0].payload, "new", "{}", "alice", 1);
    store_req_destroy(r);
}
