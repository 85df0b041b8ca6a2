/**
 * The plumbing that both record readers (ring buffers and perf buffers)
 * share: an epoll set with a stop eventfd, and shared mappings of a kernel
 * fd. Each call takes errno at the failing call.
 *
 * @module
 */

import { c, checkErrno, failure } from "./_ffi.ts";

export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
const MAP_SHARED = 0x1;
const MAP_FAILED = 0xffff_ffff_ffff_ffffn;
const EPOLL_CLOEXEC = 0x80000;
const EPOLL_CTL_ADD = 1;
export const EPOLLIN = 0x1;
export const EPOLLET = 1 << 31;
const EFD_CLOEXEC = 0x80000;
const EFD_NONBLOCK = 0x800;

/** `struct epoll_event` is packed on x86_64 (12 bytes), naturally aligned elsewhere. */
export const EPOLL_EVENT_SIZE = Deno.build.arch === "x86_64" ? 12 : 16;

/** Creates an epoll set (`what` names its owner in errors). */
export function epollCreate(what: string): number {
  return checkErrno(c().epoll_create1(EPOLL_CLOEXEC), `create the ${what}'s epoll set`);
}

/** Creates the nonblocking eventfd that ends a pending wait. */
export function stopEventfd(what: string): number {
  return checkErrno(
    c().eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK),
    `create the ${what}'s stop eventfd`,
  );
}

/** Ends every pending and later wait on the epoll set that holds `stopfd`. */
export function signalStop(stopfd: number): void {
  c().write(stopfd, new Uint8Array(new BigUint64Array([1n]).buffer), 8n);
}

/** Watches `fd` in `epfd` for `events`, reporting `token` when it fires. */
export function epollAdd(epfd: number, fd: number, token: number, events = EPOLLIN): void {
  const ev = new Uint8Array(EPOLL_EVENT_SIZE);
  const view = new DataView(ev.buffer);
  view.setUint32(0, events >>> 0, true);
  view.setUint32(EPOLL_EVENT_SIZE - 8, token, true);
  checkErrno(c().epoll_ctl(epfd, EPOLL_CTL_ADD, fd, ev), `watch fd ${fd} with epoll`);
}

/**
 * Maps `length` bytes of `fd` at `offset`, shared; throws with the real
 * errno, naming `what` and the `hint`.
 */
export function mapShared(
  fd: number,
  length: number,
  prot: number,
  offset: number,
  what: string,
  hint: string,
): Deno.PointerObject {
  const ptr = c().mmap(null, BigInt(length), prot, MAP_SHARED, fd, BigInt(offset));
  if (ptr === null || Deno.UnsafePointer.value(ptr) === MAP_FAILED) {
    throw failure(`map ${what} (${length} bytes of fd ${fd})`, { hint });
  }
  return ptr;
}

/** What {@linkcode decodedRecords} needs of a reader. */
export interface RecordSource {
  /** Resolves when records may be there; false once stopped. */
  wait(): Promise<boolean>;
  /** Hands at most `limit` records to `fn`; returns how many. */
  drain(
    fn: (bytes: Uint8Array, offset: number, length: number) => void,
    limit: number,
  ): number;
  /** Whether the reader was closed (so iteration ends at once). */
  closed(): boolean;
}

/** How many records {@linkcode decodedRecords} decodes at a time. */
const RECORDS_CHUNK = 256;

/**
 * Yields every record of `source` decoded with `decode`, until the source is
 * stopped (what is left is still delivered) or closed. Decodes in small
 * chunks: a storm's whole backlog decoded at once would keep thousands of
 * records alive across garbage collections.
 */
export async function* decodedRecords<R>(
  source: RecordSource,
  decode: (bytes: Uint8Array, offset: number, length: number) => R,
): AsyncGenerator<R> {
  const batch: R[] = [];
  const collect = (bytes: Uint8Array, offset: number, length: number) => {
    batch.push(decode(bytes, offset, length));
  };
  let more = true;
  while (more) {
    if (source.closed()) return;
    more = await source.wait();
    for (;;) {
      if (source.closed()) return;
      batch.length = 0;
      if (source.drain(collect, RECORDS_CHUNK) === 0) break;
      for (let i = 0; i < batch.length; i++) yield batch[i];
    }
  }
}
