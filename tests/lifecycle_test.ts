/**
 * A long-lived process that uses the library: repeated open and close, an
 * exception thrown from inside a `for await`, a verifier rejection, and the
 * library's side effects. Host only (tests/vm/guest.ts does not run it).
 */

import assert from "node:assert/strict";
import { UNLINK_BPF_O } from "../bpf/unlink_bpf.ts";
import {
  AttachError,
  BpfObject,
  releaseFreedMemory,
  type UnlinkEvent,
  UnlinkTracer,
  VerifierError,
} from "../mod.ts";
import {
  bpfFds,
  compileFixture,
  fdCount,
  kernelTest,
  ROOT,
  rssKiB,
  scratch,
  spawnUnlinker,
  TEST_MODE,
} from "./_helpers.ts";

function mappings(): number {
  return Deno.readTextFileSync("/proc/self/maps").split("\n").length;
}

kernelTest("opening and closing a tracer 100 times leaks no fd and no mapping", () => {
  // Warm up: libbpf's and V8's one-time allocations are not leaks.
  for (let i = 0; i < 5; i++) UnlinkTracer.open({ mode: TEST_MODE }).close();
  const fds = fdCount();
  const maps = mappings();
  for (let i = 0; i < 100; i++) UnlinkTracer.open({ mode: TEST_MODE }).close();
  assert.equal(fdCount(), fds, "the same fds as before");
  assert.deepEqual(bpfFds(), []);
  const grown = mappings() - maps;
  console.log(`mappings: ${maps} before, ${maps + grown} after 100 cycles`);
  assert.ok(grown <= 4, `mappings grew by ${grown} over 100 cycles`);
});

kernelTest("an exception thrown inside a library for-await loop still detaches", async () => {
  const dir = scratch(["x"]);
  const child = await spawnUnlinker([`unlink:${dir}/x`]);
  const seen: UnlinkEvent[] = [];
  const run = async () => {
    using tracer = UnlinkTracer.open({ mode: TEST_MODE, pid: child.pid });
    const done = child.go();
    for await (const e of tracer) {
      seen.push(e);
      throw new Error("user code failed");
    }
    await done;
  };
  await assert.rejects(run, /user code failed/);
  Deno.removeSync(dir, { recursive: true });
  assert.equal(seen.length, 1);
  assert.deepEqual(bpfFds(), [], "the tracer's links, programs and maps are gone");
});

kernelTest(
  "a verifier rejection is a VerifierError that shows and keeps the verifier's log",
  async () => {
    using bad = BpfObject.openMem(await compileFixture("rejected"), "rejected");
    assert.throws(() => bad.load(), (e: unknown) => {
      assert.ok(e instanceof VerifierError, String(e));
      assert.equal(e.program, "out_of_bounds");
      assert.match(
        e.message,
        /^The BPF verifier rejected program "out_of_bounds" while trying to load/,
      );
      assert.match(e.message, /invalid access to map value/);
      assert.match(e.message, /the whole verifier log is in error\.log$/);
      assert.doesNotMatch(e.message, /root|sudo/);
      assert.equal(e.message.split("\n").length, 1);
      assert.match(e.log, /-- BEGIN PROG LOAD LOG --/);
      return true;
    });
  },
);

kernelTest("errors carry the kernel's own errno, read at the failing call", () => {
  assert.throws(
    () => BpfObject.openFile("/nonexistent/x.bpf.o"),
    /^BpfError: Cannot open BPF object "\/nonexistent\/x\.bpf\.o": ENOENT/,
  );
  if (TEST_MODE !== "auto") return;
  try {
    UnlinkTracer.open().close();
  } catch { /* the test below checks the reasons */ }
  using tracer = UnlinkTracer.open();
  for (const s of tracer.skipped) assert.doesNotMatch(s.reason, /EUNKNOWN|E0\b/);
});

kernelTest(
  "with mountTracefs: false and no tracefs, the tracepoint method says so and mounts nothing",
  async () => {
    const script = `
import { AttachError, UnlinkTracer } from "${ROOT}mod.ts";
try {
  UnlinkTracer.open({ mode: "tracepoint", mountTracefs: false }).close();
  console.log("opened");
} catch (e) {
  console.log(e instanceof AttachError ? e.message : "other: " + e);
}
const events = (() => { try { Deno.statSync("/sys/kernel/tracing/events"); return "mounted"; } catch { return "absent"; } })();
console.log(events);
`;
    const file = Deno.makeTempFileSync({ suffix: ".ts" });
    Deno.writeTextFileSync(file, script);
    // A private mount namespace without any tracefs: the host's stays as it is.
    const hide =
      "umount -l /sys/kernel/tracing 2>/dev/null; umount -l /sys/kernel/debug 2>/dev/null; " +
      `exec "${Deno.execPath()}" run -A --no-check ${file}`;
    const out = await new Deno.Command("unshare", { args: ["-m", "sh", "-c", hide] }).output();
    Deno.removeSync(file);
    const [message, events] = new TextDecoder().decode(out.stdout).trim().split("\n");
    assert.equal(
      message,
      "Cannot trace with tracepoint: tracefs is not mounted (ENOENT); try --mode auto, or --verbose for libbpf's log",
    );
    assert.equal(events, "absent", "no tracefs was mounted behind the caller's back");
    assert.ok(AttachError);
  },
);

kernelTest(
  "a ring-buffer setup failure is thrown as itself, not taken as a reason to try the next method",
  async () => {
    // Leave the tracer every fd it needs but the last, which the ring buffer's
    // epoll set takes: a real EMFILE from the kernel, after a real attach.
    const script = `
import { AttachError, BpfError, UnlinkTracer } from "${ROOT}mod.ts";
const count = () => [...Deno.readDirSync("/proc/self/fd")].length;
const probe = UnlinkTracer.open({ mode: "${TEST_MODE}", ringBufferSize: 4096 });
const open = count();
probe.close();
const held = open - count(); // what the tracer itself holds
const files = [];
try { for (;;) files.push(Deno.openSync("/dev/null")); } catch { /* EMFILE: the table is full */ }
for (let i = 0; i < held - 1; i++) files.pop().close();
try {
  UnlinkTracer.open({ mode: "${TEST_MODE}", ringBufferSize: 4096 }).close();
  console.log("opened");
} catch (e) {
  console.log(JSON.stringify({ attach: e instanceof AttachError, bpf: e instanceof BpfError, code: e.code, message: e.message }));
}
`;
    const file = Deno.makeTempFileSync({ suffix: ".ts" });
    Deno.writeTextFileSync(file, script);
    const out = await new Deno.Command("prlimit", {
      args: ["--nofile=256:256", Deno.execPath(), "run", "-A", "--no-check", file],
      stdout: "piped",
      stderr: "piped",
    }).output();
    Deno.removeSync(file);
    const text = new TextDecoder().decode(out.stdout).trim();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    const result = JSON.parse(text);
    assert.equal(result.attach, false, result.message);
    assert.equal(result.bpf, true, result.message);
    assert.equal(result.code, "EMFILE");
    assert.match(result.message, /ring buffer/);
  },
);

kernelTest(
  "loading and closing an object leaves the process heap alone; releaseFreedMemory trims it",
  () => {
    const libc = Deno.dlopen("libc.so.6", {
      malloc: { parameters: ["usize"], result: "pointer" },
      free: { parameters: ["pointer"], result: "void" },
      memset: { parameters: ["pointer", "i32", "usize"], result: "pointer" },
    });
    try {
      // 40 MiB of small blocks, touched, then freed under a block kept at the
      // top of the heap: glibc keeps them resident until someone trims.
      const blocks = Array.from({ length: 40 * 1024 }, () => {
        const p = libc.symbols.malloc(1024n)!;
        libc.symbols.memset(p, 1, 1024n);
        return p;
      });
      const top = libc.symbols.malloc(1024n);
      for (const p of blocks) libc.symbols.free(p);
      const before = rssKiB();
      using obj = BpfObject.openMem(UNLINK_BPF_O, "unlink");
      for (const p of obj.programs) p.autoload = p.name === "tp_enter_unlinkat";
      obj.load();
      obj.close();
      const afterLoad = rssKiB();
      releaseFreedMemory();
      const afterTrim = rssKiB();
      libc.symbols.free(top);
      console.log(
        `RSS KiB: ${before} with freed heap, ${afterLoad} after load+close, ${afterTrim} after releaseFreedMemory`,
      );
      assert.ok(afterLoad > before - 20 * 1024, "load and close did not trim the heap");
      assert.ok(afterTrim < afterLoad - 20 * 1024, "releaseFreedMemory did");
    } finally {
      libc.close();
    }
  },
);
