/**
 * bpf/path.h against the kernel: tests/fixtures/path_walk.bpf.c, compiled
 * here with clang, resolves the absolute path of every unlink(2) and
 * unlinkat(2) of a child with a known pid, on the syscall tracepoints, and
 * the child deletes files whose paths the test knows: relative to its working
 * directory or to a directory fd, absolute, through symlinks, bind mounts, a
 * private tmpfs, a chroot, deeper than the walk goes and longer than a record
 * keeps.
 */

import assert from "node:assert/strict";
import { BpfObject, checkLayout, defineLayout, ensureTracefs, RingBuffer } from "../mod.ts";
import { normalizePath } from "../lib/unlink/_path.ts";
import {
  AUTO_METHOD,
  compileFixture,
  kernelTest,
  scratch,
  spawnUnlinker,
  type UnlinkerOptions,
  type UnlinkResult,
} from "./_helpers.ts";

/** `struct path_event` of the fixture: a header, then `len` bytes of path. */
const pathEvent = defineLayout("path_event", 16, {
  flags: ["u32", 0],
  dfd: ["i32", 4],
  len: ["u32", 8],
  _pad: ["u32", 12],
}, { tail: { length: "len", as: "path" } });

/** bpf/path.h's PATH_F_* flags, and its limits as the fixture builds them. */
const TRUNCATED = 0x1;
const PARTIAL = 0x2;
const KEEP = 4096;
const DEPTH = 64;
const AT_FDCWD = -100;

interface PathEvent {
  flags: number;
  dfd: number;
  path: string;
}

const fixtureBytes = () => compileFixture("path_walk");

/** Which programs of the fixture run: the syscall tracepoints, or fentry on security_path_unlink. */
type Method = "tracepoint" | "fentry";

/** The fixture opened with `method`'s programs enabled. */
async function openFixture(method: Method): Promise<BpfObject> {
  const obj = BpfObject.openMem(await fixtureBytes(), "path_walk");
  obj.program("path_unlinkat").autoload = method === "tracepoint";
  // arm64 has no unlink(2)
  obj.program("path_unlink").autoload = method === "tracepoint" && Deno.build.arch === "x86_64";
  obj.program("path_lsm_unlink").autoload = method === "fentry";
  return obj;
}

/**
 * Runs the unlinker with `ops` while the fixture traces it; returns the
 * records in the order of the unlinks, and the child's results. fentry sees
 * only names that exist.
 */
async function trace(
  ops: string[],
  options: UnlinkerOptions = {},
  method: Method = "tracepoint",
): Promise<{ events: PathEvent[]; results: UnlinkResult[] }> {
  ensureTracefs();
  const child = await spawnUnlinker(ops, options);
  using obj = await openFixture(method);
  obj.setConst("targ_tgid", child.pid);
  obj.load();
  checkLayout(pathEvent, obj.btf.struct("path_event"));
  using _links = new DisposableStack();
  for (const prog of obj.programs) if (prog.autoload) _links.use(prog.attach());
  using ring = new RingBuffer(obj.map("events"));
  const results = await child.go();
  const events: PathEvent[] = [];
  ring.drain((bytes, offset, length) => {
    const { flags, dfd, path } = pathEvent.decode(bytes, offset, length);
    events.push({ flags, dfd, path });
  });
  const unlinks = results.filter((r) =>
    r.op.startsWith("unlink") && (method === "tracepoint" || r.errno !== 2)
  );
  // Deno may delete its own code cache files as the child exits, after the ops.
  assert.ok(events.length >= unlinks.length, `one record per unlink: ${JSON.stringify(events)}`);
  return { events: events.slice(0, unlinks.length), results };
}

/** Why the fentry program cannot load here (the 6.18 host refuses fentry), or undefined. */
async function fentryRefusal(): Promise<string | undefined> {
  try {
    using obj = await openFixture("fentry");
    obj.load();
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

/** A scratch dir by its real path, so expected paths match what the kernel walks. */
function realScratch(names: string[]): string {
  return Deno.realPathSync(scratch(names));
}

/** Runs `sh -c script` and fails the test if it fails. */
function sh(script: string): void {
  const out = new Deno.Command("sh", { args: ["-c", script], stderr: "piped" }).outputSync();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
}

/** A wrapper for spawnUnlinker that runs `script` in a private mount namespace first. */
function inPrivateMounts(script: string): string[] {
  return ["unshare", "-m", "--propagation", "private", "sh", "-c", `${script} && exec "$@"`, "sh"];
}

Deno.test("normalizePath folds . and .. lexically and keeps .. at the root", () => {
  assert.equal(normalizePath("/tmp/x/a/../b"), "/tmp/x/b");
  assert.equal(normalizePath("/tmp//x/./f"), "/tmp/x/f");
  assert.equal(normalizePath("/../../etc/passwd"), "/etc/passwd");
  assert.equal(normalizePath("/"), "/");
  assert.equal(normalizePath("a/../b"), "a/../b");
});

kernelTest("a name relative to the working directory resolves to its absolute path", async () => {
  const dir = realScratch(["f"]);
  const { events, results } = await trace(["unlink:f"], { cwd: dir });
  Deno.removeSync(dir, { recursive: true });
  assert.equal(results[0].ret, 0);
  assert.deepEqual(events, [{ flags: 0, dfd: AT_FDCWD, path: `${dir}/f` }]);
});

kernelTest("a name relative to a directory fd resolves through that fd", async () => {
  const dir = realScratch(["sub/", "sub/f"]);
  const { events, results } = await trace([`unlinkatdir:${dir}/sub:f`], { cwd: "/" });
  Deno.removeSync(dir, { recursive: true });
  assert.equal(results[0].ret, 0);
  assert.equal(events[0].flags, 0);
  assert.ok(events[0].dfd >= 0, `dfd ${events[0].dfd} is an fd`);
  assert.equal(events[0].path, `${dir}/sub/f`);
});

kernelTest("an absolute name is kept as it is, whatever the working directory", async () => {
  const dir = realScratch(["f", "g"]);
  const { events } = await trace([`unlinkat:${dir}/f`, `unlink:${dir}/g`], { cwd: "/proc" });
  Deno.removeSync(dir, { recursive: true });
  assert.deepEqual(events.map((e) => [e.flags, e.path]), [[0, `${dir}/f`], [0, `${dir}/g`]]);
});

kernelTest("a name with .. is joined raw in the kernel and folds in user space", async () => {
  const dir = realScratch(["a/", "b"]);
  const { events, results } = await trace(["unlink:a/../b"], { cwd: dir });
  Deno.removeSync(dir, { recursive: true });
  assert.equal(results[0].ret, 0);
  assert.equal(events[0].path, `${dir}/a/../b`);
  assert.equal(normalizePath(events[0].path), `${dir}/b`);
});

kernelTest(
  "through a symlinked directory the working directory is canonical but the name stays lexical",
  async () => {
    const dir = realScratch(["real/", "real/f", "real/g", "deep/", "deep/real2/", "deep/h"]);
    Deno.symlinkSync(`${dir}/real`, `${dir}/link`);
    Deno.symlinkSync(`${dir}/deep/real2`, `${dir}/link2`);
    const { events, results } = await trace(
      ["unlink:link/f", "unlink:link2/../h", `chdir:${dir}/link`, "unlink:g"],
      { cwd: dir },
    );
    Deno.removeSync(dir, { recursive: true });
    assert.deepEqual(results.map((r) => r.ret), [0, 0, 0, 0]);
    // The name crosses the symlink: right, but not canonical (the file was real/f).
    assert.equal(normalizePath(events[0].path), `${dir}/link/f`);
    // KNOWN WRONG: a symlink followed by "..". The file deleted was deep/h,
    // but lexical folding gives dir/h. Only a walk from the resolved dentry
    // (fentry on security_path_unlink) gets this right.
    assert.equal(normalizePath(events[1].path), `${dir}/h`);
    // chdir resolved the link: the kernel's cwd is the real directory.
    assert.equal(events[2].path, `${dir}/real/g`);
  },
);

kernelTest("under a bind mount the path is the one the process used, not the source", async () => {
  const dir = realScratch(["src/", "src/f", "src/g", "dst/"]);
  const { events, results } = await trace(
    [`chdir:${dir}/dst`, "unlink:f", `unlinkatdir:${dir}/dst:g`],
    { wrap: inPrivateMounts(`mount --bind ${dir}/src ${dir}/dst`) },
  );
  Deno.removeSync(dir, { recursive: true });
  assert.deepEqual(results.map((r) => r.ret), [0, 0, 0]);
  assert.deepEqual(events.map((e) => [e.flags, e.path]), [[0, `${dir}/dst/f`], [
    0,
    `${dir}/dst/g`,
  ]]);
});

kernelTest(
  "a tmpfs mounted in a private mount namespace is crossed to its mount point",
  async () => {
    const dir = realScratch(["mnt/"]);
    const m = `${dir}/mnt`;
    const { events, results } = await trace(
      [`chdir:${m}/x`, "unlink:f", `unlinkatdir:${m}:g`],
      {
        wrap: inPrivateMounts(`mount -t tmpfs tmpfs ${m} && mkdir ${m}/x && touch ${m}/x/f ${m}/g`),
      },
    );
    Deno.removeSync(dir, { recursive: true });
    assert.deepEqual(results.map((r) => r.ret), [0, 0, 0]);
    assert.deepEqual(events.map((e) => [e.flags, e.path]), [[0, `${m}/x/f`], [0, `${m}/g`]]);
  },
);

kernelTest("in a chroot the path is the one seen inside it", async () => {
  const dir = realScratch(["jail/", "jail/a/", "jail/a/f", "jail/a/g"]);
  const { events, results } = await trace(
    [`chroot:${dir}/jail`, "chdir:/a", "unlink:f", "unlinkatdir:/a:g"],
    { cwd: dir },
  );
  Deno.removeSync(dir, { recursive: true });
  assert.deepEqual(results.map((r) => r.ret), [0, 0, 0, 0]);
  assert.deepEqual(events.map((e) => [e.flags, e.path]), [[0, "/a/f"], [0, "/a/g"]]);
});

kernelTest("a tree deeper than the walk goes is reported partial, with its true end", async () => {
  const dir = realScratch([]);
  const bottom = `${dir}${"/d".repeat(DEPTH + 6)}`;
  Deno.mkdirSync(bottom, { recursive: true });
  Deno.writeTextFileSync(`${bottom}/f`, "");
  const { events, results } = await trace(["unlink:f"], { cwd: bottom });
  Deno.removeSync(dir, { recursive: true });
  assert.equal(results[0].ret, 0);
  assert.equal(events[0].flags, PARTIAL);
  assert.equal(events[0].path, `${"/d".repeat(DEPTH)}/f`);
  assert.ok(`${bottom}/f`.endsWith(events[0].path));
});

kernelTest(
  "a path longer than a record keeps is truncated to its last whole components",
  async () => {
    const dir = realScratch([]);
    const name = "n".repeat(200);
    // Longer than PATH_MAX in all: built and entered one component at a time.
    const { events, results } = await trace([
      `chdir:${dir}`,
      ...Array.from({ length: 25 }, () => [`mkdir:${name}`, `chdir:${name}`]).flat(),
      "touch:f",
      "unlink:f",
    ]);
    sh(`rm -rf ${dir}`);
    assert.equal(results.at(-1)!.ret, 0);
    const full = `${dir}${`/${name}`.repeat(25)}/f`;
    assert.equal(events[0].flags, TRUNCATED);
    const { path } = events[0];
    assert.ok(
      path.length <= KEEP - 1 && path.length > KEEP - 1 - (name.length + 1),
      `${path.length}`,
    );
    assert.ok(full.endsWith(path), "the kept bytes are the path's end");
    assert.ok(path.startsWith(`/${name}/`), "the walk stops before a component that does not fit");
  },
);

kernelTest("a failed unlink of a missing file still gets its path", async () => {
  const dir = realScratch([]);
  const { events, results } = await trace(["unlink:missing", "unlinkat:missing"], { cwd: dir });
  Deno.removeSync(dir, { recursive: true });
  assert.deepEqual(results.map((r) => [r.ret, r.errno]), [[-1, 2], [-1, 2]]);
  assert.deepEqual(events.map((e) => [e.flags, e.path]), [[0, `${dir}/missing`], [
    0,
    `${dir}/missing`,
  ]]);
});

/**
 * A test of the fentry walk. Where the kernel refuses fentry (the 6.18 host:
 * see KERNEL.md) it checks that the refusal is the kernel's own errno and
 * that the suite does not expect fentry here; that is not a skip.
 */
function fentryTest(name: string, fn: () => Promise<void>): void {
  kernelTest(name, async () => {
    const refused = await fentryRefusal();
    if (refused) {
      assert.notEqual(AUTO_METHOD, "fentry", `fentry must load here: ${refused}`);
      assert.match(refused, /: E[A-Z]+ /, refused);
      console.log(`fentry refused here, as expected: ${refused}`);
      return;
    }
    await fn();
  });
}

fentryTest("fentry on security_path_unlink resolves names canonically", async () => {
  const dir = realScratch(["f", "a/", "b", "sub/", "sub/g", "deep/", "deep/real2/", "deep/h"]);
  Deno.symlinkSync(`${dir}/deep/real2`, `${dir}/link2`);
  const { events, results } = await trace(
    ["unlink:f", "unlink:a/../b", `unlinkatdir:${dir}/sub:g`, "unlink:link2/../h", "unlink:nope"],
    { cwd: dir },
    "fentry",
  );
  Deno.removeSync(dir, { recursive: true });
  assert.deepEqual(results.map((r) => r.ret), [0, 0, 0, 0, -1]);
  // Right where the lexical answer is wrong: the file deleted was deep/h.
  assert.deepEqual(events.map((e) => [e.flags, e.dfd, e.path]), [
    [0, -1, `${dir}/f`],
    [0, -1, `${dir}/b`],
    [0, -1, `${dir}/sub/g`],
    [0, -1, `${dir}/deep/h`],
  ]);
});

fentryTest("fentry on security_path_unlink sees bind mounts, tmpfs and chroots", async () => {
  const dir = realScratch(["src/", "src/f", "dst/", "mnt/", "jail/", "jail/a/", "jail/a/j"]);
  const m = `${dir}/mnt`;
  const { events, results } = await trace(
    [`unlink:${dir}/dst/f`, `unlink:${m}/t`, `chroot:${dir}/jail`, "unlink:/a/j"],
    {
      wrap: inPrivateMounts(
        `mount --bind ${dir}/src ${dir}/dst && mount -t tmpfs tmpfs ${m} && touch ${m}/t`,
      ),
    },
    "fentry",
  );
  Deno.removeSync(dir, { recursive: true });
  assert.deepEqual(results.map((r) => r.ret), [0, 0, 0, 0]);
  assert.deepEqual(events.map((e) => [e.flags, e.path]), [
    [0, `${dir}/dst/f`],
    [0, `${m}/t`],
    [0, "/a/j"],
  ]);
});

fentryTest(
  "fentry on security_path_unlink reports a tree deeper than the walk as partial",
  async () => {
    const dir = realScratch([]);
    const bottom = `${dir}${"/d".repeat(DEPTH + 6)}`;
    Deno.mkdirSync(bottom, { recursive: true });
    Deno.writeTextFileSync(`${bottom}/f`, "");
    const { events } = await trace(["unlink:f"], { cwd: bottom }, "fentry");
    Deno.removeSync(dir, { recursive: true });
    // The file itself is one of the walk's steps.
    assert.deepEqual(events.map((e) => [e.flags, e.path]), [[
      PARTIAL,
      `${"/d".repeat(DEPTH - 1)}/f`,
    ]]);
  },
);
