// 10-longpoll: /socket/longpoll. The phoenix client forced onto its LongPoll transport
// (under node 20 its Ajax uses fetch) gets what the WebSocket suites assert: connect and
// refusal, room join/history/new_message/typing/user_left, presence through the
// Presence class, REST broadcasts and notifications, a forced disconnect (the client
// reconnects and rejoins), the rate limit — with long-poll and WebSocket clients mixed in
// one room. Then the transport itself over raw HTTP (§6 of the protocol notes): session
// open (410 + token), POST ndjson batches, replies through the next GET, the 10 s poll
// window (204), unknown session tokens (410), OPTIONS/CORS, other methods (400), the
// headers of every answer, a malformed line ending the session, the 100-line cap, and a
// session nobody polls being ended.
import { before, after } from "node:test";
import assert from "node:assert/strict";
import { LongPoll, Presence } from "phoenix";
import {
  Socket,
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
  hasKeys,
  hasFields,
  assertIsoUtc,
  expectStatus,
  waitUntil,
  eventually,
} from "./lib/server.js";

let srv;
before(async () => {
  srv = await startServer();
});
after(async () => {
  await srv?.stop();
});

// A connected phoenix Socket on the LongPoll transport (the harness's socket() with the
// transport overridden; it is closed after each test like the others).
async function lpSocket(user, opts = {}) {
  const s = await srv.socket(user, { transport: LongPoll, ...opts });
  assert.ok(s.conn instanceof LongPoll, "the socket runs on LongPoll");
  return s;
}

// A room with two members, each with a unique id.
async function scene(extra = {}) {
  const u = { alice: uid("lp_alice_"), bob: uid("lp_bob_"), carol: uid("lp_carol_") };
  const room = await srv.roomWith({ [u.alice]: "owner", [u.bob]: "member", [u.carol]: "member", ...extra });
  return { room, topic: `room:${room}`, ...u };
}

function assertMessage(m, want) {
  hasKeys(m, ["body", "id", "inserted_at", "seq", "user_id"], "message");
  assertIsoUtc(m.inserted_at);
  for (const [k, v] of Object.entries(want)) assert.deepEqual(m[k], v, `message ${k}`);
}

// ---- raw HTTP --------------------------------------------------------------------------
// One request to /socket/longpoll?<query>. Resolves {status, text, body, headers, ms}.
async function lp(method, query, { body, headers = {}, timeoutMs = 15000 } = {}) {
  const t0 = Date.now();
  const res = await fetch(`${srv.base}/socket/longpoll${query === undefined ? "" : `?${query}`}`, {
    method,
    headers,
    body,
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.text();
  let json;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = undefined;
  }
  return { status: res.status, text, body: json, headers: res.headers, ms: Date.now() - t0 };
}

// The headers every JSON long-poll answer carries.
function assertLpHeaders(r, what) {
  const ctx = `${what}: ${r.status} ${r.text}`;
  assert.equal(r.status, 200, `HTTP status is always 200; ${ctx}`);
  assert.equal(r.headers.get("access-control-allow-origin"), "*", `access-control-allow-origin; ${ctx}`);
  assert.equal(r.headers.get("content-type"), "application/json; charset=utf-8", `content-type; ${ctx}`);
  assert.equal(r.headers.get("cache-control"), "no-store", `cache-control; ${ctx}`);
}

// A raw long-poll session for user: {q(sessionToken) → query, token (session), appToken}.
async function rawSession(user) {
  const appToken = await srv.token(user);
  const base = `token=${encodeURIComponent(appToken)}&vsn=2.0.0`;
  const r = await lp("GET", `${base}&`, { headers: { accept: "application/json" } });
  assertLpHeaders(r, "opening GET");
  assert.equal(r.body.status, 410, `opening GET: ${r.text}`);
  const sess = {
    appToken,
    base,
    token: r.body.token,
    get query() {
      return `${base}&token=${encodeURIComponent(this.token)}`;
    },
  };
  // frames received through polls, parsed (V2 arrays)
  sess.inbox = [];
  sess.post = (frames) =>
    lp("POST", sess.query, {
      headers: { "content-type": "application/x-ndjson" },
      body: frames.map((f) => (typeof f === "string" ? f : JSON.stringify(f))).join("\n"),
    });
  sess.poll = async (timeoutMs = 15000) => {
    const p = await lp("GET", sess.query, { headers: { accept: "application/json" }, timeoutMs });
    assertLpHeaders(p, "poll GET");
    if (p.body.token) sess.token = p.body.token;
    if (p.body.status === 200) for (const m of p.body.messages) sess.inbox.push(JSON.parse(m));
    return p;
  };
  // Polls until pred holds on the inbox (or timeoutMs); returns the inbox.
  sess.pollUntil = async (pred, timeoutMs = 5000, what = "frames") => {
    const deadline = Date.now() + timeoutMs;
    while (!pred(sess.inbox)) {
      if (Date.now() > deadline) throw new Error(`no ${what} within ${timeoutMs} ms; got ${JSON.stringify(sess.inbox)}`);
      const p = await sess.poll();
      assert.ok([200, 204].includes(p.body.status), `poll status ${p.text}`);
    }
    return sess.inbox;
  };
  return sess;
}

const reply = (frames, ref) => frames.find((f) => f[1] === ref && f[3] === "phx_reply");

// ---- the phoenix client on LongPoll ----------------------------------------------------

test("longpoll: phoenix.js opens a LongPoll socket; a bad token is refused and never opens", async () => {
  const sc = await scene();
  const s = await lpSocket(sc.alice);
  assert.ok(s.isConnected(), "connected");
  assert.equal(typeof s.conn.token, "string", "holds a session token");
  assert.match(s.conn.token, /^[A-Za-z0-9._~-]+$/, "the session token is URL-safe");

  for (const params of [{ token: "not-a-jwt" }, {}, { token: await srv.token(sc.alice, 1) + "x" }]) {
    const bad = new Socket(srv.wsUrl, { transport: LongPoll, params, reconnectAfterMs: () => 60000, timeout: 5000 });
    srv.clients.add(bad);
    const seen = { open: 0, error: [] };
    bad.onOpen(() => seen.open++);
    bad.onError((e) => seen.error.push(e));
    bad.connect();
    await waitUntil(() => seen.error.length > 0, 3000, `an error for params ${JSON.stringify(params)}`);
    await sleep(200);
    assert.equal(seen.open, 0, `never opened with ${JSON.stringify(params)}`);
    assert.equal(seen.error[0], 403, "the client saw the 403 poll status");
    bad.disconnect();
  }

  // raw: a bad token gets {"status":403} (HTTP 200), no token too, a bad vsn too
  const good = await srv.token(sc.alice);
  for (const q of ["token=garbage&vsn=2.0.0&", "vsn=2.0.0&", `token=${encodeURIComponent(good)}&vsn=3.0.0&`]) {
    const r = await lp("GET", q);
    assertLpHeaders(r, `GET ?${q}`);
    assert.deepEqual(r.body, { status: 403 }, `GET ?${q}`);
  }
});

test("longpoll: join replies {room_id, role, last_seq} then message_history; last_seq recovery", async () => {
  const sc = await scene();
  for (let i = 1; i <= 3; i++) await srv.postMessage(sc.room, sc.bob, `m${i}`);
  const s = await lpSocket(sc.alice);
  const ch = s.channel(sc.topic);
  const r = await joinP(ch);
  assert.equal(r.status, "ok", JSON.stringify(r));
  hasFields(r.response, { room_id: sc.room, role: "owner", last_seq: 3 }, "join reply");
  const h = await nextEvent(ch, "message_history");
  assert.deepEqual(h.messages.map((m) => [m.seq, m.body, m.user_id]), [1, 2, 3].map((i) => [i, `m${i}`, sc.bob]));
  h.messages.forEach((m) => assertMessage(m, {}));

  const ch2 = s.channel(sc.topic, { last_seq: 2 });
  await joinOk(ch2);
  assert.deepEqual((await nextEvent(ch2, "message_history")).messages.map((m) => m.seq), [3]);

  // membership rules are the same
  const dave = uid("lp_dave_");
  await srv.putUser(dave);
  const sd = await lpSocket(dave);
  assert.deepEqual(await joinP(sd.channel(sc.topic)), { status: "error", response: { reason: "unauthorized" } });
  assert.deepEqual(await joinP(sd.channel("room:no-such-room-here")), { status: "error", response: { reason: "not_found" } });
});

test("longpoll: new_message is acked and broadcast to long-poll and WebSocket clients in one room", async () => {
  const sc = await scene();
  const la = await lpSocket(sc.alice);
  const lb = await lpSocket(sc.bob);
  const wc = await srv.socket(sc.carol); // WebSocket
  const [ca, cb, cc] = [la.channel(sc.topic), lb.channel(sc.topic), wc.channel(sc.topic)];
  for (const ch of [ca, cb, cc]) {
    await joinOk(ch);
    await nextEvent(ch, "message_history");
  }
  const r = await pushP(ca, "new_message", { body: "hi from long-poll 😀" });
  assert.equal(r.status, "ok", JSON.stringify(r));
  hasKeys(r.response, ["message_id", "seq"], "new_message reply");
  assert.equal(r.response.seq, 1);
  for (const ch of [ca, cb, cc]) {
    assertMessage(await nextEvent(ch, "new_message"), { id: r.response.message_id, seq: 1, body: "hi from long-poll 😀", user_id: sc.alice });
  }
  // and the other way: the WebSocket client speaks, the long-poll clients hear
  const r2 = await pushP(cc, "new_message", { body: "hi from ws" });
  assert.equal(r2.status, "ok");
  for (const ch of [ca, cb, cc]) assertMessage(await nextEvent(ch, "new_message"), { seq: 2, body: "hi from ws", user_id: sc.carol });
  // errors are replies, as on a WebSocket
  assert.deepEqual(await pushP(ca, "new_message", { body: "" }), { status: "error", response: { reason: "message_empty" } });
  assert.deepEqual(await pushP(ca, "no_such_event", {}), { status: "error", response: { reason: "unknown_event" } });
  for (const ch of [ca, cb, cc]) await noEvent(ch, "new_message", ch === ca ? 300 : 0);
  assert.deepEqual((await srv.getMessages(sc.room)).map((m) => m.body), ["hi from long-poll 😀", "hi from ws"]);
});

test("longpoll: typing reaches the others (both transports), not the sender", async () => {
  const sc = await scene();
  const la = await lpSocket(sc.alice);
  const wb = await srv.socket(sc.bob);
  const ca = la.channel(sc.topic);
  const cb = wb.channel(sc.topic);
  await joinOk(ca);
  await joinOk(cb);
  ca.push("typing", { typing: true });
  assert.deepEqual(await nextEvent(cb, "user_typing"), { user_id: sc.alice, typing: true });
  cb.push("typing", { typing: false });
  assert.deepEqual(await nextEvent(ca, "user_typing"), { user_id: sc.bob, typing: false });
  await noEvent(ca, "user_typing", 300);
  await noEvent(cb, "user_typing", 0);
});

test("longpoll: leaving sends user_left to the others", async () => {
  const sc = await scene();
  const la = await lpSocket(sc.alice);
  const wb = await srv.socket(sc.bob);
  const lc = await lpSocket(sc.carol);
  const ca = la.channel(sc.topic);
  const cb = wb.channel(sc.topic);
  const cc = lc.channel(sc.topic);
  for (const ch of [ca, cb, cc]) await joinOk(ch);
  assert.equal(await leaveP(ca), "ok");
  for (const ch of [cb, cc]) assert.deepEqual(await nextEvent(ch, "user_left"), { user_id: sc.alice });
  assert.equal(await leaveP(cb), "ok");
  assert.deepEqual(await nextEvent(cc, "user_left"), { user_id: sc.bob });
  // a long-poll client that leaves gets nothing more from the room
  await srv.postMessage(sc.room, sc.carol, "after alice left");
  assert.equal((await nextEvent(cc, "new_message")).body, "after alice left");
  await noEvent(ca, "new_message", 300);
});

test("longpoll: presence — phoenix.js Presence lists a long-poll and a WebSocket client, statuses and leaves", async () => {
  const sc = await scene();
  const topic = `presence:${sc.room}`;
  const view = (p) =>
    p
      .list((id, { metas }) => ({ id, n: metas.length, status: metas.map((m) => m.status).sort().join(",") }))
      .sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
  const clients = {};
  async function client(name, user, longpoll) {
    const s = longpoll ? await lpSocket(user, { reconnectAfterMs: () => 60000 }) : await srv.socket(user, { reconnectAfterMs: () => 60000 });
    const ch = s.channel(topic, { device: longpoll ? "lp" : "ws" });
    const p = new Presence(ch);
    const c = { s, ch, p, synced: null };
    p.onSync(() => (c.synced = view(p)));
    clients[name] = c;
    await joinOk(ch);
    return c;
  }
  const expectAll = async (names, want, step) => {
    const sorted = [...want].sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
    for (const n of names) await eventually(() => assert.deepEqual(clients[n].synced, sorted, `${step}: ${n}'s list`), 3000);
  };
  const A = sc.alice;
  const B = sc.bob;
  await client("a", A, true);
  await expectAll(["a"], [{ id: A, n: 1, status: "online" }], "alice (long-poll) joined");
  await client("b", B, false);
  await expectAll(["a", "b"], [{ id: A, n: 1, status: "online" }, { id: B, n: 1, status: "online" }], "bob (ws) joined");
  const st = clients.a.p.list((id, { metas }) => ({ id, device: metas[0].device }));
  assert.deepEqual(st.find((x) => x.id === A).device, "lp");
  assert.deepEqual((await pushP(clients.a.ch, "update_status", { status: "away" })).response, { status: "away" });
  await expectAll(["a", "b"], [{ id: A, n: 1, status: "away" }, { id: B, n: 1, status: "online" }], "alice is away");
  assert.deepEqual((await pushP(clients.b.ch, "update_status", { status: "busy" })).response, { status: "busy" });
  await expectAll(["a", "b"], [{ id: A, n: 1, status: "away" }, { id: B, n: 1, status: "busy" }], "bob is busy");
  const r = await pushP(clients.a.ch, "get_online_users", {});
  assert.deepEqual(r.response.users.map((u) => [u.user_id, u.status, u.connections]).sort(), [[A, "away", 1], [B, "busy", 1]].sort());
  assert.equal(await leaveP(clients.a.ch), "ok");
  await expectAll(["b"], [{ id: B, n: 1, status: "busy" }], "alice left");
  await client("a2", A, true);
  await expectAll(["a2", "b"], [{ id: A, n: 1, status: "online" }, { id: B, n: 1, status: "busy" }], "alice is back");
  // the long-poll client's socket goes away cleanly (it stops polling; phoenix.js sends
  // nothing): covered by the idle-session test below. A forced disconnect:
  await srv.api("POST", `/api/users/${encodeURIComponent(A)}/disconnect`);
  await expectAll(["b"], [{ id: B, n: 1, status: "busy" }], "alice disconnected");
}, { timeout: 30000 });

test("longpoll: REST broadcasts, REST messages and notifications reach long-poll clients", async () => {
  const sc = await scene();
  const la = await lpSocket(sc.alice);
  const ch = la.channel(sc.topic);
  await joinOk(ch);
  const b = await srv.api("POST", "/api/broadcast", { topic: sc.topic, event: "announce", payload: { text: "hi", n: [1, 2] } });
  assert.equal(b.status, 200, b.text);
  assert.deepEqual(await nextEvent(ch, "announce"), { text: "hi", n: [1, 2] });
  const m = await srv.postMessage(sc.room, sc.bob, "via REST");
  assertMessage(await nextEvent(ch, "new_message"), { id: m.id, seq: m.seq, body: "via REST", user_id: sc.bob });
  await srv.sql(`INSERT INTO messages(room_id, user_id, body) VALUES ('${sc.room}', '${sc.bob}', 'via sqlite3')`);
  assertMessage(await nextEvent(ch, "new_message", 5000), { seq: m.seq + 1, body: "via sqlite3", user_id: sc.bob });

  const nch = la.channel(`notifications:${sc.alice}`);
  await joinOk(nch);
  assert.deepEqual(await nextEvent(nch, "unread_notifications"), { notifications: [] });
  const n = expectStatus(await srv.api("POST", "/api/notifications", { user_id: sc.alice, message: "hello", data: { k: 1 } }), 201);
  const got = await nextEvent(nch, "new_notification");
  hasFields(got, { id: n.id, message: "hello", data: { k: 1 } }, "new_notification");
});

test("longpoll: POST /api/users/{id}/disconnect ends the session; the client reconnects and rejoins", async () => {
  const sc = await scene();
  const la = await lpSocket(sc.alice);
  const wb = await srv.socket(sc.bob);
  const ca = la.channel(sc.topic);
  const cb = wb.channel(sc.topic);
  await joinOk(ca);
  await joinOk(cb);
  await nextEvent(ca, "message_history");
  const t1 = la.conn.token;
  const closes = [];
  la.onClose((e) => closes.push(e.code));
  let opens = 0;
  la.onOpen(() => opens++);

  const r = await srv.api("POST", `/api/users/${encodeURIComponent(sc.alice)}/disconnect`);
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(await nextEvent(cb, "user_left"), { user_id: sc.alice });
  await waitUntil(() => closes.length > 0, 3000, "the long-poll client saw its session close");
  assert.equal(closes[0], 3410, "phoenix.js closes with session_gone (3410)");
  // reconnects (harness: 200 ms) on a new session and rejoins the room
  await waitUntil(() => opens > 0 && la.isConnected(), 5000, "reconnected");
  assert.notEqual(la.conn.token, t1, "a new session token");
  await nextEvent(ca, "message_history", 5000); // the rejoin's history
  await waitUntil(() => ca.state === "joined", 3000, "channel rejoined");
  const p = await pushP(cb, "new_message", { body: "welcome back" });
  assert.equal(p.status, "ok");
  assert.equal((await nextEvent(ca, "new_message")).body, "welcome back");
  assert.equal((await pushP(ca, "new_message", { body: "thanks" })).status, "ok");
});

test("longpoll: on one worker, POST /api/users/{id}/disconnect ends a long-poll session and the user's older WebSocket alike", async () => {
  // One I/O worker: the session (which ends at once) and the WebSocket (which closes by
  // handshake) are on one list, the newer first.
  const one = await startServer({ args: ["--workers", "1"] });
  try {
    const alice = uid("lp1_alice_");
    const q = `token=${encodeURIComponent(await one.token(alice))}&vsn=2.0.0`;
    const ws = await one.rawWs(q);
    const get = async (query) =>
      (await fetch(`${one.base}/socket/longpoll?${query}`, { headers: { accept: "application/json" }, signal: AbortSignal.timeout(5000) })).json();
    const open = await get(q);
    assert.equal(open.status, 410, JSON.stringify(open));
    const r = await one.api("POST", `/api/users/${encodeURIComponent(alice)}/disconnect`);
    assert.equal(r.status, 200, r.text);
    assert.equal((await ws.closed(3000)).code, 1001, "the WebSocket's close code");
    const poll = await get(`${q}&token=${encodeURIComponent(open.token)}`);
    assert.equal(poll.status, 410, `a poll of the ended session: ${JSON.stringify(poll)}`);
  } finally {
    await one.stop();
  }
});

test("longpoll: the rate limit applies the same: a burst of 50 → 20 ok, 30 rate_limited", async () => {
  const sc = await scene();
  const la = await lpSocket(sc.alice);
  const wb = await srv.socket(sc.bob);
  const ca = la.channel(sc.topic);
  const cb = wb.channel(sc.topic);
  await joinOk(ca);
  await joinOk(cb);
  const results = await Promise.all(Array.from({ length: 50 }, (_, i) => pushP(ca, "new_message", { body: `m${i}` }, 10000)));
  assert.deepEqual(
    results.map((r) => r.status),
    [...Array(20).fill("ok"), ...Array(30).fill("error")],
    JSON.stringify(results.filter((r) => r.status !== "ok" && r.response?.reason !== "rate_limited"))
  );
  results.slice(20).forEach((r) => assert.deepEqual(r.response, { reason: "rate_limited", retry_after: 1 }));
  assert.deepEqual(results.slice(0, 20).map((r) => r.response.seq), Array.from({ length: 20 }, (_, i) => i + 1));
  const got = [];
  for (let i = 0; i < 20; i++) got.push((await nextEvent(cb, "new_message")).body);
  assert.deepEqual(got, Array.from({ length: 20 }, (_, i) => `m${i}`));
  await noEvent(cb, "new_message", 300);
}, { timeout: 30000 });

// ---- raw HTTP (protocol notes §6) -----------------------------------------------------

test("longpoll raw: first GET opens a session: 200 {status:410, token, messages:[]}", async () => {
  const sc = await scene();
  const s = await rawSession(sc.alice);
  assert.equal(typeof s.token, "string");
  assert.ok(s.token.length >= 16, `token ${s.token}`);
  assert.match(s.token, /^[A-Za-z0-9._~-]+$/, "URL-safe");
  // exact shape of the opening answer
  const again = await lp("GET", `${s.base}&`);
  assertLpHeaders(again, "second opening GET");
  assert.deepEqual(Object.keys(again.body).sort(), ["messages", "status", "token"]);
  assert.equal(again.body.status, 410);
  assert.deepEqual(again.body.messages, []);
  assert.notEqual(again.body.token, s.token, "each opening GET is a new session");
  // the session token is also accepted in X-Phoenix-Longpoll-Token (phoenix 1.9)
  const post = await lp("POST", s.base, {
    headers: { "content-type": "application/x-ndjson", "x-phoenix-longpoll-token": s.token },
    body: JSON.stringify([null, "1", "phoenix", "heartbeat", {}]),
  });
  assertLpHeaders(post, "POST with the token in a header");
  assert.deepEqual(post.body, { status: 200 });
  await s.pollUntil((f) => reply(f, "1"), 3000, "heartbeat reply");
  assert.deepEqual(reply(s.inbox, "1"), [null, "1", "phoenix", "phx_reply", { status: "ok", response: {} }]);
});

test("longpoll raw: POST ndjson → {status:200}; the replies come through the next GET", async () => {
  const sc = await scene();
  await srv.postMessage(sc.room, sc.bob, "earlier");
  const s = await rawSession(sc.alice);
  const post = await s.post([
    ["1", "1", sc.topic, "phx_join", {}],
    [null, "2", "phoenix", "heartbeat", {}],
    ["1", "3", sc.topic, "new_message", { body: "raw hello" }],
  ]);
  assertLpHeaders(post, "POST");
  assert.deepEqual(post.body, { status: 200 });
  const frames = await s.pollUntil((f) => reply(f, "3") && f.some((x) => x[3] === "new_message"), 5000, "the replies");
  const join = reply(frames, "1");
  assert.deepEqual(join.slice(0, 4), ["1", "1", sc.topic, "phx_reply"]);
  assert.equal(join[4].status, "ok");
  hasFields(join[4].response, { room_id: sc.room, role: "owner", last_seq: 1 }, "join reply");
  const hist = frames.find((f) => f[3] === "message_history");
  assert.deepEqual(hist.slice(0, 3), ["1", null, sc.topic]);
  assert.deepEqual(hist[4].messages.map((m) => m.body), ["earlier"]);
  assert.deepEqual(reply(frames, "2"), [null, "2", "phoenix", "phx_reply", { status: "ok", response: {} }]);
  assert.deepEqual(reply(frames, "3")[4].status, "ok");
  assert.equal(reply(frames, "3")[4].response.seq, 2);
  const nm = frames.find((f) => f[3] === "new_message");
  assert.equal(nm[4].body, "raw hello");
  // order: join reply before history before the new_message broadcast
  const idx = (f) => frames.indexOf(f);
  assert.ok(idx(join) < idx(hist) && idx(hist) < idx(nm), JSON.stringify(frames));
  // a message sent while no poll waits is queued until the next GET, which answers at once
  await srv.postMessage(sc.room, sc.bob, "queued");
  await sleep(200);
  const p = await s.poll(3000);
  assert.equal(p.body.status, 200, p.text);
  assert.ok(p.ms < 1000, `a GET with queued messages answers at once (${p.ms} ms)`);
  assert.ok(p.body.messages.every((m) => typeof m === "string"), "messages are JSON strings");
  assert.equal(s.inbox.at(-1)[4].body, "queued");
  // a held GET is answered as soon as something arrives
  const held = s.poll(12000);
  await sleep(300);
  await srv.postMessage(sc.room, sc.bob, "while held");
  const h = await held;
  assert.equal(h.body.status, 200);
  assert.ok(h.ms < 3000, `held GET answered when the message came (${h.ms} ms)`);
  assert.equal(s.inbox.at(-1)[4].body, "while held");
  // a non-ndjson POST is one frame (old clients)
  const one = await lp("POST", s.query, { headers: { "content-type": "application/json" }, body: JSON.stringify([null, "9", "phoenix", "heartbeat", {}]) });
  assert.deepEqual(one.body, { status: 200 });
  await s.pollUntil((f) => reply(f, "9"), 3000, "heartbeat reply to a plain POST");
});

test("longpoll raw: a GET with nothing to send is held ~10 s, then 204; a session nobody polls ends", async () => {
  const sc = await scene();
  const s = await rawSession(sc.alice);
  const wb = await srv.socket(sc.bob);
  const cb = wb.channel(sc.topic);
  await joinOk(cb);
  assert.deepEqual((await s.post([["1", "1", sc.topic, "phx_join", {}]])).body, { status: 200 });
  await s.pollUntil((f) => f.some((x) => x[3] === "message_history"), 3000, "history");
  const p = await s.poll(15000);
  assert.deepEqual(p.body, { status: 204, token: s.token, messages: [] }, p.text);
  assert.ok(p.ms >= 9000 && p.ms < 12000, `held for about 10 s (${p.ms} ms)`);
  // no poll for 15 s: the session ends and its channels terminate (user_left)
  const t0 = Date.now();
  assert.deepEqual(await nextEvent(cb, "user_left", 20000), { user_id: sc.alice });
  const waited = Date.now() - t0;
  assert.ok(waited >= 13000, `ended after about 15 s without a poll (${waited} ms)`);
  const post = await s.post([[null, "2", "phoenix", "heartbeat", {}]]);
  assert.deepEqual(post.body, { status: 410 }, "POST to an ended session");
  const g = await lp("GET", s.query);
  assertLpHeaders(g, "GET on an ended session");
  assert.equal(g.body.status, 410);
  assert.deepEqual(g.body.messages, []);
  assert.equal(typeof g.body.token, "string");
}, { timeout: 45000 });

test("longpoll raw: forged or unknown session tokens get 410", async () => {
  const sc = await scene();
  const s = await rawSession(sc.alice);
  const forged = [
    s.token.slice(0, -2) + (s.token.endsWith("AA") ? "BB" : "AA"),
    "lps.0.AAAAAAAAAAAAAAAAAAAAAA",
    "lps.99999.AAAAAAAAAAAAAAAAAAAAAA",
    "garbage",
    "",
  ];
  for (const t of forged) {
    const q = `${s.base}&token=${encodeURIComponent(t)}`;
    const post = await lp("POST", q, { headers: { "content-type": "application/x-ndjson" }, body: JSON.stringify([null, "1", "phoenix", "heartbeat", {}]) });
    assertLpHeaders(post, `POST with session token ${JSON.stringify(t)}`);
    assert.deepEqual(post.body, { status: 410 }, `POST with session token ${JSON.stringify(t)}`);
    const get = await lp("GET", q);
    assertLpHeaders(get, `GET with session token ${JSON.stringify(t)}`);
    assert.equal(get.body.status, 410, `GET with session token ${JSON.stringify(t)}: ${get.text}`);
    assert.deepEqual(get.body.messages, []);
    assert.equal(typeof get.body.token, "string");
    assert.notEqual(get.body.token, s.token, "never the real session's token");
  }
  // the real session was not disturbed
  assert.deepEqual((await s.post([[null, "7", "phoenix", "heartbeat", {}]])).body, { status: 200 });
  await s.pollUntil((f) => reply(f, "7"), 3000, "heartbeat reply");
});

test("longpoll raw: OPTIONS answers the CORS preflight; other methods get 400", async () => {
  const sc = await scene();
  const s = await rawSession(sc.alice);
  const o = await lp("OPTIONS", s.query, {
    headers: {
      origin: "http://elsewhere.example",
      "access-control-request-method": "POST",
      "access-control-request-headers": "content-type,x-phoenix-authtoken",
    },
  });
  assert.equal(o.status, 200);
  assert.equal(o.text, "");
  assert.equal(o.headers.get("access-control-allow-origin"), "*");
  assert.equal(o.headers.get("access-control-allow-headers"), "content-type,x-phoenix-authtoken");
  assert.equal(o.headers.get("access-control-allow-methods"), "get, post, options");
  assert.equal(o.headers.get("access-control-max-age"), "3600");
  for (const m of ["PUT", "DELETE", "PATCH"]) {
    const r = await lp(m, s.query, { body: m === "DELETE" ? undefined : "x" });
    assert.equal(r.status, 400, `${m}: ${r.status} ${r.text}`);
    assert.equal(r.headers.get("access-control-allow-origin"), "*", `${m} has access-control-allow-origin`);
  }
  // the session still works
  assert.deepEqual((await s.post([[null, "1", "phoenix", "heartbeat", {}]])).body, { status: 200 });
});

test("longpoll raw: a malformed line ends the session (non-200 POST, then 410)", async () => {
  const sc = await scene();
  const wb = await srv.socket(sc.bob);
  const cb = wb.channel(sc.topic);
  await joinOk(cb);
  for (const bad of ["[not json", '["1","2"]', "!!!not base64!!!", '{"topic":"phoenix"}']) {
    const s = await rawSession(sc.alice);
    assert.deepEqual((await s.post([["1", "1", sc.topic, "phx_join", {}]])).body, { status: 200 });
    await s.pollUntil((f) => reply(f, "1"), 3000, "join reply");
    const post = await s.post([[null, "2", "phoenix", "heartbeat", {}], bad]);
    assertLpHeaders(post, `POST with ${bad}`);
    assert.notEqual(post.body.status, 200, `a POST with ${JSON.stringify(bad)} is not ok: ${post.text}`);
    assert.ok(post.ms < 3000, `answered at once (${post.ms} ms)`);
    assert.deepEqual(await nextEvent(cb, "user_left"), { user_id: sc.alice }, `the session's channels end (${bad})`);
    const g = await lp("GET", s.query);
    assert.equal(g.body.status, 410, `GET after ${bad}: ${g.text}`);
    assert.deepEqual((await s.post([[null, "3", "phoenix", "heartbeat", {}]])).body, { status: 410 });
  }
});

test("longpoll raw: a POST of more than 100 lines processes only the first 100", async () => {
  const sc = await scene();
  const s = await rawSession(sc.alice);
  const frames = Array.from({ length: 130 }, (_, i) => [null, String(i + 1), "phoenix", "heartbeat", {}]);
  const post = await s.post(frames);
  assert.deepEqual(post.body, { status: 200 }, post.text);
  await s.pollUntil((f) => f.filter((x) => x[3] === "phx_reply").length >= 100, 5000, "100 replies");
  await sleep(300);
  const p = await s.poll(12000); // whatever else is there (nothing: 204 after the window)
  assert.equal(p.body.status, 204, `nothing beyond the first 100: ${p.text}`);
  assert.deepEqual(
    s.inbox.filter((x) => x[3] === "phx_reply").map((x) => x[1]),
    Array.from({ length: 100 }, (_, i) => String(i + 1))
  );
  // CRLF line ends are accepted too
  const crlf = await lp("POST", s.query, {
    headers: { "content-type": "application/x-ndjson" },
    body: [JSON.stringify([null, "a", "phoenix", "heartbeat", {}]), JSON.stringify([null, "b", "phoenix", "heartbeat", {}])].join("\r\n"),
  });
  assert.deepEqual(crlf.body, { status: 200 });
  await s.pollUntil((f) => reply(f, "a") && reply(f, "b"), 3000, "both CRLF-separated replies");
}, { timeout: 30000 });
