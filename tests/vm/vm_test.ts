// Copyright the deno_bpf authors. MIT license.
/**
 * Boots each pinned Debian kernel (tests/vm/fetch.ts) once under qemu and runs
 * tests/vm/guest.ts inside. `DENO_BPF_VM_KERNELS=6.1,arm64-5.10` picks a subset.
 * Without root, qemu or busybox-static the tests are ignored with the reason
 * printed, and so is a kernel that cannot be downloaded; with `CI=true` each of
 * these fails instead.
 *
 * ```sh
 * deno test -A tests/vm/vm_test.ts
 * ```
 *
 * @module
 */

import assert from "node:assert/strict";
import { KERNELS, prepareKernel } from "./fetch.ts";
import { runInVm, type RunResult, VmError } from "./qemu.ts";

const IN_CI = Deno.env.get("CI") === "true";
const GUEST_TIMEOUT_MS = 30 * 60_000;

const names = (Deno.env.get("DENO_BPF_VM_KERNELS") ?? Object.keys(KERNELS).join(","))
  .split(",").map((name) => name.trim()).filter(Boolean);
const unknown = names.filter((name) => !Object.hasOwn(KERNELS, name));
if (unknown.length > 0) {
  Deno.test("DENO_BPF_VM_KERNELS names only known kernels", () => {
    assert.fail(`Unknown kernels ${unknown}; known: ${Object.keys(KERNELS)}`);
  });
}

const exists = (path: string) => Deno.stat(path).then(() => true, () => false);

/** Why this machine cannot boot `kernel`, if it cannot. */
async function missing(kernel: string): Promise<string | undefined> {
  if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") {
    return `the VM harness needs Linux on x86_64, not ${Deno.build.os} on ${Deno.build.arch}`;
  }
  if (Deno.uid() !== 0) return "not root: the VM shares the whole host root over 9p";
  const arm = KERNELS[kernel].arch === "arm64";
  const [qemu, pkg] = arm
    ? ["qemu-system-aarch64", "qemu-system-arm"]
    : ["qemu-system-x86_64", "qemu-system-x86"];
  if (!await exists(`/usr/bin/${qemu}`)) return `${qemu} is not installed (Debian's ${pkg})`;
  if (!arm && !await exists("/bin/busybox")) {
    return "/bin/busybox is not installed (Debian's busybox-static)";
  }
}

for (const kernel of names.filter((name) => !unknown.includes(name))) {
  const why = await missing(kernel);
  if (why && !IN_CI) console.log(`vm_test: ignoring the ${kernel} VM: ${why}`);
  Deno.test({
    name: `The guest suite passes under Debian's ${kernel} kernel in qemu`,
    ignore: why !== undefined && !IN_CI,
    async fn(t) {
      if (why) throw new Error(`Cannot run the VM tests: ${why} (with CI=true this is a failure)`);
      try {
        await prepareKernel(kernel);
      } catch (error) {
        if (IN_CI) throw error;
        console.log(`vm_test: ignoring kernel ${kernel}: ${(error as Error).message}`);
        await t.step({ name: `guest suite (ignored: no kernel ${kernel})`, ignore: true, fn() {} });
        return;
      }
      const command = ["deno", "run", "-A", "--no-check", "tests/vm/guest.ts"];
      const run = () => {
        console.log(`--- guest output (${kernel}): ${command.join(" ")} ---`);
        return runInVm(kernel, command, {
          timeoutMs: GUEST_TIMEOUT_MS,
          env: { DENO_BPF_VM_AUTO: KERNELS[kernel].auto },
          onOutput: (text) => Deno.stdout.writeSync(new TextEncoder().encode(text)),
        });
      };
      let result: RunResult;
      try {
        result = await run();
      } catch (error) {
        // Debian's 6.12 guest has once panicked in syscall_trace_enter under
        // qemu's emulation, in the middle of a passing run: a kernel crash, not
        // a test verdict. Boot once more and let that run decide; a second
        // panic, or any test failure, still fails.
        if (!(error instanceof VmError) || !error.console.includes("Kernel panic")) throw error;
        console.log(`--- the ${kernel} guest kernel panicked; its console:\n${error.message}`);
        console.log(`--- booting ${kernel} once more ---`);
        result = await run();
      }
      const s = (ms: number) => (ms / 1000).toFixed(1);
      console.log(
        `--- end of guest output (${result.release}): exit ${result.code}, boot ${
          s(result.bootMs)
        } s, total ${s(result.totalMs)} s ---`,
      );
      assert.equal(result.code, 0, `the guest suite failed under ${result.release} (output above)`);
    },
  });
}
