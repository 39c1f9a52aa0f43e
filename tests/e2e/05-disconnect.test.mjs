// 05-disconnect: POST /api/broadcast — a `disconnect` to user_socket:<user> closes all
// that user's sockets (and only theirs); other events reach topic subscribers.
import { before, after } from "node:test";
import assert from "node:assert/strict";
import { test, startServer, sleep, uid, joinOk, nextEvent, noEvent, pushP } from "./lib/server.js";

let srv;
before(async () => {
  srv = await startServer();
});
after(async () => {
  await srv?.stop();
});

const q = (params) => new URLSearchParams(params).toString();

test("disconnect: broadcast `disconnect` to user_socket:<user> closes that user's sockets only", async () => {
  const alice = uid("dc_alice_");
  const bob = uid("dc_bob_");
  const room = await srv.roomWith({ [alice]: "member", [bob]: "member" });
  const topic = `room:${room}`;

  // alice: a phoenix socket in the room, a raw V2 ws (no channel), a raw V1 ws
  const sa = await srv.socket(alice, { reconnectAfterMs: () => 60000 });
  const closes = [];
  sa.onClose((e) => closes.push(e.code));
  const ca = sa.channel(topic);
  await joinOk(ca);
  const raw2 = await srv.rawWs(q({ token: await srv.token(alice), vsn: "2.0.0" }));
  const raw1 = await srv.rawWs(q({ token: await srv.token(alice), vsn: "1.0.0" }));
  // bob: in the room, must stay connected
  const sb = await srv.socket(bob);
  const bobCloses = [];
  sb.onClose((e) => bobCloses.push(e.code));
  const cb = sb.channel(topic);
  await joinOk(cb);

  // another event on the socket id topic is ignored
  const other = await srv.api("POST", "/api/broadcast", { topic: `user_socket:${alice}`, event: "not_disconnect", payload: {} });
  assert.ok(other.status >= 200 && other.status < 300, `broadcast answered ${other.status} ${other.text}`);
  await sleep(300);
  assert.deepEqual(closes, []);
  assert.equal(raw2.closeInfo, null);

  const r = await srv.api("POST", "/api/broadcast", { topic: `user_socket:${alice}`, event: "disconnect", payload: {} });
  assert.ok(r.status >= 200 && r.status < 300, `broadcast answered ${r.status} ${r.text}`);

  assert.equal((await raw2.closed(3000)).code, 1001, "raw V2 socket closed with 1001 (going away)");
  assert.equal((await raw1.closed(3000)).code, 1001, "raw V1 socket closed with 1001");
  const t0 = Date.now();
  while (closes.length === 0 && Date.now() - t0 < 3000) await sleep(50);
  assert.deepEqual(closes, [1001], "the phoenix socket saw a 1001 close");
  assert.deepEqual(await nextEvent(cb, "user_left"), { user_id: alice });

  // bob is unaffected
  assert.deepEqual(bobCloses, []);
  assert.ok(sb.isConnected());
  const p = await pushP(cb, "new_message", { body: "still here" });
  assert.equal(p.status, "ok");
  // a disconnect for nobody connected is fine
  const none = await srv.api("POST", "/api/broadcast", { topic: "user_socket:nobody_here", event: "disconnect", payload: {} });
  assert.ok(none.status >= 200 && none.status < 300, `broadcast answered ${none.status} ${none.text}`);
  // the user can connect again (the token was not revoked)
  const again = await srv.socket(alice);
  await joinOk(again.channel(topic));
});

test("broadcast: an event POSTed to a room topic reaches its subscribers", async () => {
  const alice = uid("bc_alice_");
  const room = await srv.roomWith({ [alice]: "member" });
  const s = await srv.socket(alice);
  const ch = s.channel(`room:${room}`);
  await joinOk(ch);
  const r = await srv.api("POST", "/api/broadcast", { topic: `room:${room}`, event: "srv_event", payload: { a: 1 } });
  assert.ok(r.status >= 200 && r.status < 300, `broadcast answered ${r.status} ${r.text}`);
  assert.deepEqual(await nextEvent(ch, "srv_event"), { a: 1 });
  await noEvent(ch, "srv_event", 300);
});
