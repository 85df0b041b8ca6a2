/**
 * Maps and run-time attachment through the public API, on a real object
 * compiled by the test: tracepoints, raw tracepoints, uprobes and kprobes
 * chosen at run time; hash and per-CPU maps read, written, iterated and
 * cleared; maps and links pinned in bpffs.
 */

import assert from "node:assert/strict";
import {
  BpfError,
  BpfObject,
  defineLayout,
  ensureTracefs,
  Link,
  PinnedMap,
  possibleCpus,
} from "../mod.ts";
import { compileFixture, kernelTest, scratch, spawnUnlinker } from "./_helpers.ts";

const text = new TextDecoder();
const comm = (key: Uint8Array) => text.decode(key.subarray(0, key.indexOf(0)));
const u64 = (bytes: Uint8Array) =>
  new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true);
const key16 = (s: string) => {
  const key = new Uint8Array(16);
  key.set(new TextEncoder().encode(s));
  return key;
};

/** Loads the fixture with only `program` and the pid filter set. */
async function load(program: string, pid: number): Promise<BpfObject> {
  const obj = BpfObject.openMem(await compileFixture("maps"), "maps");
  obj.setConst("targ_tgid", pid);
  for (const p of obj.programs) p.autoload = p.name === program;
  obj.load();
  return obj;
}

/** Runs `ops` in a fresh unlinker child while `attach` holds a link on it. */
async function countWith(
  program: string,
  ops: (dir: string) => string[],
  attach: (obj: BpfObject) => Link,
) {
  const dir = scratch(["a", "b", "c"]);
  const child = await spawnUnlinker(ops(dir));
  const obj = await load(program, child.pid);
  const link = attach(obj);
  await child.go();
  link.close();
  Deno.removeSync(dir, { recursive: true });
  return obj;
}

kernelTest(
  'a bare SEC("tracepoint") attaches at run time, and the hash and per-CPU maps read back exactly',
  async () => {
    ensureTracefs();
    using obj = await countWith(
      "on_tracepoint",
      (d) => [`unlinkat:${d}/a`, `unlinkat:${d}/b`, `unlinkat:${d}/missing`],
      (o) => o.program("on_tracepoint").attachTracepoint("syscalls", "sys_enter_unlinkat"),
    );
    const counts = obj.map("counts");
    assert.equal(counts.type, "hash");
    assert.equal(counts.keySize, 16);
    assert.equal(counts.valueSize, 8);
    assert.equal(counts.maxEntries, 1024);
    assert.deepEqual([...counts.entries()].map(([k, v]) => [comm(k), u64(v)]), [[
      "dbpf_unlinker",
      3n,
    ]]);
    assert.deepEqual(counts.lookupBatch().map(([k, v]) => [comm(k), u64(v)]), [[
      "dbpf_unlinker",
      3n,
    ]]);

    const calls = obj.map("calls");
    assert.equal(calls.type, "percpu_array");
    assert.equal(calls.perCpu, true);
    const perCpu = calls.perCpuValues(calls.lookup(new Uint8Array(4))!);
    assert.equal(perCpu.length, possibleCpus());
    assert.equal(perCpu.reduce((sum, v) => sum + u64(v), 0n), 3n);

    // The same through layouts: keys encoded, values decoded.
    const byComm = counts.typed(
      defineLayout("comm", 16, { comm: ["char[16]", 0] }),
      defineLayout("count", 8, { n: ["u64n", 0] }),
    );
    assert.deepEqual([...byComm.entries()], [[{ comm: "dbpf_unlinker" }, { n: 3n }]]);
    assert.deepEqual(byComm.get({ comm: "dbpf_unlinker" }), { n: 3n });
    byComm.set({ comm: "typed" }, { n: 41n }, "noexist");
    assert.deepEqual(byComm.get({ comm: "typed" }), { n: 41n });
    assert.equal(byComm.delete({ comm: "typed" }), true);
    assert.equal(byComm.get({ comm: "typed" }), undefined);
    const perCpuCalls = calls.typed(
      defineLayout("key", 4, { i: ["u32", 0] }),
      defineLayout("calls", 8, { n: ["u64n", 0] }),
    );
    const slots = perCpuCalls.getPerCpu({ i: 0 })!;
    assert.equal(slots.reduce((sum, v) => sum + v.n, 0n), 3n);
    assert.throws(() => perCpuCalls.get({ i: 0 }), /is per-CPU: use getPerCpu/);
    assert.throws(
      () =>
        counts.typed(
          defineLayout("k", 8, { k: ["u64", 0] }),
          defineLayout("v", 8, { v: ["u64", 0] }),
        ),
      /has 16-byte keys; layout "k" is 8 bytes/,
    );

    // Writes: update modes, delete, lookupAndDelete, clear.
    const value = new Uint8Array(8);
    new DataView(value.buffer).setBigUint64(0, 7n, true);
    counts.update(key16("seven"), value, "noexist");
    assert.throws(() => counts.update(key16("seven"), value, "noexist"), (e: unknown) => {
      return e instanceof BpfError && e.code === "EEXIST";
    });
    assert.throws(() => counts.update(key16("absent"), value, "exist"), /ENOENT/);
    assert.equal(u64(counts.lookup(key16("seven"))!), 7n);
    assert.equal(counts.lookup(key16("absent")), undefined);
    assert.equal(u64(counts.lookupAndDelete(key16("seven"))!), 7n);
    assert.equal(counts.delete(key16("seven")), false);
    assert.equal(counts.clear(), 1);
    assert.deepEqual([...counts.keys()], []);
    assert.throws(() => counts.lookup(new Uint8Array(4)), /has 16-byte keys, got 4/);
  },
);

kernelTest(
  "a raw tracepoint and a uprobe attach at run time and count the child's calls",
  async () => {
    {
      using obj = await countWith(
        "on_raw_tracepoint",
        (d) => [`unlink:${d}/a`],
        (o) => o.program("on_raw_tracepoint").attachRawTracepoint("sys_enter"),
      );
      // Every thread of the child counts, each under its own comm.
      const byComm = new Map([...obj.map("counts").entries()].map(([k, v]) => [comm(k), u64(v)]));
      assert.ok((byComm.get("dbpf_unlinker") ?? 0n) >= 1n, `at least the unlink: ${[...byComm]}`);
    }
    using obj = await countWith(
      "on_uprobe",
      (d) => [`unlinkat:${d}/a`, `unlinkat:${d}/b`],
      (o) => o.program("on_uprobe").attachUprobe("libc.so.6", { symbol: "unlinkat" }),
    );
    assert.deepEqual(
      [...obj.map("counts").entries()].map(([k, v]) => [comm(k), u64(v)]),
      [["dbpf_unlinker", 2n]],
    );
  },
);

kernelTest(
  "attachKprobe names the function, and fails with the kernel's errno where kprobes are missing",
  async () => {
    using obj = await load("on_kprobe", 1);
    try {
      obj.program("on_kprobe").attachKprobe("do_unlinkat").close();
    } catch (error) {
      assert.ok(error instanceof BpfError, String(error));
      assert.match(error.message, /^Cannot attach "on_kprobe" as a kprobe on do_unlinkat: E[A-Z]+/);
    }
    assert.throws(
      () => obj.program("on_kprobe").attachUprobe("libc.so.6", {}),
      /exactly one of symbol and offset/,
    );
  },
);

kernelTest(
  "a pinned map and a pinned link outlive their handles, and unpinning ends them",
  async () => {
    ensureTracefs();
    const bpffs = Deno.makeTempDirSync({ prefix: "dbpf_bpffs_" });
    const mount = await new Deno.Command("mount", { args: ["-t", "bpf", "bpf", bpffs] }).output();
    assert.ok(mount.success, text.decode(mount.stderr));
    try {
      const dir = scratch(["a", "b"]);
      const child = await spawnUnlinker([`unlinkat:${dir}/a`, `unlinkat:${dir}/b`]);
      const obj = await load("on_tracepoint", child.pid);
      const link = obj.program("on_tracepoint").attachTracepoint("syscalls", "sys_enter_unlinkat");
      link.pin(`${bpffs}/link`);
      obj.map("counts").pin(`${bpffs}/counts`);
      link.close(); // pinned: still attached
      obj.close(); // the pins hold the program and the map
      await child.go();
      Deno.removeSync(dir, { recursive: true });

      using pinned = PinnedMap.open(`${bpffs}/counts`);
      assert.equal(pinned.name, "counts");
      assert.equal(pinned.type, "hash");
      assert.deepEqual([...pinned.entries()].map(([k, v]) => [comm(k), u64(v)]), [[
        "dbpf_unlinker",
        2n,
      ]]);
      assert.throws(() => PinnedMap.open(`${bpffs}/link`), /is pinned, but is not a map/);

      const reopened = Link.open(`${bpffs}/link`);
      reopened.unpin();
      reopened.close();
      assert.deepEqual(
        [...Deno.readDirSync(bpffs)].map((e) => e.name).filter((n) => !n.endsWith(".debug")),
        ["counts"],
      );
      pinned.close();
      pinned.close();
      assert.throws(() => pinned.keySize, /PinnedMap is closed/);
    } finally {
      await new Deno.Command("umount", { args: [bpffs] }).output();
      Deno.removeSync(bpffs, { recursive: true });
    }
  },
);
