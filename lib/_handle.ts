/**
 * One discipline for everything native that this process owns: a file
 * descriptor, a shared mapping, a libbpf pointer. Each is a {@linkcode Handle}
 * that frees its value exactly once, when its owner calls `release()` (or
 * `using` does), or, as a safety net only, when the garbage collector finds
 * the owner dropped without it. The finalizer is registered when the handle
 * is made and dropped when it is released, and this module holds the only
 * `FinalizationRegistry` of the binding.
 *
 * @example An fd that closes at the end of its scope
 * ```ts
 * import { ownFd } from "./_handle.ts";
 *
 * declare const fd: number; // from open(2), say
 * using owned = ownFd(fd);
 * console.log(owned.use("the file")); // the fd; a TypeError once released
 * ```
 *
 * @module
 */

import { c } from "./_ffi.ts";

/**
 * What frees each live handle's value if its owner is collected first. The
 * held value is a closure over the native value alone: holding the handle
 * itself would keep it alive for ever.
 */
const unreleased = new FinalizationRegistry<() => void>((free) => free());

/** A native value freed exactly once. */
export class Handle<T> implements Disposable {
  #value: T | null;
  #free: (value: T) => void;

  /** Owns `value` from now on: `free` runs once, on release or after the handle is collected. */
  constructor(value: T, free: (value: T) => void) {
    this.#value = value;
    this.#free = free;
    unreleased.register(this, () => free(value), this);
  }

  /** The value, or `null` once released. */
  get value(): T | null {
    return this.#value;
  }

  /** The value; a TypeError that says `${what} is closed` once released. */
  use(what: string): T {
    if (this.#value === null) throw new TypeError(`${what} is closed`);
    return this.#value;
  }

  /** Frees the value. Idempotent. */
  release(): void {
    const value = this.#value;
    if (value === null) return;
    this.#value = null;
    unreleased.unregister(this);
    this.#free(value);
  }

  /** Calls {@linkcode release}, for `using`. */
  [Symbol.dispose](): void {
    this.release();
  }
}

/** Owns a file descriptor: release closes it. */
export function ownFd(fd: number): Handle<number> {
  return new Handle(fd, (fd) => c().close(fd));
}

/**
 * Owns a mapping of `length` bytes at `ptr`, as the view over it: release
 * first detaches the view, so that a copy a caller kept reads as empty
 * instead of touching unmapped memory, then unmaps it.
 */
export function ownMapping(ptr: Deno.PointerObject, length: number): Handle<ArrayBuffer> {
  const view = Deno.UnsafePointerView.getArrayBuffer(ptr, length);
  return new Handle(view, (view) => {
    if (!view.detached) view.transfer(0);
    c().munmap(ptr, BigInt(length));
  });
}
