// rowcast demo chat: the official phoenix.js client (served as /vendor/phoenix.mjs) on
// rowcast's channels — room:<id> (history, messages, typing), presence:<id> (who is
// here, statuses), notifications:<user> (toasts). No framework, no build step.
import { Socket, Presence, LongPoll } from "/vendor/phoenix.mjs";

const ROOMS = ["lobby", "random"];
const TYPING_SEND_EVERY_MS = 2000; // at most one typing:true per this while typing
const TYPING_IDLE_MS = 3000; // typing:false after this long without a key
const TYPING_SHOW_MS = 6000; // hide someone's indicator if no typing:false comes

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
};

const state = {
  user: null,
  socket: null,
  room: null, // {id, channel, presence, presenceChannel, lastSeq, typers: Map}
  status: "online",
  typingSentAt: 0,
  typingTimer: null,
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

// ---- rooms -----------------------------------------------------------------------------
function renderRooms() {
  $("rooms").replaceChildren(
    ...ROOMS.map((id) => {
      const b = el("button", { type: "button", textContent: `# ${id}` });
      b.addEventListener("click", () => switchRoom(id));
      return el("li", { className: state.room?.id === id ? "active" : "" }, b);
    })
  );
}

function switchRoom(id) {
  if (state.room?.id === id) return;
  if (state.room) {
    state.room.channel.leave();
    state.room.presenceChannel.leave();
  }
  const room = { id, lastSeq: null, typers: new Map() };
  state.room = room;
  renderRooms();
  $("room-title").textContent = `# ${id}`;
  $("messages").replaceChildren();
  $("presence").replaceChildren();
  $("room-error").textContent = "";
  renderTyping();

  // The join params are a closure: phoenix.js evaluates them on every (re)join, so after
  // a reconnect the server sends exactly the messages after the last one we saw.
  room.channel = state.socket.channel(`room:${id}`, () => (room.lastSeq === null ? {} : { last_seq: room.lastSeq }));
  room.channel.on("message_history", ({ messages }) => messages.forEach((m) => addMessage(room, m)));
  room.channel.on("new_message", (m) => addMessage(room, m));
  room.channel.on("user_typing", ({ user_id, typing }) => setTyping(room, user_id, typing));
  room.channel.on("user_left", ({ user_id }) => setTyping(room, user_id, false));
  room.channel
    .join()
    .receive("ok", () => ($("room-error").textContent = ""))
    .receive("error", ({ reason }) => ($("room-error").textContent = `Cannot join #${id}: ${reason}`));

  room.presenceChannel = state.socket.channel(`presence:${id}`, () => ({ status: state.status, device: "web" }));
  room.presence = new Presence(room.presenceChannel);
  room.presence.onSync(() => renderPresence(room));
  room.presenceChannel.join();
}

function addMessage(room, m) {
  if (room !== state.room) return;
  if (room.lastSeq !== null && m.seq <= room.lastSeq) return; // already shown
  room.lastSeq = m.seq;
  setTyping(room, m.user_id, false);
  const time = new Date(m.inserted_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const li = el(
    "li",
    { className: m.user_id === state.user ? "mine" : "" },
    el("span", { className: "who", textContent: m.user_id }),
    el("time", { dateTime: m.inserted_at, textContent: time }),
    el("p", { className: "body", textContent: m.body })
  );
  li.dataset.seq = m.seq;
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(li);
  if (atBottom || m.user_id === state.user) list.scrollTop = list.scrollHeight;
}

// ---- sending and typing ----------------------------------------------------------------
$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $("body");
  const body = input.value;
  if (!body.trim() || !state.room) return;
  stopTyping();
  state.room.channel
    .push("new_message", { body })
    .receive("ok", () => {
      if (input.value === body) input.value = "";
      $("room-error").textContent = "";
    })
    .receive("error", ({ reason }) => ($("room-error").textContent = reason === "rate_limited" ? "Slow down a little." : `Not sent: ${reason}`))
    .receive("timeout", () => ($("room-error").textContent = "Not sent: no answer from the server."));
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
