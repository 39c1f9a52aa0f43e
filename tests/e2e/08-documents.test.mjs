// 08-documents: the document:<id> channel — access level from the room membership role,
// join reply {access_level, last_seq}, document_operations (last 50 / after last_seq),
// edit (validation, permissions, gapless per-document seq, document_updated broadcast),
// replay after missed edits, concurrent editors, REST broadcast to a document topic.
import { before, after } from "node:test";
import assert from "node:assert/strict";
import {
  test,
  startServer,
  uid,
  joinP,
  joinOk,
  pushP,
  leaveP,
  nextEvent,
  noEvent,
  pending,
  assertIsoUtc,
  hasKeys,
} from "./lib/server.js";

let srv;
// No rate limit here: these tests send bursts of edits (09-limits covers the limit).
before(async () => {
  srv = await startServer({ args: ["--rate-limit", "0"] });
});
after(async () => {
  await srv?.stop();
});

// Room/document with owner, editor, member, viewer; dave exists but is no member.
async function scene() {
  const u = {
    owner: uid("d_owner_"),
    editor: uid("d_editor_"),
    member: uid("d_member_"),
    viewer: uid("d_viewer_"),
    dave: uid("d_dave_"),
  };
  const room = await srv.roomWith({ [u.owner]: "owner", [u.editor]: "editor", [u.member]: "member", [u.viewer]: "viewer" });
  await srv.putUser(u.dave);
  return { room, topic: `document:${room}`, ...u };
}

// Joins on a new socket; returns {s, ch, reply, ops (the document_operations list)}.
async function docJoin(user, topic, params) {
  const s = await srv.socket(user);
  const ch = s.channel(topic, params);
  const reply = await joinOk(ch);
  const ev = await nextEvent(ch, "document_operations");
  assert.deepEqual(Object.keys(ev), ["operations"], `document_operations payload ${JSON.stringify(ev).slice(0, 200)}`);
  assert.ok(Array.isArray(ev.operations));
  return { s, ch, reply, ops: ev.operations };
}

function assertOp(op, want) {
  hasKeys(op, ["seq", "operation", "data", "user_id", "inserted_at"], "operation");
  assertIsoUtc(op.inserted_at, "operation inserted_at");
  for (const [k, v] of Object.entries(want)) assert.deepEqual(op[k], v, `operation.${k} in ${JSON.stringify(op)}`);
}

// document_updated carries {seq, operation, data, user_id}; extra fields (such as
// inserted_at) are tolerated.
function assertUpdated(u, want, what) {
  hasKeys(u, ["seq", "operation", "data", "user_id"], what);
  assert.deepEqual({ seq: u.seq, operation: u.operation, data: u.data, user_id: u.user_id }, want, what);
}

async function edit(ch, operation, data) {
  const payload = { operation };
  if (data !== undefined) payload.data = data;
  const r = await pushP(ch, "edit", payload);
  assert.equal(r.status, "ok", `edit ${operation}: ${JSON.stringify(r)}`);
  assert.deepEqual(Object.keys(r.response), ["seq"], `edit reply ${JSON.stringify(r.response)}`);
  return r.response.seq;
}

test("document: access_level from the room role; non-members and unknown rooms are refused", async () => {
  const sc = await scene();
  for (const [user, level] of [
    [sc.owner, "owner"],
    [sc.editor, "editor"],
    [sc.member, "editor"],
    [sc.viewer, "viewer"],
  ]) {
    const j = await docJoin(user, sc.topic);
    assert.deepEqual(j.reply, { access_level: level, last_seq: 0 }, `join reply for a room ${level}`);
    assert.deepEqual(j.ops, []);
  }
  const s = await srv.socket(sc.dave);
  const r = await joinP(s.channel(sc.topic));
  assert.equal(r.status, "error", `non-member join: ${JSON.stringify(r)}`);
  assert.deepEqual(r.response, { reason: "unauthorized" }, "non-member join reason");
  const r2 = await joinP(s.channel("document:no-such-room-here"));
  assert.equal(r2.status, "error", `unknown document join: ${JSON.stringify(r2)}`);
  assert.deepEqual(r2.response, { reason: "not_found" }, "unknown document join reason");
});

test("document: edit replies {seq} and broadcasts document_updated to everyone, sender included", async () => {
  const sc = await scene();
  const o = await docJoin(sc.owner, sc.topic);
  const e = await docJoin(sc.editor, sc.topic);
  const m = await docJoin(sc.member, sc.topic);
  const v = await docJoin(sc.viewer, sc.topic);
  const all = [o, e, m, v];
  const cases = [
    [o, sc.owner, "insert", { pos: 0, text: "Hello" }],
    [e, sc.editor, "delete", { pos: 1, len: 2 }],
    [m, sc.member, "format", [1, "two", { three: 3 }, null]],
    [o, sc.owner, "set_title", "plain string data"],
    [e, sc.editor, "counter", 42],
    [m, sc.member, "x".repeat(100), { ok: true }],
    [o, sc.owner, "é".repeat(100), null],
  ];
  let seq = 0;
  for (const [who, user, operation, data] of cases) {
    seq++;
    assert.equal(await edit(who.ch, operation, data), seq, `seq of edit ${seq}`);
    for (const j of all) {
      assertUpdated(await nextEvent(j.ch, "document_updated"), { seq, operation, data, user_id: user }, `document_updated ${seq}`);
    }
  }
  // data is optional
  seq++;
  assert.equal(await edit(o.ch, "no_data"), seq);
  for (const j of all) {
    const upd = await nextEvent(j.ch, "document_updated");
    assert.equal(upd.seq, seq);
    assert.equal(upd.operation, "no_data");
    assert.equal(upd.user_id, sc.owner);
    assert.ok(upd.data === null || upd.data === undefined, `data of an edit without data: ${JSON.stringify(upd)}`);
  }
  for (const j of all) await noEvent(j.ch, "document_updated", j === o ? 300 : 0);
  // a fresh join sees them all, in order, with inserted_at
  const f = await docJoin(sc.viewer, sc.topic);
  assert.equal(f.reply.last_seq, seq);
  assert.deepEqual(
    f.ops.slice(0, cases.length).map((op) => [op.seq, op.operation, op.data, op.user_id]),
    cases.map(([, user, operation, data], i) => [i + 1, operation, data, user])
  );
  f.ops.forEach((op) => assertOp(op, {}));
});

test("document: a viewer's edit is insufficient_permissions; bad operations are invalid_operation; nothing broadcast", async () => {
  const sc = await scene();
  const o = await docJoin(sc.owner, sc.topic);
  const v = await docJoin(sc.viewer, sc.topic);
  assert.deepEqual(await pushP(v.ch, "edit", { operation: "insert", data: { t: "x" } }), {
    status: "error",
    response: { reason: "insufficient_permissions" },
  });
  for (const payload of [
    { operation: "" },
    { operation: "x".repeat(101) },
    { operation: "é".repeat(101) },
    { operation: 5 },
    { operation: null },
    { operation: ["insert"] },
    { data: { t: 1 } },
    {},
  ]) {
    assert.deepEqual(
      await pushP(o.ch, "edit", payload),
      { status: "error", response: { reason: "invalid_operation" } },
      `edit ${JSON.stringify(payload).slice(0, 60)}`
    );
  }
  for (const j of [o, v]) await noEvent(j.ch, "document_updated", j === o ? 400 : 0);
  // nothing stored: the next edit is seq 1, a new join says last_seq 1
  assert.equal(await edit(o.ch, "first"), 1);
  const j = await docJoin(sc.viewer, sc.topic);
  assert.equal(j.reply.last_seq, 1);
  assert.deepEqual(j.ops.map((x) => x.seq), [1]);
  // unknown events
  assert.deepEqual(await pushP(o.ch, "whatever", {}), { status: "error", response: { reason: "unknown_event" } });
});

test("document: join gets the last 50 operations, oldest first; {last_seq: N} gets exactly those after N", async () => {
  const sc = await scene();
  const o = await docJoin(sc.owner, sc.topic);
  for (let i = 1; i <= 60; i++) assert.equal(await edit(o.ch, `op${i}`, { i }), i);
  const j = await docJoin(sc.editor, sc.topic);
  assert.deepEqual(j.reply, { access_level: "editor", last_seq: 60 });
  assert.deepEqual(
    j.ops.map((op) => [op.seq, op.operation, op.data, op.user_id]),
    Array.from({ length: 50 }, (_, k) => [k + 11, `op${k + 11}`, { i: k + 11 }, sc.owner])
  );
  j.ops.forEach((op) => assertOp(op, {}));
  const s = await srv.socket(sc.viewer);
  for (const [n, want] of [
    [55, [56, 57, 58, 59, 60]],
    [59, [60]],
    [60, []],
    [0, Array.from({ length: 50 }, (_, k) => k + 1)],
  ]) {
    const ch = s.channel(sc.topic, { last_seq: n });
    const r = await joinOk(ch);
    assert.deepEqual(r, { access_level: "viewer", last_seq: 60 });
    const ev = await nextEvent(ch, "document_operations");
    const seqs = ev.operations.map((op) => op.seq);
    if (n === 0) {
      // 60 operations follow seq 0; the contract does not say whether a cap applies or
      // whether 0 means "no last_seq" (then the last 50): a gapless run of at least 50,
      // starting at 1 or ending at 60
      assert.ok(seqs.length >= 50, `last_seq 0: ${seqs.length} operations`);
      seqs.forEach((x, i) => i && assert.equal(x, seqs[i - 1] + 1, `last_seq 0: gapless ${seqs}`));
      assert.ok(seqs[0] === 1 || seqs.at(-1) === 60, `last_seq 0: ${seqs}`);
    } else {
      assert.deepEqual(seqs, want, `last_seq ${n}`);
    }
    await leaveP(ch);
  }
});

test("document: replay — a client that saw seq 2 rejoins with {last_seq: 2} and gets exactly 3, 4, 5", async () => {
  const sc = await scene();
  const a = await docJoin(sc.editor, sc.topic);
  const o = await docJoin(sc.owner, sc.topic);
  let lastSeen = 0;
  for (const op of ["a", "b"]) {
    await edit(o.ch, op, { op });
    lastSeen = (await nextEvent(a.ch, "document_updated")).seq;
  }
  assert.equal(lastSeen, 2);
  await srv.disconnectP(a.s);
  for (const op of ["c", "d", "e"]) await edit(o.ch, op, { op });
  const b = await docJoin(sc.editor, sc.topic, { last_seq: lastSeen });
  assert.equal(b.reply.last_seq, 5);
  assert.deepEqual(
    b.ops.map((x) => [x.seq, x.operation, x.data, x.user_id]),
    [
      [3, "c", { op: "c" }, sc.owner],
      [4, "d", { op: "d" }, sc.owner],
      [5, "e", { op: "e" }, sc.owner],
    ]
  );
  // and live edits continue from there
  assert.equal(await edit(b.ch, "f"), 6);
  const seen = [];
  for (let i = 0; i < 6; i++) seen.push((await nextEvent(o.ch, "document_updated")).seq);
  assert.deepEqual(seen, [1, 2, 3, 4, 5, 6], "the owner saw every edit once, in order");
  assert.equal((await nextEvent(b.ch, "document_updated")).seq, 6);
});

test("document: seq is per document and gapless under concurrent editors", async () => {
  const sc = await scene();
  const room2 = await srv.roomWith({ [sc.owner]: "owner" });
  const o = await docJoin(sc.owner, sc.topic);
  const e = await docJoin(sc.editor, sc.topic);
  const m = await docJoin(sc.member, sc.topic);
  const o2 = await docJoin(sc.owner, `document:${room2}`);
  const N = 20;
  const push = (j, tag) => Array.from({ length: N }, (_, i) => pushP(j.ch, "edit", { operation: `${tag}${i}`, data: { i } }));
  const results = await Promise.all([...push(o, "o"), ...push(e, "e"), ...push(m, "m"), ...push(o2, "x")]);
  results.forEach((r) => assert.equal(r.status, "ok", JSON.stringify(r)));
  const seqs1 = results.slice(0, 3 * N).map((r) => r.response.seq).sort((x, y) => x - y);
  assert.deepEqual(seqs1, Array.from({ length: 3 * N }, (_, i) => i + 1), "document 1: seqs 1..60, each once");
  const seqs2 = results.slice(3 * N).map((r) => r.response.seq);
  assert.deepEqual(seqs2, Array.from({ length: N }, (_, i) => i + 1), "document 2: its own seqs, in push order");
  // each sender's own edits got increasing seqs
  for (let k = 0; k < 3; k++) {
    const mine = results.slice(k * N, (k + 1) * N).map((r) => r.response.seq);
    assert.deepEqual(mine, [...mine].sort((x, y) => x - y), "one client's edits keep their order");
  }
  // every subscriber of document 1 sees 1..60 in order, and nothing of document 2
  for (const j of [o, e, m]) {
    const got = [];
    for (let i = 0; i < 3 * N; i++) got.push((await nextEvent(j.ch, "document_updated")).seq);
    assert.deepEqual(got, Array.from({ length: 3 * N }, (_, i) => i + 1));
  }
  const got2 = [];
  for (let i = 0; i < N; i++) got2.push((await nextEvent(o2.ch, "document_updated")).operation);
  assert.deepEqual(got2, Array.from({ length: N }, (_, i) => `x${i}`));
  await noEvent(o2.ch, "document_updated", 200);
  assert.deepEqual(pending(o.ch, "document_updated"), []);
}, { timeout: 30000 });

test("document: POST /api/broadcast to a document topic reaches its subscribers", async () => {
  const sc = await scene();
  const o = await docJoin(sc.owner, sc.topic);
  const v = await docJoin(sc.viewer, sc.topic);
  const r = await srv.api("POST", "/api/broadcast", { topic: sc.topic, event: "cursor", payload: { user: "x", pos: 3 } });
  assert.equal(r.status, 200, `broadcast answered ${r.status} ${r.text}`);
  for (const j of [o, v]) assert.deepEqual(await nextEvent(j.ch, "cursor"), { user: "x", pos: 3 });
  await noEvent(o.ch, "cursor", 300);
});
