// 13-cluster: PostgreSQL mode with several rowcast nodes on one database (the LISTEN/NOTIFY
// bus), driven by the real phoenix.js client: messages cross nodes in one order for
// everyone; rows and rowcast_broadcast() from psql reach every node; large messages and
// broadcasts; a 10,000-row transaction; typing; presence across nodes and the reaping of
// a kill -9'd node; REST broadcasts and disconnects from another node; recovery by
// last_seq on another node; edits, deletes, reactions, replies, read marks and psql
// UPDATEs across nodes; a room deleted and created again; PostgreSQL restarted mid-stream (/healthz 503 while it is
// down, every acknowledged message delivered in order afterwards).
// Needs ROWCAST_E2E_PG_URL (run-e2e.sh's PostgreSQL pass); skipped in the SQLite pass.
import { before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { Presence } from "phoenix";
import {
  IS_PG,
  PG_URL,
  test,
  startServer,
  sleep,
  uid,
  joinOk,
  pushP,
  nextEvent,
  noEvent,
  expectStatus,
  sql,
  waitUntil,
} from "./lib/server.js";

if (!IS_PG) {
  test("cluster: several nodes on one PostgreSQL", () => {}, {
    skip: "needs PostgreSQL: runs in the [pg] pass (set ROWCAST_E2E_PG_URL)",
  });
} else {
  defineClusterTests();
}

// Runs a command to its exit (not to the close of its pipes: pg_ctl leaves a server
// behind). Resolves {code, out}.
function run(cmd, args, timeoutMs = 60000) {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (out += d));
    const t = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
    p.on("error", (e) => {
      clearTimeout(t);
      resolve({ code: -1, out: out + String(e) });
    });
    p.on("exit", (code) => {
      clearTimeout(t);
      setTimeout(() => resolve({ code, out }), 50);
    });
  });
}

// ---- PostgreSQL control (stop/start of the server of ROWCAST_E2E_PG_URL) ---------------
// scripts/pg-test.sh runs it from DIR/data (ROWCAST_E2E_PG_DIR, else found with SHOW
// data_directory), as the postgres user when we are root, with its options recorded in
// DIR/data/postmaster.opts.
async function pgControl() {
  let dataDir;
  if (process.env.ROWCAST_E2E_PG_DIR) dataDir = path.join(process.env.ROWCAST_E2E_PG_DIR, "data");
  else dataDir = (await sql(PG_URL, "SHOW data_directory")).trim();
  const dir = path.dirname(dataDir);
  let bin = "";
  try {
    bin = readFileSync(path.join(dir, "bin"), "utf8").trim();
  } catch {
    const vs = existsSync("/usr/lib/postgresql") ? readdirSync("/usr/lib/postgresql").sort((a, b) => Number(a) - Number(b)) : [];
    for (const v of vs) if (existsSync(`/usr/lib/postgresql/${v}/bin/pg_ctl`)) bin = `/usr/lib/postgresql/${v}/bin`;
  }
  const pgCtl = bin ? path.join(bin, "pg_ctl") : "pg_ctl";
  const asOwner = (args) => (process.getuid() === 0 ? run("runuser", ["-u", "postgres", "--", pgCtl, ...args]) : run(pgCtl, args));
  const optsFile = path.join(dataDir, "postmaster.opts");
  let startOpts = null;
  return {
    dataDir,
    async stop() {
      // postmaster.opts: the running server's command line, quoted; start() reuses it.
      const text = readFileSync(optsFile, "utf8");
      const toks = [...text.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]);
      const kept = [];
      for (let i = 0; i < toks.length; i++) {
        if (toks[i] === "-D") {
          i++;
          continue;
        }
        kept.push(toks[i]);
      }
      startOpts = kept.map((t) => `'${t.replace(/'/g, `'\\''`)}'`).join(" ");
      const r = await asOwner(["-D", dataDir, "-m", "fast", "-w", "-t", "30", "stop"]);
      assert.equal(r.code, 0, `pg_ctl stop: ${r.out}`);
    },
    async start() {
      const r = await asOwner(["-D", dataDir, "-l", path.join(dir, "server.log"), "-w", "-t", "60", "-o", startOpts ?? "", "start"]);
      assert.equal(r.code, 0, `pg_ctl start: ${r.out}`);
    },
  };
}

function defineClusterTests() {
  const COMMON = ["--rate-limit", "0", "--reap-after-ms", "2000"];
  let A, B, C;
  let pgDown = false;
  let pgCtl = null;

  before(async () => {
    A = await startServer({ args: COMMON, timeoutMs: 30000 });
    B = await startServer({ args: COMMON, db: A, timeoutMs: 30000 });
    C = await startServer({ args: COMMON, db: A, timeoutMs: 30000 });
  });
  after(async () => {
    // never leave PostgreSQL down for the files after this one
    if (pgDown && pgCtl) await pgCtl.start().catch(() => {});
    for (const s of [C, B, A]) await s?.stop();
  });

  const nodes = () => [A, B, C];
  const label = (s) => ({ [A.port]: "A", [B.port]: "B", [C.port]: "C" })[s.port] ?? `:${s.port}`;

  // A room (created on A) with n users u0..u{n-1}, all members.
  async function scene(n = 3, role = "member") {
    const tag = uid("");
    const users = Array.from({ length: n }, (_, i) => `cl${i}_${tag}`);
    const room = await A.roomWith(Object.fromEntries(users.map((u) => [u, role])));
    return { room, topic: `room:${room}`, users };
  }

  // A phoenix client of user on node, joined to topic; collects new_message in .got.
  async function client(node, user, topic, params = {}) {
    const socket = await node.socket(user);
    const ch = socket.channel(topic, params);
    const got = [];
    ch.on("new_message", (m) => got.push(m));
    const reply = await joinOk(ch);
    return { node, user, socket, ch, got, reply };
  }

  const seqs = (msgs) => msgs.map((m) => m.seq);
  function assertInOrderNoDup(msgs, what) {
    for (let i = 1; i < msgs.length; i++) {
      if (!(msgs[i].seq > msgs[i - 1].seq)) {
        assert.fail(`${what}: seq ${msgs[i].seq} after ${msgs[i - 1].seq} at position ${i} (out of order or duplicated)`);
      }
    }
  }
  // The room's rows, as psql sees them: [[seq, body], …] in seq order.
  async function dbRows(room) {
    const out = await sql(A, `SELECT seq, id, body FROM messages WHERE room_id='${room}' ORDER BY seq`);
    return out
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => {
        const [seq, id, ...body] = l.split("|");
        return { seq: Number(seq), id: Number(id), body: body.join("|") };
      });
  }

  // ---------------------------------------------------------------------------------------
  test("cluster: a message sent on node A arrives on B and C (and on A), once, with one seq and id", async () => {
    const sc = await scene(3);
    const [ca, cb, cc] = [
      await client(A, sc.users[0], sc.topic),
      await client(B, sc.users[1], sc.topic),
      await client(C, sc.users[2], sc.topic),
    ];
    const t0 = Date.now();
    const r = await pushP(ca.ch, "new_message", { body: "hello from A" });
    assert.equal(r.status, "ok", `push: ${JSON.stringify(r)}`);
    const got = [];
    for (const c of [ca, cb, cc]) {
      const m = await nextEvent(c.ch, "new_message", 3000);
      assert.deepEqual(
        { id: m.id, seq: m.seq, body: m.body, user_id: m.user_id },
        { id: r.response.message_id, seq: r.response.seq, body: "hello from A", user_id: sc.users[0] },
        `new_message on node ${label(c.node)}`
      );
      got.push(m);
    }
    assert.ok(Date.now() - t0 < 3000, `delivered in ${Date.now() - t0} ms`);
    assert.equal(new Set(got.map((m) => m.inserted_at)).size, 1, `one inserted_at everywhere: ${got.map((m) => m.inserted_at)}`);
    for (const c of [ca, cb, cc]) await noEvent(c.ch, "new_message", 300);
  });

  // rowcast_bus_rows_total of a node: {memory, database}.
  async function busRows(node) {
    const r = await node.api("GET", "/metrics");
    assert.equal(r.status, 200, `GET /metrics: ${r.status}`);
    const get = (source) => {
      const m = new RegExp(`^rowcast_bus_rows_total\\{source="${source}"\\} (\\d+)$`, "m").exec(r.text);
      assert.ok(m, `/metrics of node ${label(node)} has rowcast_bus_rows_total{source="${source}"}`);
      return Number(m[1]);
    };
    return { memory: get("memory"), database: get("database") };
  }

  test("cluster: a node delivers its own commits from memory, the others read them, one order with a psql row between", async () => {
    const sc = await scene(2);
    const ca = await client(A, sc.users[0], sc.topic);
    const cb = await client(B, sc.users[1], sc.topic);
    const [a0, b0] = [await busRows(A), await busRows(B)];
    const bodies = [];
    for (let k = 0; k < 5; k++) {
      if (k === 3) {
        // another session's row between A's own: A has to read it (and may read its next own row with it)
        await sql(A, `INSERT INTO messages(room_id,user_id,body) VALUES ('${sc.room}','${sc.users[1]}','from psql')`);
        bodies.push("from psql");
      }
      const r = await pushP(ca.ch, "new_message", { body: `own ${k}` });
      assert.equal(r.status, "ok", `push ${k}: ${JSON.stringify(r)}`);
      bodies.push(`own ${k}`);
    }
    for (const c of [ca, cb]) {
      await waitUntil(() => c.got.length >= 6, 5000, `node ${label(c.node)} has 6 messages (has ${c.got.length})`);
    }
    await sleep(300);
    for (const c of [ca, cb]) {
      assert.deepEqual(
        c.got.map((m) => [m.seq, m.body]),
        bodies.map((b, i) => [i + 1, b]),
        `node ${label(c.node)}: every row once, in seq order`
      );
    }
    assert.deepEqual(ca.got, cb.got, "both nodes sent the same events");
    const [a1, b1] = [await busRows(A), await busRows(B)];
    const da = { memory: a1.memory - a0.memory, database: a1.database - a0.database };
    const db = { memory: b1.memory - b0.memory, database: b1.database - b0.database };
    assert.equal(da.memory + da.database, 6, `node A delivered each row once: ${JSON.stringify(da)}`);
    assert.ok(da.memory >= 4, `node A's own rows came from memory (all but perhaps the one after the psql row): ${JSON.stringify(da)}`);
    assert.deepEqual(db, { memory: 0, database: 6 }, "node B read every row from the database");
  });

  test(
    "cluster: 3 nodes × 3 clients × 30 concurrent messages: every client gets the identical sequence",
    async () => {
      const PER = 30;
      const sc = await scene(9);
      const cs = [];
      for (let i = 0; i < 9; i++) cs.push(await client(nodes()[i % 3], sc.users[i], sc.topic));
      const acks = new Map(); // seq -> body
      const refused = [];
      await Promise.all(
        cs.map(async (c, i) => {
          const pushes = [];
          for (let k = 0; k < PER; k++) {
            const body = `c${i}-m${k}`;
            pushes.push(
              pushP(c.ch, "new_message", { body }, 15000).then((r) => {
                if (r.status === "ok") acks.set(r.response.seq, body);
                else refused.push({ body, r });
              })
            );
          }
          await Promise.all(pushes);
        })
      );
      assert.deepEqual(refused, [], "every push acknowledged");
      const total = PER * cs.length;
      assert.deepEqual(
        [...acks.keys()].sort((a, b) => a - b),
        Array.from({ length: total }, (_, i) => i + 1),
        "the acks carry seqs 1..270, each once"
      );
      await waitUntil(
        () => cs.every((c) => c.got.length >= total),
        20000,
        `every client has ${total} messages (have ${cs.map((c) => `${label(c.node)}:${c.got.length}`).join(" ")})`
      ).catch((e) => {
        e.message += ` — counts: ${cs.map((c) => `${label(c.node)}/${c.user}:${c.got.length}`).join(" ")}`;
        throw e;
      });
      await sleep(300);
      const ref = cs[0].got.map((m) => `${m.seq}|${m.id}|${m.body}`);
      for (const c of cs) {
        assertInOrderNoDup(c.got, `client ${c.user} on ${label(c.node)}`);
        assert.equal(c.got.length, total, `client ${c.user} on ${label(c.node)}: ${c.got.length} messages (duplicates?)`);
        assert.deepEqual(
          c.got.map((m) => `${m.seq}|${m.id}|${m.body}`),
          ref,
          `client ${c.user} on ${label(c.node)} has the same sequence as ${cs[0].user} on ${label(cs[0].node)}`
        );
      }
      for (const m of cs[0].got) assert.equal(m.body, acks.get(m.seq), `seq ${m.seq}: the body acked with it`);
    },
    { timeout: 60000 }
  );

  test("cluster: a psql INSERT and SELECT rowcast_broadcast(…) reach clients on every node", async () => {
    const sc = await scene(3);
    const cs = [
      await client(A, sc.users[0], sc.topic),
      await client(B, sc.users[1], sc.topic),
      await client(C, sc.users[2], sc.topic),
    ];
    await sql(A, `INSERT INTO messages(room_id,user_id,body) VALUES ('${sc.room}','${sc.users[1]}','from psql')`);
    for (const c of cs) {
      const m = await nextEvent(c.ch, "new_message", 3000);
      assert.deepEqual([m.seq, m.body, m.user_id], [1, "from psql", sc.users[1]], `on node ${label(c.node)}`);
    }
    await sql(A, `SELECT rowcast_broadcast('${sc.topic}','srv_event','{"a":1}')`);
    for (const c of cs) {
      const p = await nextEvent(c.ch, "srv_event", 3000).catch((e) => {
        throw new Error(`node ${label(c.node)}: ${e.message}`);
      });
      assert.deepEqual(p, { a: 1 }, `srv_event payload on node ${label(c.node)}`);
    }
    // a rolled-back broadcast and insert send nothing
    await sql(
      A,
      `BEGIN; SELECT rowcast_broadcast('${sc.topic}','srv_event','{"a":2}'); ` +
        `INSERT INTO messages(room_id,user_id,body) VALUES ('${sc.room}','${sc.users[1]}','rolled back'); ROLLBACK;`
    );
    for (const c of cs) {
      await noEvent(c.ch, "srv_event", 200);
      await noEvent(c.ch, "new_message", 0);
    }
  });

  test("cluster: a 20 KB message, a 20 KB REST broadcast and a 20 KB rowcast_broadcast cross nodes", async () => {
    const sc = await scene(3);
    const cs = [
      await client(A, sc.users[0], sc.topic),
      await client(B, sc.users[1], sc.topic),
      await client(C, sc.users[2], sc.topic),
    ];
    // 10,000 characters at most: 6,900 three-byte characters are 20,700 bytes of UTF-8
    const body = "€".repeat(6800) + "end-" + "x".repeat(96);
    assert.ok(Buffer.byteLength(body) > 20000 && body.length <= 10000);
    const r = await pushP(cs[0].ch, "new_message", { body });
    assert.equal(r.status, "ok", JSON.stringify(r));
    for (const c of cs) {
      const m = await nextEvent(c.ch, "new_message", 3000);
      assert.equal(m.seq, r.response.seq, `seq on ${label(c.node)}`);
      assert.ok(m.body === body, `the 20 KB body arrives intact on node ${label(c.node)} (got ${Buffer.byteLength(m.body)} bytes)`);
    }
    const big = { blob: "b".repeat(20000), n: 7 };
    expectStatus(await A.api("POST", "/api/broadcast", { topic: sc.topic, event: "big_rest", payload: big }), 200);
    for (const c of cs) assert.deepEqual(await nextEvent(c.ch, "big_rest", 3000), big, `big_rest on ${label(c.node)}`);
    await sql(B, `SELECT rowcast_broadcast('${sc.topic}','big_sql', jsonb_build_object('blob', repeat('s', 20000)))`);
    for (const c of cs) {
      const p = await nextEvent(c.ch, "big_sql", 3000).catch((e) => {
        throw new Error(`node ${label(c.node)}: ${e.message}`);
      });
      assert.equal(p.blob, "s".repeat(20000), `big_sql on ${label(c.node)}`);
    }
  });

  test(
    "cluster: a 10,000-row INSERT … SELECT generate_series in one transaction arrives complete and in order on every node",
    async () => {
      const N = 10000;
      const sc = await scene(3);
      const cs = [
        await client(A, sc.users[0], sc.topic),
        await client(B, sc.users[1], sc.topic),
        await client(C, sc.users[2], sc.topic),
      ];
      const t0 = Date.now();
      await sql(
        A,
        `INSERT INTO messages(room_id,user_id,body) SELECT '${sc.room}', 'bulk_bot', 'bulk ' || i FROM generate_series(1, ${N}) AS i`,
        { timeoutMs: 120000 }
      );
      const tInsert = Date.now() - t0;
      await waitUntil(
        () => cs.every((c) => c.got.length >= N),
        60000,
        "every client has 10,000 messages",
        100
      ).catch((e) => {
        e.message += ` — counts: ${cs.map((c) => `${label(c.node)}:${c.got.length}`).join(" ")} (insert took ${tInsert} ms)`;
        throw e;
      });
      const took = Date.now() - t0;
      await sleep(300);
      const rows = await dbRows(sc.room);
      for (const c of cs) {
        assert.equal(c.got.length, N, `node ${label(c.node)}: ${c.got.length} messages`);
        assertInOrderNoDup(c.got, `node ${label(c.node)}`);
        const bad = c.got.findIndex((m, i) => m.seq !== i + 1 || m.id !== rows[i].id || m.body !== rows[i].body);
        assert.equal(bad, -1, `node ${label(c.node)}: message ${bad} ${JSON.stringify(c.got[bad])} ≠ row ${JSON.stringify(rows[bad])}`);
      }
      process.stderr.write(`10,000-row transaction: insert ${tInsert} ms, delivered everywhere after ${took} ms\n`);
    },
    { timeout: 150000 }
  );

  test("cluster: typing on node A reaches the others on A and B, not the sender", async () => {
    const sc = await scene(3);
    const a1 = await client(A, sc.users[0], sc.topic);
    const a2 = await client(A, sc.users[1], sc.topic);
    const b1 = await client(B, sc.users[2], sc.topic);
    a1.ch.push("typing", { typing: true });
    for (const c of [a2, b1]) {
      const p = await nextEvent(c.ch, "user_typing", 3000).catch((e) => {
        throw new Error(`node ${label(c.node)}: ${e.message}`);
      });
      assert.deepEqual({ user_id: p.user_id, typing: p.typing }, { user_id: sc.users[0], typing: true }, `on ${label(c.node)}`);
    }
    await noEvent(a1.ch, "user_typing", 500);
    for (const c of [a2, b1]) await noEvent(c.ch, "user_typing", 0);
    // and back from B to A
    b1.ch.push("typing", { typing: false });
    for (const c of [a1, a2]) {
      const p = await nextEvent(c.ch, "user_typing", 3000);
      assert.deepEqual({ user_id: p.user_id, typing: p.typing }, { user_id: sc.users[2], typing: false });
    }
    await noEvent(b1.ch, "user_typing", 300);
  });

  // phoenix.js Presence on a node: .synced is the list as of the last onSync.
  async function presenceClient(node, user, topic) {
    const socket = await node.socket(user, { reconnectAfterMs: () => 60000 });
    const ch = socket.channel(topic, {});
    const o = { node, user, socket, ch, synced: null };
    const p = new Presence(ch);
    p.onSync(() => (o.synced = p.list((id, { metas }) => `${id}:${metas.length}`).sort()));
    await joinOk(ch);
    return o;
  }

  test(
    "cluster: presence spans nodes; kill -9 of a node reaps its presences and every remaining client sees the leaves",
    async () => {
      const sc = await scene(4);
      const topic = `presence:${sc.room}`;
      const D = await startServer({ args: COMMON, db: A, timeoutMs: 30000 });
      try {
        const [ua, ub, uc, ud] = sc.users;
        const pa = await presenceClient(A, ua, topic);
        const pb = await presenceClient(B, ub, topic);
        const pc = await presenceClient(C, uc, topic);
        const pd = await presenceClient(D, ud, topic);
        const pd2 = await presenceClient(D, ua, topic); // ua has a second connection, on D
        const all = [pa, pb, pc, pd, pd2];
        const want = [`${ua}:2`, `${ub}:1`, `${uc}:1`, `${ud}:1`].sort();
        await waitUntil(
          () => all.every((o) => JSON.stringify(o.synced) === JSON.stringify(want)),
          5000,
          `every Presence lists ${want.join(", ")} (have ${all.map((o) => `${label(o.node)}:${JSON.stringify(o.synced)}`).join(" ")})`
        );

        // kill -9 of D: its presences (ud, ua's second meta) leave everywhere
        const t0 = Date.now();
        const ex = await D.kill9();
        assert.ok(!ex.timedOut, "D died");
        const left = [`${ua}:1`, `${ub}:1`, `${uc}:1`].sort();
        const rest = [pa, pb, pc];
        await waitUntil(
          () => rest.every((o) => JSON.stringify(o.synced) === JSON.stringify(left)),
          8000,
          `every remaining Presence lists ${left.join(", ")}`,
          50
        ).catch((e) => {
          e.message += ` (have ${rest.map((o) => `${label(o.node)}:${JSON.stringify(o.synced)}`).join(" ")})`;
          throw e;
        });
        const took = Date.now() - t0;
        assert.ok(took <= 6500, `the dead node's presences were reaped ${took} ms after kill -9 (--reap-after-ms 2000)`);
        const rows = Number((await sql(A, `SELECT count(*) FROM presences WHERE topic='${topic}'`)).trim());
        assert.equal(rows, 3, "presences rows left for the topic");
        process.stderr.write(`presences of a kill -9'd node reaped after ${took} ms\n`);
      } finally {
        await D.stop();
      }
    },
    { timeout: 30000 }
  );

  test("cluster: POST /api/broadcast and POST /api/users/{id}/disconnect on node A reach sockets on node B and C", async () => {
    const sc = await scene(3);
    const cb = await client(B, sc.users[1], sc.topic);
    const cc = await client(C, sc.users[2], sc.topic);
    expectStatus(await A.api("POST", "/api/broadcast", { topic: sc.topic, event: "announce", payload: { x: "y" } }), 200);
    for (const c of [cb, cc]) assert.deepEqual(await nextEvent(c.ch, "announce", 3000), { x: "y" }, `on ${label(c.node)}`);

    // the victim has raw sockets on B and C; another user on B stays connected
    const victim = sc.users[0];
    const tok = await A.token(victim);
    const wsB = await B.rawWs(`token=${encodeURIComponent(tok)}&vsn=2.0.0`);
    const wsC = await C.rawWs(`token=${encodeURIComponent(tok)}&vsn=2.0.0`);
    for (const ws of [wsB, wsC]) {
      ws.sendJson(["1", "1", sc.topic, "phx_join", {}]);
      assert.equal((await ws.nextJson((m) => m[3] === "phx_reply"))[4].status, "ok");
    }
    expectStatus(await A.api("POST", `/api/users/${victim}/disconnect`), 200);
    assert.equal((await wsB.closed(3000)).code, 1001, "close code on B");
    assert.equal((await wsC.closed(3000)).code, 1001, "close code on C");
    assert.ok(cb.socket.isConnected(), "another user's socket on B is still open");

    // a disconnect broadcast to user_socket:<user> through A does the same
    const wsB2 = await B.rawWs(`token=${encodeURIComponent(tok)}&vsn=2.0.0`);
    expectStatus(await A.api("POST", "/api/broadcast", { topic: `user_socket:${victim}`, event: "disconnect", payload: {} }), 200);
    assert.equal((await wsB2.closed(3000)).code, 1001, "close code on B after the user_socket broadcast");
  });

  test("cluster: edits, deletes, reactions, replies and read marks made on node A reach node B live, one version each", async () => {
    const sc = await scene(2);
    const [ua, ub] = sc.users;
    const ca = await client(A, ua, sc.topic);
    const cb = await client(B, ub, sc.topic);
    const nb = (await B.socket(ub)).channel(`notifications:${ub}`);
    await joinOk(nb);
    const push = async (ch, ev, p) => {
      const r = await pushP(ch, ev, p);
      assert.equal(r.status, "ok", `${ev}: ${JSON.stringify(r)}`);
      return r.response;
    };
    const m = await push(ca.ch, "new_message", { body: "first" });
    await push(ca.ch, "new_message", { body: "a reply", reply_to: m.seq });
    await push(ca.ch, "edit_message", { seq: m.seq, body: "first, edited" });
    await push(ca.ch, "add_reaction", { seq: m.seq, emoji: "🚀" });
    await push(ca.ch, "remove_reaction", { seq: m.seq, emoji: "🚀" });
    await push(ca.ch, "delete_message", { seq: m.seq + 1 });
    const want = ["new_message", "new_message", "message_updated", "reaction_added", "reaction_removed", "message_deleted"];
    for (const c of [ca, cb]) {
      const seen = [];
      for (const ev of want) seen.push((await nextEvent(c.ch, ev, 3000)).version);
      assert.deepEqual(seen, [1, 2, 3, 4, 5, 6], `versions on node ${label(c.node)}`);
    }
    await noEvent(cb.ch, "new_message", 200);
    // unread on B's notifications channel followed A's messages, then A's delete
    const unread = [];
    for (let i = 0; i < 3; i++) unread.push((await nextEvent(nb, "unread", 3000)).unread);
    assert.deepEqual(unread, [1, 2, 1]);
    // a read mark on node A (another device of ub) moves the badge on node B
    const other = await client(A, ub, sc.topic);
    await push(other.ch, "mark_read", { seq: m.seq });
    assert.deepEqual(await nextEvent(nb, "unread", 3000), { room_id: sc.room, unread: 0, last_seq: m.seq + 1, last_read_seq: m.seq });
    // since_version on node B after joining on node A: the same changes
    const back = (await B.socket(ub)).channel(sc.topic, { since_version: 2 });
    await joinOk(back);
    const rc = await nextEvent(back, "room_changes", 3000);
    assert.deepEqual(rc.changes.map((c) => c.event), want.slice(2));
  });

  test("cluster: a room deleted and created again under the same id counts from version 1 on every node", async () => {
    const sc = await scene(2);
    const [ua, ub] = sc.users;
    const cb = await client(B, ub, sc.topic);
    const ca = await client(A, ua, sc.topic);
    const nf = (await B.socket(ub)).channel(`notifications:${ub}`);
    await joinOk(nf);
    for (let i = 1; i <= 3; i++) {
      const r = await pushP(ca.ch, "new_message", { body: `old ${i}` });
      assert.equal(r.status, "ok");
      assert.equal((await nextEvent(cb.ch, "new_message", 3000)).version, i);
      assert.equal((await nextEvent(nf, "unread", 3000)).unread, i);
    }
    assert.equal((await pushP(ca.ch, "delete_message", { seq: 2 })).status, "ok");
    assert.equal((await nextEvent(nf, "unread", 3000)).unread, 2);
    assert.equal((await nextEvent(cb.ch, "message_deleted", 3000)).seq, 2);
    // a room_gone that anyone can NOTIFY for a room that is there redelivers nothing
    await sql(A, `SELECT pg_notify('rowcast', 'room_gone:${sc.room}')`);
    await noEvent(nf, "unread", 500);
    await noEvent(cb.ch, "message_deleted", 0);
    ca.socket.disconnect();
    cb.socket.disconnect();
    expectStatus(await A.api("DELETE", `/api/rooms/${sc.room}`), 204);
    await A.roomWith({ [ua]: "member", [ub]: "member" }, sc.room);
    const nb = await client(B, ub, sc.topic);
    const na = await client(A, ua, sc.topic);
    assert.equal(nb.reply.version, 0);
    const r = await pushP(na.ch, "new_message", { body: "new 1" });
    assert.equal(r.status, "ok");
    for (const c of [na, nb]) {
      const m = await nextEvent(c.ch, "new_message", 3000);
      assert.deepEqual([m.body, m.seq, m.version], ["new 1", 1, 1], `on node ${label(c.node)}`);
    }
  });

  test("cluster: a psql UPDATE of a message on node A's database reaches a client on node B", async () => {
    const sc = await scene(2);
    const cb = await client(B, sc.users[1], sc.topic);
    const ca = await client(A, sc.users[0], sc.topic);
    const r = await pushP(ca.ch, "new_message", { body: "before psql" });
    assert.equal(r.status, "ok");
    await nextEvent(cb.ch, "new_message", 3000);
    await sql(A, `UPDATE messages SET body = 'after psql' WHERE room_id = '${sc.room}' AND seq = ${r.response.seq}`);
    const up = await nextEvent(cb.ch, "message_updated", 3000);
    assert.deepEqual([up.seq, up.body, up.version], [r.response.seq, "after psql", 2]);
    await sql(A, `DELETE FROM messages WHERE room_id = '${sc.room}' AND seq = ${r.response.seq}`);
    assert.equal((await nextEvent(cb.ch, "message_deleted", 3000)).version, 3);
  });

  test("cluster: a client that reconnects to another node with {last_seq} recovers exactly what it missed", async () => {
    const sc = await scene(3);
    const x = await client(A, sc.users[0], sc.topic);
    const other = await client(B, sc.users[1], sc.topic);
    for (let i = 1; i <= 5; i++) assert.equal((await pushP(other.ch, "new_message", { body: `m${i}` })).status, "ok");
    await waitUntil(() => x.got.length >= 5, 3000, "x has 5 messages");
    const lastSeen = x.got[x.got.length - 1].seq;
    await A.disconnectP(x.socket);
    // missed: pushes on B, a REST post on C, a psql insert
    for (let i = 6; i <= 8; i++) assert.equal((await pushP(other.ch, "new_message", { body: `m${i}` })).status, "ok");
    await C.postMessage(sc.room, sc.users[2], "m9");
    await sql(A, `INSERT INTO messages(room_id,user_id,body) VALUES ('${sc.room}','${sc.users[2]}','m10')`);
    await waitUntil(() => other.got.length >= 10, 3000, "the other client has 10 messages");

    const s2 = await C.socket(sc.users[0]);
    const ch2 = s2.channel(sc.topic, { last_seq: lastSeen });
    const later = [];
    ch2.on("new_message", (m) => later.push(m));
    const reply = await joinOk(ch2);
    assert.equal(reply.last_seq, 10, `join reply ${JSON.stringify(reply)}`);
    const h = await nextEvent(ch2, "message_history", 3000);
    assert.deepEqual(
      h.messages.map((m) => [m.seq, m.body]),
      [6, 7, 8, 9, 10].map((s) => [s, `m${s}`]),
      "message_history on C holds exactly the missed messages"
    );
    assert.deepEqual(
      h.messages.map((m) => m.id),
      other.got.slice(5).map((m) => m.id),
      "same ids as delivered live"
    );
    assert.notEqual(h.has_more, true);
    // and it is live on C afterwards
    assert.equal((await pushP(other.ch, "new_message", { body: "m11" })).status, "ok");
    const m = await nextEvent(ch2, "new_message", 3000);
    assert.deepEqual([m.seq, m.body], [11, "m11"]);
    await noEvent(ch2, "new_message", 200);
  });

  test(
    "cluster: PostgreSQL restarted mid-stream: /healthz 503 while down, 200 after; every client ends with every acked message, in order",
    async () => {
      pgCtl = await pgControl();
      const sc = await scene(6);
      const cs = [];
      for (let i = 0; i < 6; i++) cs.push(await client(nodes()[i % 3], sc.users[i], sc.topic));
      const senders = cs.slice(0, 3); // one per node
      const acked = new Map(); // seq -> body
      const failed = [];
      let streaming = true;
      const loops = senders.map(async (c, i) => {
        let k = 0;
        while (streaming) {
          const body = `s${i}-${k++}`;
          const r = await pushP(c.ch, "new_message", { body }, 5000);
          if (r.status === "ok") acked.set(r.response.seq, body);
          else {
            failed.push({ node: label(c.node), body, r });
            await sleep(200);
          }
          await sleep(20);
        }
      });
      await waitUntil(() => acked.size >= 30, 10000, "30 acked messages before the restart");

      const healthMs = [];
      const health = async (s) => {
        const t = Date.now();
        try {
          const st = (await s.api("GET", "/healthz", undefined, { timeoutMs: 8000 })).status;
          healthMs.push(Date.now() - t);
          return st;
        } catch (e) {
          return `error ${e.message}`;
        }
      };
      const ackedBefore = acked.size;
      pgDown = true;
      let tDown, tUp;
      try {
        await pgCtl.stop();
        tDown = Date.now();
        // every node notices: /healthz 503 (asked of all nodes at once)
        await Promise.all(
          nodes().map((s) =>
            waitUntil(async () => (await health(s)) === 503, 15000, `/healthz is 503 on node ${label(s)} while PostgreSQL is down`, 100).catch(
              async (e) => {
                e.message += ` (last: ${await health(s)})`;
                throw e;
              }
            )
          )
        );
      } finally {
        await sleep(1000);
        await pgCtl.start();
        pgDown = false;
        tUp = Date.now();
      }
      const slowest503 = Math.max(...healthMs);
      for (const s of nodes()) {
        await waitUntil(async () => (await health(s)) === 200, 20000, `/healthz is 200 again on node ${label(s)}`, 200);
      }
      const tHealthy = Date.now() - tUp;
      // writes work again through every node
      const ackedAtUp = acked.size;
      await waitUntil(() => acked.size >= ackedAtUp + 30, 20000, "30 more acked messages after the restart").catch((e) => {
        e.message += ` (acked ${acked.size}, failed pushes ${failed.length}: ${JSON.stringify(failed.slice(-3))})`;
        throw e;
      });
      streaming = false;
      await Promise.all(loops);

      const rows = await dbRows(sc.room);
      const stored = new Map(rows.map((r) => [r.seq, r.body]));
      const lost = [...acked].filter(([seq, body]) => stored.get(seq) !== body);
      assert.deepEqual(lost, [], "every acked message is in the database");
      assert.deepEqual(
        rows.map((r) => r.seq),
        Array.from({ length: rows.length }, (_, i) => i + 1),
        "seqs are gapless"
      );
      await waitUntil(
        () => cs.every((c) => c.got.length >= rows.length),
        20000,
        `every client has all ${rows.length} stored messages`
      ).catch((e) => {
        e.message += ` — counts: ${cs.map((c) => `${label(c.node)}:${c.got.length}`).join(" ")}`;
        throw e;
      });
      await sleep(300);
      for (const c of cs) {
        assertInOrderNoDup(c.got, `client on ${label(c.node)}`);
        assert.deepEqual(
          c.got.map((m) => `${m.seq}|${m.body}`),
          rows.map((r) => `${r.seq}|${r.body}`),
          `client ${c.user} on ${label(c.node)}: every stored message once, in order`
        );
      }
      for (const c of cs) assert.ok(c.socket.isConnected(), `client on ${label(c.node)} kept its socket`);
      process.stderr.write(
        `PostgreSQL restart: ${ackedBefore} acked before, down ${tUp - tDown} ms, nodes healthy ${tHealthy} ms after start, ` +
          `${acked.size} acked in all, ${failed.length} pushes refused or timed out while down, ${rows.length} rows; ` +
          `slowest /healthz answer while down ${slowest503} ms\n`
      );
    },
    { timeout: 120000 }
  );

  test("cluster: after the PostgreSQL restart, messages, broadcasts and presence still cross nodes", async () => {
    const sc = await scene(3);
    const cs = [
      await client(A, sc.users[0], sc.topic),
      await client(B, sc.users[1], sc.topic),
      await client(C, sc.users[2], sc.topic),
    ];
    const r = await pushP(cs[2].ch, "new_message", { body: "after restart" });
    assert.equal(r.status, "ok", JSON.stringify(r));
    for (const c of cs) assert.equal((await nextEvent(c.ch, "new_message", 3000)).body, "after restart", `on ${label(c.node)}`);
    await sql(A, `SELECT rowcast_broadcast('${sc.topic}','srv_event','{"after":true}')`);
    for (const c of cs) assert.deepEqual(await nextEvent(c.ch, "srv_event", 3000), { after: true }, `on ${label(c.node)}`);
    const topic = `presence:${sc.room}`;
    const pa = await presenceClient(A, sc.users[0], topic);
    const pb = await presenceClient(B, sc.users[1], topic);
    const want = [`${sc.users[0]}:1`, `${sc.users[1]}:1`].sort();
    await waitUntil(
      () => [pa, pb].every((o) => JSON.stringify(o.synced) === JSON.stringify(want)),
      5000,
      "both Presence lists hold both users"
    );
  });
}
