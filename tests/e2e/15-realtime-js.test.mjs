// 15-realtime-js: @supabase/realtime-js (supabase-js's realtime client, version pinned in
// package-lock.json) on /realtime/v1, under Node over the `ws` package: public channels
// (broadcast with self and ack, vsn 1.0.0 JSON and 2.0.0 binary frames, presence), private
// channels (rooms: membership, durable broadcasts with meta.id, replay by since, limit and
// after), REST broadcasts (both shapes, also through the client's httpSend and its REST
// fallback), SQL broadcasts (INSERT INTO broadcasts; rowcast_broadcast on PostgreSQL),
// setAuth (a fresh token keeps the channel, an invalid one closes it), token expiry (close
// code 4001, also for a phoenix.js socket on /socket), postgres_changes refused, and, in
// PostgreSQL mode, broadcasts crossing from one node to another.
import { before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import {
  test,
  startServer,
  sleep,
  uid,
  IS_PG,
  signJwt,
  waitUntil,
  eventually,
  expectStatus,
  joinOk,
  pushP,
} from "./lib/server.js";
import {
  rtClient,
  rtChannel,
  subscribe,
  subscribed,
  received,
  closeRealtimeClients,
  textEvents,
} from "./lib/realtime.js";

const ARGS = ["--rate-limit", "0"];
// The SQL names a broadcast is written with: the view over the rooms' logs and the
// PostgreSQL function.
const SQL_TABLE = "room_broadcasts";
const SQL_FN = "rowcast_room_broadcast";
let srv;
before(async () => {
  srv = await startServer({ args: ARGS });
});
afterEach(() => closeRealtimeClients());
after(async () => {
  await closeRealtimeClients();
  await srv?.stop();
});

const range = (from, to) => Array.from({ length: to - from }, (_, i) => from + i);

// [event, payload] of each broadcast.
const brief = (got) => got.map((p) => [p.event, p.payload]);

// A token of user through POST /api/tokens {user_id, ttl}: {token, expires_at}.
async function tokenWithTtl(node, user, ttl) {
  return expectStatus(await node.api("POST", "/api/tokens", { user_id: user, ttl }), 200);
}

// Asserts every broadcast of got is a room broadcast with a numeric meta.id, the ids
// strictly increasing; returns the ids.
function assertIds(got, what) {
  const ids = got.map((p, i) => {
    assert.equal(p.type, "broadcast", `${what} #${i} type: ${JSON.stringify(p)}`);
    assert.ok(p.meta && typeof p.meta.id === "string" && /^\d+$/.test(p.meta.id), `${what} #${i} has meta.id: ${JSON.stringify(p)}`);
    return Number(p.meta.id);
  });
  for (let i = 1; i < ids.length; i++) assert.ok(ids[i] > ids[i - 1], `${what}: ids increase: ${ids.join(",")}`);
  return ids;
}

// Sends a broadcast on a channel with ack and asserts the server acknowledged it.
async function sendOk(ch, event, payload) {
  const r = await ch.send({ type: "broadcast", event, payload });
  assert.equal(r, "ok", `send ${event} ${JSON.stringify(payload)} on ${ch.topic}`);
}

for (const vsn of ["2.0.0", "1.0.0"]) {
  test(`realtime-js vsn ${vsn}: subscribe, broadcast with self true/false, ack true and false`, async () => {
    const name = uid("pub");
    const [ua, ub, uc] = [uid("a_"), uid("b_"), uid("c_")];
    const A = await rtClient(srv, ua, { vsn });
    const B = await rtClient(srv, ub, { vsn });
    const C = await rtClient(srv, uc, { vsn });
    const a = rtChannel(A, name, { broadcast: { self: true, ack: true } });
    const b = rtChannel(B, name, { broadcast: { self: false, ack: true } });
    const c = rtChannel(C, name, { broadcast: { self: false, ack: false } });
    await subscribed(a);
    await subscribed(b);
    await subscribed(c);
    assert.equal(a.state, "joined");

    await sendOk(a, "from_a", { n: 1, s: "héllo ✓" });
    await sendOk(b, "from_b", { n: 2 });
    assert.equal(await c.send({ type: "broadcast", event: "from_c", payload: [3, null] }), "ok");
    await received(a, 3);
    await received(b, 2);
    await received(c, 2);
    await sleep(300);
    // self true: a gets its own; self false: b and c do not get theirs
    assert.deepEqual(brief(a.got), [["from_a", { n: 1, s: "héllo ✓" }], ["from_b", { n: 2 }], ["from_c", [3, null]]]);
    assert.deepEqual(brief(b.got), [["from_a", { n: 1, s: "héllo ✓" }], ["from_c", [3, null]]]);
    assert.deepEqual(brief(c.got), [["from_a", { n: 1, s: "héllo ✓" }], ["from_b", { n: 2 }]]);
    for (const p of a.got) assert.equal(p.type, "broadcast");

    // the wire: V2 sends kind 3 and gets kind 4 binary frames; V1 is JSON text only
    const inBroadcastText = textEvents(A.rec.in).filter((m) => m.event === "broadcast");
    const inBinary = A.rec.in.filter((f) => f.binary);
    const outBinary = A.rec.out.filter((f) => f.binary);
    if (vsn === "2.0.0") {
      assert.deepEqual(outBinary.map((f) => f.kind), [3], "a's broadcast went as a kind-3 frame");
      assert.deepEqual(inBinary.map((f) => f.kind), [4, 4, 4], "a got its three broadcasts as kind-4 frames");
      assert.equal(inBroadcastText.length, 0, `no broadcast as text on V2: ${JSON.stringify(inBroadcastText)}`);
    } else {
      assert.equal(outBinary.length + inBinary.length, 0, "no binary frames on V1");
      const topic = `realtime:${name}`;
      assert.deepEqual(
        inBroadcastText.map((m) => [m.topic, m.payload.event]),
        [[topic, "from_a"], [topic, "from_b"], [topic, "from_c"]]
      );
    }
  });
}

test("realtime-js: a V1 and a V2 client on one channel get each other's broadcasts", async () => {
  const name = uid("mix");
  const V1 = await rtClient(srv, uid("v1_"), { vsn: "1.0.0" });
  const V2 = await rtClient(srv, uid("v2_"), { vsn: "2.0.0" });
  const one = rtChannel(V1, name, { broadcast: { ack: true } });
  const two = rtChannel(V2, name, { broadcast: { ack: true } });
  await subscribed(one);
  await subscribed(two);
  await sendOk(one, "hello", { from: "v1" });
  await sendOk(two, "hello", { from: "v2" });
  await received(one, 1);
  await received(two, 1);
  assert.deepEqual(brief(one.got), [["hello", { from: "v2" }]]);
  assert.deepEqual(brief(two.got), [["hello", { from: "v1" }]]);
});

test("realtime-js: a binary payload is refused (ack 'error') and not relayed", async () => {
  const name = uid("bin");
  const A = await rtClient(srv, uid("a_"));
  const B = await rtClient(srv, uid("b_"));
  const a = rtChannel(A, name, { broadcast: { ack: true } });
  const b = rtChannel(B, name);
  await subscribed(a);
  await subscribed(b);
  const r = await a.send({ type: "broadcast", event: "raw", payload: new Uint8Array([1, 2, 3]).buffer });
  assert.equal(r, "error");
  await sendOk(a, "after", { ok: true });
  await received(b, 1);
  await sleep(200);
  assert.deepEqual(brief(b.got), [["after", { ok: true }]]);
  assert.equal(a.state, "joined");
});

test("realtime-js: presence track, untrack and leave sync between two clients", async () => {
  const name = uid("pres");
  const [ua, ub] = [uid("pa_"), uid("pb_")];
  const A = await rtClient(srv, ua);
  const B = await rtClient(srv, ub);
  const a = rtChannel(A, name, { presence: { key: ua } });
  const b = rtChannel(B, name, { presence: { key: ub } });
  const evA = [];
  const evB = [];
  a.on("presence", { event: "*" }, (p) => evA.push(p));
  b.on("presence", { event: "*" }, (p) => evB.push(p));
  await subscribed(a);
  await subscribed(b);
  await eventually(() => assert.ok(evB.some((e) => e.event === "sync"), "b synced its (empty) state"));
  assert.deepEqual(b.presenceState(), {});

  assert.equal(await a.track({ status: "online" }), "ok");
  await eventually(() => {
    const st = b.presenceState();
    assert.deepEqual(Object.keys(st), [ua]);
    assert.equal(st[ua].length, 1);
    assert.equal(st[ua][0].status, "online");
    assert.equal(typeof st[ua][0].presence_ref, "string");
  });
  const join = evB.find((e) => e.event === "join" && e.key === ua);
  assert.ok(join, `b got a join for ${ua}: ${JSON.stringify(evB)}`);
  assert.equal(join.newPresences.length, 1);
  assert.equal(join.newPresences[0].status, "online");
  await eventually(() => assert.deepEqual(Object.keys(a.presenceState()), [ua]), 3000, "a sees itself");

  assert.equal(await b.track({ status: "away" }), "ok");
  await eventually(() => {
    const st = a.presenceState();
    assert.deepEqual(Object.keys(st).sort(), [ua, ub].sort());
    assert.equal(st[ub][0].status, "away");
  });

  // a client that joins later gets the whole state at once
  const C = await rtClient(srv, uid("pc_"));
  const c = rtChannel(C, name, { presence: { enabled: true } });
  await subscribed(c);
  await eventually(() => assert.deepEqual(Object.keys(c.presenceState()).sort(), [ua, ub].sort()));

  assert.equal(await a.untrack(), "ok");
  await eventually(() => assert.deepEqual(Object.keys(b.presenceState()), [ub]));
  const leave = evB.find((e) => e.event === "leave" && e.key === ua);
  assert.ok(leave, `b got a leave for ${ua}: ${JSON.stringify(evB)}`);
  assert.equal(leave.leftPresences[0].status, "online");

  // b's socket goes away: its presence leaves too
  await B.disconnect();
  await eventually(() => assert.deepEqual(Object.keys(c.presenceState()), []));
  assert.ok(evA.some((e) => e.event === "leave" && e.key === ub), `a saw ${ub} leave: ${JSON.stringify(evA)}`);
});

test("realtime-js: a private channel is a room: refused for a non-member and a missing room, members send and receive with meta.id", async () => {
  const [owner, member, viewer, stranger] = [uid("o_"), uid("m_"), uid("v_"), uid("s_")];
  const room = await srv.roomWith({ [owner]: "owner", [member]: "member", [viewer]: "viewer" });
  await srv.putUser(stranger);

  const S = await rtClient(srv, stranger);
  const refused = await subscribe(rtChannel(S, room, { private: true }));
  assert.equal(refused.status, "CHANNEL_ERROR");
  assert.match(refused.err.message, /unauthorized/);
  const missing = await subscribe(rtChannel(S, uid("nosuchroom"), { private: true }));
  assert.equal(missing.status, "CHANNEL_ERROR");
  assert.match(missing.err.message, /not_found/);

  const M = await rtClient(srv, member);
  const V = await rtClient(srv, viewer);
  const O = await rtClient(srv, owner);
  const m = rtChannel(M, room, { private: true, broadcast: { ack: true } });
  const v = rtChannel(V, room, { private: true, broadcast: { ack: true } });
  const o = rtChannel(O, room, { private: true, broadcast: { ack: true, self: true } });
  // the public channel of the same name is another channel
  const P = await rtClient(srv, stranger);
  const pub = rtChannel(P, room, { broadcast: { ack: true } });
  for (const ch of [m, v, o, pub]) await subscribed(ch);

  await sendOk(m, "note", { n: 1 });
  await sendOk(o, "note", { n: 2 });
  await received(v, 2);
  await received(o, 2);
  await received(m, 1);
  assert.deepEqual(brief(v.got), [["note", { n: 1 }], ["note", { n: 2 }]]);
  const ids = assertIds(v.got, "viewer's broadcasts");
  assert.deepEqual(assertIds(o.got, "owner's broadcasts"), ids, "every member sees the same ids");
  assert.deepEqual(brief(m.got), [["note", { n: 2 }]], "self false: the member does not get its own");
  assert.equal(Number(m.got[0].meta.id), ids[1]);
  for (const p of v.got) assert.notEqual(p.meta.replayed, true, "live broadcasts are not replayed");

  // a viewer may listen, not send
  assert.equal(await v.send({ type: "broadcast", event: "note", payload: { n: 3 } }), "error");
  // private and public broadcasts do not cross
  await sendOk(pub, "public", { n: 4 });
  await sleep(400);
  assert.equal(pub.got.length, 0, `the public channel got nothing private: ${JSON.stringify(pub.got)}`);
  assert.deepEqual(brief(v.got), [["note", { n: 1 }], ["note", { n: 2 }]], "no viewer broadcast, no public one");
});

test("realtime-js: replay after a disconnect with {since, limit, after} gets every missed broadcast once, in order; a fresh {since: 0, limit: 10000} gets them all", async () => {
  const [ua, ub] = [uid("ra_"), uid("rb_")];
  const room = await srv.roomWith({ [ua]: "member", [ub]: "member" });
  const since = Date.now() - 5000;
  const A = await rtClient(srv, ua);
  const a = rtChannel(A, room, { private: true, broadcast: { ack: true } });
  await subscribed(a);
  const B = await rtClient(srv, ub);
  const b1 = rtChannel(B, room, { private: true });
  await subscribed(b1);

  for (const i of range(0, 15)) await sendOk(a, "tick", { i });
  await received(b1, 15);
  const live1 = b1.got.slice();
  const lastId = live1.at(-1).meta.id;
  assert.equal(await B.removeChannel(b1), "ok");
  await B.disconnect();
  assert.equal(B.isConnected(), false);

  for (const i of range(15, 45)) await sendOk(a, "tick", { i });

  // the same client connects again with a new channel that asks for what it missed
  const b2 = rtChannel(B, room, { private: true, broadcast: { replay: { since, limit: 1000, after: lastId } } });
  await subscribed(b2);
  await received(b2, 30);
  for (const i of range(45, 60)) await sendOk(a, "tick", { i });
  await received(b2, 45);
  await sleep(300);
  const all = live1.concat(b2.got);
  assert.deepEqual(
    all.map((p) => p.payload.i),
    range(0, 60),
    "every broadcast exactly once, in order"
  );
  const ids = assertIds(all, "live + replayed + live");
  assert.ok(b2.got.slice(0, 30).every((p) => p.meta.replayed === true), "the missed ones come replayed");
  assert.ok(b2.got.slice(30).every((p) => p.meta.replayed !== true), "the later ones are live");
  assert.ok(b2.got.every((p) => p.event === "tick"));

  // a fresh channel replays the whole log
  const C = await rtClient(srv, ub);
  const c = rtChannel(C, room, { private: true, broadcast: { replay: { since: 0, limit: 10000 } } });
  await subscribed(c);
  await received(c, 60);
  await sleep(300);
  assert.deepEqual(c.got.map((p) => p.payload.i), range(0, 60));
  assert.deepEqual(assertIds(c.got, "full replay"), ids, "the replay has the ids seen live");
  assert.ok(c.got.every((p) => p.meta.replayed === true && p.event === "tick"));

  // the default limit is 25, oldest first; since in the future replays nothing
  const D = await rtClient(srv, ub);
  const d = rtChannel(D, room, { private: true, broadcast: { replay: { since: 0 } } });
  const E = await rtClient(srv, ub);
  const e = rtChannel(E, room, { private: true, broadcast: { replay: { since: Date.now() + 3600e3, limit: 100 } } });
  await subscribed(d);
  await subscribed(e);
  await received(d, 25);
  await sleep(400);
  assert.equal(d.got.length, 25);
  assertIds(d.got, "default-limit replay");
  assert.ok(d.got.every((p) => p.meta.replayed === true));
  assert.equal(e.got.length, 0, `nothing at or after a future since: ${JSON.stringify(e.got.slice(0, 2))}`);
});

test("realtime-js: REST broadcasts, both shapes, reach public and private channels", async () => {
  const ua = uid("rest_");
  const room = await srv.roomWith({ [ua]: "member" });
  const name = uid("pub");
  const A = await rtClient(srv, ua);
  const p = rtChannel(A, name);
  const q = rtChannel(A, room, { private: true });
  await subscribed(p);
  await subscribed(q);

  const r1 = await srv.api("POST", "/api/broadcast", {
    messages: [
      { topic: name, event: "m1", payload: { k: 1 }, private: false },
      { topic: room, event: "m2", payload: { k: 2 }, private: true },
    ],
  });
  assert.equal(r1.status, 202, r1.text);
  const r2 = await srv.api("POST", `/api/broadcast/${name}/events/m3`, { k: 3 });
  assert.equal(r2.status, 202, r2.text);
  const r3 = await srv.api("POST", `/realtime/v1/api/broadcast/${room}/events/m4?private=true`, { k: 4 });
  assert.equal(r3.status, 202, r3.text);
  const r4 = await srv.api("POST", "/realtime/v1/api/broadcast", { messages: [{ topic: name, event: "m5", payload: { k: 5 } }] });
  assert.equal(r4.status, 202, r4.text);
  // without the API key: refused
  const r5 = await srv.api("POST", "/api/broadcast", { messages: [{ topic: name, event: "m0", payload: {} }] }, { key: null });
  assert.equal(r5.status, 401, r5.text);

  // the client's own REST calls (server-side code holding the API key): httpSend, and
  // send() on a channel that is not joined (realtime-js falls back to POST /api/broadcast)
  const R = await rtClient(srv, ua);
  await R.setAuth(srv.apiKey);
  assert.deepEqual(await R.channel(name).httpSend("m6", { k: 6 }), { success: true });
  assert.deepEqual(await R.channel(room, { config: { private: true } }).httpSend("m7", { k: 7 }), { success: true });
  const S = await rtClient(srv, ua);
  await S.setAuth(srv.apiKey);
  assert.equal(await S.channel(name).send({ type: "broadcast", event: "m8", payload: { k: 8 } }), "ok");
  assert.equal(R.isConnected() || S.isConnected(), false, "the REST calls opened no socket");

  await received(p, 5);
  await received(q, 3);
  await sleep(300);
  assert.deepEqual(brief(p.got), [["m1", { k: 1 }], ["m3", { k: 3 }], ["m5", { k: 5 }], ["m6", { k: 6 }], ["m8", { k: 8 }]]);
  assert.deepEqual(brief(q.got), [["m2", { k: 2 }], ["m4", { k: 4 }], ["m7", { k: 7 }]]);
  assertIds(q.got, "REST private broadcasts");
  for (const x of p.got) assert.ok(!x.meta || !("id" in x.meta), `public broadcasts have no id: ${JSON.stringify(x)}`);
});

test(`realtime-js: broadcasts written with ${IS_PG ? `psql (INSERT INTO ${SQL_TABLE}, ${SQL_FN})` : `the sqlite3 CLI (INSERT INTO ${SQL_TABLE})`} reach a private channel`, async () => {
  const [ua, ub] = [uid("sa_"), uid("sb_")];
  const room = await srv.roomWith({ [ua]: "member", [ub]: "member" });
  const A = await rtClient(srv, ua);
  const a = rtChannel(A, room, { private: true });
  await subscribed(a);

  await srv.sql(`INSERT INTO ${SQL_TABLE}(room_id, event, payload, user_id) VALUES('${room}', 'from_sql', '{"x":1}', NULL)`);
  await received(a, 1, 8000);
  assert.deepEqual(brief(a.got), [["from_sql", { x: 1 }]]);
  const want = [["from_sql", { x: 1 }]];
  if (IS_PG) {
    const out = await srv.sql(`SELECT ${SQL_FN}('${room}', 'from_fn', '{"y":[2]}'::jsonb, '${ub}')`);
    await received(a, 2, 8000);
    assert.equal(a.got[1].meta.id, out.trim(), "rowcast_broadcast returns the broadcast's id");
    want.push(["from_fn", { y: [2] }]);
  }
  assert.deepEqual(brief(a.got), want);
  const ids = assertIds(a.got, "SQL broadcasts");

  // the view lists them, seq being the id
  const rows = (await srv.sql(`SELECT seq, event, payload FROM ${SQL_TABLE} WHERE room_id = '${room}' ORDER BY seq`))
    .trim()
    .split("\n")
    .map((l) => l.split("|"));
  assert.deepEqual(
    rows.map(([seq, event, payload]) => [Number(seq), event, JSON.parse(payload)]),
    want.map(([event, payload], i) => [ids[i], event, payload])
  );
});

test("realtime-js: setAuth with a fresh token keeps the channel joined and receiving past the first token's expiry", async () => {
  const ua = uid("auth_");
  const first = await tokenWithTtl(srv, ua, 3);
  const A = await rtClient(srv, ua, { token: first.token });
  const a = rtChannel(A, uid("auth"), { broadcast: { self: true, ack: true } });
  await subscribed(a);
  await A.setAuth(await srv.token(ua));
  const push = await waitUntil(() => textEvents(A.rec.out).find((m) => m.event === "access_token"), 3000, "the access_token push");
  const reply = await waitUntil(
    () => textEvents(A.rec.in).find((m) => m.event === "phx_reply" && m.ref === push.ref),
    3000,
    "the access_token reply"
  );
  assert.equal(reply.payload.status, "ok", `access_token reply: ${JSON.stringify(reply.payload)}`);

  await waitUntil(() => Date.now() > first.expires_at * 1000 + 1500, 8000, "the first token's expiry");
  assert.deepEqual(A.rec.closes, [], "the socket stayed open");
  assert.equal(a.state, "joined");
  await sendOk(a, "still", { here: true });
  await received(a, 1);
  assert.deepEqual(brief(a.got), [["still", { here: true }]]);
  assert.deepEqual(a.system, []);
});

test("realtime-js: setAuth with an invalid token gets a system error and the channel is closed", async () => {
  const [ua, ub] = [uid("bad_"), uid("other_")];
  const now = Math.floor(Date.now() / 1000);
  const cases = [
    ["a token of another secret", signJwt({ sub: ua, iat: now, exp: now + 3600 }, "not-the-secret")],
    ["another user's token", await srv.token(ub)],
  ];
  for (const [what, bad] of cases) {
    const name = uid("badauth");
    const A = await rtClient(srv, ua);
    const a = rtChannel(A, name);
    const other = rtChannel(A, uid("badauth"));
    await subscribed(a);
    await subscribed(other);
    await A.setAuth(bad);
    await eventually(() => assert.equal(a.system.length, 1), 3000, `${what}: a system event`);
    const sys = a.system[0];
    assert.equal(sys.extension, "system", `${what}: ${JSON.stringify(sys)}`);
    assert.equal(sys.status, "error", `${what}: ${JSON.stringify(sys)}`);
    assert.equal(sys.channel, name, `${what}: ${JSON.stringify(sys)}`);
    assert.ok(typeof sys.message === "string" && sys.message.length > 0, `${what}: ${JSON.stringify(sys)}`);
    await eventually(() => assert.equal(a.state, "closed"), 3000, `${what}: the channel closes`);
    assert.ok(a.statuses.some((s) => s.status === "CLOSED"), `${what}: subscribe saw CLOSED: ${JSON.stringify(a.statuses)}`);
    assert.ok(!A.getChannels().includes(a), `${what}: the client dropped the channel`);
    assert.deepEqual(A.rec.closes, [], `${what}: the socket stays open`);
    assert.equal(A.isConnected(), true);
  }
});

test("realtime-js: the socket is closed with code 4001 when its token expires", async () => {
  const ua = uid("exp_");
  const { token, expires_at } = await tokenWithTtl(srv, ua, 2);
  const A = await rtClient(srv, ua, { token });
  const name = uid("exp");
  const a = rtChannel(A, name, { broadcast: { self: true, ack: true } });
  await subscribed(a);
  await sendOk(a, "alive", {});
  await received(a, 1);
  assert.ok(Date.now() < expires_at * 1000, "the channel worked before the expiry");

  const close = await waitUntil(() => A.rec.closes[0], 5000, "the socket to close");
  assert.equal(close.code, 4001, `close: ${JSON.stringify(close)}`);
  assert.ok(close.at >= expires_at * 1000 - 100, `closed ${expires_at * 1000 - close.at} ms before the expiry`);
  assert.ok(close.at <= expires_at * 1000 + 2500, `closed ${close.at - expires_at * 1000} ms after the expiry`);
  assert.equal(a.system.length, 1, `a system event before the close: ${JSON.stringify(a.system)}`);
  assert.equal(a.system[0].status, "error");
  assert.equal(a.system[0].channel, name);
  assert.match(a.system[0].message, /expired/i);
  await eventually(() => assert.ok(a.statuses.some((s) => s.status === "CHANNEL_ERROR" && /4001/.test(s.err?.message))));
});

test("phoenix.js: a socket whose token expires is closed with code 4001 at expiry", async () => {
  const ua = uid("pexp_");
  const room = await srv.roomWith({ [ua]: "member" });
  const { token, expires_at } = await tokenWithTtl(srv, ua, 2);
  const s = await srv.socket(ua, { token, reconnectAfterMs: () => 60000 });
  const closes = [];
  s.onClose((e) => closes.push({ code: e.code, reason: e.reason, at: Date.now() }));
  await joinOk(s.channel(`room:${room}`));
  const close = await waitUntil(() => closes[0], 5000, "the socket to close");
  assert.equal(close.code, 4001, `close: ${JSON.stringify(close)}`);
  assert.ok(close.at >= expires_at * 1000 - 100, `closed ${expires_at * 1000 - close.at} ms before the expiry`);
  assert.ok(close.at <= expires_at * 1000 + 2500, `closed ${close.at - expires_at * 1000} ms after the expiry`);
});

test("phoenix.js: an access_token push with a fresh token keeps the socket past the first token's expiry; a bad one is refused", async () => {
  const ua = uid("pref_");
  const room = await srv.roomWith({ [ua]: "member" });
  const { token, expires_at } = await tokenWithTtl(srv, ua, 2);
  const s = await srv.socket(ua, { token, reconnectAfterMs: () => 60000 });
  const closes = [];
  s.onClose((e) => closes.push(e.code));
  const ch = s.channel(`room:${room}`);
  await joinOk(ch);
  const fresh = await tokenWithTtl(srv, ua, 60);
  assert.equal((await pushP(ch, "access_token", { access_token: fresh.token })).status, "ok");
  const other = await tokenWithTtl(srv, uid("someone_"), 60);
  for (const bad of [other.token, "garbage", 7]) {
    const r = await pushP(ch, "access_token", { access_token: bad });
    assert.equal(r.status, "error");
    assert.equal(r.response.reason, "invalid_token");
  }
  await sleep(Math.max(0, expires_at * 1000 - Date.now()) + 2000);
  assert.deepEqual(closes, [], "the socket stayed open past the first token's expiry");
  assert.equal(ch.state, "joined");
  assert.equal((await pushP(ch, "new_message", { body: "still here" })).status, "ok");
});

test("realtime-js: postgres_changes is refused with CHANNEL_ERROR and the reason; other channels still work", async () => {
  const A = await rtClient(srv, uid("pgc_"));
  const ch = A.channel(uid("pgc")).on("postgres_changes", { event: "*", schema: "public", table: "messages" }, () => {});
  const r = await subscribe(ch);
  assert.equal(r.status, "CHANNEL_ERROR");
  assert.match(r.err.message, /postgres_changes is not supported by rowcast/);
  const ok = rtChannel(A, uid("pgc"), { broadcast: { self: true, ack: true } });
  await subscribed(ok);
  await sendOk(ok, "fine", {});
  await received(ok, 1);
});

if (IS_PG) {
  test("realtime-js on two nodes: public and private broadcasts from node A reach a subscriber on node B", async () => {
    const B = await startServer({ args: ARGS, db: srv, timeoutMs: 30000 });
    try {
      const [ua, ub] = [uid("na_"), uid("nb_")];
      const room = await srv.roomWith({ [ua]: "member", [ub]: "member" });
      const name = uid("pub");
      const CA = await rtClient(srv, ua);
      const CB = await rtClient(B, ub);
      const pa = rtChannel(CA, name, { broadcast: { ack: true }, presence: { key: ua } });
      const pb = rtChannel(CB, name, { presence: { key: ub, enabled: true } });
      const qa = rtChannel(CA, room, { private: true, broadcast: { ack: true } });
      const qb = rtChannel(CB, room, { private: true });
      for (const ch of [pa, pb, qa, qb]) await subscribed(ch);

      for (const i of range(0, 5)) await sendOk(pa, "pub", { i });
      for (const i of range(0, 5)) await sendOk(qa, "priv", { i });
      const out = await srv.sql(`SELECT ${SQL_FN}('${room}', 'fn', '{"i":5}'::jsonb, NULL)`);
      expectStatus(await srv.api("POST", "/api/broadcast", { messages: [{ topic: room, event: "rest", payload: { i: 6 }, private: true }] }), 202);
      await received(pb, 5, 8000);
      await received(qb, 7, 8000);
      await sleep(300);
      assert.deepEqual(brief(pb.got), range(0, 5).map((i) => ["pub", { i }]));
      assert.deepEqual(brief(qb.got), [...range(0, 5).map((i) => ["priv", { i }]), ["fn", { i: 5 }], ["rest", { i: 6 }]]);
      assert.equal(assertIds(qb.got, "private broadcasts on B")[5], Number(out.trim()));

      // presence tracked on A is seen on B
      assert.equal(await pa.track({ node: "A" }), "ok");
      await eventually(() => assert.equal(pb.presenceState()[ua]?.[0]?.node, "A"), 5000, "B sees A's presence");
    } finally {
      await closeRealtimeClients();
      await B.stop();
    }
  }, { timeout: 40000 });
}
