/**
 * Finds, and on request mounts, tracefs: tracepoint attachment reads event
 * ids from it, and the printk variant streams its `trace_pipe`.
 *
 * @module
 */

import { c, cstr } from "./_ffi.ts";
import { failure } from "./errors.ts";
import { pathExists } from "./_sys.ts";

/** Where tracefs is mounted on modern systems. */
export const TRACEFS = "/sys/kernel/tracing";
const LEGACY = "/sys/kernel/debug/tracing";

/** The mounted tracefs directory, or `undefined` if tracefs is not mounted. */
export function findTracefs(): string | undefined {
  for (const dir of [TRACEFS, LEGACY]) {
    if (pathExists(`${dir}/events`)) return dir;
  }
  return undefined;
}

/**
 * Returns the tracefs directory, mounting tracefs at `/sys/kernel/tracing`
 * first if it is not mounted anywhere (as on hosts that do not mount it at
 * boot). The mount stays after the process exits, as `mount -t tracefs`
 * would. Needs root to mount.
 */
export function ensureTracefs(): string {
  const found = findTracefs();
  if (found) return found;
  const ret = c().mount(cstr("tracefs"), cstr(TRACEFS), cstr("tracefs"), 0n, null);
  if (ret !== 0) {
    throw failure(`mount tracefs at ${TRACEFS}`, {
      hint: `mount it yourself: mount -t tracefs tracefs ${TRACEFS}`,
    });
  }
  return TRACEFS;
}
