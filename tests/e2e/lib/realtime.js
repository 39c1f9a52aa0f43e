// realtime.js - helpers for driving @supabase/realtime-js (supabase-js's realtime client)
// against a harness server: clients on /realtime/v1 over the `ws` package (Node < 22 has
// no global WebSocket) that record every frame both ways and every close, subscribe()
// as a promise, and per-channel lists of what arrived.
import assert from "node:assert/strict";
import WebSocket from "ws";
import { RealtimeClient } from "@supabase/realtime-js";
import { waitUntil } from "./server.js";

export { RealtimeClient };

const open = new Set();

// One frame as the recorder keeps it: {text} or {binary: true, kind, len}.
function frameInfo(data) {
  if (typeof data === "string") return { text: data, at: Date.now() };
  const u8 = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return { binary: true, kind: u8[0], len: u8.length, at: Date.now() };
}

// A `ws` WebSocket class that records into rec: rec.in / rec.out (frames), rec.closes
// ({code, reason, at} of every connection that closed), rec.opens (connections opened).
function recordingTransport(rec) {
  return class RecordingWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener("open", () => rec.opens++);
      this.addEventListener("message", (e) => rec.in.push(frameInfo(e.data)));
      this.addEventListener("close", (e) => rec.closes.push({ code: e.code, reason: e.reason, at: Date.now() }));
    }
    send(data, ...rest) {
      rec.out.push(frameInfo(data));
      return super.send(data, ...rest);
    }
  };
}

// The recorded text frames (V1 objects or V2 arrays) as {ref, topic, event, payload}.
export function textEvents(frames) {
  const out = [];
  for (const f of frames) {
    if (f.binary) continue;
    const m = JSON.parse(f.text);
    out.push(Array.isArray(m) ? { ref: m[1], topic: m[2], event: m[3], payload: m[4] } : m);
  }
  return out;
}

// A RealtimeClient of user on node's /realtime/v1 (apikey: a token minted through the
// API unless given). client.rec holds the recorder, client.logs what the client logged.
export async function rtClient(node, user, { token, vsn = "2.0.0", ...opts } = {}) {
  if (token === undefined) token = await node.token(user);
  const rec = { in: [], out: [], closes: [], opens: 0 };
  const logs = [];
  const client = new RealtimeClient(`ws://127.0.0.1:${node.port}/realtime/v1`, {
    params: { apikey: token },
    vsn,
    transport: recordingTransport(rec),
    timeout: 5000,
    reconnectAfterMs: () => 60000,
    logger: (kind, msg, data) => logs.push(`${kind}: ${msg}`),
    ...opts,
  });
  client.rec = rec;
  client.logs = logs;
  client.user = user;
  open.add(client);
  return client;
}

// Disconnects every client made by rtClient (the files call it after each test).
export async function closeRealtimeClients() {
  const all = [...open];
  open.clear();
  await Promise.all(
    all.map(async (c) => {
      for (const ch of c.getChannels()) ch.teardown();
      await Promise.race([c.disconnect().catch(() => {}), new Promise((r) => setTimeout(r, 2000))]);
    })
  );
}

// A channel of client with recorders: ch.got (broadcast payloads, every event),
// ch.system (system payloads), ch.presenceEvents ({event, key, …}).
export function rtChannel(client, name, config = {}) {
  const ch = client.channel(name, { config });
  ch.got = [];
  ch.system = [];
  ch.on("broadcast", { event: "*" }, (p) => ch.got.push(p));
  ch.on("system", {}, (p) => ch.system.push(p));
  return ch;
}

// Subscribes ch; resolves {status, err} of the first callback (every later one is kept
// in ch.statuses too), or {status: "NO_CALLBACK"} after timeoutMs.
export function subscribe(ch, timeoutMs = 6000) {
  ch.statuses = [];
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve({ status: "NO_CALLBACK" }), timeoutMs);
    ch.subscribe((status, err) => {
      ch.statuses.push({ status, err, at: Date.now() });
      clearTimeout(t);
      resolve({ status, err });
    }, timeoutMs - 500);
  });
}

// Subscribes ch and asserts it reached SUBSCRIBED.
export async function subscribed(ch, timeoutMs) {
  const r = await subscribe(ch, timeoutMs);
  assert.equal(r.status, "SUBSCRIBED", `subscribe ${ch.topic}: ${r.status} ${r.err ? r.err.message : ""}`);
  return ch;
}

// Waits until ch.got holds at least n broadcasts; returns ch.got.
export async function received(ch, n, timeoutMs = 5000) {
  try {
    return await waitUntil(() => ch.got.length >= n && ch.got, timeoutMs, `${n} broadcasts on ${ch.topic}`);
  } catch (e) {
    e.message += ` (got ${ch.got.length}, the last: ${JSON.stringify(ch.got.slice(-3))})`;
    throw e;
  }
}
