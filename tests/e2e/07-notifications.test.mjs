// 07-notifications: the notifications:<user> channel — only that user may join,
// unread_notifications after join (oldest first, unread only), mark_read, and
// POST /api/notifications (validation, 201 body, new_notification to every socket of
// that user joined to the channel and to no one else).
import { before, after } from "node:test";
import assert from "node:assert/strict";
import {
  test,
  startServer,
  uid,
  joinP,
  joinOk,
  pushP,
  leaveP,
  nextEvent,
  noEvent,
  assertIsoUtc,
  hasKeys,
  expectError,
  expectStatus,
} from "./lib/server.js";

let srv;
before(async () => {
  srv = await startServer();
});
after(async () => {
  await srv?.stop();
});

async function users() {
  const alice = uid("n_alice_");
  const bob = uid("n_bob_");
  await srv.putUser(alice);
  await srv.putUser(bob);
  return { alice, bob };
}

async function notify(user_id, message, data) {
  const body = { user_id, message };
  if (data !== undefined) body.data = data;
  const r = await srv.api("POST", "/api/notifications", body);
  const n = expectStatus(r, 201);
  hasKeys(n, ["id", "user_id", "message", "data", "inserted_at"], "POST /api/notifications body");
  assert.equal(n.user_id, user_id);
  assert.equal(n.message, message);
  if (data !== undefined) assert.deepEqual(n.data, data);
  assertIsoUtc(n.inserted_at, "notification inserted_at");
  return n;
}

// The pushed form of a notification: {id, message, data, inserted_at}.
const pushed = (n) => ({ id: n.id, message: n.message, data: n.data, inserted_at: n.inserted_at });

async function joinNotifications(user) {
  const s = await srv.socket(user);
  const ch = s.channel(`notifications:${user}`);
  const r = await joinOk(ch);
  const unread = await nextEvent(ch, "unread_notifications");
  return { s, ch, r, unread };
}

test("notifications: only the user may join; unread_notifications after join, oldest first", async () => {
  const { alice, bob } = await users();
  // another user is refused
  const sb = await srv.socket(bob);
  assert.deepEqual(await joinP(sb.channel(`notifications:${alice}`)), { status: "error", response: { reason: "unauthorized" } });

  // nothing yet: an empty list
  const a0 = await joinNotifications(alice);
  assert.deepEqual(a0.unread, { notifications: [] });
  await leaveP(a0.ch);

  const n1 = await notify(alice, "first", { kind: "mention", room: "r1" });
  const n2 = await notify(alice, "second ✓", { nested: { list: [1, 2, { x: null }] } });
  const n3 = await notify(alice, "third");
  await notify(bob, "for bob only", { b: 1 });
  const a = await joinNotifications(alice);
  assert.deepEqual(a.unread, { notifications: [n1, n2, n3].map(pushed) }, "oldest first, alice's only");
  for (const n of a.unread.notifications) assertIsoUtc(n.inserted_at);
  const b = await joinNotifications(bob);
  assert.deepEqual(b.unread.notifications.map((n) => n.message), ["for bob only"]);
  await noEvent(a.ch, "unread_notifications", 300);
});

test("notifications: mark_read replies {id}; a rejoin no longer lists it; unknown or foreign ids are not_found", async () => {
  const { alice, bob } = await users();
  const n1 = await notify(alice, "one", { i: 1 });
  const n2 = await notify(alice, "two", { i: 2 });
  const n3 = await notify(alice, "three", { i: 3 });
  const nb = await notify(bob, "bob's", {});
  const a = await joinNotifications(alice);
  assert.equal(a.unread.notifications.length, 3);

  assert.deepEqual(await pushP(a.ch, "mark_read", { id: n2.id }), { status: "ok", response: { id: n2.id } });
  const unknown = typeof n1.id === "number" ? n3.id + 100000 : `${n1.id}-nope`;
  assert.deepEqual(await pushP(a.ch, "mark_read", { id: unknown }), { status: "error", response: { reason: "not_found" } });
  assert.deepEqual(await pushP(a.ch, "mark_read", { id: nb.id }), { status: "error", response: { reason: "not_found" } }, "bob's notification");

  await leaveP(a.ch);
  const a2 = await joinNotifications(alice);
  assert.deepEqual(a2.unread, { notifications: [n1, n3].map(pushed) });
  // bob's notification was not touched by alice's attempt
  const b = await joinNotifications(bob);
  assert.deepEqual(b.unread, { notifications: [pushed(nb)] });

  // mark the rest read: a fresh socket's join lists nothing
  for (const n of [n1, n3]) assert.deepEqual(await pushP(a2.ch, "mark_read", { id: n.id }), { status: "ok", response: { id: n.id } });
  const a3 = await joinNotifications(alice);
  assert.deepEqual(a3.unread, { notifications: [] });
});

test("notifications: POST /api/notifications pushes new_notification to every socket of that user, no one else", async () => {
  const { alice, bob } = await users();
  const a1 = await joinNotifications(alice);
  const a2 = await joinNotifications(alice);
  const b = await joinNotifications(bob);
  // an alice socket not joined to her notifications channel gets nothing
  const room = await srv.roomWith({ [alice]: "member" });
  const a3 = await srv.socket(alice);
  const a3room = a3.channel(`room:${room}`);
  await joinOk(a3room);

  const n = await notify(alice, "hello alice", { url: "/x", count: 2 });
  for (const ch of [a1.ch, a2.ch]) assert.deepEqual(await nextEvent(ch, "new_notification"), pushed(n));
  const nb = await notify(bob, "hello bob");
  assert.deepEqual(await nextEvent(b.ch, "new_notification"), pushed(nb));
  await noEvent(b.ch, "new_notification", 300);
  for (const ch of [a1.ch, a2.ch]) await noEvent(ch, "new_notification", 0);
  await noEvent(a3room, "new_notification", 0);

  // the unread list on a new join matches what was pushed
  const a4 = await joinNotifications(alice);
  assert.deepEqual(a4.unread, { notifications: [pushed(n)] });
  // a socket that left the channel gets no more
  await leaveP(a2.ch);
  const m = await notify(alice, "after a2 left");
  assert.deepEqual(await nextEvent(a1.ch, "new_notification"), pushed(m));
  assert.deepEqual(await nextEvent(a4.ch, "new_notification"), pushed(m));
  await noEvent(a2.ch, "new_notification", 300);
});

test("notifications: POST /api/notifications validation and auth", async () => {
  const { alice } = await users();
  const post = (body, opts) => srv.api("POST", "/api/notifications", body, opts);
  expectError(await post({ message: "x" }), 400, "invalid_request");
  expectError(await post({ user_id: 5, message: "x" }), 400, "invalid_request");
  expectError(await post({ user_id: null, message: "x" }), 400, "invalid_request");
  expectError(await post({ user_id: ["a"], message: "x" }), 400, "invalid_request");
  expectError(await post({ user_id: alice, message: "" }), 422, "invalid_notification");
  expectError(await post({ user_id: alice, message: 5 }), 422, "invalid_notification");
  expectError(await post({ user_id: alice, message: { t: "x" } }), 422, "invalid_notification");
  expectError(await post({ user_id: alice }), 422, "invalid_notification");
  expectError(await post({ user_id: alice, message: "x", data: "str" }), 400, "invalid_request");
  expectError(await post({ user_id: alice, message: "x", data: 5 }), 400, "invalid_request");
  expectError(await post({ user_id: alice, message: "x", data: [1, 2] }), 400, "invalid_request");
  expectError(await post({ user_id: alice, message: "x" }, { key: null }), 401, "unauthorized");
  expectError(await post({ user_id: alice, message: "x" }, { key: "wrong" }), 401, "unauthorized");
  // nothing was stored
  const a = await joinNotifications(alice);
  assert.deepEqual(a.unread, { notifications: [] });
  // data is optional; whatever the 201 says it is, the push says the same
  const n = await notify(alice, "no data");
  assert.ok(n.data === null || (typeof n.data === "object" && !Array.isArray(n.data)), `data without data: ${JSON.stringify(n.data)}`);
  assert.deepEqual(await nextEvent(a.ch, "new_notification"), pushed(n));
  const e = await notify(alice, "empty data", {});
  assert.deepEqual(e.data, {});
  assert.deepEqual(await nextEvent(a.ch, "new_notification"), pushed(e));
  // ids differ
  assert.notEqual(n.id, e.id);
});
