// 11-browser: the demo chat page (contrib/demo, served by rowcast with --env dev) in
// headless Chromium driven by playwright-core: two pages chat and see each other's
// presence, statuses and typing; a notification toast; the life of a message seen live on
// the other page (an edit and its "(edited)", reactions, a reply quoting its parent and
// the parent's reply count, deletes by the author and by an owner as tombstones) and
// after a reload; unread badges of another room; a page whose WebSocket is blocked falls
// back to long-poll and still chats; after an outage the page reconnects and shows what
// it missed (messages, an edit, a reaction, a delete), once each. On failure every open
// page is screenshotted into a kept temporary directory whose path is printed.
//
// Needs /usr/bin/chromium (or ROWCAST_CHROMIUM) — skipped when it is missing — and
// contrib/node_modules/phoenix (npm ci in contrib/). ROWCAST_DEMO_SCREENSHOT=FILE saves a
// screenshot of two users chatting to FILE (how docs/screenshot.png is made).
import { before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, cpSync, mkdirSync, symlinkSync } from "node:fs";
import { fileURLToPath } from "node:url";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { test, startServer, uid, sleep, TOP_SRCDIR, expectStatus } from "./lib/server.js";

const CHROMIUM = process.env.ROWCAST_CHROMIUM || "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const haveChromium = existsSync(CHROMIUM);
const skip = haveChromium ? false : `${CHROMIUM} not found (apt-get install chromium)`;

// The demo directory rowcast serves: contrib/demo, whose ../node_modules/phoenix comes
// from `npm ci` in contrib/. Where that was not run (a read-only tree, make distcheck), a
// copy of the page next to a link to this suite's own phoenix (the same 1.8.16).
function demoDir() {
  const dir = path.join(TOP_SRCDIR, "contrib/demo");
  if (existsSync(path.join(TOP_SRCDIR, "contrib/node_modules/phoenix/priv/static/phoenix.mjs"))) return dir;
  const tmp = mkdtempSync(path.join(os.tmpdir(), "rowcast-e2e-demo-"));
  cpSync(dir, path.join(tmp, "demo"), { recursive: true });
  mkdirSync(path.join(tmp, "node_modules"));
  symlinkSync(path.join(path.dirname(fileURLToPath(import.meta.url)), "node_modules/phoenix"), path.join(tmp, "node_modules/phoenix"));
  process.stderr.write(`# contrib/node_modules/phoenix is missing (npm ci in contrib/): serving a copy of the demo from ${tmp}\n`);
  tmpDemo = tmp;
  return path.join(tmp, "demo");
}

let tmpDemo;
let srv;
let context; // one persistent browser context on a fresh profile directory
let profileDir;
let artifactsDir; // screenshots of failed tests; kept when something failed
let failed = false;

before(async () => {
  if (!haveChromium) return;
  srv = await startServer({ args: ["--env", "dev", "--demo-dir", demoDir()] });
  profileDir = mkdtempSync(path.join(os.tmpdir(), "rowcast-e2e-chromium-"));
  artifactsDir = mkdtempSync(path.join(os.tmpdir(), "rowcast-e2e-browser-"));
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1100, height: 640 },
    timeout: 30000,
  });
});
after(async () => {
  await context?.close().catch(() => {});
  await srv?.stop();
  if (profileDir) rmSync(profileDir, { recursive: true, force: true });
  if (tmpDemo) rmSync(tmpDemo, { recursive: true, force: true });
  if (artifactsDir && !failed) rmSync(artifactsDir, { recursive: true, force: true });
});

// Replaces window.WebSocket before any page script runs. blocked: every WebSocket
// stays CONNECTING forever (a proxy that swallows upgrades). switchable: real ones,
// except while window.__netDown is true.
const BLOCK_WS = `(() => {
  const Real = window.WebSocket;
  class Stuck extends EventTarget {
    constructor(url) { super(); this.url = String(url); this.readyState = 0; this.binaryType = "blob"; this.protocol = ""; }
    send() { throw new DOMException("WebSocket is not open", "InvalidStateError"); }
    close() { this.readyState = 3; }
  }
  Object.assign(Stuck, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
  window.__wsAttempts = 0;
  const mode = window.__wsMode;
  function WebSocket(url, protocols) {
    window.__wsAttempts++;
    if (mode === "blocked" || window.__netDown) return new Stuck(url);
    return protocols === undefined ? new Real(url) : new Real(url, protocols);
  }
  Object.assign(WebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
  WebSocket.prototype = Real.prototype;
  window.WebSocket = WebSocket;
})();`;

// A test whose pages are screenshotted when it fails, and closed afterwards.
function btest(name, fn, opts = {}) {
  return test(
    name,
    async () => {
      const pages = [];
      const open = async (label, { ws } = {}) => {
        const page = await context.newPage();
        page.label = label;
        page.logs = [];
        page.on("console", (m) => page.logs.push(`[${m.type()}] ${m.text()}`));
        page.on("pageerror", (e) => page.logs.push(`[pageerror] ${e.message}`));
        page.setDefaultTimeout(8000);
        if (ws) await page.addInitScript(`window.__wsMode = ${JSON.stringify(ws)};\n${BLOCK_WS}`);
        pages.push(page);
        const res = await page.goto(`${srv.base}/`);
        assert.equal(res.status(), 200, "GET / serves the demo page");
        return page;
      };
      try {
        await fn(open);
      } catch (e) {
        failed = true;
        for (const p of pages) {
          const file = path.join(artifactsDir, `${name.replace(/[^A-Za-z0-9]+/g, "_").slice(0, 60)}-${p.label}.png`);
          try {
            await p.screenshot({ path: file, fullPage: true });
            process.stderr.write(`# screenshot of page "${p.label}": ${file}\n`);
          } catch (se) {
            process.stderr.write(`# no screenshot of page "${p.label}": ${se.message}\n`);
          }
          if (p.logs.length) process.stderr.write(`# console of page "${p.label}":\n${p.logs.map((l) => `#   ${l}`).join("\n")}\n`);
        }
        throw e;
      } finally {
        for (const p of pages) await p.close().catch(() => {});
      }
    },
    { timeout: 60000, skip, ...opts }
  );
}

async function signIn(page, user) {
  await page.fill("#signin-name", user);
  await page.click("#signin button[type=submit]");
  await page.locator("#chat").waitFor({ state: "visible" });
  await page.locator('#conn[data-state="connected"]').waitFor();
  await page.locator('#rooms li.active', { hasText: "lobby" }).waitFor();
}

async function send(page, text) {
  await page.fill("#body", text);
  await page.press("#body", "Enter");
  await page.waitForFunction(() => document.getElementById("body").value === "", null, { timeout: 5000 });
}

// The message list as [user, body] pairs.
const messages = (page) =>
  page.$$eval("#messages li", (lis) => lis.map((li) => [li.querySelector(".who").textContent, li.querySelector(".body").textContent]));

async function waitMessage(page, user, body) {
  await page.locator("#messages li", { has: page.locator(".body", { hasText: body }) }).filter({ hasText: user }).first().waitFor();
}

const presenceOf = (page, user) => page.locator(`#presence li[data-user="${user}"]`);

// The message element of seq, and the seq of the (first) message with this body.
const msg = (page, seq) => page.locator(`#messages li[data-seq="${seq}"]`);
async function seqOf(page, user, body) {
  await waitMessage(page, user, body);
  const li = page.locator("#messages li", { has: page.locator(".body", { hasText: body }) }).filter({ hasText: user }).first();
  return Number(await li.getAttribute("data-seq"));
}

// The reaction chip of emoji under seq: its count and whether it is highlighted as mine.
const chip = (page, seq, emoji) => msg(page, seq).locator(`.reactions button[data-emoji="${emoji}"]`);
async function waitChip(page, seq, emoji, count, mine) {
  await msg(page, seq).locator(`.reactions button[data-emoji="${emoji}"][data-count="${count}"][aria-pressed="${mine}"]`).waitFor();
}

// Edits one's own message inline: Edit, type, Enter.
async function edit(page, seq, body) {
  await msg(page, seq).locator('[data-action="edit"]').click();
  const input = msg(page, seq).locator("input[data-editing]");
  await input.fill(body);
  await input.press("Enter");
  await input.waitFor({ state: "detached" });
}

// Deletes: Delete, then the "Delete?" that confirms it.
async function del(page, seq) {
  await msg(page, seq).locator('[data-action="delete"]').click();
  await msg(page, seq).locator('[data-action="delete"][data-confirm]').click();
}

const badge = (page, room) => page.locator(`#rooms li[data-room="${room}"] .badge`);

btest("browser: the demo page and phoenix.js are served; /dev/token exists in dev", async () => {
  const r = await fetch(`${srv.base}/vendor/phoenix.mjs`);
  assert.equal(r.status, 200, "GET /vendor/phoenix.mjs (contrib/node_modules/phoenix: npm ci in contrib/)");
  assert.match(r.headers.get("content-type"), /javascript/);
  assert.match(await r.text(), /export\s*\{[^}]*Socket/);
  for (const f of ["app.js", "style.css"]) assert.equal((await fetch(`${srv.base}/${f}`)).status, 200, f);
  const t = await srv.api("POST", "/dev/token", { user_id: uid("dev_") }, { key: null });
  assert.equal(typeof expectStatus(t, 200).token, "string");
});

btest("browser: two pages chat, see each other's presence, status, typing, and a notification", async (open) => {
  const shot = process.env.ROWCAST_DEMO_SCREENSHOT; // plain names for the picture
  const alice = shot ? "alice" : uid("alice_");
  const bob = shot ? "bob" : uid("bob_");
  const a = await open("alice");
  const b = await open("bob");
  await signIn(a, alice);
  await signIn(b, bob);
  assert.match(await a.textContent("#conn"), /WebSocket/);
  assert.match(await b.textContent("#conn"), /WebSocket/);

  // presence: each sees both
  for (const p of [a, b]) for (const u of [alice, bob]) await presenceOf(p, u).waitFor();

  // typing shows on the other page, then clears when the message arrives
  await b.locator("#body").pressSequentially("hello al", { delay: 20 });
  await a.locator("#typing", { hasText: `${bob} is typing` }).waitFor();
  assert.equal(await b.textContent("#typing"), "", "no typing indicator for oneself");
  await b.fill("#body", `hello ${alice}!`);
  await b.press("#body", "Enter");
  for (const p of [a, b]) await waitMessage(p, bob, `hello ${alice}!`);
  await a.waitForFunction(() => document.getElementById("typing").textContent === "");

  await send(a, "hi bob — long time no see, café?");
  for (const p of [a, b]) await waitMessage(p, alice, "hi bob — long time no see, café?");
  assert.equal(await a.locator("#messages li.mine").count(), 1, "alice's own message is styled as hers");

  // status
  await b.selectOption("#status", "away");
  await a.locator(`#presence li[data-user="${bob}"][data-status="away"]`).waitFor();

  // a notification for alice becomes a toast on her page only
  const n = await srv.api("POST", "/api/notifications", { user_id: alice, message: "Your export is ready" });
  expectStatus(n, 201);
  await a.locator(".toast", { hasText: "Your export is ready" }).waitFor();
  assert.equal(await b.locator(".toast").count(), 0);

  if (shot) {
    await send(b, "Fine, thanks! Trying the demo page.");
    await waitMessage(a, bob, "Fine, thanks!");
    await a.locator("#body").pressSequentially("Nice, it", { delay: 10 }); // so bob's page shows typing
    await b.locator("#typing", { hasText: `${alice} is typing` }).waitFor();
    await b.screenshot({ path: shot });
  }

  // a third page joining later sees the history
  const c = await open("carol");
  await signIn(c, shot ? "carol" : uid("carol_"));
  await waitMessage(c, alice, "hi bob —");
  const seen = await messages(c);
  assert.ok(seen.some(([u, m]) => u === bob && m === `hello ${alice}!`), JSON.stringify(seen));

  // switching rooms: random is another room, with its own presence
  await a.click("#rooms button:has-text('random')");
  await a.locator("#room-title", { hasText: "random" }).waitFor();
  await presenceOf(a, alice).waitFor();
  await send(a, "anyone in random?");
  await waitMessage(a, alice, "anyone in random?");
  await sleep(300);
  assert.ok(!(await messages(b)).some(([, m]) => m === "anyone in random?"), "lobby does not get random's messages");
  await b.locator(`#presence li[data-user="${alice}"]`).waitFor({ state: "detached" });
});

btest("browser: a message's life on two pages: edit, reactions, replies, deletes by author and owner, then a reload", async (open) => {
  const alice = uid("alice_");
  const bob = uid("bob_");
  const a = await open("alice");
  await signIn(a, alice); // creates the room lobby
  // bob owns lobby (the dev sign-in keeps an existing role): he may delete any message
  expectStatus(await srv.api("PUT", `/api/rooms/lobby/members/${encodeURIComponent(bob)}`, { role: "owner" }), 200);
  const b = await open("bob");
  await signIn(b, bob);

  await send(a, `frist post of ${alice}`);
  const m1 = await seqOf(b, alice, `frist post of ${alice}`);
  await send(a, `delete me, ${alice}`);
  const m2 = await seqOf(b, alice, `delete me, ${alice}`);
  await seqOf(a, alice, `delete me, ${alice}`);

  // who may do what: only the author edits; the author and an owner delete
  assert.equal(await msg(a, m1).locator('[data-action="edit"]').count(), 1);
  assert.equal(await msg(b, m1).locator('[data-action="edit"]').count(), 0, "bob cannot edit alice's message");
  assert.equal(await msg(b, m1).locator('[data-action="delete"]').count(), 1, "bob, an owner, may delete it");

  // Esc cancels an edit: nothing is sent
  await msg(a, m1).locator('[data-action="edit"]').click();
  await msg(a, m1).locator("input[data-editing]").fill("never sent");
  await msg(a, m1).locator("input[data-editing]").press("Escape");
  await msg(a, m1).locator("input[data-editing]").waitFor({ state: "detached" });
  assert.equal(await msg(a, m1).locator(".body").textContent(), `frist post of ${alice}`);

  // alice edits: bob sees the new text and "(edited)"
  await edit(a, m1, `first post of ${alice}`);
  await msg(b, m1).locator(".body", { hasText: `first post of ${alice}` }).waitFor();
  await msg(b, m1).locator(".edited", { hasText: "(edited)" }).waitFor();
  assert.equal(await msg(b, m1).getAttribute("data-edited"), "");
  await msg(a, m1).locator(".edited").waitFor();
  assert.equal(await msg(b, m2).locator(".edited").count(), 0, "the other message is not marked edited");
  assert.equal(await msg(a, m1).locator(".body").textContent(), `first post of ${alice}`);

  // reactions: counts on both pages, highlighted for whoever reacted; a click toggles
  await msg(b, m1).locator('[data-react="👍"]').click();
  await waitChip(a, m1, "👍", 1, false);
  await waitChip(b, m1, "👍", 1, true);
  await msg(a, m1).locator('[data-react="👍"]').click();
  await waitChip(a, m1, "👍", 2, true);
  await waitChip(b, m1, "👍", 2, true);
  await msg(a, m1).locator('[data-react="🎉"]').click();
  await waitChip(b, m1, "🎉", 1, false);
  await chip(b, m1, "👍").click(); // bob takes his back
  await waitChip(a, m1, "👍", 1, true);
  await waitChip(b, m1, "👍", 1, false);

  // replies: the composer says what it replies to; the reply quotes its parent; the
  // parent counts its replies
  await msg(a, m1).locator('[data-action="reply"]').click();
  await a.locator(`#replying[data-reply-to="${m1}"]`, { hasText: `first post of ${alice}` }).waitFor();
  await send(a, `a reply by ${alice}`);
  await a.locator("#replying").waitFor({ state: "hidden" });
  const r1 = await seqOf(b, alice, `a reply by ${alice}`);
  await msg(b, r1).locator(`.quote[data-reply-to="${m1}"]`, { hasText: `first post of ${alice}` }).waitFor();
  await msg(b, m1).locator('[data-reply-count="1"]', { hasText: "1 reply" }).waitFor();
  await msg(b, m1).locator('[data-action="reply"]').click();
  await b.locator(`#replying[data-reply-to="${m1}"]`).waitFor();
  await send(b, `bob agrees, ${bob}`);
  const r2 = await seqOf(a, bob, `bob agrees, ${bob}`);
  await msg(a, r2).locator(`.quote[data-reply-to="${m1}"]`).waitFor();
  await msg(a, m1).locator('[data-reply-count="2"]', { hasText: "2 replies" }).waitFor();
  await msg(b, m1).locator('[data-reply-count="2"]').waitFor();
  // Esc in the composer drops a reply in progress: the next message is a plain one
  await msg(a, m2).locator('[data-action="reply"]').click();
  await a.locator(`#replying[data-reply-to="${m2}"]`).waitFor();
  await a.press("#body", "Escape");
  await a.locator("#replying").waitFor({ state: "hidden" });
  assert.equal(await msg(a, r2).locator('[data-action="delete"]').count(), 0, "alice, a member, cannot delete bob's message");

  // alice deletes her reply: a tombstone on bob's page, the parent counts one reply
  await del(a, r1);
  await msg(b, r1).locator(".body", { hasText: "message deleted" }).waitFor();
  assert.equal(await msg(b, r1).getAttribute("data-deleted"), "");
  assert.equal(await msg(b, r1).locator(".quote, .reactions, [data-action]").count(), 0, "a tombstone has no quote and no actions");
  await msg(b, m1).locator('[data-reply-count="1"]').waitFor();
  await msg(a, r1).locator(".body", { hasText: "message deleted" }).waitFor();
  // bob, an owner, deletes alice's other message
  await del(b, m2);
  await msg(a, m2).locator('.body', { hasText: "message deleted" }).waitFor();
  assert.ok(!(await messages(a)).some(([, t]) => t.includes("delete me")), "the deleted text is gone from alice's page");

  // a reload shows the same from history: edited, counts, replies, tombstones
  const b2 = await open("bob-reloaded");
  await signIn(b2, bob);
  await msg(b2, r2).waitFor();
  assert.equal(await msg(b2, m1).locator(".body").textContent(), `first post of ${alice}`);
  await msg(b2, m1).locator(".edited").waitFor();
  await waitChip(b2, m1, "👍", 1, false);
  await waitChip(b2, m1, "🎉", 1, false);
  await msg(b2, m1).locator('[data-reply-count="1"]').waitFor();
  await msg(b2, r2).locator(`.quote[data-reply-to="${m1}"]`, { hasText: `first post of ${alice}` }).waitFor();
  for (const s of [m2, r1]) {
    assert.equal(await msg(b2, s).getAttribute("data-deleted"), "");
    assert.equal(await msg(b2, s).locator(".body").textContent(), "message deleted");
  }
});

btest("browser: unread badges count another room's messages and clear when it is opened", async (open) => {
  const alice = uid("alice_");
  const bob = uid("bob_");
  const a = await open("alice");
  const b = await open("bob");
  await signIn(a, alice);
  await signIn(b, bob);
  await a.click("#rooms button:has-text('random')");
  await a.locator("#room-title", { hasText: "random" }).waitFor();
  await presenceOf(a, alice).waitFor();
  // random may hold messages of earlier tests: they are unread for bob too
  const unreadOf = async (user) => {
    const r = expectStatus(await srv.api("GET", `/api/users/${encodeURIComponent(user)}/rooms`), 200);
    return Object.fromEntries(r.rooms.map((x) => [x.room_id, x.unread]));
  };
  const before = (await unreadOf(bob)).random;
  await send(a, `one for ${bob}`);
  await send(a, `two for ${bob}`);
  await b.locator(`#rooms li[data-room="random"] .badge[data-unread="${before + 2}"]`).waitFor({ state: "visible" });
  assert.equal(await badge(b, "random").textContent(), String(before + 2));
  assert.ok(await badge(b, "lobby").isHidden(), "no badge on the room bob is reading");
  assert.ok(await badge(a, "random").isHidden(), "alice's own messages are not unread for her");

  // bob opens random: the messages are there and the badge clears (mark_read)
  await b.click("#rooms button:has-text('random')");
  await waitMessage(b, alice, `two for ${bob}`);
  await b.locator('#rooms li[data-room="random"] .badge[data-unread="0"]').waitFor({ state: "attached" });
  assert.ok(await badge(b, "random").isHidden());
  // the cursor is stored: a message in lobby counts one, and random stays read
  await a.click("#rooms button:has-text('lobby')");
  await a.locator("#room-title", { hasText: "lobby" }).waitFor();
  await presenceOf(a, alice).waitFor();
  await send(a, `lobby news for ${bob}`);
  await b.locator('#rooms li[data-room="lobby"] .badge[data-unread="1"]').waitFor({ state: "visible" });
  assert.deepEqual(await unreadOf(bob), { lobby: 1, random: 0 });
  // a second page of bob's reading lobby clears the badge on the first one too
  const b2 = await open("bob-2");
  await signIn(b2, bob);
  await waitMessage(b2, alice, `lobby news for ${bob}`);
  await b.locator('#rooms li[data-room="lobby"] .badge[data-unread="0"]').waitFor({ state: "attached" });
});

btest("browser: with WebSocket blocked the page falls back to long-poll and still chats", async (open) => {
  const alice = uid("alice_");
  const bob = uid("bob_");
  const a = await open("alice-ws");
  const b = await open("bob-longpoll", { ws: "blocked" });
  await signIn(a, alice);
  const t0 = Date.now();
  await signIn(b, bob);
  assert.match(await b.textContent("#conn"), /long-poll/);
  assert.equal(await b.getAttribute("#conn", "data-transport"), "longpoll");
  assert.ok((await b.evaluate(() => window.__wsAttempts)) >= 1, "the page tried a WebSocket first");
  assert.ok(Date.now() - t0 >= 2000, "it waited for the WebSocket (longPollFallbackMs 2500) before falling back");
  assert.ok(srv.logs.some((l) => /msg="?connect\b/.test(l) && l.includes("transport=longpoll") && l.includes(bob)), "the server saw a long-poll session for bob");

  for (const p of [a, b]) for (const u of [alice, bob]) await presenceOf(p, u).waitFor();
  await b.locator("#body").pressSequentially("typing over long-poll", { delay: 20 });
  await a.locator("#typing", { hasText: `${bob} is typing` }).waitFor();
  await send(b, "hello from long-poll");
  await send(a, "hello from WebSocket");
  for (const p of [a, b]) {
    await waitMessage(p, bob, "hello from long-poll");
    await waitMessage(p, alice, "hello from WebSocket");
  }
  await a.selectOption("#status", "busy");
  await b.locator(`#presence li[data-user="${alice}"][data-status="busy"]`).waitFor();
});

btest("browser: after an outage the page reconnects and shows exactly what it missed, once: messages, an edit, a reaction, a delete", async (open) => {
  const alice = uid("alice_");
  const bob = uid("bob_");
  const a = await open("alice", { ws: "switchable" });
  // every frame alice's page sends, over either transport
  const sent = [];
  a.on("websocket", (ws) => ws.on("framesent", (f) => sent.push(String(f.payload))));
  a.on("request", (r) => {
    if (r.method() === "POST" && r.url().includes("/socket/longpoll")) sent.push(...(r.postData() || "").split("\n"));
  });
  const lobbyJoins = () =>
    sent
      .map((f) => { try { return JSON.parse(f); } catch { return null; } })
      .filter((f) => Array.isArray(f) && f[2] === "room:lobby" && f[3] === "phx_join")
      .map((f) => f[4]);
  await signIn(a, alice);
  assert.deepEqual(lobbyJoins(), [{}], "the first join asks for the recent history");
  const b = await open("bob");
  await signIn(b, bob);
  await send(b, "before the outage");
  const before = await seqOf(a, bob, "before the outage");
  const seenVersion = Number(await a.getAttribute("#messages", "data-version"));
  assert.ok(seenVersion > 0, "the page keeps the room version it has seen");

  // cut alice's network: no new WebSocket opens, long-poll requests fail; then the server
  // drops her socket
  await a.evaluate(() => (window.__netDown = true));
  await a.route("**/socket/longpoll**", (r) => r.abort());
  expectStatus(await srv.api("POST", `/api/users/${encodeURIComponent(alice)}/disconnect`), 200);
  await a.locator('#conn[data-state="reconnecting"]').waitFor();
  await b.locator(`#presence li[data-user="${alice}"]`).waitFor({ state: "detached" });
  for (let i = 1; i <= 3; i++) await send(b, `missed ${i}`);
  const missed = [];
  for (let i = 1; i <= 3; i++) missed.push(await seqOf(b, bob, `missed ${i}`));
  await edit(b, missed[0], "missed 1, edited");
  await msg(b, missed[0]).locator(".edited").waitFor();
  await del(b, missed[1]);
  await b.locator(`#messages li[data-seq="${missed[1]}"][data-deleted]`).waitFor();
  await msg(b, before).locator('[data-react="🎉"]').click();
  await waitChip(b, before, "🎉", 1, true);
  await sleep(500);
  assert.ok(!(await messages(a)).some(([, m]) => m.startsWith("missed")), "nothing arrives while down");
  assert.equal(await msg(a, before).locator(".reactions").count(), 0, "nor the reaction");

  // back up: the page reconnects, rejoins with since_version and applies each change it
  // missed once
  await a.unroute("**/socket/longpoll**");
  await a.evaluate(() => (window.__netDown = false));
  await a.locator('#conn[data-state="connected"]').waitFor({ timeout: 20000 });
  await waitMessage(a, bob, "missed 3");
  await presenceOf(b, alice).waitFor();
  await send(b, "after the outage");
  await waitMessage(a, bob, "after the outage");
  const bodies = (await messages(a)).map(([, m]) => m);
  const mine = bodies.slice(bodies.indexOf("before the outage"));
  assert.deepEqual(mine, ["before the outage", "missed 1, edited", "message deleted", "missed 3", "after the outage"], JSON.stringify(bodies));
  await msg(a, missed[0]).locator(".edited").waitFor();
  assert.equal(await msg(a, missed[1]).getAttribute("data-deleted"), "");
  await waitChip(a, before, "🎉", 1, false); // counted once
  const seqs = await a.$$eval("#messages li", (lis) => lis.map((li) => Number(li.dataset.seq)));
  assert.deepEqual(lobbyJoins().at(-1), { since_version: seenVersion }, `the rejoin carried since_version (joins sent: ${JSON.stringify(lobbyJoins())})`);
  assert.deepEqual(seqs, [...new Set(seqs)].sort((x, y) => x - y), "each seq once, in order");
}, { timeout: 90000 });
