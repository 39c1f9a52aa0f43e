// 03-room: the room:<id> channel with the real phoenix client: join rules, history,
// new_message, validation errors, typing, user_left, recovery with last_seq, REST and
// sqlite3 (or psql, in PostgreSQL mode) writes reaching subscribers.
import { before, after } from "node:test";
import assert from "node:assert/strict";
import {
  test,
  startServer,
  sleep,
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
  hasFields,
  IS_PG,
} from "./lib/server.js";

let srv;
before(async () => {
  srv = await startServer();
});
after(async () => {
  await srv?.stop();
});

// A room with owner alice, member bob, viewer carol (user ids made unique per test so
// tests never see each other's events); dave exists but is not a member.
async function scene() {
  const u = {
    alice: uid("alice_"),
    bob: uid("bob_"),
    carol: uid("carol_"),
    dave: uid("dave_"),
  };
  const room = await srv.roomWith({ [u.alice]: "owner", [u.bob]: "member", [u.carol]: "viewer" });
  await srv.putUser(u.dave);
  return { room, topic: `room:${room}`, ...u };
}

function assertMessage(m, want) {
  hasKeys(m, ["body", "id", "inserted_at", "seq", "user_id"], "message");
  assertIsoUtc(m.inserted_at);
  for (const [k, v] of Object.entries(want)) assert.deepEqual(m[k], v, `message ${k}`);
}

test("room: join replies {room_id, role, last_seq}, then an empty message_history", async () => {
  const sc = await scene();
  for (const [user, role] of [
    [sc.alice, "owner"],
    [sc.bob, "member"],
    [sc.carol, "viewer"],
  ]) {
    const s = await srv.socket(user);
    const ch = s.channel(sc.topic);
    const r = await joinP(ch);
    assert.equal(r.status, "ok", JSON.stringify(r));
    hasFields(r.response, { room_id: sc.room, role, last_seq: 0 }, "join reply");
    assert.deepEqual(await nextEvent(ch, "message_history"), { messages: [] });
  }
});

test("room: joining without membership is unauthorized; an unknown room is not_found", async () => {
  const sc = await scene();
  const s = await srv.socket(sc.dave);
  const r1 = await joinP(s.channel(sc.topic));
  assert.deepEqual(r1, { status: "error", response: { reason: "unauthorized" } });
  const r2 = await joinP(s.channel("room:no-such-room-here"));
  assert.deepEqual(r2, { status: "error", response: { reason: "not_found" } });
  // a membership granted afterwards lets the same socket in
  await srv.addMember(sc.room, sc.dave, "member");
  const r3 = await joinP(s.channel(sc.topic));
  assert.equal(r3.status, "ok");
  assert.equal(r3.response.role, "member");
});

test("room: message_history after join holds the room's messages, oldest first (last 50)", async () => {
  const sc = await scene();
  const posted = [];
  for (let i = 1; i <= 3; i++) posted.push(await srv.postMessage(sc.room, sc.bob, `hello ${i}`));
  const s = await srv.socket(sc.alice);
  const ch = s.channel(sc.topic);
  const r = await joinOk(ch);
  assert.equal(r.last_seq, 3);
  const h = await nextEvent(ch, "message_history");
  assert.equal(h.messages.length, 3);
  h.messages.forEach((m, i) => assertMessage(m, { id: posted[i].id, seq: i + 1, body: `hello ${i + 1}`, user_id: sc.bob }));

  // with more than 50, only the last 50
  for (let i = 4; i <= 60; i++) await srv.postMessage(sc.room, sc.bob, `hello ${i}`);
  const s2 = await srv.socket(sc.bob);
  const ch2 = s2.channel(sc.topic);
  assert.equal((await joinOk(ch2)).last_seq, 60);
  const h2 = await nextEvent(ch2, "message_history");
  assert.deepEqual(
    h2.messages.map((m) => m.seq),
    Array.from({ length: 50 }, (_, i) => i + 11)
  );
  assert.deepEqual(
    h2.messages.map((m) => m.body),
    Array.from({ length: 50 }, (_, i) => `hello ${i + 11}`)
  );
});

test("room: join with {last_seq: N} gets exactly the messages after N", async () => {
  const sc = await scene();
  for (let i = 1; i <= 8; i++) await srv.postMessage(sc.room, sc.bob, `m${i}`);
  const s = await srv.socket(sc.alice);
  for (const [n, want] of [
    [5, [6, 7, 8]],
    [0, [1, 2, 3, 4, 5, 6, 7, 8]],
    [7, [8]],
    [8, []],
  ]) {
    const ch = s.channel(sc.topic, { last_seq: n });
    await joinOk(ch);
    const h = await nextEvent(ch, "message_history");
    assert.deepEqual(
      h.messages.map((m) => [m.seq, m.body]),
      want.map((x) => [x, `m${x}`]),
      `last_seq ${n}`
    );
    await leaveP(ch);
  }
});

test("room: new_message gets {message_id, seq} and is broadcast to everyone, sender included", async () => {
  const sc = await scene();
  const sa = await srv.socket(sc.alice);
  const sb = await srv.socket(sc.bob);
  const ca = sa.channel(sc.topic);
  const cb = sb.channel(sc.topic);
  await joinOk(ca);
  await joinOk(cb);
  const r = await pushP(ca, "new_message", { body: "hi bob" });
  assert.equal(r.status, "ok", JSON.stringify(r));
  hasKeys(r.response, ["message_id", "seq"], "new_message reply");
  assert.equal(r.response.seq, 1);
  for (const ch of [ca, cb]) {
    const m = await nextEvent(ch, "new_message");
    assertMessage(m, { id: r.response.message_id, seq: 1, body: "hi bob", user_id: sc.alice });
  }
  const r2 = await pushP(cb, "new_message", { body: "hi alice 😀" });
  assert.equal(r2.status, "ok");
  assert.equal(r2.response.seq, 2);
  for (const ch of [ca, cb]) {
    assertMessage(await nextEvent(ch, "new_message"), { seq: 2, body: "hi alice 😀", user_id: sc.bob, id: r2.response.message_id });
  }
  // an editor may post too
  const ed = uid("editor_");
  await srv.addMember(sc.room, ed, "editor");
  const se = await srv.socket(ed);
  const ce = se.channel(sc.topic);
  await joinOk(ce);
  const r3 = await pushP(ce, "new_message", { body: "from the editor" });
  assert.equal(r3.status, "ok");
  assert.equal(r3.response.seq, 3);
  // the reply means committed: REST sees it at once
  const stored = await srv.getMessages(sc.room);
  assert.deepEqual(
    stored.map((m) => [m.id, m.seq, m.user_id, m.body]),
    [
      [r.response.message_id, 1, sc.alice, "hi bob"],
      [r2.response.message_id, 2, sc.bob, "hi alice 😀"],
      [r3.response.message_id, 3, ed, "from the editor"],
    ]
  );
  for (const ch of [ca, cb, ce]) {
    assertMessage(await nextEvent(ch, "new_message"), { seq: 3, body: "from the editor", user_id: ed, id: r3.response.message_id });
  }
  // each message was delivered once
  for (const ch of [ca, cb, ce]) await noEvent(ch, "new_message", ch === ca ? 300 : 0);
});

test("room: invalid new_message gets an error reply and nothing is broadcast or stored", async () => {
  const sc = await scene();
  const sa = await srv.socket(sc.alice);
  const sb = await srv.socket(sc.bob);
  const sv = await srv.socket(sc.carol);
  const ca = sa.channel(sc.topic);
  const cb = sb.channel(sc.topic);
  const cv = sv.channel(sc.topic);
  await joinOk(ca);
  await joinOk(cb);
  await joinOk(cv);
  const cases = [
    [ca, { body: "" }, "message_empty"],
    [ca, { body: "   \n\t " }, "message_empty"],
    [ca, { body: "x".repeat(10001) }, "message_too_long"],
    [ca, { body: "é".repeat(10001) }, "message_too_long"],
    [ca, { body: 5 }, "invalid_message"],
    [ca, { body: null }, "invalid_message"],
    [ca, { body: { text: "hi" } }, "invalid_message"],
    [ca, {}, "invalid_message"],
    [cv, { body: "viewer speaks" }, "insufficient_permissions"],
  ];
  for (const [ch, payload, reason] of cases) {
    const r = await pushP(ch, "new_message", payload);
    assert.deepEqual(r, { status: "error", response: { reason } }, `payload ${JSON.stringify(payload).slice(0, 60)}`);
  }
  for (const ch of [ca, cb, cv]) await noEvent(ch, "new_message", ch === ca ? 500 : 0);
  assert.deepEqual(await srv.getMessages(sc.room), []);
  assert.equal((await srv.api("GET", `/api/rooms/${sc.room}`)).body.last_seq, 0);
  // 10000 code points is fine
  const ok = await pushP(ca, "new_message", { body: "é".repeat(10000) });
  assert.equal(ok.status, "ok");
  assert.equal(ok.response.seq, 1);
  assert.equal((await nextEvent(cb, "new_message")).body, "é".repeat(10000));
});

test("room: unknown events get {reason: unknown_event}", async () => {
  const sc = await scene();
  const s = await srv.socket(sc.alice);
  const ch = s.channel(sc.topic);
  await joinOk(ch);
  assert.deepEqual(await pushP(ch, "whatever", {}), { status: "error", response: { reason: "unknown_event" } });
  assert.deepEqual(await pushP(ch, "phx_nope", { a: 1 }), { status: "error", response: { reason: "unknown_event" } });
});

test("room: typing reaches the others as user_typing, not the sender, with no reply", async () => {
  const sc = await scene();
  const sa = await srv.socket(sc.alice);
  const sb = await srv.socket(sc.bob);
  const ca = sa.channel(sc.topic);
  const cb = sb.channel(sc.topic);
  await joinOk(ca);
  await joinOk(cb);
  const reply = pushP(ca, "typing", { typing: true }, 1000);
  assert.deepEqual(await nextEvent(cb, "user_typing"), { user_id: sc.alice, typing: true });
  assert.equal((await reply).status, "timeout", "typing gets no reply");
  assert.deepEqual(pending(ca, "user_typing"), [], "the sender does not get its own user_typing");
  const reply2 = pushP(ca, "typing", { typing: false }, 1000);
  assert.deepEqual(await nextEvent(cb, "user_typing"), { user_id: sc.alice, typing: false });
  assert.equal((await reply2).status, "timeout");
  await noEvent(ca, "user_typing", 0);
});

test("room: leaving and closing the socket both send user_left to the others", async () => {
  const sc = await scene();
  const sa = await srv.socket(sc.alice);
  const sb = await srv.socket(sc.bob);
  const sv = await srv.socket(sc.carol);
  const ca = sa.channel(sc.topic);
  const cb = sb.channel(sc.topic);
  const cv = sv.channel(sc.topic);
  await joinOk(ca);
  await joinOk(cb);
  await joinOk(cv);
  assert.equal(await leaveP(cb), "ok");
  assert.deepEqual(await nextEvent(ca, "user_left"), { user_id: sc.bob });
  assert.deepEqual(await nextEvent(cv, "user_left"), { user_id: sc.bob });
  // bob left: he no longer receives room broadcasts
  await pushP(ca, "new_message", { body: "after bob left" });
  await nextEvent(cv, "new_message");
  assert.deepEqual(pending(cb, "new_message"), []);

  await srv.disconnectP(sv);
  assert.deepEqual(await nextEvent(ca, "user_left"), { user_id: sc.carol });
  await noEvent(ca, "user_left", 300);
});

test("room: three messages, then a fresh join gets them in order", async () => {
  const sc = await scene();
  const sa = await srv.socket(sc.alice);
  const ca = sa.channel(sc.topic);
  await joinOk(ca);
  const ids = [];
  for (const body of ["one", "two", "three"]) {
    const r = await pushP(ca, "new_message", { body });
    assert.equal(r.status, "ok");
    ids.push(r.response.message_id);
  }
  const sb = await srv.socket(sc.bob);
  const cb = sb.channel(sc.topic);
  assert.equal((await joinOk(cb)).last_seq, 3);
  const h = await nextEvent(cb, "message_history");
  assert.equal(h.messages.length, 3);
  h.messages.forEach((m, i) => assertMessage(m, { id: ids[i], seq: i + 1, body: ["one", "two", "three"][i], user_id: sc.alice }));
});

test("room: reconnecting with last_seq recovers exactly the missed messages", async () => {
  const sc = await scene();
  for (let i = 1; i <= 4; i++) await srv.postMessage(sc.room, sc.bob, `early ${i}`);
  // alice tracks the last seq she saw and rejoins with it, as an app would
  let lastSeq = 0;
  const sa = await srv.socket(sc.alice, { reconnectAfterMs: () => 1500 });
  const ca = sa.channel(sc.topic, () => ({ last_seq: lastSeq }));
  const seen = [];
  ca.on("message_history", (p) => p.messages.forEach((m) => (seen.push(m.seq), (lastSeq = m.seq))));
  ca.on("new_message", (m) => (seen.push(m.seq), (lastSeq = m.seq)));
  await joinOk(ca);
  await nextEvent(ca, "message_history");
  const sb = await srv.socket(sc.bob);
  const cb = sb.channel(sc.topic);
  await joinOk(cb);
  await pushP(cb, "new_message", { body: "live 5" });
  await nextEvent(ca, "new_message");
  assert.equal(lastSeq, 5);

  // the network drops (not a clean client disconnect): phoenix reconnects after 1.5 s
  const reopened = new Promise((r) => sa.onOpen(r));
  sa.conn.close(4000, "simulated drop");
  await nextEvent(cb, "user_left");
  const missed = [];
  for (const body of ["missed 6", "missed 7", "missed 8"]) missed.push((await pushP(cb, "new_message", { body })).response.seq);
  assert.deepEqual(missed, [6, 7, 8]);
  await Promise.race([reopened, sleep(5000).then(() => assert.fail("the socket did not reconnect"))]);
  const h = await nextEvent(ca, "message_history", 5000);
  assert.deepEqual(
    h.messages.map((m) => [m.seq, m.body]),
    [
      [6, "missed 6"],
      [7, "missed 7"],
      [8, "missed 8"],
    ]
  );
  assert.deepEqual(seen, [1, 2, 3, 4, 5, 6, 7, 8], "every message exactly once, in order");

  // the same by hand: a new socket joining with the last seq it knows
  await pushP(cb, "new_message", { body: "nine" });
  const s2 = await srv.socket(sc.alice);
  const c2 = s2.channel(sc.topic, { last_seq: 8 });
  await joinOk(c2);
  assert.deepEqual(
    (await nextEvent(c2, "message_history")).messages.map((m) => m.seq),
    [9]
  );
}, { timeout: 30000 });

test("room: a message posted through REST is broadcast to subscribers", async () => {
  const sc = await scene();
  const sa = await srv.socket(sc.alice);
  const ca = sa.channel(sc.topic);
  await joinOk(ca);
  const p = await srv.postMessage(sc.room, sc.bob, "via rest");
  assertMessage(await nextEvent(ca, "new_message"), { id: p.id, seq: p.seq, body: "via rest", user_id: sc.bob, inserted_at: p.inserted_at });
});

test(`room: a row inserted with ${IS_PG ? "psql" : "the sqlite3 CLI"} reaches subscribers`, async () => {
  const sc = await scene();
  const sa = await srv.socket(sc.alice);
  const sb = await srv.socket(sc.bob);
  const ca = sa.channel(sc.topic);
  const cb = sb.channel(sc.topic);
  await joinOk(ca);
  await joinOk(cb);
  await pushP(ca, "new_message", { body: "before" });
  await nextEvent(ca, "new_message");
  await nextEvent(cb, "new_message");
  const t0 = Date.now();
  await srv.sql(`INSERT INTO messages(room_id,user_id,body) VALUES('${sc.room}','${sc.bob}','from sqlite3')`);
  for (const ch of [ca, cb]) {
    const m = await nextEvent(ch, "new_message", 2000);
    assertMessage(m, { seq: 2, body: "from sqlite3", user_id: sc.bob });
  }
  const took = Date.now() - t0;
  assert.ok(took <= 2000, `delivered after ${took} ms`);
  // a batch of rows in one transaction arrives complete and in order
  await srv.sql(
    "BEGIN; " +
      [3, 4, 5].map((i) => `INSERT INTO messages(room_id,user_id,body) VALUES('${sc.room}','${sc.bob}','batch ${i}');`).join(" ") +
      " COMMIT;"
  );
  const got = [];
  for (let i = 0; i < 3; i++) got.push(await nextEvent(ca, "new_message", 2000));
  assert.deepEqual(
    got.map((m) => [m.seq, m.body]),
    [
      [3, "batch 3"],
      [4, "batch 4"],
      [5, "batch 5"],
    ]
  );
  // and the server's own next message follows them
  const r = await pushP(ca, "new_message", { body: "after" });
  assert.equal(r.response.seq, 6);
});
