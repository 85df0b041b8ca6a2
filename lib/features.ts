/**
 * What this kernel offers, answered by trying it: libbpf's probes create a
 * map or load a tiny program of the type asked about. (For an attach method
 * only a real attach is an honest answer: the unlink tool's `tryAttach`
 * does that.)
 *
 * Every probe needs the privileges the real thing needs (root, or CAP_BPF
 * and CAP_PERFMON): without them the kernel refuses everything, and the map
 * and program probes read as "absent".
 *
 * @example Choose what to use (needs root)
 * ```ts
 * import { hasHelper, hasMapType } from "./features.ts";
 *
 * export function choices(): string[] {
 *   return [
 *     hasMapType("ringbuf") ? "ring buffer" : "perf buffer",
 *     hasHelper("kprobe", "loop") ? "bpf_loop" : "bounded loop",
 *   ];
 * }
 * ```
 *
 * @module
 */

import { EOPNOTSUPP } from "./errno.ts";
import { bpf } from "./_ffi.ts";
import { BpfError } from "./errors.ts";
import { MAP_TYPES, type MapType } from "./map.ts";

/** BPF program types by name (`enum bpf_prog_type` in linux/bpf.h, without the prefix). */
export const PROGRAM_TYPES = {
  socket_filter: 1,
  kprobe: 2,
  sched_cls: 3,
  sched_act: 4,
  tracepoint: 5,
  xdp: 6,
  perf_event: 7,
  cgroup_skb: 8,
  cgroup_sock: 9,
  lwt_in: 10,
  lwt_out: 11,
  lwt_xmit: 12,
  sock_ops: 13,
  sk_skb: 14,
  cgroup_device: 15,
  sk_msg: 16,
  raw_tracepoint: 17,
  cgroup_sock_addr: 18,
  lwt_seg6local: 19,
  lirc_mode2: 20,
  sk_reuseport: 21,
  flow_dissector: 22,
  cgroup_sysctl: 23,
  raw_tracepoint_writable: 24,
  cgroup_sockopt: 25,
  tracing: 26,
  struct_ops: 27,
  ext: 28,
  lsm: 29,
  sk_lookup: 30,
  syscall: 31,
} as const;

/** A program type's name, e.g. `"tracing"` (fentry/fexit) or `"tracepoint"`. */
export type ProgramType = keyof typeof PROGRAM_TYPES;

/**
 * The helpers tracing tools most often need to choose between, by name
 * (`enum bpf_func_id` in linux/bpf.h, without `BPF_FUNC_`). Any other helper
 * can be probed by its number.
 */
export const HELPERS = {
  map_lookup_elem: 1,
  ktime_get_ns: 5,
  trace_printk: 6,
  get_current_pid_tgid: 14,
  probe_write_user: 36,
  override_return: 58,
  get_current_cgroup_id: 80,
  probe_read_kernel: 113,
  probe_read_kernel_str: 115,
  ringbuf_output: 130,
  ringbuf_reserve: 131,
  ringbuf_submit: 132,
  d_path: 147,
  get_current_task_btf: 158,
  get_func_ip: 173,
  loop: 181,
} as const;

/** A helper's name, e.g. `"loop"` for `bpf_loop`. */
export type Helper = keyof typeof HELPERS;

/** The number for `name` in `table`, or a TypeError listing the names it knows. */
function lookup(table: Record<string, number>, what: string, name: string | number): number {
  if (typeof name === "number") {
    if (!Number.isInteger(name) || name < 0 || name > 0xffffffff) {
      throw new RangeError(`A ${what} number must be an integer from 0 to 2^32-1, got ${name}`);
    }
    return name;
  }
  const n = Object.hasOwn(table, name) ? table[name] : undefined;
  if (n === undefined) {
    throw new TypeError(
      `Unknown ${what} "${name}": use one of ${Object.keys(table).join(", ")}, or its number`,
    );
  }
  return n;
}

/**
 * libbpf's probe answer: 1 yes, 0 no, -EOPNOTSUPP when libbpf cannot probe
 * the type (one newer than the library, or made up), any other -errno when
 * the probe itself failed.
 */
function answer(ret: number, operation: string): boolean {
  if (ret === 1) return true;
  if (ret === 0 || ret === -EOPNOTSUPP) return false;
  throw new BpfError(operation, -ret, { hint: "run as root to probe kernel features" });
}

/**
 * Whether the kernel can create maps of this type (libbpf creates a small
 * one and closes it).
 *
 * @param type A name from {@linkcode MAP_TYPES}, or an `enum bpf_map_type` number.
 * @returns `false` for a type the kernel refuses, and for one that this
 * libbpf cannot probe (newer than the library, or made up).
 * @throws {TypeError} for a name not in {@linkcode MAP_TYPES}.
 * @throws {BpfError} if the probe itself failed.
 *
 * @example (needs root)
 * ```ts
 * import { hasMapType } from "./features.ts";
 *
 * export function warnOldKernel(): void {
 *   if (!hasMapType("ringbuf")) console.log("needs Linux 5.8 for ring buffers");
 * }
 * ```
 */
export function hasMapType(type: MapType | number): boolean {
  const n = lookup(MAP_TYPES, "map type", type);
  return answer(bpf().libbpf_probe_bpf_map_type(n, null), `probe map type ${type}`);
}

/**
 * Whether the kernel loads programs of this type (libbpf loads a minimal
 * program). For `"tracing"` (fentry/fexit) libbpf asks for a deliberately
 * wrong attach target and expects the kernel's "not a function" answer, so
 * a kernel that refuses tracing programs outright (EPERM) reads as absent.
 *
 * @param type A name from {@linkcode PROGRAM_TYPES}, or an `enum bpf_prog_type` number.
 * @returns `false` for a type the kernel refuses, and for one this libbpf cannot probe.
 * @throws {TypeError} for a name not in {@linkcode PROGRAM_TYPES}.
 * @throws {BpfError} if the probe itself failed.
 *
 * @example (needs root)
 * ```ts
 * import { hasProgramType } from "./features.ts";
 *
 * export function canUseFentry(): boolean {
 *   return hasProgramType("tracing"); // false where the kernel refuses fentry (EPERM)
 * }
 * ```
 */
export function hasProgramType(type: ProgramType | number): boolean {
  const n = lookup(PROGRAM_TYPES, "program type", type);
  return answer(bpf().libbpf_probe_bpf_prog_type(n, null), `probe program type ${type}`);
}

/**
 * Whether the kernel offers a helper to programs of `programType`: libbpf
 * loads a program that calls it and answers `false` only when the verifier
 * calls the helper unknown or invalid for that type. Use it to choose
 * between variants of a program, e.g. `bpf_loop` (Linux 5.17) or a bounded
 * loop. Helpers that the kernel further limits to some attach points
 * (`bpf_d_path`) can still read `true` here: only a real load tells.
 *
 * @param programType The program type that would call the helper.
 * @param helper A name from {@linkcode HELPERS}, or an `enum bpf_func_id` number.
 * @returns `false` when the kernel lacks the helper or refuses it to that type.
 * @throws {TypeError} for a name not in the tables.
 * @throws {BpfError} if the probe itself failed (e.g. the program type is refused).
 *
 * @example (needs root)
 * ```ts
 * import { hasHelper } from "./features.ts";
 *
 * export function kprobesCanReserve(): boolean {
 *   return hasHelper("kprobe", "ringbuf_reserve");
 * }
 * ```
 */
export function hasHelper(programType: ProgramType | number, helper: Helper | number): boolean {
  const prog = lookup(PROGRAM_TYPES, "program type", programType);
  const id = lookup(HELPERS, "helper", helper);
  return answer(
    bpf().libbpf_probe_bpf_helper(prog, id, null),
    `probe helper ${helper} for ${programType} programs`,
  );
}
