// Copyright the deno_bpf authors. MIT license.
/**
 * Boots each Debian kernel in {@linkcode KERNELS} once, under qemu, and runs
 * the guest suite inside it: `deno test -A --no-check --no-config tests/vm/guest/`.
 *
 * `DENO_BPF_VM_KERNELS=6.1,5.10` picks a subset. Without root, qemu or
 * busybox-static the tests are ignored with the reason printed, and so is a
 * kernel that cannot be downloaded; with `CI=true` each of these fails instead.
 *
 * ```sh
 * deno test -A tests/vm/vm_test.ts
 * ```
 *
 * @module
 */

import assert from "node:assert/strict";
import { delimiter, join } from "node:path";
import { type Kernel, KERNELS, prepareKernel, runInVm, VmError } from "./vm.ts";

const IN_CI = Deno.env.get("CI") === "true";
const GUEST_TIMEOUT_MS = 30 * 60_000;
// The guest suite: the kernel tests once per attach mode (tests/vm/guest.ts).
const GUEST_COMMAND = ["deno", "run", "-A", "--no-check", "tests/vm/guest.ts"];

/** The kernels named by `DENO_BPF_VM_KERNELS`, or all of them. */
function chosenKernels(): { kernels: Kernel[]; unknown: string[] } {
  const names = (Deno.env.get("DENO_BPF_VM_KERNELS") ?? "")
    .split(",").map((name) => name.trim()).filter(Boolean);
  if (names.length === 0) return { kernels: [...KERNELS], unknown: [] };
  const known = KERNELS as readonly string[];
  return {
    kernels: KERNELS.filter((kernel) => names.includes(kernel)),
    unknown: names.filter((name) => !known.includes(name)),
  };
}

function onPath(program: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(delimiter)) {
    try {
      if (Deno.statSync(join(dir, program)).isFile) return true;
    } catch {
      // Not in this folder.
    }
  }
  return false;
}

/** Why this machine cannot boot the VMs, if it cannot. */
function missingPrerequisite(): string | undefined {
  if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") {
    return `the VM harness needs Linux on x86_64, not ${Deno.build.os} on ${Deno.build.arch}`;
  }
  if (Deno.uid() !== 0) {
    return "not root: the VM shares the whole host root over 9p and must read all of it";
  }
  if (!onPath("qemu-system-x86_64")) {
    return "qemu-system-x86_64 is not installed (Debian package qemu-system-x86)";
  }
  try {
    Deno.statSync("/bin/busybox");
  } catch {
    return "/bin/busybox is not installed (Debian package busybox-static)";
  }
  return undefined;
}

const { kernels, unknown } = chosenKernels();
const missing = missingPrerequisite();
const encoder = new TextEncoder();

if (unknown.length > 0) {
  Deno.test("DENO_BPF_VM_KERNELS names only known kernels", () => {
    assert.fail(
      `DENO_BPF_VM_KERNELS names unknown kernels: ${unknown.join(", ")}; known: ${
        KERNELS.join(", ")
      }`,
    );
  });
}

if (missing && !IN_CI) {
  console.log(`vm_test: ignoring the VM tests: ${missing}`);
}

for (const kernel of kernels) {
  Deno.test({
    name: `The guest suite passes under Debian's ${kernel} kernel in qemu`,
    ignore: missing !== undefined && !IN_CI,
    async fn(t) {
      if (missing) {
        throw new Error(`Cannot run the VM tests: ${missing} (with CI=true this is a failure)`);
      }
      try {
        await prepareKernel(kernel);
      } catch (error) {
        if (IN_CI) throw error;
        const reason = error instanceof Error ? error.message : String(error);
        console.log(`vm_test: ignoring kernel ${kernel}: ${reason}`);
        await t.step({
          name: `guest suite (ignored: kernel ${kernel} could not be downloaded)`,
          ignore: true,
          fn() {},
        });
        return;
      }
      const run = () => {
        console.log(`--- guest output (${kernel}): ${GUEST_COMMAND.join(" ")} ---`);
        return runInVm(kernel, GUEST_COMMAND, {
          timeoutMs: GUEST_TIMEOUT_MS,
          onOutput: (text) => Deno.stdout.writeSync(encoder.encode(text)),
        });
      };
      let result;
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
      if (!result.output.endsWith("\n")) console.log();
      console.log(
        `--- end of guest output (${result.release}): exit ${result.code}, boot ${
          (result.bootMs / 1000).toFixed(1)
        } s, total ${(result.totalMs / 1000).toFixed(1)} s ---`,
      );
      assert.equal(
        result.code,
        0,
        `the guest suite failed under ${result.release} with exit status ${result.code} (its output is above)`,
      );
    },
  });
}
