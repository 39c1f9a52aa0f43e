// 14-message-life: what happens to a message after it is sent, with the real phoenix
// client: edits, deletes, reactions, replies, the room version and catch-up by
// since_version, read cursors and unread counts, the REST routes for all of it, and
// sqlite3 (or psql) writes taking the same path.
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
  assertIsoUtc,
  expectStatus,
  expectError,
  IS_PG,
  waitUntil,
} from "./lib/server.js";

let srv;
before(async () => {
  srv = await startServer();
});
after(async () => {
  await srv?.stop();
});

// A room with owner alice, member bob, viewer carol; dave exists but is not a member.
async function scene() {
  const u = { alice: uid("alice_"), bob: uid("bob_"), carol: uid("carol_"), dave: uid("dave_") };
  const room = await srv.roomWith({ [u.alice]: "owner", [u.bob]: "member", [u.carol]: "viewer" });
  await srv.putUser(u.dave);
  return { room, topic: `room:${room}`, ...u };
}

// Joins topic as user; returns {s, ch, reply, history}.
async function joined(sc, user, params) {
  const s = await srv.socket(user);
  const ch = s.channel(sc.topic, params);
  const reply = await joinOk(ch);
  const history = params?.since_version !== undefined ? await nextEvent(ch, "room_changes") : await nextEvent(ch, "message_history");
  return { s, ch, reply, history };
}

async function send(ch, body, extra = {}) {
  const r = await pushP(ch, "new_message", { body, ...extra });
  assert.equal(r.status, "ok", `new_message ${JSON.stringify(r)}`);
  return r.response;
}

async function ok(ch, event, payload) {
  const r = await pushP(ch, event, payload);
  assert.equal(r.status, "ok", `${event} ${JSON.stringify(payload)}: ${JSON.stringify(r)}`);
  return r.response;
}

async function refused(ch, event, payload, reason) {
  const r = await pushP(ch, event, payload);
  assert.deepEqual(r, { status: "error", response: { reason } }, `${event} ${JSON.stringify(payload)}`);
}

const rooms = (room) => `/api/rooms/${encodeURIComponent(room)}`;

test("life: the join reply carries version, last_read_seq and unread; every change takes the next version", async () => {
  const sc = await scene();
  const a = await joined(sc, sc.alice);
  assert.deepEqual(
    { v: a.reply.version, r: a.reply.last_read_seq, u: a.reply.unread },
    { v: 0, r: 0, u: 0 },
    JSON.stringify(a.reply)
  );
  const m1 = await send(a.ch, "one");
  const n1 = await nextEvent(a.ch, "new_message");
  assert.equal(n1.version, 1);
  assert.equal(n1.reply_to, null);
  const e = await ok(a.ch, "edit_message", { seq: m1.seq, body: "one, edited" });
  assert.deepEqual(e, { seq: m1.seq, version: 2 });
  const up = await nextEvent(a.ch, "message_updated");
  assert.equal(up.seq, m1.seq);
  assert.equal(up.body, "one, edited");
  assert.equal(up.user_id, sc.alice);
  assert.equal(up.version, 2);
  assertIsoUtc(up.edited_at);
  const ra = await ok(a.ch, "add_reaction", { seq: m1.seq, emoji: "👍" });
  assert.deepEqual(ra, { seq: m1.seq, emoji: "👍", version: 3 });
  assert.deepEqual(await nextEvent(a.ch, "reaction_added"), { seq: m1.seq, emoji: "👍", user_id: sc.alice, version: 3 });
  const rr = await ok(a.ch, "remove_reaction", { seq: m1.seq, emoji: "👍" });
  assert.deepEqual(rr, { seq: m1.seq, emoji: "👍", version: 4 });
  assert.deepEqual(await nextEvent(a.ch, "reaction_removed"), { seq: m1.seq, emoji: "👍", user_id: sc.alice, version: 4 });
  const d = await ok(a.ch, "delete_message", { seq: m1.seq });
  assert.deepEqual(d, { seq: m1.seq, version: 5 });
  const del = await nextEvent(a.ch, "message_deleted");
  assert.equal(del.seq, m1.seq);
  assert.equal(del.version, 5);
  assertIsoUtc(del.deleted_at);
  const b = await joined(sc, sc.bob);
  assert.equal(b.reply.version, 5);
  assert.equal(b.reply.last_seq, 1);
});

test("life: edits reach every member; only the author may edit; the body is validated", async () => {
  const sc = await scene();
  const a = await joined(sc, sc.alice);
  const b = await joined(sc, sc.bob);
  const m = await send(b.ch, "typo");
  await nextEvent(a.ch, "new_message");
  await nextEvent(b.ch, "new_message");
  await refused(a.ch, "edit_message", { seq: m.seq, body: "not mine" }, "insufficient_permissions");
  await refused(b.ch, "edit_message", { seq: m.seq, body: "" }, "message_empty");
  await refused(b.ch, "edit_message", { seq: m.seq, body: "x".repeat(10001) }, "message_too_long");
  await refused(b.ch, "edit_message", { seq: m.seq, body: 7 }, "invalid_message");
  await refused(b.ch, "edit_message", { seq: 999, body: "nope" }, "message_not_found");
  await refused(b.ch, "edit_message", { seq: "1", body: "nope" }, "invalid_seq");
  await refused(b.ch, "edit_message", { body: "nope" }, "invalid_seq");
  await noEvent(a.ch, "message_updated", 200);
  await ok(b.ch, "edit_message", { seq: m.seq, body: "fixed" });
  for (const ch of [a.ch, b.ch]) assert.equal((await nextEvent(ch, "message_updated")).body, "fixed");
  const [stored] = await srv.getMessages(sc.room);
  assert.equal(stored.body, "fixed");
  assertIsoUtc(stored.edited_at);
  // the edits are counted under their own event label
  const metrics = await srv.api("GET", "/metrics");
  const count = /rowcast_events_total\{channel="room",event="edit_message"\} (\d+)/.exec(metrics.text);
  assert.ok(count && Number(count[1]) >= 8, `edit_message counted: ${count?.[0]}`);
});

test("life: delete by the author or an owner erases the body; others may not; a deleted message cannot change", async () => {
  const sc = await scene();
  const a = await joined(sc, sc.alice);
  const b = await joined(sc, sc.bob);
  const m1 = await send(b.ch, "secret one");
  const m2 = await send(b.ch, "secret two");
  const m3 = await send(a.ch, "owner's own");
  await refused(b.ch, "delete_message", { seq: m3.seq }, "insufficient_permissions");
  await ok(b.ch, "delete_message", { seq: m1.seq });
  await ok(a.ch, "delete_message", { seq: m2.seq }); // owner deletes bob's message
  for (const ch of [a.ch, b.ch]) {
    assert.equal((await nextEvent(ch, "message_deleted")).seq, m1.seq);
    assert.equal((await nextEvent(ch, "message_deleted")).seq, m2.seq);
  }
  await refused(b.ch, "delete_message", { seq: m1.seq }, "message_deleted");
  await refused(b.ch, "edit_message", { seq: m1.seq, body: "back" }, "message_deleted");
  await refused(a.ch, "add_reaction", { seq: m1.seq, emoji: "🔥" }, "message_deleted");
  await refused(b.ch, "new_message", { body: "re", reply_to: m1.seq }, "invalid_reply_to");
  // history shows a tombstone without a body
  const c = await joined(sc, sc.carol);
  const byseq = Object.fromEntries(c.history.messages.map((x) => [x.seq, x]));
  for (const s of [m1.seq, m2.seq]) {
    assert.deepEqual(Object.keys(byseq[s]).sort(), ["deleted", "deleted_at", "seq"]);
    assert.equal(byseq[s].deleted, true);
  }
  assert.equal(byseq[m3.seq].body, "owner's own");
  // erased from the table, not hidden: no stored row holds the text any more
  const dump = await srv.dump();
  assert.ok(!dump.includes("secret one") && !dump.includes("secret two"), "deleted bodies are gone from the database");
  // REST pages show the tombstone too
  const page = await srv.getMessages(sc.room);
  assert.deepEqual(page.find((x) => x.seq === m1.seq), byseq[m1.seq]);
});

test("life: reactions are per (message, user, emoji), idempotent, counted in history; viewers may not react", async () => {
  const sc = await scene();
  const a = await joined(sc, sc.alice);
  const b = await joined(sc, sc.bob);
  const m = await send(a.ch, "react to me");
  await nextEvent(b.ch, "new_message");
  const r1 = await ok(b.ch, "add_reaction", { seq: m.seq, emoji: "🎉" });
  const r2 = await ok(b.ch, "add_reaction", { seq: m.seq, emoji: "🎉" }); // again: nothing changes
  assert.equal(r2.version, r1.version);
  await ok(a.ch, "add_reaction", { seq: m.seq, emoji: "🎉" });
  await ok(a.ch, "add_reaction", { seq: m.seq, emoji: "👀" });
  const got = [];
  for (let i = 0; i < 3; i++) got.push(await nextEvent(b.ch, "reaction_added"));
  assert.deepEqual(got.map((x) => [x.emoji, x.user_id]), [["🎉", sc.bob], ["🎉", sc.alice], ["👀", sc.alice]]);
  await noEvent(b.ch, "reaction_added", 200);
  await ok(b.ch, "remove_reaction", { seq: m.seq, emoji: "👀" }); // not there: nothing changes
  await noEvent(b.ch, "reaction_removed", 200);
  const c = await joined(sc, sc.carol);
  const [h] = c.history.messages;
  assert.deepEqual(
    [...h.reactions].sort((x, y) => (x.emoji < y.emoji ? -1 : 1)),
    [{ emoji: "👀", count: 1 }, { emoji: "🎉", count: 2 }].sort((x, y) => (x.emoji < y.emoji ? -1 : 1))
  );
  await refused(c.ch, "add_reaction", { seq: m.seq, emoji: "👍" }, "insufficient_permissions");
  for (const emoji of ["", "x".repeat(33), 5, null])
    await refused(b.ch, "add_reaction", { seq: m.seq, emoji }, "invalid_emoji");
  await refused(b.ch, "add_reaction", { seq: 999, emoji: "👍" }, "message_not_found");
});

test("life: replies name an existing message of the room; the parent counts them; threads page over REST", async () => {
  const sc = await scene();
  const a = await joined(sc, sc.alice);
  const parent = await send(a.ch, "parent");
  await nextEvent(a.ch, "new_message");
  const r1 = await send(a.ch, "reply one", { reply_to: parent.seq });
  const live = await nextEvent(a.ch, "new_message");
  assert.equal(live.reply_to, parent.seq);
  await send(a.ch, "not a reply");
  await send(a.ch, "reply two", { reply_to: parent.seq });
  await refused(a.ch, "new_message", { body: "dangling", reply_to: 999 }, "invalid_reply_to");
  await refused(a.ch, "new_message", { body: "bad", reply_to: "x" }, "invalid_reply_to");
  const b = await joined(sc, sc.bob);
  const p = b.history.messages.find((x) => x.seq === parent.seq);
  assert.equal(p.reply_count, 2);
  assert.equal(b.history.messages.find((x) => x.seq === r1.seq).reply_to, parent.seq);
  const res = expectStatus(await srv.api("GET", `${rooms(sc.room)}/messages/${parent.seq}/replies`), 200);
  assert.deepEqual(res.messages.map((x) => x.body), ["reply one", "reply two"]);
  const lim = expectStatus(await srv.api("GET", `${rooms(sc.room)}/messages/${parent.seq}/replies?limit=1`), 200);
  assert.deepEqual(lim.messages.map((x) => x.body), ["reply one"]);
  const next = expectStatus(await srv.api("GET", `${rooms(sc.room)}/messages/${parent.seq}/replies?after_seq=${r1.seq}`), 200);
  assert.deepEqual(next.messages.map((x) => x.body), ["reply two"]);
  expectError(await srv.api("GET", `${rooms(sc.room)}/messages/999/replies`), 404, "not_found");
});

test("life: a client away while others send, edit, delete and react gets exactly those changes once, in order, with since_version", async () => {
  const sc = await scene();
  const a = await joined(sc, sc.alice);
  const b = await joined(sc, sc.bob);
  const m1 = await send(a.ch, "before");
  const seen = (await nextEvent(b.ch, "new_message")).version;
  b.s.disconnect();
  const m2 = await send(a.ch, "while away");
  await ok(a.ch, "edit_message", { seq: m1.seq, body: "before, edited" });
  await ok(a.ch, "add_reaction", { seq: m2.seq, emoji: "✅" });
  await ok(a.ch, "delete_message", { seq: m2.seq });
  const live = [];
  for (const ev of ["new_message", "new_message", "message_updated", "reaction_added", "message_deleted"])
    live.push({ event: ev, payload: await nextEvent(a.ch, ev) });
  const back = await joined(sc, sc.bob, { since_version: seen });
  assert.equal(back.history.has_more, false);
  assert.equal(back.history.version, seen + 4);
  assert.deepEqual(back.history.changes.map((c) => c.event), ["new_message", "message_updated", "reaction_added", "message_deleted"]);
  assert.deepEqual(back.history.changes.map((c) => c.payload.version), [seen + 1, seen + 2, seen + 3, seen + 4]);
  // each change is the event that was broadcast live (the deleted message's body erased)
  assert.deepEqual(back.history.changes[1].payload, live[2].payload);
  assert.deepEqual(back.history.changes[3].payload, live[4].payload);
  assert.equal(back.history.changes[0].payload.body, undefined);
  assert.equal(back.history.changes[0].payload.seq, m2.seq);
  // and nothing arrives twice afterwards
  await noEvent(back.ch, "new_message", 200);
  await noEvent(back.ch, "message_updated", 0);
  // since_version at the current version: nothing; a too-old window is paged with has_more
  const again = await joined(sc, sc.bob, { since_version: seen + 4 });
  assert.deepEqual(again.history.changes, []);
  // the REST twin
  const ch = expectStatus(await srv.api("GET", `${rooms(sc.room)}/changes?since_version=${seen}&limit=2`), 200);
  assert.deepEqual(ch.changes.map((c) => c.event), ["new_message", "message_updated"]);
  assert.equal(ch.has_more, true);
  assert.equal(ch.version, seen + 4);
});

test("life: joins during a stream of changes see every version once: room_changes (or the history) and then live", async () => {
  const own = await startServer({ args: ["--rate-limit", "0"] });
  try {
    const alice = uid("alice_"), bob = uid("bob_"), carol = uid("carol_");
    const room = await own.roomWith({ [alice]: "owner", [bob]: "member", [carol]: "viewer" });
    const topic = `room:${room}`;
    const sa = await own.socket(alice);
    const a = sa.channel(topic);
    await joinOk(a);
    const m = await pushP(a, "new_message", { body: "target" });
    assert.equal(m.status, "ok");
    const seq = m.response.seq; // version 1
    // every change from here is an edit or a new reaction: one version each
    const acks = [];
    const change = () => {
      const i = acks.length + 1;
      acks.push(pushP(a, i % 3 ? "edit_message" : "add_reaction", i % 3 ? { seq, body: `e${i}` } : { seq, emoji: `r${i}` }));
    };
    const lifeEvents = ["new_message", "message_updated", "message_deleted", "reaction_added", "reaction_removed"];
    // bob's devices catch up from version 1, carol's join plainly; each records the
    // versions as they come, while alice keeps changing the message
    const watch = async (user, params) => {
      const s = await own.socket(user);
      const ch = s.channel(topic, params);
      const seen = { pushed: null, live: [] };
      ch.on("room_changes", (p) => (seen.pushed = p));
      ch.on("message_history", (p) => (seen.pushed = p));
      for (const ev of lifeEvents) ch.on(ev, (p) => seen.live.push(p.version));
      return { seen, reply: joinOk(ch) };
    };
    for (let k = 0; k < 20; k++) change();
    await acks[0];
    const bobs = [], carols = [];
    for (let k = 0; k < 4; k++) {
      bobs.push(await watch(bob, { since_version: 1 }));
      carols.push(await watch(carol));
      for (let j = 0; j < 10; j++) change();
    }
    let joined = false;
    Promise.all([...bobs, ...carols].map((w) => w.reply)).then(() => (joined = true));
    while (!joined) {
      for (let j = 0; j < 10; j++) change();
      await sleep(1);
    }
    for (let k = 0; k < 20; k++) change();
    for (const r of await Promise.all(acks)) assert.equal(r.status, "ok", JSON.stringify(r));
    const last = 1 + acks.length;
    const range = (from) => Array.from({ length: last - from + 1 }, (_, i) => from + i);
    for (const w of [...bobs, ...carols]) await waitUntil(() => w.seen.live.at(-1) === last, 10000, `version ${last} live`);
    for (const b of bobs) {
      // the changes after 1 and then the live ones, each version once, in order
      assert.equal(b.seen.pushed.has_more, false);
      const versions = [...b.seen.pushed.changes.map((x) => x.payload.version), ...b.seen.live];
      assert.deepEqual(versions, range(2), "a since_version join's versions");
      assert.equal(b.seen.pushed.version, (await b.reply).version);
    }
    for (const c of carols) {
      // the history holds the message as of the join's version; live starts right after it
      assert.deepEqual(c.seen.live, range((await c.reply).version + 1), "a plain join's live versions");
      assert.equal(c.seen.pushed.messages.length, 1);
    }
  } finally {
    await own.stop();
  }
});

test("life: viewers may mark_read; a bad seq, a bad since_version and unknown events are refused or ignored", async () => {
  const sc = await scene();
  const a = await joined(sc, sc.alice);
  await send(a.ch, "one");
  await send(a.ch, "two");
  const c = await joined(sc, sc.carol);
  assert.deepEqual([c.reply.last_read_seq, c.reply.unread], [0, 2]);
  assert.deepEqual(await ok(c.ch, "mark_read", { seq: 1 }), { last_read_seq: 1, unread: 1 });
  assert.deepEqual(await ok(c.ch, "mark_read", { seq: 99 }), { last_read_seq: 2, unread: 0 }); // stops at last_seq
  for (const seq of [-1, 1.5, "2", null, undefined]) await refused(c.ch, "mark_read", { seq }, "invalid_seq");
  for (const seq of [0, -3, 2.5, "1"]) await refused(a.ch, "delete_message", { seq }, "invalid_seq");
  await refused(c.ch, "edit_message", { seq: 1, body: "viewer" }, "insufficient_permissions");
  await refused(c.ch, "delete_message", { seq: 1 }, "insufficient_permissions");
  await refused(a.ch, "shout", {}, "unknown_event");
  // a since_version that is not a non-negative integer is ignored: the plain history comes
  const s = await srv.socket(sc.bob);
  for (const since_version of ["1", -1, 0.5]) {
    const ch = s.channel(sc.topic, { since_version });
    const r = await joinOk(ch);
    assert.deepEqual([r.last_read_seq, r.unread, r.version], [0, 2, 2]);
    assert.deepEqual((await nextEvent(ch, "message_history")).messages.map((x) => x.body), ["one", "two"]);
    await noEvent(ch, "room_changes", 100);
    await leaveP(ch);
  }
});

test("life: read cursors never move backwards; unread counts others' live messages; both devices stay equal", async () => {
  const sc = await scene();
  const a = await joined(sc, sc.alice);
  const bob1 = await srv.socket(sc.bob);
  const bob2 = await srv.socket(sc.bob);
  const n1 = bob1.channel(`notifications:${sc.bob}`);
  const n2 = bob2.channel(`notifications:${sc.bob}`);
  await joinOk(n1);
  await joinOk(n2);
  const m1 = await send(a.ch, "one");
  const m2 = await send(a.ch, "two");
  for (const n of [n1, n2]) {
    assert.deepEqual(await nextEvent(n, "unread"), { room_id: sc.room, unread: 1, last_seq: m1.seq, last_read_seq: 0 });
    assert.deepEqual(await nextEvent(n, "unread"), { room_id: sc.room, unread: 2, last_seq: m2.seq, last_read_seq: 0 });
  }
  // bob's own message does not count
  const rb = bob1.channel(sc.topic);
  const jb = await joinOk(rb);
  assert.deepEqual([jb.last_read_seq, jb.unread], [0, 2]);
  await send(rb, "mine");
  await noEvent(n1, "unread", 300);
  // reading on device 1 moves device 2's badge
  const mr = await ok(rb, "mark_read", { seq: m1.seq });
  assert.deepEqual(mr, { last_read_seq: m1.seq, unread: 1 });
  for (const n of [n1, n2]) assert.deepEqual(await nextEvent(n, "unread"), { room_id: sc.room, unread: 1, last_seq: 3, last_read_seq: m1.seq });
  assert.deepEqual(await ok(rb, "mark_read", { seq: 0 }), { last_read_seq: m1.seq, unread: 1 }); // never backwards
  await refused(rb, "mark_read", { seq: "x" }, "invalid_seq");
  // REST agrees
  const mine = expectStatus(await srv.api("GET", `/api/users/${encodeURIComponent(sc.bob)}/rooms`), 200);
  assert.deepEqual(mine.rooms, [{ room_id: sc.room, name: `Room ${sc.room}`, role: "member", last_seq: 3, last_read_seq: m1.seq, unread: 1 }]);
  const put = expectStatus(await srv.api("PUT", `${rooms(sc.room)}/members/${encodeURIComponent(sc.bob)}/read`, { seq: 3 }), 200);
  assert.deepEqual([put.last_read_seq, put.unread], [3, 0]);
  for (const n of [n1, n2]) assert.equal((await nextEvent(n, "unread")).unread, 0);
  // a deleted unread message stops counting
  const m4 = await send(a.ch, "soon gone");
  for (const n of [n1, n2]) assert.equal((await nextEvent(n, "unread")).unread, 1);
  await ok(a.ch, "delete_message", { seq: m4.seq });
  for (const n of [n1, n2]) assert.equal((await nextEvent(n, "unread")).unread, 0);
});

test("life: REST edits, deletes, reactions broadcast like their channel events", async () => {
  const sc = await scene();
  const a = await joined(sc, sc.alice);
  const m = await send(a.ch, "rest target");
  await nextEvent(a.ch, "new_message");
  const base = `${rooms(sc.room)}/messages/${m.seq}`;
  const e = expectStatus(await srv.api("PATCH", base, { body: "patched" }), 200);
  assert.equal(e.seq, m.seq);
  assert.equal((await nextEvent(a.ch, "message_updated")).body, "patched");
  expectStatus(await srv.api("PUT", `${base}/reactions/${encodeURIComponent("🙂")}?user_id=${encodeURIComponent(sc.bob)}`), 200);
  assert.deepEqual(await nextEvent(a.ch, "reaction_added"), { seq: m.seq, emoji: "🙂", user_id: sc.bob, version: e.version + 1 });
  expectStatus(await srv.api("DELETE", `${base}/reactions/${encodeURIComponent("🙂")}?user_id=${encodeURIComponent(sc.bob)}`), 200);
  assert.equal((await nextEvent(a.ch, "reaction_removed")).emoji, "🙂");
  expectError(await srv.api("PATCH", base, { body: "" }), 400, "message_empty");
  expectError(await srv.api("PATCH", `${rooms(sc.room)}/messages/999`, { body: "x" }), 404, "not_found");
  expectStatus(await srv.api("DELETE", base), 200);
  assert.equal((await nextEvent(a.ch, "message_deleted")).seq, m.seq);
  expectError(await srv.api("PATCH", base, { body: "again" }), 409, "message_deleted");
});

test(`life: ${IS_PG ? "psql" : "sqlite3"} UPDATE, DELETE and reaction rows take a version and reach subscribers`, async () => {
  const sc = await scene();
  const a = await joined(sc, sc.alice);
  const m = await send(a.ch, "from the app");
  await nextEvent(a.ch, "new_message");
  await srv.sql(`UPDATE messages SET body = 'from SQL' WHERE room_id = '${sc.room}' AND seq = ${m.seq}`);
  const up = await nextEvent(a.ch, "message_updated", 5000);
  assert.equal(up.body, "from SQL");
  assert.equal(up.version, 2);
  await srv.sql(`INSERT INTO reactions(room_id, seq, emoji, user_id) VALUES ('${sc.room}', ${m.seq}, 'sql', '${sc.bob}')`);
  assert.equal((await nextEvent(a.ch, "reaction_added", 5000)).emoji, "sql");
  await srv.sql(`DELETE FROM messages WHERE room_id = '${sc.room}' AND seq = ${m.seq}`);
  const del = await nextEvent(a.ch, "message_deleted", 5000);
  assert.equal(del.seq, m.seq);
  const [row] = await srv.getMessages(sc.room);
  assert.equal(row.deleted, true);
});

test("life: kill -9 during a stream of edits loses no acknowledged edit", async () => {
  const own = await startServer({ args: ["--rate-limit", "0"] });
  let again;
  try {
    const alice = uid("alice_");
    const room = await own.roomWith({ [alice]: "owner" });
    const s = await own.socket(alice);
    const ch = s.channel(`room:${room}`);
    await joinOk(ch);
    const m = await pushP(ch, "new_message", { body: "v0" });
    assert.equal(m.status, "ok");
    const seq = m.response.seq;
    // edits without waiting for each other; the acknowledged ones are what must survive
    let acked = 0;
    let n = 0;
    const stream = (async () => {
      for (n = 1; n <= 2000; n++) {
        ch.push("edit_message", { seq, body: `v${n}` }, 5000).receive("ok", (r) => {
          acked = Math.max(acked, Number(r.version) - 1);
        });
        if (n % 20 === 0) await sleep(2);
      }
    })();
    await sleep(150);
    await own.kill9();
    await stream;
    assert.ok(acked > 0, "some edits were acknowledged before the kill");
    again = await startServer({ db: own, args: ["--rate-limit", "0"] });
    const [row] = await again.getMessages(room);
    const last = Number(row.body.slice(1));
    assert.ok(last >= acked, `the stored body is edit ${last}; edit ${acked} was acknowledged`);
    // and the log agrees with the row: the room's version counts every stored edit once
    const back = await (await again.socket(alice)).channel(`room:${room}`, { since_version: 1 });
    const r = await joinOk(back);
    assert.equal(r.version, last + 1);
    const changes = await nextEvent(back, "room_changes");
    assert.deepEqual(changes.changes.map((c) => c.payload.body), Array.from({ length: last }, (_, i) => `v${i + 1}`));
  } finally {
    await again?.stop();
    await own.stop();
  }
});
