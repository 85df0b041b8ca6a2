/**
 * Finds, and if need be mounts, tracefs: tracepoint attachment reads event ids
 * from it, and the printk variant streams its `trace_pipe`.
 *
 * @module
 */

import { c, cstr, errno } from "./_ffi.ts";
import { BpfError } from "./errors.ts";

/** Where tracefs is mounted on modern systems. */
export const TRACEFS = "/sys/kernel/tracing";
const LEGACY = "/sys/kernel/debug/tracing";

function has(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Returns the tracefs directory, mounting tracefs at `/sys/kernel/tracing`
 * first if it is not mounted anywhere (as on hosts that do not mount it at
 * boot). Needs root to mount.
 */
export function ensureTracefs(): string {
  for (const dir of [TRACEFS, LEGACY]) {
    if (has(`${dir}/events`)) return dir;
  }
  const ret = c().mount(cstr("tracefs"), cstr(TRACEFS), cstr("tracefs"), 0n, null);
  if (ret !== 0) {
    throw new BpfError(`mount tracefs at ${TRACEFS}`, errno(), {
      hint: `mount it yourself: mount -t tracefs tracefs ${TRACEFS}`,
    });
  }
  return TRACEFS;
}
