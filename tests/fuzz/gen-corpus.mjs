#!/usr/bin/env node
// gen-corpus.mjs - writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/)
// from the golden frames in tests/data and a few hand-made sessions. The committed corpora
// are these seeds merged with what fuzzing found (scripts/fuzz.sh merge); run this to
// start over, then merge.
//
//   node tests/fuzz/gen-corpus.mjs [OUTDIR]    (default: tests/fuzz/corpus)
//
// Each file is named after its content's SHA-1, as libFuzzer names corpus files.
// The control byte at the start of an input is described in each target's source.
import { createHash, createHmac } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const data = join(here, '..', 'data');
const out = process.argv[2] ?? join(here, 'corpus');

// fuzz_jwt.c's key and clock.
const KEY = 'fuzz-secret-0123456789abcdef';
const NOW = 1700000000;

const write = (target, bytes) => {
    const dir = join(out, target);
    mkdirSync(dir, { recursive: true });
    const buf = Buffer.from(bytes);
    writeFileSync(join(dir, createHash('sha1').update(buf).digest('hex')), buf);
};
const ctl = (b, rest) => Buffer.concat([Buffer.from([b]), Buffer.from(rest)]);
const hex = (s) => (s === '-' ? Buffer.alloc(0) : Buffer.from(s.replace(/ /g, ''), 'hex'));

// Data lines of a golden file: [status, frame] (encode files: [frame]).
const lines = (name) =>
    readFileSync(join(data, name), 'utf8')
        .split('\n')
        .filter((l) => l && !l.startsWith('#'))
        .map((l) => l.split('\t'));

// The JSON text frames of a golden file, unescaping the \xNN the files use for raw bytes.
const textFrames = (name) =>
    lines(name).map((cols) => {
        const f = cols.length === 1 ? cols[0] : cols[1];
        return Buffer.from(f.replace(/\\x([0-9a-f]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16))), 'latin1');
    });
const binFrames = () => lines('binary_frames.txt').map((cols) => hex(cols[1]));

const v1 = [...textFrames('v1_frames.txt'), ...textFrames('v1_encode.txt')];
const v2 = [...textFrames('v2_frames.txt'), ...textFrames('v2_encode.txt')];
const bin = binFrames();

// ---- fuzz_codec: control byte = vsn bit | depth << 1 -----------------------------------
for (const f of v1) write('fuzz_codec', ctl(32 << 1, f));
for (const f of v2) write('fuzz_codec', ctl((32 << 1) | 1, f));
for (const f of bin) write('fuzz_codec', ctl((32 << 1) | 1, f));
write('fuzz_codec', ctl((2 << 1) | 1, '[null,"1","t","e",{"a":[{"b":1}]}]')); // too deep
write('fuzz_codec', ctl((63 << 1) | 1, '[null,"1","t","e",' + '['.repeat(40) + ']'.repeat(40) + ']'));
// realtime-js's kind-3 user broadcast push: JSON and binary payloads, with metadata.
const userPush = (jr, ref, topic, ev, meta, enc, payload) => {
    const f = [jr, ref, topic, ev, meta].map((x) => Buffer.from(x));
    return Buffer.concat([Buffer.from([3, ...f.map((x) => x.length), enc]), ...f, Buffer.from(payload)]);
};
write('fuzz_codec', ctl((32 << 1) | 1, userPush('1', '2', 'realtime:a', 'cursor', '', 1, '{"x":1}')));
write('fuzz_codec', ctl((32 << 1) | 1, userPush('', '', 'realtime:a', 'e', '{"persist":true}', 1, '[1,{"b":null}]')));
write('fuzz_codec', ctl((32 << 1) | 1, userPush('1', '2', 'realtime:a', 'blob', '', 0, [0, 1, 255])));
write('fuzz_codec', ctl(1, '2.0.0'));
write('fuzz_codec', ctl(0, '1.0.12'));

// ---- fuzz_jwt: control byte bit 0 = also sign "header\nclaims" ourselves -------------------
const b64u = (b) => Buffer.from(b).toString('base64url');
const jws = (header, claims, key = KEY) => {
    const si = b64u(header) + '.' + b64u(claims);
    return si + '.' + createHmac('sha256', key).update(si).digest('base64url');
};
const H = '{"alg":"HS256","typ":"JWT"}';
const claims = (o) => JSON.stringify(o);
const tokens = [
    jws(H, claims({ sub: 'alice', iat: NOW, exp: NOW + 3600 })),
    jws('{"alg":"HS256"}', claims({ sub: 'bob', exp: NOW + 1, nbf: NOW })),
    jws(H, claims({ sub: 'alice', exp: NOW })), // expired
    jws(H, claims({ sub: 'alice', exp: NOW + 60, nbf: NOW + 30 })), // not yet
    jws(H, claims({ sub: '', exp: NOW + 60 })),
    jws(H, claims({ sub: 'x'.repeat(256), exp: NOW + 60 })),
    jws(H, claims({ sub: 'alice', exp: '1700003600' })),
    jws(H, claims({ sub: 'alice', exp: NOW + 60 }), 'wrong-key'),
    jws('{"alg":"none"}', claims({ sub: 'alice', exp: NOW + 60 })),
    jws('{"alg":"HS256","alg":"none"}', claims({ sub: 'alice', exp: NOW + 60 })),
    jws('{"alg":"HS256","crit":["exp"]}', claims({ sub: 'alice', exp: NOW + 60 })),
    jws('{"alg":"HS256","typ":"JOSE"}', claims({ sub: 'alice', exp: NOW + 60 })),
    jws(H, '[1,2]'),
    b64u(H) + '.' + b64u(claims({ sub: 'alice', exp: NOW + 60 })) + '.',
    b64u('{"alg":"none"}') + '.' + b64u(claims({ sub: 'alice', exp: NOW + 60 })) + '.',
    'a.b.c',
    '..',
    'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0=.AAAA',
];
const good = tokens[0];
tokens.push(good.slice(0, -1) + (good.endsWith('A') ? 'B' : 'A')); // bad signature
const ALPHA = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
tokens.push(good.slice(0, -1) + ALPHA[ALPHA.indexOf(good.slice(-1)) | 1]); // non-canonical tail
tokens.push(good.replace(/-/g, '+').replace(/_/g, '/')); // standard alphabet
for (const t of tokens) write('fuzz_jwt', ctl(0, t));
const signedParts = [
    [H, claims({ sub: 'alice', iat: NOW, exp: NOW + 3600 })],
    [H, claims({ sub: 'carol', exp: NOW + 3600, nbf: NOW - 10 })],
    ['{"alg":"HS256","typ":"JWT","kid":"1"}', claims({ sub: 'dave', exp: NOW + 10, extra: [1, { a: null }] })],
    [H, claims({ sub: 'é😀', exp: NOW + 10 })],
    [H, claims({ sub: 'x', exp: 1e30 })],
    [H, claims({ sub: 'x', exp: NOW + 10, nbf: 'now' })],
    [H, '{"sub":"a\\u0000b","exp":1700000100}'],
    [H, '{"sub":"alice","sub":"bob","exp":1700000100}'],
    ['{"alg":"HS256","typ":null}', claims({ sub: 'x', exp: NOW + 10 })],
    ['not json', 'nor this'],
];
for (const [h, c] of signedParts) write('fuzz_jwt', ctl(1, h + '\n' + c));
write('fuzz_jwt', ctl(0, 'alice'));
write('fuzz_jwt', ctl(0, 'é'));

// ---- fuzz_longpoll: the raw body -------------------------------------------------------
const b64 = (b) => Buffer.from(b).toString('base64');
const bodies = [
    v2.slice(0, 3).join('\n'),
    v2.slice(3, 6).join('\r\n') + '\r\n',
    b64(bin[0]) + '\n' + v2[0] + '\n\n' + b64(bin[3]),
    b64(bin[0]).replace(/=+$/, ''),
    v2[0] + '\nnot base64!\n' + v2[1],
    '\n\n\r\n',
    '[',
    Array.from({ length: 120 }, (_, i) => `[null,"${i}","phoenix","heartbeat",{}]`).join('\n'),
    b64(bin[1]).replace(/\+/g, '-').replace(/\//g, '_'),
    'QQ=\nQQ==\nQ',
];
for (const b of bodies) write('fuzz_longpoll', b);

// ---- fuzz_frames: control byte + masked client frames --------------------------------
// Control byte: bit 0 V2, bit 1 granting store, bits 2-3 role, bits 4-5 end mode,
// bit 6 max_channels 3, bit 7 rate limit.
const mask = Buffer.from([0x37, 0xfa, 0x21, 0x3d]);
const frame = (op, payload, { fin = true, masked = true, rsv = 0 } = {}) => {
    const p = Buffer.from(payload);
    const n = p.length;
    const head = [(fin ? 0x80 : 0) | rsv | op];
    const m = masked ? 0x80 : 0;
    if (n < 126) head.push(m | n);
    else if (n < 65536) head.push(m | 126, n >> 8, n & 255);
    else head.push(m | 127, 0, 0, 0, 0, (n >>> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255);
    const body = masked ? Buffer.from(p.map((b, i) => b ^ mask[i & 3])) : p;
    return Buffer.concat([Buffer.from(head), masked ? mask : Buffer.alloc(0), body]);
};
const text = (s, o) => frame(1, s, o);
const V2 = (jr, ref, topic, event, payload = {}) => JSON.stringify([jr, ref, topic, event, payload]);
const V1 = (jr, ref, topic, event, payload = {}) =>
    JSON.stringify({ topic, event, payload, ref, join_ref: jr });
const session = (enc, msgs) => Buffer.concat(msgs.map((m) => (Buffer.isBuffer(m) ? m : text(enc(...m)))));

const flows = [
    [[null, '1', 'phoenix', 'heartbeat']],
    [
        ['1', '1', 'room:lobby', 'phx_join'],
        ['1', '2', 'room:lobby', 'new_message', { body: 'hello' }],
        ['1', '3', 'room:lobby', 'typing', { typing: true }],
        ['1', '4', 'room:lobby', 'new_message', { body: '   ' }],
        ['1', '5', 'room:lobby', 'whatever'],
        ['9', '6', 'room:lobby', 'typing', { typing: false }],
        ['1', '7', 'room:lobby', 'phx_leave'],
        [null, '8', 'phoenix', 'heartbeat'],
    ],
    [
        ['1', '1', 'presence:lobby', 'phx_join', { device: 'phone', status: 'away' }],
        ['1', '2', 'presence:lobby', 'update_status', { status: 'busy' }],
        ['1', '3', 'presence:lobby', 'update_status', { status: 'nope' }],
        ['1', '4', 'presence:lobby', 'get_online_users'],
        ['5', '5', 'presence:lobby', 'phx_join'],
    ],
    [
        ['1', '1', 'notifications:fuzz', 'phx_join'],
        ['1', '2', 'notifications:fuzz', 'mark_read', { id: 3 }],
        ['1', '3', 'notifications:fuzz', 'mark_read', { id: 99 }],
        ['4', '4', 'notifications:other', 'phx_join'],
    ],
    [
        ['1', '1', 'document:lobby', 'phx_join', { last_seq: 2 }],
        ['1', '2', 'document:lobby', 'edit', { operation: 'insert', data: { at: 0, text: 'x' } }],
        ['1', '3', 'document:lobby', 'edit', { operation: '' }],
        ['1', '4', 'document:lobby', 'phx_leave'],
    ],
    [
        ['1', '1', 'room:a', 'phx_join', { last_seq: 5 }],
        ['2', '2', 'room:b', 'phx_join'],
        ['3', '3', 'room:c', 'phx_join'],
        ['4', '4', 'room:d', 'phx_join'],
        [null, '5', 'room:a', 'phx_join'],
        ['6', '6', 'nope:1', 'phx_join'],
        ['7', '7', 'room:', 'phx_join'],
    ],
];
for (const [i, f] of flows.entries()) {
    for (const c of [0x00, 0x01, 0x03, 0x07, 0x0b, 0x0f, 0x23, 0x32, 0x43, 0x83, 0x93]) {
        if ((c + i) % 3 === 0 || c === 0x03 || c === 0x02) {
            write('fuzz_frames', ctl(c, session(c & 1 ? V2 : V1, f)));
        }
    }
    write('fuzz_frames', ctl(0x03 | (i % 4) << 4, session(V2, f)));
    write('fuzz_frames', ctl(0x02 | ((i + 1) % 4) << 4, session(V1, f)));
}
// Wire-level cases: binary push, ping, close, fragments, bad frames.
const hb = V2(null, '1', 'phoenix', 'heartbeat');
const wire = [
    frame(2, bin[0]),
    frame(2, bin[3]),
    Buffer.concat([frame(9, 'ping!'), text(hb), frame(10, ''), frame(8, Buffer.from([0x03, 0xe8]))]),
    Buffer.concat([text(hb.slice(0, 10), { fin: false }), frame(9, 'x'), frame(0, hb.slice(10), { fin: false }), frame(0, '')]),
    Buffer.concat([text(hb.slice(0, 10), { fin: false }), text(hb)]),
    frame(0, hb),
    text(hb, { masked: false }),
    text(hb, { rsv: 0x40 }),
    frame(3, hb),
    frame(11, ''),
    frame(9, 'x'.repeat(126)),
    frame(9, '', { fin: false }),
    text(Buffer.from([0x5b, 0xc3, 0x28, 0x5d])),
    text('[null,"1","phoenix","heartbeat",' + '['.repeat(40) + ']'.repeat(40) + ']'),
    text(V2(null, '1', 'room:lobby', 'new_message', { body: 'x'.repeat(300) })),
    Buffer.concat([frame(8, ''), text(hb)]),
    Buffer.concat([text(hb), text(hb).subarray(0, 5)]),
    Buffer.from([0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
    Buffer.from([0x82, 0xfe, 0xff, 0xff, 0, 0, 0, 0]),
];
for (const w of wire) {
    write('fuzz_frames', ctl(0x03, w));
    write('fuzz_frames', ctl(0x21, w));
}
// Tight mode (bit 6): output that outgrows the socket and the 8 KiB queue.
const many = (n, enc) => session(enc, Array.from({ length: n }, (_, i) => [null, String(i), 'phoenix', 'heartbeat']));
for (const c of [0x41, 0x43, 0x51, 0x61, 0x71]) write('fuzz_frames', ctl(c, many(c === 0x41 ? 400 : 60, V2)));
write('fuzz_frames', ctl(0x40, many(100, V1)));
write('fuzz_frames', ctl(0x43, session(V2, flows[1])));
write('fuzz_frames', ctl(0x42, session(V1, flows[5])));
// Bodies around the length limit; V1 with a non-string topic.
for (const n of [4000, 4096, 5000]) {
    write('fuzz_frames', ctl(0x03, session(V2, [['1', '1', 'room:lobby', 'phx_join'], ['1', '2', 'room:lobby', 'new_message', { body: 'é'.repeat(n / 2) }]])));
}
for (const f of v1) write('fuzz_frames', ctl(0x00, text(f)));
for (const f of v2.slice(0, 24)) write('fuzz_frames', ctl(0x01, text(f)));
for (const f of bin) write('fuzz_frames', ctl(0x01, frame(2, f)));
