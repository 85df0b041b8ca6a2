/**
 * RingBuffer on real kernel ring buffers: the largest sizes, the errno of a
 * failing call, what is released on every path, and use after close.
 */

import assert from "node:assert/strict";
import { UNLINK_BPF_O } from "../bpf/unlink_bpf.ts";
import { BpfError } from "../lib/errors.ts";
import { BpfObject } from "../lib/object.ts";
import { MAX_RING_SIZE, RingBuffer } from "../lib/ring_buffer.ts";
import { ensureTracefs } from "../mod.ts";
import {
  compileFixture,
  fdCount,
  kernelTest,
  ROOT,
  runSnippet,
  scratch,
  spawnUnlinker,
} from "./_helpers.ts";

const TRACEPOINTS = ["tp_enter_unlink", "tp_enter_unlinkat", "tp_exit_unlink", "tp_exit_unlinkat"];
const GiB = 2 ** 30;

/** The unlink object with its ring sized `size`, loaded, tracing this process only. */
function ringObject(size: number): BpfObject {
  const obj = BpfObject.openMem(UNLINK_BPF_O, "unlink");
  try {
    obj.setConst("targ_tgid", Deno.pid);
    obj.map("events").maxEntries = size;
    for (const prog of obj.programs) prog.autoload = TRACEPOINTS.includes(prog.name);
    obj.load();
    return obj;
  } catch (error) {
    obj.close();
    throw error;
  }
}

/** How many BPF maps this process has mapped into memory (lines of /proc/self/maps). */
function mappedBpfMaps(): number {
  return Deno.readTextFileSync("/proc/self/maps").split("\n").filter((l) => l.includes("bpf-map"))
    .length;
}

/** Opens a `size`-byte ring, has it carry one real unlink, drains it, closes; returns timings. */
function roundTrip(size: number): { load: number; open: number; close: number } {
  const t0 = performance.now();
  using obj = ringObject(size);
  const t1 = performance.now();
  const maps = mappedBpfMaps();
  const fds = fdCount();
  const ring = new RingBuffer(obj.map("events"));
  const t2 = performance.now();
  try {
    assert.equal(ring.size, size);
    assert.equal(mappedBpfMaps(), maps + 2, "the consumer page and the data pages are mapped");
    const links = TRACEPOINTS.map((name) => obj.program(name).attach());
    const file = Deno.makeTempFileSync({ prefix: "dbpf_ring_" });
    Deno.removeSync(file);
    for (const link of links) link.close();
    assert.ok(ring.pending > 0, "the unlink left a record in the ring");
    const names: string[] = [];
    const n = ring.drain((bytes, offset, length) => {
      const text = new TextDecoder().decode(bytes.subarray(offset, offset + length));
      names.push(text);
    });
    assert.equal(n, 1);
    assert.ok(names[0].includes(file), "the record names the unlinked file");
    assert.equal(ring.pending, 0);
  } finally {
    ring.close();
  }
  const t3 = performance.now();
  assert.equal(mappedBpfMaps(), maps, "close() unmaps both mappings");
  assert.equal(fdCount(), fds, "close() closes the epoll fd and the eventfd");
  return { load: t1 - t0, open: t2 - t1, close: t3 - t2 };
}

function report(size: number, t: { load: number; open: number; close: number }) {
  const ms = (x: number) => `${x.toFixed(0)} ms`;
  console.log(
    `${size / GiB} GiB ring: kernel allocation (load) ${ms(t.load)}, ` +
      `RingBuffer open (mmap) ${ms(t.open)}, close ${ms(t.close)}`,
  );
}

kernelTest("a 1 GiB ring opens, carries a record, drains and closes", () => {
  report(GiB, roundTrip(GiB));
});

kernelTest("a 2 GiB ring, the largest a u32 max_entries holds, opens, drains and closes", () => {
  assert.equal(MAX_RING_SIZE, 2 * GiB);
  report(2 * GiB, roundTrip(MAX_RING_SIZE));
});

kernelTest("a map that is not a ring size is refused with a RangeError before any mmap", () => {
  using obj = ringObject(4096);
  const maps = mappedBpfMaps();
  assert.throws(() => new RingBuffer(obj.map("lost")), {
    name: "RangeError",
    message: /^Ring buffer size must be a power of two from 4096 to 2147483648 bytes .*got 1$/,
  });
  assert.equal(mappedBpfMaps(), maps);
});

kernelTest("a map the kernel will not map reports the kernel's own errno", () => {
  // "starts" is a hash map of 16384 entries: a valid ring size, but hash
  // maps cannot be mmapped, and the kernel says ENOTSUPP, not ENOMEM.
  using obj = ringObject(4096);
  const maps = mappedBpfMaps();
  const fds = fdCount();
  assert.throws(() => new RingBuffer(obj.map("starts")), (error) => {
    assert.ok(error instanceof BpfError, String(error));
    assert.equal(error.code, "ENOTSUPP");
    assert.match(error.message, /^Cannot map the ring buffer's consumer page/);
    return true;
  });
  assert.equal(mappedBpfMaps(), maps);
  assert.equal(fdCount(), fds);
});

kernelTest("every method but stop and close throws a TypeError after close", async () => {
  using obj = ringObject(4096);
  const ring = new RingBuffer(obj.map("events"));
  ring.close();
  assert.throws(() => ring.drain(() => {}), { name: "TypeError", message: "RingBuffer is closed" });
  assert.throws(() => ring.pending, { name: "TypeError", message: "RingBuffer is closed" });
  await assert.rejects(() => ring.wait(), { name: "TypeError", message: "RingBuffer is closed" });
  assert.throws(() => ring.records({ decode: () => ({}) } as never), {
    name: "TypeError",
    message: "RingBuffer is closed",
  });
  ring.stop();
  ring.close();
  ring[Symbol.dispose]();
  assert.equal(ring.size, 4096, "the size stays readable");
});

kernelTest("a view of the ring kept past close reads as empty instead of crashing", () => {
  using obj = ringObject(4096);
  const ring = new RingBuffer(obj.map("events"));
  const links = TRACEPOINTS.map((name) => obj.program(name).attach());
  Deno.removeSync(Deno.makeTempFileSync({ prefix: "dbpf_ring_" }));
  for (const link of links) link.close();
  let kept: Uint8Array | undefined;
  assert.equal(ring.drain((bytes) => kept = bytes), 1);
  assert.equal(kept!.length, 2 * 4096);
  ring.close();
  assert.equal(kept!.length, 0, "the view is detached from the unmapped memory");
  assert.equal(kept![0], undefined);
});

kernelTest("close() inside a drain handler stops the drain and unmaps the ring on return", () => {
  using obj = ringObject(4096);
  const maps = mappedBpfMaps();
  const ring = new RingBuffer(obj.map("events"));
  const links = TRACEPOINTS.map((name) => obj.program(name).attach());
  for (let i = 0; i < 3; i++) Deno.removeSync(Deno.makeTempFileSync({ prefix: "dbpf_ring_" }));
  for (const link of links) link.close();
  let seen = 0;
  const n = ring.drain(() => {
    seen++;
    ring.close();
    assert.equal(mappedBpfMaps(), maps + 2, "still mapped while the handler runs");
  });
  assert.equal(n, 1);
  assert.equal(seen, 1);
  assert.equal(mappedBpfMaps(), maps, "unmapped once drain returned");
  assert.throws(() => ring.drain(() => {}), TypeError);
});

/** Runs `body` in a child Deno with the unlink object's ring loaded as `obj`; returns its JSON. */
function child(body: string, v8Flags: string[] = []): Promise<Record<string, unknown>> {
  const script = `
import { UNLINK_BPF_O } from "${ROOT}bpf/unlink_bpf.ts";
import { BpfObject, RingBuffer } from "${ROOT}mod.ts";
const fds = () => [...Deno.readDirSync("/proc/self/fd")].length;
const maps = () => Deno.readTextFileSync("/proc/self/maps").split("\\n")
  .filter((l) => l.includes("bpf-map")).length;
const libc = Deno.dlopen("libc.so.6", {
  getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  setrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  dup: { parameters: ["i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
});
const obj = BpfObject.openMem(UNLINK_BPF_O, "unlink");
obj.map("events").maxEntries = 64 * 1024 * 1024;
for (const p of obj.programs) p.autoload = p.name.startsWith("tp_");
obj.load();
${body}
obj.close();
`;
  return runSnippet(script, v8Flags) as Promise<Record<string, unknown>>;
}

kernelTest("a reader dropped without close() releases its fds and mappings after GC", async () => {
  const got = await child(
    `
const before = [fds(), maps()];
(() => { new RingBuffer(obj.map("events")); })();
const open = [fds(), maps()];
// Finalizers run some time after a collection: give them up to 2 s on a busy machine.
for (let i = 0; i < 100 && (fds() > before[0] || maps() > before[1]); i++) {
  globalThis.gc();
  await new Promise((r) => setTimeout(r, 20));
}
console.log(JSON.stringify({ before, open, after: [fds(), maps()] }));
`,
    ["--v8-flags=--expose-gc"],
  );
  const [fds, maps] = got.before as number[];
  assert.deepEqual(got.open, [fds + 2, maps + 2], "a reader holds 2 fds and 2 mappings");
  assert.deepEqual(got.after, [fds, maps], "collected without close(): all released");
});

/** Runs `attempt` in the child with resource `which` lowered to `limit` (JS expression). */
function limited(which: number, limit: string): string {
  return `
const old = new BigUint64Array(2);
libc.symbols.getrlimit(${which}, old);
const before = [fds(), maps()];
const lowered = new BigUint64Array([BigInt(${limit}), old[1]]);
let error;
if (libc.symbols.setrlimit(${which}, lowered) !== 0) throw new Error("setrlimit failed");
try {
  new RingBuffer(obj.map("events"));
} catch (e) {
  error = { name: e.name, code: e.code, message: e.message };
} finally {
  libc.symbols.setrlimit(${which}, old);
}
console.log(JSON.stringify({ error, before, after: [fds(), maps()] }));
`;
}

kernelTest(
  "a failing data-pages mmap (RLIMIT_AS) reports ENOMEM and leaves nothing mapped",
  async () => {
    // Room for the consumer page, not for the 128 MiB data mapping.
    const vmSize =
      `Number(/VmSize:\\s+(\\d+)/.exec(Deno.readTextFileSync("/proc/self/status"))[1]) *
      1024 + 4 * 1024 * 1024`;
    const got = await child(limited(9, vmSize));
    const error = got.error as { name: string; code: string; message: string };
    assert.ok(error, "the constructor threw");
    assert.equal(error.name, "BpfError");
    assert.equal(error.code, "ENOMEM");
    assert.match(error.message, /^Cannot map the ring buffer's data pages/);
    assert.deepEqual(got.after, got.before, "the consumer page was unmapped again");
  },
);

kernelTest(
  "a failing epoll_create1 (RLIMIT_NOFILE) reports EMFILE and leaves nothing behind",
  async () => {
    // dup() takes the lowest free fd number: with the limit there, no new fd fits.
    const lowestFree = `(() => {
      const n = libc.symbols.dup(0);
      libc.symbols.close(n);
      return n;
    })()`;
    const got = await child(limited(7, lowestFree));
    const error = got.error as { name: string; code: string; message: string };
    assert.ok(error, "the constructor threw");
    assert.equal(error.code, "EMFILE");
    assert.match(error.message, /^Cannot create the ring buffer's epoll set/);
    assert.deepEqual(got.after, got.before, "both mappings were unmapped again");
  },
);

kernelTest("one RingBuffer waits on two rings and hands each record its ring's index", async () => {
  ensureTracefs();
  const dir = scratch(Array.from({ length: 10 }, (_, i) => `f${i}`));
  const child = await spawnUnlinker(Array.from({ length: 10 }, (_, i) => `unlinkat:${dir}/f${i}`));
  using obj = BpfObject.openMem(await compileFixture("two_rings"), "two_rings");
  obj.setConst("targ_tgid", child.pid);
  obj.load();
  using _link = obj.program("by_parity").attach();
  using reader = new RingBuffer([obj.map("even"), obj.map("odd")]);
  assert.deepEqual(reader.sizes, [4096, 8192]);
  await child.go();
  const got: [number, number][] = [];
  while (got.length < 10 && await reader.wait()) {
    reader.drain((bytes, offset, _length, ring) => {
      got.push([
        ring,
        Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(offset, true)),
      ]);
    });
  }
  Deno.removeSync(dir, { recursive: true });
  assert.deepEqual(got.map(([, seq]) => seq).sort((a, b) => a - b), [...Array(10).keys()]);
  for (const [ring, seq] of got) {
    assert.equal(ring, seq % 2, `record ${seq} came from ring ${ring}`);
  }
});
