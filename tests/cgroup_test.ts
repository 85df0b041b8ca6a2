/**
 * Cgroup v2 ids become paths and container ids, and paths become ids: the
 * parsers on tables, and the native shell on real cgroups made for the test.
 */

import assert from "node:assert/strict";
import {
  cgroup2Mount,
  cgroupCandidates,
  cgroupIdOf,
  CgroupNames,
  cgroupPathUnder,
  containerOf,
  type DirEntry,
  type DirReader,
  NAME_CACHE_BYTES,
  NAME_CACHE_ENTRIES,
  NameCache,
  parseMountinfo,
  TreeWalk,
} from "../lib/unlink/_cgroup.ts";
import { kernelTest, ROOT } from "./_helpers.ts";

const A = "4a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293";
const B = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const POD_UID = "7b9b3e1c-2f1e-4a8e-9d3c-5b1f0e2a7c44";
const POD_SLICE = "kubepods-burstable-pod7b9b3e1c_2f1e_4a8e_9d3c_5b1f0e2a7c44.slice";

const CONTAINERS: [string, string | null][] = [
  // docker, systemd and cgroupfs drivers
  [`/system.slice/docker-${A}.scope`, A],
  [`/docker/${A}`, A],
  [`/system.slice/docker-${A}.scope/init.scope`, A],
  [`/system.slice/docker-${A}.scope/system.slice/cron.service`, A],
  [`/docker/${A}/docker/${B}`, B],
  // containerd's CRI plugin
  [`/system.slice/cri-containerd-${A}.scope`, A],
  [`/kubepods.slice/kubepods-burstable.slice/${POD_SLICE}/cri-containerd-${A}.scope`, A],
  [`/kubepods/besteffort/pod${POD_UID}/${A}`, A],
  [`/kubepods/pod${POD_UID}/${A}`, A],
  [`/kubepods.slice/kubepods-besteffort.slice/${POD_SLICE}/docker-${A}.scope`, A],
  // cri-o
  [`/kubepods.slice/kubepods-burstable.slice/${POD_SLICE}/crio-${A}.scope`, A],
  [`/kubepods/burstable/pod${POD_UID}/crio-${A}`, A],
  [`/kubepods.slice/kubepods-burstable.slice/${POD_SLICE}/crio-conmon-${A}.scope`, null],
  // podman
  [`/machine.slice/libpod-${A}.scope`, A],
  [`/machine.slice/libpod-${A}.scope/container`, A],
  [`/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-${A}.scope`, A],
  [`/machine.slice/libpod-conmon-${A}.scope`, null],
  [`/libpod_parent/libpod-${A}`, A],
  // not containers
  ["/", null],
  ["", null],
  ["/system.slice/ssh.service", null],
  ["/user.slice/user-0.slice/session-3.scope", null],
  ["/init.scope", null],
  [`/kubepods.slice/kubepods-burstable.slice/${POD_SLICE}`, null],
  [`/kubepods/burstable/pod${POD_UID}`, null],
  [`/${A}`, null], // a bare id with no runtime around it
  [`/system.slice/${A}`, null],
  [`/pod${POD_UID}/${A}`, null], // a pod-like name outside kubepods
  [`/system.slice/docker-${A.slice(1)}.scope`, null], // 63 digits
  [`/system.slice/docker-${A}0.scope`, null], // 65 digits
  [`/system.slice/docker-${A.toUpperCase()}.scope`, null],
  [`/system.slice/docker-${A}.service`, null],
  ["/system.slice/docker.service", null],
  ["/system.slice/containerd.service", null],
];

Deno.test("containerOf finds the container id in each runtime's cgroup layout", () => {
  for (const [path, id] of CONTAINERS) assert.equal(containerOf(path), id, path);
});

const HYBRID = `\
22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;

const UNIFIED = `\
25 1 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
28 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`;

Deno.test("parseMountinfo reads ids, roots, mount points and types, skipping bad lines", () => {
  assert.deepEqual(parseMountinfo(`${HYBRID}garbage\n\n`).map((m) => m.fsType), [
    "sysfs",
    "tmpfs",
    "cgroup",
    "cgroup",
    "cgroup2",
  ]);
  assert.deepEqual(parseMountinfo(UNIFIED)[1], {
    mountId: 28,
    root: "/",
    mountPoint: "/sys/fs/cgroup",
    fsType: "cgroup2",
  });
});

Deno.test("cgroup2Mount finds the v2 hierarchy in hybrid and unified layouts", () => {
  assert.equal(cgroup2Mount(parseMountinfo(HYBRID))?.mountPoint, "/sys/fs/cgroup/unified");
  assert.equal(cgroup2Mount(parseMountinfo(UNIFIED))?.mountPoint, "/sys/fs/cgroup");
  assert.equal(cgroup2Mount(parseMountinfo(HYBRID.replace(/^41 .*\n/m, ""))), undefined);
  assert.equal(cgroup2Mount([]), undefined);
});

Deno.test("cgroup2Mount decodes mountinfo's octal escapes in the mount point", () => {
  const text = "50 22 0:40 / /mnt/my\\040cgroups\\011tab\\134x rw - cgroup2 none rw\n";
  assert.equal(cgroup2Mount(parseMountinfo(text))?.mountPoint, "/mnt/my cgroups\ttab\\x");
});

Deno.test("cgroup2Mount prefers the mount that shows the whole hierarchy", () => {
  const text = `\
60 1 0:38 /system.slice/x.service /run/x/cgroup rw - cgroup2 cgroup2 rw
61 1 0:38 / /sys/fs/cgroup rw,relatime shared:4 master:1 - cgroup2 cgroup2 rw
`;
  assert.equal(cgroup2Mount(parseMountinfo(text))?.mountId, 61);
  assert.equal(cgroup2Mount(parseMountinfo(text.split("\n")[0]))?.root, "/system.slice/x.service");
});

Deno.test("cgroupCandidates reads a path under the mount as a file, any other as a cgroup first", () => {
  const m = "/sys/fs/cgroup/unified";
  const table: [string, string[]][] = [
    [m, [m]],
    [`${m}/x.slice`, [`${m}/x.slice`]],
    ["/", [m, "/"]],
    ["/system.slice/x.service", [`${m}/system.slice/x.service`, "/system.slice/x.service"]],
    ["/system.slice/", [`${m}/system.slice`, "/system.slice/"]],
    ["/sys/fs/cgroup/unifiedx", [`${m}/sys/fs/cgroup/unifiedx`, "/sys/fs/cgroup/unifiedx"]],
    ["x.slice", ["x.slice", `${m}/x.slice`]],
  ];
  for (const [path, want] of table) assert.deepEqual(cgroupCandidates(path, m), want, path);
  assert.deepEqual(cgroupCandidates("/a", "/"), ["/a"]);
});

Deno.test("cgroupPathUnder gives the cgroup path of a directory on the mount", () => {
  const m = "/sys/fs/cgroup/unified";
  assert.equal(cgroupPathUnder(m, m), "/");
  assert.equal(cgroupPathUnder(`${m}/a/b.scope`, m), "/a/b.scope");
  assert.equal(cgroupPathUnder(`${m}x/a`, m), undefined);
  assert.equal(cgroupPathUnder("/tmp", m), undefined);
  assert.equal(cgroupPathUnder("/a/b", "/"), "/a/b");
  assert.equal(cgroupPathUnder("/", "/"), "/");
});

function clock() {
  const c = { t: 1000, now: () => c.t };
  return c;
}

Deno.test("NameCache keeps at most its capacity, dropping the least recently used", () => {
  const cache = new NameCache((id) => `/cg${id}`, { capacity: 3 });
  for (const id of [1n, 2n, 3n]) cache.get(id);
  cache.get(1n); // 2 is now the least recently used
  cache.get(4n);
  assert.equal(cache.size, 3);
  assert.equal(cache.lookups, 4);
  cache.get(1n);
  cache.get(3n);
  cache.get(4n);
  assert.equal(cache.lookups, 4, "1, 3 and 4 stayed");
  assert.equal(cache.get(2n), "/cg2");
  assert.equal(cache.lookups, 5, "2 was dropped");
});

Deno.test("NameCache looks an unknown id up again only after the retry interval", () => {
  const c = clock();
  let known = false;
  const cache = new NameCache((id) => known ? `/cg${id}` : null, { retryMs: 5000, now: c.now });
  for (let i = 0; i < 10_000; i++) assert.equal(cache.get(7n), null);
  assert.equal(cache.lookups, 1);
  known = true;
  c.t += 4999;
  assert.equal(cache.get(7n), null);
  c.t += 1;
  assert.equal(cache.get(7n), "/cg7");
  assert.equal(cache.lookups, 2);
});

Deno.test("NameCache bounds the unknown ids it remembers, too", () => {
  const cache = new NameCache(() => null, { capacity: 2, now: () => 0 });
  for (const id of [1n, 2n, 3n]) cache.get(id);
  cache.get(3n);
  cache.get(2n);
  assert.equal(cache.lookups, 3);
  cache.get(1n);
  assert.equal(cache.lookups, 4, "the oldest unknown id was forgotten");
});

Deno.test("NameCache keeps the names a lookup learns on the way", () => {
  const cache: NameCache = new NameCache((id) => {
    for (const other of [10n, 11n, 12n]) cache.set(other, `/walked${other}`);
    return id === 10n ? "/walked10" : null;
  });
  assert.equal(cache.get(10n), "/walked10");
  assert.equal(cache.get(12n), "/walked12");
  assert.equal(cache.lookups, 1);
});

Deno.test("NameCache stays at its bound for 200,000 distinct ids, named or not", () => {
  const scope = (id: bigint) => `/user.slice/user-1000.slice/user@1000.service/run-r${id}.scope`;
  const named = new NameCache(scope, { now: () => 0 });
  const unknown = new NameCache(() => null, { now: () => 0 });
  for (let id = 1n; id <= 200_000n; id++) {
    named.get(id);
    unknown.get(id);
    assert.ok(named.size <= NAME_CACHE_ENTRIES && named.bytes <= NAME_CACHE_BYTES);
  }
  assert.equal(named.size, NAME_CACHE_ENTRIES);
  assert.equal(
    named.bytes,
    2 * [...Array(4096)].reduce((n, _, i) => n + scope(BigInt(200_000 - i)).length, 0),
  );
  assert.equal(named.get(200_000n), scope(200_000n));
  assert.equal(named.lookups, 200_000, "the newest stayed");
  assert.equal(unknown.unknownSize, NAME_CACHE_ENTRIES);
  assert.equal(unknown.size, 0);
});

Deno.test("NameCache bounds the text of long names, dropping the least recently used", () => {
  // A user can nest cgroups to a path of PATH_MAX: 1 MiB of text holds 128 of 4096 characters.
  const long = (id: bigint) => `/${String(id).padStart(4095, "x")}`;
  const cache = new NameCache(long);
  for (let id = 1n; id <= 1000n; id++) cache.get(id);
  assert.equal(cache.size, NAME_CACHE_BYTES / (2 * 4096));
  assert.equal(cache.bytes, NAME_CACHE_BYTES);
  const small = new NameCache((id) => `/${id}`, { maxBytes: 12 });
  for (const id of [10n, 20n, 30n]) small.get(id);
  assert.deepEqual([small.size, small.bytes], [2, 12], "/20 and /30 fill 12 bytes, /10 went");
  const tiny = new NameCache(long, { maxBytes: 1 });
  assert.equal(tiny.get(1n), long(1n));
  assert.equal(tiny.size, 1, "the newest name is kept even when it alone is over the bound");
});

Deno.test("NameCache.offer keeps a walked name while there is room, or for an id asked for", () => {
  const cache = new NameCache(() => null, { capacity: 2, now: () => 0 });
  assert.equal(cache.get(9n), null); // asked for, unknown
  assert.ok(cache.offer(1n, "/a"));
  assert.ok(cache.offer(2n, "/b"));
  assert.ok(!cache.offer(3n, "/c"), "full: a walked name does not push out one in use");
  assert.equal(cache.get(1n), "/a");
  assert.ok(cache.offer(9n, "/wanted"), "an id asked for is kept, pushing out the oldest");
  assert.deepEqual([cache.get(9n), cache.get(1n), cache.size], ["/wanted", "/a", 2]);
  assert.equal(cache.get(2n), null, "/b was the least recently used");
  assert.ok(cache.offer(1n, "/a2"), "a known id is updated");
  assert.equal(cache.get(1n), "/a2");
});

/** A cgroup tree as a table, read the way opendir and readdir read one; counts what is open. */
function tableTree(dirs: Record<string, string[]>) {
  const inos = new Map(Object.keys(dirs).map((p, i) => [p, BigInt(100 + i)]));
  const open = new Set<number>();
  let next = 0;
  const state = new Map<number, { entries: DirEntry[]; at: number }>();
  const reader: DirReader<number> = {
    open(path) {
      const children = dirs[path];
      if (!children) return null;
      const handle = next++;
      const entries: DirEntry[] = [
        { ino: inos.get(path)!, name: ".", dir: true },
        { ino: 1n, name: "..", dir: true },
        { ino: 2n, name: "cgroup.procs", dir: false },
        ...children.map((name) => {
          const child = path === "/" ? `/${name}` : `${path}/${name}`;
          return { ino: inos.get(child) ?? 3n, name, dir: true };
        }),
      ];
      state.set(handle, { entries, at: 0 });
      open.add(handle);
      return handle;
    },
    read(handle) {
      const s = state.get(handle)!;
      return s.entries[s.at++] ?? null;
    },
    close(handle) {
      assert.ok(open.delete(handle), "closed once");
    },
  };
  return { reader, inos, open };
}

Deno.test("TreeWalk reads 10,000 sibling cgroups in steps of at most its budget, each once", () => {
  const names = Array.from({ length: 10_000 }, (_, i) => `run-r${i}.scope`);
  const dirs: Record<string, string[]> = { "/": ["user.slice"], "/user.slice": names };
  for (const name of names) dirs[`/user.slice/${name}`] = [];
  const { reader, inos, open } = tableTree(dirs);
  const walk = new TreeWalk(reader);
  const found = new Map<string, bigint>();
  let steps = 0;
  let reads = 0;
  const counted: DirReader<number> = {
    open: (p) => (reads++, reader.open(p)),
    read: (d) => (reads++, reader.read(d)),
    close: reader.close,
  };
  const counting = new TreeWalk(counted);
  for (let before = 0; !counting.step(1024, (ino, path) => found.set(path, ino)); before = reads) {
    assert.ok(reads - before <= 1024, `step ${steps} read ${reads - before} entries`);
    steps++;
  }
  assert.equal(found.size, 10_002, "the root, user.slice and every scope");
  for (const [path, ino] of found) assert.equal(ino, inos.get(path), path);
  assert.ok(steps >= 20, `${steps} steps`);
  assert.equal(open.size, 0, "every directory was closed");
  assert.ok(walk.step(1, () => {}) === false && !walk.done, "a fresh walk has not begun");
  walk.close();
  assert.equal(open.size, 0, "close() closes the directory a paused walk is in");
});

Deno.test("TreeWalk stops at its limit of directories, and skips a directory removed meanwhile", () => {
  const dirs: Record<string, string[]> = {
    "/": ["a", "gone", "b"],
    "/a": ["c"],
    "/a/c": [],
    "/b": [],
  };
  const { reader } = tableTree(dirs);
  const all: string[] = [];
  new TreeWalk(reader).step(Infinity, (_, path) => all.push(path));
  assert.deepEqual(all.sort(), ["/", "/a", "/a/c", "/b", "/gone"]);
  const opened: string[] = [];
  const limited = new TreeWalk({ ...reader, open: (p) => (opened.push(p), reader.open(p)) }, 2);
  assert.ok(limited.step(Infinity, () => {}));
  assert.ok(limited.done);
  assert.deepEqual(opened, ["/", "/a"], "two directories read");
});

// ---------------------------------------------------------------------------
// Real cgroups

function mountPoint(): string {
  const mount = cgroup2Mount(parseMountinfo(Deno.readTextFileSync("/proc/self/mountinfo")));
  assert.ok(mount, "no cgroup2 mount");
  return mount.mountPoint;
}

function randomHex64(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** A fresh `docker-<id>.scope` cgroup under the v2 root, removed (rmdir) after `fn`. */
async function withDockerCgroup(
  fn: (dir: { id: string; path: string; fsPath: string; ino: bigint }) => Promise<void> | void,
): Promise<void> {
  const id = randomHex64();
  const path = `/docker-${id}.scope`;
  const fsPath = `${mountPoint()}${path}`;
  Deno.mkdirSync(fsPath);
  try {
    await fn({ id, path, fsPath, ino: BigInt(Deno.statSync(fsPath).ino!) });
  } finally {
    Deno.removeSync(fsPath);
  }
}

kernelTest(
  "cgroupIdOf gives the inode number of a cgroup, from its file path or its cgroup path",
  () =>
    withDockerCgroup(({ path, fsPath, ino }) => {
      assert.equal(cgroupIdOf(fsPath), ino);
      assert.equal(cgroupIdOf(path), ino);
      assert.equal(cgroupIdOf(`${path}/`), ino);
      assert.equal(cgroupIdOf("/"), BigInt(Deno.statSync(mountPoint()).ino!));
      assert.equal(cgroupIdOf(mountPoint()), cgroupIdOf("/"));
    }),
);

kernelTest(
  "CgroupNames names a docker-named cgroup by handle, and containerOf finds its id",
  () =>
    withDockerCgroup(({ id, path, ino }) => {
      using names = CgroupNames.open();
      assert.equal(names.mountPoint, mountPoint());
      assert.equal(names.name(ino), path);
      assert.equal(names.method, "handle");
      assert.equal(names.name(cgroupIdOf("/")), "/");
      assert.equal(containerOf(names.name(cgroupIdOf(path))!), id);
    }),
);

kernelTest(
  "CgroupNames names cgroups by walking the mount, at most once per retry interval",
  () =>
    withDockerCgroup(({ path, fsPath, ino }) => {
      const c = clock();
      using names = CgroupNames.open({ method: "walk", now: c.now, retryMs: 5000 });
      assert.equal(names.name(ino), path);
      assert.equal(names.name(cgroupIdOf("/")), "/", "the walk named the root too");
      Deno.mkdirSync(`${fsPath}/sub`);
      try {
        const sub = cgroupIdOf(`${fsPath}/sub`);
        assert.equal(names.name(sub), null, "no second walk within 5 s");
        c.t += 5000;
        assert.equal(names.name(sub), `${path}/sub`);
      } finally {
        Deno.removeSync(`${fsPath}/sub`);
      }
    }),
);

kernelTest(
  "CgroupNames gives null for a removed cgroup and asks the kernel once per interval",
  async () => {
    let gone = 0n;
    await withDockerCgroup(({ ino }) => {
      gone = ino;
    });
    using names = CgroupNames.open();
    for (let i = 0; i < 1000; i++) assert.equal(names.name(gone), null);
    assert.equal(names.name(1n << 60n), null);
    assert.equal(names.lookups, 2);
  },
);

kernelTest("CgroupNames does not name a cgroup file's id as a cgroup", () => {
  const file = `${mountPoint()}/cgroup.procs`;
  using names = CgroupNames.open();
  assert.equal(names.name(BigInt(Deno.statSync(file).ino!)), null);
});

kernelTest("CgroupNames closes once, and refuses to name after close", () => {
  const names = CgroupNames.open();
  names.close();
  names.close();
  assert.throws(() => names.name(1n), { name: "TypeError", message: "CgroupNames is closed" });
});

kernelTest(
  "a child moved into the cgroup shows its path in /proc/<pid>/cgroup",
  () =>
    withDockerCgroup(async ({ id, path, fsPath, ino }) => {
      const child = new Deno.Command("sh", {
        args: ["-c", 'echo $$ > "$1/cgroup.procs" && echo moved && exec sleep 5', "sh", fsPath],
        stdout: "piped",
      }).spawn();
      try {
        const reader = child.stdout.getReader();
        const { value } = await reader.read();
        reader.releaseLock();
        assert.equal(new TextDecoder().decode(value), "moved\n");
        const line = Deno.readTextFileSync(`/proc/${child.pid}/cgroup`)
          .split("\n").find((l) => l.startsWith("0::"));
        assert.equal(line, `0::${path}`);
        const reported = line!.slice(3);
        assert.equal(cgroupIdOf(reported), ino);
        using names = CgroupNames.open();
        assert.equal(names.name(ino), reported);
        assert.equal(containerOf(reported), id);
      } finally {
        child.kill("SIGKILL");
        await child.status;
        await child.stdout.cancel().catch(() => {});
      }
    }),
);

for (
  const [what, path, message] of [
    [
      "a tmpfs directory",
      "/dev/shm",
      /^"\/dev\/shm" is not a cgroup v2 directory \(\/dev\/shm is on tmpfs\)/,
    ],
    ["a missing cgroup", "/no-such.slice", /\(no such directory\)/],
    ["a cgroup's file", "/cgroup.procs", /cgroup\.procs is not a directory/],
    ["a relative path to nothing", "no-such.slice", /\(no such directory\)/],
  ] as const
) {
  kernelTest(`cgroupIdOf refuses ${what} in one line that says what to pass`, () => {
    assert.throws(() => cgroupIdOf(path), (e: Error) => {
      assert.ok(e instanceof TypeError);
      assert.match(e.message, message);
      assert.match(
        e.message,
        new RegExp(
          `; pass a path under ${mountPoint()} or a cgroup path like /system\\.slice/x\\.service$`,
        ),
      );
      assert.ok(!e.message.includes("\n"));
      return true;
    });
  });
}

kernelTest("cgroupIdOf refuses a cgroup v1 directory", () => {
  const v1 = parseMountinfo(Deno.readTextFileSync("/proc/self/mountinfo"))
    .find((m) => m.fsType === "cgroup");
  if (!v1) return; // a unified system has none
  assert.throws(() => cgroupIdOf(v1.mountPoint), {
    name: "TypeError",
    message: new RegExp(
      `^"${v1.mountPoint}" is not a cgroup v2 directory \\(${v1.mountPoint} is on cgroup\\)`,
    ),
  });
});

/** Runs a script that names the cgroup `path` with exactly `--allow-ffi --allow-env`. */
async function resolveInChild(path: string, prefix: string[] = []) {
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(
      script,
      `import { cgroupIdOf, CgroupNames } from "${ROOT}lib/unlink/_cgroup.ts";
using names = CgroupNames.open();
const id = cgroupIdOf(Deno.args[0]);
const name = names.name(id);
console.log(JSON.stringify({ id: String(id), name, method: names.method, mount: names.mountPoint }));
`,
    );
    const [cmd, ...pre] = [...prefix, Deno.execPath()];
    const out = await new Deno.Command(cmd, {
      args: [...pre, "run", "--no-prompt", "--allow-ffi", "--allow-env", script, path],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    return JSON.parse(new TextDecoder().decode(out.stdout));
  } finally {
    await Deno.remove(script);
  }
}

kernelTest("the cgroup resolver runs with exactly --allow-ffi --allow-env", async () => {
  assert.deepEqual(await resolveInChild("/"), {
    id: String(Deno.statSync(mountPoint()).ino),
    name: "/",
    method: "handle",
    mount: mountPoint(),
  });
});

kernelTest(
  "CgroupNames walks the mount when the kernel refuses handles (no CAP_DAC_READ_SEARCH)",
  () =>
    withDockerCgroup(async ({ path, ino }) => {
      const drop = ["setpriv", "--inh-caps=-dac_read_search", "--bounding-set=-dac_read_search"];
      assert.deepEqual(await resolveInChild(path, drop), {
        id: String(ino),
        name: path,
        method: "walk",
        mount: mountPoint(),
      });
    }),
);

kernelTest(
  "CgroupNames walks 3,000 real cgroups in bounded steps and names a late one on a later call",
  () => {
    const top = `${mountPoint()}/dbpf_walk_${Deno.pid}`;
    Deno.mkdirSync(top);
    const names = Array.from({ length: 3000 }, (_, i) => `run-r${i}.scope`);
    try {
      for (const name of names) Deno.mkdirSync(`${top}/${name}`);
      // readdir's own order: the last sibling listed is the last the walk meets.
      const listed = [...Deno.readDirSync(top)].filter((e) => e.isDirectory).map((e) => e.name);
      const last = listed.at(-1)!;
      const lastId = cgroupIdOf(`${top}/${last}`);
      const c = clock();
      using cgroups = CgroupNames.open({ method: "walk", now: c.now, retryMs: 5000 });
      const t0 = performance.now();
      assert.equal(cgroups.name(lastId), null, "one step does not reach it");
      const firstStepMs = performance.now() - t0;
      assert.equal(cgroups.name(lastId), null, "no step within 10 ms of the last");
      let calls = 0;
      while (cgroups.name(lastId) === null) {
        c.t += 10;
        assert.ok(++calls <= 5, "3,000 siblings take a few steps of 1024 entries");
      }
      assert.equal(cgroups.name(lastId), `/dbpf_walk_${Deno.pid}/${last}`);
      assert.equal(cgroups.lookups, 1, "named by the walk, not by another lookup");
      console.log(`first walk step: ${firstStepMs.toFixed(1)} ms; ${calls} more calls`);
    } finally {
      for (const name of names) Deno.removeSync(`${top}/${name}`);
      Deno.removeSync(top);
    }
  },
);
