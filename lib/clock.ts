/**
 * BPF timestamps come from `bpf_ktime_get_ns()`, CLOCK_MONOTONIC. This turns
 * them into wall-clock time, with the offset between the two clocks taken once.
 *
 * @module
 */

import { c } from "./_ffi.ts";

const CLOCK_REALTIME = 0;
const CLOCK_MONOTONIC = 1;

function now(clock: number): number {
  const ts = new BigInt64Array(2);
  c().clock_gettime(clock, new Uint8Array(ts.buffer));
  return Number(ts[0]) * 1e3 + Number(ts[1]) / 1e6;
}

let offsetMs: number | undefined;

/** Milliseconds since the Unix epoch for a CLOCK_MONOTONIC time in ns. */
export function monotonicToEpochMs(ns: number): number {
  offsetMs ??= now(CLOCK_REALTIME) - now(CLOCK_MONOTONIC);
  return offsetMs + ns / 1e6;
}
