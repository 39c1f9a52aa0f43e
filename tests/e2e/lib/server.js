// server.js - the e2e harness: one fresh rowcast server per test file, REST helpers,
// phoenix client helpers with buffered per-channel inboxes, and a test() wrapper that
// prints the server's stderr when a test fails and never lets a test hang.
import { spawn, execFile } from "node:child_process";
import { mkdtempSync, rmSync, existsSync, readFileSync } from "node:fs";
import { promisify } from "node:util";
import os from "node:os";
import path from "node:path";
import crypto from "node:crypto";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { test as nodeTest } from "node:test";
import WebSocket from "ws";
import { Socket } from "phoenix";
import { RawWs } from "./rawws.js";

export { WebSocket, Socket, RawWs };

const here = path.dirname(fileURLToPath(import.meta.url));
export const TOP_SRCDIR = process.env.TOP_SRCDIR || path.resolve(here, "../../..");
export const BIN = process.env.ROWCAST_BIN || path.join(TOP_SRCDIR, "rowcast");

const execFileP = promisify(execFile);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls fn every everyMs until it returns something other than false or undefined (the
// value is returned) or stops throwing; after timeoutMs the last failure is thrown.
export async function waitUntil(fn, timeoutMs = 3000, what = "condition", everyMs = 25) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v !== false && v !== undefined) return v;
      last = new Error(`${what} did not hold`);
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) {
      last.message = `within ${timeoutMs} ms: ${last.message}`;
      throw last;
    }
    await sleep(everyMs);
  }
}

// waitUntil for a check that asserts: it holds once check() no longer throws.
export function eventually(check, timeoutMs = 3000, what = "assertion", everyMs = 25) {
  return waitUntil(
    async () => {
      await check();
      return true;
    },
    timeoutMs,
    what,
    everyMs
  );
}

// ---- database mode ---------------------------------------------------------------------
// ROWCAST_E2E_PG_URL=postgres://…/DB (a running PostgreSQL, as scripts/pg-test.sh prints):
// every server start gets its own fresh database rc_<random> on that server, dropped when
// the server stops. Without it, every server gets a fresh SQLite file in a temp dir.
export const PG_URL = process.env.ROWCAST_E2E_PG_URL || "";
export const IS_PG = PG_URL !== "";
export const MODE = IS_PG ? "pg" : "sqlite";
// Test names get this prefix in PostgreSQL mode, so the two passes' TAP lines differ.
export const NAME_PREFIX = IS_PG ? "[pg] " : "";

// The URL of database `name` on the server of ROWCAST_E2E_PG_URL.
export function pgUrlFor(name) {
  const u = new URL(PG_URL);
  u.pathname = `/${name}`;
  return u.toString();
}

async function psql(url, statement, { timeoutMs = 30000 } = {}) {
  try {
    const { stdout } = await execFileP(
      "psql",
      ["-X", "-q", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", statement],
      { timeout: timeoutMs, env: { ...process.env, PGCONNECT_TIMEOUT: "10" }, maxBuffer: 64 << 20 }
    );
    return stdout;
  } catch (e) {
    throw new Error(`psql -c ${JSON.stringify(statement.slice(0, 300))} failed: ${e.stderr || e.message}`);
  }
}

// A fresh, empty PostgreSQL database: {name, url, drop()}.
export async function createPgDatabase() {
  if (!IS_PG) throw new Error("createPgDatabase needs ROWCAST_E2E_PG_URL");
  const name = `rc_${crypto.randomBytes(6).toString("hex")}`;
  await psql(PG_URL, `CREATE DATABASE ${name}`);
  return {
    name,
    url: pgUrlFor(name),
    drop: () => psql(PG_URL, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`),
  };
}

// sql(db, statement): runs statement as "another process" and resolves its output, one
// row a line, columns separated by "|" (the sqlite3 CLI's list mode; psql -At -F'|').
// db: a Server, a postgres:// URL, a sqlite:PATH URL or a file path.
export async function sql(db, statement, opts = {}) {
  const url = db instanceof Server ? db.dbUrl : String(db);
  if (/^postgres(ql)?:\/\//.test(url)) return psql(url, statement, opts);
  const file = url.startsWith("sqlite:") ? url.slice("sqlite:".length) : url;
  const { stdout } = await execFileP("sqlite3", ["-batch", "-cmd", ".timeout 5000", file, statement], {
    timeout: opts.timeoutMs ?? 10000,
    maxBuffer: 64 << 20,
  });
  return stdout;
}

// A random id suffix so tests inside one file never share rows.
export function uid(prefix = "x") {
  return `${prefix}${crypto.randomBytes(4).toString("hex")}`;
}

// The environment for child rowcast processes: ours without ROWCAST_* settings, so a
// developer's shell cannot change what the tests exercise.
export function childEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("ROWCAST_")) env[k] = v;
  return { ...env, ...extra };
}

// Runs the binary to completion (CLI tests). Never hangs: killed after timeoutMs.
export function runCli(args, { timeoutMs = 10000, env = {} } = {}) {
  return new Promise((resolve) => {
    const p = spawn(BIN, args, { env: childEnv(env), stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    const t = setTimeout(() => {
      timedOut = true;
      p.kill("SIGKILL");
    }, timeoutMs);
    p.on("error", (e) => {
      clearTimeout(t);
      resolve({ code: null, signal: null, stdout, stderr: stderr + String(e), timedOut });
    });
    p.on("close", (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
  });
}

// ---- JWT helpers (HS256) ---------------------------------------------------------------
const b64u = (buf) => Buffer.from(buf).toString("base64url");
export function signJwt(payload, secret, header = { alg: "HS256", typ: "JWT" }) {
  const h = b64u(JSON.stringify(header));
  const p = b64u(JSON.stringify(payload));
  const sig = crypto.createHmac("sha256", secret).update(`${h}.${p}`).digest();
  return `${h}.${p}.${b64u(sig)}`;
}
export function decodeJwt(token) {
  const parts = String(token).split(".");
  assert.equal(parts.length, 3, `a JWT has three dot-separated parts: ${token}`);
  const header = JSON.parse(Buffer.from(parts[0], "base64url").toString("utf8"));
  const payload = JSON.parse(Buffer.from(parts[1], "base64url").toString("utf8"));
  const verify = (secret) => {
    const want = crypto.createHmac("sha256", secret).update(`${parts[0]}.${parts[1]}`).digest();
    const got = Buffer.from(parts[2], "base64url");
    return got.length === want.length && crypto.timingSafeEqual(got, want);
  };
  return { header, payload, verify };
}

// ---- assertions shared by the files ----------------------------------------------------
export const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

export function assertIsoUtc(s, what = "timestamp") {
  assert.equal(typeof s, "string", `${what} is a string`);
  assert.match(s, ISO_UTC, `${what} is ISO-8601 UTC ending in Z`);
  assert.ok(!Number.isNaN(Date.parse(s)), `${what} parses as a date`);
}

// An error response: status, JSON {"error":{"code","message"}}.
export function expectError(res, status, code) {
  const ctx = `response was ${res.status} ${res.text}`;
  assert.equal(res.status, status, `HTTP status; ${ctx}`);
  assert.ok(res.body && typeof res.body === "object", `error body is JSON; ${ctx}`);
  assert.ok(res.body.error && typeof res.body.error === "object", `body has "error"; ${ctx}`);
  assert.equal(res.body.error.code, code, `error code; ${ctx}`);
  assert.equal(typeof res.body.error.message, "string", `error.message is a string; ${ctx}`);
  assert.ok(res.body.error.message.length > 0, `error.message is not empty; ${ctx}`);
}

// obj has (at least) these fields with these values; extra fields are allowed.
export function hasFields(obj, want, what = "object") {
  assert.ok(obj && typeof obj === "object", `${what} is an object: ${JSON.stringify(obj)}`);
  for (const [k, v] of Object.entries(want)) {
    assert.ok(k in obj, `${what} has "${k}": ${JSON.stringify(obj)}`);
    assert.deepEqual(obj[k], v, `${what}.${k} in ${JSON.stringify(obj)}`);
  }
}

// obj has (at least) these keys.
export function hasKeys(obj, keys, what = "object") {
  assert.ok(obj && typeof obj === "object", `${what} is an object: ${JSON.stringify(obj)}`);
  for (const k of keys) assert.ok(k in obj, `${what} has "${k}": ${JSON.stringify(obj)}`);
}

export function expectStatus(res, status) {
  assert.equal(res.status, status, `HTTP status; response was ${res.status} ${res.text}`);
  return res.body;
}

// ---- phoenix channel inbox -------------------------------------------------------------
// Every channel made through a harness socket records every event routed to it from the
// moment it is created, so pushes that arrive in the same TCP read as the join reply
// (message_history) are never missed. nextEvent consumes from that record.
function installInbox(ch) {
  if (ch.__inbox) return ch.__inbox;
  const inbox = { msgs: [], waiters: new Set() };
  const orig = ch.onMessage.bind(ch);
  ch.onMessage = (event, payload, ref, joinRef) => {
    if (!String(event).startsWith("chan_reply_")) {
      inbox.msgs.push({ event, payload, ref, joinRef, at: Date.now() });
      for (const w of [...inbox.waiters]) w();
    }
    return orig(event, payload, ref, joinRef);
  };
  ch.__inbox = inbox;
  return inbox;
}

// Resolves with the payload of the next unconsumed `event` on ch; rejects after timeoutMs.
export function nextEvent(ch, event, timeoutMs = 3000) {
  const inbox = installInbox(ch);
  return new Promise((resolve, reject) => {
    const tryTake = () => {
      const i = inbox.msgs.findIndex((m) => m.event === event);
      if (i < 0) return false;
      const [m] = inbox.msgs.splice(i, 1);
      resolve(m.payload);
      return true;
    };
    if (tryTake()) return;
    const waiter = () => {
      if (tryTake()) {
        clearTimeout(t);
        inbox.waiters.delete(waiter);
      }
    };
    const t = setTimeout(() => {
      inbox.waiters.delete(waiter);
      const seen = inbox.msgs.map((m) => m.event).join(", ") || "nothing";
      reject(new Error(`no "${event}" on ${ch.topic} within ${timeoutMs} ms (unconsumed: ${seen})`));
    }, timeoutMs);
    inbox.waiters.add(waiter);
  });
}

// Waits ms, then asserts no unconsumed `event` arrived on ch (does not consume).
export async function noEvent(ch, event, ms = 500) {
  const inbox = installInbox(ch);
  await sleep(ms);
  const got = inbox.msgs.filter((m) => m.event === event);
  assert.equal(got.length, 0, `expected no "${event}" on ${ch.topic}, got ${JSON.stringify(got.map((m) => m.payload))}`);
}

// Unconsumed payloads of `event` on ch, without consuming them.
export function pending(ch, event) {
  return installInbox(ch).msgs.filter((m) => m.event === event).map((m) => m.payload);
}

// Joins ch; resolves {status: "ok"|"error"|"timeout", response}.
export function joinP(ch, timeoutMs = 5000) {
  installInbox(ch);
  return new Promise((resolve) => {
    ch.join(timeoutMs)
      .receive("ok", (response) => resolve({ status: "ok", response }))
      .receive("error", (response) => resolve({ status: "error", response }))
      .receive("timeout", () => resolve({ status: "timeout", response: null }));
  });
}

// Joins ch and asserts the join succeeded; returns the reply's response.
export async function joinOk(ch, timeoutMs = 5000) {
  const r = await joinP(ch, timeoutMs);
  assert.equal(r.status, "ok", `join ${ch.topic}: got ${r.status} ${JSON.stringify(r.response)}`);
  return r.response;
}

// Pushes event; resolves {status: "ok"|"error"|"timeout", response}.
export function pushP(ch, event, payload, timeoutMs = 5000) {
  return new Promise((resolve) => {
    ch.push(event, payload, timeoutMs)
      .receive("ok", (response) => resolve({ status: "ok", response }))
      .receive("error", (response) => resolve({ status: "error", response }))
      .receive("timeout", () => resolve({ status: "timeout", response: null }));
  });
}

// Leaves ch; resolves when the client considers it closed.
export function leaveP(ch, timeoutMs = 3000) {
  return new Promise((resolve) => {
    ch.leave(timeoutMs)
      .receive("ok", () => resolve("ok"))
      .receive("timeout", () => resolve("timeout"));
  });
}

// ---- the server ------------------------------------------------------------------------
const live = new Set();

export class Server {
  constructor() {
    this.logs = []; // stderr+stdout lines of the server
    this.stderr = ""; // everything the server wrote to stderr, verbatim
    this.clients = new Set(); // things to close after each test
    this.exited = null; // {code, signal} once the process is gone
    this.stopping = false;
  }

  get base() {
    return `http://127.0.0.1:${this.port}`;
  }
  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/socket`;
  }

  logTail(from = 0, max = 200) {
    const lines = this.logs.slice(from);
    const cut = lines.length > max ? lines.slice(-max) : lines;
    return (lines.length > max ? `… ${lines.length - max} earlier lines omitted\n` : "") + cut.join("\n");
  }

  // -- REST --
  // api(method, path, body, {key}): body may be an object (sent as JSON), a string or a
  // Buffer (sent as is), or undefined. key: undefined → the server's API key, null → no
  // Authorization header, a string → that key. Resolves {status, body, text, headers};
  // body is the parsed JSON (null when empty, undefined when not JSON).
  async api(method, urlPath, body, { key, headers = {}, timeoutMs = 10000 } = {}) {
    const h = { ...headers };
    const k = key === undefined ? this.apiKey : key;
    if (k !== null) h.authorization = `Bearer ${k}`;
    let payload;
    if (body !== undefined) {
      payload = typeof body === "string" || Buffer.isBuffer(body) ? body : JSON.stringify(body);
      if (!Object.keys(h).some((x) => x.toLowerCase() === "content-type")) h["content-type"] = "application/json";
    }
    let res;
    try {
      res = await fetch(this.base + urlPath, {
        method,
        headers: h,
        body: payload,
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (e) {
      throw new Error(`${method} ${urlPath} failed: ${e.message}${e.cause ? ` (${e.cause.message || e.cause.code})` : ""}`);
    }
    const text = await res.text();
    let json = null;
    if (text) {
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
    }
    return { status: res.status, body: json, text, headers: res.headers };
  }

  async token(user, ttl) {
    const body = { user_id: user };
    if (ttl !== undefined) body.ttl = ttl;
    const r = await this.api("POST", "/api/tokens", body);
    expectStatus(r, 200);
    assert.equal(typeof r.body.token, "string", `token response ${r.text}`);
    return r.body.token;
  }

  async putUser(id, name = id, avatar_url) {
    const body = { name };
    if (avatar_url !== undefined) body.avatar_url = avatar_url;
    const r = await this.api("PUT", `/api/users/${encodeURIComponent(id)}`, body);
    return expectStatus(r, 200);
  }

  async mkRoom(id = uid("room"), name = `Room ${id}`) {
    const r = await this.api("POST", "/api/rooms", { id, name });
    return expectStatus(r, 201);
  }

  async addMember(room, user, role = "member") {
    const r = await this.api("PUT", `/api/rooms/${encodeURIComponent(room)}/members/${encodeURIComponent(user)}`, { role });
    return expectStatus(r, 200);
  }

  // A room with the given members: {alice: "owner", bob: "member", …}. Users get a
  // users row (name = id) first, so nothing depends on implicit user creation.
  async roomWith(members, id = uid("room")) {
    await this.mkRoom(id);
    for (const [user, role] of Object.entries(members)) {
      await this.putUser(user);
      await this.addMember(id, user, role);
    }
    return id;
  }

  async postMessage(room, user_id, body) {
    const r = await this.api("POST", `/api/rooms/${encodeURIComponent(room)}/messages`, { user_id, body });
    return expectStatus(r, 201);
  }

  async getMessages(room, query = "") {
    const r = await this.api("GET", `/api/rooms/${encodeURIComponent(room)}/messages${query ? `?${query}` : ""}`);
    return expectStatus(r, 200).messages;
  }

  // -- sqlite3 CLI on the server's database --
  // Runs a statement on this server's database with the sqlite3 CLI or psql (see sql()).
  async sql(query, opts) {
    return sql(this, query, opts);
  }
  // The database's content as text, for "nothing changed" comparisons: sqlite3 .dump, or
  // in PostgreSQL mode pg_dump of the rows, without the cluster's own bookkeeping (nodes'
  // heartbeats, presences) and sequence positions (a rolled-back insert moves those).
  async dump() {
    if (!/^postgres(ql)?:\/\//.test(this.dbUrl)) return this.sql(".dump");
    const { stdout } = await execFileP(
      "pg_dump",
      ["--data-only", "--no-owner", "--exclude-table=nodes", "--exclude-table=presences", "-d", this.dbUrl],
      { timeout: 30000, maxBuffer: 64 << 20, env: { ...process.env, PGCONNECT_TIMEOUT: "10" } }
    );
    return stdout
      .split("\n")
      .filter((l) => !/^(SELECT pg_catalog\.setval\(|--|\\(un)?restrict )/.test(l))
      .join("\n");
  }

  // -- sockets --
  // A connected phoenix Socket for user (token minted through the API unless given).
  async socket(user, { token, params, timeoutMs = 5000, ...opts } = {}) {
    if (token === undefined && params === undefined) token = await this.token(user);
    const s = new Socket(this.wsUrl, {
      transport: WebSocket,
      params: params ?? { token },
      timeout: 5000,
      rejoinAfterMs: () => 30000,
      reconnectAfterMs: () => 200,
      ...opts,
    });
    const channel = s.channel.bind(s);
    s.channel = (topic, chanParams) => {
      const ch = channel(topic, chanParams);
      installInbox(ch);
      return ch;
    };
    this.clients.add(s);
    await new Promise((resolve, reject) => {
      let refs = [];
      const done = (err) => {
        clearTimeout(t);
        s.off(refs);
        if (err) {
          s.disconnect();
          reject(err);
        } else resolve();
      };
      const t = setTimeout(() => done(new Error(`phoenix socket for ${user} did not open within ${timeoutMs} ms`)), timeoutMs);
      refs = [
        s.onOpen(() => done()),
        s.onError((e) => done(new Error(`phoenix socket for ${user} failed to connect: ${e?.message || e?.type || e}`))),
      ];
      s.connect();
    });
    return s;
  }

  // Disconnects a phoenix socket and waits until its WebSocket is really closed.
  disconnectP(s, timeoutMs = 3000) {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, timeoutMs);
      s.disconnect(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  // Raw `ws` client on /socket/websocket?<query>. Resolves the open WebSocket with a
  // message queue (ws.msgs, ws.nextJson) or rejects with err.status on a refused upgrade.
  rawWs(query, { timeoutMs = 5000, ...wsOpts } = {}) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`${this.wsUrl}/websocket?${query}`, wsOpts);
      this.clients.add(ws);
      decorateWs(ws);
      const t = setTimeout(() => {
        ws.terminate();
        reject(new Error(`ws upgrade did not finish within ${timeoutMs} ms`));
      }, timeoutMs);
      ws.on("unexpected-response", (req, res) => {
        clearTimeout(t);
        const err = new Error(`upgrade refused with HTTP ${res.statusCode}`);
        err.status = res.statusCode;
        res.resume();
        req.destroy();
        reject(err);
      });
      ws.on("open", () => {
        clearTimeout(t);
        resolve(ws);
      });
      ws.on("error", (e) => {
        clearTimeout(t);
        reject(e);
      });
    });
  }

  // HTTP status of a WebSocket upgrade to /socket/websocket?<query> (101 when accepted).
  async upgradeStatus(query) {
    try {
      const ws = await this.rawWs(query);
      ws.terminate();
      return 101;
    } catch (e) {
      if (e.status) return e.status;
      throw e;
    }
  }

  // Byte-level client (lib/rawws.js) on /socket/websocket?<query>.
  async rawSocket(query, opts) {
    const r = await RawWs.connect(this.port, `/socket/websocket?${query}`, opts);
    this.clients.add(r);
    return r;
  }

  closeClients() {
    for (const c of this.clients) {
      try {
        if (c instanceof Socket) c.disconnect();
        else if (c instanceof WebSocket) c.terminate();
        else if (c instanceof RawWs) c.destroy();
      } catch {
        /* already gone */
      }
    }
    this.clients.clear();
  }

  // Resolves {code, signal} once the process has exited, or null after timeoutMs.
  waitExit(timeoutMs = 5000) {
    if (this.exited) return Promise.resolve(this.exited);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.proc.off("exit", onExit);
        resolve(null);
      }, timeoutMs);
      const onExit = (code, signal) => {
        clearTimeout(t);
        resolve({ code, signal });
      };
      this.proc.once("exit", onExit);
    });
  }

  // Sends sig to the server. SIGTERM/SIGINT mark the server as stopping, so the test()
  // wrapper does not report its exit as a crash.
  signal(sig) {
    if (sig === "SIGTERM" || sig === "SIGINT") this.stopping = true;
    this.proc.kill(sig);
  }

  // Sends sig (default SIGTERM) and waits up to timeoutMs for the exit. Resolves
  // {code, signal, ms} (ms from the signal to the exit), or {timedOut: true, ms} when the
  // process is still running at the deadline (it is left running; stop() kills it).
  async terminate(sig = "SIGTERM", timeoutMs = 5000) {
    this.stopping = true;
    const t0 = Date.now();
    const gone = this.waitExit(timeoutMs);
    this.proc.kill(sig);
    const r = await gone;
    return r ? { ...r, ms: Date.now() - t0 } : { timedOut: true, ms: Date.now() - t0 };
  }

  async stop() {
    this.stopping = true;
    this.closeClients();
    live.delete(this);
    if (this.proc && !this.exited) {
      // bounded: stop() must never hang the file's after() hook
      const gone = this.waitExit(8000);
      this.proc.kill("SIGTERM");
      const k = setTimeout(() => this.proc.kill("SIGKILL"), 3000);
      if (!(await gone)) process.stderr.write(`# rowcast pid ${this.proc.pid} had not exited 8 s after SIGTERM+SIGKILL\n`);
      clearTimeout(k);
    }
    if (this.pgDb && !process.env.ROWCAST_E2E_KEEP) {
      const db = this.pgDb;
      this.pgDb = null;
      try {
        await db.drop();
      } catch (e) {
        process.stderr.write(`# could not drop database ${db.name}: ${e.message}\n`);
      }
    }
    if (this.dir && !process.env.ROWCAST_E2E_KEEP) rmSync(this.dir, { recursive: true, force: true });
  }

  // kill -9: the server dies without cleaning up (not reported as a crash by test()).
  async kill9(timeoutMs = 5000) {
    return this.terminate("SIGKILL", timeoutMs);
  }
}

function decorateWs(ws) {
  ws.msgs = [];
  ws.closeInfo = null;
  const waiters = new Set();
  const wake = () => [...waiters].forEach((w) => w());
  ws.on("message", (data, isBinary) => {
    ws.msgs.push({ data, isBinary });
    wake();
  });
  ws.on("close", (code, reason) => {
    ws.closeInfo = { code, reason: reason.toString() };
    wake();
  });
  ws.on("error", () => {}); // reported through close
  const waitFor = (check, timeoutMs, what) =>
    new Promise((resolve, reject) => {
      const attempt = () => {
        let v;
        try {
          v = check();
        } catch (e) {
          finish();
          reject(e);
          return true;
        }
        if (v === undefined) return false;
        finish();
        resolve(v);
        return true;
      };
      const t = setTimeout(() => {
        waiters.delete(attempt);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const finish = () => {
        clearTimeout(t);
        waiters.delete(attempt);
      };
      if (!attempt()) waiters.add(attempt);
    });
  // Next text message (parsed JSON) matching pred, consumed from the queue.
  ws.nextJson = (pred = () => true, timeoutMs = 3000, what = "a JSON message") =>
    waitFor(
      () => {
        for (let i = 0; i < ws.msgs.length; i++) {
          const m = ws.msgs[i];
          if (m.isBinary) continue;
          let v;
          try {
            v = JSON.parse(m.data.toString("utf8"));
          } catch {
            continue;
          }
          if (pred(v)) {
            ws.msgs.splice(i, 1);
            return v;
          }
        }
        if (ws.closeInfo) throw new Error(`socket closed (${ws.closeInfo.code}) while waiting for ${what}`);
        return undefined;
      },
      timeoutMs,
      what
    );
  // Resolves {code, reason} once the connection closed.
  ws.closed = (timeoutMs = 3000) => waitFor(() => ws.closeInfo ?? undefined, timeoutMs, "the connection to close");
  ws.sendJson = (v) => ws.send(JSON.stringify(v));
  return ws;
}

// Starts `rowcast serve` on a fresh database and a free port. args are appended to the
// defaults; logFile: the server logs to this file (pass --log-file in args too), so its
// msg=listening line is looked for there as well as on stderr/stdout.
// In PostgreSQL mode (ROWCAST_E2E_PG_URL) the fresh database is a new rc_<random> on that
// server, dropped by stop(). db: share another server's database instead (a cluster
// node: pass the first node as `db`, or a URL), with its JWT secret and API key; such a
// server does not drop the database.
export async function startServer({ args = [], env = {}, timeoutMs = 10000, logFile, db } = {}) {
  if (!existsSync(BIN)) throw new Error(`rowcast binary not found at ${BIN} (set ROWCAST_BIN)`);
  const s = new Server();
  s.dir = mkdtempSync(path.join(os.tmpdir(), "rowcast-e2e-"));
  s.jwtSecret = crypto.randomBytes(24).toString("hex");
  s.apiKey = crypto.randomBytes(24).toString("hex");
  if (db instanceof Server) {
    s.dbUrl = db.dbUrl;
    s.dbFile = db.dbFile;
    s.jwtSecret = db.jwtSecret;
    s.apiKey = db.apiKey;
  } else if (typeof db === "string") {
    s.dbUrl = db;
  } else if (IS_PG) {
    s.pgDb = await createPgDatabase();
    s.dbUrl = s.pgDb.url;
  } else {
    s.dbFile = path.join(s.dir, "rowcast.db");
    s.dbUrl = `sqlite:${s.dbFile}`;
  }
  s.args = ["serve", "--db", s.dbUrl, "--listen", "127.0.0.1:0", "--jwt-secret", s.jwtSecret, "--api-key", s.apiKey, ...args];
  s.proc = spawn(BIN, s.args, { env: childEnv(env), stdio: ["ignore", "pipe", "pipe"] });
  live.add(s);
  let resolveListen;
  const listening = new Promise((r) => (resolveListen = r));
  const onLine = (line) => {
    s.logs.push(line);
    if (s.port) return;
    if (!/\bmsg="?listening\b/.test(line)) return;
    const m = /\baddr="?([^\s"]+)"?/.exec(line);
    if (!m) return;
    const port = Number(m[1].slice(m[1].lastIndexOf(":") + 1));
    if (port > 0) {
      s.port = port;
      resolveListen();
    }
  };
  for (const stream of [s.proc.stderr, s.proc.stdout]) {
    let partial = "";
    stream.setEncoding("utf8");
    stream.on("data", (d) => {
      if (stream === s.proc.stderr) s.stderr += d;
      partial += d;
      const lines = partial.split("\n");
      partial = lines.pop();
      lines.forEach(onLine);
    });
    stream.on("end", () => {
      if (partial) onLine(partial);
      partial = "";
    });
  }
  const exited = new Promise((r) =>
    s.proc.on("exit", (code, signal) => {
      s.exited = { code, signal };
      r();
    })
  );
  s.proc.on("error", (e) => s.logs.push(`[harness] spawn error: ${e.message}`));
  let fileTimer;
  if (logFile) {
    fileTimer = setInterval(() => {
      if (s.port) return;
      let text;
      try {
        text = readFileSync(logFile, "utf8");
      } catch {
        return;
      }
      for (const line of text.split("\n")) {
        if (!/\bmsg="?listening\b/.test(line)) continue;
        const m = /\baddr="?([^\s"]+)"?/.exec(line);
        const port = m ? Number(m[1].slice(m[1].lastIndexOf(":") + 1)) : 0;
        if (port > 0) {
          s.port = port;
          resolveListen();
          return;
        }
      }
    }, 25);
  }
  let timer;
  const outcome = await Promise.race([
    listening.then(() => "ok"),
    exited.then(() => "exited"),
    new Promise((r) => (timer = setTimeout(() => r("timeout"), timeoutMs))),
  ]);
  clearTimeout(timer);
  clearInterval(fileTimer);
  if (outcome !== "ok") {
    const why =
      outcome === "exited"
        ? `exited (code ${s.exited.code}, signal ${s.exited.signal}) before logging msg=listening`
        : `did not log msg=listening addr=… within ${timeoutMs} ms`;
    await s.stop();
    throw new Error(`rowcast ${s.args.join(" ")} ${why}\n--- server output ---\n${s.logTail()}`);
  }
  return s;
}

// Kill every server still running if the test process goes away abruptly.
process.on("exit", () => {
  for (const s of live) {
    try {
      s.proc.kill("SIGKILL");
    } catch {
      /* gone */
    }
  }
});

// test(name, fn, {timeout}): node:test's test() with a hard deadline; on failure the
// output of every running server since the test started goes to stderr; a server that
// died during the test fails it; clients opened during the test are closed afterwards.
export function test(name, fn, { timeout = 20000, ...opts } = {}) {
  if (NAME_PREFIX && !name.startsWith(NAME_PREFIX)) name = NAME_PREFIX + name;
  return nodeTest(name, { timeout: timeout + 5000, ...opts }, async (t) => {
    const marks = new Map([...live].map((s) => [s, s.logs.length]));
    let timer;
    try {
      await Promise.race([
        fn(t),
        new Promise((_, rej) => {
          timer = setTimeout(() => rej(new Error(`test timed out after ${timeout} ms`)), timeout);
        }),
      ]);
      for (const s of live) {
        if (s.exited && !s.stopping) {
          throw new Error(`the server exited during the test (code ${s.exited.code}, signal ${s.exited.signal})`);
        }
      }
    } catch (e) {
      for (const s of live) {
        if (s.exited && !s.stopping && e && typeof e.message === "string" && !e.message.includes("server exited")) {
          e.message += ` [the server on port ${s.port} is not running: exited with code ${s.exited.code}, signal ${s.exited.signal}]`;
        }
        const from = marks.get(s) ?? 0;
        process.stderr.write(
          `--- rowcast server output (port ${s.port}) during "${name}" ---\n${s.logTail(from)}\n--- end of server output ---\n`
        );
      }
      throw e;
    } finally {
      clearTimeout(timer);
      for (const s of live) s.closeClients();
    }
  });
}
