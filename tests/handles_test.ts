/**
 * Every native handle, used after close, throws a TypeError: never a crash.
 * Objects, programs, maps and BTF views need no privileges (open, not load);
 * links and tracers need the kernel.
 */

import assert from "node:assert/strict";
import { UNLINK_BPF_O } from "../bpf/unlink_bpf.ts";
import { BpfObject, UnlinkTracer } from "../mod.ts";
import { kernelTest, TEST_MODE } from "./_helpers.ts";

const closed = /is closed/;

Deno.test("BpfObject, Program, BpfMap and Btf throw a TypeError once the object is closed", () => {
  const obj = BpfObject.openMem(UNLINK_BPF_O, "unlink");
  const prog = obj.program("tp_enter_unlinkat");
  const map = obj.map("events");
  const btf = obj.btf;
  obj.close();
  obj.close(); // idempotent
  for (
    const use of [
      () => obj.programs,
      () => obj.maps,
      () => obj.btf,
      () => obj.load(),
      () => obj.setConst("targ_tgid", 1),
      () => prog.name,
      () => prog.section,
      () => (prog.autoload = false),
      () => prog.attach(),
      () => map.name,
      () => map.fd,
      () => map.maxEntries,
      () => map.lookup(new Uint8Array(4), new Uint8Array(8)),
      () => btf.struct("unlink_event"),
      () => btf.datasec(".rodata"),
    ]
  ) {
    assert.throws(use, (e: unknown) => e instanceof TypeError && closed.test(e.message));
  }
  assert.equal(prog.unsafeHandle, null);
  assert.equal(map.unsafeHandle, null);
});

kernelTest("a Link and an UnlinkTracer throw a TypeError once closed", () => {
  const tracer = UnlinkTracer.open({ mode: TEST_MODE, ringBufferSize: 4096 });
  tracer.close();
  tracer.close(); // idempotent
  assert.throws(() => tracer.lost, TypeError);
  assert.throws(() => tracer.drain(() => {}), TypeError);
  assert.throws(() => tracer.newlyLost(), TypeError);

  using obj = BpfObject.openMem(UNLINK_BPF_O, "unlink");
  for (const p of obj.programs) p.autoload = p.name === "tp_enter_unlinkat";
  obj.load();
  const link = obj.program("tp_enter_unlinkat").attach();
  assert.equal(link.attached, true);
  link.close();
  link.close(); // idempotent
  assert.equal(link.attached, false);
  assert.equal(link.unsafeHandle, null);
});
