/**
 * The unlink tracer on the real kernel: real object, real attach, real
 * unlinks by a child with a known pid, exact fields.
 */

import assert from "node:assert/strict";
import {
  ATTACH_METHODS,
  AttachError,
  type UnlinkEvent,
  UnlinkTracer,
  type UnlinkTracerOptions,
} from "../mod.ts";
import {
  AUTO_METHOD,
  bpfFds,
  EXPECTED_METHOD,
  fdCount,
  kernelTest,
  scratch,
  spawnBurst,
  spawnUnlinker,
  TEST_MODE,
  type Unlinker,
} from "./_helpers.ts";

/**
 * Opens a tracer on the files under `dir` only, lets `child` run, and collects
 * every event until the child is done and the ring has been quiet for a moment.
 * The child is a Deno: its runtime deletes cache files of its own (SQLite
 * journals of DENO_DIR under a cold cache) from any of its threads, main or
 * not, so neither its pid nor its comm nor its tid alone says which unlinks
 * are the test's; the scratch dir does.
 */
async function traceChild(
  options: UnlinkTracerOptions,
  child: Unlinker,
  dir: string,
): Promise<{ events: UnlinkEvent[]; tracer: UnlinkTracer }> {
  const tracer = UnlinkTracer.open({ mode: TEST_MODE, ...options, paths: [dir] });
  const events: UnlinkEvent[] = [];
  const reading = (async () => {
    for await (const e of tracer) events.push(e);
  })();
  await child.go();
  await new Promise((r) => setTimeout(r, 300));
  tracer.stop();
  await reading;
  return { events, tracer };
}

function expected(pid: number, filename: string, ret: number) {
  return { tgid: pid, tid: pid, uid: 0, comm: "dbpf_unlinker", filename, ret };
}

function essentials(e: UnlinkEvent) {
  const { tgid, tid, uid, comm, filename, ret } = e;
  return { tgid, tid, uid, comm, filename, ret };
}

kernelTest(
  "UnlinkTracer reports each unlink(2) and unlinkat(2) with exact pid, comm, filename and result",
  async () => {
    const dir = scratch(["a", "b", "d/"]);
    const child = await spawnUnlinker([
      `unlink:${dir}/a`,
      `unlinkat:${dir}/b`,
      `unlink:${dir}/missing`,
      `rmdir:${dir}/d`,
    ]);
    const { events, tracer } = await traceChild({ pid: child.pid }, child, dir);
    try {
      assert.deepEqual(events.map(essentials), [
        expected(child.pid, `${dir}/a`, 0),
        expected(child.pid, `${dir}/b`, 0),
        expected(child.pid, `${dir}/missing`, -2),
      ]); // and nothing for rmdir
      for (const e of events) {
        assert.ok(e.latency_ns > 0, `latency ${e.latency_ns}`);
        assert.ok(e.ts_ns > 0);
      }
      assert.equal(tracer.lost, 0);
      if (EXPECTED_METHOD) assert.equal(tracer.method, EXPECTED_METHOD);
    } finally {
      tracer.close();
      Deno.removeSync(dir, { recursive: true });
    }
  },
);

kernelTest(
  "auto mode picks the first method that works when forced, and says why it skipped the others",
  () => {
    const works = ATTACH_METHODS.filter((mode) => {
      try {
        UnlinkTracer.open({ mode }).close();
        return true;
      } catch (error) {
        assert.ok(error instanceof AttachError, String(error));
        assert.match(error.message, new RegExp(`^Cannot trace with ${mode}: `));
        return false;
      }
    });
    using tracer = UnlinkTracer.open();
    assert.equal(tracer.method, works[0]);
    const skipped = tracer.skipped;
    assert.deepEqual(skipped.map((s) => s.method), ATTACH_METHODS.slice(0, skipped.length));
    for (const s of skipped) {
      assert.match(s.reason, /^(load refused|attach failed) \(E[A-Z0-9]+\)$/);
    }
    if (AUTO_METHOD) assert.equal(tracer.method, AUTO_METHOD);
  },
);

kernelTest("the pid filter keeps only that process's unlinks", async () => {
  const dir = scratch(["mine", "other"]);
  const other = await spawnUnlinker([`unlink:${dir}/other`]);
  const mine = await spawnUnlinker([`unlink:${dir}/mine`]);
  const otherDone = other.go();
  const { events, tracer } = await traceChild({ pid: mine.pid }, mine, dir);
  tracer.close();
  await otherDone;
  assert.deepEqual(events.map(essentials), [expected(mine.pid, `${dir}/mine`, 0)]);
  Deno.removeSync(dir, { recursive: true });
});

kernelTest("the failed-only filter keeps only failed unlinks", async () => {
  const dir = scratch(["ok"]);
  const child = await spawnUnlinker([`unlink:${dir}/ok`, `unlinkat:${dir}/nope`]);
  const { events, tracer } = await traceChild({ pid: child.pid, failedOnly: true }, child, dir);
  tracer.close();
  assert.deepEqual(events.map(essentials), [expected(child.pid, `${dir}/nope`, -2)]);
  Deno.removeSync(dir, { recursive: true });
});

kernelTest("the comm and uid filters match exactly", async () => {
  const dir = scratch(["x", "y"]);
  const byComm = await spawnUnlinker([`unlink:${dir}/x`]);
  const got = await traceChild({ comm: "dbpf_unlinker" }, byComm, dir);
  got.tracer.close();
  assert.deepEqual(got.events.map(essentials), [expected(byComm.pid, `${dir}/x`, 0)]);

  const byUid = await spawnUnlinker([`unlink:${dir}/y`]);
  const none = await traceChild({ pid: byUid.pid, uid: 4242 }, byUid, dir);
  none.tracer.close();
  assert.deepEqual(none.events, []);
  Deno.removeSync(dir, { recursive: true });
});

kernelTest(
  "a tiny ring buffer counts every event it drops: delivered + lost == unlinks done",
  async () => {
    const n = 3000;
    const { dir, child } = await spawnBurst(n);
    const { events, tracer } = await traceChild(
      { pid: child.pid, ringBufferSize: 4096 },
      child,
      dir,
    );
    const lost = tracer.lost;
    tracer.close();
    Deno.removeSync(dir, { recursive: true });
    assert.equal(events.length + lost, n, `${events.length} delivered + ${lost} lost`);
    assert.ok(lost > 0, "a 4 KiB ring should overflow on a burst of 3000");
    const seen = new Set(events.map((e) => e.filename));
    assert.equal(seen.size, events.length, "no event delivered twice");
  },
);

kernelTest("close() detaches and leaves no BPF fd and no extra fd behind", async () => {
  const before = fdCount();
  const tracer = UnlinkTracer.open({ mode: TEST_MODE });
  assert.ok(bpfFds().length > 0, "an open tracer holds BPF fds");
  const reading = (async () => {
    for await (const _ of tracer);
  })();
  await new Promise((r) => setTimeout(r, 50));
  tracer.close(); // while a wait is pending
  await reading;
  tracer.close(); // idempotent
  assert.deepEqual(bpfFds(), []);
  assert.equal(fdCount(), before);
});

kernelTest("a stopped tracer still delivers what was in the ring", async () => {
  const dir = scratch(["late"]);
  const child = await spawnUnlinker([`unlink:${dir}/late`]);
  using tracer = UnlinkTracer.open({ mode: TEST_MODE, pid: child.pid, paths: [dir] });
  await child.go();
  tracer.stop(); // before anyone read: the event is only in the ring
  const events: UnlinkEvent[] = [];
  for await (const e of tracer) events.push(e);
  assert.deepEqual(events.map(essentials), [expected(child.pid, `${dir}/late`, 0)]);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("UnlinkTracer.open rejects bad options before touching the kernel", () => {
  assert.throws(() => UnlinkTracer.open({ ringBufferSize: 5000 }), RangeError);
  assert.throws(() => UnlinkTracer.open({ ringBufferSize: 2048 }), RangeError);
  assert.throws(() => UnlinkTracer.open({ pid: -1 }), RangeError);
  assert.throws(() => UnlinkTracer.open({ comm: "a_name_that_is_too_long" }), RangeError);
  // @ts-expect-error: not a mode
  assert.throws(() => UnlinkTracer.open({ mode: "uprobe" }), TypeError);
});
