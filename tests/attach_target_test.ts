/**
 * fentry/fexit programs with a target chosen at run time, before load. Where
 * the kernel has BPF trampolines (the VMs) they count a child's unlinks
 * exactly; where it refuses fentry (our hosts) the refusal carries the
 * kernel's errno.
 */

import assert from "node:assert/strict";
import { BpfError, BpfObject } from "../mod.ts";
import { AUTO_METHOD, compileFixture, kernelTest, scratch, spawnUnlinker } from "./_helpers.ts";

kernelTest("fentry and fexit take their target at run time, set before load", async () => {
  using obj = BpfObject.openMem(await compileFixture("fentry"), "fentry");
  const dir = scratch(["a", "b"]);
  const child = await spawnUnlinker([`unlink:${dir}/a`, `unlinkat:${dir}/b`]);
  obj.setConst("targ_tgid", child.pid);
  for (const name of ["on_entry", "on_exit"]) obj.program(name).setAttachTarget("do_unlinkat");
  try {
    obj.load();
  } catch (error) {
    await child.go();
    Deno.removeSync(dir, { recursive: true });
    // Only where the suite does not expect fentry may the kernel refuse it.
    assert.ok(AUTO_METHOD !== "fentry", `fentry must load here: ${error}`);
    assert.ok(error instanceof BpfError, String(error));
    assert.match(error.message, /^Cannot load BPF object .*: E[A-Z]+ /);
    console.log(`fentry refused here, as expected: ${error.code}`);
    return;
  }
  using _entry = obj.program("on_entry").attach();
  using _exit = obj.program("on_exit").attach();
  await child.go();
  Deno.removeSync(dir, { recursive: true });
  const bss = obj.map(".bss");
  const counters = new BigUint64Array(bss.lookup(new Uint8Array(4))!.buffer);
  assert.deepEqual([...counters], [2n, 2n], "two do_unlinkat entries and exits");
  assert.throws(() => obj.program("on_entry").setAttachTarget("do_rmdir"), /before load/);
});
