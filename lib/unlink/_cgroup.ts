/**
 * Where a deleter runs: cgroup v2 ids to paths, paths to ids, and container
 * ids from paths.
 *
 * The BPF program reads `bpf_get_current_cgroup_id()`, which is the id of the
 * process's cgroup v2 directory: its inode number in the cgroup2 filesystem,
 * and the 8 bytes of the kernfs file handle that `name_to_handle_at(2)`
 * returns for it. So a path becomes an id through `name_to_handle_at`, and an
 * id becomes a path through `open_by_handle_at(2)` on the cgroup2 mount (root
 * has the CAP_DAC_READ_SEARCH it needs) and a readlink of the fd; without
 * that capability, through a walk of the mount by inode number.
 *
 * Everything native goes through libc (`lib/_ffi.ts`), never through Deno's
 * file APIs, so a script needs only `--allow-ffi --allow-env`. The parsers
 * (`containerOf`, `parseMountinfo`, `cgroup2Mount`) and the cache
 * (`NameCache`) are pure.
 *
 * @module
 */

import { ENOENT, ENOTDIR, EPERM } from "../errno.ts";
import { type Handle, ownFd } from "../_handle.ts";
import { c, checkErrno, cstr, failure, readCString } from "../_ffi.ts";
import { libc } from "./_libc.ts";
import { BpfError, NotSupportedError } from "../errors.ts";
import { readSmallFile } from "../_sys.ts";

// ---------------------------------------------------------------------------
// Container ids from cgroup paths (pure)

/** A runtime's scope or cgroup named after the container: `docker-<id>.scope`, `crio-<id>`… */
const RUNTIME_SCOPE = /^(?:docker|cri-containerd|crio|libpod)-([0-9a-f]{64})(?:\.scope)?$/;
const HEX64 = /^[0-9a-f]{64}$/;
/** A kubelet pod cgroup in the cgroupfs layout: `pod<uid>`. */
const POD = /^pod[0-9a-f_-]+$/;

/**
 * The container id (64 lowercase hex digits) that a cgroup v2 path names,
 * or `null` when the path follows no known runtime's layout.
 *
 * Known layouts, for the systemd and the cgroupfs cgroup drivers:
 * - docker: `/system.slice/docker-<id>.scope`, `/docker/<id>`;
 * - containerd's CRI plugin: `…/cri-containerd-<id>.scope`, and
 *   `/kubepods/<qos>/pod<uid>/<id>`;
 * - cri-o: `…/crio-<id>.scope`, `…/pod<uid>/crio-<id>`; its `crio-conmon-<id>.scope`
 *   holds the monitor, not the container, and gives `null`;
 * - podman: `/machine.slice/libpod-<id>.scope`, `/libpod_parent/libpod-<id>`;
 *   `libpod-conmon-<id>.scope` gives `null`.
 *
 * The deepest component that matches wins, so a container nested in another
 * (docker in docker, kind) is reported as the inner one, and a process in a
 * cgroup below a container's (systemd inside it) as that container.
 *
 * @example
 * ```ts
 * import { containerOf } from "./_cgroup.ts";
 *
 * const id = "3f4e".repeat(16);
 * console.assert(containerOf(`/system.slice/docker-${id}.scope`) === id);
 * console.assert(containerOf("/system.slice/ssh.service") === null);
 * ```
 */
export function containerOf(cgroupPath: string): string | null {
  const parts = cgroupPath.split("/").filter((part) => part !== "");
  for (let i = parts.length - 1; i >= 0; i--) {
    const scoped = RUNTIME_SCOPE.exec(parts[i]);
    if (scoped) return scoped[1];
    if (i === 0 || !HEX64.test(parts[i])) continue;
    const parent = parts[i - 1];
    if (parent === "docker") return parts[i];
    if (POD.test(parent) && parts.slice(0, i - 1).some((p) => p.startsWith("kubepods"))) {
      return parts[i];
    }
  }
  return null;
}

// ---------------------------------------------------------------------------
// The cgroup2 mount (pure)

/** One line of `/proc/self/mountinfo`, the fields this module uses. */
export interface MountEntry {
  /** The mount's id (field 1), as `name_to_handle_at(2)` reports it. */
  mountId: number;
  /** The directory of the filesystem that is mounted here (field 4), e.g. `/`. */
  root: string;
  /** Where it is mounted (field 5), e.g. `/sys/fs/cgroup/unified`. */
  mountPoint: string;
  /** The filesystem type, e.g. `cgroup2`. */
  fsType: string;
}

/** Decodes mountinfo's octal escapes (`\040` for a space, `\134` for a backslash). */
function unescapeMountinfo(field: string): string {
  return field.replace(
    /\\([0-7]{3})/g,
    (_, octal: string) => String.fromCharCode(parseInt(octal, 8)),
  );
}

/**
 * The mounts listed in `/proc/<pid>/mountinfo` text, in order. Lines that do
 * not parse are skipped.
 */
export function parseMountinfo(text: string): MountEntry[] {
  const mounts: MountEntry[] = [];
  for (const line of text.split("\n")) {
    // id parent major:minor root mount-point options [optional…] - fstype source super-options
    const fields = line.split(" ");
    const dash = fields.indexOf("-", 6);
    if (dash < 0 || dash + 1 >= fields.length) continue;
    const mountId = Number(fields[0]);
    if (!Number.isInteger(mountId)) continue;
    mounts.push({
      mountId,
      root: unescapeMountinfo(fields[3]),
      mountPoint: unescapeMountinfo(fields[4]),
      fsType: fields[dash + 1],
    });
  }
  return mounts;
}

/**
 * The cgroup v2 mount among `mounts`: the first whose type is `cgroup2` and
 * that shows the whole hierarchy (root `/`), else the first `cgroup2` one.
 * `/sys/fs/cgroup` on a unified system, `/sys/fs/cgroup/unified` on a
 * hybrid one (systemd's layout with v1 controllers).
 */
export function cgroup2Mount(mounts: readonly MountEntry[]): MountEntry | undefined {
  const v2 = mounts.filter((m) => m.fsType === "cgroup2");
  return v2.find((m) => m.root === "/") ?? v2[0];
}

/**
 * The places `cgroupIdOf` tries for `path`, in order: a path under the
 * mount point is a filesystem path; one starting with `/` is first a cgroup
 * path (`/system.slice/x.service`), then a filesystem path (another cgroup2
 * mount); a relative one is first relative to the cwd, then to the root cgroup.
 */
export function cgroupCandidates(path: string, mountPoint: string): string[] {
  const base = mountPoint.replace(/\/+$/, "");
  if (path === mountPoint || path === base || path.startsWith(`${base}/`)) return [path];
  const joined = `${base}/${path.replace(/^\/+/, "")}`.replace(/\/+$/, "") || "/";
  return path.startsWith("/") ? [joined, path] : [path, joined];
}

/**
 * The cgroup path (`/`, `/system.slice/ssh.service`) of a filesystem path
 * under `mountPoint`, or `undefined` if it is not under it.
 */
export function cgroupPathUnder(fsPath: string, mountPoint: string): string | undefined {
  const base = mountPoint.replace(/\/+$/, "");
  if (fsPath === base || fsPath === mountPoint) return "/";
  if (!fsPath.startsWith(`${base}/`)) return undefined;
  return fsPath.slice(base.length).replace(/\/+$/, "") || "/";
}

// ---------------------------------------------------------------------------
// The id → name cache (pure)

/** How many names a {@linkcode NameCache} keeps by default (and as many unknown ids). */
export const NAME_CACHE_ENTRIES = 4096;
/**
 * How much name text a {@linkcode NameCache} keeps by default, counted as 2
 * bytes per UTF-16 unit: 1 MiB. With the entries' own overhead (about 100
 * bytes each), the cache stays under 2 MiB whatever names and ids it meets.
 */
export const NAME_CACHE_BYTES = 1024 * 1024;

/** Options for {@linkcode NameCache}. */
export interface NameCacheOptions {
  /** How many names (and as many unknown ids) to keep; the least recently used go first. */
  capacity?: number;
  /** How much name text to keep, at 2 bytes per UTF-16 unit; the least recently used go first. */
  maxBytes?: number;
  /** How long an id that did not resolve stays unknown before it is looked up again (ms). */
  retryMs?: number;
  /** The clock, in ms (default `performance.now`). */
  now?: () => number;
}

/**
 * A bounded map from ids to names in front of a slow lookup: hits are kept
 * least-recently-used first out, within `capacity` names and `maxBytes` of
 * their text, and an id that the lookup could not name is not looked up
 * again for `retryMs`, so a storm of unknown ids costs at most one lookup per
 * id per interval. Any number of distinct ids leaves it at its bound.
 */
export class NameCache {
  readonly #lookup: (id: bigint) => string | null;
  readonly #names = new Map<bigint, string>();
  readonly #unknown = new Map<bigint, number>();
  readonly #capacity: number;
  readonly #maxBytes: number;
  readonly #retryMs: number;
  readonly #now: () => number;
  #bytes = 0;
  #lookups = 0;

  /**
   * @param lookup Names one id, or returns `null`; it may {@linkcode set} more.
   * @param options Capacity, byte bound, retry interval and clock.
   */
  constructor(lookup: (id: bigint) => string | null, options: NameCacheOptions = {}) {
    this.#lookup = lookup;
    this.#capacity = Math.max(1, options.capacity ?? NAME_CACHE_ENTRIES);
    this.#maxBytes = Math.max(1, options.maxBytes ?? NAME_CACHE_BYTES);
    this.#retryMs = options.retryMs ?? 5000;
    this.#now = options.now ?? (() => performance.now());
  }

  /** The name of `id`, or `null` when it is unknown (now, or at the last try within `retryMs`). */
  get(id: bigint): string | null {
    const name = this.#names.get(id);
    if (name !== undefined) {
      this.#names.delete(id);
      this.#names.set(id, name);
      return name;
    }
    const failedAt = this.#unknown.get(id);
    if (failedAt !== undefined && this.#now() - failedAt < this.#retryMs) return null;
    this.#lookups++;
    const found = this.#lookup(id);
    if (found === null) {
      this.#unknown.delete(id);
      this.#unknown.set(id, this.#now());
      if (this.#unknown.size > this.#capacity) {
        this.#unknown.delete(this.#unknown.keys().next().value!);
      }
      return null;
    }
    this.set(id, found);
    return found;
  }

  /** Remembers that `id` is named `name`, dropping the least recently used beyond the bounds. */
  set(id: bigint, name: string): void {
    this.#unknown.delete(id);
    this.#forget(id);
    this.#names.set(id, name);
    this.#bytes += 2 * name.length;
    while (
      this.#names.size > 1 && (this.#names.size > this.#capacity || this.#bytes > this.#maxBytes)
    ) {
      this.#forget(this.#names.keys().next().value!);
    }
  }

  /**
   * A name learnt on the way (a walk of the tree meets every cgroup): kept
   * if `id` was asked for and not found, or while the bounds leave room, so
   * that a walk over more cgroups than fit never pushes out names in use.
   * Returns whether it was kept.
   */
  offer(id: bigint, name: string): boolean {
    const room = this.#names.size < this.#capacity &&
      this.#bytes + 2 * name.length <= this.#maxBytes;
    if (!room && !this.#unknown.has(id) && !this.#names.has(id)) return false;
    this.set(id, name);
    return true;
  }

  #forget(id: bigint): void {
    const old = this.#names.get(id);
    if (old === undefined) return;
    this.#bytes -= 2 * old.length;
    this.#names.delete(id);
  }

  /** How many names are kept. */
  get size(): number {
    return this.#names.size;
  }

  /** How much name text is kept, at 2 bytes per UTF-16 unit. */
  get bytes(): number {
    return this.#bytes;
  }

  /** How many unknown ids are remembered. */
  get unknownSize(): number {
    return this.#unknown.size;
  }

  /** How many times the lookup ran. */
  get lookups(): number {
    return this.#lookups;
  }
}

// ---------------------------------------------------------------------------
// A walk of the cgroup tree in bounded steps (pure)

/** One directory entry, as {@linkcode TreeWalk} reads it. */
export interface DirEntry {
  /** Its inode number: a cgroup directory's is its cgroup id. */
  ino: bigint;
  /** Its name, `.` and `..` included. */
  name: string;
  /** Whether it is a directory. */
  dir: boolean;
}

/** What a {@linkcode TreeWalk} reads directories with: opendir(3) and readdir(3), or a table. */
export interface DirReader<D> {
  /** Opens the directory of a cgroup path (`/`, `/a/b`); `null` if it is gone. */
  open(cgroupPath: string): D | null;
  /** The next entry, or `null` at the end. */
  read(dir: D): DirEntry | null;
  /** Closes a directory that `open` returned. */
  close(dir: D): void;
}

/** The most directories one walk visits, so a huge hierarchy cannot keep it going. */
export const WALK_LIMIT = 100_000;

/**
 * A depth-first walk of a cgroup tree that stops after a given number of
 * entries and goes on from there at the next {@linkcode step}, even in the
 * middle of a directory: so no call does more than a bounded amount of
 * work, however many cgroups (siblings or nested) there are. Each directory
 * met, the root included, is handed to `found` with its cgroup path.
 */
export class TreeWalk<D> {
  readonly #reader: DirReader<D>;
  readonly #limit: number;
  readonly #stack: string[] = ["/"];
  #current: { path: string; dir: D } | undefined;
  #visited = 0;

  /**
   * @param reader How directories are read.
   * @param limit The most directories to visit (default {@linkcode WALK_LIMIT}).
   */
  constructor(reader: DirReader<D>, limit: number = WALK_LIMIT) {
    this.#reader = reader;
    this.#limit = limit;
  }

  /** Whether the walk has visited everything (or its limit). */
  get done(): boolean {
    return !this.#current && (this.#stack.length === 0 || this.#visited >= this.#limit);
  }

  /**
   * Reads at most `budget` entries (an open counts as one), calling `found`
   * for each directory. Returns whether the walk is done.
   */
  step(budget: number, found: (ino: bigint, cgroupPath: string) => void): boolean {
    for (let n = 0; n < budget; n++) {
      if (!this.#current) {
        if (this.done) return true;
        const path = this.#stack.pop()!;
        this.#visited++;
        const dir = this.#reader.open(path);
        if (dir !== null) this.#current = { path, dir }; // else removed meanwhile
        continue;
      }
      const { path, dir } = this.#current;
      const entry = this.#reader.read(dir);
      if (entry === null) {
        this.#reader.close(dir);
        this.#current = undefined;
        continue;
      }
      if (!entry.dir || entry.name === "..") continue;
      // A directory is named by its parent's entry; only the root by its ".".
      if (entry.name === ".") {
        if (path === "/") found(entry.ino, path);
        continue;
      }
      const child = path === "/" ? `/${entry.name}` : `${path}/${entry.name}`;
      found(entry.ino, child);
      // The paths still to visit stay within the limit too.
      if (this.#visited + this.#stack.length < this.#limit) this.#stack.push(child);
    }
    return this.done;
  }

  /** Closes the directory the walk is in, if any. Idempotent. */
  close(): void {
    if (this.#current) this.#reader.close(this.#current.dir);
    this.#current = undefined;
    this.#stack.length = 0;
  }
}

// ---------------------------------------------------------------------------
// Native shell

const O_RDONLY = 0;
const O_DIRECTORY = 0x10000;
const O_CLOEXEC = 0x80000;
const O_PATH = 0x200000;
const AT_EMPTY_PATH = 0x1000;
const FILEID_KERNFS = 0xfe;
const MAX_HANDLE_SZ = 128;
const PATH_MAX = 4096;
const DT_DIR = 4;
const MOUNTINFO_MAX = 4 * 1024 * 1024;
/**
 * A walk reads at most this many directory entries per call, and goes on at
 * most every WALK_PACE_MS: about a millisecond at a time (1.1 ms median on
 * the development host, 4.3 ms at most), so no hierarchy can stall the
 * caller, which drains its ring in between. Each cgroup directory holds some
 * 30 to 90 entries (its files), so 20,000 cgroups take about 20 s of calls
 * to walk; a cgroup met early is named at once.
 */
const WALK_STEP = 1024;
const WALK_PACE_MS = 10;

const SAMPLE_CGROUP = "/system.slice/x.service";

function mounts(): MountEntry[] {
  return parseMountinfo(readSmallFile("/proc/self/mountinfo", MOUNTINFO_MAX) ?? "");
}

function requireCgroup2(all: MountEntry[]): MountEntry {
  const mount = cgroup2Mount(all);
  if (mount) return mount;
  throw new NotSupportedError(
    "a mounted cgroup v2 hierarchy (no cgroup2 in /proc/self/mountinfo)",
    "one for cgroup names: mount -t cgroup2 none /sys/fs/cgroup",
  );
}

/** A `struct file_handle` with room for any handle. */
function emptyHandle(): Uint8Array<ArrayBuffer> {
  const handle = new Uint8Array(8 + MAX_HANDLE_SZ);
  new DataView(handle.buffer).setUint32(0, MAX_HANDLE_SZ, true);
  return handle;
}

type Probe =
  | { kind: "cgroup"; id: bigint }
  | { kind: "missing" }
  | { kind: "other"; why: string };

/** What the directory at `path` is: a cgroup2 directory (and its id), missing, or something else. */
function probe(path: string, all: MountEntry[]): Probe {
  const fd = c().open(cstr(path), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    const error = failure(`open ${path}`);
    if (error.errno === ENOENT) return { kind: "missing" };
    if (error.errno === ENOTDIR) return { kind: "other", why: `${path} is not a directory` };
    throw error;
  }
  try {
    const handle = emptyHandle();
    const mountId = new Int32Array(1);
    const ret = libc().name_to_handle_at(
      fd,
      cstr(""),
      handle,
      new Uint8Array(mountId.buffer),
      AT_EMPTY_PATH,
    );
    if (ret < 0) {
      const error = failure(`get a handle for ${path}`);
      return { kind: "other", why: `${path} has no file handle (${error.code})` };
    }
    const fsType = all.find((m) => m.mountId === mountId[0])?.fsType ?? "an unknown filesystem";
    const view = new DataView(handle.buffer);
    if (fsType !== "cgroup2") return { kind: "other", why: `${path} is on ${fsType}` };
    if (view.getInt32(4, true) !== FILEID_KERNFS || view.getUint32(0, true) !== 8) {
      return { kind: "other", why: `${path} has no kernfs handle` };
    }
    return { kind: "cgroup", id: view.getBigUint64(8, true) };
  } finally {
    c().close(fd);
  }
}

/**
 * The cgroup v2 id of a cgroup, as `bpf_get_current_cgroup_id()` returns it
 * for the processes in it: for `trace.ts --cgroup PATH`.
 *
 * `path` is either a directory on the cgroup2 mount
 * (`/sys/fs/cgroup/unified/system.slice/x.service`) or a cgroup path as
 * `/proc/<pid>/cgroup` and {@linkcode CgroupNames} show it
 * (`/system.slice/x.service`, `/` for the root).
 *
 * @throws {TypeError} when `path` names no cgroup v2 directory, in one line
 *   that says what to pass instead.
 * @throws {NotSupportedError} when no cgroup2 filesystem is mounted.
 * @throws {BpfError} when the path cannot be examined (EACCES…).
 *
 * @example
 * ```ts
 * import { cgroupIdOf } from "./_cgroup.ts";
 *
 * export function rootId(): bigint {
 *   return cgroupIdOf("/");
 * }
 * ```
 */
export function cgroupIdOf(path: string): bigint {
  const all = mounts();
  const mount = requireCgroup2(all);
  let why: string | undefined;
  for (const candidate of cgroupCandidates(path, mount.mountPoint)) {
    const found = probe(candidate, all);
    if (found.kind === "cgroup") return found.id;
    if (found.kind === "other") why ??= found.why;
  }
  throw new TypeError(
    `"${path}" is not a cgroup v2 directory (${why ?? "no such directory"}); ` +
      `pass a path under ${mount.mountPoint} or a cgroup path like ${SAMPLE_CGROUP}`,
  );
}

/** Options for {@linkcode CgroupNames.open}. */
export interface CgroupNamesOptions extends NameCacheOptions {
  /**
   * How ids are resolved: `"handle"` (open_by_handle_at, which needs
   * CAP_DAC_READ_SEARCH), `"walk"` (read the mount's directories by inode
   * number), or `"auto"` (default): the handle, and the walk once the kernel
   * refuses it.
   */
  method?: "auto" | "handle" | "walk";
}

/**
 * Names cgroup v2 ids (`bpf_get_current_cgroup_id()`): `name(id)` gives the
 * cgroup path relative to the cgroup2 root, as `/proc/<pid>/cgroup` shows it
 * on the host (`/system.slice/ssh.service`), or `null` for an id that is no
 * longer (or not yet visibly) a cgroup.
 *
 * Names are cached (at most 4096 and 1 MiB of their text by default, least
 * recently used out first: see {@linkcode NameCache}), and an id that did
 * not resolve is tried again at most every `retryMs` (5 s by default). With
 * CAP_DAC_READ_SEARCH an unknown id costs one `open_by_handle_at(2)`.
 * Without it, a walk of the whole mount starts at most once per `retryMs`
 * and runs in steps of at most 1024 directory entries, one step per call at
 * most every 10 ms, so no call stalls on a large hierarchy: an id the first
 * step does not reach is named by a later step, for its next event. A walk
 * keeps the names it meets only while the cache has room, and those of ids
 * asked for. An id is never reused while the system runs, so a cached name
 * stays right, unless the cgroup is renamed.
 *
 * Owns an fd of the cgroup2 mount: close it, or use `using`.
 *
 * @example Name the cgroup of this process
 * ```ts
 * import { CgroupNames, cgroupIdOf } from "./_cgroup.ts";
 *
 * export function rootName(): string | null {
 *   using names = CgroupNames.open();
 *   return names.name(cgroupIdOf("/"));
 * }
 * ```
 */
export class CgroupNames implements Disposable {
  #fd: Handle<number>;
  readonly #mountPoint: string;
  #method: "handle" | "walk";
  readonly #fallback: boolean;
  readonly #cache: NameCache;
  readonly #retryMs: number;
  readonly #now: () => number;
  #lastWalk = -Infinity;
  #walk: TreeWalk<Deno.PointerObject> | undefined;
  #lastStep = -Infinity;

  private constructor(fd: number, mountPoint: string, options: CgroupNamesOptions) {
    this.#fd = ownFd(fd);
    this.#mountPoint = mountPoint;
    this.#method = options.method === "walk" ? "walk" : "handle";
    this.#fallback = (options.method ?? "auto") === "auto";
    this.#retryMs = options.retryMs ?? 5000;
    this.#now = options.now ?? (() => performance.now());
    this.#cache = new NameCache((id) => this.#lookup(id), options);
  }

  /** Finds the cgroup2 mount in /proc/self/mountinfo and opens it. */
  static open(options: CgroupNamesOptions = {}): CgroupNames {
    const mount = requireCgroup2(mounts());
    const fd = checkErrno(
      c().open(cstr(mount.mountPoint), O_RDONLY | O_DIRECTORY | O_CLOEXEC),
      `open the cgroup2 mount ${mount.mountPoint}`,
    );
    return new CgroupNames(fd, mount.mountPoint, options);
  }

  /** Where the cgroup2 hierarchy is mounted, e.g. `/sys/fs/cgroup/unified`. */
  get mountPoint(): string {
    return this.#mountPoint;
  }

  /** How ids are resolved now: `"walk"` once the kernel refused a handle. */
  get method(): "handle" | "walk" {
    return this.#method;
  }

  /** How many ids went to the kernel (for tests and stats). */
  get lookups(): number {
    return this.#cache.lookups;
  }

  /** The cgroup path of `id` (e.g. `/system.slice/ssh.service`), or `null` if none is known. */
  name(id: bigint): string | null {
    this.#live();
    if (this.#walk && this.#now() - this.#lastStep >= WALK_PACE_MS) this.#step(-1n);
    return this.#cache.get(id);
  }

  #live(): number {
    return this.#fd.use("CgroupNames");
  }

  #lookup(id: bigint): string | null {
    if (this.#method === "handle") {
      const found = this.#byHandle(id);
      if (found !== "refused") return found;
      this.#method = "walk";
    }
    return this.#byWalk(id);
  }

  /** open_by_handle_at on the mount, then the fd's path; "refused" without CAP_DAC_READ_SEARCH. */
  #byHandle(id: bigint): string | null | "refused" {
    const handle = new Uint8Array(16);
    const view = new DataView(handle.buffer);
    view.setUint32(0, 8, true);
    view.setInt32(4, FILEID_KERNFS, true);
    view.setBigUint64(8, id, true);
    const fd = libc().open_by_handle_at(this.#live(), handle, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      const error = failure(`open cgroup ${id} by handle`);
      if (error.errno === EPERM && this.#fallback) return "refused";
      if (error.errno === EPERM) {
        throw new BpfError(`open cgroup ${id} by handle`, EPERM, {
          hint: 'it needs CAP_DAC_READ_SEARCH; use method "walk" without it',
        });
      }
      return null; // ESTALE: removed, or never a cgroup; ENOTDIR: a file's id
    }
    try {
      const buf = new Uint8Array(PATH_MAX);
      const n = Number(libc().readlink(cstr(`/proc/self/fd/${fd}`), buf, BigInt(PATH_MAX)));
      if (n < 0 || n >= PATH_MAX) return null;
      const fsPath = new TextDecoder().decode(buf.subarray(0, n)).replace(/ \(deleted\)$/, "");
      return cgroupPathUnder(fsPath, this.#mountPoint) ?? null;
    } finally {
      c().close(fd);
    }
  }

  /** Starts a walk of the mount, at most once per `retryMs`, and takes its first step. */
  #byWalk(id: bigint): string | null {
    if (!this.#walk) {
      const now = this.#now();
      if (now - this.#lastWalk < this.#retryMs) return null;
      this.#lastWalk = now;
      this.#walk = new TreeWalk(this.#dirs());
    }
    return this.#step(id);
  }

  /** One step of the walk in progress; returns `id`'s name if the step met it. */
  #step(id: bigint): string | null {
    let found: string | null = null;
    const done = this.#walk!.step(WALK_STEP, (ino, path) => {
      if (ino === id) found = path;
      this.#cache.offer(ino, path);
    });
    this.#lastStep = this.#now();
    if (done) {
      this.#walk!.close();
      this.#walk = undefined;
    }
    return found;
  }

  /** The mount's directories, through opendir(3) and readdir(3). */
  #dirs(): DirReader<Deno.PointerObject> {
    const base = this.#mountPoint.replace(/\/+$/, "");
    return {
      open: (path) => libc().opendir(cstr(path === "/" ? this.#mountPoint : base + path)),
      read: (dir) => {
        const entry = libc().readdir(dir);
        if (entry === null) return null;
        // struct dirent (64-bit glibc): d_ino u64 at 0, d_type u8 at 18, d_name at 19.
        const view = new Deno.UnsafePointerView(entry);
        return {
          ino: view.getBigUint64(0),
          dir: view.getUint8(18) === DT_DIR,
          name: readCString(Deno.UnsafePointer.offset(entry, 19)),
        };
      },
      close: (dir) => void libc().closedir(dir),
    };
  }

  /** Closes the mount's fd. Idempotent. */
  close(): void {
    if (this.#fd.value === null) return;
    this.#walk?.close();
    this.#walk = undefined;
    this.#fd.release();
  }

  /** Calls {@linkcode close}, for `using` declarations. */
  [Symbol.dispose](): void {
    this.close();
  }
}
