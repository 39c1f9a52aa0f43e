/* test_store_life.c - the life of a message in the store, cases of the store suite
 * (tests/unit/test_store, harness in store_test.h): replies, edits, deletes, reactions,
 * read cursors and unread counts, the room's change log read by version, and its delivery
 * to the listener. LIFE_CASES run against every backend; plain SQL from another client
 * stands for another process (sqlite3, psql). */
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

#include "store.h"
#include "store_test.h"
#include "util/sbuf.h"

/* ---- requests ---------------------------------------------------------------------- */

/* A request for op on message seq of room by user (NULL: none). */
static struct store_req *mkreq(enum store_op op, const char *room, const char *user, int64_t seq)
{
    struct store_req *r = store_req_create(op);

    r->room_id = dup_or_null(room);
    r->user_id = dup_or_null(user);
    r->seq = seq;
    return r;
}

/* Runs req and fails the case unless its rc is want; returns req (the caller frees it). */
static struct store_req *expect(struct fixture *f, struct store_req *req, int want)
{
    int rc = run(f->s, req);

    if (rc != want)
        fail_msg("op %d room=%s user=%s seq=%lld: rc %d (%s), want %d (%s)", req->op,
                 req->room_id ? req->room_id : "-", req->user_id ? req->user_id : "-",
                 (long long)req->seq, rc, rc_strerror(rc), want, rc_strerror(want));
    return req;
}

/* Adds a message (reply_to 0: none); returns its seq, checking the version it took. */
static int64_t add(struct fixture *f, const char *room, const char *user, const char *body,
                   int64_t reply_to)
{
    struct store_req *r = mkreq(STORE_MESSAGE_ADD, room, user, 0);

    r->body = dup_or_null(body);
    r->reply_to = reply_to;
    expect(f, r, 0);
    assert_true(r->version > 0);
    assert_int_equal(r->msg.reply_to, reply_to);
    int64_t seq = r->msg.seq;

    store_req_destroy(r);
    return seq;
}

/* Edits message seq; returns the version it took (0: none) when want is 0. */
static int64_t edit(struct fixture *f, const char *user, int64_t seq, const char *body, int want)
{
    struct store_req *r = mkreq(STORE_MESSAGE_EDIT, "lobby", user, seq);

    r->body = dup_or_null(body);
    expect(f, r, want);
    int64_t v = r->version;

    if (!want) {
        assert_int_equal(r->msg.seq, seq);
        assert_string_equal(r->msg.body, body);
    }
    store_req_destroy(r);
    return v;
}

/* Deletes message seq of lobby; returns the version it took when want is 0. */
static int64_t del(struct fixture *f, const char *user, int64_t seq, int want)
{
    struct store_req *r = expect(f, mkreq(STORE_MESSAGE_DELETE, "lobby", user, seq), want);
    int64_t v = r->version;

    store_req_destroy(r);
    return v;
}

/* Adds (STORE_REACTION_PUT) or removes a reaction in lobby; returns the version it took
 * (0: nothing changed), checking room.version is the room's current one. */
static int64_t react(struct fixture *f, enum store_op op, const char *user, int64_t seq,
                     const char *emoji, int want)
{
    struct store_req *r = mkreq(op, "lobby", user, seq);

    r->name = dup_or_null(emoji);
    expect(f, r, want);
    int64_t v = r->version;

    if (!want) {
        assert_true(r->room.version > 0);
        if (v)
            assert_int_equal(v, r->room.version);
    }
    store_req_destroy(r);
    return v;
}

/* Moves user's read cursor in room to seq; returns the cursor, *unread what is left. */
static int64_t mark(struct fixture *f, const char *room, const char *user, int64_t seq,
                    int64_t *unread)
{
    struct store_req *r = expect(f, mkreq(STORE_READ_MARK, room, user, seq), 0);
    int64_t cursor = r->member.last_read_seq;

    *unread = r->member.unread;
    assert_true(r->room.last_seq >= cursor);
    store_req_destroy(r);
    return cursor;
}

/* The current version of room (ROOM_GET). */
static int64_t version_of(struct fixture *f, const char *room)
{
    struct store_req *r = expect(f, mkreq(STORE_ROOM_GET, room, NULL, 0), 0);
    int64_t v = r->room.version;

    store_req_destroy(r);
    return v;
}

/* The latest messages of lobby (MESSAGES_PAGE); the caller frees the request. */
static struct store_req *history(struct fixture *f)
{
    return expect(f, mkreq(STORE_MESSAGES_PAGE, "lobby", NULL, 0), 0);
}

/* Message seq in a request's msgs; fails when it is not there. */
static const struct store_msg *msg_in(const struct store_req *r, int64_t seq)
{
    for (size_t i = 0; i < r->n_msgs; i++)
        if (r->msgs[i].seq == seq)
            return &r->msgs[i];
    fail_msg("message %lld is not in the page", (long long)seq);
    return NULL;
}

/* The changes of lobby after since, at most limit (CHANGES_PAGE); the caller frees it. */
static struct store_req *changes(struct fixture *f, int64_t since, int limit)
{
    struct store_req *r = mkreq(STORE_CHANGES_PAGE, "lobby", NULL, 0);

    r->since_version = since;
    r->limit = limit;
    return expect(f, r, 0);
}

/* ---- JSON -------------------------------------------------------------------------- */

/* Parses JSON text; fails the case when it is not JSON. */
static json_t *parse(const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text ? text : "", JSON_DECODE_ANY, &err);

    if (!j)
        fail_msg("not JSON (%s): %s", err.text, text ? text : "(null)");
    return j;
}

/* Asserts the reactions JSON text (or NULL) lists "emoji:count,…" in that order. */
static void assert_reactions(const char *json, const char *want)
{
    struct sbuf b = SBUF_INIT;

    if (json) {
        json_t *a = parse(json);
        size_t i;
        json_t *e;

        assert_true(json_is_array(a));
        assert_true(json_array_size(a) > 0); /* none is NULL, not [] */
        json_array_foreach(a, i, e)
        {
            const char *emoji = json_string_value(json_object_get(e, "emoji"));
            json_t *count = json_object_get(e, "count");

            assert_non_null(emoji);
            assert_true(json_is_integer(count));
            sbuf_printf(&b, "%s%s:%lld", i ? "," : "", emoji, (long long)json_integer_value(count));
        }
        json_decref(a);
    }
    assert_string_equal(b.data ? b.data : "", want);
    sbuf_cleanup(&b);
}

/* Asserts the integer member key of a JSON object text. */
static void assert_json_int(const char *text, const char *key, int64_t want)
{
    json_t *j = parse(text);
    json_t *v = json_object_get(j, key);

    if (!json_is_integer(v))
        fail_msg("\"%s\" has no integer %s", text, key);
    assert_int_equal(json_integer_value(v), want);
    json_decref(j);
}

/* Asserts the string member key of a JSON object text (want NULL: absent). */
static void assert_json_str(const char *text, const char *key, const char *want)
{
    json_t *j = parse(text);
    json_t *v = json_object_get(j, key);

    if (!want && v)
        fail_msg("\"%s\" has %s; it should not", text, key);
    if (want && !json_is_string(v))
        fail_msg("\"%s\" has no string %s", text, key);
    if (want)
        assert_string_equal(json_string_value(v), want);
    json_decref(j);
}

/* ---- the listener ------------------------------------------------------------------ */

/* Waits until the listener has given n changes; fails after WAIT_MS. */
static void wait_changes(struct collector *c, size_t n)
{
    size_t got = wait_collected(c, n, WAIT_MS);

    if (got < n)
        fail_msg("the listener got %zu changes, want %zu", got, n);
}

/* Asserts change i the listener got: event, version, message and its author. */
static void assert_got(struct collector *c, size_t i, const char *event, int64_t version,
                       int64_t seq, const char *author)
{
    const struct seen *g = &c->v[i];

    assert_string_equal(g->event, event);
    assert_string_equal(g->room_id, "lobby");
    assert_int_equal(g->version, version);
    assert_int_equal(g->seq, seq);
    assert_string_equal(g->user_id, author);
    assert_json_int(g->payload, "version", version);
    assert_json_int(g->payload, "seq", seq);
    if (i)
        assert_true(g->id > c->v[i - 1].id);
}

/* Opens the store, its listener the case's collector, on the case's fresh database with
 * room lobby (alice owner, bob member, carol viewer) and room other (bob member). */
void life_scene(struct fixture *f)
{
    static const char *const members[][3] = {{"lobby", "alice", "owner"},
                                             {"lobby", "bob", "member"},
                                             {"lobby", "carol", "viewer"},
                                             {"other", "bob", "member"}};

    open_store(f, 0, 10, MSG_LISTENER);
    for (int i = 0; i < 2; i++) {
        struct store_req *r = mkreq(STORE_ROOM_CREATE, i ? "other" : "lobby", NULL, 0);

        r->name = dup_or_null(i ? "Other" : "Lobby");
        run_expect(f->s, r, 0);
    }
    for (size_t i = 0; i < sizeof members / sizeof members[0]; i++) {
        struct store_req *r = mkreq(STORE_MEMBER_PUT, members[i][0], members[i][1], 0);

        r->role = dup_or_null(members[i][2]);
        run_expect(f->s, r, 0);
    }
}

/* ---- cases ------------------------------------------------------------------------- */

/* A reply names a message of the room that is there; anything else stores nothing. */
void test_life_reply_to(void **state)
{
    struct fixture *f = *state;

    life_scene(f);
    int64_t parent = add(f, "lobby", "alice", "parent", 0);
    int64_t gone = add(f, "lobby", "alice", "to be deleted", 0);

    for (int i = 0; i < 5; i++)
        add(f, "other", "bob", "in other", 0);
    struct store_req *r = mkreq(STORE_MESSAGE_ADD, "lobby", "bob", 0);

    r->body = dup_or_null("a reply");
    r->reply_to = parent;
    expect(f, r, 0);
    assert_int_equal(r->msg.seq, 3);
    assert_int_equal(r->msg.reply_to, parent);
    assert_int_equal(r->version, 3);
    store_req_destroy(r);
    del(f, "alice", gone, 0);
    int64_t v = version_of(f, "lobby");

    /* none such, deleted, a seq only the other room has, and no room at all */
    const int64_t bad[] = {99, gone, 5};

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = mkreq(STORE_MESSAGE_ADD, "lobby", "bob", 0);
        r->body = dup_or_null("dangling");
        r->reply_to = bad[i];
        run_expect(f->s, r, RC_EINVAL);
    }
    r = mkreq(STORE_MESSAGE_ADD, "nowhere", "bob", 0);
    r->body = dup_or_null("dangling");
    r->reply_to = 1;
    run_expect(f->s, r, RC_ENOTFOUND);
    assert_int_equal(version_of(f, "lobby"), v);
    assert_int_equal(ext_int(ext(f), "SELECT count(*) FROM messages WHERE body = 'dangling'", NULL),
                     0);
    /* the next message still takes the next seq and version */
    assert_int_equal(add(f, "lobby", "bob", "after", parent), 4);
    assert_int_equal(version_of(f, "lobby"), v + 1);
}

/* Only the author edits (anyone through REST); an edit takes a version and sets
 * edited_at; the same body changes nothing; a deleted message cannot be edited. */
void test_life_edit(void **state)
{
    struct fixture *f = *state;

    life_scene(f);
    int64_t seq = add(f, "lobby", "alice", "typo", 0);

    edit(f, "bob", seq, "not mine", RC_EFORBIDDEN);
    edit(f, "alice", 99, "none", RC_ENOTFOUND);
    struct store_req *r = mkreq(STORE_MESSAGE_EDIT, "nowhere", "alice", seq);

    r->body = dup_or_null("no room");
    run_expect(f->s, r, RC_ENOTFOUND);
    assert_int_equal(version_of(f, "lobby"), 1);

    r = mkreq(STORE_MESSAGE_EDIT, "lobby", "alice", seq);
    r->body = dup_or_null("fixed");
    expect(f, r, 0);
    assert_int_equal(r->version, 2);
    assert_string_equal(r->msg.user_id, "alice");
    assert_iso8601(r->msg.edited_at);
    store_req_destroy(r);
    assert_int_equal(edit(f, "alice", seq, "fixed", 0), 0); /* the same body */
    assert_int_equal(version_of(f, "lobby"), 2);
    assert_int_equal(edit(f, NULL, seq, "by the API", 0), 3);

    r = history(f);
    const struct store_msg *m = msg_in(r, seq);

    assert_string_equal(m->body, "by the API");
    assert_iso8601(m->edited_at);
    assert_string_equal(m->deleted_at, "");
    store_req_destroy(r);
    r = changes(f, 1, 10);
    assert_int_equal(r->n_changes, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_string_equal(r->changes[i].event, "message_updated");
        assert_string_equal(r->changes[i].user_id, "alice");
        assert_json_int(r->changes[i].payload, "version", (int64_t)i + 2);
        assert_json_str(r->changes[i].payload, "user_id", "alice");
    }
    assert_json_str(r->changes[1].payload, "body", "by the API");
    store_req_destroy(r);

    del(f, "alice", seq, 0);
    edit(f, "alice", seq, "back", RC_EGONE);
    edit(f, NULL, seq, "back", RC_EGONE);
    assert_int_equal(version_of(f, "lobby"), 4);
}

/* The author or an owner deletes (anyone through REST); the body is erased from the row
 * and from the logged changes; a deleted message stays deleted. */
void test_life_delete(void **state)
{
    struct fixture *f = *state;

    life_scene(f);
    int64_t mine = add(f, "lobby", "alice", "owner's own", 0);
    int64_t s1 = add(f, "lobby", "bob", "secret one", 0);
    int64_t s2 = add(f, "lobby", "bob", "secret two", 0);
    int64_t s3 = add(f, "lobby", "bob", "secret three", 0);

    assert_int_equal(edit(f, "bob", s1, "secret one, edited", 0), 5);
    del(f, "bob", mine, RC_EFORBIDDEN);   /* a member, not the author */
    del(f, "carol", s1, RC_EFORBIDDEN);   /* a viewer */
    del(f, "mallory", s1, RC_EFORBIDDEN); /* not a member */
    del(f, "bob", 99, RC_ENOTFOUND);
    run_expect(f->s, mkreq(STORE_MESSAGE_DELETE, "nowhere", "bob", s1), RC_ENOTFOUND);
    assert_int_equal(version_of(f, "lobby"), 5);

    struct store_req *r = expect(f, mkreq(STORE_MESSAGE_DELETE, "lobby", "bob", s1), 0);

    assert_int_equal(r->version, 6);
    assert_int_equal(r->msg.seq, s1);
    assert_string_equal(r->msg.user_id, "bob");
    assert_iso8601(r->msg.deleted_at);
    assert_string_equal(r->msg.body, "");
    store_req_destroy(r);
    assert_int_equal(del(f, "alice", s2, 0), 7); /* the owner */
    assert_int_equal(del(f, NULL, s3, 0), 8);
    del(f, "bob", s1, RC_EGONE);
    del(f, NULL, s1, RC_EGONE);
    assert_int_equal(version_of(f, "lobby"), 8);

    assert_int_equal(ext_int(ext(f),
                             "SELECT count(*) FROM messages "
                             "WHERE body LIKE '%secret%'",
                             NULL),
                     0);
    assert_int_equal(ext_int(ext(f),
                             "SELECT count(*) FROM room_changes "
                             "WHERE CAST(payload AS TEXT) LIKE '%secret%'",
                             NULL),
                     0);
    r = history(f);
    assert_int_equal(r->n_msgs, 4);
    assert_string_equal(msg_in(r, mine)->body, "owner's own");
    assert_string_equal(msg_in(r, mine)->deleted_at, "");
    for (int64_t seq = s1; seq <= s3; seq++) {
        assert_string_equal(msg_in(r, seq)->body, "");
        assert_iso8601(msg_in(r, seq)->deleted_at);
    }
    store_req_destroy(r);
    r = changes(f, 5, 10);
    assert_int_equal(r->n_changes, 3);
    assert_string_equal(r->changes[0].event, "message_deleted");
    assert_string_equal(r->changes[0].user_id, "bob");
    assert_json_int(r->changes[0].payload, "seq", s1);
    store_req_destroy(r);
}

/* One reaction per (message, user, emoji): a second add or a removal of one that is not
 * there changes nothing; history counts them by emoji. */
void test_life_reactions(void **state)
{
    struct fixture *f = *state;

    life_scene(f);
    int64_t seq = add(f, "lobby", "alice", "react to me", 0);
    int64_t plain = add(f, "lobby", "alice", "nothing here", 0);

    assert_int_equal(react(f, STORE_REACTION_PUT, "bob", seq, "\xf0\x9f\x91\x8d", 0), 3);
    assert_int_equal(react(f, STORE_REACTION_PUT, "bob", seq, "\xf0\x9f\x91\x8d", 0), 0);
    assert_int_equal(version_of(f, "lobby"), 3);
    assert_int_equal(react(f, STORE_REACTION_PUT, "alice", seq, "\xf0\x9f\x91\x8d", 0), 4);
    assert_int_equal(react(f, STORE_REACTION_PUT, "alice", seq, "\xf0\x9f\x8e\x89", 0), 5);
    assert_int_equal(react(f, STORE_REACTION_DELETE, "bob", seq, "\xf0\x9f\x8e\x89", 0), 0);
    assert_int_equal(version_of(f, "lobby"), 5);

    struct store_req *r = history(f);

    assert_reactions(msg_in(r, seq)->reactions, "\xf0\x9f\x8e\x89:1,\xf0\x9f\x91\x8d:2");
    assert_null(msg_in(r, plain)->reactions);
    store_req_destroy(r);
    assert_int_equal(react(f, STORE_REACTION_DELETE, "alice", seq, "\xf0\x9f\x8e\x89", 0), 6);
    assert_int_equal(react(f, STORE_REACTION_DELETE, "alice", seq, "\xf0\x9f\x8e\x89", 0), 0);
    r = history(f);
    assert_reactions(msg_in(r, seq)->reactions, "\xf0\x9f\x91\x8d:2");
    store_req_destroy(r);

    r = changes(f, 2, 10);
    assert_int_equal(r->n_changes, 4);
    const char *const events[] = {"reaction_added", "reaction_added", "reaction_added",
                                  "reaction_removed"};
    const char *const users[] = {"bob", "alice", "alice", "alice"};

    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(r->changes[i].event, events[i]);
        assert_string_equal(r->changes[i].user_id, "alice"); /* the message's author */
        assert_json_str(r->changes[i].payload, "user_id", users[i]);
        assert_json_int(r->changes[i].payload, "seq", seq);
    }
    assert_json_str(r->changes[3].payload, "emoji", "\xf0\x9f\x8e\x89");
    store_req_destroy(r);

    react(f, STORE_REACTION_PUT, "bob", 99, "x", RC_ENOTFOUND);
    react(f, STORE_REACTION_DELETE, "bob", 99, "x", RC_ENOTFOUND);
    r = mkreq(STORE_REACTION_PUT, "nowhere", "bob", seq);
    r->name = dup_or_null("x");
    run_expect(f->s, r, RC_ENOTFOUND);
    del(f, "alice", seq, 0);
    react(f, STORE_REACTION_PUT, "bob", seq, "x", RC_EGONE);
    react(f, STORE_REACTION_DELETE, "bob", seq, "\xf0\x9f\x91\x8d", RC_EGONE);
    assert_int_equal(version_of(f, "lobby"), 7);
}

/* The read cursor never moves backwards and stops at last_seq; unread counts messages
 * after it that are neither the reader's own nor deleted. */
void test_life_read_mark(void **state)
{
    struct fixture *f = *state;
    int64_t unread;

    life_scene(f);
    add(f, "lobby", "alice", "a1", 0);
    add(f, "lobby", "bob", "b1", 0);
    add(f, "lobby", "bob", "b2", 0);
    add(f, "lobby", "alice", "a2", 0);
    int64_t b3 = add(f, "lobby", "bob", "b3", 0);

    assert_int_equal(mark(f, "lobby", "bob", 0, &unread), 0);
    assert_int_equal(unread, 2); /* a1, a2 */
    assert_int_equal(mark(f, "lobby", "alice", 2, &unread), 2);
    assert_int_equal(unread, 2); /* b2, b3 */
    assert_int_equal(mark(f, "lobby", "alice", 1, &unread), 2);
    assert_int_equal(unread, 2);
    assert_int_equal(mark(f, "lobby", "alice", -5, &unread), 2);
    del(f, "bob", b3, 0);
    assert_int_equal(mark(f, "lobby", "alice", 2, &unread), 2);
    assert_int_equal(unread, 1);

    struct store_req *r = mkreq(STORE_JOIN_ROOM, "lobby", "alice", 0);

    expect(f, r, 0);
    assert_int_equal(r->member.last_read_seq, 2);
    assert_int_equal(r->member.unread, 1);
    assert_int_equal(r->room.version, 6);
    assert_int_equal(r->room.last_seq, 5);
    assert_int_equal(r->n_msgs, 5);
    assert_int_equal(r->n_changes, 0);
    store_req_destroy(r);

    r = expect(f, mkreq(STORE_READ_MARK, "lobby", "alice", 99), 0);
    assert_int_equal(r->member.last_read_seq, 5); /* stops at last_seq */
    assert_int_equal(r->member.unread, 0);
    assert_int_equal(r->room.last_seq, 5);
    store_req_destroy(r);
    assert_int_equal(ext_int(ext(f),
                             "SELECT last_read_seq FROM memberships "
                             "WHERE room_id = 'lobby' AND user_id = 'alice'",
                             NULL),
                     5);
    run_expect(f->s, mkreq(STORE_READ_MARK, "lobby", "mallory", 1), RC_EFORBIDDEN);
    run_expect(f->s, mkreq(STORE_READ_MARK, "nowhere", "alice", 1), RC_ENOTFOUND);
    assert_int_equal(version_of(f, "lobby"), 6); /* a read mark is no room change */
}

/* The room's changes page by version with a limit, from a changes page and from a join
 * with since_version. */
void test_life_changes_by_version(void **state)
{
    struct fixture *f = *state;
    static const char *const events[] = {"new_message", "new_message", "message_updated",
                                         "reaction_added", "message_deleted"};

    life_scene(f);
    int64_t s1 = add(f, "lobby", "alice", "one", 0);
    int64_t s2 = add(f, "lobby", "bob", "two", 0);

    edit(f, "bob", s2, "two!", 0);
    react(f, STORE_REACTION_PUT, "bob", s1, "x", 0);
    del(f, "alice", s1, 0);
    add(f, "other", "bob", "elsewhere", 0);

    int64_t since = 0;
    size_t seen = 0;

    for (int round = 0; round < 3; round++) {
        struct store_req *r = changes(f, since, 2);

        assert_int_equal(r->n_changes, round < 2 ? 2 : 1);
        assert_int_equal(r->room.version, 5);
        assert_int_equal(r->room.last_seq, 2);
        for (size_t i = 0; i < r->n_changes; i++, seen++) {
            const struct store_change *c = &r->changes[i];

            assert_int_equal(c->version, (int64_t)seen + 1);
            assert_string_equal(c->room_id, "lobby");
            assert_string_equal(c->event, events[seen]);
            assert_int_equal(c->seq, seen == 1 || seen == 2 ? s2 : s1);
            assert_string_equal(c->user_id, seen == 1 || seen == 2 ? "bob" : "alice");
            assert_json_int(c->payload, "version", c->version);
            assert_iso8601(c->inserted_at);
            since = c->version;
        }
        store_req_destroy(r);
    }
    assert_int_equal(seen, 5);
    struct store_req *r = changes(f, 5, 2);

    assert_int_equal(r->n_changes, 0);
    store_req_destroy(r);
    r = mkreq(STORE_CHANGES_PAGE, "nowhere", NULL, 0);
    r->since_version = 0;
    run_expect(f->s, r, RC_ENOTFOUND);

    /* a join with since_version: the changes after it instead of the history */
    r = mkreq(STORE_JOIN_ROOM, "lobby", "bob", 0);
    r->since_version = 2;
    r->limit = 2;
    expect(f, r, 0);
    assert_int_equal(r->n_msgs, 0);
    assert_int_equal(r->n_changes, 2);
    assert_int_equal(r->changes[0].version, 3);
    assert_string_equal(r->changes[1].event, "reaction_added");
    assert_int_equal(r->room.version, 5);
    assert_string_equal(r->member.role, "member");
    store_req_destroy(r);
    r = mkreq(STORE_JOIN_ROOM, "lobby", "bob", 0);
    r->since_version = 5;
    expect(f, r, 0);
    assert_int_equal(r->n_changes, 0);
    assert_int_equal(r->n_msgs, 0);
    store_req_destroy(r);
    r = mkreq(STORE_JOIN_ROOM, "lobby", "mallory", 0);
    r->since_version = 0;
    run_expect(f->s, r, RC_EFORBIDDEN);
}

/* Replies carry reply_to, the parent counts those not deleted, and a thread pages
 * oldest first. */
void test_life_replies(void **state)
{
    struct fixture *f = *state;

    life_scene(f);
    int64_t parent = add(f, "lobby", "alice", "parent", 0);
    int64_t r1 = add(f, "lobby", "bob", "reply one", parent);
    int64_t other = add(f, "lobby", "alice", "not a reply", 0);
    int64_t r2 = add(f, "lobby", "alice", "reply two", parent);
    int64_t r3 = add(f, "lobby", "bob", "reply three", parent);

    del(f, "alice", r2, 0);
    struct store_req *r = history(f);

    assert_int_equal(msg_in(r, parent)->reply_count, 2);
    assert_int_equal(msg_in(r, parent)->reply_to, 0);
    assert_int_equal(msg_in(r, r1)->reply_to, parent);
    assert_int_equal(msg_in(r, other)->reply_to, 0);
    assert_int_equal(msg_in(r, other)->reply_count, 0);
    store_req_destroy(r);

    r = expect(f, mkreq(STORE_REPLIES_PAGE, "lobby", NULL, parent), 0);
    assert_int_equal(r->n_msgs, 3);
    assert_int_equal(r->msgs[0].seq, r1);
    assert_string_equal(r->msgs[0].body, "reply one");
    assert_int_equal(r->msgs[1].seq, r2);
    assert_iso8601(r->msgs[1].deleted_at);
    assert_int_equal(r->msgs[2].seq, r3);
    assert_int_equal(r->msgs[2].reply_to, parent);
    store_req_destroy(r);
    r = mkreq(STORE_REPLIES_PAGE, "lobby", NULL, parent);
    r->after_seq = r1;
    r->limit = 1;
    expect(f, r, 0);
    assert_int_equal(r->n_msgs, 1);
    assert_int_equal(r->msgs[0].seq, r2);
    store_req_destroy(r);
    r = expect(f, mkreq(STORE_REPLIES_PAGE, "lobby", NULL, other), 0);
    assert_int_equal(r->n_msgs, 0);
    store_req_destroy(r);
    run_expect(f->s, mkreq(STORE_REPLIES_PAGE, "lobby", NULL, 99), RC_ENOTFOUND);
    run_expect(f->s, mkreq(STORE_REPLIES_PAGE, "nowhere", NULL, parent), RC_ENOTFOUND);
    del(f, "alice", parent, 0); /* a deleted parent keeps its thread */
    r = expect(f, mkreq(STORE_REPLIES_PAGE, "lobby", NULL, parent), 0);
    assert_int_equal(r->n_msgs, 3);
    store_req_destroy(r);
}

/* A user's rooms by room_id with the read state in each. */
void test_life_user_rooms(void **state)
{
    struct fixture *f = *state;
    int64_t unread;

    static const char *const sent[][2] = {
        {"lobby", "alice"}, {"lobby", "alice"}, {"lobby", "bob"}, {"other", "alice"}};

    life_scene(f);
    for (size_t i = 0; i < sizeof sent / sizeof sent[0]; i++)
        add(f, sent[i][0], sent[i][1], "hi", 0);
    mark(f, "lobby", "bob", 1, &unread);
    assert_int_equal(unread, 1);

    struct store_req *r = expect(f, mkreq(STORE_USER_ROOMS, NULL, "bob", 0), 0);
    /* room_id, name, last_seq, last_read_seq, unread; bob is a member of both */
    static const struct {
        const char *id, *name;
        int64_t last_seq, last_read_seq, unread;
    } want[] = {{"lobby", "Lobby", 3, 1, 1}, {"other", "Other", 1, 0, 1}};

    assert_int_equal(r->n_user_rooms, 2);
    for (size_t i = 0; i < 2; i++) {
        const struct store_user_room *u = &r->user_rooms[i];

        assert_string_equal(u->room_id, want[i].id);
        assert_string_equal(u->name, want[i].name);
        assert_string_equal(u->role, "member");
        assert_int_equal(u->last_seq, want[i].last_seq);
        assert_int_equal(u->last_read_seq, want[i].last_read_seq);
        assert_int_equal(u->unread, want[i].unread);
    }
    store_req_destroy(r);
    r = expect(f, mkreq(STORE_USER_ROOMS, NULL, "nobody", 0), 0);
    assert_int_equal(r->n_user_rooms, 0);
    store_req_destroy(r);
}

/* The store's own changes reach the listener once each, in commit order, each without
 * waiting for a later write; failed writes and read marks bring none. */
void test_life_listener_own_changes(void **state)
{
    struct fixture *f = *state;
    struct collector *c = &f->col;
    int64_t unread;

    life_scene(f);
    int64_t s1 = add(f, "lobby", "alice", "hello", 0);

    wait_changes(c, 1);
    edit(f, "alice", s1, "hello!", 0);
    wait_changes(c, 2);
    edit(f, "bob", s1, "not mine", RC_EFORBIDDEN);
    react(f, STORE_REACTION_PUT, "bob", s1, "x", 0);
    wait_changes(c, 3);
    react(f, STORE_REACTION_PUT, "bob", s1, "x", 0); /* nothing changes */
    react(f, STORE_REACTION_DELETE, "bob", s1, "x", 0);
    wait_changes(c, 4);
    mark(f, "lobby", "bob", s1, &unread);
    int64_t s2 = add(f, "lobby", "bob", "re", s1);

    wait_changes(c, 5);
    del(f, "alice", s1, 0);
    wait_changes(c, 6);
    assert_false(c->bad_call);
    assert_got(c, 0, "new_message", 1, s1, "alice");
    assert_got(c, 1, "message_updated", 2, s1, "alice");
    assert_got(c, 2, "reaction_added", 3, s1, "alice");
    assert_got(c, 3, "reaction_removed", 4, s1, "alice");
    assert_got(c, 4, "new_message", 5, s2, "bob");
    assert_got(c, 5, "message_deleted", 6, s1, "alice");
    assert_json_str(c->v[0].payload, "body", "hello");
    assert_json_int(c->v[4].payload, "reply_to", s1);
    assert_json_str(c->v[5].payload, "body", NULL);
    /* nothing more: a marker after everything arrives as the seventh */
    add(f, "other", "bob", "marker", 0);
    wait_changes(c, 7);
    assert_string_equal(c->v[6].room_id, "other");
    assert_int_equal(c->n, 7);
}

/* Plain SQL from another client: an UPDATE of the body, an INSERT INTO reactions and a
 * DELETE of message 1 of lobby, after the store's own message; with deliver, each waits
 * until the listener has it (a delete erases the body from the changes before it). */
static int64_t sql_writes(struct fixture *f, bool deliver)
{
    static const char *const sql[] = {
        "UPDATE messages SET body = 'by sql' WHERE room_id = 'lobby' AND seq = 1",
        "INSERT INTO reactions(room_id, seq, emoji, user_id) VALUES ('lobby', 1, 'y', 'cron')",
        "DELETE FROM messages WHERE room_id = 'lobby' AND seq = 1",
    };

    life_scene(f);
    int64_t seq = add(f, "lobby", "alice", "hello", 0);

    for (size_t i = 0; i < sizeof sql / sizeof sql[0]; i++) {
        ext_exec(ext(f), sql[i]);
        if (deliver)
            wait_changes(&f->col, i + 2);
    }
    return seq;
}

/* Plain SQL from another client takes the room's next versions, logged as the store's own
 * writes are; a DELETE leaves a tombstone. */
void test_life_sql_writer(void **state)
{
    struct fixture *f = *state;
    int64_t seq = sql_writes(f, false);
    struct store_req *r = changes(f, 1, 10);

    assert_int_equal(r->n_changes, 3);
    assert_string_equal(r->changes[0].event, "message_updated");
    assert_json_str(r->changes[0].payload, "body", NULL); /* erased by the delete */
    assert_string_equal(r->changes[1].event, "reaction_added");
    assert_json_str(r->changes[1].payload, "user_id", "cron");
    assert_string_equal(r->changes[2].event, "message_deleted");
    assert_int_equal(r->room.version, 4);
    store_req_destroy(r);
    r = history(f);
    assert_int_equal(r->n_msgs, 1);
    assert_iso8601(msg_in(r, seq)->deleted_at);
    store_req_destroy(r);
}

/* SQLite: those changes reach the store's listener too, each as it was logged. */
void test_life_sql_writer_reaches_listener(void **state)
{
    struct fixture *f = *state;
    struct collector *c = &f->col;
    int64_t seq = sql_writes(f, true);

    assert_got(c, 0, "new_message", 1, seq, "alice");
    assert_got(c, 1, "message_updated", 2, seq, "alice");
    assert_json_str(c->v[1].payload, "body", "by sql");
    assert_got(c, 2, "reaction_added", 3, seq, "alice");
    assert_json_str(c->v[2].payload, "user_id", "cron");
    assert_got(c, 3, "message_deleted", 4, seq, "alice");
    assert_false(c->bad_call);
}

/* Changes committed before the store opened count as delivered. */
void test_life_listener_starts_at_open(void **state)
{
    struct fixture *f = *state;

    life_scene(f);
    add(f, "lobby", "alice", "before", 0);
    add(f, "lobby", "alice", "before", 0);
    wait_changes(&f->col, 2);
    close_store(f);
    f->col.n = 0;
    open_store(f, 0, 10, MSG_LISTENER);
    int64_t seq = add(f, "lobby", "bob", "after", 0);

    wait_changes(&f->col, 1);
    assert_got(&f->col, 0, "new_message", 3, seq, "bob");
    add(f, "other", "bob", "marker", 0);
    wait_changes(&f->col, 2);
    assert_int_equal(f->col.n, 2);
}

/* Messages as clients see them: a deleted one only as a tombstone; the others with their
 * reactions, reply count and, when set, edited_at and reply_to. */
void test_life_message_json(void **state)
{
    struct fixture *f = *state;

    life_scene(f);
    int64_t parent = add(f, "lobby", "alice", "parent", 0);
    int64_t reply = add(f, "lobby", "bob", "reply", parent);
    int64_t gone = add(f, "lobby", "bob", "gone", parent);

    edit(f, "bob", reply, "reply, edited", 0);
    react(f, STORE_REACTION_PUT, "alice", reply, "ok", 0);
    del(f, "bob", gone, 0);
    struct store_req *r = history(f);
    struct sbuf b = SBUF_INIT;
    char want[256];

    store_msg_append_json(&b, msg_in(r, gone));
    snprintf(want, sizeof want, "{\"deleted\":true,\"deleted_at\":\"%s\",\"seq\":%lld}",
             msg_in(r, gone)->deleted_at, (long long)gone);
    assert_string_equal(b.data, want);

    sbuf_reset(&b);
    store_msg_append_json(&b, msg_in(r, reply));
    json_t *j = parse(b.data);

    assert_string_equal(json_string_value(json_object_get(j, "body")), "reply, edited");
    assert_string_equal(json_string_value(json_object_get(j, "edited_at")),
                        msg_in(r, reply)->edited_at);
    assert_int_equal(json_integer_value(json_object_get(j, "reply_to")), parent);
    assert_int_equal(json_integer_value(json_object_get(j, "reply_count")), 0);
    json_t *reactions = json_object_get(j, "reactions");

    assert_int_equal(json_array_size(reactions), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(reactions, 0), "count")), 1);
    json_decref(j);

    sbuf_reset(&b);
    store_msg_append_json(&b, msg_in(r, parent));
    j = parse(b.data);
    assert_int_equal(json_integer_value(json_object_get(j, "reply_count")), 1);
    assert_int_equal(json_array_size(json_object_get(j, "reactions")), 0);
    assert_null(json_object_get(j, "edited_at"));
    assert_null(json_object_get(j, "reply_to"));
    assert_null(json_object_get(j, "deleted"));
    json_decref(j);
    sbuf_cleanup(&b);
    store_req_destroy(r);
}
