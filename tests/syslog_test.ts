/**
 * The syslog output's pure parts (URLs, RFC 5424 header, RFC 6587 framing,
 * socket addresses, shortening to the message cap) and its TCP sender
 * against a plain local listener: a queue bounded in bytes, and drops told to
 * the relay once it is back.
 */

import assert from "node:assert/strict";
import {
  cutJsonString,
  fitJson,
  headerField,
  jsonStringBytes,
  metaSequence,
  nextBackoff,
  octetFrame,
  parseSyslogUrl,
  splitLines,
  syslogPrefix,
  SyslogSender,
  syslogUrl,
} from "../lib/unlink/syslog.ts";
import { parseIpv4, parseIpv6, sockaddr } from "../lib/unlink/_socket.ts";
import { escapeJson } from "../lib/unlink/format.ts";
import { freePort, waitFor } from "./_servers.ts";

const text = new TextEncoder();
const decode = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("syslog URLs name udp, tcp and unix targets, with default ports", () => {
  assert.deepEqual(parseSyslogUrl("udp://127.0.0.1"), {
    transport: "udp",
    hostname: "127.0.0.1",
    port: 514,
  });
  assert.deepEqual(parseSyslogUrl("tcp://10.0.0.1:6601"), {
    transport: "tcp",
    hostname: "10.0.0.1",
    port: 6601,
  });
  assert.deepEqual(parseSyslogUrl("tcp://[::1]"), { transport: "tcp", hostname: "::1", port: 601 });
  assert.deepEqual(parseSyslogUrl("unix:///dev/log"), { transport: "unix", path: "/dev/log" });
  assert.equal(syslogUrl(parseSyslogUrl("tcp://[::1]")), "tcp://[::1]:601");
  for (const bad of ["http://x:1", "udp://", "tcp://h:70000", "unix://relative", "/dev/log"]) {
    assert.throws(() => parseSyslogUrl(bad), /^TypeError: Bad syslog URL .*; use udp:\/\//, bad);
  }
});

Deno.test("an RFC 5424 prefix has PRI, version 1, the header fields, and nil or meta structured data", () => {
  const prefix = syslogPrefix({
    severity: 6,
    timestamp: "2026-11-26T04:40:00.123Z",
    hostname: "web 1",
    appName: "deno_bpf",
    procId: "4242",
    msgId: "event",
  });
  assert.equal(prefix, "<30>1 2026-11-26T04:40:00.123Z web_1 deno_bpf 4242 event - ");
  assert.equal(
    syslogPrefix({
      severity: 4,
      timestamp: "-",
      hostname: "h",
      appName: "a",
      procId: "1",
      msgId: "lost",
      structuredData: metaSequence(7),
    }),
    '<28>1 - h a 1 lost [meta sequenceId="7"] ',
  );
  assert.equal(headerField("", 10), "-");
  assert.equal(headerField("ünïcode", 4), "_n_c");
  assert.equal(headerField("x".repeat(60), 48).length, 48);
});

Deno.test("RFC 6587 octet counting prefixes the message's byte length", () => {
  assert.equal(decode(octetFrame(text.encode("<30>1 - - - - - - é"))), "20 <30>1 - - - - - - é");
});

Deno.test("JSON lines split at newlines, an unfinished line kept for later", () => {
  const { lines, rest } = splitLines(text.encode('{"a":1}\n{"b":2}\n{"c"'));
  assert.deepEqual(lines.map(decode), ['{"a":1}', '{"b":2}']);
  assert.equal(decode(rest), '{"c"');
});

Deno.test("backoff doubles up to its cap", () => {
  assert.deepEqual([100, 2000, 4000].map((ms) => nextBackoff(ms, 5000)), [200, 4000, 5000]);
});

Deno.test("socket addresses encode IPv4, IPv6 and Unix paths as the kernel reads them", () => {
  assert.deepEqual(parseIpv4("127.0.0.1"), new Uint8Array([127, 0, 0, 1]));
  assert.equal(parseIpv4("256.0.0.1"), undefined);
  assert.deepEqual(parseIpv6("::1"), new Uint8Array([...Array(15).fill(0), 1]));
  assert.deepEqual(parseIpv6("fe80::1:2")?.slice(0, 2), new Uint8Array([0xfe, 0x80]));
  assert.equal(parseIpv6("1::2::3"), undefined);
  const v4 = sockaddr({ address: "localhost", port: 514 });
  assert.deepEqual([...v4.bytes.slice(0, 8)], [2, 0, 2, 2, 127, 0, 0, 1]);
  assert.equal(sockaddr({ address: "::1", port: 514 }).bytes.length, 28);
  const unix = sockaddr({ path: "/dev/log" });
  assert.equal(decode(unix.bytes.slice(2)), "/dev/log\0");
  assert.throws(() => sockaddr({ address: "relay.example", port: 514 }), TypeError);
  assert.throws(() => sockaddr({ path: "/" + "x".repeat(200) }), RangeError);
});

/** Octet-counted frames read from `conn` until it closes. */
async function readFrames(conn: Deno.Conn, frames: string[]) {
  let buf = new Uint8Array(0);
  const chunk = new Uint8Array(65536);
  for (;;) {
    const n = await conn.read(chunk).catch(() => null);
    if (n === null) return;
    const joined = new Uint8Array(buf.length + n);
    joined.set(buf);
    joined.set(chunk.subarray(0, n), buf.length);
    buf = joined;
    for (;;) {
      const sp = buf.indexOf(0x20);
      if (sp < 0) break;
      const len = Number(decode(buf.subarray(0, sp)));
      if (buf.length < sp + 1 + len) break;
      frames.push(decode(buf.subarray(sp + 1, sp + 1 + len)));
      buf = buf.slice(sp + 1 + len);
    }
  }
}

Deno.test("over TCP the queue is bounded, and a relay that comes back is told what it missed", async () => {
  const port = freePort();
  const sender = SyslogSender.open(`tcp://127.0.0.1:${port}`, {
    queueBytes: 500,
    backoffMs: 20,
    maxBackoffMs: 50,
  });
  // No relay yet: two events wait, three are dropped.
  sender.writeSync(text.encode('{"n":1}\n{"n":2}\n{"n":3}\n{"n":4}\n{"n":5}\n'));
  assert.equal(sender.dropped, 3);
  assert.equal(sender.newlyDropped(), 3);
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const frames: string[] = [];
  const conn = await listener.accept();
  const reading = readFrames(conn, frames);
  await waitFor("three frames", 5000, () => frames.length === 3 ? true : undefined);
  await sender.close();
  await reading;
  listener.close();
  const msg = (f: string) => /^(?:\S+ ){6}(?:-|\[[^\]]*\]) (.*)$/.exec(f)![1];
  const msgid = (f: string) => f.split(" ")[5];
  assert.deepEqual(frames.map(msgid), ["lost", "event", "event"]);
  assert.deepEqual(frames.map(msg), [
    '{"type":"lost","data":{"count":3,"output":"syslog"}}',
    '{"n":1}',
    '{"n":2}',
  ]);
  assert.match(
    frames[1],
    /^<30>1 \d{4}-\d\d-\d\dT[\d:.]+Z \S+ deno_bpf \d+ event \[meta sequenceId="1"\] /,
  );
  // Dropped messages used sequence numbers 3 to 5: the gap shows at the relay too.
  assert.match(frames[0], / lost \[meta sequenceId="6"\] /);
  assert.equal(frames[0].slice(0, 4), "<28>");
  assert.deepEqual([sender.sent, sender.dropped], [2, 3]);
});

Deno.test("over TCP, events still queued when the sender closes are counted as dropped", async () => {
  const sender = SyslogSender.open(`tcp://127.0.0.1:${freePort()}`, { backoffMs: 10_000 });
  sender.writeSync(text.encode('{"n":1}\n{"n":2}\n'));
  await sender.close(100);
  assert.deepEqual([sender.sent, sender.dropped], [0, 2]);
});

Deno.test("over TCP, what was written just before the relay closed is sent again on the next connection", async () => {
  const port = freePort();
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const sender = SyslogSender.open(`tcp://127.0.0.1:${port}`, { backoffMs: 20 });
  const first: string[] = [];
  const conn1 = await listener.accept();
  const reading1 = readFrames(conn1, first);
  sender.writeSync(text.encode('{"n":1}\n{"n":2}\n'));
  await waitFor("two frames", 5000, () => first.length === 2 ? true : undefined);
  conn1.close(); // the relay stops: the sender cannot know what it read
  await reading1;
  const second: string[] = [];
  const conn2 = await listener.accept();
  const reading2 = readFrames(conn2, second);
  sender.writeSync(text.encode('{"n":3}\n'));
  await waitFor("three frames", 5000, () => second.length === 3 ? true : undefined);
  await sender.close();
  await reading2;
  listener.close();
  const seq = (f: string) => Number(/sequenceId="(\d+)"/.exec(f)![1]);
  assert.deepEqual(first.map(seq), [1, 2]);
  assert.deepEqual(second.map(seq), [1, 2, 3], "repeats keep their sequenceId");
  assert.deepEqual([sender.sent, sender.dropped], [3, 0]);
});

Deno.test("fitJson returns a line that fits as it is", () => {
  const line = '{"type":"event","data":{"path":"/tmp/x"}}';
  assert.equal(fitJson(line, 100), line);
});

Deno.test("fitJson drops the _b64 fields first, and lists them in syslog_truncated", () => {
  const data = {
    pid: 7,
    path: "/tmp/" + "a".repeat(3000) + "\ufffd",
    path_b64: "L3RtcC9h".repeat(500),
    argv: ["rm", "x"],
  };
  const out = fitJson(JSON.stringify({ type: "event", data }), 4000);
  const parsed = JSON.parse(out);
  assert.ok(text.encode(out).length <= 4000);
  assert.equal(parsed.data.path, data.path, "the path itself is whole");
  assert.equal(parsed.data.path_b64, undefined);
  assert.deepEqual(parsed.data.syslog_truncated, ["path_b64"]);
  assert.deepEqual(parsed.data.argv, ["rm", "x"]);
});

Deno.test("fitJson cuts the longest strings to one length that fits, a path keeping its end", () => {
  const ctl = "\x01".repeat(4000); // JSON writes each as \u0001: 24,000 bytes
  const data = {
    pid: 7,
    filename: "\x01".repeat(255),
    path: `/${ctl}/file.txt`,
    argv: ["rm", "\x01".repeat(250)],
    cgroup: "/user.slice",
  };
  for (const max of [8000, 4096, 2048]) {
    const out = fitJson(JSON.stringify({ type: "event", data }), max);
    const bytes = text.encode(out).length;
    // Each cut string may end a few bytes short: a \u0001 takes six.
    assert.ok(bytes <= max && bytes > max - 3 * 6, `${bytes} bytes for a cap of ${max}`);
    const parsed = JSON.parse(out);
    assert.ok(parsed.data.path.startsWith("\u2026\x01"), "a cut path starts with the mark");
    assert.ok(parsed.data.path.endsWith("/file.txt"), "and keeps the file's name");
    assert.equal(parsed.data.pid, 7);
    assert.equal(parsed.data.cgroup, "/user.slice");
    const cut = max === 8000 ? ["path"] : ["filename", "path", "argv"];
    assert.deepEqual(parsed.data.syslog_truncated, cut, `cap ${max}`);
    if (max === 2048) {
      assert.ok(parsed.data.filename.endsWith("\x01\u2026"), "other strings keep their start");
      assert.equal(parsed.data.argv[0], "rm");
      // The long strings share the room: each is cut to the same length.
      const lengths = [parsed.data.filename, parsed.data.path, parsed.data.argv[1]].map(
        jsonStringBytes,
      );
      assert.ok(Math.max(...lengths) - Math.min(...lengths) < 20, `${lengths}`);
    }
  }
});

Deno.test("fitJson never splits a character or an escape, and escapes lone surrogates as JSON does", () => {
  assert.equal(cutJsonString('"ééé"', 2 + 6, false), '"ééé"', "a token that fits stays whole");
  assert.equal(cutJsonString('"éééé"', 2 + 3 + 4, false), '"éé\u2026"');
  assert.equal(cutJsonString('"éééé"', 2 + 3 + 4, true), '"\u2026éé"');
  assert.equal(
    cutJsonString('"\ud83d\ude00\ud83d\ude00\ud83d\ude00"', 2 + 3 + 5, false),
    '"\ud83d\ude00\u2026"',
  );
  assert.equal(cutJsonString(JSON.stringify("a\x01\x01"), 2 + 3 + 7, false), '"a\\u0001\u2026"');
  assert.equal(cutJsonString(JSON.stringify("\x01\nb"), 2 + 3 + 4, true), '"\u2026\\nb"');
  for (const s of ['a"b\\c\n\x01é\ud83d\ude00\ud800', "plain"]) {
    assert.equal(jsonStringBytes(s), text.encode(JSON.stringify(s)).length, JSON.stringify(s));
  }
});

Deno.test("fitJson turns what is not a {type, data} object into a marked stub", () => {
  assert.equal(
    fitJson("x".repeat(5000), 2048),
    '{"type":"unknown","data":{"syslog_truncated":["data"]}}',
  );
  assert.equal(
    fitJson(JSON.stringify({ type: "attach", data: "y".repeat(5000) }), 2048),
    '{"type":"attach","data":{"syslog_truncated":["data"]}}',
  );
});

Deno.test("fitJson writes C1 controls and bidi overrides as \\u escapes, as the JSON output does, within the cap", () => {
  const unsafe = "\u009b\u0085\u202e\u2066\u200f\u2028\x7f";
  const line = escapeJson(
    JSON.stringify({ type: "event", data: { comm: unsafe, path: `/${unsafe.repeat(900)}/x` } }),
  );
  for (const max of [4096, 2048]) {
    const out = fitJson(line, max);
    assert.doesNotMatch(out, /[\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]/, "nothing raw");
    const bytes = text.encode(out).length;
    assert.ok(bytes <= max && bytes > max - 3 * 6, `${bytes} bytes for a cap of ${max}`);
    const { data } = JSON.parse(out);
    assert.equal(data.comm, unsafe);
    assert.ok(data.path.endsWith(`${unsafe}/x`));
    assert.deepEqual(data.syslog_truncated, ["path"]);
  }
});

Deno.test("over TCP the queue is bounded in bytes: what does not fit is dropped and counted", async () => {
  const port = freePort();
  const line = (n: number) => `{"n":${n},"pad":"${"p".repeat(5000)}"}\n`;
  // Each message is about 5.1 KB plus the overhead counted per message: two fit in 12,000.
  const sender = SyslogSender.open(`tcp://127.0.0.1:${port}`, {
    queueBytes: 12_000,
    backoffMs: 20,
    maxBackoffMs: 50,
  });
  sender.writeSync(text.encode([1, 2, 3, 4, 5].map(line).join("")));
  assert.equal(sender.dropped, 3);
  assert.ok(sender.queuedBytes <= 12_000 && sender.queuedBytes > 10_000, `${sender.queuedBytes}`);
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const frames: string[] = [];
  const conn = await listener.accept();
  const reading = readFrames(conn, frames);
  await waitFor("three frames", 5000, () => frames.length === 3 ? true : undefined);
  await sender.close();
  await reading;
  listener.close();
  assert.deepEqual(frames.map((f) => f.split(" ")[5]), ["lost", "event", "event"]);
  assert.match(frames[0], /"count":3/);
  assert.deepEqual([sender.sent, sender.dropped, sender.queuedBytes], [2, 3, 0]);
});

Deno.test("over TCP, an event is not even formatted once no message of the largest size fits", async () => {
  const port = freePort(); // nobody listens: every message waits in the queue
  const sender = SyslogSender.open(`tcp://127.0.0.1:${port}`, {
    queueBytes: 12_000,
    maxMessage: 4096,
    backoffMs: 20,
    maxBackoffMs: 50,
  });
  const line = `{"type":"event","data":{"pad":"${"p".repeat(3000)}"}}\n`;
  assert.equal(sender.dropIfFull(), false, "an empty queue has room");
  sender.writeSync(text.encode(line + line));
  // About 6.4 KB held; a largest message (4096 bytes, framed, plus overhead) needs 4.2 KB more.
  assert.equal(sender.dropped, 0);
  assert.equal(sender.dropIfFull(), false);
  sender.writeSync(text.encode(line));
  assert.equal(sender.dropped, 0, "a small third message still fits");
  assert.equal(sender.dropIfFull(), true, "now a largest one would not");
  assert.equal(sender.dropped, 1, "and the event it refused is counted");
  await sender.close(0);
  assert.equal(sender.dropped, 4, "the three still queued at close are dropped too");
  assert.equal(sender.dropIfFull(), true, "a closed sender takes nothing");
  assert.equal(sender.dropped, 5);
});

Deno.test("over UDP a sender is never full: datagrams do not wait", async () => {
  const sender = SyslogSender.open(`udp://127.0.0.1:${freePort()}`, { queueBytes: 1 });
  assert.equal(sender.dropIfFull(), false);
  assert.equal(sender.dropped, 0);
  await sender.close(0);
});

Deno.test("a message over the cap reaches the relay shortened, valid JSON and marked", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  const sender = SyslogSender.open(`tcp://127.0.0.1:${port}`, { maxMessage: 2048 });
  const frames: string[] = [];
  const conn = await listener.accept();
  const reading = readFrames(conn, frames);
  const path = "/" + "\x1b".repeat(3000) + "/end";
  sender.writeSync(text.encode(JSON.stringify({ type: "event", data: { pid: 1, path } }) + "\n"));
  await waitFor("one frame", 5000, () => frames.length === 1 ? true : undefined);
  await sender.close();
  await reading;
  listener.close();
  const bytes = text.encode(frames[0]).length;
  assert.ok(bytes <= 2048 && bytes > 2040, `${bytes} bytes fill the cap`);
  const msg = JSON.parse(/^(?:\S+ ){6}\[[^\]]*\] (.*)$/.exec(frames[0])![1]);
  assert.deepEqual(msg.data.syslog_truncated, ["path"]);
  assert.ok(msg.data.path.endsWith("/end"));
});

Deno.test("a connection lost with 300,000 messages kept for resending does not throw", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  const sender = SyslogSender.open(`tcp://127.0.0.1:${port}`, {
    queueBytes: 1024 * 1024 * 1024,
    backoffMs: 10_000,
  });
  const conn = await listener.accept();
  const frames: string[] = [];
  const reading = readFrames(conn, frames);
  const n = 300_000;
  const batch = Array.from({ length: 1000 }, (_, i) => `{"n":${i}}\n`).join("");
  for (let i = 0; i < n / 1000; i++) sender.writeSync(text.encode(batch));
  await waitFor("every frame read", 20_000, () => frames.length === n ? true : undefined);
  conn.close(); // the relay goes: all 300,000, written within the last second, go back in the queue
  await reading;
  await waitFor(
    "the sender to see the close",
    5000,
    () => sender.queuedBytes > 0 ? true : undefined,
  );
  await sender.close(0);
  listener.close();
  assert.deepEqual([sender.sent, sender.dropped], [n, 0], "resends are not counted as drops");
});
