// 09-limits: rate limiting of channel events (token bucket per (user, topic):
// --rate-limit tokens/s, --rate-burst capacity; defaults 10 and 20; 0 disables), which
// spares heartbeats, joins and leaves; --max-conns-per-user (HTTP 429 on the upgrade);
// --max-channels (join error "too many channels joined").
import { after } from "node:test";
import assert from "node:assert/strict";
import { test, startServer, sleep, uid, joinP, joinOk, pushP, leaveP, nextEvent, noEvent, waitUntil } from "./lib/server.js";

// Servers are started on first use, one per flag set, so a flag the binary does not
// know fails only the tests that need it.
const servers = new Map();
async function server(args = []) {
  const key = args.join(" ");
  if (!servers.has(key)) servers.set(key, startServer({ args }));
  return servers.get(key);
}
after(async () => {
  for (const p of servers.values()) {
    try {
      await (await p).stop();
    } catch {
      /* never started */
    }
  }
});

const RATE_LIMITED = { status: "error", response: { reason: "rate_limited", retry_after: 1 } };
const q = (params) => new URLSearchParams(params).toString();

// 50 new_message pushes sent at once on ch; returns the replies in push order.
function burst(ch, n = 50, tag = "m", event = "new_message") {
  return Promise.all(Array.from({ length: n }, (_, i) => pushP(ch, event, { body: `${tag}${i}` })));
}

function split(results) {
  const ok = results.filter((r) => r.status === "ok");
  const limited = results.filter((r) => r.status === "error" && r.response?.reason === "rate_limited");
  const other = results.filter((r) => !ok.includes(r) && !limited.includes(r));
  return { ok, limited, other };
}

async function twoInRoom(srv) {
  const alice = uid("rl_alice_");
  const bob = uid("rl_bob_");
  const room = await srv.roomWith({ [alice]: "member", [bob]: "member" });
  const sa = await srv.socket(alice);
  const sb = await srv.socket(bob);
  const ca = sa.channel(`room:${room}`);
  const cb = sb.channel(`room:${room}`);
  await joinOk(ca);
  await joinOk(cb);
  await nextEvent(ca, "message_history");
  await nextEvent(cb, "message_history");
  return { alice, bob, room, sa, sb, ca, cb };
}

test("limits: a burst of 50 new_message (defaults 10/s, burst 20): exactly 20 ok, 30 rate_limited; 20 stored and broadcast", async () => {
  const srv = await server();
  const sc = await twoInRoom(srv);
  const tA = Date.now();
  const results = await burst(sc.ca);
  const tB = Date.now();
  const { ok, limited, other } = split(results);
  assert.deepEqual(other, [], "every reply is ok or rate_limited");
  assert.equal(ok.length, 20, "ok replies");
  assert.equal(limited.length, 30, "rate_limited replies");
  limited.forEach((r) => assert.deepEqual(r, RATE_LIMITED));
  // the bucket is taken in arrival order: the first 20 pushes passed
  assert.deepEqual(
    results.map((r) => r.status),
    [...Array(20).fill("ok"), ...Array(30).fill("error")]
  );
  assert.deepEqual(ok.map((r) => r.response.seq), Array.from({ length: 20 }, (_, i) => i + 1));
  // exactly those 20 were stored and broadcast
  const stored = await srv.getMessages(sc.room);
  assert.deepEqual(stored.map((m) => [m.seq, m.body]), Array.from({ length: 20 }, (_, i) => [i + 1, `m${i}`]));
  for (const ch of [sc.ca, sc.cb]) {
    const got = [];
    for (let i = 0; i < 20; i++) got.push((await nextEvent(ch, "new_message")).body);
    assert.deepEqual(got, Array.from({ length: 20 }, (_, i) => `m${i}`));
  }
  for (const ch of [sc.ca, sc.cb]) await noEvent(ch, "new_message", ch === sc.ca ? 300 : 0);

  // the bucket refills at 10 tokens/s: about 1 s after the bucket ran dry, about 10 pass
  await sleep(Math.max(0, 1000 - (Date.now() - tB)));
  const tC = Date.now();
  const again = split(await burst(sc.ca, 50, "r"));
  const tD = Date.now();
  assert.deepEqual(again.other, []);
  const lo = Math.floor((tC - tB) / 100) - 1;
  const hi = Math.min(20, Math.ceil((tD - tA) / 100) + 1);
  assert.ok(again.ok.length >= lo && again.ok.length <= hi, `${tC - tB}..${tD - tA} ms after the bucket ran dry: ${again.ok.length} ok (want ${lo}..${hi})`);
}, { timeout: 30000 });

test("limits: a burst of 50 typing: 20 reach the others silently, 30 get rate_limited", async () => {
  const srv = await server();
  const sc = await twoInRoom(srv);
  const pushes = Array.from({ length: 50 }, () => pushP(sc.ca, "typing", { typing: true }, 1500));
  // typing and new_message share the (user, topic) bucket: sent right behind the burst
  // (before any refill), a new_message finds it empty
  const behind = pushP(sc.ca, "new_message", { body: "x" });
  const results = await Promise.all(pushes);
  assert.deepEqual(await behind, RATE_LIMITED, "new_message right after 50 typing");
  assert.equal(results.filter((r) => r.status === "timeout").length, 20, "allowed typing gets no reply");
  const errs = results.filter((r) => r.status === "error");
  assert.equal(errs.length, 30);
  errs.forEach((r) => assert.deepEqual(r, RATE_LIMITED));
  assert.equal(results.filter((r) => r.status === "ok").length, 0);
  for (let i = 0; i < 20; i++) assert.deepEqual(await nextEvent(sc.cb, "user_typing"), { user_id: sc.alice, typing: true });
  await noEvent(sc.cb, "user_typing", 300);
  // bob's bucket on the same topic is his own
  assert.equal((await pushP(sc.cb, "new_message", { body: "bob" })).status, "ok");
}, { timeout: 30000 });

test("limits: buckets are per (user, topic): another topic has its own, another socket of the user shares it", async () => {
  const srv = await server();
  const alice = uid("rl_alice_");
  const roomA = await srv.roomWith({ [alice]: "member" });
  const roomB = await srv.roomWith({ [alice]: "member" });
  const s1 = await srv.socket(alice);
  const a1 = s1.channel(`room:${roomA}`);
  const b1 = s1.channel(`room:${roomB}`);
  await joinOk(a1);
  await joinOk(b1);
  const ra = split(await burst(a1));
  assert.equal(ra.ok.length, 20);
  assert.equal(ra.limited.length, 30);
  // room B on the same socket: a full bucket of its own
  const rb = split(await burst(b1));
  assert.equal(rb.ok.length, 20, "another topic of the same user has its own bucket");
  assert.equal(rb.limited.length, 30);
  // a second socket of alice on room A: the same (user, topic) bucket, still empty
  const s2 = await srv.socket(alice);
  const a2 = s2.channel(`room:${roomA}`);
  await joinOk(a2);
  assert.deepEqual(await pushP(a2, "new_message", { body: "second socket" }), RATE_LIMITED);
  assert.equal((await srv.getMessages(roomA)).length, 20);
  assert.equal((await srv.getMessages(roomB)).length, 20);
}, { timeout: 30000 });

test("limits: heartbeats, joins and leaves are not rate limited", async () => {
  const srv = await server();
  const alice = uid("rl_alice_");
  const room = await srv.roomWith({ [alice]: "member" });
  const topic = `room:${room}`;
  const ws = await srv.rawWs(q({ token: await srv.token(alice), vsn: "2.0.0" }));
  let ref = 0;
  const send = (jr, t, event, payload) => {
    const r = String(++ref);
    ws.sendJson([jr, r, t, event, payload]);
    return r;
  };
  const reply = (r) => ws.nextJson((m) => Array.isArray(m) && m[1] === r && m[3] === "phx_reply", 3000, `reply ${r}`);
  let jr = send("1", topic, "phx_join", {});
  assert.equal((await reply(jr))[4].status, "ok");
  // exhaust the bucket
  const refs = Array.from({ length: 30 }, (_, i) => send("1", topic, "new_message", { body: `b${i}` }));
  const replies = [];
  for (const r of refs) replies.push((await reply(r))[4]);
  assert.equal(replies.filter((p) => p.status === "ok").length, 20);
  assert.deepEqual(replies.slice(20), Array(10).fill({ status: "error", response: { reason: "rate_limited", retry_after: 1 } }));
  // 40 heartbeats: all answered ok
  const hb = Array.from({ length: 40 }, () => send(null, "phoenix", "heartbeat", {}));
  for (const r of hb) assert.deepEqual((await reply(r))[4], { status: "ok", response: {} }, "heartbeat reply");
  // 10 leave/join cycles: all ok
  for (let i = 0; i < 10; i++) {
    const l = send(jr, topic, "phx_leave", {});
    assert.equal((await reply(l))[4].status, "ok", `leave ${i}`);
    const j = String(100 + i);
    ws.sendJson([j, j, topic, "phx_join", {}]);
    const jrep = await ws.nextJson((m) => Array.isArray(m) && m[1] === j && m[3] === "phx_reply", 3000, `join ${i}`);
    assert.equal(jrep[4].status, "ok", `join ${i}: ${JSON.stringify(jrep)}`);
    jr = j;
  }
  // the channel events are still limited
  const x = send(jr, topic, "new_message", { body: "still limited" });
  assert.equal((await reply(x))[4].response?.reason, "rate_limited");
}, { timeout: 30000 });

test("limits: document edits are channel events too: 50 edits → 20 ok, 30 rate_limited", async () => {
  const srv = await server();
  const alice = uid("rl_alice_");
  const room = await srv.roomWith({ [alice]: "owner" });
  const s = await srv.socket(alice);
  const ch = s.channel(`document:${room}`);
  await joinOk(ch);
  const results = await Promise.all(Array.from({ length: 50 }, (_, i) => pushP(ch, "edit", { operation: "insert", data: { i } })));
  const { ok, limited, other } = split(results);
  assert.deepEqual(other, []);
  assert.equal(ok.length, 20);
  assert.equal(limited.length, 30);
  limited.forEach((r) => assert.deepEqual(r, RATE_LIMITED));
  assert.deepEqual(ok.map((r) => r.response.seq), Array.from({ length: 20 }, (_, i) => i + 1));
}, { timeout: 30000 });

test("limits: --rate-limit 0 disables rate limiting (50 of 50 ok and stored)", async () => {
  const srv = await server(["--rate-limit", "0"]);
  const sc = await twoInRoom(srv);
  const { ok, other } = split(await burst(sc.ca));
  assert.deepEqual(other, []);
  assert.equal(ok.length, 50);
  assert.equal((await srv.getMessages(sc.room, "limit=100")).length, 50);
  for (let i = 0; i < 50; i++) await nextEvent(sc.cb, "new_message");
  const typing = await Promise.all(Array.from({ length: 50 }, () => pushP(sc.ca, "typing", { typing: false }, 1000)));
  assert.equal(typing.filter((r) => r.status === "error").length, 0, "no typing error");
  for (let i = 0; i < 50; i++) await nextEvent(sc.cb, "user_typing");
}, { timeout: 30000 });

test("limits: --rate-burst sets the bucket size (--rate-limit 10 --rate-burst 5: 5 of 50 ok)", async () => {
  const srv = await server(["--rate-limit", "10", "--rate-burst", "5"]);
  const sc = await twoInRoom(srv);
  const { ok, limited, other } = split(await burst(sc.ca));
  assert.deepEqual(other, []);
  assert.equal(ok.length, 5);
  assert.equal(limited.length, 45);
  assert.equal((await srv.getMessages(sc.room)).length, 5);
}, { timeout: 30000 });

test("limits: --max-conns-per-user 3: the 4th socket gets HTTP 429; after one closes, a new one connects", async () => {
  const srv = await server(["--max-conns-per-user", "3", "--max-channels", "2"]);
  const alice = uid("mc_alice_");
  const bob = uid("mc_bob_");
  const tok = async (u) => q({ token: await srv.token(u), vsn: "2.0.0" });
  const p1 = await srv.socket(alice);
  const w2 = await srv.rawWs(await tok(alice));
  const w3 = await srv.rawWs(await tok(alice));
  // 4th (and 5th): refused at the handshake with 429
  for (let i = 0; i < 2; i++) {
    await assert.rejects(srv.rawWs(await tok(alice)), (e) => e.status === 429, `connection ${4 + i} is refused with 429`);
  }
  // the phoenix client cannot get a 4th either
  await assert.rejects(srv.socket(alice, { reconnectAfterMs: () => 60000, timeoutMs: 3000 }));
  // another user is not affected
  const b = await srv.socket(bob);
  assert.ok(b.isConnected());
  // the three open ones still work
  assert.ok(p1.isConnected());
  w2.sendJson([null, "1", "phoenix", "heartbeat", {}]);
  assert.equal((await w2.nextJson((m) => m[1] === "1"))[4].status, "ok");
  // close one: a new one gets in (once the server noticed), and then the limit holds again
  w3.close(1000);
  await w3.closed(3000);
  let fresh = null;
  await waitUntil(
    async () => {
      try {
        fresh = await srv.rawWs(await tok(alice));
        return true;
      } catch (e) {
        if (e.status === 429) return false;
        throw e;
      }
    },
    3000,
    "a new connection after closing one",
    50
  );
  assert.ok(fresh);
  await assert.rejects(srv.rawWs(await tok(alice)), (e) => e.status === 429, "the limit applies again");
  // an abrupt drop frees a slot as well
  w2.terminate();
  await waitUntil(
    async () => {
      try {
        await srv.rawWs(await tok(alice));
        return true;
      } catch (e) {
        if (e.status === 429) return false;
        throw e;
      }
    },
    3000,
    "a new connection after a dropped one",
    50
  );
}, { timeout: 30000 });

test("limits: --max-channels 2: the third join is refused with \"too many channels joined\"", async () => {
  const srv = await server(["--max-conns-per-user", "3", "--max-channels", "2"]);
  const alice = uid("mch_alice_");
  const rooms = [];
  for (let i = 0; i < 4; i++) rooms.push(await srv.roomWith({ [alice]: "member" }));
  const s = await srv.socket(alice);
  const c0 = s.channel(`room:${rooms[0]}`);
  await joinOk(c0);
  await joinOk(s.channel(`room:${rooms[1]}`));
  assert.deepEqual(await joinP(s.channel(`room:${rooms[2]}`)), { status: "error", response: { reason: "too many channels joined" } });
  // a refused join does not count; after a leave there is room for one more
  assert.deepEqual(await joinP(s.channel(`room:${rooms[3]}`)), { status: "error", response: { reason: "too many channels joined" } });
  assert.equal(await leaveP(c0), "ok");
  await joinOk(s.channel(`room:${rooms[2]}`));
  assert.deepEqual(await joinP(s.channel(`room:${rooms[3]}`)), { status: "error", response: { reason: "too many channels joined" } });
  // the limit is per socket: another socket of the same user joins two of its own
  const s2 = await srv.socket(alice);
  await joinOk(s2.channel(`room:${rooms[0]}`));
  await joinOk(s2.channel(`room:${rooms[3]}`));
});
