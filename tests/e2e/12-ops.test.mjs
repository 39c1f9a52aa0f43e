// 12-ops: the "Operations" section of the README. /metrics (API key, content type, the
// Prometheus text parsed line by line, exact counter deltas over a scripted session),
// logs (no token, API key or JWT secret ever written; conn=/user=/topic= on connect,
// join, leave and disconnect lines; client-controlled values cannot break or forge a
// line), graceful shutdown (SIGTERM mid-stream: 1001 to sockets, 410 to a held
// long-poll, every acknowledged message committed, exit 0 within 5 s; SIGINT alike;
// long-poll requests that reach a stopping worker answered 410 at once, a session
// opened then giving its socket slot back) and SIGHUP reopening --log-file after a
// rename. Every test runs its own server, because
// each needs its own flags or ends the process.
import { after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { mkdtempSync, rmSync, existsSync, readFileSync, renameSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { LongPoll } from "phoenix";
import {
  WebSocket,
  test,
  startServer,
  sleep,
  uid,
  joinP,
  joinOk,
  pushP,
  leaveP,
  nextEvent,
  expectError,
  signJwt,
  IS_PG,
  waitUntil,
} from "./lib/server.js";

const servers = [];
const tmpDirs = [];
async function boot(opts) {
  const s = await startServer(opts);
  servers.push(s);
  return s;
}
after(async () => {
  for (const s of servers) await s.stop();
  if (!process.env.ROWCAST_E2E_KEEP) for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

// ---- Prometheus text format ------------------------------------------------------------

function parseSampleValue(s, where) {
  if (s === "+Inf") return Infinity;
  if (s === "-Inf") return -Infinity;
  if (s === "NaN") return NaN;
  assert.match(s, /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/, `${where}: sample value ${JSON.stringify(s)}`);
  return Number(s);
}

const seriesKey = (name, labels) =>
  `${name}{${Object.keys(labels)
    .sort()
    .map((k) => `${k}=${JSON.stringify(labels[k])}`)
    .join(",")}}`;

// Parses the exposition format: "# HELP"/"# TYPE" and other comments are read for TYPE
// only; every other non-empty line is `name{label="value",…} value [timestamp]`, label
// values with \\, \" and \n escapes. Duplicate series or TYPE lines fail.
function parseProm(text) {
  const types = new Map();
  const series = new Map();
  text.split("\n").forEach((line, i) => {
    const where = `line ${i + 1} ${JSON.stringify(line)}`;
    if (line === "") return;
    if (line.startsWith("#")) {
      const m = /^#\s+TYPE\s+(\S+)\s+(\S+)\s*$/.exec(line);
      if (m) {
        assert.ok(!types.has(m[1]), `${where}: a second TYPE line for ${m[1]}`);
        assert.ok(["counter", "gauge", "histogram", "summary", "untyped"].includes(m[2]), `${where}: metric type`);
        types.set(m[1], m[2]);
      }
      return;
    }
    const nm = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
    assert.ok(nm, `${where}: a sample line starts with a metric name`);
    const name = nm[0];
    let pos = name.length;
    const labels = {};
    if (line[pos] === "{") {
      pos++;
      for (;;) {
        if (line[pos] === "}") {
          pos++;
          break;
        }
        const lm = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(pos));
        assert.ok(lm, `${where}: label name at column ${pos + 1}`);
        const lname = lm[0];
        pos += lname.length;
        assert.equal(line[pos], "=", `${where}: "=" after label ${lname}`);
        pos++;
        assert.equal(line[pos], '"', `${where}: label ${lname} value is quoted`);
        pos++;
        let v = "";
        for (;;) {
          const c = line[pos++];
          assert.ok(c !== undefined, `${where}: unterminated value of label ${lname}`);
          if (c === '"') break;
          if (c === "\\") {
            const e = line[pos++];
            assert.ok(e === "\\" || e === '"' || e === "n", `${where}: escape \\${e} in a label value`);
            v += e === "n" ? "\n" : e;
          } else v += c;
        }
        assert.ok(!(lname in labels), `${where}: label ${lname} twice`);
        labels[lname] = v;
        if (line[pos] === ",") pos++;
        else assert.equal(line[pos], "}", `${where}: "," or "}" after label ${lname}`);
      }
    }
    const vm = /^ +(\S+)(?: +(-?\d+))?$/.exec(line.slice(pos));
    assert.ok(vm, `${where}: " value [timestamp]" after the series`);
    const value = parseSampleValue(vm[1], where);
    const key = seriesKey(name, labels);
    assert.ok(!series.has(key), `${where}: series ${key} appears twice`);
    series.set(key, { name, labels, value });
  });
  return {
    text,
    types,
    series,
    has(name, labels = {}) {
      return series.has(seriesKey(name, labels));
    },
    get(name, labels = {}) {
      const k = seriesKey(name, labels);
      assert.ok(series.has(k), `/metrics has no series ${k}`);
      return series.get(k).value;
    },
    family(name) {
      return [...series.values()].filter((s) => s.name === name);
    },
  };
}

// Structural checks of one scrape: every sample belongs to a family with a TYPE line;
// counters are non-negative; histograms have cumulative buckets ending in le="+Inf" equal
// to _count, and a _sum.
function checkExposition(m) {
  for (const s of m.series.values()) {
    let fam = s.name;
    if (!m.types.has(fam)) {
      const base = fam.replace(/_(bucket|sum|count)$/, "");
      assert.equal(m.types.get(base), "histogram", `sample ${seriesKey(s.name, s.labels)} has no TYPE line`);
      fam = base;
    } else {
      assert.notEqual(m.types.get(fam), "histogram", `histogram ${fam} has a bare sample`);
    }
    if (m.types.get(fam) === "counter") {
      assert.ok(s.value >= 0 && Number.isFinite(s.value), `counter ${seriesKey(s.name, s.labels)} = ${s.value}`);
    }
  }
  for (const [fam, type] of m.types) {
    if (type !== "histogram") continue;
    const groups = new Map();
    for (const s of m.family(`${fam}_bucket`)) {
      assert.ok("le" in s.labels, `${fam}_bucket without le`);
      const { le, ...rest } = s.labels;
      const k = seriesKey(fam, rest);
      if (!groups.has(k)) groups.set(k, { rest, buckets: [] });
      groups.get(k).buckets.push([parseSampleValue(le, `${fam} le`), s.value]);
    }
    for (const { rest, buckets } of groups.values()) {
      buckets.sort((a, b) => a[0] - b[0]);
      for (let i = 1; i < buckets.length; i++) {
        assert.ok(buckets[i][1] >= buckets[i - 1][1], `${seriesKey(fam, rest)}: buckets are cumulative (${JSON.stringify(buckets)})`);
      }
      const last = buckets[buckets.length - 1];
      assert.equal(last[0], Infinity, `${seriesKey(fam, rest)} has an le="+Inf" bucket`);
      assert.equal(last[1], m.get(`${fam}_count`, rest), `${seriesKey(fam, rest)}: +Inf bucket equals _count`);
      assert.ok(m.has(`${fam}_sum`, rest), `${seriesKey(fam, rest)} has a _sum`);
    }
  }
}

async function scrape(srv) {
  const r = await srv.api("GET", "/metrics");
  assert.equal(r.status, 200, `GET /metrics: ${r.status} ${r.text.slice(0, 300)}`);
  const ct = r.headers.get("content-type") || "";
  assert.match(ct, /^text\/plain; ?version=0\.0\.4(;|$)/, `content-type of /metrics: ${ct}`);
  const m = parseProm(r.text);
  checkExposition(m);
  return m;
}

// The metrics the README's table lists (histograms by their family name).
const DOCUMENTED = {
  rowcast_sockets_open: "gauge",
  rowcast_sockets_opened_total: "counter",
  rowcast_channel_joins_total: "counter",
  rowcast_events_total: "counter",
  rowcast_event_duration_seconds: "histogram",
  rowcast_broadcasts_total: "counter",
  rowcast_deliveries_total: "counter",
  rowcast_slow_consumer_closes_total: "counter",
  rowcast_rate_limited_total: "counter",
  rowcast_protocol_errors_total: "counter",
  rowcast_presence_metas: "gauge",
  rowcast_store_queue_depth: "gauge",
  rowcast_store_batch_size: "histogram",
  rowcast_store_commit_seconds: "histogram",
  rowcast_bus_notifications_total: "counter",
  rowcast_bus_lag_seconds: "histogram",
  rowcast_db_connected: "gauge",
  rowcast_http_requests_total: "counter",
};

// ---- logfmt ----------------------------------------------------------------------------

// Parses one `key=value key="quoted \"value\""…` line; null when the line is not
// well-formed (a bare word, a key twice, an unterminated quote).
function parseLogfmt(line) {
  const out = {};
  let i = 0;
  while (i < line.length) {
    while (line[i] === " ") i++;
    if (i >= line.length) break;
    const km = /^[A-Za-z_][A-Za-z0-9_.-]*/.exec(line.slice(i));
    if (!km) return null;
    const key = km[0];
    i += key.length;
    if (line[i] !== "=") return null;
    i++;
    let v = "";
    if (line[i] === '"') {
      i++;
      for (;;) {
        const c = line[i++];
        if (c === undefined) return null;
        if (c === '"') break;
        if (c === "\\") {
          const e = line[i++];
          if (e === undefined) return null;
          if (e === "u" && /^[0-9a-fA-F]{4}$/.test(line.slice(i, i + 4))) {
            v += String.fromCharCode(parseInt(line.slice(i, i + 4), 16));
            i += 4;
          } else v += e === "n" ? "\n" : e === "t" ? "\t" : e === "r" ? "\r" : e;
        } else v += c;
      }
    } else {
      v = /^[^ "]*/.exec(line.slice(i))[0];
      i += v.length;
    }
    if (i < line.length && line[i] !== " ") return null;
    if (key in out) return null;
    out[key] = v;
  }
  return out;
}

// The server's log lines (stderr), parsed; lines that do not parse are kept as {_bad}.
function logRecords(text) {
  return text
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => parseLogfmt(l) ?? { _bad: l });
}

// The HTTP status of a WebSocket upgrade offering these subprotocols (101 when accepted).
function upgradeWithProtocols(srv, query, protocols, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${srv.wsUrl}/websocket?${query}`, protocols);
    srv.clients.add(ws);
    const t = setTimeout(() => {
      ws.terminate();
      reject(new Error(`upgrade did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
    ws.on("unexpected-response", (req, res) => {
      clearTimeout(t);
      res.resume();
      req.destroy();
      resolve(res.statusCode);
    });
    ws.on("open", () => {
      clearTimeout(t);
      ws.terminate();
      resolve(101);
    });
    ws.on("error", (e) => {
      clearTimeout(t);
      reject(e);
    });
  });
}

const phxAuthProtocol = (token) => `base64url.bearer.phx.${btoa(token).replace(/=/g, "")}`;

// ---- 1. metrics ------------------------------------------------------------------------

test(
  "metrics: /metrics needs the API key, is Prometheus text, and counts a scripted session exactly",
  async () => {
    const srv = await boot({ args: ["--rate-limit", "1", "--rate-burst", "2"] });

    // auth and content type
    for (const key of [null, `x${srv.apiKey}`, ""]) {
      const r = await srv.api("GET", "/metrics", undefined, { key });
      expectError(r, 401, "unauthorized");
      assert.ok(!r.text.includes("rowcast_"), `a refused scrape shows no metrics: ${r.text}`);
    }
    const first = await scrape(srv);
    for (const [name, type] of Object.entries(DOCUMENTED)) {
      if (name === "rowcast_event_duration_seconds") continue; // series appear with the first event
      assert.equal(first.types.get(name), type, `# TYPE ${name} ${type}`);
    }
    for (const transport of ["websocket", "longpoll"]) {
      assert.equal(first.get("rowcast_sockets_open", { transport }), 0, `no ${transport} session yet`);
    }
    assert.equal(first.get("rowcast_db_connected"), 1);

    const alice = uid("m_alice_");
    const bob = uid("m_bob_");
    const room = await srv.roomWith({ [alice]: "owner", [bob]: "member" });
    const other = await srv.roomWith({ [bob]: "owner" }); // alice is not a member
    const topic = `room:${room}`;
    const rawToken = await srv.token(alice);
    const before = await scrape(srv);

    // -- the scripted session --
    const sa = await srv.socket(alice);
    const sb = await srv.socket(bob);
    const ca = sa.channel(topic);
    const cb = sb.channel(topic);
    await joinOk(ca); // join ok 1
    await joinOk(cb); // join ok 2
    await nextEvent(ca, "message_history");
    await nextEvent(cb, "message_history");
    assert.deepEqual(await joinP(sa.channel(`room:${other}`)), { status: "error", response: { reason: "unauthorized" } }); // join error 1

    // alice: 3 new_message, 1 typing and 1 invalid new_message, paced so that the rate
    // limit (1/s, burst 2) never refuses one: after the burst, >= 1.1 s between pushes.
    const committed = [];
    const post = async (ch, body) => {
      const r = await pushP(ch, "new_message", { body });
      assert.equal(r.status, "ok", `new_message ${body}: ${JSON.stringify(r)}`);
      committed.push(r.response.seq);
    };
    await post(ca, "one");
    await post(ca, "two");
    await sleep(1100);
    ca.push("typing", { typing: true });
    assert.deepEqual(await nextEvent(cb, "user_typing"), { user_id: alice, typing: true });
    await sleep(1100);
    await post(ca, "three");
    await sleep(1100);
    assert.deepEqual(await pushP(ca, "new_message", { body: "" }), { status: "error", response: { reason: "message_empty" } });

    // bob: 5 pushes back to back on one channel: the burst of 2 passes, 3 are refused
    const burst = await Promise.all([1, 2, 3, 4, 5].map((i) => pushP(cb, "new_message", { body: `burst ${i}` })));
    assert.deepEqual(
      burst.map((r) => r.status),
      ["ok", "ok", "error", "error", "error"],
      `burst replies: ${JSON.stringify(burst)}`
    );
    for (const r of burst.slice(2)) {
      assert.equal(r.response.reason, "rate_limited", JSON.stringify(r));
      assert.equal(typeof r.response.retry_after, "number", `retry_after in ${JSON.stringify(r)}`);
    }
    burst.slice(0, 2).forEach((r) => committed.push(r.response.seq));

    // one message through REST
    committed.push((await srv.postMessage(room, bob, "via rest")).seq);
    assert.deepEqual(committed, [1, 2, 3, 4, 5, 6], "six messages committed");
    for (const ch of [ca, cb]) {
      const got = [];
      for (let i = 0; i < 6; i++) got.push((await nextEvent(ch, "new_message")).seq);
      assert.deepEqual(got, committed, `${ch.topic}: every committed message delivered`);
    }

    // a raw client sending invalid JSON is closed with 1011
    const ws = await srv.rawWs(`token=${encodeURIComponent(rawToken)}&vsn=2.0.0`);
    ws.send("{this is not json");
    assert.equal((await ws.closed(3000)).code, 1011, "invalid JSON closes with 1011");

    // -- what the counters must have moved by --
    const wsOpen0 = before.get("rowcast_sockets_open", { transport: "websocket" });
    const want = [
      ["rowcast_sockets_opened_total", { transport: "websocket" }, 3],
      ["rowcast_sockets_opened_total", { transport: "longpoll" }, 0],
      ["rowcast_channel_joins_total", { channel: "room", result: "ok" }, 2],
      ["rowcast_channel_joins_total", { channel: "room", result: "error" }, 1],
      ["rowcast_events_total", { channel: "room", event: "new_message" }, 3 + 1 + 2],
      ["rowcast_events_total", { channel: "room", event: "typing" }, 1],
      ["rowcast_rate_limited_total", {}, 3],
      ["rowcast_protocol_errors_total", {}, 1],
      ["rowcast_slow_consumer_closes_total", {}, 0],
    ];
    // Counters may be bumped just after the reply a client sees: wait (bounded) until
    // each has reached its target, then require it exactly.
    const delta = (m, name, labels) => m.get(name, labels) - before.get(name, labels);
    let mid = await waitUntil(
      async () => {
        const m = await scrape(srv);
        return want.every(([n, l, d]) => delta(m, n, l) >= d) &&
          m.get("rowcast_sockets_open", { transport: "websocket" }) === wsOpen0 + 2
          ? m
          : false;
      },
      2000,
      "the counters reaching the session's counts (and 2 websocket sessions open)"
    ).catch(async (e) => {
      const m = await scrape(srv);
      e.message += `; deltas: ${JSON.stringify(want.map(([n, l]) => [seriesKey(n, l), delta(m, n, l)]))}, sockets_open ${m.get(
        "rowcast_sockets_open",
        { transport: "websocket" }
      )} (before ${wsOpen0})`;
      throw e;
    });
    for (const [name, labels, d] of want) assert.equal(delta(mid, name, labels), d, `Δ ${seriesKey(name, labels)}`);
    // nothing counted for channel types or events the session did not touch
    for (const s of mid.family("rowcast_channel_joins_total")) {
      if (s.labels.channel !== "room") assert.equal(delta(mid, s.name, s.labels), 0, `Δ ${seriesKey(s.name, s.labels)}`);
    }
    for (const s of mid.family("rowcast_events_total")) {
      if (!(s.labels.channel === "room" && ["new_message", "typing"].includes(s.labels.event))) {
        assert.equal(delta(mid, s.name, s.labels), 0, `Δ ${seriesKey(s.name, s.labels)}`);
      }
    }
    // every handled event was timed once
    const nmLabels = { channel: "room", event: "new_message" };
    const durBefore = before.has("rowcast_event_duration_seconds_count", nmLabels)
      ? before.get("rowcast_event_duration_seconds_count", nmLabels)
      : 0;
    assert.equal(mid.get("rowcast_event_duration_seconds_count", nmLabels) - durBefore, 6, "Δ event_duration_seconds_count{room,new_message}");
    const broadcasts = delta(mid, "rowcast_broadcasts_total", {});
    const deliveries = delta(mid, "rowcast_deliveries_total", {});
    assert.ok(broadcasts >= 6 + 1, `Δ broadcasts_total ${broadcasts} >= 6 messages + 1 typing`);
    assert.ok(deliveries >= 2 * 6 + 1, `Δ deliveries_total ${deliveries} >= 2 subscribers × 6 messages + 1 user_typing`);
    const batches = delta(mid, "rowcast_store_batch_size_count", {});
    assert.ok(batches >= 1, `Δ store_batch_size_count ${batches} > 0`);
    assert.ok(batches <= 6 + 0, `Δ store_batch_size_count ${batches}: no more batches than writes`);
    assert.ok(delta(mid, "rowcast_store_batch_size_sum", {}) >= 6, "Δ store_batch_size_sum >= 6 writes");
    assert.ok(delta(mid, "rowcast_store_commit_seconds_count", {}) >= 1, "Δ store_commit_seconds_count > 0");
    assert.equal(mid.types.get("rowcast_event_duration_seconds"), "histogram");
    for (const [name, type] of Object.entries(DOCUMENTED)) assert.equal(mid.types.get(name), type, `# TYPE ${name} ${type}`);

    // -- a row written by another process (sqlite3, or psql in the PostgreSQL pass): a
    // bus wake-up, delivered --
    await srv.sql(`INSERT INTO messages(room_id, user_id, body) VALUES('${room}', '${bob}', 'from another process')`);
    for (const ch of [ca, cb]) assert.equal((await nextEvent(ch, "new_message", 3000)).seq, 7, "the row from another process reaches the subscribers");
    const ext = await waitUntil(
      async () => {
        const m = await scrape(srv);
        return m.get("rowcast_bus_notifications_total") > mid.get("rowcast_bus_notifications_total") ? m : false;
      },
      2000,
      "rowcast_bus_notifications_total to grow after an insert by another process"
    );
    assert.ok(ext.get("rowcast_bus_lag_seconds_count") > mid.get("rowcast_bus_lag_seconds_count"), "Δ bus_lag_seconds_count > 0");
    assert.ok(delta(ext, "rowcast_broadcasts_total", {}) >= broadcasts + 1, "the row from another process was broadcast");

    // -- every socket closed: the gauge goes back --
    await srv.disconnectP(sa);
    await srv.disconnectP(sb);
    const end = await waitUntil(
      async () => {
        const m = await scrape(srv);
        return m.get("rowcast_sockets_open", { transport: "websocket" }) === wsOpen0 ? m : false;
      },
      2000,
      `rowcast_sockets_open{transport="websocket"} back to ${wsOpen0}`
    );
    assert.equal(end.get("rowcast_sockets_open", { transport: "longpoll" }), before.get("rowcast_sockets_open", { transport: "longpoll" }));
    for (const [name, labels, d] of want) assert.equal(delta(end, name, labels), d, `Δ ${seriesKey(name, labels)} after the closes`);
    await srv.stop();
  },
  { timeout: 30000 }
);

// ---- 2. logs ---------------------------------------------------------------------------

test(
  "logs: no token, API key or JWT secret is ever written; connect/join/leave/disconnect lines carry conn= user= topic=",
  async () => {
    const srv = await boot({ args: ["--log-level", "debug"] });
    const alice = uid("lg_alice_");
    const bob = uid("lg_bob_");
    const carol = uid("lg_carol_");
    const dave = uid("lg_dave_");
    const room = await srv.roomWith({ [alice]: "owner", [bob]: "member", [carol]: "member" });
    await srv.putUser(dave);
    const topic = `room:${room}`;

    const secrets = new Map(); // value -> what it is
    const note = (v, what) => {
      if (typeof v === "string" && v.length >= 8 && !secrets.has(v)) secrets.set(v, what);
    };
    // POST /api/tokens, keeping the token
    const mint = async (user, ttl, what) => {
      const r = await srv.api("POST", "/api/tokens", ttl === undefined ? { user_id: user } : { user_id: user, ttl });
      assert.equal(r.status, 200, r.text);
      note(r.body.token, what);
      return r.body;
    };
    // every URL the phoenix clients fetch (long-poll), for the tokens in query strings
    const urls = [];
    const realFetch = globalThis.fetch;
    globalThis.fetch = (input, init) => {
      urls.push(String(input?.url ?? input));
      return realFetch(input, init);
    };
    let lpSessionTokens = [];
    try {
      const expiring = await mint(dave, 1, "a 1-second token (used after it expired)");

      // WebSocket, token in the query string; join, post, leave, disconnect
      const tA = (await mint(alice, undefined, "alice's token (WebSocket query string)")).token;
      const sa = await srv.socket(alice, { token: tA });
      assert.ok(sa.conn.url.includes(tA), "alice's token travels in the WebSocket URL");
      const ca = sa.channel(topic);
      await joinOk(ca);
      assert.equal((await pushP(ca, "new_message", { body: "from alice" })).status, "ok");
      assert.equal(await leaveP(ca), "ok");
      await srv.disconnectP(sa);

      // LongPoll, token in the query string of every request
      const tB = (await mint(bob, undefined, "bob's token (long-poll query string)")).token;
      const sb = await srv.socket(bob, { token: tB, transport: LongPoll });
      assert.ok(sb.conn instanceof LongPoll, "bob is on LongPoll");
      lpSessionTokens.push(sb.conn.token);
      const cb = sb.channel(topic);
      await joinOk(cb);
      assert.equal((await pushP(cb, "new_message", { body: "from bob" })).status, "ok");
      await nextEvent(cb, "new_message");
      lpSessionTokens.push(sb.conn.token);
      await srv.disconnectP(sb);

      // phoenix's authToken option: the token in the subprotocol
      const tC = (await mint(carol, undefined, "carol's token (authToken subprotocol)")).token;
      const sc = await srv.socket(carol, { params: {}, authToken: tC });
      assert.ok(!sc.conn.url.includes(tC), "carol's token is not in the URL");
      assert.equal(sc.conn.protocol, "phoenix", "the server answered Sec-WebSocket-Protocol: phoenix");
      note(phxAuthProtocol(tC), "carol's authToken subprotocol value");
      const cc = sc.channel(topic);
      await joinOk(cc);

      // refused connects
      const now = Math.floor(Date.now() / 1000);
      const forged = signJwt({ sub: dave, iat: now, exp: now + 3600 }, "not-the-server-secret");
      note(forged, "a token signed with another secret");
      assert.equal(await srv.upgradeStatus(`token=${forged}&vsn=2.0.0`), 403, "forged token refused");
      const tD = (await mint(dave, undefined, "dave's token (tampered copy refused)")).token;
      const tampered = tD.slice(0, -4) + (tD.endsWith("AAAA") ? "BBBB" : "AAAA");
      note(tampered, "a tampered token");
      assert.equal(await srv.upgradeStatus(`token=${tampered}&vsn=2.0.0`), 403, "tampered token refused");
      note(phxAuthProtocol(forged), "a forged token's subprotocol value");
      assert.equal(await upgradeWithProtocols(srv, "vsn=2.0.0", ["phoenix", phxAuthProtocol(forged)]), 403, "forged authToken refused");
      const lpBad = await realFetch(`${srv.base}/socket/longpoll?token=${forged}&vsn=2.0.0`, { signal: AbortSignal.timeout(5000) });
      assert.deepEqual(await lpBad.json(), { status: 403 }, "forged token refused on long-poll");
      // an issued token once it expired
      await waitUntil(() => Date.now() >= (expiring.expires_at + 1) * 1000, 4000, "the 1-second token to expire");
      assert.equal(await srv.upgradeStatus(`token=${expiring.token}&vsn=2.0.0`), 403, "expired token refused");

      // more tokens, never used
      await mint(uid("lg_erin_"), 60, "a token from POST /api/tokens");
      await mint(alice, 31536000, "a one-year token from POST /api/tokens");

      // -- the lines that must be there (they are written asynchronously) --
      const find = (recs, msg, user) => recs.filter((r) => r.msg === msg && r.user === user);
      const recs = await waitUntil(
        () => {
          const r = logRecords(srv.stderr);
          return find(r, "join", carol).length && find(r, "join", bob).length && find(r, "disconnect", alice).length ? r : false;
        },
        3000,
        "the session's join lines and alice's disconnect line on stderr"
      );
      for (const [user, transport] of [
        [alice, "websocket"],
        [bob, "longpoll"],
        [carol, "websocket"],
      ]) {
        const connects = find(recs, "connect", user);
        assert.equal(connects.length, 1, `one msg="connect" line for ${user}: ${JSON.stringify(connects)}`);
        const conn = connects[0].conn;
        assert.match(conn ?? "", /^\S+$/, `connect line of ${user} has conn=: ${JSON.stringify(connects[0])}`);
        if (connects[0].transport !== undefined) assert.equal(connects[0].transport, transport, `transport of ${user}`);
        const joins = find(recs, "join", user);
        assert.equal(joins.length, 1, `one msg="join" line for ${user}`);
        assert.equal(joins[0].conn, conn, `the join line of ${user} names the connection (conn=)`);
        assert.equal(joins[0].topic, topic, `the join line of ${user} names the topic`);
      }
      const leaves = find(recs, "leave", alice);
      assert.equal(leaves.length, 1, `one msg="leave" line for ${alice}`);
      hasAll(leaves[0], { conn: find(recs, "connect", alice)[0].conn, topic });
      const da = find(recs, "disconnect", alice);
      assert.equal(da.length, 1, `one msg="disconnect" line for ${alice}`);
      assert.equal(da[0].conn, find(recs, "connect", alice)[0].conn, `the disconnect line of ${alice} has conn=`);
      // (a long-poll client that stops polling is only ended by the server's session
      // timeout, later than this test looks; its line, if already there, is checked too)
      for (const d of find(recs, "disconnect", bob)) assert.equal(d.conn, find(recs, "connect", bob)[0].conn);
    } finally {
      globalThis.fetch = realFetch;
    }

    // tokens that travelled in query strings (phoenix's own requests), and long-poll
    // session tokens
    for (const u of urls) {
      for (const t of new URL(u).searchParams.getAll("token")) note(t, `a token in the query string of ${u.slice(0, 80)}…`);
    }
    lpSessionTokens.forEach((t) => note(t, "a long-poll session token"));
    note(srv.apiKey, "the API key");
    note(srv.jwtSecret, "the JWT secret");
    assert.ok(secrets.size >= 12, `collected ${secrets.size} secrets`);

    const outputs = [
      ["stderr", srv.stderr],
      ["stdout+stderr", srv.logs.join("\n")],
    ];
    for (const [where, text] of outputs) {
      assert.ok(text.includes('msg="join"') || text.includes("msg=join"), `${where} has the session's lines`);
      for (const [value, what] of secrets) {
        assert.ok(!text.includes(value), `${where} contains ${what}: ${value.slice(0, 12)}…`);
        // a JWT's signature alone is as good as the token's proof of authenticity
        const parts = value.split(".");
        if (parts.length === 3 && parts[2].length >= 20) {
          assert.ok(!text.includes(parts[2]), `${where} contains the signature of ${what}`);
        }
      }
    }
    await srv.stop();
  },
  { timeout: 30000 }
);

function hasAll(rec, want) {
  for (const [k, v] of Object.entries(want)) assert.equal(rec[k], v, `${k}= in ${JSON.stringify(rec)}`);
}

test("logs: every line is key=value logfmt; client-controlled user ids and topics cannot break or forge a line", async () => {
  const srv = await boot();
  // user ids may hold spaces, quotes and '=' (no control characters); topics come
  // straight from the client and may hold anything JSON can carry
  const evil = `${uid("eve_")} level=error msg="forged-user"`;
  const token = await srv.token(evil);
  const ws = await srv.rawWs(`token=${encodeURIComponent(token)}&vsn=2.0.0`);
  const topics = [
    `room:nope x\nts=2020-01-01T00:00:00.000Z level=error msg="forged-topic"`,
    `room:"quoted" and=more`,
    `room:tab\there\r\nbackslash\\`,
    `room:ctl\u0001\u001b[31mred\u007f`,
  ];
  // a long one may be shortened in the log, but the line must stay well-formed
  const long = `room:${'"\\ '.repeat(400)}\nts=2020-01-01T00:00:00.000Z level=error msg="forged-long"`;
  for (const [i, t] of [...topics, long].entries()) {
    ws.sendJson([String(i + 1), String(i + 1), t, "phx_join", {}]);
    const reply = await ws.nextJson((m) => m[3] === "phx_reply" && m[1] === String(i + 1));
    assert.equal(reply[4].status, "error", `join ${JSON.stringify(t)}: ${JSON.stringify(reply)}`);
  }
  ws.close(1000);
  await ws.closed(3000);

  const lines = await waitUntil(
    () => {
      const l = srv.stderr.split("\n").filter((x) => x !== "");
      return l.some((x) => x.includes('msg="disconnect"') || x.includes("msg=disconnect")) ? l : false;
    },
    3000,
    "a disconnect line"
  );
  const recs = [];
  for (const line of lines) {
    const r = parseLogfmt(line);
    assert.ok(r, `not a key=value line: ${JSON.stringify(line)}`);
    assert.match(r.ts ?? "", /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/, `ts= in ${JSON.stringify(line)}`);
    assert.ok(["debug", "info", "warn", "error"].includes(r.level), `level= in ${JSON.stringify(line)}`);
    assert.ok(typeof r.msg === "string" && r.msg.length > 0, `msg= in ${JSON.stringify(line)}`);
    assert.ok(!["forged-user", "forged-topic", "forged-long"].includes(r.msg), `a forged line: ${JSON.stringify(line)}`);
    recs.push(r);
  }
  const connect = recs.filter((r) => r.msg === "connect");
  assert.equal(connect.length, 1, "one connect line");
  assert.equal(connect[0].user, evil, "user= holds the whole user id");
  const refused = recs.filter((r) => r.msg === "join refused");
  assert.equal(refused.length, topics.length + 1, "one join refused line per join");
  assert.deepEqual(
    refused.slice(0, topics.length).map((r) => r.topic),
    topics,
    "topic= holds each topic exactly"
  );
  const lt = refused[topics.length].topic;
  assert.ok(lt.length >= 100 && long.startsWith(lt), `the long topic is logged as a prefix of itself: ${JSON.stringify(lt.slice(0, 80))}…`);
  for (const r of refused) assert.equal(r.user, evil);
  await srv.stop();
});

// ---- 3. graceful shutdown --------------------------------------------------------------

test(
  "shutdown: SIGTERM mid-stream closes sockets with 1001, answers a held long-poll with 410, commits every acknowledged message, exits 0 within 5 s",
  async () => {
    const srv = await boot({ args: ["--rate-limit", "0"] });
    const alice = uid("sd_alice_");
    const bob = uid("sd_bob_");
    const carol = uid("sd_carol_");
    const room = await srv.roomWith({ [alice]: "owner", [bob]: "member", [carol]: "member" });
    const topic = `room:${room}`;

    // a phoenix client watching the room: its onClose sees the close code
    const sb = await srv.socket(bob);
    const closes = [];
    sb.onClose((e) => closes.push(e?.code));
    await joinOk(sb.channel(topic));

    // a long-poll session, then a poll the server holds (nothing to deliver)
    const appToken = await srv.token(carol);
    const lpq = `token=${encodeURIComponent(appToken)}&vsn=2.0.0`;
    const open = await (await fetch(`${srv.base}/socket/longpoll?${lpq}`, { signal: AbortSignal.timeout(5000) })).json();
    assert.equal(open.status, 410, `opening GET: ${JSON.stringify(open)}`);
    assert.equal(typeof open.token, "string");

    // the streaming client: raw V2 WebSocket, 8 new_message in flight at all times
    const ws = await srv.rawWs(`token=${encodeURIComponent(await srv.token(alice))}&vsn=2.0.0`);
    ws.sendJson(["1", "1", topic, "phx_join", {}]);
    const jr = await ws.nextJson((m) => m[1] === "1" && m[3] === "phx_reply");
    assert.equal(jr[4].status, "ok", JSON.stringify(jr));
    const sent = new Map(); // ref -> body
    const acked = new Map(); // seq -> body
    const refused = [];
    let nextRef = 2;
    let inflight = 0;
    let pumping = true;
    const pump = () => {
      while (pumping && inflight < 8 && ws.readyState === WebSocket.OPEN) {
        const ref = String(nextRef++);
        const body = `stream ${ref}`;
        sent.set(ref, body);
        ws.sendJson(["1", ref, topic, "new_message", { body }]);
        inflight++;
      }
    };
    ws.on("message", (data, isBinary) => {
      if (isBinary) return;
      let m;
      try {
        m = JSON.parse(data.toString("utf8"));
      } catch {
        return;
      }
      if (m[3] !== "phx_reply" || !sent.has(m[1])) return;
      inflight--;
      const body = sent.get(m[1]);
      sent.delete(m[1]);
      if (m[4].status === "ok") acked.set(m[4].response.seq, body);
      else refused.push(m[4]);
      pump();
    });
    pump();
    // and a REST writer posting back to back: every 201 must be in the database too
    const restAcked = new Map(); // seq -> body
    let restN = 0;
    const restLoop = (async () => {
      while (pumping) {
        const body = `rest ${++restN}`;
        try {
          const r = await srv.api("POST", `/api/rooms/${room}/messages`, { user_id: carol, body }, { timeoutMs: 5000 });
          if (r.status === 201) restAcked.set(r.body.seq, body);
        } catch {
          await sleep(10); // refused once HTTP has stopped
        }
      }
    })();
    await waitUntil(() => acked.size >= 40 && restAcked.size >= 5, 10000, "40 acknowledged pushes and 5 REST posts");

    const held = fetch(`${srv.base}/socket/longpoll?${lpq}&token=${encodeURIComponent(open.token)}`, {
      headers: { accept: "application/json" },
      signal: AbortSignal.timeout(15000),
    }).then(
      async (r) => ({ status: r.status, text: await r.text(), at: Date.now() }),
      (e) => ({ error: e, at: Date.now() })
    );
    await sleep(300); // let the poll reach the server and be held (its window is 10 s)
    const ackedAtSignal = acked.size;

    const t0 = Date.now();
    const exited = srv.terminate("SIGTERM", 5000);

    let close;
    try {
      close = await ws.closed(5000);
    } finally {
      pumping = false;
    }
    await restLoop;
    assert.equal(close.code, 1001, `the streaming socket's close code (reason ${JSON.stringify(close.reason)})`);
    const poll = await held;
    assert.ok(!poll.error, `the held long-poll was not answered: ${poll.error?.message} ${poll.error?.cause?.code ?? ""}`);
    assert.equal(poll.status, 200, `held poll: HTTP ${poll.status} ${poll.text}`);
    assert.equal(JSON.parse(poll.text).status, 410, `held poll answered with ${poll.text}`);
    assert.ok(poll.at - t0 < 5000, `held poll answered ${poll.at - t0} ms after SIGTERM`);
    const ex = await exited;
    assert.ok(!ex.timedOut, `the server was still running ${ex.ms} ms after SIGTERM`);
    assert.deepEqual({ code: ex.code, signal: ex.signal }, { code: 0, signal: null }, "exit status");
    assert.ok(ex.ms <= 5000, `exited ${ex.ms} ms after SIGTERM`);
    await waitUntil(() => closes.length > 0, 3000, "the phoenix client's onClose");
    assert.equal(closes[0], 1001, `the phoenix client's close code (all: ${closes.join(",")})`);

    assert.deepEqual(refused, [], "no push was refused while streaming");
    assert.ok(acked.size >= ackedAtSignal && acked.size >= 40, `acked ${acked.size}`);
    // every acknowledged message is in the database, with its seq and body
    const rows = (await srv.sql(`SELECT seq, body FROM messages WHERE room_id='${room}' ORDER BY seq`))
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => {
        const i = l.indexOf("|");
        return [Number(l.slice(0, i)), l.slice(i + 1)];
      });
    const count = Number((await srv.sql(`SELECT count(*) FROM messages WHERE room_id='${room}'`)).trim());
    assert.equal(count, rows.length);
    assert.ok(count >= acked.size, `${count} rows in the database, ${acked.size} messages acknowledged`);
    const stored = new Map(rows);
    const missing = [...acked].filter(([seq, body]) => stored.get(seq) !== body);
    assert.deepEqual(missing, [], `acknowledged messages missing from the database (of ${acked.size})`);
    const restMissing = [...restAcked].filter(([seq, body]) => stored.get(seq) !== body);
    assert.deepEqual(restMissing, [], `REST messages answered 201 missing from the database (of ${restAcked.size})`);
    assert.ok(count >= acked.size + restAcked.size, `${count} rows, ${acked.size} + ${restAcked.size} acknowledged`);
    assert.deepEqual(
      rows.map(([s]) => s),
      Array.from({ length: rows.length }, (_, i) => i + 1),
      "seqs are gapless"
    );
    if (!IS_PG) assert.equal((await srv.sql("PRAGMA integrity_check")).trim(), "ok");
    const lastSeq = Number((await srv.sql(`SELECT last_seq FROM rooms WHERE id='${room}'`)).trim());
    assert.equal(lastSeq, count, "rooms.last_seq matches the stored messages");
    await srv.stop();
  },
  { timeout: 40000 }
);

test("shutdown: SIGINT closes sockets with 1001 and exits 0 within 5 s", async () => {
  const srv = await boot();
  const alice = uid("si_alice_");
  const room = await srv.roomWith({ [alice]: "owner" });
  const ws = await srv.rawWs(`token=${encodeURIComponent(await srv.token(alice))}&vsn=2.0.0`);
  ws.sendJson(["1", "1", `room:${room}`, "phx_join", {}]);
  assert.equal((await ws.nextJson((m) => m[3] === "phx_reply"))[4].status, "ok");
  const exited = srv.terminate("SIGINT", 5000);
  assert.equal((await ws.closed(5000)).code, 1001, "close code");
  const ex = await exited;
  assert.ok(!ex.timedOut, `still running ${ex.ms} ms after SIGINT`);
  assert.deepEqual({ code: ex.code, signal: ex.signal }, { code: 0, signal: null }, "exit status");
  await srv.stop();
});

// A WebSocket that never answers the server: after the upgrade it sends nothing and keeps
// its side open when the server half-closes, so the server's closing handshake waits for
// it (2 s). Resolves {sock, closed}: closed resolves with the code of the server's close
// frame.
function silentWebSocket(port, query) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
    let buf = Buffer.alloc(0);
    let upgraded = false;
    let onClose;
    const closed = new Promise((r) => (onClose = r));
    sock.on("data", (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      if (!upgraded) {
        upgraded = true;
        const status = buf.subarray(0, end).toString("latin1").split(" ")[1];
        if (status !== "101") {
          sock.destroy();
          reject(new Error(`upgrade answered ${status}`));
          return;
        }
        resolve({ sock, closed });
      }
      const frames = buf.subarray(end + 4);
      if (frames.length >= 4 && frames[0] === 0x88) onClose(frames.readUInt16BE(2));
    });
    sock.on("error", reject);
    sock.on("connect", () =>
      sock.write(
        `GET /socket/websocket?${query} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
          `Upgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString("base64")}\r\n` +
          `Sec-WebSocket-Version: 13\r\n\r\n`
      )
    );
  });
}

test(
  "shutdown: long-poll requests reaching a stopping worker are answered 410 at once; a session opened then gives its socket slot back; exit 0",
  async () => {
    // One I/O worker, one socket per user. A WebSocket that never answers keeps that
    // worker in its stopping phase (its 2 s grace) while long-poll requests reach it.
    const srv = await boot({ args: ["--workers", "1", "--max-conns-per-user", "1"] });
    const query = async (user) => `token=${encodeURIComponent(await srv.token(user))}&vsn=2.0.0`;
    const aq = await query(uid("lps_alice_"));
    const bq = await query(uid("lps_bob_"));
    const cq = await query(uid("lps_carol_"));
    const lp = async (method, q, body) => {
      const r = await fetch(`${srv.base}/socket/longpoll?${q}`, {
        method,
        headers: method === "POST" ? { "content-type": "application/x-ndjson" } : { accept: "application/json" },
        body,
        signal: AbortSignal.timeout(4000),
      });
      const text = await r.text();
      assert.equal(r.status, 200, `${method} ${q}: HTTP ${r.status} ${text}`);
      return JSON.parse(text);
    };
    const silent = await silentWebSocket(srv.port, aq);
    try {
      const open = await lp("GET", bq); // bob's session, ended by the shutdown
      assert.equal(open.status, 410, JSON.stringify(open));
      const bs = `${bq}&token=${encodeURIComponent(open.token)}`;

      const exited = srv.terminate("SIGTERM", 8000);
      const code = await Promise.race([silent.closed, sleep(3000).then(() => "none within 3 s")]);
      assert.equal(code, 1001, "the server's close frame to the silent socket");
      // The worker is stopping now: every request it gets is answered without a session.
      const t0 = Date.now();
      assert.deepEqual(await lp("POST", bs, JSON.stringify([null, "1", "phoenix", "heartbeat", {}])), {
        status: 410,
      });
      assert.deepEqual(await lp("GET", bs), { messages: [], status: 410 }, "a poll of the ended session");
      // carol opens a session: the front answers with a token, the stopping worker drops
      // the opening...
      const first = await lp("GET", cq);
      assert.equal(first.status, 410, JSON.stringify(first));
      assert.equal(typeof first.token, "string", `the front answers the opening with a token: ${JSON.stringify(first)}`);
      // ...so a poll of it is not held (there is no session) but answered at once...
      assert.deepEqual(await lp("GET", `${cq}&token=${encodeURIComponent(first.token)}`), {
        messages: [],
        status: 410,
      });
      // ...and carol's only socket slot is free again: a second opening is not refused.
      const second = await lp("GET", cq);
      assert.equal(second.status, 410, `second opening (403: the dropped one kept the slot): ${JSON.stringify(second)}`);
      assert.equal(typeof second.token, "string", JSON.stringify(second));
      const ms = Date.now() - t0;
      assert.ok(ms < 1500, `the requests took ${ms} ms: they must all reach the worker in its 2 s grace`);

      const ex = await exited;
      assert.ok(!ex.timedOut, `the server was still running ${ex.ms} ms after SIGTERM`);
      assert.deepEqual({ code: ex.code, signal: ex.signal }, { code: 0, signal: null }, "exit status");
      assert.ok(!/still suspended/.test(srv.logs.join("\n")), "no long-poll request was left suspended");
    } finally {
      silent.sock.destroy();
    }
    await srv.stop();
  },
  { timeout: 30000 }
);

// ---- 4. SIGHUP and --log-file ----------------------------------------------------------

test(
  "logs: SIGHUP reopens --log-file after a rename (log rotation); lines go to the file, not stderr",
  async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "rowcast-e2e-log-"));
    tmpDirs.push(dir);
    const logA = path.join(dir, "a.log");
    const rotated = path.join(dir, "a.log.1");
    const srv = await boot({ args: ["--log-file", logA], logFile: logA });
    const read = (f) => (existsSync(f) ? readFileSync(f, "utf8") : "");
    const connectLine = (text, user) =>
      text
        .split("\n")
        .map(parseLogfmt)
        .some((r) => r && r.msg === "connect" && r.user === user);
    // a request that writes a line: a WebSocket connect of a fresh user
    const connect = async (user) => {
      const ws = await srv.rawWs(`token=${encodeURIComponent(await srv.token(user))}&vsn=2.0.0`);
      ws.close(1000);
      await ws.closed(3000);
    };

    assert.match(read(logA), /msg="?listening/, "a.log has the listening line");
    const u1 = uid("hup1_");
    await connect(u1);
    await waitUntil(() => connectLine(read(logA), u1), 3000, `the connect line of ${u1} in a.log`);

    renameSync(logA, rotated);
    const u2 = uid("hup2_");
    await connect(u2);
    await waitUntil(() => connectLine(read(rotated), u2), 3000, `the connect line of ${u2} in the renamed a.log.1`);
    assert.ok(!existsSync(logA), "before SIGHUP nothing recreates a.log");

    srv.signal("SIGHUP");
    // the reopen happens some time after the signal: connect until a line lands in a
    // fresh a.log
    const after = [];
    await waitUntil(
      async () => {
        const u = uid("hup3_");
        after.push(u);
        await connect(u);
        const text = read(logA);
        return after.some((x) => connectLine(text, x));
      },
      4000,
      "a connect line in a fresh a.log after SIGHUP"
    );
    assert.equal(srv.exited, null, "SIGHUP did not end the server");
    // from now on every line goes to the new file only
    const u4 = uid("hup4_");
    await connect(u4);
    await waitUntil(() => connectLine(read(logA), u4), 3000, `the connect line of ${u4} in the new a.log`);
    assert.ok(!connectLine(read(rotated), u4), "the line after the reopen is not in a.log.1");
    for (const line of read(logA).split("\n").filter((l) => l !== "")) {
      const r = parseLogfmt(line);
      assert.ok(r && r.ts && r.level && r.msg, `a well-formed line in the new a.log: ${JSON.stringify(line)}`);
    }
    const old = read(rotated);
    assert.match(old, /msg="?listening/, "a.log.1 keeps the lines from before");
    assert.ok(connectLine(old, u1) && connectLine(old, u2), "a.log.1 keeps the connect lines from before");
    // with --log-file, log lines do not go to stderr
    assert.ok(!/msg="?connect"?\s/.test(srv.stderr), `stderr holds log lines: ${srv.stderr.slice(0, 300)}`);
    // the server still serves
    assert.equal((await srv.api("GET", "/healthz", undefined, { key: null })).status, 200);
    await srv.stop();
  },
  { timeout: 30000 }
);

test("logs: SIGHUP without --log-file changes nothing: the server runs on and logs to stderr", async () => {
  const srv = await boot();
  srv.signal("SIGHUP");
  srv.signal("SIGHUP");
  const u = uid("hup_stderr_");
  await waitUntil(
    async () => {
      const ws = await srv.rawWs(`token=${encodeURIComponent(await srv.token(u))}&vsn=2.0.0`);
      ws.close(1000);
      await ws.closed(3000);
      return logRecords(srv.stderr).some((r) => r.msg === "connect" && r.user === u);
    },
    3000,
    "a connect line on stderr after SIGHUP"
  );
  assert.equal(srv.exited, null, "the server is still running");
  assert.equal((await srv.api("GET", "/healthz", undefined, { key: null })).status, 200);
  await srv.stop();
});
