// 04-bad-input: malformed frames close the offending connection with the right code
// and never hurt the server; V1 (vsn=1.0.0) clients get object-shaped messages.
import { before, after } from "node:test";
import assert from "node:assert/strict";
import { test, startServer, joinOk, pushP, nextEvent } from "./lib/server.js";
import { OP as RAW_OP, encodeFrame } from "./lib/rawws.js";

let srv;
let room;
before(async () => {
  srv = await startServer();
  room = await srv.roomWith({ bad_alice: "owner", bad_bob: "member", v1_dave: "member" });
});
after(async () => {
  await srv?.stop();
});

const q = (params) => new URLSearchParams(params).toString();

// After each bad connection: a new phoenix client connects, joins and posts.
async function freshClientWorks() {
  const s = await srv.socket("bad_alice");
  const ch = s.channel(`room:${room}`);
  await joinOk(ch);
  const r = await pushP(ch, "new_message", { body: "still fine" });
  assert.equal(r.status, "ok", `push after bad input: ${JSON.stringify(r)}`);
  await nextEvent(ch, "new_message");
  await srv.disconnectP(s);
}

async function v2ws() {
  return srv.rawWs(q({ token: await srv.token("bad_bob"), vsn: "2.0.0" }));
}

// Joins the room on a raw V2 ws so the bad frame also exercises channel teardown.
async function joinedV2() {
  const ws = await v2ws();
  ws.sendJson(["1", "1", `room:${room}`, "phx_join", {}]);
  const reply = await ws.nextJson((m) => m[3] === "phx_reply");
  assert.equal(reply[4].status, "ok", JSON.stringify(reply));
  return ws;
}

const v2cases = {
  "invalid JSON": (ws) => ws.send("[not json"),
  "a 4-element array": (ws) => ws.sendJson([null, "2", "phoenix", "heartbeat"]),
  "a JSON object on V2": (ws) => ws.sendJson({ topic: "phoenix", event: "heartbeat", payload: {}, ref: "2" }),
  "a non-string event": (ws) => ws.sendJson([null, "2", "phoenix", 5, {}]),
  "a JSON string": (ws) => ws.send('"hello"'),
  "binary kind 1": (ws) => ws.send(Buffer.from([0x01, 0x01, 0x01, 0x01, 0x02, 0x31, 0x31, 0x72, 0x6f, 0x6b]), { binary: true }),
  "binary kind 0 with lengths past the end": (ws) => ws.send(Buffer.from([0x00, 0x05, 0x05, 0x0a, 0x05, 0x31, 0x32]), { binary: true }),
  "an empty binary frame": (ws) => ws.send(Buffer.alloc(0), { binary: true }),
};

for (const [what, send] of Object.entries(v2cases)) {
  test(`bad input: ${what} closes the socket with 1011`, async () => {
    const ws = await joinedV2();
    send(ws);
    const { code } = await ws.closed(3000);
    assert.equal(code, 1011, `close code for ${what}`);
    await freshClientWorks();
  });
}

test("bad input: a text frame with invalid UTF-8 closes with 1007", async () => {
  const raw = await srv.rawSocket(q({ token: await srv.token("bad_bob"), vsn: "2.0.0" }));
  raw.sendFrame(RAW_OP.text, Buffer.from([0x5b, 0x22, 0xff, 0xfe, 0x22, 0x5d])); // ["\xff\xfe"]
  assert.equal(await raw.closed(3000), 1007);
  await freshClientWorks();
});

test("bad input: a continuation frame without a start closes with 1002", async () => {
  const raw = await srv.rawSocket(q({ token: await srv.token("bad_bob"), vsn: "2.0.0" }));
  raw.sendFrame(RAW_OP.cont, Buffer.from('[null,"1","phoenix","heartbeat",{}]'));
  assert.equal(await raw.closed(3000), 1002);
  await freshClientWorks();
});

test("bad input: a frame over 1 MiB closes with 1009", async () => {
  const raw = await srv.rawSocket(q({ token: await srv.token("bad_bob"), vsn: "2.0.0" }));
  const size = 1024 * 1024 + 1024;
  // Announce the whole frame, then stream its payload in pieces, stopping as soon as the
  // server has answered (it may close right after reading the header).
  const payload = Buffer.alloc(size, 0x20);
  payload[0] = 0x5b; // "[" …
  const frame = encodeFrame(RAW_OP.text, payload);
  const chunk = 64 * 1024;
  for (let off = 0; off < frame.length && raw.closeCode === null && !raw.ended; off += chunk) {
    const ok = raw.write(frame.subarray(off, off + chunk));
    if (!ok) await Promise.race([new Promise((r) => raw.sock.once("drain", r)), raw.endedP]);
  }
  const code = await raw.closed(5000);
  assert.equal(code, 1009, `close code (1006 would mean the server dropped the connection without a close frame)`);
  await freshClientWorks();
});

test("bad input: frames below the limit are fine (a 512 KiB heartbeat)", async () => {
  const ws = await v2ws();
  ws.sendJson([null, "5", "phoenix", "heartbeat", { pad: "x".repeat(512 * 1024) }]);
  assert.deepEqual(await ws.nextJson(), [null, "5", "phoenix", "phx_reply", { response: {}, status: "ok" }]);
  // fragmented text message (two frames) is reassembled
  const raw = await srv.rawSocket(q({ token: await srv.token("bad_bob"), vsn: "2.0.0" }));
  const text = Buffer.from('[null,"6","phoenix","heartbeat",{}]');
  raw.write(encodeFrame(RAW_OP.text, text.subarray(0, 10), { fin: false }));
  raw.write(encodeFrame(RAW_OP.cont, text.subarray(10)));
  assert.deepEqual(await raw.nextJson(), [null, "6", "phoenix", "phx_reply", { response: {}, status: "ok" }]);
});

test("bad input: many bad connections in a row leave the server healthy", async () => {
  for (let i = 0; i < 20; i++) {
    const ws = await v2ws();
    ws.send(i % 2 ? "{" : Buffer.from([0x07]), { binary: i % 2 === 0 });
    assert.equal((await ws.closed(3000)).code, 1011);
  }
  const h = await srv.api("GET", "/healthz", undefined, { key: null });
  assert.equal(h.status, 200);
  await freshClientWorks();
});

// ---- V1 --------------------------------------------------------------------------------

function assertV1(m) {
  assert.ok(m && typeof m === "object" && !Array.isArray(m), `V1 message is an object: ${JSON.stringify(m)}`);
  assert.deepEqual(Object.keys(m).sort(), ["event", "payload", "ref", "topic"], `V1 keys (no join_ref): ${JSON.stringify(m)}`);
}

test("v1: vsn=1.0.0 gets object-shaped messages without join_ref", async () => {
  const ws = await srv.rawWs(q({ token: await srv.token("v1_dave"), vsn: "1.0.0" }));
  const all = [];
  const next = async (pred, what) => {
    const m = await ws.nextJson(pred, 3000, what);
    assertV1(m);
    all.push(m);
    return m;
  };
  ws.sendJson({ topic: "phoenix", event: "heartbeat", payload: {}, ref: "1" });
  assert.deepEqual(await next(() => true, "heartbeat reply"), {
    topic: "phoenix",
    event: "phx_reply",
    payload: { response: {}, status: "ok" },
    ref: "1",
  });

  const topic = `room:${room}`;
  ws.sendJson({ topic, event: "phx_join", payload: {}, ref: "2", join_ref: "2" });
  const jr = await next((m) => m.event === "phx_reply", "join reply");
  assert.equal(jr.topic, topic);
  assert.equal(jr.ref, "2");
  assert.equal(jr.payload.status, "ok");
  assert.equal(jr.payload.response.room_id, room);
  assert.equal(jr.payload.response.role, "member");
  const hist = await next((m) => m.event === "message_history", "message_history");
  assert.equal(hist.ref, null);
  assert.equal(hist.topic, topic);
  assert.ok(Array.isArray(hist.payload.messages));

  ws.sendJson({ topic, event: "new_message", payload: { body: "v1 says hi" }, ref: "3", join_ref: "2" });
  const bc = await next((m) => m.event === "new_message", "new_message broadcast");
  assert.equal(bc.ref, null);
  assert.equal(bc.payload.body, "v1 says hi");
  assert.equal(bc.payload.user_id, "v1_dave");
  const rep = await next((m) => m.event === "phx_reply" && m.ref === "3", "new_message reply");
  assert.equal(rep.payload.status, "ok");
  assert.equal(rep.payload.response.message_id, bc.payload.id);
  assert.equal(rep.payload.response.seq, bc.payload.seq);

  ws.sendJson({ topic, event: "nope", payload: {}, ref: "4", join_ref: "2" });
  assert.deepEqual(await next((m) => m.ref === "4", "unknown_event reply"), {
    topic,
    event: "phx_reply",
    payload: { response: { reason: "unknown_event" }, status: "error" },
    ref: "4",
  });

  ws.sendJson({ topic: "nope:1", event: "phx_join", payload: {}, ref: "5", join_ref: "5" });
  assert.deepEqual(await next((m) => m.ref === "5", "unmatched topic reply"), {
    topic: "nope:1",
    event: "phx_reply",
    payload: { response: { reason: "unmatched topic" }, status: "error" },
    ref: "5",
  });

  ws.sendJson({ topic, event: "phx_leave", payload: {}, ref: "6", join_ref: "2" });
  assert.deepEqual(await next((m) => m.ref === "6", "leave reply"), {
    topic,
    event: "phx_reply",
    payload: { response: {}, status: "ok" },
    ref: "6",
  });
  const close = await next((m) => m.event === "phx_close", "phx_close");
  assert.deepEqual(close, { topic, event: "phx_close", payload: {}, ref: "2" });
  // no frame from the server was an array or carried join_ref
  for (const m of ws.msgs) {
    const v = JSON.parse(m.data.toString());
    assertV1(v);
  }
});

test("v1: no vsn at all speaks V1 too", async () => {
  const ws = await srv.rawWs(q({ token: await srv.token("v1_dave") }));
  ws.sendJson({ topic: "phoenix", event: "heartbeat", payload: {}, ref: "9" });
  const m = await ws.nextJson();
  assertV1(m);
  assert.deepEqual(m, { topic: "phoenix", event: "phx_reply", payload: { response: {}, status: "ok" }, ref: "9" });
});

const v1cases = {
  "a V2 array": (ws) => ws.sendJson([null, "1", "phoenix", "heartbeat", {}]),
  "an object without ref": (ws) => ws.sendJson({ topic: "phoenix", event: "heartbeat", payload: {} }),
  "a binary frame": (ws) => ws.send(Buffer.from([0x00, 0x00, 0x01, 0x07, 0x09, 0x38]), { binary: true }),
  "invalid JSON": (ws) => ws.send("{"),
};
for (const [what, send] of Object.entries(v1cases)) {
  test(`v1: ${what} closes the V1 socket with 1011`, async () => {
    const ws = await srv.rawWs(q({ token: await srv.token("v1_dave"), vsn: "1.0.0" }));
    send(ws);
    assert.equal((await ws.closed(3000)).code, 1011);
    await freshClientWorks();
  });
}
