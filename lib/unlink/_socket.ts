/**
 * Connected datagram sockets (UDP and Unix) through libc, for the syslog
 * output. Deno has no stable API for either: `Deno.listenDatagram` is
 * unstable, and a Unix datagram socket such as `/dev/log` has no API at all.
 * Through libc they need no Deno permission beyond `--allow-ffi`.
 *
 * Sends never block (`MSG_DONTWAIT`): a full socket buffer is an error the
 * caller counts, not a stall of the event loop. The address encoding is pure
 * and tested without sockets.
 *
 * @module
 */

import { c, cstr, errno } from "../_ffi.ts";
import { libc } from "./_libc.ts";
import { type Handle, ownFd } from "../_handle.ts";

const AF_UNIX = 1;
const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_DGRAM = 2;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const SUN_PATH_MAX = 108;

/** Where a datagram socket sends: a Unix socket path, or an IP address and port. */
export type DatagramAddress =
  | { path: string }
  | { address: string; port: number };

/** The bytes of an IPv4 address such as `127.0.0.1`, or undefined if it is not one. */
export function parseIpv4(text: string): Uint8Array | undefined {
  const parts = text.split(".");
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) < 256)) {
    return undefined;
  }
  return new Uint8Array(parts.map(Number));
}

/** The 16 bytes of an IPv6 address such as `::1`, or undefined if it is not one. */
export function parseIpv6(text: string): Uint8Array | undefined {
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groups = (s: string) => (s === "" ? [] : s.split(":"));
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined;
  const all = [...head, ...Array(halves.length === 2 ? missing : 0).fill("0"), ...tail];
  if (!all.every((g) => /^[0-9a-fA-F]{1,4}$/.test(g))) return undefined;
  const bytes = new Uint8Array(16);
  all.forEach((g, i) => {
    const n = parseInt(g, 16);
    bytes[2 * i] = n >> 8;
    bytes[2 * i + 1] = n & 0xff;
  });
  return bytes;
}

/**
 * `struct sockaddr_un`, `sockaddr_in` or `sockaddr_in6` for `to`. Throws a
 * `TypeError` for a host that is not an IP address (`localhost` is 127.0.0.1)
 * and a `RangeError` for a path too long for `sun_path`.
 */
export function sockaddr(to: DatagramAddress): { family: number; bytes: Uint8Array<ArrayBuffer> } {
  if ("path" in to) {
    const path = cstr(to.path);
    if (path.length > SUN_PATH_MAX) {
      throw new RangeError(`Unix socket path is ${path.length - 1} bytes; at most 107 fit`);
    }
    const bytes = new Uint8Array(2 + path.length);
    new DataView(bytes.buffer).setUint16(0, AF_UNIX, true);
    bytes.set(path, 2);
    return { family: AF_UNIX, bytes };
  }
  const host = to.address === "localhost" ? "127.0.0.1" : to.address;
  const v4 = parseIpv4(host);
  const v6 = v4 ? undefined : parseIpv6(host.replace(/^\[(.*)\]$/, "$1"));
  if (!v4 && !v6) {
    throw new TypeError(`"${to.address}" is not an IP address: give one, such as 127.0.0.1`);
  }
  const bytes = new Uint8Array(v4 ? 16 : 28);
  const view = new DataView(bytes.buffer);
  view.setUint16(0, v4 ? AF_INET : AF_INET6, true);
  view.setUint16(2, to.port, false);
  if (v4) bytes.set(v4, 4);
  else bytes.set(v6!, 8);
  return { family: v4 ? AF_INET : AF_INET6, bytes };
}

/**
 * A connected, nonblocking datagram socket.
 *
 * @example Send one datagram to a local syslog socket (needs --allow-ffi)
 * ```ts
 * import { DatagramSocket } from "./_socket.ts";
 *
 * export function hello(): void {
 *   const socket = DatagramSocket.connect({ path: "/dev/log" });
 *   if (typeof socket === "number") throw new Error(`connect failed: errno ${socket}`);
 *   using _ = socket;
 *   const failed = socket.send(new TextEncoder().encode("<14>1 - - demo - - - hello"));
 *   if (failed) console.error(`send failed: errno ${failed}`);
 * }
 * ```
 */
export class DatagramSocket implements Disposable {
  #fd: Handle<number>;

  private constructor(fd: number) {
    this.#fd = ownFd(fd);
  }

  /**
   * Opens a socket connected to `to`, or returns the errno of the `socket` or
   * `connect` call that failed (ENOENT: no such Unix socket; ECONNREFUSED:
   * nobody listens on it).
   */
  static connect(to: DatagramAddress): DatagramSocket | number {
    const { family, bytes } = sockaddr(to);
    const fd = libc().socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno();
    if (libc().connect(fd, bytes, bytes.length) < 0) {
      const code = errno();
      c().close(fd);
      return code;
    }
    return new DatagramSocket(fd);
  }

  /**
   * Sends `bytes` as one datagram without blocking. Returns 0, or the errno
   * (EAGAIN: the buffer is full; ECONNREFUSED: nobody is listening now).
   */
  send(bytes: Uint8Array<ArrayBuffer>): number {
    const fd = this.#fd.use("DatagramSocket");
    const n = libc().send(fd, bytes, BigInt(bytes.length), MSG_DONTWAIT | MSG_NOSIGNAL);
    return n < 0 ? errno() : 0;
  }

  /** Closes the socket. Idempotent. */
  close(): void {
    this.#fd.release();
  }

  /** Calls {@linkcode close}, for `using` declarations. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** UNSAFE: the file descriptor, -1 once closed. */
  get unsafeHandle(): number {
    return this.#fd.value ?? -1;
  }
}
