// rawws.js - a byte-level WebSocket client over node:net, for tests that must send
// frames no well-behaved library sends (invalid UTF-8 text, a continuation frame with
// no start, a frame header announcing more than the server's limit) or must not answer
// server pings (idle-timeout test). It reports exactly what the server sent: text and
// binary messages, and the close frame's code (or 1006 when the TCP connection ended
// without one).
import net from "node:net";
import crypto from "node:crypto";

export const OP = { cont: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa };

// Encodes one client frame (always masked, as RFC 6455 requires of clients, unless
// opts.mask === false). `len` may override the announced payload length.
export function encodeFrame(opcode, payload = Buffer.alloc(0), opts = {}) {
  const fin = opts.fin === false ? 0 : 0x80;
  const mask = opts.mask !== false;
  const len = opts.len ?? payload.length;
  let head;
  if (len < 126) {
    head = Buffer.alloc(2);
    head[1] = len;
  } else if (len < 65536) {
    head = Buffer.alloc(4);
    head[1] = 126;
    head.writeUInt16BE(len, 2);
  } else {
    head = Buffer.alloc(10);
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  head[0] = fin | opcode;
  if (!mask) return Buffer.concat([head, payload]);
  head[1] |= 0x80;
  const key = crypto.randomBytes(4);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= key[i & 3];
  return Buffer.concat([head, key, body]);
}

export class RawWs {
  // Resolves once the 101 arrived; rejects with err.status set when the server answered
  // the upgrade with another status.
  static connect(port, pathAndQuery, { timeoutMs = 5000, headers = {} } = {}) {
    return new Promise((resolve, reject) => {
      const sock = net.connect(port, "127.0.0.1");
      const key = crypto.randomBytes(16).toString("base64");
      let buf = Buffer.alloc(0);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`raw ws handshake to ${pathAndQuery} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      const onData = (chunk) => {
        buf = Buffer.concat([buf, chunk]);
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        sock.off("data", onData);
        clearTimeout(timer);
        const head = buf.subarray(0, end).toString("latin1");
        const rest = buf.subarray(end + 4);
        const status = Number(head.split(" ")[1]);
        if (status !== 101) {
          sock.destroy();
          const err = new Error(`upgrade refused with HTTP ${status}`);
          err.status = status;
          err.head = head;
          reject(err);
          return;
        }
        resolve(new RawWs(sock, rest, head));
      };
      sock.on("data", onData);
      sock.on("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
      sock.on("connect", () => {
        const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("");
        sock.write(
          `GET ${pathAndQuery} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
            `Upgrade: websocket\r\nConnection: Upgrade\r\n` +
            `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`
        );
      });
    });
  }

  constructor(sock, initial, head) {
    this.sock = sock;
    this.head = head;
    this.buf = Buffer.alloc(0);
    this.messages = []; // {opcode, data: Buffer, text?: string}
    this.waiters = [];
    this.closeCode = null; // set when a close frame arrived (1005 if it had no code)
    this.closeReason = "";
    this.ended = false; // TCP connection gone
    this.pings = 0;
    this.frag = null;
    this.writeError = null;
    let resolveEnd;
    this.endedP = new Promise((r) => (resolveEnd = r));
    sock.on("data", (c) => this._onData(c));
    sock.on("error", (e) => {
      this.writeError = e;
    });
    sock.on("close", () => {
      this.ended = true;
      resolveEnd();
      this._wake();
    });
    if (initial.length) this._onData(initial);
  }

  _wake() {
    const ws = this.waiters;
    this.waiters = [];
    ws.forEach((w) => w());
  }

  _onData(chunk) {
    this.buf = Buffer.concat([this.buf, chunk]);
    for (;;) {
      const b = this.buf;
      if (b.length < 2) return;
      const fin = (b[0] & 0x80) !== 0;
      const opcode = b[0] & 0x0f;
      const masked = (b[1] & 0x80) !== 0;
      let len = b[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        len = Number(b.readBigUInt64BE(2));
        off = 10;
      }
      let key = null;
      if (masked) {
        if (b.length < off + 4) return;
        key = b.subarray(off, off + 4);
        off += 4;
      }
      if (b.length < off + len) return;
      const data = Buffer.from(b.subarray(off, off + len));
      if (key) for (let i = 0; i < data.length; i++) data[i] ^= key[i & 3];
      this.buf = b.subarray(off + len);
      this._onFrame(fin, opcode, data, masked);
    }
  }

  _onFrame(fin, opcode, data, masked) {
    if (masked) this.protocolNote = "server sent a masked frame";
    if (opcode === OP.close) {
      this.closeCode = data.length >= 2 ? data.readUInt16BE(0) : 1005;
      this.closeReason = data.subarray(2).toString("utf8");
      this._wake();
      return;
    }
    if (opcode === OP.ping) {
      this.pings++;
      if (this.autoPong) this.sendFrame(OP.pong, data);
      return;
    }
    if (opcode === OP.pong) return;
    if (opcode === OP.cont) {
      if (!this.frag) return;
      this.frag.parts.push(data);
      if (!fin) return;
      opcode = this.frag.opcode;
      data = Buffer.concat(this.frag.parts);
      this.frag = null;
    } else if (!fin) {
      this.frag = { opcode, parts: [data] };
      return;
    }
    const m = { opcode, data };
    if (opcode === OP.text) m.text = data.toString("utf8");
    this.messages.push(m);
    this._wake();
  }

  write(buf) {
    if (this.ended || this.sock.destroyed) return false;
    try {
      return this.sock.write(buf);
    } catch (e) {
      this.writeError = e;
      return false;
    }
  }

  sendFrame(opcode, payload, opts) {
    return this.write(encodeFrame(opcode, payload, opts));
  }

  sendText(str) {
    return this.sendFrame(OP.text, Buffer.from(str, "utf8"));
  }

  sendJson(v) {
    return this.sendText(JSON.stringify(v));
  }

  sendBinary(buf) {
    return this.sendFrame(OP.binary, Buffer.from(buf));
  }

  // Waits for a message matching pred (default: any), removing it from the queue.
  async next(pred = () => true, timeoutMs = 3000, what = "a message") {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.messages.findIndex(pred);
      if (i >= 0) return this.messages.splice(i, 1)[0];
      if (this.closeCode !== null || this.ended) {
        throw new Error(`connection closed (code ${this.closeCode ?? "none"}) while waiting for ${what}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  // Next text message parsed as JSON, optionally filtered.
  async nextJson(pred = () => true, timeoutMs = 3000, what = "a JSON message") {
    const m = await this.next(
      (m) => {
        if (m.opcode !== OP.text) return false;
        try {
          return pred(JSON.parse(m.text));
        } catch {
          return false;
        }
      },
      timeoutMs,
      what
    );
    return JSON.parse(m.text);
  }

  // Resolves with the close code the server sent (1006 if TCP ended without a close
  // frame); rejects on timeout.
  async closed(timeoutMs = 3000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.closeCode !== null) return this.closeCode;
      if (this.ended) return 1006;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`server did not close the connection within ${timeoutMs} ms`);
      await new Promise((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  destroy() {
    this.sock.destroy();
  }
}
