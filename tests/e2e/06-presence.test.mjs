// 06-presence: the presence:<id> channel — join rules, presence_state / presence_diff on
// the wire (metas: online_at, status, device, username, avatar_url, phx_ref), several
// sockets of one user, update_status, get_online_users, phoenix.js `Presence` staying in
// sync through joins, updates, a leave and an abrupt close; REST broadcast to a presence
// topic; POST /api/users/{id}/disconnect.
import { before, after } from "node:test";
import assert from "node:assert/strict";
import { Presence } from "phoenix";
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
  hasKeys,
  hasFields,
  eventually,
} from "./lib/server.js";

let srv;
before(async () => {
  srv = await startServer();
});
after(async () => {
  await srv?.stop();
});

// A room: alice owner (name + avatar), bob member (name, no avatar), carol viewer; dave
// is a user but no member. Ids sort bob < alice < carol so sorting is not join order.
async function scene() {
  const tag = uid("");
  const u = {
    alice: `u2_alice_${tag}`,
    bob: `u1_bob_${tag}`,
    carol: `u3_carol_${tag}`,
    dave: `u4_dave_${tag}`,
  };
  const room = await srv.roomWith({ [u.alice]: "owner", [u.bob]: "member", [u.carol]: "viewer" });
  await srv.putUser(u.alice, "Alice A", "https://example.com/a.png");
  await srv.putUser(u.bob, "Bob B");
  await srv.putUser(u.dave, "Dave D");
  return { room, topic: `presence:${room}`, ...u };
}

function assertMeta(m, want, what = "meta") {
  hasKeys(m, ["online_at", "status", "device", "username", "avatar_url", "phx_ref"], what);
  assert.ok(Number.isInteger(m.online_at), `${what}.online_at is an integer: ${JSON.stringify(m)}`);
  const now = Math.floor(Date.now() / 1000);
  assert.ok(m.online_at > now - 120 && m.online_at <= now + 5, `${what}.online_at is unix seconds near now (${now}): ${m.online_at}`);
  assert.equal(typeof m.phx_ref, "string", `${what}.phx_ref is a string`);
  assert.ok(m.phx_ref.length > 0, `${what}.phx_ref is not empty`);
  for (const [k, v] of Object.entries(want)) assert.deepEqual(m[k], v, `${what}.${k} in ${JSON.stringify(m)}`);
}

// Joins topic on a new socket of user; returns {s, ch, state, diff (its own join diff)}.
async function presenceJoin(user, topic, params, sockOpts) {
  const s = await srv.socket(user, sockOpts);
  const ch = s.channel(topic, params);
  const r = await joinP(ch);
  assert.equal(r.status, "ok", `${user} joins ${topic}: ${JSON.stringify(r)}`);
  assert.deepEqual(r.response, {}, "presence join reply is ok {}");
  const state = await nextEvent(ch, "presence_state");
  const diff = await nextEvent(ch, "presence_diff");
  return { s, ch, state, diff };
}

test("presence: join replies ok {}, then presence_state with the joiner and presence_diff to all", async () => {
  const sc = await scene();
  const a = await presenceJoin(sc.alice, sc.topic);
  assert.deepEqual(Object.keys(a.state), [sc.alice], "state keyed by user id");
  assert.equal(a.state[sc.alice].metas.length, 1);
  const am = a.state[sc.alice].metas[0];
  assertMeta(am, { status: "online", device: "unknown", username: "Alice A", avatar_url: "https://example.com/a.png" }, "alice meta");
  assert.deepEqual(a.diff, { joins: { [sc.alice]: { metas: [am] } }, leaves: {} }, "the joiner gets its own join diff");

  const b = await presenceJoin(sc.bob, sc.topic, { device: "phone", status: "away" });
  assert.deepEqual(Object.keys(b.state).sort(), [sc.alice, sc.bob].sort());
  assert.deepEqual(b.state[sc.alice], { metas: [am] }, "bob's state holds alice's meta unchanged");
  assert.equal(b.state[sc.bob].metas.length, 1);
  const bm = b.state[sc.bob].metas[0];
  assertMeta(bm, { status: "away", device: "phone", username: "Bob B", avatar_url: null }, "bob meta");
  assert.notEqual(bm.phx_ref, am.phx_ref);
  assert.deepEqual(b.diff, { joins: { [sc.bob]: { metas: [bm] } }, leaves: {} });
  assert.deepEqual(await nextEvent(a.ch, "presence_diff"), { joins: { [sc.bob]: { metas: [bm] } }, leaves: {} });

  // a viewer is a member too; an invalid status param falls back to "online"
  const c = await presenceJoin(sc.carol, sc.topic, { status: "sleeping", device: "tablet" });
  const cm = c.state[sc.carol].metas[0];
  assertMeta(cm, { status: "online", device: "tablet", username: sc.carol }, "carol meta");
  for (const ch of [a.ch, b.ch]) assert.deepEqual(await nextEvent(ch, "presence_diff"), { joins: { [sc.carol]: { metas: [cm] } }, leaves: {} });
  // one state per join, no stray diffs
  for (const ch of [a.ch, b.ch, c.ch]) {
    await noEvent(ch, "presence_diff", ch === a.ch ? 300 : 0);
    assert.deepEqual(pending(ch, "presence_state"), []);
  }
});

test("presence: a non-member is unauthorized, an unknown room is not_found", async () => {
  const sc = await scene();
  const s = await srv.socket(sc.dave);
  assert.deepEqual(await joinP(s.channel(sc.topic)), { status: "error", response: { reason: "unauthorized" } });
  assert.deepEqual(await joinP(s.channel("presence:no-such-room-here")), { status: "error", response: { reason: "not_found" } });
  // the refused join tracked nothing
  const a = await presenceJoin(sc.alice, sc.topic);
  assert.deepEqual(Object.keys(a.state), [sc.alice]);
  // a membership granted afterwards lets dave in
  await srv.addMember(sc.room, sc.dave, "member");
  const d = await presenceJoin(sc.dave, sc.topic);
  assertMeta(d.state[sc.dave].metas[0], { username: "Dave D", avatar_url: null });
});

test("presence: several sockets of one user are several metas under one key", async () => {
  const sc = await scene();
  const t1 = await presenceJoin(sc.alice, sc.topic, { device: "laptop" });
  const m1 = t1.state[sc.alice].metas[0];
  const t2 = await presenceJoin(sc.alice, sc.topic, { device: "phone" });
  const metas = t2.state[sc.alice].metas;
  assert.equal(metas.length, 2, JSON.stringify(t2.state));
  assert.deepEqual(Object.keys(t2.state), [sc.alice], "one key");
  const m2 = metas.find((m) => m.phx_ref !== m1.phx_ref);
  assert.ok(m2, "a second meta with its own phx_ref");
  assert.deepEqual(metas.find((m) => m.phx_ref === m1.phx_ref), m1);
  assertMeta(m2, { device: "phone", status: "online", username: "Alice A" });
  // the diff carries only the new meta
  assert.deepEqual(t2.diff, { joins: { [sc.alice]: { metas: [m2] } }, leaves: {} });
  assert.deepEqual(await nextEvent(t1.ch, "presence_diff"), { joins: { [sc.alice]: { metas: [m2] } }, leaves: {} });
  // a leave removes only that socket's meta
  assert.equal(await leaveP(t2.ch), "ok");
  assert.deepEqual(await nextEvent(t1.ch, "presence_diff"), { joins: {}, leaves: { [sc.alice]: { metas: [m2] } } });
  // a fresh observer sees one meta left
  const b = await presenceJoin(sc.bob, sc.topic);
  assert.deepEqual(b.state[sc.alice], { metas: [m1] });
});

test("presence: update_status replies {status} and diffs the key in joins and leaves", async () => {
  const sc = await scene();
  const a = await presenceJoin(sc.alice, sc.topic, { device: "laptop" });
  const b = await presenceJoin(sc.bob, sc.topic);
  await nextEvent(a.ch, "presence_diff"); // bob's join
  let old = a.state[sc.alice].metas[0];
  for (const status of ["away", "busy", "offline", "online"]) {
    const r = await pushP(a.ch, "update_status", { status });
    assert.deepEqual(r, { status: "ok", response: { status } }, `update_status ${status}`);
    for (const ch of [a.ch, b.ch]) {
      const d = await nextEvent(ch, "presence_diff");
      assert.deepEqual(Object.keys(d).sort(), ["joins", "leaves"]);
      assert.deepEqual(Object.keys(d.joins), [sc.alice], `diff ${JSON.stringify(d)}`);
      assert.deepEqual(Object.keys(d.leaves), [sc.alice], `diff ${JSON.stringify(d)}`);
      assert.deepEqual(d.leaves[sc.alice], { metas: [old] }, "leaves carries the old meta");
      assert.equal(d.joins[sc.alice].metas.length, 1);
      const nm = d.joins[sc.alice].metas[0];
      assertMeta(nm, { status, device: "laptop", username: "Alice A", avatar_url: "https://example.com/a.png", online_at: old.online_at });
      assert.notEqual(nm.phx_ref, old.phx_ref, "a new phx_ref on update");
      assert.equal(nm.phx_ref_prev, old.phx_ref, "phx_ref_prev = the replaced meta's phx_ref");
      if (ch === b.ch) old = nm;
    }
  }
  // invalid statuses: error, nothing broadcast
  for (const payload of [{ status: "sleeping" }, { status: "" }, { status: "AWAY" }, { status: 5 }, { status: null }, {}]) {
    assert.deepEqual(
      await pushP(a.ch, "update_status", payload),
      { status: "error", response: { reason: "invalid_status" } },
      `update_status ${JSON.stringify(payload)}`
    );
  }
  for (const ch of [a.ch, b.ch]) await noEvent(ch, "presence_diff", ch === a.ch ? 300 : 0);
  // the state a newcomer gets reflects the last update
  const c = await presenceJoin(sc.carol, sc.topic);
  assert.deepEqual(c.state[sc.alice], { metas: [old] });
});

test("presence: get_online_users lists who is here, sorted by user_id", async () => {
  const sc = await scene();
  const a1 = await presenceJoin(sc.alice, sc.topic);
  let r = await pushP(a1.ch, "get_online_users", {});
  assert.equal(r.status, "ok", JSON.stringify(r));
  assert.deepEqual(r.response, { users: [{ user_id: sc.alice, status: "online", username: "Alice A", connections: 1 }] });

  const a2 = await presenceJoin(sc.alice, sc.topic, { device: "phone" });
  const b = await presenceJoin(sc.bob, sc.topic, { status: "away" });
  assert.equal((await pushP(a2.ch, "update_status", { status: "busy" })).status, "ok");
  const want = [
    { user_id: sc.bob, status: "away", username: "Bob B", connections: 1 },
    { user_id: sc.alice, status: "busy", username: "Alice A", connections: 2 },
  ];
  for (const ch of [a1.ch, a2.ch, b.ch]) {
    r = await pushP(ch, "get_online_users", {});
    assert.equal(r.status, "ok");
    assert.deepEqual(r.response, { users: want }, `get_online_users on ${ch === b.ch ? "bob" : "alice"}'s channel`);
  }
  // carol (a member, not joined) is not listed; after alice's first tab goes, one connection
  await srv.disconnectP(a1.s);
  await eventually(async () => {
    const x = await pushP(b.ch, "get_online_users", {});
    assert.deepEqual(x.response, {
      users: [want[0], { ...want[1], connections: 1 }],
    });
  }, 2000);
  // a viewer's meta counts like any other
  const c = await presenceJoin(sc.carol, sc.topic);
  const y = await pushP(c.ch, "get_online_users", {});
  assert.deepEqual(y.response.users.map((u) => u.user_id), [sc.bob, sc.alice, sc.carol]);
  assert.deepEqual(y.response.users[2], { user_id: sc.carol, status: "online", username: sc.carol, connections: 1 });
});

test("presence: leaving and closing the socket both send a leaves diff", async () => {
  const sc = await scene();
  const a = await presenceJoin(sc.alice, sc.topic);
  const b = await presenceJoin(sc.bob, sc.topic);
  const c = await presenceJoin(sc.carol, sc.topic);
  const bm = b.state[sc.bob].metas[0];
  const cm = c.state[sc.carol].metas[0];
  await nextEvent(a.ch, "presence_diff"); // bob
  await nextEvent(a.ch, "presence_diff"); // carol
  await nextEvent(b.ch, "presence_diff"); // carol

  assert.equal(await leaveP(b.ch), "ok");
  assert.deepEqual(await nextEvent(a.ch, "presence_diff"), { joins: {}, leaves: { [sc.bob]: { metas: [bm] } } });
  assert.deepEqual(await nextEvent(c.ch, "presence_diff"), { joins: {}, leaves: { [sc.bob]: { metas: [bm] } } });

  await srv.disconnectP(c.s);
  assert.deepEqual(await nextEvent(a.ch, "presence_diff"), { joins: {}, leaves: { [sc.carol]: { metas: [cm] } } });
  await noEvent(a.ch, "presence_diff", 300);
  // bob, who left, saw nothing after leaving
  assert.deepEqual(pending(b.ch, "presence_diff"), []);
});

test("presence: phoenix.js Presence stays in sync: two users, one with two tabs, updates, leave, abrupt close", async () => {
  const sc = await scene();
  const clients = {};
  // Each client: a socket (no reconnect during the test), a channel, a Presence, and the
  // list as of its last onSync.
  async function client(name, user) {
    const s = await srv.socket(user, { reconnectAfterMs: () => 60000 });
    const ch = s.channel(sc.topic);
    const p = new Presence(ch);
    const c = { name, s, ch, p, synced: null, syncs: 0 };
    p.onSync(() => {
      c.syncs++;
      c.synced = p
        .list((id, { metas }) => ({ id, n: metas.length, status: metas.map((m) => m.status).sort().join(",") }))
        .sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
    });
    clients[name] = c;
    await joinOk(ch);
    return c;
  }
  // every named client's onSync list becomes `want` (sorted by id) within 2 s
  const expectAll = async (names, want, step) => {
    const sorted = [...want].sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
    for (const n of names) {
      await eventually(
        () => assert.deepEqual(clients[n].synced, sorted, `${step}: ${n}'s Presence list`),
        2000
      );
    }
  };
  const A = sc.alice;
  const B = sc.bob;

  await client("a1", A);
  await expectAll(["a1"], [{ id: A, n: 1, status: "online" }], "alice tab 1 joined");
  await client("b", B);
  await expectAll(["a1", "b"], [{ id: A, n: 1, status: "online" }, { id: B, n: 1, status: "online" }], "bob joined");
  await client("a2", A);
  await expectAll(
    ["a1", "a2", "b"],
    [{ id: A, n: 2, status: "online,online" }, { id: B, n: 1, status: "online" }],
    "alice tab 2 joined"
  );
  assert.deepEqual((await pushP(clients.b.ch, "update_status", { status: "away" })).response, { status: "away" });
  await expectAll(
    ["a1", "a2", "b"],
    [{ id: A, n: 2, status: "online,online" }, { id: B, n: 1, status: "away" }],
    "bob is away"
  );
  assert.deepEqual((await pushP(clients.a1.ch, "update_status", { status: "busy" })).response, { status: "busy" });
  await expectAll(
    ["a1", "a2", "b"],
    [{ id: A, n: 2, status: "busy,online" }, { id: B, n: 1, status: "away" }],
    "alice tab 1 is busy"
  );
  assert.equal(await leaveP(clients.a2.ch), "ok");
  await expectAll(["a1", "b"], [{ id: A, n: 1, status: "busy" }, { id: B, n: 1, status: "away" }], "alice tab 2 left");

  // bob's connection drops without a close frame (TCP destroyed under the ws client)
  const bConn = clients.b.s.conn;
  assert.ok(bConn && bConn._socket, "phoenix socket has a ws with a TCP socket");
  bConn._socket.destroy();
  await expectAll(["a1"], [{ id: A, n: 1, status: "busy" }], "bob's connection dropped");
  const r = await pushP(clients.a1.ch, "get_online_users", {});
  assert.deepEqual(r.response, { users: [{ user_id: A, status: "busy", username: "Alice A", connections: 1 }] });

  // alice's remaining tab is killed the same way: a new observer sees nobody left
  clients.a1.s.conn._socket.destroy();
  await client("c", sc.carol);
  await expectAll(["c"], [{ id: sc.carol, n: 1, status: "online" }], "alice's last tab dropped");
}, { timeout: 30000 });

test("presence: POST /api/broadcast to a presence topic reaches its subscribers", async () => {
  const sc = await scene();
  const a = await presenceJoin(sc.alice, sc.topic);
  const b = await presenceJoin(sc.bob, sc.topic);
  const r = await srv.api("POST", "/api/broadcast", { topic: sc.topic, event: "announce", payload: { text: "hi", n: [1, 2] } });
  assert.equal(r.status, 200, `broadcast answered ${r.status} ${r.text}`);
  for (const ch of [a.ch, b.ch]) assert.deepEqual(await nextEvent(ch, "announce"), { text: "hi", n: [1, 2] });
  await noEvent(a.ch, "announce", 300);
});

test("presence: POST /api/users/{id}/disconnect closes that user's sockets (1001) and their presence leaves", async () => {
  const sc = await scene();
  const a = await presenceJoin(sc.alice, sc.topic, undefined, { reconnectAfterMs: () => 60000 });
  const am = a.state[sc.alice].metas[0];
  const closes = [];
  a.s.onClose((e) => closes.push(e.code));
  const raw = await srv.rawWs(new URLSearchParams({ token: await srv.token(sc.alice), vsn: "2.0.0" }).toString());
  const b = await presenceJoin(sc.bob, sc.topic);
  const bobCloses = [];
  b.s.onClose((e) => bobCloses.push(e.code));
  await nextEvent(a.ch, "presence_diff"); // bob's join

  const r = await srv.api("POST", `/api/users/${encodeURIComponent(sc.alice)}/disconnect`);
  assert.equal(r.status, 200, `disconnect answered ${r.status} ${r.text}`);
  assert.equal((await raw.closed(3000)).code, 1001, "raw socket closed with 1001");
  await eventually(() => assert.deepEqual(closes, [1001], "phoenix onClose fired with 1001"), 3000);
  assert.deepEqual(await nextEvent(b.ch, "presence_diff"), { joins: {}, leaves: { [sc.alice]: { metas: [am] } } });
  // bob is unaffected
  assert.deepEqual(bobCloses, []);
  assert.ok(b.s.isConnected());
  const u = await pushP(b.ch, "get_online_users", {});
  assert.deepEqual(u.response.users.map((x) => x.user_id), [sc.bob]);
  // alice may connect again
  const again = await presenceJoin(sc.alice, sc.topic);
  assert.deepEqual(Object.keys(again.state).sort(), [sc.alice, sc.bob].sort());
});

test("presence: rapid changes (inside one diff batch) converge on every phoenix.js client", async () => {
  const sc = await scene();
  const eve = `u5_eve_${uid("")}`;
  await srv.addMember(sc.room, eve, "member");
  const view = (p) =>
    p
      .list((id, { metas }) => ({ id, n: metas.length, status: metas.map((m) => m.status).sort().join(",") }))
      .sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
  const observers = [];
  async function observer(user) {
    const s = await srv.socket(user, { reconnectAfterMs: () => 60000 });
    const ch = s.channel(sc.topic);
    const p = new Presence(ch);
    const o = { user, s, ch, p, synced: null };
    p.onSync(() => (o.synced = view(p)));
    await joinOk(ch);
    observers.push(o);
    return o;
  }
  const converge = async (want, step) => {
    const sorted = [...want].sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
    for (const o of observers) {
      await eventually(() => assert.deepEqual(o.synced, sorted, `${step}: ${o.user}'s Presence list`), 2000);
    }
    // and the server's own view agrees
    const r = await pushP(observers[0].ch, "get_online_users", {});
    assert.deepEqual(
      r.response.users.map((u) => ({ id: u.user_id, n: u.connections })),
      sorted.map((w) => ({ id: w.id, n: w.n })),
      `${step}: get_online_users`
    );
  };
  const A = sc.alice;
  const B = sc.bob;
  const a = await observer(A);
  const b = await observer(B);
  await converge([{ id: A, n: 1, status: "online" }, { id: B, n: 1, status: "online" }], "start");

  // three updates fired back to back
  const ups = await Promise.all(["away", "busy", "offline"].map((status) => pushP(b.ch, "update_status", { status })));
  assert.deepEqual(ups.map((r) => r.response), [{ status: "away" }, { status: "busy" }, { status: "offline" }]);
  await converge([{ id: A, n: 1, status: "online" }, { id: B, n: 1, status: "offline" }], "three quick updates");

  // carol joins and leaves at once
  const sc3 = await srv.socket(sc.carol);
  const cc = sc3.channel(sc.topic);
  await joinOk(cc);
  assert.equal(await leaveP(cc), "ok");
  await converge([{ id: A, n: 1, status: "online" }, { id: B, n: 1, status: "offline" }], "carol came and went");

  // eve opens three sockets at once, then two of them drop at the same moment
  const es = await Promise.all([0, 1, 2].map(() => srv.socket(eve, { reconnectAfterMs: () => 60000 })));
  await Promise.all(es.map((s) => joinOk(s.channel(sc.topic))));
  await converge(
    [{ id: A, n: 1, status: "online" }, { id: B, n: 1, status: "offline" }, { id: eve, n: 3, status: "online,online,online" }],
    "eve's three sockets"
  );
  es[0].conn._socket.destroy();
  es[1].conn._socket.destroy();
  await converge(
    [{ id: A, n: 1, status: "online" }, { id: B, n: 1, status: "offline" }, { id: eve, n: 1, status: "online" }],
    "two of eve's sockets dropped"
  );

  // a second tab of bob joins while his first updates
  const b2 = await srv.socket(B);
  const b2ch = b2.channel(sc.topic);
  const [j, u] = await Promise.all([joinP(b2ch), pushP(b.ch, "update_status", { status: "busy" })]);
  assert.equal(j.status, "ok");
  assert.deepEqual(u.response, { status: "busy" });
  await converge(
    [{ id: A, n: 1, status: "online" }, { id: B, n: 2, status: "busy,online" }, { id: eve, n: 1, status: "online" }],
    "bob's second tab while he updates"
  );
  // a late joiner's state matches
  await observer(sc.carol);
  await converge(
    [
      { id: A, n: 1, status: "online" },
      { id: B, n: 2, status: "busy,online" },
      { id: sc.carol, n: 1, status: "online" },
      { id: eve, n: 1, status: "online" },
    ],
    "carol observes"
  );
}, { timeout: 30000 });
