/**
 * Which file, completely (issue 8): real deletions with known answers, read
 * the way users read them: scripts/trace.ts --json in a subprocess with its
 * least permissions, its output through a pipe. One tracer per group of
 * scenarios, and one child per tracer that performs them all, so the same
 * tests stay affordable in the VMs, once per attach method.
 *
 * What depends on the method: the tracepoint method sees only the name as
 * passed, so a name with ".." is folded lexically ("lexical") and it has no
 * inode facts (null); fentry and kprobe take a successful unlink's path from
 * the dentry the kernel looked up, so symlinked directories and ".." are the
 * real ones, and they fill ino, dev, type, size and nlink_after.
 */

import assert from "node:assert/strict";
import { normalizePath } from "../lib/unlink/_path.ts";
import type { EventJson } from "../lib/unlink/mod.ts";
import {
  EXPECTED_METHOD,
  kernelTest,
  ROOT,
  scratch,
  spawnUnlinker,
  TEST_MODE,
  type Unlinker,
  type UnlinkResult,
} from "./_helpers.ts";
import { runScript, traceWhile } from "./_trace.ts";

/** The walk's step limit and the longest path kept, in bytes (bpf/path.h). */
const DEPTH = 64;
const KEEP = 4095;
const UNSET_AUID = 4294967295;

const encoder = new TextEncoder();
const utf8 = new TextDecoder();
const hex = (bytes: Uint8Array) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");

/** A schema-2 `event`: the `data` of a JSON event line. */
type Event = EventJson;

/** The schema's key order: today's fields, then issue 8's. */
const KEY_ORDER = [
  ..."time pid tid uid comm filename filename_truncated filename_b64 ret error latency_ns"
    .split(" "),
  ..."op path path_b64 path_status dfd ino dev type size nlink_after ppid pcomm auid cgroup_id"
    .split(" "),
  ..."cgroup container mntns argv argv_truncated argv_b64".split(" "),
];

/** What one trace.ts --json run printed. */
interface Traced {
  method: string;
  events: Event[];
  /** The raw JSON lines of the events. */
  lines: string[];
}

/** Runs trace.ts --json with `args` around `during`; checks the envelope. */
async function traceJson(args: string[], during: () => Promise<void>): Promise<Traced> {
  const run = await traceWhile(["--json", ...args], during);
  assert.equal(run.code, 0, run.stderr);
  const lines = run.stdout.trimEnd().split("\n");
  const records = lines.map((line) => JSON.parse(line));
  const [attach] = records;
  assert.equal(attach.type, "attach", lines[0]);
  assert.equal(attach.data.schema, 2, `the attach record says schema 2: ${lines[0]}`);
  if (EXPECTED_METHOD) assert.equal(attach.data.method, EXPECTED_METHOD);
  return {
    method: attach.data.method,
    events: records.filter((r) => r.type === "event").map((r) => r.data),
    lines: lines.filter((_, i) => records[i].type === "event"),
  };
}

/** The one event whose `filename` (the name as passed) is `name`. */
function one(traced: Traced, name: string): Event {
  const found = traced.events.filter((e) => e.filename === name);
  assert.equal(
    found.length,
    1,
    `one event for ${JSON.stringify(name)}; got ${
      JSON.stringify(traced.events.map((e) => e.filename))
    }`,
  );
  return found[0];
}

/** The method this run of the suite uses (the doctor's choice in auto mode). */
async function methodHere(): Promise<string> {
  if (TEST_MODE !== "auto") return TEST_MODE;
  if (EXPECTED_METHOD) return EXPECTED_METHOD;
  const doctor = await runScript(["--doctor", "--json"]);
  return JSON.parse(doctor.stdout).auto;
}

const hasInodeFacts = (method: string) => method === "fentry" || method === "kprobe";

/** A file's facts as coreutils `stat` gives them, before it is deleted. */
interface Facts {
  ino: number;
  dev: string;
  type: string;
  size: number;
  nlink: number;
}

const STAT_FORMAT = "%i|%Hd:%Ld|%F|%s|%h";
const TYPES: Record<string, string> = {
  "regular file": "file",
  "regular empty file": "file",
  directory: "dir",
  "symbolic link": "symlink",
  fifo: "fifo",
  socket: "socket",
  "character special file": "char",
  "block special file": "block",
};

/** Parses lines of `stat -c STAT_FORMAT` output. */
function parseStat(text: string): Facts[] {
  return text.trimEnd().split("\n").map((line) => {
    const [ino, dev, type, size, nlink] = line.split("|");
    assert.ok(TYPES[type], `a type stat names: ${type}`);
    return { ino: Number(ino), dev, type: TYPES[type], size: Number(size), nlink: Number(nlink) };
  });
}

/** Runs `stat` (coreutils, not following symlinks) on `path`. */
function stat(path: string): Facts {
  const out = new Deno.Command("stat", { args: ["-c", STAT_FORMAT, path] }).outputSync();
  assert.ok(out.success, utf8.decode(out.stderr));
  return parseStat(utf8.decode(out.stdout))[0];
}

/**
 * Checks an event's inode facts: all null on the tracepoint method and where
 * the name was not found (`facts` null); else those of `facts`, with
 * `nlinkAfter` links left.
 */
function assertFacts(e: Event, method: string, facts: Facts | null, nlinkAfter?: number): void {
  const got = { ino: e.ino, dev: e.dev, type: e.type, size: e.size, nlink_after: e.nlink_after };
  if (!hasInodeFacts(method) || !facts) {
    assert.deepEqual(got, { ino: null, dev: null, type: null, size: null, nlink_after: null });
    return;
  }
  const { ino, dev, type, size, nlink } = facts;
  const after = nlinkAfter ?? (e.ret === 0 ? (type === "dir" ? 0 : nlink - 1) : nlink);
  assert.deepEqual(got, { ino, dev, type, size, nlink_after: after });
}

/** Runs `sh -c script` and fails the test if it fails. */
function sh(script: string): void {
  const out = new Deno.Command("sh", { args: ["-c", script], stderr: "piped" }).outputSync();
  assert.ok(out.success, utf8.decode(out.stderr));
}

/** A scratch dir by its real path, so expected paths match what the kernel walks. */
function realScratch(names: string[]): string {
  return Deno.realPathSync(scratch(names));
}

/** `readlink /proc/PID/ns/mnt`'s inode number. */
function mntns(pid: number | "self"): number {
  const link = Deno.readLinkSync(`/proc/${pid}/ns/mnt`);
  const n = /^mnt:\[(\d+)\]$/.exec(link)?.[1];
  assert.ok(n, link);
  return Number(n);
}

/** `/proc/PID/loginuid`, or the unset value where the kernel has no audit. */
function loginuid(pid: number): number {
  try {
    return Number(Deno.readTextFileSync(`/proc/${pid}/loginuid`));
  } catch {
    return UNSET_AUID;
  }
}

/**
 * What `argv` must say for a process: its first 256 bytes of command line,
 * split at NULs; and those bytes in `argv_b64` when they are not UTF-8.
 */
function expectedArgv(pid: number): { argv: string[]; argv_truncated?: true; argv_b64?: string } {
  const cmdline = Deno.readFileSync(`/proc/${pid}/cmdline`);
  const kept = cmdline.subarray(0, 256);
  const parts: string[] = [];
  let start = 0;
  for (let i = 0; i <= kept.length; i++) {
    if (i === kept.length ? i > start : kept[i] === 0) {
      parts.push(utf8.decode(kept.subarray(start, i)));
      start = i + 1;
    }
  }
  let b64: { argv_b64?: string } = {};
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(kept);
  } catch {
    b64 = { argv_b64: kept.toBase64() };
  }
  return { argv: parts, ...(cmdline.length > 256 ? { argv_truncated: true } : {}), ...b64 };
}

/** The cgroup v2 mount point, from /proc/self/mountinfo. */
function cgroup2Root(): string {
  for (const line of Deno.readTextFileSync("/proc/self/mountinfo").split("\n")) {
    const [mine, theirs] = line.split(" - ");
    if (theirs?.startsWith("cgroup2 ")) return mine.split(" ")[4];
  }
  throw new Error("no cgroup2 file system is mounted: mount -t cgroup2 none /sys/fs/cgroup");
}

/** A process's cgroup v2 path, from /proc/PID/cgroup. */
function cgroupOf(pid: number): string {
  const line = Deno.readTextFileSync(`/proc/${pid}/cgroup`).split("\n").find((l) =>
    l.startsWith("0::")
  );
  assert.ok(line, `process ${pid} is in a cgroup v2`);
  return line.slice(3);
}

/** A fresh cgroup v2 directory named like a docker scope, with its id. */
function dockerScope(): { dir: string; path: string; id: string; inode: number } {
  const id = hex(crypto.getRandomValues(new Uint8Array(32)));
  const path = `/docker-${id}.scope`;
  const dir = `${cgroup2Root()}${path}`;
  Deno.mkdirSync(dir);
  return { dir, path, id, inode: Deno.statSync(dir).ino! };
}

/** A wrapper for spawnUnlinker that moves the child into the cgroup at `dir` first. */
function inCgroup(dir: string, then = 'exec "$@"'): string[] {
  return ["sh", "-c", `echo $$ > '${dir}/cgroup.procs' && ${then}`, "sh"];
}

/** Removes a cgroup directory once its processes are gone. */
async function removeCgroup(dir: string): Promise<void> {
  for (let i = 0;; i++) {
    try {
      return Deno.removeSync(dir);
    } catch (error) {
      if (i === 50) throw error;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** The child's results, with every op expected to succeed except those named. */
function assertResults(results: UnlinkResult[], failing: Record<string, number> = {}): void {
  const wrong = results.filter((r) => r.ret !== 0 && failing[r.path] !== r.errno);
  assert.deepEqual(wrong, [], "every op but the expected failures worked");
}

/** One path scenario: the name the child passes, and what the event must say. */
interface PathCase {
  what: string;
  filename: string;
  path: string;
  status: Event["path_status"];
  /** "fd" for a directory fd (a number). */
  dfd?: "AT_FDCWD" | "fd";
  error?: string;
  /** The file's facts before deletion (null: it does not exist). */
  facts: Facts | null;
  nlinkAfter?: number;
}

kernelTest(
  "trace.ts --json gives every deletion's exact path, inode facts and hostile names",
  async (t) => {
    const method = await methodHere();
    const fk = hasInodeFacts(method);
    const dir = realScratch([
      ...[
        "f1",
        "sub/",
        "sub/f2",
        "f3",
        "f4",
        "a/",
        "b",
        "real/",
        "real/f5",
        "deep/",
        "deep/real2/",
      ],
      ...["deep/h", "src/", "src/g1", "src/g2", "dst/", "mnt/", "jail/", "jail/a/", "jail/a/j1"],
      ...["jail/a/j2", "hard1", "rd/", "r1", "r2"],
    ]);
    Deno.symlinkSync(`${dir}/real`, `${dir}/link`);
    Deno.symlinkSync(`${dir}/deep/real2`, `${dir}/link2`);
    Deno.writeTextFileSync(`${dir}/sized`, "s".repeat(12345));
    Deno.linkSync(`${dir}/hard1`, `${dir}/hard2`);
    Deno.symlinkSync("a-target-of-26-bytes-long", `${dir}/sym`);
    sh(`mkfifo '${dir}/fifo'`);
    Deno.writeTextFileSync(`${dir}/held`, "h".repeat(777));
    using held = Deno.openSync(`${dir}/held`);
    const bottom = `${dir}${"/d".repeat(DEPTH + 6)}`;
    Deno.mkdirSync(bottom, { recursive: true });
    Deno.writeTextFileSync(`${bottom}/df`, "");
    const control = `${dir}/new\nline\x1b[31mred\x7f`;
    Deno.writeTextFileSync(control, "");
    const bad = new Uint8Array([...encoder.encode(`${dir}/bad`), 0xff, 0xfe, 0x2e, 0x74]);
    const long = "n".repeat(200);
    // A name longer than the 255 bytes of it a record keeps.
    const longName = `${dir}/${"c".repeat(150)}/${"e".repeat(140)}.txt`;
    Deno.mkdirSync(`${dir}/${"c".repeat(150)}`);
    Deno.writeTextFileSync(longName, "");
    const m = `${dir}/mnt`;
    const facts = Object.fromEntries(
      [
        ...["f1", "sub/f2", "f3", "f4", "b", "real/f5", "deep/h", "src/g1", "src/g2", "sized"],
        ...[
          "hard1",
          "sym",
          "fifo",
          "held",
          `${"d/".repeat(DEPTH + 6)}df`,
          "jail/a/j1",
          "jail/a/j2",
        ],
        control.slice(dir.length + 1),
      ].map((name) => [name, stat(`${dir}/${name}`)]),
    );
    const ops = [
      // Hostile names first: the control characters then fall in argv's first 256 bytes.
      `unlinkat:${control}`,
      `touchhex:${hex(bad)}`,
      `unlinkhex:${hex(bad)}`,
      "unlink:f1",
      `unlinkatdir:${dir}/sub:f2`,
      `unlink:${dir}/f3`,
      `unlinkat:${dir}/f4`,
      "unlink:a/../b",
      "unlink:link/f5",
      "unlink:link2/../h",
      "unlink:missing",
      "unlinkat:missing2",
      "unlinkatfd:999:nofd",
      "unlink:sized",
      "unlink:hard1",
      "unlink:sym",
      "unlink:fifo",
      "unlink:held",
      `unlink:${longName}`,
      // Not traced without --rmdir and --rename.
      "rmdir:rd",
      `rename:${dir}/r1:${dir}/r2`,
      `chdir:${dir}/dst`,
      "unlink:g1",
      `unlinkatdir:${dir}/dst:g2`,
      `chdir:${m}/x`,
      "unlink:t1",
      `unlinkatdir:${m}:t2`,
      `chdir:${bottom}`,
      "unlink:df",
      `chdir:${dir}`,
      ...Array.from({ length: 25 }, () => [`mkdir:${long}`, `chdir:${long}`]).flat(),
      "touch:lf",
      "unlink:lf",
      `chdir:${dir}`,
      `chroot:${dir}/jail`,
      "chdir:/a",
      "unlink:j1",
      "unlinkatdir:/a:j2",
    ];
    // A private mount namespace with a bind mount and a tmpfs, whose files
    // only that namespace sees: stat them there.
    const mounts = [
      `mount --bind '${dir}/src' '${dir}/dst'`,
      `mount -t tmpfs tmpfs '${m}'`,
      `mkdir '${m}/x'`,
      `touch '${m}/x/t1' '${m}/t2'`,
      `stat -c '${STAT_FORMAT}' '${m}/x/t1' '${m}/t2' > '${dir}/tmpfs.stat'`,
    ].join(" && ");
    let child: Unlinker | undefined;
    let results: UnlinkResult[] = [];
    const traced = await (async () => {
      try {
        child = await spawnUnlinker(ops, {
          cwd: dir,
          wrap: [
            ...["unshare", "-m", "--propagation", "private"],
            ...["sh", "-c", `${mounts} && exec "$@"`, "sh"],
          ],
        });
        const c = child;
        const who = {
          ns: mntns(c.pid),
          argv: expectedArgv(c.pid),
          cgroup: cgroupOf(c.pid),
          auid: loginuid(c.pid),
          tmpfs: parseStat(Deno.readTextFileSync(`${dir}/tmpfs.stat`)),
        };
        // No --path: the chroot, the cut and the unresolved paths below lie outside dir. The
        // runtime's own deletions of DENO_DIR journals (its main thread, so this pid and comm)
        // may come too: the steps find each event by its name, and check every event for
        // facts that hold for those as well.
        const traced = await traceJson(["-p", String(c.pid), "-n", "dbpf_unlinker"], async () => {
          results = await c.go();
        });
        return { ...traced, who };
      } finally {
        sh(`rm -rf '${dir}'`);
      }
    })();
    const [t1, t2] = traced.who.tmpfs;
    const pid = child!.pid;
    const longPath = `${dir}${`/${long}`.repeat(25)}/lf`;

    await t.step("the child's ops did what the test expects", () => {
      assertResults(results, { missing: 2, missing2: 2, "999:nofd": 9, [utf8.decode(bad)]: 2 });
    });

    const cases: PathCase[] = [
      {
        what: "a name relative to the cwd",
        filename: "f1",
        path: `${dir}/f1`,
        status: "ok",
        facts: facts["f1"],
      },
      {
        what: "a name relative to a directory fd",
        filename: "f2",
        path: `${dir}/sub/f2`,
        status: "ok",
        dfd: "fd",
        facts: facts["sub/f2"],
      },
      {
        what: "an absolute name (unlink)",
        filename: `${dir}/f3`,
        path: `${dir}/f3`,
        status: "ok",
        facts: facts["f3"],
      },
      {
        what: "an absolute name (unlinkat)",
        filename: `${dir}/f4`,
        path: `${dir}/f4`,
        status: "ok",
        facts: facts["f4"],
      },
      {
        what: "a/../b",
        filename: "a/../b",
        path: `${dir}/b`,
        status: fk ? "ok" : "lexical",
        facts: facts["b"],
      },
      {
        what: "a name through a symlinked directory",
        filename: "link/f5",
        path: fk ? `${dir}/real/f5` : `${dir}/link/f5`,
        status: "ok",
        facts: facts["real/f5"],
      },
      {
        // The file deleted is deep/h: a lexical fold says dir/h, and says it is lexical.
        what: "a symlinked directory followed by ..",
        filename: "link2/../h",
        path: fk ? `${dir}/deep/h` : `${dir}/h`,
        status: fk ? "ok" : "lexical",
        facts: facts["deep/h"],
      },
      {
        what: "a failed unlink of a missing file (unlink)",
        filename: "missing",
        path: `${dir}/missing`,
        status: "ok",
        error: "ENOENT",
        facts: null,
      },
      {
        what: "a failed unlink of a missing file (unlinkat)",
        filename: "missing2",
        path: `${dir}/missing2`,
        status: "ok",
        error: "ENOENT",
        facts: null,
      },
      {
        what: "a file of known size",
        filename: "sized",
        path: `${dir}/sized`,
        status: "ok",
        facts: facts["sized"],
      },
      {
        what: "a file with a second hard link",
        filename: "hard1",
        path: `${dir}/hard1`,
        status: "ok",
        facts: facts["hard1"],
        nlinkAfter: 1,
      },
      { what: "a symlink", filename: "sym", path: `${dir}/sym`, status: "ok", facts: facts["sym"] },
      { what: "a FIFO", filename: "fifo", path: `${dir}/fifo`, status: "ok", facts: facts["fifo"] },
      {
        what: "a file held open by another process",
        filename: "held",
        path: `${dir}/held`,
        status: "ok",
        facts: facts["held"],
        nlinkAfter: 0,
      },
      {
        what: "under a bind mount, the path the process used (cwd)",
        filename: "g1",
        path: `${dir}/dst/g1`,
        status: "ok",
        facts: facts["src/g1"],
      },
      {
        what: "under a bind mount, the path the process used (dir fd)",
        filename: "g2",
        path: `${dir}/dst/g2`,
        status: "ok",
        dfd: "fd",
        facts: facts["src/g2"],
      },
      {
        what: "a tmpfs in a private mount namespace (cwd)",
        filename: "t1",
        path: `${m}/x/t1`,
        status: "ok",
        facts: t1,
      },
      {
        what: "a tmpfs in a private mount namespace (dir fd)",
        filename: "t2",
        path: `${m}/t2`,
        status: "ok",
        dfd: "fd",
        facts: t2,
      },
      {
        what: "in a chroot, the path seen inside (cwd)",
        filename: "j1",
        path: "/a/j1",
        status: "ok",
        facts: facts["jail/a/j1"],
      },
      {
        what: "in a chroot, the path seen inside (dir fd)",
        filename: "j2",
        path: "/a/j2",
        status: "ok",
        dfd: "fd",
        facts: facts["jail/a/j2"],
      },
      {
        what: "a name with newline, escape and DEL",
        filename: control,
        path: control,
        status: "ok",
        facts: facts[control.slice(dir.length + 1)],
      },
    ];
    for (const c of cases) {
      await t.step(`${c.what} gives path ${c.path}, ${c.status}`, () => {
        const e = one(traced, c.filename);
        assert.deepEqual(
          { path: e.path, path_status: e.path_status, op: e.op, error: e.error },
          { path: c.path, path_status: c.status, op: "unlink", error: c.error ?? null },
        );
        assert.ok(!("path_b64" in e), "a UTF-8 path has no path_b64");
        if (c.dfd === "fd") assert.ok(typeof e.dfd === "number" && e.dfd >= 0, `dfd ${e.dfd}`);
        else assert.equal(e.dfd, "AT_FDCWD");
        assertFacts(e, method, c.facts, c.nlinkAfter);
      });
    }

    await t.step("a relative name under an fd that is not open gives no path, unresolved", () => {
      const e = one(traced, "nofd");
      assert.deepEqual(
        [e.path, e.path_status, e.dfd, e.error, "path_b64" in e],
        [null, "unresolved", 999, "EBADF", false],
      );
      assertFacts(e, method, null);
    });

    await t.step("a file held open keeps its data: fstat after the unlink agrees", () => {
      const after = held.statSync();
      assert.deepEqual([after.nlink, after.size], [0, 777]);
    });

    await t.step("a tree deeper than the walk gives partial, with its true end", () => {
      const e = one(traced, "df");
      const full = `${bottom}/df`;
      assert.equal(e.path_status, "partial");
      assert.ok(e.path !== null && e.path.startsWith("/d/"), `${e.path}`);
      assert.ok(full.endsWith(e.path) && e.path.length < full.length, `${e.path} ends ${full}`);
      const steps = e.path.split("/").length - 1;
      assert.ok(steps >= DEPTH - 2 && steps <= DEPTH + 1, `${steps} components kept`);
      assertFacts(e, method, facts[`${"d/".repeat(DEPTH + 6)}df`]);
    });

    await t.step("a path longer than 4095 bytes gives truncated, with its end kept", () => {
      const e = one(traced, "lf");
      assert.equal(e.path_status, "truncated");
      assert.ok(e.path !== null && longPath.endsWith(e.path), `${e.path?.slice(0, 80)}…`);
      const bytes = encoder.encode(e.path).length;
      assert.ok(bytes <= KEEP && bytes > KEEP - 2 * (long.length + 1), `${bytes} bytes kept`);
    });

    await t.step("a name longer than 255 bytes gives its whole path", () => {
      const e = one(traced, longName.slice(0, 255));
      assert.equal(e.filename_truncated, true);
      // fentry and kprobe walk the dentry; tracepoints join the whole name
      // from the caller's memory, not the 255 bytes kept in filename.
      assert.deepEqual([e.path, e.path_status], [longName, "ok"]);
    });

    await t.step("a path that is not UTF-8 gives path_b64 with its exact bytes", () => {
      const e = one(traced, utf8.decode(bad));
      assert.equal(e.path, utf8.decode(bad));
      assert.equal(e.path_status, "ok");
      assert.ok(e.path_b64, "path_b64 is there");
      assert.deepEqual(Uint8Array.fromBase64(e.path_b64), bad);
    });

    await t.step("control characters in path and argv are JSON escapes, never raw bytes", () => {
      const line = traced.lines[traced.events.indexOf(one(traced, control))];
      // deno-lint-ignore no-control-regex
      assert.ok(!/[\x00-\x1f]/.test(line), "no raw control character");
      assert.ok(line.includes(String.raw`new\nline\u001b[31mred`), line);
    });

    await t.step("neither rmdir nor rename gives an event without --rmdir, --rename", () => {
      const others = traced.events.filter((e) =>
        e.op !== "unlink" || ["rd", `${dir}/r2`, `${dir}/r1`].includes(e.filename)
      );
      assert.deepEqual(others, []);
    });

    await t.step(
      "every event names the child, its parent, argv, mount namespace and cgroup",
      () => {
        assert.notEqual(traced.who.ns, mntns("self"), "the child has its own mount namespace");
        assert.ok(traced.who.argv.argv_truncated, "the child's command line is over 256 bytes");
        assert.deepEqual(traced.who.argv.argv.slice(0, 4), [
          Deno.execPath(),
          "run",
          "-A",
          `${ROOT}tests/_unlinker.ts`,
        ]);
        assert.equal(traced.who.argv.argv[4], `unlinkat:${control}`);
        for (const e of traced.events) {
          const { argv, argv_truncated, argv_b64 } = e;
          assert.deepEqual(
            {
              pid: e.pid,
              tid: e.tid,
              ppid: e.ppid,
              mntns: e.mntns,
              auid: e.auid,
              cgroup: e.cgroup,
              container: e.container,
              argv,
              argv_truncated,
              ...("argv_b64" in e ? { argv_b64 } : {}),
            },
            {
              pid,
              tid: pid,
              ppid: Deno.pid,
              mntns: traced.who.ns,
              auid: traced.who.auid,
              cgroup: traced.who.cgroup,
              container: null,
              ...traced.who.argv,
            },
            e.filename,
          );
          assert.equal(typeof e.cgroup_id, "number");
        }
      },
    );

    await t.step("every event has the schema's keys in the schema's order", () => {
      for (const e of traced.events) {
        const keys = Object.keys(e);
        assert.deepEqual(keys, KEY_ORDER.filter((k) => keys.includes(k)), e.filename);
        for (const k of KEY_ORDER) {
          if (!/_truncated$|_b64$/.test(k)) assert.ok(k in e, `${k} in ${e.filename}`);
        }
      }
    });
  },
);

kernelTest(
  "trace.ts --json attributes a child in a docker-named cgroup to it, and --cgroup keeps only it",
  async (t) => {
    const dir = realScratch(["c1", "c2"]);
    const scope = dockerScope();
    let inside: Unlinker | undefined, outside: Unlinker | undefined;
    let traced!: Traced, expected!: Record<string, unknown> & { argv: string[]; auid: number };
    try {
      // The shell sets a login uid where it can, and appends an argument that is not UTF-8.
      inside = await spawnUnlinker([`unlink:${dir}/c1`], {
        wrap: inCgroup(
          scope.dir,
          `{ echo 4242 > /proc/self/loginuid; } 2>/dev/null; exec "$@" "unlink:${dir}/bad$(printf '\\377')arg"`,
        ),
      });
      outside = await spawnUnlinker([`unlink:${dir}/c2`]);
      const [a, b] = [inside, outside];
      expected = {
        pid: a.pid,
        tid: a.pid,
        ppid: Deno.pid,
        auid: loginuid(a.pid),
        cgroup_id: scope.inode,
        cgroup: scope.path,
        container: scope.id,
        mntns: mntns(a.pid),
        ...expectedArgv(a.pid),
      };
      traced = await traceJson(
        ["--cgroup", scope.path, "-n", "dbpf_unlinker", "--path", dir],
        async () => {
          await Promise.all([a.go(), b.go()]);
        },
      );
    } finally {
      Deno.removeSync(dir, { recursive: true });
      await removeCgroup(scope.dir);
    }
    await t.step("only the child in the cgroup is traced", () => {
      assert.deepEqual(traced.events.map((e) => [e.filename, e.ret]), [
        [`${dir}/c1`, 0],
        [`${dir}/bad\ufffdarg`, -2],
      ]);
    });
    await t.step("its cgroup, container, parent, login uid, argv and mount namespace", () => {
      assert.equal(expected.argv.at(-1), `unlink:${dir}/bad\ufffdarg`, "the raw argv");
      for (const e of traced.events) {
        const { pid, tid, ppid, auid, cgroup_id, cgroup, container, mntns, argv } = e;
        assert.deepEqual(
          {
            pid,
            tid,
            ppid,
            auid,
            cgroup_id,
            cgroup,
            container,
            mntns,
            argv,
            ...("argv_truncated" in e ? { argv_truncated: e.argv_truncated } : {}),
            ...("argv_b64" in e ? { argv_b64: e.argv_b64 } : {}),
          },
          expected,
        );
      }
    });
    await t.step("its parent's comm is the parent process's, as /proc/PPID/comm says", () => {
      // real_parent is the thread that forked, here a runtime worker thread:
      // pcomm must name its process, as ppid does.
      const comm = Deno.readTextFileSync(`/proc/${Deno.pid}/comm`).trim();
      assert.deepEqual(traced.events.map((e) => e.pcomm), traced.events.map(() => comm));
    });
    await t.step("the login uid is the one the shell set, where the kernel allows it", () => {
      if (expected.auid !== UNSET_AUID) assert.equal(expected.auid, 4242);
      else console.log("no settable /proc/self/loginuid here: auid checked as unset");
    });
  },
);

kernelTest(
  "trace.ts --path, --tid, --cgroup and --rmdir keep exactly the matching deletions",
  async (t) => {
    const method = await methodHere();
    const fk = hasInodeFacts(method);
    const dir = realScratch([
      ...["in/", "in/f", "in/sub/", "in/sub/g", "inx", "out/", "out/h", "also", "out/z", "in/k"],
      ...["in/d1/", "in/d2/", "out/d3/", "in/notempty/", "in/notempty/x", "in/c2f"],
    ]);
    const facts = Object.fromEntries(
      ["in/f", "in/sub/g", "also", "in/k", "in/d1", "in/d2", "in/notempty"].map((
        name,
      ) => [name, stat(`${dir}/${name}`)]),
    );
    const scope = dockerScope();
    let traced: Traced | undefined;
    let results: UnlinkResult[] = [];
    try {
      const mine = await spawnUnlinker([
        "unlink:f",
        `unlink:${dir}/in/sub/g`,
        `unlink:${dir}/inx`,
        `unlink:${dir}/out/h`,
        `unlink:${dir}/also`,
        "unlink:../out/z",
        `chdir:${dir}/out`,
        "unlink:../in/k",
        `unlink:${dir}/in/missing`,
        `rmdir:${dir}/in/d1`,
        `rmdir2:${dir}/in/d2`,
        `rmdir2:${dir}/out/d3`,
        `rmdir:${dir}/in/notempty`,
      ], { cwd: `${dir}/in`, wrap: inCgroup(scope.dir) });
      const other = await spawnUnlinker([`unlink:${dir}/in/c2f`], { wrap: inCgroup(scope.dir) });
      traced = await traceJson(
        [
          ...["--path", `${dir}/in`, "--path", `${dir}/also`, "--tid", String(mine.pid)],
          ...["--cgroup", scope.dir, "--rmdir"],
        ],
        async () => {
          [results] = await Promise.all([mine.go(), other.go()]);
        },
      );
    } finally {
      Deno.removeSync(dir, { recursive: true });
      await removeCgroup(scope.dir);
    }
    const events = traced.events;
    await t.step("the child's ops did what the test expects", () => {
      assertResults(results, { [`${dir}/in/missing`]: 2, [`${dir}/in/notempty`]: 39 });
    });
    await t.step("only names under a prefix, by that thread, are reported, in order", () => {
      // Absolute names outside every prefix (inx, out/h, out/d3) must not
      // pass: the kernel checks them itself; only names with . or .. pass
      // it, and user space checks them once folded.
      assert.deepEqual(events.map((e) => [e.op, e.filename, e.path, e.error]), [
        ["unlink", "f", `${dir}/in/f`, null],
        ["unlink", `${dir}/in/sub/g`, `${dir}/in/sub/g`, null],
        ["unlink", `${dir}/also`, `${dir}/also`, null],
        ["unlink", "../in/k", `${dir}/in/k`, null],
        ["unlink", `${dir}/in/missing`, `${dir}/in/missing`, "ENOENT"],
        ["rmdir", `${dir}/in/d1`, `${dir}/in/d1`, null],
        ["rmdir", `${dir}/in/d2`, `${dir}/in/d2`, null],
        ["rmdir", `${dir}/in/notempty`, `${dir}/in/notempty`, "ENOTEMPTY"],
      ]);
    });
    await t.step("a relative name with .. is matched after folding", () => {
      const e = one(traced!, "../in/k");
      assert.equal(e.path_status, fk ? "ok" : "lexical");
      assert.equal(e.dfd, "AT_FDCWD");
    });
    await t.step("rmdir(2), unlinkat AT_REMOVEDIR and a failed rmdir carry their facts", () => {
      assertFacts(one(traced!, `${dir}/in/d1`), method, facts["in/d1"]);
      assertFacts(one(traced!, `${dir}/in/d2`), method, facts["in/d2"]);
      assertFacts(one(traced!, `${dir}/in/notempty`), method, facts["in/notempty"]);
      assertFacts(one(traced!, "f"), method, facts["in/f"]);
    });
    await t.step("every event is from the chosen thread and cgroup", () => {
      for (const e of events) {
        assert.deepEqual([e.tid, e.cgroup, e.container], [events[0].pid, scope.path, scope.id]);
      }
    });
  },
);

kernelTest(
  "trace.ts --rename reports a rename over an existing file, or is refused on tracepoints",
  async (t) => {
    await t.step("trace.ts --mode tracepoint --rename says why in one line, exit 2", async () => {
      const run = await runScript([
        "--mode",
        "tracepoint",
        "--rename",
        "--json",
        "--duration",
        "1",
      ]);
      assert.equal(run.code, 2, run.stderr);
      assert.equal(run.stderr.trimEnd().split("\n").length, 1, run.stderr);
      assert.match(run.stderr, /--rename/);
      assert.match(run.stderr, /fentry|kprobe|tracepoint/, "it names the methods that can");
      assert.equal(run.stdout, "");
    });
    const method = await methodHere();
    if (!hasInodeFacts(method)) {
      console.log(`${method}: no rename_replace events to see here`);
      return;
    }
    const dir = realScratch(["r1", "r3", "r5"]);
    Deno.writeTextFileSync(`${dir}/r2`, "x".repeat(100));
    const replaced = stat(`${dir}/r2`);
    let traced: Traced | undefined;
    try {
      const child = await spawnUnlinker([
        `rename:${dir}/r1:${dir}/r2`,
        `rename:${dir}/r3:${dir}/r4`,
        `unlink:${dir}/r5`,
      ]);
      traced = await traceJson(
        ["--rename", "-p", String(child.pid), "-n", "dbpf_unlinker", "--path", dir],
        async () => {
          assertResults(await child.go());
        },
      );
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
    await t.step("the replaced file is the one reported, with its facts", () => {
      assert.deepEqual(traced!.events.map((e) => [e.op, e.path, e.ret]), [
        ["rename_replace", `${dir}/r2`, 0],
        ["unlink", `${dir}/r5`, 0],
      ]);
      assertFacts(traced!.events[0], method, replaced, 0);
    });
  },
);

kernelTest(
  "trace.ts text mode shows the absolute path escaped, and --raw-names the name as passed",
  async () => {
    const dir = realScratch(["f", "sub/"]);
    const args = ["--rmdir", "-n", "dbpf_unlinker"];
    const control = "new\nline\x1b[31m";
    Deno.writeTextFileSync(`${dir}/${control}`, "");
    const bad = new Uint8Array([0x62, 0x61, 0x64, 0xff]);
    let text = "", raw = "";
    try {
      const child = await spawnUnlinker(
        [
          ...["unlink:f", `unlinkat:${control}`, `touchhex:${hex(bad)}`, `unlinkhex:${hex(bad)}`],
          "rmdir:sub",
        ],
        { cwd: dir },
      );
      // Both tracers watch the same child, one attached inside the other's run.
      const p = ["-p", String(child.pid), "--path", dir];
      const outer = await traceWhile([...args, ...p], async () => {
        const inner = await traceWhile([...args, ...p, "--raw-names"], async () => {
          assertResults(await child.go());
        });
        assert.equal(inner.code, 0, inner.stderr);
        raw = inner.stdout;
      });
      assert.equal(outer.code, 0, outer.stderr);
      text = outer.stdout;
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
    const names = (stdout: string) =>
      stdout.trimEnd().split("\n").slice(1).map((row) => {
        const columns = /^\d\d:\d\d:\d\d\.\d{3} .{7} .{16} .{12} .{9} (.*)$/su.exec(row);
        assert.ok(columns, row);
        return columns[1];
      });
    assert.deepEqual(names(text), [
      `${dir}/f`,
      `${dir}/new\\x0aline\\x1b[31m`,
      `${dir}/bad\\xff`,
      `[rmdir] ${dir}/sub`,
    ]);
    assert.deepEqual(names(raw), ["f", "new\\x0aline\\x1b[31m", "bad\\xff", "[rmdir] sub"]);
  },
);

Deno.test("normalizePath folds . and .. lexically and keeps .. at the root", () => {
  assert.equal(normalizePath("/tmp/x/a/../b"), "/tmp/x/b");
  assert.equal(normalizePath("/tmp//x/./f"), "/tmp/x/f");
  assert.equal(normalizePath("/../../etc/passwd"), "/etc/passwd");
  assert.equal(normalizePath("/"), "/");
  assert.equal(normalizePath("a/../b"), "a/../b");
});
