/**
 * Finds, and on request mounts, tracefs: tracepoint attachment reads event
 * ids from it, and the printk variant streams its `trace_pipe`.
 *
 * @module
 */

import { EAGAIN } from "./errno.ts";
import { type Handle, ownFd } from "./_handle.ts";
import { c, checkErrno, cstr, failure } from "./_ffi.ts";
import { pathExists } from "./_sys.ts";

/** Where tracefs is mounted on modern systems. */
export const TRACEFS = "/sys/kernel/tracing";
const LEGACY = "/sys/kernel/debug/tracing";
// MS_NOSUID | MS_NODEV | MS_NOEXEC, as systemd's sys-kernel-tracing.mount:
// tracefs holds no programs, devices or set-uid files to honour.
const MOUNT_FLAGS = 0x2n | 0x4n | 0x8n;

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
 * boot), with nosuid, nodev and noexec. The mount stays after the process
 * exits, as `mount -t tracefs` would. Needs root to mount.
 */
export function ensureTracefs(): string {
  const found = findTracefs();
  if (found) return found;
  const ret = c().mount(cstr("tracefs"), cstr(TRACEFS), cstr("tracefs"), MOUNT_FLAGS, null);
  if (ret !== 0) {
    throw failure(`mount tracefs at ${TRACEFS}`, {
      hint: `mount it yourself: mount -t tracefs tracefs ${TRACEFS}`,
    });
  }
  return TRACEFS;
}

const O_RDONLY = 0;
const O_NONBLOCK = 0x800;
const O_CLOEXEC = 0x80000;
const POLLIN = 0x1;

/**
 * The kernel's `trace_pipe` (what `bpf_printk` writes), read through libc:
 * Deno refuses to open files under /sys without `--allow-all`. Reading
 * consumes the lines, as `cat trace_pipe` does.
 *
 * @example Copy `bpf_printk` output to stdout for a while (needs root)
 * ```ts
 * import { ensureTracefs, TracePipe } from "./tracefs.ts";
 *
 * export async function copyTrace(ms: number): Promise<void> {
 *   using pipe = new TracePipe(ensureTracefs());
 *   const encoder = new TextEncoder();
 *   const end = Date.now() + ms;
 *   while (Date.now() < end) {
 *     const text = await pipe.read(Math.max(0, end - Date.now()));
 *     if (text === null) break;
 *     await Deno.stdout.write(encoder.encode(text));
 *   }
 * }
 * ```
 */
export class TracePipe implements Disposable {
  #fd: Handle<number>;
  #buf = new Uint8Array(64 * 1024);
  #pollfd = new Uint8Array(8);
  #decoder = new TextDecoder();

  /** Opens `trace_pipe` in the tracefs at `dir` (see {@linkcode ensureTracefs}). */
  constructor(dir: string) {
    const path = `${dir}/trace_pipe`;
    const fd = checkErrno(c().open(cstr(path), O_RDONLY | O_NONBLOCK | O_CLOEXEC), `open ${path}`);
    this.#fd = ownFd(fd);
    const view = new DataView(this.#pollfd.buffer);
    view.setInt32(0, fd, true);
    view.setInt16(4, POLLIN, true);
  }

  /**
   * Waits up to `timeoutMs` for text and returns what is there (possibly
   * `""`, and possibly ending mid-line). Returns `null` once closed.
   */
  async read(timeoutMs: number): Promise<string | null> {
    if (this.#fd.value === null) return null;
    const text = this.#readNow();
    if (text !== "") return text;
    await c().poll_wait(this.#pollfd, 1n, timeoutMs);
    return this.#fd.value === null ? null : this.#readNow();
  }

  /** Reads what is buffered without waiting; errno is read on this thread. */
  #readNow(): string {
    const fd = this.#fd.use("TracePipe");
    const n = Number(c().read(fd, this.#buf, BigInt(this.#buf.length)));
    if (n < 0) {
      const error = failure("read trace_pipe");
      if (error.errno === EAGAIN) return "";
      throw error;
    }
    return this.#decoder.decode(this.#buf.subarray(0, n), { stream: true });
  }

  /** Closes the pipe. Idempotent; a pending {@linkcode read} then returns `null`. */
  close(): void {
    this.#fd.release();
  }

  /** Calls {@linkcode close}, for `using` declarations. */

  [Symbol.dispose](): void {
    this.close();
  }
}
