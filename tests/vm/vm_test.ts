// Copyright the deno_bpf authors. MIT license.
/**
 * Boots each pinned Debian kernel (tests/vm/fetch.ts) once under qemu and runs
 * tests/vm/guest.ts inside, two guests at a time (each emulates on one host
 * thread; the CI machine has two cores). Their output is prefixed with the
 * kernel's name. `DENO_BPF_VM_KERNELS=6.1,arm64-5.10` picks a subset.
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
import { runInVm, type RunResult } from "./qemu.ts";

const IN_CI = Deno.env.get("CI") === "true";
/**
 * The longest a guest suite may take. The 5.10 guest is the slowest: its
 * three passes (auto, kprobe, tracepoint) took 27.6 minutes in one CI run
 * and more than 30 in the next (15.5 and 8.2 minutes for the first two),
 * sharing the machine with the host tests at first.
 */
const GUEST_TIMEOUT_MS = 40 * 60_000;
/** How many guests run at once: one per core of a 2-core CI machine. */
const PARALLEL = 2;

let running = 0;
const queue: (() => void)[] = [];

/** Runs `fn` when one of the {@linkcode PARALLEL} slots is free. */
async function inSlot<T>(fn: () => Promise<T>): Promise<T> {
  if (running >= PARALLEL) await new Promise<void>((resolve) => queue.push(resolve));
  running++;
  try {
    return await fn();
  } finally {
    running--;
    queue.shift()?.();
  }
}

/** Writes guest output line by line, each line prefixed with its kernel. */
function prefixed(kernel: string): (text: string) => void {
  let partial = "";
  const encoder = new TextEncoder();
  return (text) => {
    const lines = (partial + text).split("\n");
    partial = lines.pop()!;
    for (const line of lines) Deno.stdout.writeSync(encoder.encode(`[${kernel}] ${line}\n`));
  };
}

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

/** Downloads and caches run one at a time (apt-get locks its lists). */
let preparing: Promise<unknown> = Promise.resolve();

/**
 * One guest suite from boot to verdict: it throws on a failure, and returns
 * why it did not run if the kernel could not be had outside CI.
 */
async function guestSuite(kernel: string): Promise<string | undefined> {
  const prepared = preparing.then(() => prepareKernel(kernel));
  preparing = prepared.catch(() => {});
  try {
    await prepared;
  } catch (error) {
    if (IN_CI) throw error;
    return `kernel ${kernel} could not be downloaded: ${(error as Error).message}`;
  }
  const command = ["deno", "run", "-A", "--no-check", "tests/vm/guest.ts"];
  const out = prefixed(kernel);
  out(`--- guest output: ${command.join(" ")} ---\n`);
  // No retry on a kernel panic: 0 panics in the repeated suite runs on 5.10
  // and 6.12 since qemu emulates both vCPUs on one thread (see the README's
  // Reliability section), so a panic now is a verdict.
  const result: RunResult = await inSlot(() =>
    runInVm(kernel, command, {
      timeoutMs: GUEST_TIMEOUT_MS,
      env: { DENO_BPF_VM_AUTO: KERNELS[kernel].auto },
      onOutput: out,
    })
  );
  const s = (ms: number) => (ms / 1000).toFixed(1);
  out(
    `--- end of guest output (${result.release}): exit ${result.code}, boot ${
      s(result.bootMs)
    } s, total ${s(result.totalMs)} s ---\n`,
  );
  assert.equal(result.code, 0, `the guest suite failed under ${result.release} (output above)`);
  return undefined;
}

const kernels = names.filter((name) => !unknown.includes(name));
const reasons = new Map<string, string | undefined>();
for (const kernel of kernels) reasons.set(kernel, await missing(kernel));
// Start every guest at once (two run at a time): each test awaits its own.
const suites = new Map(
  kernels.filter((kernel) => !reasons.get(kernel)).map((kernel) => {
    const done = guestSuite(kernel);
    done.catch(() => {}); // reported by its test, not as an unhandled rejection
    return [kernel, done];
  }),
);

for (const kernel of kernels) {
  const why = reasons.get(kernel);
  if (why && !IN_CI) console.log(`vm_test: ignoring the ${kernel} VM: ${why}`);
  Deno.test({
    name: `The guest suite passes under Debian's ${kernel} kernel in qemu`,
    ignore: why !== undefined && !IN_CI,
    async fn(t) {
      if (why) throw new Error(`Cannot run the VM tests: ${why} (with CI=true this is a failure)`);
      const skipped = await suites.get(kernel);
      if (skipped) {
        console.log(`vm_test: ignoring: ${skipped}`);
        await t.step({ name: `guest suite (ignored: ${skipped})`, ignore: true, fn() {} });
      }
    },
  });
}
