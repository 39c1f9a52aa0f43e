// rowcast demo chat: the official phoenix.js client (served as /vendor/phoenix.mjs) on
// rowcast's channels — room:<id> (history, messages and everything that happens to them
// afterwards: edits, deletes, reactions, replies, read cursors; typing), presence:<id>
// (who is here, statuses), notifications:<user> (toasts, unread badges). No framework,
// no build step.
import { Socket, Presence, LongPoll } from "/vendor/phoenix.mjs";

const ROOMS = ["lobby", "random"];
const REACTIONS = ["👍", "🎉", "❤️", "😂"]; // the palette offered under each message
const TYPING_SEND_EVERY_MS = 2000; // at most one typing:true per this while typing
const TYPING_IDLE_MS = 3000; // typing:false after this long without a key
const TYPING_SHOW_MS = 6000; // hide someone's indicator if no typing:false comes
const MARK_READ_DELAY_MS = 150; // one mark_read for a burst of arriving messages
const DELETE_CONFIRM_MS = 4000; // how long "Delete?" waits for the second click
const QUOTE_CHARS = 80; // a quoted parent line is cut after this many characters

// The room changes that arrive live and in room_changes after a rejoin with since_version.
const CHANGE_EVENTS = ["new_message", "message_updated", "message_deleted", "reaction_added", "reaction_removed"];

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
};
const button = (text, props, onClick) => {
  const b = el("button", { type: "button", textContent: text, ...props });
  b.addEventListener("click", onClick);
  return b;
};
const cut = (text) => (text.length > QUOTE_CHARS ? `${text.slice(0, QUOTE_CHARS)}…` : text);
const hhmm = (iso) => (iso ? new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "");
const focused = () => document.visibilityState === "visible" && document.hasFocus();

const state = {
  user: null,
  socket: null,
  // the open room: {id, channel, presence, presenceChannel, role, lastSeq, version,
  // readSeq, msgs: Map seq → message, replyTo, typers: Map}
  room: null,
  status: "online",
  typingSentAt: 0,
  typingTimer: null,
  unread: new Map(), // room id → {unread, last_seq, last_read_seq}, for the badges
};

// ---- sign in ---------------------------------------------------------------------------
$("signin-name").value = localStorage.getItem("rowcast-demo-user") || "";
$("signin").addEventListener("submit", async (e) => {
  e.preventDefault();
  const user = $("signin-name").value.trim();
  $("signin-error").textContent = "";
  try {
    const res = await fetch("/dev/token", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user_id: user }),
    });
    const body = await res.json().catch(() => null);
    if (!res.ok || !body?.token) throw new Error(body?.error?.message || `HTTP ${res.status} (is rowcast running with --env dev?)`);
    localStorage.setItem("rowcast-demo-user", user);
    start(user, body.token);
  } catch (err) {
    $("signin-error").textContent = `Sign-in failed: ${err.message}`;
  }
});

function start(user, token) {
  state.user = user;
  $("me").textContent = user;
  $("signin").hidden = true;
  $("chat").hidden = false;

  // longPollFallbackMs: when the WebSocket does not open within 2.5 s (a proxy that
  // blocks it), phoenix.js switches to /socket/longpoll and remembers it for the tab.
  const socket = new Socket("/socket", { params: { token }, longPollFallbackMs: 2500 });
  state.socket = socket;
  setConn("connecting", "connecting…");
  socket.onOpen(() => setConn("connected", `connected · ${socket.transport === LongPoll ? "long-poll" : "WebSocket"}`));
  socket.onError(() => setConn("reconnecting", "reconnecting…"));
  socket.onClose(() => setConn("reconnecting", "reconnecting…"));
  socket.connect();

  joinNotifications(socket, user);
  renderRooms();
  switchRoom(ROOMS[0]);
}

function setConn(s, text) {
  $("conn").dataset.state = s;
  $("conn").dataset.transport = state.socket?.transport === LongPoll ? "longpoll" : "websocket";
  $("conn").textContent = text;
}

// ---- rooms and unread badges -----------------------------------------------------------
function renderRooms() {
  $("rooms").replaceChildren(
    ...ROOMS.map((id) => {
      const active = state.room?.id === id;
      const n = state.unread.get(id)?.unread ?? 0;
      // the open room of a focused window is being read: no badge for it
      const badge = el("span", { className: "badge", textContent: String(n) });
      badge.dataset.unread = n;
      badge.hidden = n === 0 || (active && focused());
      const b = button(`# ${id}`, {}, () => switchRoom(id));
      b.append(badge);
      const li = el("li", { className: active ? "active" : "" }, b);
      li.dataset.room = id;
      return li;
    })
  );
}

// A room's unread state from the join reply, a mark_read reply or an `unread` event. They
// come over different channels in any order: one older than what is known (a lower
// last_seq or last_read_seq; both only grow) is dropped.
function setUnread(roomId, u) {
  const old = state.unread.get(roomId);
  if (old && (u.last_seq < old.last_seq || u.last_read_seq < old.last_read_seq)) return;
  state.unread.set(roomId, { unread: u.unread, last_seq: u.last_seq, last_read_seq: u.last_read_seq });
  renderRooms();
}

function switchRoom(id) {
  if (state.room?.id === id) return;
  if (state.room) {
    state.room.channel.leave();
    state.room.presenceChannel.leave();
    clearTimeout(state.room.readTimer);
  }
  const room = { id, role: null, lastSeq: null, version: null, readSeq: 0, msgs: new Map(), replyTo: null, typers: new Map() };
  state.room = room;
  renderRooms();
  $("room-title").textContent = `# ${id}`;
  $("messages").replaceChildren();
  delete $("messages").dataset.version;
  $("presence").replaceChildren();
  $("room-error").textContent = "";
  renderTyping();
  renderReplying();
  openRoomChannel(room);

  room.presenceChannel = state.socket.channel(`presence:${id}`, () => ({ status: state.status, device: "web" }));
  room.presence = new Presence(room.presenceChannel);
  room.presence.onSync(() => renderPresence(room));
  room.presenceChannel.join();
}

// Joins room:<id>. The join params are a closure that phoenix.js evaluates on every
// (re)join: the first join asks for the recent history; after a reconnect the page asks
// for every change after the last version it saw (room_changes), so it also learns of
// edits, deletes and reactions to messages it already shows.
function openRoomChannel(room) {
  const ch = state.socket.channel(`room:${room.id}`, () => (room.version === null ? {} : { since_version: room.version }));
  room.channel = ch;
  ch.on("message_history", ({ messages }) => {
    messages.forEach((m) => addMessage(room, m));
    scheduleMarkRead(room);
  });
  ch.on("room_changes", ({ changes, version, has_more }) => {
    changes.forEach(({ event, payload }) => applyChange(room, event, payload));
    if (has_more) {
      // more than one page missed: join again from the last version received
      ch.leave();
      if (room === state.room) openRoomChannel(room);
      return;
    }
    if (room.version === null || version > room.version) setVersion(room, version);
  });
  for (const event of CHANGE_EVENTS) ch.on(event, (payload) => applyChange(room, event, payload));
  ch.on("user_typing", ({ user_id, typing }) => setTyping(room, user_id, typing));
  ch.on("user_left", ({ user_id }) => setTyping(room, user_id, false));
  ch.join()
    .receive("ok", (reply) => {
      if (room.channel !== ch) return;
      $("room-error").textContent = "";
      // the first join's history is the room at reply.version; a rejoin's changes
      // (room_changes, pushed next) move the version themselves
      if (room.version === null && typeof reply.version === "number") setVersion(room, reply.version);
      room.readSeq = Math.max(room.readSeq, reply.last_read_seq ?? 0);
      if (reply.role !== room.role) {
        room.role = reply.role;
        room.msgs.forEach((m) => paint(room, m));
      }
      if (typeof reply.unread === "number") setUnread(room.id, reply);
    })
    .receive("error", ({ reason }) => ($("room-error").textContent = `Cannot join #${room.id}: ${reason}`));
}

// The last room version applied (also data-version on the list, for tests and debugging).
function setVersion(room, v) {
  room.version = v;
  $("messages").dataset.version = v;
}

// One room change, live or replayed: applied once, in version order (a version not above
// the last one seen was already applied).
function applyChange(room, event, p) {
  if (room !== state.room) return;
  if (typeof p.version === "number") {
    if (room.version !== null && p.version <= room.version) return;
    setVersion(room, p.version);
  }
  const m = room.msgs.get(p.seq);
  switch (event) {
    case "new_message":
      if (addMessage(room, p) && p.reply_to && room.msgs.has(p.reply_to)) {
        room.msgs.get(p.reply_to).reply_count++;
        paint(room, room.msgs.get(p.reply_to));
      }
      scheduleMarkRead(room);
      return;
    case "message_updated":
      if (!m || m.deleted) return;
      m.body = p.body;
      m.edited_at = p.edited_at;
      paint(room, m);
      paintRepliesTo(room, m.seq);
      return;
    case "message_deleted":
      if (!m || m.deleted) return;
      clearTimeout(m.confirmDelete);
      Object.assign(m, { deleted: true, deleted_at: p.deleted_at, body: "", editing: null, confirmDelete: null });
      m.reactions.clear();
      paint(room, m);
      paintRepliesTo(room, m.seq);
      if (m.reply_to && room.msgs.has(m.reply_to)) {
        const parent = room.msgs.get(m.reply_to);
        parent.reply_count = Math.max(0, parent.reply_count - 1); // only live replies count
        paint(room, parent);
      }
      if (room.replyTo === m.seq) setReplyTo(room, null);
      return;
    case "reaction_added":
    case "reaction_removed":
      if (!m || m.deleted) return;
      react(m, p.emoji, p.user_id, event === "reaction_added");
      paint(room, m);
      return;
  }
}

// Counts one reaction change. Who reacted is known only from live events: history gives
// counts, so after a reload a reaction of yours shows as a count and clicking it adds
// yours again (the server keeps one per user, so nothing changes). Kept simple on purpose.
function react(m, emoji, user, added) {
  const r = m.reactions.get(emoji) ?? { count: 0, users: new Set() };
  if (added && !r.users.has(user)) {
    r.count++;
    r.users.add(user);
  } else if (!added) {
    r.count = Math.max(0, r.count - 1);
    r.users.delete(user);
  }
  if (r.count === 0) m.reactions.delete(emoji);
  else m.reactions.set(emoji, r);
}

// ---- messages --------------------------------------------------------------------------
// A message from history (possibly a tombstone {seq, deleted, deleted_at}) or new_message;
// false when it is already shown.
function addMessage(room, data) {
  if (room !== state.room || room.msgs.has(data.seq)) return false;
  const m = {
    seq: data.seq,
    user_id: data.user_id ?? "",
    body: data.body ?? "",
    inserted_at: data.inserted_at ?? null,
    reply_to: data.reply_to ?? null,
    reply_count: data.reply_count ?? 0,
    edited_at: data.edited_at ?? null,
    deleted: data.deleted === true,
    deleted_at: data.deleted_at ?? null,
    reactions: new Map((data.reactions ?? []).map(({ emoji, count }) => [emoji, { count, users: new Set() }])),
    editing: null, // the inline editor while editing
    confirmDelete: null, // the timer of a first click on Delete
    li: el("li"),
  };
  room.msgs.set(m.seq, m);
  if (m.user_id) setTyping(room, m.user_id, false);
  paint(room, m);

  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  // in seq order: almost always at the end
  let after = list.lastElementChild;
  while (after && Number(after.dataset.seq) > m.seq) after = after.previousElementSibling;
  if (after) after.after(m.li);
  else list.prepend(m.li);
  if (room.lastSeq === null || m.seq > room.lastSeq) room.lastSeq = m.seq;
  if (atBottom || m.user_id === state.user) list.scrollTop = list.scrollHeight;
  return true;
}

// (Re)draws one message's element from its state.
function paint(room, m) {
  const li = m.li;
  const mine = m.user_id === state.user;
  li.className = [mine ? "mine" : "", m.deleted ? "deleted" : ""].join(" ").trim();
  li.dataset.seq = m.seq;
  li.dataset.user = m.user_id;
  toggleData(li, "deleted", m.deleted);
  toggleData(li, "edited", !!m.edited_at && !m.deleted);

  const parts = [];
  if (m.reply_to && !m.deleted) parts.push(quote(room, m.reply_to));
  parts.push(el("span", { className: "who", textContent: m.user_id }));
  parts.push(el("time", { dateTime: m.inserted_at ?? "", textContent: hhmm(m.inserted_at) }));
  if (m.deleted) {
    parts.push(el("p", { className: "body", textContent: "message deleted", title: m.deleted_at ? `deleted ${new Date(m.deleted_at).toLocaleString()}` : "" }));
    li.replaceChildren(...parts);
    return;
  }
  if (m.edited_at) parts.push(el("span", { className: "edited", textContent: "(edited)", title: `edited ${new Date(m.edited_at).toLocaleString()}` }));
  parts.push(m.editing ?? el("p", { className: "body", textContent: m.body }));

  const counts = [...m.reactions].map(([emoji, r]) => {
    const b = button(`${emoji} ${r.count}`, { className: r.users.has(state.user) ? "reaction mine" : "reaction" }, () => toggleReaction(room, m, emoji));
    Object.assign(b.dataset, { emoji, count: r.count });
    b.setAttribute("aria-pressed", String(r.users.has(state.user)));
    return b;
  });
  if (counts.length) parts.push(el("div", { className: "reactions" }, ...counts));

  const foot = el("div", { className: "foot" });
  if (m.reply_count > 0) {
    const n = el("span", { className: "reply-count", textContent: `${m.reply_count} ${m.reply_count === 1 ? "reply" : "replies"}` });
    n.dataset.replyCount = m.reply_count;
    foot.append(n);
  }
  if (room.role !== "viewer") {
    const acts = el("span", { className: "actions" });
    for (const emoji of REACTIONS) {
      const b = button(emoji, { className: "react", title: `react ${emoji}` }, () => toggleReaction(room, m, emoji));
      b.dataset.react = emoji;
      acts.append(b);
    }
    acts.append(action("reply", "Reply", () => setReplyTo(room, m.seq)));
    if (mine) acts.append(action("edit", "Edit", () => startEdit(room, m)));
    if (mine || room.role === "owner") {
      const del = action("delete", m.confirmDelete ? "Delete?" : "Delete", () => deleteMessage(room, m));
      toggleData(del, "confirm", !!m.confirmDelete);
      acts.append(del);
    }
    foot.append(acts);
  }
  parts.push(foot);
  const editingHere = m.editing && document.activeElement === m.editing;
  li.replaceChildren(...parts);
  if (editingHere) m.editing.focus(); // moving the editor took its focus
}

// A message action button (reply, edit, delete), found by its data-action.
function action(name, text, onClick) {
  const b = button(text, { className: `act ${name}` }, onClick);
  b.dataset.action = name;
  return b;
}

// Sets or removes the attribute data-<key> (present means true).
function toggleData(e, key, on) {
  if (on) e.dataset[key] = "";
  else delete e.dataset[key];
}

// The quoted parent line shown above a reply.
function quote(room, seq) {
  const parent = room.msgs.get(seq);
  const text = !parent ? `message #${seq}` : parent.deleted ? "message deleted" : parent.body;
  const q = el(
    "div",
    { className: "quote", title: "show the message replied to" },
    el("span", { className: "q-who", textContent: parent?.user_id ?? "" }),
    el("span", { className: "q-body", textContent: cut(text) })
  );
  q.dataset.replyTo = seq;
  q.addEventListener("click", () => parent?.li.scrollIntoView({ block: "center", behavior: "smooth" }));
  return q;
}

// Redraws the replies to seq (their quote shows it).
function paintRepliesTo(room, seq) {
  for (const m of room.msgs.values()) if (m.reply_to === seq) paint(room, m);
}

// Pushes event on the room channel; a refusal or a timeout shows under the composer as
// "<prefix>: <reason>".
function push(room, event, payload, prefix, onOk) {
  const say = (text) => ($("room-error").textContent = text);
  return room.channel
    .push(event, payload)
    .receive("ok", (r) => {
      say("");
      onOk?.(r);
    })
    .receive("error", ({ reason }) => say(reason === "rate_limited" ? "Slow down a little." : `${prefix}: ${reason}`))
    .receive("timeout", () => say(`${prefix}: no answer from the server.`));
}

// ---- edit, delete, react, reply --------------------------------------------------------
// Inline edit of one's own message: Enter saves (edit_message), Esc cancels.
function startEdit(room, m) {
  if (m.deleted || m.editing) return;
  const input = el("input", { className: "editor", value: m.body, maxLength: 10000, autocomplete: "off", title: "Enter saves, Esc cancels" });
  input.dataset.editing = m.seq;
  const stop = () => {
    m.editing = null;
    paint(room, m);
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      e.preventDefault();
      stop();
    } else if (e.key === "Enter") {
      e.preventDefault();
      const body = input.value;
      if (body === m.body) return stop();
      input.disabled = true;
      const retry = () => (input.disabled = false);
      // the text itself changes with message_updated, the broadcast of this edit
      push(room, "edit_message", { seq: m.seq, body }, "Not edited", stop).receive("error", retry).receive("timeout", retry);
    }
  });
  m.editing = input;
  paint(room, m);
  input.focus();
  input.select();
}

// Delete asks once more ("Delete?") before delete_message; the tombstone comes with
// message_deleted.
function deleteMessage(room, m) {
  if (!m.confirmDelete) {
    m.confirmDelete = setTimeout(() => {
      m.confirmDelete = null;
      paint(room, m);
    }, DELETE_CONFIRM_MS);
    paint(room, m);
    return;
  }
  clearTimeout(m.confirmDelete);
  m.confirmDelete = null;
  paint(room, m);
  push(room, "delete_message", { seq: m.seq }, "Not deleted");
}

// A click on an emoji: removes my reaction when I am known to have it, else adds it.
function toggleReaction(room, m, emoji) {
  const mine = m.reactions.get(emoji)?.users.has(state.user);
  push(room, mine ? "remove_reaction" : "add_reaction", { seq: m.seq, emoji }, "Reaction failed");
}

// The message the next one sent replies to (null: none), shown above the composer.
function setReplyTo(room, seq) {
  room.replyTo = seq;
  renderReplying();
  if (seq !== null) $("body").focus();
}

function renderReplying() {
  const room = state.room;
  const m = room?.replyTo != null ? room.msgs.get(room.replyTo) : null;
  $("replying").hidden = !m;
  if (!m) {
    delete $("replying").dataset.replyTo;
    return;
  }
  $("replying").dataset.replyTo = m.seq;
  $("replying-who").textContent = m.user_id;
  $("replying-body").textContent = cut(m.body);
}

$("reply-cancel").addEventListener("click", () => state.room && setReplyTo(state.room, null));

// ---- read cursor -----------------------------------------------------------------------
// mark_read the newest message shown while the room is open and the window focused.
function scheduleMarkRead(room) {
  if (room !== state.room || room.readTimer) return;
  room.readTimer = setTimeout(() => {
    room.readTimer = null;
    markRead(room);
  }, MARK_READ_DELAY_MS);
}

function markRead(room) {
  if (room !== state.room || !focused() || room.lastSeq === null || room.lastSeq <= room.readSeq) return;
  const seq = room.lastSeq;
  room.readSeq = seq; // not sent again, even when refused
  room.channel.push("mark_read", { seq }).receive("ok", ({ last_read_seq, unread }) => {
    const lastSeq = Math.max(state.unread.get(room.id)?.last_seq ?? 0, seq);
    setUnread(room.id, { unread, last_seq: lastSeq, last_read_seq });
  });
}

for (const ev of ["focus", "blur"]) {
  window.addEventListener(ev, () => {
    if (!state.user) return;
    renderRooms();
    if (state.room) scheduleMarkRead(state.room);
  });
}
document.addEventListener("visibilitychange", () => state.room && scheduleMarkRead(state.room));

// ---- sending and typing ----------------------------------------------------------------
$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $("body");
  const body = input.value;
  const room = state.room;
  if (!body.trim() || !room) return;
  stopTyping();
  const replyTo = room.replyTo;
  push(room, "new_message", replyTo === null ? { body } : { body, reply_to: replyTo }, "Not sent", () => {
    if (input.value === body) input.value = "";
    if (room.replyTo === replyTo) setReplyTo(room, null);
  });
});

$("body").addEventListener("keydown", (e) => {
  if (e.key === "Escape" && state.room?.replyTo != null) setReplyTo(state.room, null);
});

$("body").addEventListener("input", () => {
  if (!state.room) return;
  const now = Date.now();
  if (now - state.typingSentAt > TYPING_SEND_EVERY_MS) {
    state.typingSentAt = now;
    state.room.channel.push("typing", { typing: true });
  }
  clearTimeout(state.typingTimer);
  state.typingTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
});

function stopTyping() {
  clearTimeout(state.typingTimer);
  if (state.typingSentAt && state.room) state.room.channel.push("typing", { typing: false });
  state.typingSentAt = 0;
}

function setTyping(room, user, typing) {
  clearTimeout(room.typers.get(user));
  room.typers.delete(user);
  if (typing) room.typers.set(user, setTimeout(() => setTyping(room, user, false), TYPING_SHOW_MS));
  if (room === state.room) renderTyping();
}

function renderTyping() {
  const who = state.room ? [...state.room.typers.keys()] : [];
  $("typing").textContent =
    who.length === 0 ? "" : who.length === 1 ? `${who[0]} is typing…` : `${who.slice(0, -1).join(", ")} and ${who.at(-1)} are typing…`;
}

// ---- presence --------------------------------------------------------------------------
function renderPresence(room) {
  if (room !== state.room) return;
  const people = room.presence
    .list((id, { metas }) => ({ id, name: metas[0].username || id, status: metas.at(-1).status, n: metas.length }))
    .sort((a, b) => a.name.localeCompare(b.name));
  $("presence").replaceChildren(
    ...people.map((p) => {
      const li = el(
        "li",
        { title: `${p.status}${p.n > 1 ? `, ${p.n} connections` : ""}` },
        el("span", { className: `dot ${p.status}` }),
        el("span", { className: "who", textContent: p.name }),
        el("span", { className: "st", textContent: p.status })
      );
      li.dataset.user = p.id;
      li.dataset.status = p.status;
      return li;
    })
  );
}

$("status").addEventListener("change", (e) => {
  state.status = e.target.value; // also what a rejoin sends
  state.room?.presenceChannel.push("update_status", { status: state.status });
});

// ---- notifications ---------------------------------------------------------------------
function joinNotifications(socket, user) {
  const ch = socket.channel(`notifications:${user}`);
  ch.on("unread_notifications", ({ notifications }) => {
    if (notifications.length) toast(`${notifications.length} unread notification${notifications.length > 1 ? "s" : ""}`);
  });
  ch.on("new_notification", (n) => toast(n.message, () => ch.push("mark_read", { id: n.id })));
  // a message in one of my rooms, or my cursor moved on another device
  ch.on("unread", (u) => setUnread(u.room_id, u));
  ch.join();
}

function toast(text, onDismiss) {
  const t = el("div", { className: "toast", textContent: text, title: "click to dismiss" });
  const close = () => {
    clearTimeout(timer);
    t.remove();
    onDismiss?.();
  };
  const timer = setTimeout(() => t.remove(), 8000);
  t.addEventListener("click", close);
  $("toasts").append(t);
}
