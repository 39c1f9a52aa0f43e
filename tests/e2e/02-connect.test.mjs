// 02-connect: the socket endpoint: token auth on the upgrade, vsn negotiation,
// heartbeats, unmatched topics, and the idle timeout.
import { before, after } from "node:test";
import assert from "node:assert/strict";
import {
  test,
  startServer,
  runCli,
  signJwt,
  sleep,
  uid,
  joinP,
  joinOk,
  pushP,
  nextEvent,
  Socket,
  WebSocket,
} from "./lib/server.js";

let srv;
before(async () => {
  srv = await startServer();
});
after(async () => {
  await srv?.stop();
});

const q = (params) => new URLSearchParams(params).toString();

test("ws: a phoenix client connects with a token from /api/tokens and pings", async () => {
  const s = await srv.socket("conn_alice");
  assert.ok(s.isConnected());
  const rtt = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("no heartbeat reply within 3 s")), 3000);
    assert.ok(s.ping((ms) => (clearTimeout(t), resolve(ms))), "ping was sent");
  });
  assert.ok(rtt >= 0 && rtt < 3000);
});

test("ws: a token made by `rowcast token` with the server's secret is accepted", async () => {
  const r = await runCli(["token", "--user", "cli_user", "--ttl", "60", "--jwt-secret", srv.jwtSecret]);
  assert.equal(r.code, 0, r.stderr);
  const token = r.stdout.trim();
  assert.equal(await srv.upgradeStatus(q({ token, vsn: "2.0.0" })), 101);
});

test("ws: vsn 2.0.0, 1.0.0 and no vsn are accepted; other vsn values are 403", async () => {
  const token = await srv.token("vsn_user");
  assert.equal(await srv.upgradeStatus(q({ token, vsn: "2.0.0" })), 101, "vsn=2.0.0");
  assert.equal(await srv.upgradeStatus(q({ token, vsn: "1.0.0" })), 101, "vsn=1.0.0");
  assert.equal(await srv.upgradeStatus(q({ token })), 101, "no vsn (V1, as Phoenix)");
  for (const vsn of ["3.0.0", "2.1.0", "2.0", "garbage", "", "1.1.0", "2.0.0-rc.1"]) {
    assert.equal(await srv.upgradeStatus(q({ token, vsn })), 403, `vsn=${JSON.stringify(vsn)}`);
  }
  assert.equal(await srv.upgradeStatus(`token=${token}&vsn[]=2.0.0`), 403, "vsn[]=2.0.0");
});

test("ws: missing, malformed, forged and expired tokens are refused with HTTP 403", async () => {
  const now = Math.floor(Date.now() / 1000);
  const good = { sub: "forge_user", exp: now + 600 };
  const cases = {
    "no token": q({ vsn: "2.0.0" }),
    "empty token": q({ token: "", vsn: "2.0.0" }),
    garbage: q({ token: "not-a-jwt", vsn: "2.0.0" }),
    "three garbage parts": q({ token: "a.b.c", vsn: "2.0.0" }),
    "the API key as token": q({ token: srv.apiKey, vsn: "2.0.0" }),
    "signed with another secret": q({ token: signJwt(good, "some-other-secret"), vsn: "2.0.0" }),
    expired: q({ token: signJwt({ sub: "forge_user", exp: now - 10 }, srv.jwtSecret), vsn: "2.0.0" }),
    "no exp": q({ token: signJwt({ sub: "forge_user" }, srv.jwtSecret), vsn: "2.0.0" }),
    "no sub": q({ token: signJwt({ exp: now + 600 }, srv.jwtSecret), vsn: "2.0.0" }),
    "empty sub": q({ token: signJwt({ sub: "", exp: now + 600 }, srv.jwtSecret), vsn: "2.0.0" }),
    "alg none": q({
      token: `${Buffer.from('{"alg":"none","typ":"JWT"}').toString("base64url")}.${Buffer.from(JSON.stringify(good)).toString("base64url")}.`,
      vsn: "2.0.0",
    }),
    "alg HS512 header": q({ token: signJwt(good, srv.jwtSecret, { alg: "HS512", typ: "JWT" }), vsn: "2.0.0" }),
    "tampered payload": q({
      token: (() => {
        const [h, , sig] = signJwt(good, srv.jwtSecret).split(".");
        return `${h}.${Buffer.from(JSON.stringify({ ...good, sub: "someone_else" })).toString("base64url")}.${sig}`;
      })(),
      vsn: "2.0.0",
    }),
  };
  for (const [what, query] of Object.entries(cases)) {
    assert.equal(await srv.upgradeStatus(query), 403, what);
  }
  // our own well-formed token with the server's secret is fine (the forgeries above
  // fail for the reason named, not because of how they were made)
  assert.equal(await srv.upgradeStatus(q({ token: signJwt(good, srv.jwtSecret), vsn: "2.0.0" })), 101);
});

test("ws: a token minted with ttl 1 is refused once it expired", async () => {
  const token = await srv.token("short_lived", 1);
  await sleep(2100);
  assert.equal(await srv.upgradeStatus(q({ token, vsn: "2.0.0" })), 403);
});

test("ws: a phoenix client with a bad token is refused (error, never open)", async () => {
  const s = new Socket(srv.wsUrl, {
    transport: WebSocket,
    params: { token: "bad" },
    reconnectAfterMs: () => 60000,
  });
  srv.clients.add(s);
  let opened = false;
  s.onOpen(() => (opened = true));
  const errored = new Promise((resolve) => s.onError(resolve));
  s.connect();
  await Promise.race([errored, sleep(3000).then(() => assert.fail("no error event within 3 s"))]);
  await sleep(300);
  assert.equal(opened, false);
  s.disconnect();
});

test("ws: heartbeat on topic phoenix gets an ok reply with the same ref (V2)", async () => {
  const token = await srv.token("hb_user");
  const ws = await srv.rawWs(q({ token, vsn: "2.0.0" }));
  ws.sendJson([null, "7", "phoenix", "heartbeat", {}]);
  assert.deepEqual(await ws.nextJson(), [null, "7", "phoenix", "phx_reply", { response: {}, status: "ok" }]);
  // refs are opaque: a number comes back as a number; a join_ref on a heartbeat is not echoed
  ws.sendJson(["9", 42, "phoenix", "heartbeat", {}]);
  assert.deepEqual(await ws.nextJson(), [null, 42, "phoenix", "phx_reply", { response: {}, status: "ok" }]);
  // extra elements after the fifth are ignored
  ws.sendJson([null, "8", "phoenix", "heartbeat", {}, "extra", 1]);
  assert.deepEqual(await ws.nextJson(), [null, "8", "phoenix", "phx_reply", { response: {}, status: "ok" }]);
});

test("ws: unknown topic prefix and pushes to unjoined topics get 'unmatched topic'", async () => {
  const room = await srv.roomWith({ um_user: "member" });
  const token = await srv.token("um_user");
  const ws = await srv.rawWs(q({ token, vsn: "2.0.0" }));
  const unmatched = (ref, topic) => [null, ref, topic, "phx_reply", { response: { reason: "unmatched topic" }, status: "error" }];
  ws.sendJson(["1", "1", "nope:1", "phx_join", {}]);
  assert.deepEqual(await ws.nextJson(), unmatched("1", "nope:1"));
  ws.sendJson(["2", "2", "nope", "phx_join", {}]);
  assert.deepEqual(await ws.nextJson(), unmatched("2", "nope"));
  ws.sendJson(["3", "3", `room:${room}`, "new_message", { body: "x" }]);
  assert.deepEqual(await ws.nextJson(), unmatched("3", `room:${room}`));
  ws.sendJson([null, "4", "room:whatever", "typing", { typing: true }]);
  assert.deepEqual(await ws.nextJson(), unmatched("4", "room:whatever"));
  // nothing was stored
  assert.deepEqual(await srv.getMessages(room), []);

  // and the phoenix client sees the same as a join error
  const s = await srv.socket("um_user");
  const r = await joinP(s.channel("nope:1"));
  assert.deepEqual(r, { status: "error", response: { reason: "unmatched topic" } });
});

test("ws: heartbeats keep an idle socket open; a silent socket is closed (--idle-timeout 2)", async () => {
  const idle = await startServer({ args: ["--idle-timeout", "2"] });
  try {
    const room = await idle.roomWith({ idle_user: "member" });
    const s = await idle.socket("idle_user", { heartbeatIntervalMs: 500 });
    const closes = [];
    s.onClose((e) => closes.push(e.code));
    const ch = s.channel(`room:${room}`);
    await joinOk(ch);
    const silent = await idle.rawSocket(q({ token: await idle.token("idle_silent"), vsn: "2.0.0" }));
    const t0 = Date.now();
    const code = await silent.closed(5000);
    const after = Date.now() - t0;
    assert.ok(after >= 1000, `closed too early (${after} ms, code ${code})`);
    await sleep(Math.max(0, 5000 - after));
    assert.deepEqual(closes, [], "the heartbeating phoenix socket was never closed");
    assert.ok(s.isConnected());
    const r = await pushP(ch, "new_message", { body: "still here" });
    assert.equal(r.status, "ok", JSON.stringify(r));
    const b = await nextEvent(ch, "new_message");
    assert.equal(b.body, "still here");
  } finally {
    await idle.stop();
  }
}, { timeout: 30000 });

// Wire details phoenix.js relies on (docs/phoenix-protocol.md §4.2–4.5).
test("ws: channel lifecycle on the wire: join reply first, leave → reply + phx_close, duplicate join", async () => {
  const room = await srv.roomWith({ wire_user: "member" });
  const topic = `room:${room}`;
  const ws = await srv.rawWs(q({ token: await srv.token("wire_user"), vsn: "2.0.0" }));
  ws.sendJson(["1", "1", topic, "phx_join", {}]);
  const first = await ws.nextJson();
  assert.deepEqual(first.slice(0, 4), ["1", "1", topic, "phx_reply"], "the join reply is the first frame");
  assert.equal(first[4].status, "ok");
  assert.deepEqual(await ws.nextJson(), ["1", null, topic, "message_history", { messages: [] }]);

  // a null join_ref is delivered to the joined channel; the reply carries its join_ref
  ws.sendJson([null, "2", topic, "whatever", {}]);
  assert.deepEqual(await ws.nextJson(), ["1", "2", topic, "phx_reply", { response: { reason: "unknown_event" }, status: "error" }]);

  // leave: ok reply, then phx_close with ref = join_ref; then the topic is unmatched
  ws.sendJson(["1", "4", topic, "phx_leave", {}]);
  assert.deepEqual(await ws.nextJson(), ["1", "4", topic, "phx_reply", { response: {}, status: "ok" }]);
  assert.deepEqual(await ws.nextJson(), ["1", "1", topic, "phx_close", {}]);
  ws.sendJson(["1", "5", topic, "whatever", {}]);
  assert.deepEqual(await ws.nextJson(), [null, "5", topic, "phx_reply", { response: { reason: "unmatched topic" }, status: "error" }]);
  // leaving a topic that is not joined is answered ok (join_ref echoed), without phx_close
  ws.sendJson(["7", "7", "room:not-joined", "phx_leave", {}]);
  assert.deepEqual(await ws.nextJson(), ["7", "7", "room:not-joined", "phx_reply", { response: {}, status: "ok" }]);

  // duplicate join: the new join's reply, the old instance's phx_close, the new history
  ws.sendJson(["10", "10", topic, "phx_join", {}]);
  assert.equal((await ws.nextJson((m) => m[1] === "10")).at(4).status, "ok");
  await ws.nextJson((m) => m[3] === "message_history" && m[0] === "10");
  ws.sendJson(["11", "11", topic, "phx_join", {}]);
  const reply = await ws.nextJson((m) => m[1] === "11");
  assert.deepEqual(reply.slice(0, 4), ["11", "11", topic, "phx_reply"]);
  assert.equal(reply[4].status, "ok");
  assert.deepEqual(await ws.nextJson((m) => m[3] === "phx_close"), ["10", "10", topic, "phx_close", {}]);
  assert.equal((await ws.nextJson((m) => m[3] === "message_history"))[0], "11");
  ws.sendJson(["11", "12", topic, "new_message", { body: "after rejoin" }]);
  const ok = await ws.nextJson((m) => m[1] === "12");
  assert.deepEqual(ok.slice(0, 4), ["11", "12", topic, "phx_reply"]);
  assert.equal(ok[4].status, "ok");
  // exactly one broadcast copy: the old instance is gone
  await ws.nextJson((m) => m[3] === "new_message");
  await sleep(300);
  const more = ws.msgs.map((m) => JSON.parse(m.data.toString())).filter((m) => m[3] === "new_message" || m[3] === "phx_reply");
  assert.deepEqual(more, [], "no second copy of the broadcast or reply");
});

test("ws: a push with a stale join_ref is dropped without a reply (Phoenix 1.8.3+ rule)", async () => {
  const room = await srv.roomWith({ stale_user: "member" });
  const topic = `room:${room}`;
  const ws = await srv.rawWs(q({ token: await srv.token("stale_user"), vsn: "2.0.0" }));
  ws.sendJson(["3", "3", topic, "phx_join", {}]);
  assert.equal((await ws.nextJson((m) => m[3] === "phx_reply")).at(4).status, "ok");
  await ws.nextJson((m) => m[3] === "message_history");
  ws.sendJson(["99", "9", topic, "new_message", { body: "stale" }]);
  ws.sendJson([null, "10", "phoenix", "heartbeat", {}]);
  assert.deepEqual(await ws.nextJson(), [null, "10", "phoenix", "phx_reply", { response: {}, status: "ok" }], "no reply to the stale push came first");
  await sleep(200);
  assert.deepEqual(ws.msgs.map((m) => m.data.toString()), []);
  assert.deepEqual(await srv.getMessages(room), [], "the stale push stored nothing");
});
