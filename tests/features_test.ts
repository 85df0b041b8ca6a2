/**
 * lib/features.ts: libbpf's probes asked about real and made-up types, and
 * trial attaches that agree with what the tracer's own auto mode does.
 */

import assert from "node:assert/strict";
import { tryAttach } from "../lib/unlink/mod.ts";
import {
  ATTACH_METHODS,
  AttachError,
  hasHelper,
  hasMapType,
  hasProgramType,
  type MapType,
  type SkippedMethod,
  UnlinkTracer,
} from "../mod.ts";
import { AUTO_METHOD, bpfFds, kernelTest } from "./_helpers.ts";

kernelTest("a refused method is an attempt typed where it failed, with no reason parsed", () => {
  // What the doctor's trials say of fentry and kprobe, up to the first that works.
  const attempts: SkippedMethod[] = [];
  for (const method of ["fentry", "kprobe"] as const) {
    const p = tryAttach(method);
    if (p.ok) break;
    if (p.stage === "preflight") assert.fail(`the trial stopped before loading: ${p.reason}`);
    attempts.push({ method, stage: p.stage, ...p.code ? { code: p.code } : {}, reason: p.reason });
  }
  if (attempts.length < 2) {
    using tracer = UnlinkTracer.open({ rename: true, ringBufferSize: 4096 });
    assert.deepEqual(tracer.skipped, attempts);
    return;
  }
  // Neither works (the host): tracepoints cannot see renames, and say so without an errno.
  assert.throws(
    () => UnlinkTracer.open({ rename: true, ringBufferSize: 4096 }),
    (e: unknown) => {
      assert.ok(e instanceof AttachError);
      assert.deepEqual(e.attempts, [...attempts, {
        method: "tracepoint",
        stage: "attach",
        reason: "cannot see renames, which --rename asks for",
      }]);
      return true;
    },
  );
});

Deno.test("a made-up map type name is a TypeError that lists the known names", () => {
  assert.throws(
    () => hasMapType("no_such_map" as MapType),
    (e: unknown) =>
      e instanceof TypeError &&
      /Unknown map type "no_such_map": use one of hash,/.test(e.message) &&
      e.message.includes("ringbuf"),
  );
  assert.throws(() => hasMapType(-1), RangeError);
});

kernelTest("hasMapType finds ring buffers and hash maps on this kernel", () => {
  assert.equal(hasMapType("ringbuf"), true);
  assert.equal(hasMapType("hash"), true);
  assert.equal(hasMapType("array"), true);
});

kernelTest("hasMapType says a made-up map type number is absent", () => {
  assert.equal(hasMapType(4242), false);
});

kernelTest("hasProgramType finds tracepoint programs and not a made-up program type", () => {
  assert.equal(hasProgramType("tracepoint"), true);
  assert.equal(hasProgramType("raw_tracepoint"), true);
  assert.equal(hasProgramType(4242), false);
});

kernelTest('hasProgramType("tracing") agrees with whether fentry programs load', () => {
  const fentry = tryAttach("fentry");
  const loads = fentry.ok || fentry.stage === "attach";
  assert.equal(hasProgramType("tracing"), loads, JSON.stringify(fentry));
});

kernelTest("hasHelper knows bpf_ringbuf_reserve for kprobes and not a made-up helper", () => {
  assert.equal(hasHelper("kprobe", "ringbuf_reserve"), true);
  assert.equal(hasHelper("kprobe", 99_999), false);
});

kernelTest(
  "tryAttach loads, attaches and detaches each method, and auto mode picks the first that works",
  () => {
    const before = bpfFds().length;
    const probes = ATTACH_METHODS.map((m) => tryAttach(m));
    assert.equal(bpfFds().length, before, "a trial left BPF fds open");
    for (const p of probes) {
      assert.ok(p.ms >= 0);
      if (p.ok) continue;
      // A failure names where it stopped and the kernel's errno.
      assert.match(
        p.reason,
        /^(load refused|attach failed|rejected by the verifier) \(E[A-Z0-9]+\)$/,
      );
      assert.ok(p.stage === "load" || p.stage === "attach" || p.stage === "verifier");
      assert.ok(p.reason.includes(`(${p.code})`));
    }
    const first = probes.find((p) => p.ok)?.method;
    assert.ok(first, `no method works: ${JSON.stringify(probes)}`);
    if (AUTO_METHOD) assert.equal(first, AUTO_METHOD);
    using tracer = UnlinkTracer.open({ mode: "auto", ringBufferSize: 4096 });
    assert.equal(tracer.method, first);
    assert.deepEqual(
      tracer.skipped,
      probes.slice(0, probes.findIndex((p) => p.ok))
        .map((p) =>
          p.ok ? {} : {
            method: p.method,
            stage: p.stage,
            ...p.code ? { code: p.code } : {},
            reason: p.reason,
          }
        ),
    );
  },
);
