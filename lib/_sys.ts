/**
 * The few facts deno_bpf reads from /proc and /sys, read through libc.
 *
 * Deno 2.9 refuses `Deno.readTextFileSync`/`Deno.statSync` under /proc and
 * /sys unless the process has `--allow-all`, even with `--allow-read`. Reads
 * done by C are not checked by Deno, so reading here through libc lets the
 * scripts run with `--allow-ffi --allow-env` only. Each reader is a thin shell
 * over one libc call; the parsing beside it is pure and tested on text.
 *
 * @module
 */

import { ENOENT, ENOTDIR } from "./errno.ts";
import { c, checkErrno, cstr, failure } from "./_ffi.ts";

const O_RDONLY = 0;
const O_CLOEXEC = 0x80000;
const O_PATH = 0x200000; // the same on x86_64 and arm64

/**
 * Whether `path` exists; a refusal other than "no such file" throws. It opens
 * the path with `O_PATH` rather than calling `access(2)`: access checks with
 * the real uid and, for a non-root one, without capabilities, so a service
 * running as its own user with CAP_DAC_READ_SEARCH would be refused the
 * root-only (0700) tracefs that its open(2) calls may search.
 */
export function pathExists(path: string): boolean {
  const fd = c().open(cstr(path), O_PATH | O_CLOEXEC);
  if (fd >= 0) {
    c().close(fd);
    return true;
  }
  const error = failure(`check ${path}`);
  if (error.errno === ENOENT || error.errno === ENOTDIR) return false;
  throw error;
}

/**
 * The contents of a small text file such as `/proc/self/status`, or
 * `undefined` if it does not exist. Reads at most `max` bytes.
 */
export function readSmallFile(path: string, max = 64 * 1024): string | undefined {
  const fd = c().open(cstr(path), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const error = failure(`open ${path}`);
    if (error.errno === ENOENT || error.errno === ENOTDIR) return undefined;
    throw error;
  }
  try {
    const buf = new Uint8Array(max);
    let len = 0;
    while (len < max) {
      const n = Number(c().read(fd, buf.subarray(len), BigInt(max - len)));
      checkErrno(n, `read ${path}`);
      if (n === 0) break;
      len += n;
    }
    return new TextDecoder().decode(buf.subarray(0, len));
  } finally {
    c().close(fd);
  }
}

/** The kernel release, as `uname -r` prints it (e.g. `"6.1.0-56-amd64"`). */
export function kernelRelease(): string {
  // struct utsname: six fields of 65 bytes on Linux; release is the third.
  const buf = new Uint8Array(6 * 65);
  checkErrno(c().uname(buf), "read the kernel version (uname)");
  const field = buf.subarray(2 * 65, 3 * 65);
  return new TextDecoder().decode(field.subarray(0, field.indexOf(0)));
}

/** The effective capability set from `/proc/<pid>/status` text, or `undefined`. */
export function parseCapEff(status: string): bigint | undefined {
  const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1];
  return hex === undefined ? undefined : BigInt(`0x${hex}`);
}

const CAP_SYS_ADMIN = 21;
const CAP_PERFMON = 38;
const CAP_BPF = 39;

/** Whether a capability set allows loading tracing programs. */
export function canTrace(caps: bigint): boolean {
  const has = (cap: number) => (caps >> BigInt(cap) & 1n) === 1n;
  return has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON));
}

/**
 * Whether this process may load tracing programs, from its capabilities;
 * `undefined` where /proc cannot say.
 */
export function processCanTrace(): boolean | undefined {
  const caps = parseCapEff(readSmallFile("/proc/self/status") ?? "");
  return caps === undefined ? undefined : canTrace(caps);
}

const POLLERR = 0x008;
const POLLHUP = 0x010;

/**
 * Whether nobody will ever read what is written to `fd` any more: a pipe or
 * socket whose reader has gone (`trace.ts | head -1` after head exits). A
 * terminal or a file is never closed in this sense. Does not block.
 */
export function outputClosed(fd: number): boolean {
  // struct pollfd { int fd; short events; short revents; }: with no events
  // asked for, poll still reports POLLERR/POLLHUP.
  const pollfd = new Uint8Array(8);
  new DataView(pollfd.buffer).setInt32(0, fd, true);
  const n = checkErrno(c().poll(pollfd, 1n, 0), `poll fd ${fd}`);
  return n > 0 && (new DataView(pollfd.buffer).getInt16(6, true) & (POLLERR | POLLHUP)) !== 0;
}
