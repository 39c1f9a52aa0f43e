// 01-rest: the REST admin API, the CLI, and writes by other processes (the sqlite3 CLI,
// or psql in PostgreSQL mode).
import { before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import os from "node:os";
import path from "node:path";
import {
  test,
  startServer,
  runCli,
  uid,
  expectError,
  expectStatus,
  assertIsoUtc,
  decodeJwt,
  hasFields,
  hasKeys,
  IS_PG,
  createPgDatabase,
  sql,
} from "./lib/server.js";

const execFileP = promisify(execFile);

let srv;
before(async () => {
  srv = await startServer();
});
after(async () => {
  await srv?.stop();
});

const enc = encodeURIComponent;

// Runs fn (which must get an error response) and asserts the database is unchanged.
async function unchanged(fn) {
  const before = await srv.dump();
  await fn();
  const afterDump = await srv.dump();
  assert.equal(afterDump, before, "the database changed after an error response");
}

// ---- auth, errors, limits --------------------------------------------------------------

test("rest: /healthz answers 200 {status: ok} without auth", async () => {
  const r = await srv.api("GET", "/healthz", undefined, { key: null });
  expectStatus(r, 200);
  assert.equal(r.body.status, "ok");
});

test("rest: /api/* without or with a wrong API key is 401 unauthorized", async () => {
  const room = await srv.mkRoom();
  await unchanged(async () => {
    expectError(await srv.api("GET", `/api/rooms/${room.id}`, undefined, { key: null }), 401, "unauthorized");
    expectError(await srv.api("GET", `/api/rooms/${room.id}`, undefined, { key: "wrong" }), 401, "unauthorized");
    expectError(await srv.api("GET", `/api/rooms/${room.id}`, undefined, { key: "" }), 401, "unauthorized");
    // the right key in another scheme is not a bearer token
    expectError(
      await srv.api("GET", `/api/rooms/${room.id}`, undefined, { key: null, headers: { authorization: `Basic ${srv.apiKey}` } }),
      401,
      "unauthorized"
    );
    expectError(await srv.api("POST", "/api/rooms", { id: uid("r"), name: "x" }, { key: "nope" }), 401, "unauthorized");
    expectError(await srv.api("POST", "/api/tokens", { user_id: "alice" }, { key: null }), 401, "unauthorized");
    expectError(
      await srv.api("POST", `/api/rooms/${room.id}/messages`, { user_id: "u", body: "hi" }, { key: srv.apiKey + "x" }),
      401,
      "unauthorized"
    );
    expectError(await srv.api("DELETE", `/api/rooms/${room.id}`, undefined, { key: null }), 401, "unauthorized");
  });
});

test("rest: malformed JSON is 400 invalid_json", async () => {
  const room = await srv.mkRoom();
  await srv.putUser("u1");
  await unchanged(async () => {
    expectError(await srv.api("POST", "/api/rooms", '{"id": "x", "name":'), 400, "invalid_json");
    expectError(await srv.api("POST", "/api/rooms", "not json at all"), 400, "invalid_json");
    expectError(await srv.api("POST", "/api/rooms", ""), 400, "invalid_json");
    expectError(await srv.api("POST", `/api/rooms/${room.id}/messages`, '{"user_id":"u1","body":"hi"'), 400, "invalid_json");
    expectError(await srv.api("PUT", "/api/users/u1", "{name: 'single quotes'}"), 400, "invalid_json");
    expectError(await srv.api("POST", "/api/tokens", '{"user_id":"u1"} trailing'), 400, "invalid_json");
  });
});

test("rest: JSON of the wrong shape or field types is 400 invalid_request", async () => {
  const room = await srv.mkRoom();
  await srv.putUser("u1");
  await unchanged(async () => {
    expectError(await srv.api("POST", "/api/rooms", []), 400, "invalid_request");
    expectError(await srv.api("POST", "/api/rooms", [{ id: "a", name: "b" }]), 400, "invalid_request");
    expectError(await srv.api("POST", "/api/rooms", { id: 5, name: "five" }), 400, "invalid_request");
    expectError(await srv.api("POST", "/api/rooms", { id: uid("r"), name: 5 }), 400, "invalid_request");
    expectError(await srv.api("POST", "/api/rooms", { name: "no id" }), 400, "invalid_request");
    expectError(await srv.api("PUT", "/api/users/u2", []), 400, "invalid_request");
    expectError(await srv.api("PUT", "/api/users/u2", { name: 5 }), 400, "invalid_request");
    expectError(await srv.api("PUT", "/api/users/u2", { name: "ok", avatar_url: 5 }), 400, "invalid_request");
    expectError(await srv.api("PUT", `/api/rooms/${room.id}/members/u1`, []), 400, "invalid_request");
    expectError(await srv.api("POST", `/api/rooms/${room.id}/messages`, []), 400, "invalid_request");
    expectError(await srv.api("POST", "/api/tokens", []), 400, "invalid_request");
    expectError(await srv.api("POST", "/api/tokens", { user_id: 7 }), 400, "invalid_request");
    expectError(await srv.api("POST", "/api/tokens", {}), 400, "invalid_request");
  });
});

// A scalar is valid JSON (RFC 8259) of the wrong type, not malformed JSON.
test("rest: a top-level JSON scalar body is 400 invalid_request, not invalid_json", async () => {
  await srv.putUser("u1");
  await unchanged(async () => {
    for (const body of ["42", '"a string"', "null", "true"]) {
      expectError(await srv.api("POST", "/api/rooms", body), 400, "invalid_request");
      expectError(await srv.api("PUT", "/api/users/u1", body), 400, "invalid_request");
    }
  });
});

test("rest: unknown route is 404 not_found, wrong method is 405 method_not_allowed", async () => {
  const room = await srv.mkRoom();
  await unchanged(async () => {
    expectError(await srv.api("GET", "/api/nope"), 404, "not_found");
    expectError(await srv.api("POST", "/api/nope", { a: 1 }), 404, "not_found");
    expectError(await srv.api("GET", `/api/rooms/${room.id}/nope`), 404, "not_found");
    expectError(await srv.api("GET", "/nope"), 404, "not_found");
    expectError(await srv.api("PUT", "/api/tokens", { user_id: "a" }), 405, "method_not_allowed");
    expectError(await srv.api("GET", "/api/tokens"), 405, "method_not_allowed");
    expectError(await srv.api("DELETE", "/api/tokens"), 405, "method_not_allowed");
    expectError(await srv.api("DELETE", "/api/rooms"), 405, "method_not_allowed");
    expectError(await srv.api("POST", `/api/rooms/${room.id}`, { id: room.id, name: "x" }), 405, "method_not_allowed");
    expectError(await srv.api("POST", `/api/rooms/${room.id}/members/u1`, { role: "member" }), 405, "method_not_allowed");
  });
});

test("rest: a body over 64 KiB is 413 payload_too_large; exactly 64 KiB is accepted", async () => {
  const room = await srv.mkRoom();
  await srv.putUser("big");
  // A valid message request padded with JSON whitespace to an exact size in bytes.
  const padded = (size) => {
    const base = JSON.stringify({ user_id: "big", body: "x".repeat(100) });
    return base + " ".repeat(size - Buffer.byteLength(base));
  };
  await unchanged(async () => {
    expectError(await srv.api("POST", `/api/rooms/${room.id}/messages`, padded(65537)), 413, "payload_too_large");
    expectError(await srv.api("POST", `/api/rooms/${room.id}/messages`, padded(200000)), 413, "payload_too_large");
    expectError(await srv.api("PUT", "/api/users/big", { name: "y".repeat(70000) }), 413, "payload_too_large");
  });
  const ok = await srv.api("POST", `/api/rooms/${room.id}/messages`, padded(65536));
  expectStatus(ok, 201);
  assert.equal(ok.body.seq, 1);
});

// ---- users -----------------------------------------------------------------------------

test("rest: PUT /api/users/{id} creates and updates (upsert)", async () => {
  const id = uid("user");
  const r1 = await srv.api("PUT", `/api/users/${id}`, { name: "Ann", avatar_url: "https://x.test/a.png" });
  expectStatus(r1, 200);
  assert.equal(r1.body.id, id);
  assert.equal(r1.body.name, "Ann");
  assert.equal(r1.body.avatar_url, "https://x.test/a.png");
  assert.equal(typeof r1.body.created_at, "string");
  assert.ok(!Number.isNaN(Date.parse(r1.body.created_at)), `created_at parses: ${r1.body.created_at}`);

  const r2 = await srv.api("PUT", `/api/users/${id}`, { name: "Ann B." });
  expectStatus(r2, 200);
  assert.equal(r2.body.id, id);
  assert.equal(r2.body.name, "Ann B.");
  assert.equal(r2.body.avatar_url, null, "avatar_url omitted → null");
  assert.equal(r2.body.created_at, r1.body.created_at, "an update keeps created_at");

  // the name shows in member lists
  const room = await srv.mkRoom();
  await srv.addMember(room.id, id, "member");
  const m = expectStatus(await srv.api("GET", `/api/rooms/${room.id}/members`), 200);
  assert.equal(m.members.length, 1);
  hasFields(m.members[0], { user_id: id, role: "member", name: "Ann B." }, "member");
  const rows = await srv.sql(`SELECT count(*) FROM users WHERE id='${id}'`);
  assert.equal(rows.trim(), "1", "one users row after two PUTs");
});

// ---- rooms -----------------------------------------------------------------------------

test("rest: POST /api/rooms creates a room; GET returns it; duplicate is 409 conflict", async () => {
  const id = uid("room");
  const r = await srv.api("POST", "/api/rooms", { id, name: "General" });
  expectStatus(r, 201);
  assert.equal(r.body.id, id);
  assert.equal(r.body.name, "General");
  assert.equal(r.body.last_seq, 0);
  assert.equal(typeof r.body.created_at, "string");
  assert.ok(!Number.isNaN(Date.parse(r.body.created_at)));

  const g = await srv.api("GET", `/api/rooms/${id}`);
  expectStatus(g, 200);
  assert.deepEqual(g.body, r.body);

  await unchanged(async () => {
    expectError(await srv.api("POST", "/api/rooms", { id, name: "Other" }), 409, "conflict");
  });
  const g2 = await srv.api("GET", `/api/rooms/${id}`);
  assert.equal(g2.body.name, "General", "a conflicting POST does not rename the room");
});

test("rest: room ids must be 1..100 chars of [A-Za-z0-9_.-] (422 invalid_room_id)", async () => {
  await unchanged(async () => {
    for (const bad of ["", "a".repeat(101), "a b", "a/b", "room:1", "ü", "tab\tx", "semi;colon", "quote'", "percent%41"]) {
      expectError(await srv.api("POST", "/api/rooms", { id: bad, name: "x" }), 422, "invalid_room_id");
    }
  });
  for (const good of ["a".repeat(100), "A-Z_a.z-0.9", uid("Mixed_Case.")]) {
    const r = await srv.api("POST", "/api/rooms", { id: good, name: "ok" });
    expectStatus(r, 201);
    assert.equal(r.body.id, good);
    expectStatus(await srv.api("GET", `/api/rooms/${enc(good)}`), 200);
  }
});

test("rest: GET/DELETE of a missing room is 404 not_found", async () => {
  await unchanged(async () => {
    expectError(await srv.api("GET", "/api/rooms/no-such-room"), 404, "not_found");
    expectError(await srv.api("DELETE", "/api/rooms/no-such-room"), 404, "not_found");
    expectError(await srv.api("GET", "/api/rooms/no-such-room/members"), 404, "not_found");
    expectError(await srv.api("GET", "/api/rooms/no-such-room/messages"), 404, "not_found");
  });
});

test("rest: DELETE /api/rooms/{id} is 204 and removes its members and messages", async () => {
  const id = await srv.roomWith({ del_a: "owner", del_b: "member" });
  await srv.postMessage(id, "del_a", "one");
  await srv.postMessage(id, "del_b", "two");
  const d = await srv.api("DELETE", `/api/rooms/${id}`);
  expectStatus(d, 204);
  assert.equal(d.text, "", "204 has no body");
  expectError(await srv.api("GET", `/api/rooms/${id}`), 404, "not_found");
  expectError(await srv.api("DELETE", `/api/rooms/${id}`), 404, "not_found");
  assert.equal((await srv.sql(`SELECT count(*) FROM messages WHERE room_id='${id}'`)).trim(), "0");
  assert.equal((await srv.sql(`SELECT count(*) FROM memberships WHERE room_id='${id}'`)).trim(), "0");
  // users themselves stay
  assert.equal((await srv.sql(`SELECT count(*) FROM users WHERE id IN ('del_a','del_b')`)).trim(), "2");
  // the id can be reused and starts over
  const again = await srv.mkRoom(id, "again");
  assert.equal(again.last_seq, 0);
  assert.deepEqual(await srv.getMessages(id), []);
  assert.deepEqual(expectStatus(await srv.api("GET", `/api/rooms/${id}/members`), 200).members, []);
  const m = await srv.postMessage(id, "del_a", "fresh");
  assert.equal(m.seq, 1, "seq restarts at 1 in a re-created room");
});

// ---- members ---------------------------------------------------------------------------

test("rest: members: put (upsert), list sorted by user_id, delete", async () => {
  const room = await srv.mkRoom();
  await srv.putUser("mem_zed", "Zed");
  await srv.putUser("mem_amy", "Amy");
  const r = await srv.api("PUT", `/api/rooms/${room.id}/members/mem_zed`, { role: "viewer" });
  expectStatus(r, 200);
  hasFields(r.body, { room_id: room.id, user_id: "mem_zed", role: "viewer" }, "PUT member response");
  await srv.addMember(room.id, "mem_amy", "owner");
  await srv.addMember(room.id, "mem_kim", "editor"); // no users row yet: created
  await srv.addMember(room.id, "mem_bob", "member");
  // role upsert
  const up = await srv.api("PUT", `/api/rooms/${room.id}/members/mem_zed`, { role: "editor" });
  expectStatus(up, 200);
  hasFields(up.body, { room_id: room.id, user_id: "mem_zed", role: "editor" }, "PUT member response");

  const list = expectStatus(await srv.api("GET", `/api/rooms/${room.id}/members`), 200);
  assert.ok(Array.isArray(list.members));
  assert.deepEqual(
    list.members.map((m) => [m.user_id, m.role]),
    [
      ["mem_amy", "owner"],
      ["mem_bob", "member"],
      ["mem_kim", "editor"],
      ["mem_zed", "editor"],
    ]
  );
  assert.equal(list.members[0].name, "Amy");
  assert.equal(list.members[3].name, "Zed");
  for (const m of list.members) assert.ok("name" in m, "every member has a name key");
  assert.equal((await srv.sql("SELECT count(*) FROM users WHERE id='mem_kim'")).trim(), "1", "PUT member creates the user row");

  const d = await srv.api("DELETE", `/api/rooms/${room.id}/members/mem_bob`);
  expectStatus(d, 204);
  assert.equal(d.text, "");
  await unchanged(async () => {
    expectError(await srv.api("DELETE", `/api/rooms/${room.id}/members/mem_bob`), 404, "not_found");
    expectError(await srv.api("DELETE", `/api/rooms/${room.id}/members/never_was`), 404, "not_found");
  });
  const list2 = expectStatus(await srv.api("GET", `/api/rooms/${room.id}/members`), 200);
  assert.deepEqual(
    list2.members.map((m) => m.user_id),
    ["mem_amy", "mem_kim", "mem_zed"]
  );
});

test("rest: members: bad role is 422 invalid_role, unknown room is 404", async () => {
  const room = await srv.mkRoom();
  await srv.addMember(room.id, "role_u", "member");
  await unchanged(async () => {
    for (const role of ["admin", "", "Owner", "owner ", "members"]) {
      expectError(await srv.api("PUT", `/api/rooms/${room.id}/members/role_u`, { role }), 422, "invalid_role");
    }
    expectError(await srv.api("PUT", "/api/rooms/no-such-room/members/role_u", { role: "member" }), 404, "not_found");
    expectError(await srv.api("DELETE", "/api/rooms/no-such-room/members/role_u"), 404, "not_found");
  });
  const list = expectStatus(await srv.api("GET", `/api/rooms/${room.id}/members`), 200);
  assert.deepEqual(
    list.members.map((m) => [m.user_id, m.role]),
    [["role_u", "member"]]
  );
  for (const role of ["owner", "editor", "member", "viewer"]) {
    const r = await srv.api("PUT", `/api/rooms/${room.id}/members/role_u`, { role });
    expectStatus(r, 200);
    assert.equal(r.body.role, role);
  }
});

// ---- messages --------------------------------------------------------------------------

test("rest: POST messages returns {id, seq, inserted_at}; seq is per room and gapless", async () => {
  const a = await srv.roomWith({ msg_u: "member" });
  const b = await srv.roomWith({ msg_u: "member" });
  const t0 = Date.now();
  const m1 = await srv.postMessage(a, "msg_u", "first");
  const m2 = await srv.postMessage(a, "msg_u", "second");
  const n1 = await srv.postMessage(b, "msg_u", "other room");
  const m3 = await srv.postMessage(a, "msg_u", "third");
  for (const m of [m1, m2, n1, m3]) {
    assert.ok(m.id !== undefined && m.id !== null, "id present");
    assertIsoUtc(m.inserted_at, "inserted_at");
    const t = Date.parse(m.inserted_at);
    assert.ok(t >= t0 - 5000 && t <= Date.now() + 5000, `inserted_at ${m.inserted_at} is now`);
  }
  assert.deepEqual([m1.seq, m2.seq, m3.seq], [1, 2, 3]);
  assert.equal(n1.seq, 1);
  assert.equal(new Set([m1.id, m2.id, m3.id, n1.id]).size, 4, "ids are unique");
  const g = expectStatus(await srv.api("GET", `/api/rooms/${a}`), 200);
  assert.equal(g.last_seq, 3, "last_seq follows the messages");
  assert.equal(expectStatus(await srv.api("GET", `/api/rooms/${b}`), 200).last_seq, 1);

  const list = await srv.getMessages(a);
  assert.deepEqual(
    list.map((m) => [m.id, m.seq, m.user_id, m.body, m.inserted_at]),
    [m1, m2, m3].map((m, i) => [m.id, m.seq, "msg_u", ["first", "second", "third"][i], m.inserted_at])
  );
});

test("rest: message bodies round-trip exactly (unicode, quotes, newlines)", async () => {
  const room = await srv.roomWith({ uni: "member" });
  const bodies = ["héllo wörld", "emoji 😀👍🏽 and 𝄞", 'quotes " and \\ backslash', "line1\nline2\ttab", "  padded  ", "<b>html</b> & stuff"];
  for (const b of bodies) await srv.postMessage(room, "uni", b);
  const got = await srv.getMessages(room);
  assert.deepEqual(
    got.map((m) => m.body),
    bodies
  );
});

test("rest: message validation (message_empty, message_too_long, invalid_message, invalid_request, 404)", async () => {
  const room = await srv.roomWith({ val_u: "member" });
  await srv.postMessage(room, "val_u", "before");
  const url = `/api/rooms/${room}/messages`;
  await unchanged(async () => {
    for (const body of ["", " ", "   \n\t  ", "\r\n"]) {
      expectError(await srv.api("POST", url, { user_id: "val_u", body }), 422, "message_empty");
    }
    for (const body of ["a".repeat(10001), "é".repeat(10001), "😀".repeat(10001), "a".repeat(20000)]) {
      expectError(await srv.api("POST", url, { user_id: "val_u", body }), 422, "message_too_long");
    }
    for (const body of [5, null, {}, { text: "hi" }, ["hi"], true]) {
      expectError(await srv.api("POST", url, { user_id: "val_u", body }), 422, "invalid_message");
    }
    expectError(await srv.api("POST", url, { user_id: "val_u" }), 422, "invalid_message");
    expectError(await srv.api("POST", url, { body: "no user" }), 400, "invalid_request");
    expectError(await srv.api("POST", url, { user_id: 5, body: "x" }), 400, "invalid_request");
    expectError(await srv.api("POST", url, { user_id: null, body: "x" }), 400, "invalid_request");
    expectError(await srv.api("POST", "/api/rooms/no-such-room/messages", { user_id: "val_u", body: "x" }), 404, "not_found");
  });
  // the limit is 10000 code points, not bytes or UTF-16 units
  for (const body of ["a".repeat(10000), "é".repeat(10000), "😀".repeat(10000)]) {
    const r = await srv.api("POST", url, { user_id: "val_u", body });
    expectStatus(r, 201);
  }
  const msgs = await srv.getMessages(room);
  assert.deepEqual(
    msgs.map((m) => m.seq),
    [1, 2, 3, 4],
    "failed posts consumed no seq"
  );
  assert.equal(msgs[3].body, "😀".repeat(10000));
});

test("rest: GET messages paging: default last 50, limit, after_seq, before_seq", async () => {
  const room = await srv.roomWith({ pg: "member" });
  for (let i = 1; i <= 120; i++) await srv.postMessage(room, "pg", `m${i}`);
  const seqs = (list) => list.map((m) => m.seq);
  const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

  const def = await srv.getMessages(room);
  assert.deepEqual(seqs(def), range(71, 120), "no params → the last 50, oldest first");
  for (const m of def) {
    hasKeys(m, ["body", "id", "inserted_at", "seq", "user_id"], "message");
    assert.equal(m.body, `m${m.seq}`);
    assert.equal(m.user_id, "pg");
    assertIsoUtc(m.inserted_at);
  }
  assert.deepEqual(seqs(await srv.getMessages(room, "limit=10")), range(111, 120));
  assert.deepEqual(seqs(await srv.getMessages(room, "limit=1")), [120]);
  assert.deepEqual(seqs(await srv.getMessages(room, "limit=200")), range(1, 120));
  assert.deepEqual(seqs(await srv.getMessages(room, "after_seq=0&limit=5")), range(1, 5));
  assert.deepEqual(seqs(await srv.getMessages(room, "after_seq=0")), range(1, 50), "after_seq → the first `limit` after it");
  assert.deepEqual(seqs(await srv.getMessages(room, "after_seq=115")), range(116, 120));
  assert.deepEqual(seqs(await srv.getMessages(room, "after_seq=120")), []);
  assert.deepEqual(seqs(await srv.getMessages(room, "after_seq=500")), []);
  assert.deepEqual(seqs(await srv.getMessages(room, "after_seq=60&limit=3")), [61, 62, 63]);
  assert.deepEqual(seqs(await srv.getMessages(room, "before_seq=11&limit=5")), range(6, 10));
  assert.deepEqual(seqs(await srv.getMessages(room, "before_seq=3")), [1, 2]);
  assert.deepEqual(seqs(await srv.getMessages(room, "before_seq=1")), []);
  assert.deepEqual(seqs(await srv.getMessages(room, "before_seq=100")), range(50, 99), "before_seq → the last `limit` before it");
  assert.deepEqual(seqs(await srv.getMessages(room, "before_seq=1000&limit=2")), [119, 120]);

  const url = `/api/rooms/${room}/messages`;
  for (const q of ["limit=0", "limit=201", "limit=abc", "limit=1.5", "limit=-1", "limit=10x"]) {
    expectError(await srv.api("GET", `${url}?${q}`), 422, "invalid_limit");
  }
  for (const q of ["after_seq=abc", "after_seq=1.5", "before_seq=x", "before_seq=2.0", "after_seq=7z"]) {
    expectError(await srv.api("GET", `${url}?${q}`), 422, "invalid_seq");
  }
});

test("rest: concurrent POSTs get every seq exactly once (200 in one room, 100 over two)", async () => {
  const one = await srv.roomWith({ cc: "member" });
  const r1 = await Promise.all(
    Array.from({ length: 200 }, (_, i) => srv.api("POST", `/api/rooms/${one}/messages`, { user_id: "cc", body: `c${i}` }))
  );
  for (const r of r1) expectStatus(r, 201);
  assert.deepEqual(
    r1.map((r) => r.body.seq).sort((a, b) => a - b),
    Array.from({ length: 200 }, (_, i) => i + 1)
  );
  assert.equal(new Set(r1.map((r) => String(r.body.id))).size, 200, "200 distinct ids");
  const stored = await srv.getMessages(one, "limit=200");
  assert.deepEqual(
    stored.map((m) => m.seq),
    Array.from({ length: 200 }, (_, i) => i + 1)
  );
  // each stored message carries the seq its POST was answered with
  const bySeq = new Map(r1.map((r, i) => [r.body.seq, `c${i}`]));
  for (const m of stored) assert.equal(m.body, bySeq.get(m.seq), `seq ${m.seq} body`);
  assert.equal(expectStatus(await srv.api("GET", `/api/rooms/${one}`), 200).last_seq, 200);

  const a = await srv.roomWith({ cc: "member" });
  const b = await srv.roomWith({ cc: "member" });
  const r2 = await Promise.all(
    Array.from({ length: 100 }, (_, i) =>
      srv.api("POST", `/api/rooms/${i % 2 ? a : b}/messages`, { user_id: "cc", body: `d${i}` }).then((r) => ({ r, room: i % 2 ? a : b }))
    )
  );
  for (const { r } of r2) expectStatus(r, 201);
  for (const room of [a, b]) {
    const mine = r2.filter((x) => x.room === room).map((x) => x.r.body.seq).sort((x, y) => x - y);
    assert.deepEqual(mine, Array.from({ length: 50 }, (_, i) => i + 1), `room ${room} seqs`);
    assert.deepEqual(
      (await srv.getMessages(room, "limit=200")).map((m) => m.seq),
      Array.from({ length: 50 }, (_, i) => i + 1)
    );
  }
}, { timeout: 60000 });

test(`rest: a row inserted by ${IS_PG ? "psql" : "the sqlite3 CLI"} gets the next seq`, async () => {
  const room = await srv.roomWith({ bob: "member", ext_a: "member" });
  await srv.postMessage(room, "ext_a", "one");
  await srv.postMessage(room, "ext_a", "two");
  await srv.sql(`INSERT INTO messages(room_id,user_id,body) VALUES('${room}','bob','hi')`);
  const list = await srv.getMessages(room);
  assert.deepEqual(
    list.map((m) => [m.seq, m.user_id, m.body]),
    [
      [1, "ext_a", "one"],
      [2, "ext_a", "two"],
      [3, "bob", "hi"],
    ]
  );
  assertIsoUtc(list[2].inserted_at, "inserted_at of an externally inserted row");
  assert.equal(expectStatus(await srv.api("GET", `/api/rooms/${room}`), 200).last_seq, 3);
  // the server does not hand out a seq it cached before the external write
  const next = await srv.postMessage(room, "ext_a", "after");
  assert.equal(next.seq, 4);
});

// ---- tokens ----------------------------------------------------------------------------

test("rest: POST /api/tokens mints an HS256 JWT with sub and exp", async () => {
  const now = Math.floor(Date.now() / 1000);
  const r = await srv.api("POST", "/api/tokens", { user_id: "tok_alice" });
  expectStatus(r, 200);
  assert.equal(typeof r.body.token, "string");
  assert.ok("expires_at" in r.body, "expires_at present");
  const jwt = decodeJwt(r.body.token);
  assert.equal(jwt.header.alg, "HS256");
  assert.equal(jwt.payload.sub, "tok_alice");
  assert.ok(Number.isInteger(jwt.payload.exp), "exp is an integer");
  assert.ok(Math.abs(jwt.payload.exp - (now + 3600)) <= 10, `default ttl 3600: exp ${jwt.payload.exp}, now ${now}`);
  assert.ok(jwt.verify(srv.jwtSecret), "signed with the server's --jwt-secret");
  // expires_at names the same instant as exp (ISO string or Unix seconds)
  const ea = r.body.expires_at;
  const eaSec = typeof ea === "number" ? ea : Date.parse(ea) / 1000;
  assert.ok(Math.abs(eaSec - jwt.payload.exp) <= 1, `expires_at ${ea} matches exp ${jwt.payload.exp}`);

  for (const ttl of [1, 60, 31536000]) {
    const t = await srv.api("POST", "/api/tokens", { user_id: "tok_bob", ttl });
    expectStatus(t, 200);
    const p = decodeJwt(t.body.token).payload;
    assert.equal(p.sub, "tok_bob");
    assert.ok(Math.abs(p.exp - (Math.floor(Date.now() / 1000) + ttl)) <= 10, `ttl ${ttl}: exp ${p.exp}`);
  }
});

test("rest: POST /api/tokens with ttl outside 1..31536000 is 422 invalid_ttl", async () => {
  await unchanged(async () => {
    for (const ttl of [0, -1, 31536001, 99999999999]) {
      expectError(await srv.api("POST", "/api/tokens", { user_id: "a", ttl }), 422, "invalid_ttl");
    }
  });
});

// ---- CLI -------------------------------------------------------------------------------

test("cli: --version prints a version and exits 0", async () => {
  const r = await runCli(["--version"]);
  assert.equal(r.code, 0, `exit code; stderr: ${r.stderr}`);
  assert.match(r.stdout, /\d+\.\d+\.\d+/);
});

test("cli: --help exits 0 and mentions serve, migrate, token", async () => {
  const r = await runCli(["--help"]);
  assert.equal(r.code, 0, `exit code; stderr: ${r.stderr}`);
  const out = r.stdout + r.stderr;
  for (const w of ["serve", "migrate", "token"]) assert.match(out, new RegExp(`\\b${w}\\b`), `--help mentions ${w}`);
});

test("cli: token --user alice --ttl 60 --jwt-secret S prints one JWT for alice", async () => {
  const now = Math.floor(Date.now() / 1000);
  const r = await runCli(["token", "--user", "alice", "--ttl", "60", "--jwt-secret", "S3cret-for-test"]);
  assert.equal(r.code, 0, `exit code; stderr: ${r.stderr}`);
  const lines = r.stdout.split("\n").filter((l) => l.trim() !== "");
  assert.equal(lines.length, 1, `one line on stdout, got ${JSON.stringify(r.stdout)}`);
  const jwt = decodeJwt(lines[0].trim());
  assert.equal(jwt.header.alg, "HS256");
  assert.equal(jwt.payload.sub, "alice");
  assert.ok(Math.abs(jwt.payload.exp - (now + 60)) <= 10, `exp ${jwt.payload.exp} ≈ now + 60`);
  assert.ok(jwt.verify("S3cret-for-test"), "signed with the given secret");
});

test(`cli: migrate --db ${IS_PG ? "postgres://…" : "sqlite:PATH"} works twice`, async () => {
  if (IS_PG) {
    const db = await createPgDatabase();
    try {
      const r1 = await runCli(["migrate", "--db", db.url], { timeoutMs: 30000 });
      assert.equal(r1.code, 0, `first migrate; stderr: ${r1.stderr}`);
      const r2 = await runCli(["migrate", "--db", db.url], { timeoutMs: 30000 });
      assert.equal(r2.code, 0, `second migrate; stderr: ${r2.stderr}`);
      const tables = await sql(db.url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'");
      for (const t of ["users", "rooms", "memberships", "messages", "nodes", "presences"]) {
        assert.match(tables, new RegExp(`^${t}$`, "m"), `table ${t}`);
      }
      const applied = Number((await sql(db.url, "SELECT count(*) FROM schema_migrations")).trim());
      assert.ok(applied >= 1, `schema_migrations has ${applied} rows`);
      const again = Number((await sql(db.url, "SELECT count(*) FROM schema_migrations")).trim());
      assert.equal(again, applied);
    } finally {
      await db.drop();
    }
    return;
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), "rowcast-e2e-mig-"));
  try {
    const db = path.join(dir, "x.db");
    const r1 = await runCli(["migrate", "--db", `sqlite:${db}`]);
    assert.equal(r1.code, 0, `first migrate; stderr: ${r1.stderr}`);
    assert.ok(existsSync(db), "the database file exists");
    const r2 = await runCli(["migrate", "--db", `sqlite:${db}`]);
    assert.equal(r2.code, 0, `second migrate; stderr: ${r2.stderr}`);
    const { stdout } = await execFileP("sqlite3", [db, ".tables"]);
    for (const t of ["users", "rooms", "memberships", "messages"]) assert.match(stdout, new RegExp(`\\b${t}\\b`), `table ${t}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("cli: an unknown flag exits non-zero with a message on stderr", async () => {
  for (const args of [["--no-such-flag"], ["serve", "--no-such-flag", "1"], ["migrate", "--bogus"], ["token", "--user", "a", "--frobnicate"]]) {
    const r = await runCli(args, { timeoutMs: 5000 });
    assert.ok(!r.timedOut, `rowcast ${args.join(" ")} must exit, not keep running`);
    assert.notEqual(r.code, 0, `rowcast ${args.join(" ")} exit code`);
    assert.ok(r.stderr.trim().length > 0, `rowcast ${args.join(" ")} explains on stderr`);
  }
});

test("cli: serve --db with an unsupported scheme (mysql://x) is refused with a clear message", async () => {
  for (const url of ["mysql://x", "x.db"]) {
    const r = await runCli(["serve", "--db", url, "--listen", "127.0.0.1:0", "--jwt-secret", "s", "--api-key", "k"], {
      timeoutMs: 5000,
    });
    assert.ok(!r.timedOut, `serve --db ${url} must exit, not start serving`);
    assert.notEqual(r.code, 0, `serve --db ${url} exit code`);
    assert.doesNotMatch(r.stderr, /msg="?listening/, `serve --db ${url} must not listen: ${r.stderr}`);
    assert.match(r.stderr, /--db|database|scheme|sqlite|postgres/i, `stderr explains the --db value: ${r.stderr}`);
  }
});
