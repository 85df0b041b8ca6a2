/**
 * BPF maps from TypeScript: look up, update, delete and iterate, for a map of
 * a loaded {@linkcode BpfObject} ({@linkcode BpfMap}) and for a map pinned in
 * bpffs by another process ({@linkcode PinnedMap}). Keys and values are bytes
 * here; per-CPU maps hand back one value per possible CPU.
 *
 * @example Count unlinks per comm in a hash map, then read and clear it (needs root)
 * ```ts
 * import { BpfObject } from "./object.ts";
 *
 * export async function countFor(path: string, ms: number): Promise<void> {
 *   using obj = BpfObject.openFile(path);
 *   obj.load();
 *   using _link = obj.program("count_unlinks").attach();
 *   await new Promise((r) => setTimeout(r, ms));
 *   const counts = obj.map("counts");
 *   for (const [key, value] of counts.entries()) {
 *     const comm = new TextDecoder().decode(key).replace(/\0.*$/s, "");
 *     console.log(comm, new DataView(value.buffer).getBigUint64(0, true));
 *   }
 *   counts.clear();
 * }
 * ```
 *
 * @module
 */

import { EINVAL, ENOENT, ENOTSUPP, EOPNOTSUPP } from "./errno.ts";
import { type Handle, ownFd } from "./_handle.ts";
import { bpf, cstr, readCString } from "./_ffi.ts";
import { check } from "./errors.ts";
import type { AnyLayout, RecordOf } from "./layout.ts";
import { readSmallFile } from "./_sys.ts";

/** BPF map types by name (`enum bpf_map_type` in linux/bpf.h, without the prefix). */
export const MAP_TYPES = {
  hash: 1,
  array: 2,
  prog_array: 3,
  perf_event_array: 4,
  percpu_hash: 5,
  percpu_array: 6,
  stack_trace: 7,
  cgroup_array: 8,
  lru_hash: 9,
  lru_percpu_hash: 10,
  lpm_trie: 11,
  array_of_maps: 12,
  hash_of_maps: 13,
  devmap: 14,
  sockmap: 15,
  cpumap: 16,
  xskmap: 17,
  sockhash: 18,
  cgroup_storage: 19,
  reuseport_sockarray: 20,
  percpu_cgroup_storage: 21,
  queue: 22,
  stack: 23,
  sk_storage: 24,
  devmap_hash: 25,
  struct_ops: 26,
  ringbuf: 27,
  inode_storage: 28,
  task_storage: 29,
  bloom_filter: 30,
  user_ringbuf: 31,
  cgrp_storage: 32,
} as const;

/** A map type's name, e.g. `"ringbuf"`. */
export type MapType = keyof typeof MAP_TYPES;

const TYPE_NAMES = new Map<number, MapType>(
  Object.entries(MAP_TYPES).map(([name, n]) => [n, name as MapType]),
);

const PER_CPU = new Set<MapType>([
  "percpu_hash",
  "percpu_array",
  "lru_percpu_hash",
  "percpu_cgroup_storage",
]);

/** How {@linkcode MapHandle.update} treats an existing key. */
export type UpdateMode = "any" | "noexist" | "exist";
const UPDATE_FLAGS: Record<UpdateMode, bigint> = { any: 0n, noexist: 1n, exist: 2n };

/** The number of possible CPUs: per-CPU maps hold one value for each. */
export function possibleCpus(): number {
  return check(bpf().libbpf_num_possible_cpus(), "count the possible CPUs");
}

/** What a map is: read from its fd, so it works for pinned maps too. */
export interface MapInfo {
  /** The map's type. */
  type: MapType | `type_${number}`;
  /** The kernel's id for the map. */
  id: number;
  /** The size of one key in bytes. */
  keySize: number;
  /** The size of one value in bytes (one CPU's, for a per-CPU map). */
  valueSize: number;
  /** `max_entries`. */
  maxEntries: number;
  /** The map's name as the kernel keeps it (at most 15 bytes). */
  name: string;
}

function mapInfo(fd: number): MapInfo {
  // struct bpf_map_info: type, id, key_size, value_size, max_entries,
  // map_flags (u32 each), then char name[16]; the kernel fills what fits.
  const info = new Uint8Array(80);
  const len = new Uint32Array([info.length]);
  check(
    bpf().bpf_obj_get_info_by_fd(fd, info, new Uint8Array(len.buffer)),
    `read the info of map fd ${fd}`,
  );
  const v = new DataView(info.buffer);
  const type = v.getUint32(0, true);
  const name = info.subarray(24, 40);
  return {
    type: TYPE_NAMES.get(type) ?? `type_${type}`,
    id: v.getUint32(4, true),
    keySize: v.getUint32(8, true),
    valueSize: v.getUint32(12, true),
    maxEntries: v.getUint32(16, true),
    name: new TextDecoder().decode(name.subarray(0, Math.max(0, name.indexOf(0)))),
  };
}

/**
 * The operations every loaded map has. Keys and values are bytes; a per-CPU
 * map's value holds one 8-byte-aligned slot per possible CPU (see
 * {@linkcode MapHandle.valueBufferSize}).
 *
 * @example Sum a per-CPU counter at key 0
 * ```ts
 * import type { MapHandle } from "./map.ts";
 *
 * export function total(map: MapHandle): bigint {
 *   const value = map.lookup(new Uint8Array(map.keySize));
 *   if (!value) return 0n;
 *   let sum = 0n;
 *   for (const v of map.perCpuValues(value)) sum += new DataView(v.buffer, v.byteOffset).getBigUint64(0, true);
 *   return sum;
 * }
 * ```
 */
export abstract class MapHandle {
  /** The map's fd; throws a TypeError once the map's owner is closed. */
  protected abstract liveFd(): number;
  /** The map's name. */
  abstract get name(): string;

  #info: MapInfo | undefined;

  /** What the kernel says about the map, read once. */
  protected info(): MapInfo {
    const fd = this.liveFd();
    if (fd < 0) throw new TypeError(`Map "${this.name}" is not loaded yet`);
    return this.#info ??= mapInfo(fd);
  }

  /** The map's type, e.g. `"hash"` (`"type_N"` for a type newer than this table). */
  get type(): MapType | `type_${number}` {
    return this.info().type;
  }

  /** The size of one key in bytes. */
  get keySize(): number {
    return this.info().keySize;
  }

  /** The size of one value in bytes (one CPU's, for a per-CPU map). */
  get valueSize(): number {
    return this.info().valueSize;
  }

  /** `max_entries`: for a ring buffer, its size in bytes. */
  get maxEntries(): number {
    return this.info().maxEntries;
  }

  /** Whether the map keeps one value per possible CPU. */
  get perCpu(): boolean {
    return PER_CPU.has(this.type as MapType);
  }

  /** The bytes a looked-up value takes: `valueSize`, or one aligned slot per CPU. */
  get valueBufferSize(): number {
    const size = this.valueSize;
    return this.perCpu ? ((size + 7) & ~7) * possibleCpus() : size;
  }

  /**
   * Splits a per-CPU value read by {@linkcode lookup} into one view per CPU
   * (each `valueSize` bytes). For other maps, returns `[value]`.
   */
  perCpuValues(value: Uint8Array): Uint8Array[] {
    if (!this.perCpu) return [value];
    const stride = (this.valueSize + 7) & ~7;
    const out: Uint8Array[] = [];
    for (let at = 0; at + stride <= value.length; at += stride) {
      out.push(value.subarray(at, at + this.valueSize));
    }
    return out;
  }

  #key(key: Uint8Array<ArrayBuffer>) {
    if (key.length !== this.keySize) {
      throw new RangeError(`Map "${this.name}" has ${this.keySize}-byte keys, got ${key.length}`);
    }
    return key;
  }

  #value(value: Uint8Array<ArrayBuffer>) {
    if (value.length !== this.valueBufferSize) {
      throw new RangeError(
        `Map "${this.name}" needs a ${this.valueBufferSize}-byte value buffer, got ${value.length}`,
      );
    }
    return value;
  }

  /**
   * Copies the value of `key` into `value` (or a new buffer); returns it, or
   * `undefined` if the key is absent.
   */
  lookup(
    key: Uint8Array<ArrayBuffer>,
    value: Uint8Array<ArrayBuffer> = new Uint8Array(this.valueBufferSize),
  ): Uint8Array<ArrayBuffer> | undefined {
    const ret = bpf().bpf_map_lookup_elem(this.liveFd(), this.#key(key), this.#value(value));
    if (ret === -ENOENT) return undefined;
    check(ret, `look up a key in map "${this.name}"`);
    return value;
  }

  /** Sets `key` to `value`; `mode` says whether the key must or must not exist. */
  update(
    key: Uint8Array<ArrayBuffer>,
    value: Uint8Array<ArrayBuffer>,
    mode: UpdateMode = "any",
  ): void {
    check(
      bpf().bpf_map_update_elem(
        this.liveFd(),
        this.#key(key),
        this.#value(value),
        UPDATE_FLAGS[mode],
      ),
      `update a key in map "${this.name}"`,
    );
  }

  /** Deletes `key`; returns whether it was there. */
  delete(key: Uint8Array<ArrayBuffer>): boolean {
    const ret = bpf().bpf_map_delete_elem(this.liveFd(), this.#key(key));
    if (ret === -ENOENT) return false;
    check(ret, `delete a key from map "${this.name}"`);
    return true;
  }

  /** Reads and deletes `key` in one step (hash maps: Linux 5.14; queues and stacks). */
  lookupAndDelete(
    key: Uint8Array<ArrayBuffer>,
    value: Uint8Array<ArrayBuffer> = new Uint8Array(this.valueBufferSize),
  ): Uint8Array<ArrayBuffer> | undefined {
    const ret = bpf().bpf_map_lookup_and_delete_elem(this.liveFd(), this.#key(key), value);
    if (ret === -ENOENT) return undefined;
    check(ret, `look up and delete a key in map "${this.name}"`);
    return value;
  }

  /**
   * Every key, each a fresh copy. A key deleted while iterating may make the
   * walk start over (the kernel's rule for hash maps): collect first, then
   * delete, or use {@linkcode clear}.
   */
  *keys(): Generator<Uint8Array<ArrayBuffer>> {
    const fd = this.liveFd();
    let prev: Uint8Array<ArrayBuffer> | null = null;
    for (;;) {
      const next = new Uint8Array(this.keySize);
      const ret = bpf().bpf_map_get_next_key(fd, prev, next);
      if (ret === -ENOENT) return;
      check(ret, `iterate the keys of map "${this.name}"`);
      yield next;
      prev = next;
    }
  }

  /** Every key with its value, each a fresh copy; keys that vanish meanwhile are skipped. */
  *entries(): Generator<[Uint8Array<ArrayBuffer>, Uint8Array<ArrayBuffer>]> {
    for (const key of this.keys()) {
      const value = this.lookup(key);
      if (value) yield [key, value];
    }
  }

  /**
   * Every key with its value in as few system calls as the kernel allows
   * (`BPF_MAP_LOOKUP_BATCH`, Linux 5.6, for hash and array maps), falling
   * back to {@linkcode entries} where the map type has no batch lookup.
   */
  lookupBatch(chunk = 256): [Uint8Array<ArrayBuffer>, Uint8Array<ArrayBuffer>][] {
    const fd = this.liveFd();
    const keySize = this.keySize;
    const valueSize = this.valueBufferSize;
    const out: [Uint8Array<ArrayBuffer>, Uint8Array<ArrayBuffer>][] = [];
    const keys = new Uint8Array(keySize * chunk);
    const values = new Uint8Array(valueSize * chunk);
    // The batch token's size is the key size for hash maps, 4 for arrays.
    const token = new Uint8Array(Math.max(keySize, 8));
    const nextToken = new Uint8Array(token.length);
    let first = true;
    for (;;) {
      const count = new Uint32Array([chunk]);
      const ret = bpf().bpf_map_lookup_batch(
        fd,
        first ? null : token,
        nextToken,
        keys,
        values,
        new Uint8Array(count.buffer),
        null,
      );
      if (first && (ret === -EINVAL || ret === -ENOTSUPP || ret === -EOPNOTSUPP)) {
        return [...this.entries()];
      }
      if (ret < 0 && ret !== -ENOENT) check(ret, `batch-read map "${this.name}"`);
      for (let i = 0; i < count[0]; i++) {
        out.push([
          keys.slice(i * keySize, (i + 1) * keySize),
          values.slice(i * valueSize, (i + 1) * valueSize),
        ]);
      }
      if (ret === -ENOENT) return out; // the last batch
      token.set(nextToken);
      first = false;
    }
  }

  /** Deletes every key; returns how many were deleted. */
  clear(): number {
    let n = 0;
    for (const key of [...this.keys()]) if (this.delete(key)) n++;
    return n;
  }

  /**
   * A typed view of this map: keys are encoded with `key`, values decoded
   * (and encoded) with `value`. The layouts' sizes must be the map's key and
   * value sizes.
   *
   * @example Read a per-comm counter (needs root to have a loaded map)
   * ```ts
   * import { defineLayout } from "./layout.ts";
   * import type { BpfMap } from "./map.ts";
   *
   * const comm = defineLayout("comm", 16, { comm: ["char[16]", 0] });
   * const count = defineLayout("count", 8, { n: ["u64", 0] });
   * export function top(counts: BpfMap, n = 10): [string, number][] {
   *   const view = counts.typed(comm, count);
   *   return [...view.entries()].map(([k, v]): [string, number] => [k.comm, v.n])
   *     .sort((a, b) => b[1] - a[1]).slice(0, n);
   * }
   * ```
   */
  typed<K extends AnyLayout, V extends AnyLayout>(key: K, value: V): TypedMap<K, V> {
    if (key.size !== this.keySize) {
      throw new RangeError(
        `Map "${this.name}" has ${this.keySize}-byte keys; layout "${key.name}" is ${key.size} bytes`,
      );
    }
    if (value.size !== this.valueSize) {
      throw new RangeError(
        `Map "${this.name}" has ${this.valueSize}-byte values; layout "${value.name}" is ${value.size} bytes`,
      );
    }
    return new TypedMap(this, key, value);
  }
}

/**
 * A map seen through a key layout and a value layout: decoded objects in,
 * decoded objects out. Made by {@linkcode MapHandle.typed}.
 *
 * @example Set and read a per-pid limit
 * ```ts
 * import { defineLayout } from "./layout.ts";
 * import type { BpfMap } from "./map.ts";
 *
 * const pid = defineLayout("pid", 4, { pid: ["u32", 0] });
 * const limit = defineLayout("limit", 8, { bytes: ["u64n", 0] });
 * export function setLimit(limits: BpfMap, p: number, bytes: bigint): void {
 *   const view = limits.typed(pid, limit);
 *   view.set({ pid: p }, { bytes });
 *   console.log(view.get({ pid: p })); // { bytes }
 * }
 * ```
 */
export class TypedMap<K extends AnyLayout, V extends AnyLayout> {
  #map: MapHandle;
  #key: K;
  #value: V;

  /** @internal Use {@linkcode MapHandle.typed}. */
  constructor(map: MapHandle, key: K, value: V) {
    this.#map = map;
    this.#key = key;
    this.#value = value;
  }

  #decode(bytes: Uint8Array): RecordOf<V> {
    return this.#value.decode(bytes, 0, bytes.length) as RecordOf<V>;
  }

  /** The value of `key`, or `undefined`. A per-CPU map needs {@linkcode getPerCpu}. */
  get(key: RecordOf<K>): RecordOf<V> | undefined {
    if (this.#map.perCpu) {
      throw new TypeError(`Map "${this.#map.name}" is per-CPU: use getPerCpu()`);
    }
    const bytes = this.#map.lookup(this.#key.encode(key as never));
    return bytes && this.#decode(bytes);
  }

  /** Every possible CPU's value of `key` (a per-CPU map), or `undefined`. */
  getPerCpu(key: RecordOf<K>): RecordOf<V>[] | undefined {
    const bytes = this.#map.lookup(this.#key.encode(key as never));
    return bytes && this.#map.perCpuValues(bytes).map((v) => this.#decode(v));
  }

  /** Sets `key` to `value` (the same value on every CPU, for a per-CPU map). */
  set(key: RecordOf<K>, value: RecordOf<V>, mode: UpdateMode = "any"): void {
    let bytes = this.#value.encode(value as never);
    if (this.#map.perCpu) {
      const all = new Uint8Array(this.#map.valueBufferSize);
      const stride = all.length / possibleCpus();
      for (let at = 0; at < all.length; at += stride) all.set(bytes, at);
      bytes = all;
    }
    this.#map.update(this.#key.encode(key as never), bytes, mode);
  }

  /** Deletes `key`; returns whether it was there. */
  delete(key: RecordOf<K>): boolean {
    return this.#map.delete(this.#key.encode(key as never));
  }

  /** Every key, decoded. */
  *keys(): Generator<RecordOf<K>> {
    for (const key of this.#map.keys()) yield this.#key.decode(key, 0, key.length) as RecordOf<K>;
  }

  /** Every key with its value, decoded (a per-CPU map: use {@linkcode getPerCpu} per key). */
  *entries(): Generator<[RecordOf<K>, RecordOf<V>]> {
    if (this.#map.perCpu) {
      throw new TypeError(`Map "${this.#map.name}" is per-CPU: iterate keys() and getPerCpu()`);
    }
    for (const [key, value] of this.#map.entries()) {
      yield [this.#key.decode(key, 0, key.length) as RecordOf<K>, this.#decode(value)];
    }
  }

  /** Deletes every key; returns how many were deleted. */
  clear(): number {
    return this.#map.clear();
  }
}

/**
 * A map of a {@linkcode BpfObject}: borrowed, valid while the object is open.
 * Before load its size can be set; after load it can be read, written and
 * pinned.
 *
 * @example Size a ring buffer before load, then pin a map
 * ```ts
 * import { BpfObject } from "./object.ts";
 *
 * export function loadAndPin(path: string): void {
 *   using obj = BpfObject.openFile(path);
 *   obj.map("events").maxEntries = 8 * 1024 * 1024;
 *   obj.load();
 *   obj.map("counts").pin("/sys/fs/bpf/counts");
 * }
 * ```
 */
export class BpfMap extends MapHandle {
  #owner: { readonly unsafeHandle: Deno.PointerValue };
  #ptr: Deno.PointerObject;

  /** @internal Use {@linkcode BpfObject.map}. */
  constructor(owner: { readonly unsafeHandle: Deno.PointerValue }, ptr: Deno.PointerObject) {
    super();
    this.#owner = owner;
    this.#ptr = ptr;
  }

  #p(): Deno.PointerObject {
    if (this.#owner.unsafeHandle === null) throw new TypeError("BpfObject is closed");
    return this.#ptr;
  }

  /** The map's fd (negative before load); throws a TypeError once the object is closed. */
  protected liveFd(): number {
    return bpf().bpf_map__fd(this.#p());
  }

  /** The map's name (`"events"`, or e.g. `"unlink_b.rodata"`). */
  get name(): string {
    return readCString(bpf().bpf_map__name(this.#p()));
  }

  /** The map's fd once loaded, else a negative number. */
  get fd(): number {
    return this.liveFd();
  }

  /** `max_entries`; before load it can be set (for a ring buffer: its size in bytes). */
  override get maxEntries(): number {
    return bpf().bpf_map__max_entries(this.#p());
  }

  override set maxEntries(n: number) {
    check(
      bpf().bpf_map__set_max_entries(this.#p(), n),
      `set max_entries of "${this.name}" to ${n}`,
    );
  }

  /** The size of one value in bytes, known before load too. */
  override get valueSize(): number {
    return bpf().bpf_map__value_size(this.#p());
  }

  /**
   * Pins the loaded map at `path` in bpffs (e.g. `/sys/fs/bpf/counts`), so it
   * outlives this process; {@linkcode PinnedMap.open} opens it again.
   */
  pin(path: string): void {
    check(bpf().bpf_map__pin(this.#p(), cstr(path)), `pin map "${this.name}" at ${path}`);
  }

  /** Removes the pin at `path`. */
  unpin(path: string): void {
    check(bpf().bpf_map__unpin(this.#p(), cstr(path)), `unpin map "${this.name}" at ${path}`);
  }

  /** UNSAFE: the raw `struct bpf_map *`, or null once the object is closed. */
  get unsafeHandle(): Deno.PointerObject | null {
    return this.#owner.unsafeHandle ? this.#ptr : null;
  }
}

/**
 * A map pinned in bpffs, opened by path. Owns its fd.
 *
 * @example Read a map another process pinned
 * ```ts
 * import { PinnedMap } from "./map.ts";
 *
 * export function keysOf(path: string): number {
 *   using map = PinnedMap.open(path);
 *   return [...map.keys()].length;
 * }
 * ```
 */
export class PinnedMap extends MapHandle implements Disposable {
  #fd: Handle<number>;
  #path: string;

  private constructor(fd: number, path: string) {
    super();
    this.#fd = ownFd(fd);
    this.#path = path;
  }

  /** Opens the map pinned at `path` (`BPF_OBJ_GET`). */
  static open(path: string): PinnedMap {
    const fd = check(bpf().bpf_obj_get(cstr(path)), `open the pinned map ${path}`);
    const map = new PinnedMap(fd, path);
    // A pinned link or program opens too: only a map's fdinfo has map_type.
    if (!/^map_type:/m.test(readSmallFile(`/proc/self/fdinfo/${fd}`) ?? "map_type:")) {
      map.close();
      throw new TypeError(`${path} is pinned, but is not a map`);
    }
    return map;
  }

  /** The map's fd; throws a TypeError once closed. */
  protected liveFd(): number {
    return this.#fd.use("PinnedMap");
  }

  /** The map's name as the kernel knows it (at most 15 bytes). */
  get name(): string {
    return this.info().name;
  }

  /** The bpffs path it was opened from. */
  get path(): string {
    return this.#path;
  }

  /** Closes this process's fd; the pin and the map stay. Idempotent. */
  close(): void {
    this.#fd.release();
  }

  /** Calls {@linkcode close}, for `using` declarations. */

  [Symbol.dispose](): void {
    this.close();
  }
}
