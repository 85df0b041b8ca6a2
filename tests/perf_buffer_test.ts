/**
 * PerfBuffer against the kernel: tests/fixtures/perf_sample.bpf.c, compiled
 * here with clang, sends one record per unlinkat(2) made by a child of this
 * process through a perf event array, and the children unlink known files.
 */

import assert from "node:assert/strict";
import { BpfObject, defineLayout, ensureTracefs, type Link, type RecordOf } from "../mod.ts";
import { PerfBuffer } from "../lib/perf_buffer.ts";
import {
  compileFixture,
  fdCount,
  kernelTest,
  ROOT,
  runSnippet,
  scratch,
  spawnUnlinker,
} from "./_helpers.ts";

const perfSample = defineLayout("perf_sample", 64, {
  seq: ["u64", 0],
  tgid: ["u32", 8],
  cpu: ["u32", 12],
  name: ["char[48]", 16],
});
type PerfSample = RecordOf<typeof perfSample>;

/** The fixture's object bytes, compiled once per run. */
const fixtureBytes = () => compileFixture("perf_sample");

interface Fixture extends Disposable {
  obj: BpfObject;
  link: Link;
}

/** The fixture loaded and attached, tracing this process's children. */
async function attachFixture(): Promise<Fixture> {
  const obj = BpfObject.openMem(await fixtureBytes(), "perf_sample");
  try {
    obj.setConst("targ_ppid", Deno.pid);
    obj.load();
    ensureTracefs();
    const link = obj.program("perf_unlinkat").attach();
    return {
      obj,
      link,
      [Symbol.dispose]() {
        link.close();
        obj.close();
      },
    };
  } catch (error) {
    obj.close();
    throw error;
  }
}

/** `n` fresh files and the unlinkat(2) operations that delete them. */
function files(n: number): { dir: string; paths: string[]; ops: string[] } {
  const names = Array.from({ length: n }, (_, i) => `f${i}`);
  const dir = scratch(names);
  const paths = names.map((f) => `${dir}/${f}`);
  return { dir, paths, ops: paths.map((p) => `unlinkat:${p}`) };
}

/** What the reader saw of one sample: the record, its CPU and its raw length. */
interface Seen extends PerfSample {
  from: number;
  length: number;
}

function collect(perf: PerfBuffer, into: Seen[]): number {
  return perf.drain((bytes, offset, length, cpu) => {
    into.push({ ...perfSample.decode(bytes, offset), from: cpu, length });
  });
}

function perfEventFds(): number {
  let n = 0;
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    try {
      if (Deno.readLinkSync(`/proc/self/fd/${entry.name}`).includes("perf_event")) n++;
    } catch { /* closed meanwhile */ }
  }
  return n;
}

/** This process's mappings of perf events (the rings). */
function perfMappings(): number {
  return Deno.readTextFileSync("/proc/self/maps").split("\n")
    .filter((line) => line.endsWith("anon_inode:[perf_event]")).length;
}

/** The records for `paths`, in the order the program sent them. */
function ofPaths(seen: Seen[], paths: string[]): Seen[] {
  const wanted = new Set(paths.map((p) => p.slice(0, 47)));
  return seen.filter((s) => wanted.has(s.name)).sort((a, b) => a.seq - b.seq);
}

kernelTest(
  "PerfBuffer delivers every record once, in order, with its CPU and exact fields",
  async () => {
    using fixture = await attachFixture();
    using perf = new PerfBuffer(fixture.obj.map("events"));
    const n = 300;
    const { dir, paths, ops } = files(n);
    const child = await spawnUnlinker(ops);
    const seen: Seen[] = [];
    const done = child.go();
    const deadline = Date.now() + 10_000;
    while (ofPaths(seen, paths).length < n && Date.now() < deadline) {
      await perf.wait(200);
      collect(perf, seen);
    }
    const results = await done;
    Deno.removeSync(dir, { recursive: true });
    assert.deepEqual(results.map((r) => r.ret), paths.map(() => 0));
    const ours = ofPaths(seen, paths);
    assert.equal(ours.length, n, `${ours.length} of ${n} records arrived`);
    for (let i = 0; i < n; i++) {
      const s = ours[i];
      assert.equal(s.name, paths[i].slice(0, 47), `record ${i} names the ${i}th file`);
      assert.equal(s.seq, ours[0].seq + i, "sent one after another");
      assert.equal(s.tgid, child.pid);
      assert.equal(s.from, s.cpu, "the reader's CPU is the sender's");
      assert.ok(perf.cpus.includes(s.cpu));
      assert.equal(s.length, 68, "64 bytes sent, padded to keep the record aligned");
    }
    assert.equal(perf.lost, 0);
  },
);

kernelTest("PerfBuffer.records yields decoded records until stop, then ends", async () => {
  using fixture = await attachFixture();
  using perf = new PerfBuffer(fixture.obj.map("events"), { wakeupEvents: 16 });
  const n = 100;
  const { dir, paths, ops } = files(n);
  const child = await spawnUnlinker(ops);
  const done = child.go();
  const timer = setTimeout(() => perf.stop(), 10_000);
  const wanted = new Set(paths);
  const got: PerfSample[] = [];
  for await (const record of perf.records(perfSample)) {
    if (!wanted.has(record.name)) continue;
    got.push(record);
    if (got.length === n) perf.stop();
  }
  clearTimeout(timer);
  await done;
  Deno.removeSync(dir, { recursive: true });
  // Order holds within a CPU only: a child that moved between CPUs interleaves.
  got.sort((a, b) => Number(a.seq - b.seq));
  assert.deepEqual(got.map((r) => r.name), paths, "every record, with a tail below wakeupEvents");
  assert.ok(got.every((r) => r.tgid === child.pid));
});

kernelTest(
  "a burst into one-page rings loses samples, and delivered plus lost is exactly what was sent",
  async () => {
    using fixture = await attachFixture();
    using perf = new PerfBuffer(fixture.obj.map("events"), { pageCount: 1 });
    const n = 1000;
    const { dir, paths, ops } = files(n);
    const child = await spawnUnlinker(ops);
    // Read nothing during the burst: each CPU's ring (51 records) fills and drops.
    const results = await child.go();
    assert.ok(results.every((r) => r.ret === 0));
    const seen: Seen[] = [];
    collect(perf, seen);
    // The kernel reports a CPU's losses with its next sample that fits: send
    // one from every CPU, now that there is room.
    const flush = perf.cpus.map((cpu) => `${dir}/flush${cpu}`);
    for (const [i, cpu] of perf.cpus.entries()) {
      Deno.writeTextFileSync(flush[i], "");
      const rm = await new Deno.Command("taskset", { args: ["-c", `${cpu}`, "rm", flush[i]] })
        .output();
      assert.ok(rm.success, new TextDecoder().decode(rm.stderr));
    }
    const deadline = Date.now() + 5000;
    while (ofPaths(seen, flush).length < flush.length && Date.now() < deadline) {
      await perf.wait(200);
      collect(perf, seen);
    }
    Deno.removeSync(dir, { recursive: true });
    assert.deepEqual(
      ofPaths(seen, flush).map((s) => [s.from, s.cpu]),
      perf.cpus.map((cpu) => [cpu, cpu]),
      "every flush record arrived, from the CPU it was pinned to",
    );
    const delivered = ofPaths(seen, paths).length;
    console.log(`${delivered} delivered + ${perf.lost} lost of ${n}`);
    assert.ok(perf.lost > 0, "a 1000-record burst overflows 4 KiB rings");
    assert.equal(delivered + perf.lost, n);
  },
);

kernelTest(
  "closing a PerfBuffer releases every fd and mapping, at once and idempotently",
  async () => {
    using fixture = await attachFixture();
    const fds = fdCount();
    const events = perfEventFds(); // the tracepoint link is a perf event too
    const perf = new PerfBuffer(fixture.obj.map("events"));
    assert.equal(perfEventFds(), events + perf.cpus.length);
    assert.equal(fdCount(), fds + perf.cpus.length + 2, "a perf event per CPU, epoll and eventfd");
    assert.equal(perfMappings(), perf.cpus.length, "a ring per CPU");
    perf.close();
    perf.close();
    assert.equal(fdCount(), fds);
    assert.equal(perfEventFds(), events);
    assert.equal(perfMappings(), 0);
    await assert.rejects(() => perf.wait(), { name: "TypeError", message: "PerfBuffer is closed" });
    assert.equal(perf.lost, 0, "the lost count stays readable");
  },
);

kernelTest(
  "close() inside a PerfBuffer handler ends the drain and unmaps the rings on return",
  async () => {
    using fixture = await attachFixture();
    const perf = new PerfBuffer(fixture.obj.map("events"));
    const { dir, ops } = files(3);
    const child = await spawnUnlinker(ops);
    await child.go(); // the samples are in the rings once the unlinks returned
    Deno.removeSync(dir, { recursive: true });
    let seen = 0;
    const n = perf.drain(() => {
      seen++;
      perf.close();
      assert.equal(perfMappings(), perf.cpus.length, "still mapped while the handler runs");
    });
    assert.equal(n, 1);
    assert.equal(seen, 1, "no sample after the close");
    assert.equal(perfMappings(), 0, "unmapped once drain returned");
    assert.throws(() => perf.drain(() => {}), TypeError);
  },
);

kernelTest("using a closed PerfBuffer is a TypeError", async () => {
  using fixture = await attachFixture();
  const perf = new PerfBuffer(fixture.obj.map("events"));
  perf.close();
  assert.throws(() => perf.drain(() => {}), { name: "TypeError", message: "PerfBuffer is closed" });
  assert.throws(() => perf.pending, TypeError);
  assert.throws(() => perf.records(perfSample), {
    name: "TypeError",
    message: "PerfBuffer is closed",
  });
  perf.stop();
  perf.close();
  assert.deepEqual(perf.cpus.length > 0, true, "the CPUs stay readable");
});

kernelTest("a view of a perf ring kept past close reads as empty instead of crashing", async () => {
  using fixture = await attachFixture();
  const perf = new PerfBuffer(fixture.obj.map("events"));
  const { dir, ops } = files(1);
  const child = await spawnUnlinker(ops);
  await child.go();
  Deno.removeSync(dir, { recursive: true });
  let kept: Uint8Array | undefined;
  assert.ok(perf.drain((bytes) => kept = bytes) >= 1, "the child's unlink was sampled");
  assert.ok(kept!.length > 0);
  perf.close();
  assert.equal(kept!.length, 0, "the view is detached from the unmapped memory");
});

kernelTest("stop and close end a pending PerfBuffer wait at once", async () => {
  using fixture = await attachFixture();
  const fds = fdCount();
  using perf = new PerfBuffer(fixture.obj.map("events"));
  const started = Date.now();
  const waiting = perf.wait();
  perf.stop();
  assert.equal(await waiting, false);
  assert.equal(await perf.wait(), false, "and every later wait");
  const again = new PerfBuffer(fixture.obj.map("events"));
  const pending = again.wait();
  again.close();
  assert.equal(await pending, false);
  assert.ok(Date.now() - started < 1000);
  perf.close();
  assert.equal(fdCount(), fds, "the closed-while-waiting reader released its fds too");
});

kernelTest("a PerfBuffer refuses a map that is not a perf event array", async () => {
  using fixture = await attachFixture();
  const fds = fdCount();
  assert.throws(() => new PerfBuffer(fixture.obj.map(".bss")), {
    name: "TypeError",
    message:
      /^Map ".*\.bss" is not a BPF_MAP_TYPE_PERF_EVENT_ARRAY; read a ring buffer with RingBuffer$/,
  });
  assert.throws(() => new PerfBuffer(fixture.obj.map("events"), { pageCount: 3 }), RangeError);
  assert.equal(fdCount(), fds);
});

kernelTest("a PerfBuffer dropped without close has its fds and mappings freed", async () => {
  // A child with gc() exposed: nothing but the finalizer may free the reader.
  const script = `
import { BpfObject } from "${ROOT}mod.ts";
import { PerfBuffer } from "${ROOT}lib/perf_buffer.ts";
const obj = BpfObject.openMem(Deno.readFileSync(Deno.args[0]));
obj.load();
const fds = () => [...Deno.readDirSync("/proc/self/fd")].filter((e) => {
  try { return Deno.readLinkSync("/proc/self/fd/" + e.name).includes("perf_event"); }
  catch { return false; }
}).length;
const maps = () => Deno.readTextFileSync("/proc/self/maps").split("\\n")
  .filter((line) => line.endsWith("anon_inode:[perf_event]")).length;
(() => { new PerfBuffer(obj.map("events")); })();
const before = [fds(), maps()];
for (let i = 0; i < 20 && fds() + maps() > 0; i++) {
  (globalThis as unknown as { gc(): void }).gc();
  await new Promise((r) => setTimeout(r, 10));
}
console.log(JSON.stringify({ before, after: [fds(), maps()] }));
obj.close();
`;
  const object = Deno.makeTempFileSync({ suffix: ".bpf.o" });
  Deno.writeFileSync(object, await fixtureBytes());
  const { before, after } = await runSnippet(script, ["--v8-flags=--expose-gc"], [object])
    .finally(() => Deno.removeSync(object)) as { before: number[]; after: number[] };
  assert.ok(before[0] > 0 && before[0] === before[1], "the dropped reader had mapped its rings");
  assert.deepEqual(after, [0, 0]);
});
