/**
 * A reader for `BPF_MAP_TYPE_PERF_EVENT_ARRAY` maps, the way BPF programs
 * sent records before BPF ring buffers (Linux 5.8) and many still do: one
 * perf ring per CPU, each mapped into this process and read straight from
 * TypeScript, as cilium/ebpf's `perf.Reader` does from Go. Samples the kernel
 * had no room for are counted in {@linkcode PerfBuffer.lost}.
 *
 * Waiting, stopping and closing are the {@linkcode Poller} that RingBuffer
 * shares: a nonblocking `epoll_wait` on every CPU's perf event (off the main
 * thread), with a stop eventfd in the same epoll set that ends a pending wait
 * at once; consuming is synchronous on the main thread.
 *
 * @example Count records until stopped (needs root and a loaded object)
 * ```ts
 * import { PerfBuffer } from "./perf_buffer.ts";
 * import type { BpfMap } from "./map.ts";
 *
 * declare const events: BpfMap; // a BPF_MAP_TYPE_PERF_EVENT_ARRAY
 *
 * export async function countRecords(): Promise<number> {
 *   using perf = new PerfBuffer(events);
 *   Deno.addSignalListener("SIGINT", () => perf.stop());
 *   let n = 0;
 *   while (await perf.wait()) n += perf.drain(() => {});
 *   console.log(`${n} records, ${perf.lost} lost`);
 *   return n;
 * }
 * ```
 *
 * @module
 */

import { c, checkErrno, failure } from "./_ffi.ts";
import { ownFd } from "./_handle.ts";
import { PerfRing } from "./_perf_ring.ts";
import { Poller, PROT_READ, PROT_WRITE } from "./_poller.ts";
import { EACCES, ENODEV, EPERM } from "./errno.ts";
import { BpfError } from "./errors.ts";
import type { AnyLayout, RecordOf } from "./layout.ts";
import { type BpfMap, possibleCpus } from "./map.ts";

// struct perf_event_attr, as of its first version (PERF_ATTR_SIZE_VER0)
const PERF_ATTR_SIZE_VER0 = 64;
const PERF_TYPE_SOFTWARE = 1;
const PERF_COUNT_SW_BPF_OUTPUT = 10;
const PERF_SAMPLE_RAW = 1 << 10;
const ATTR_DISABLED = 1n; // the first bit of the flags word
const PERF_FLAG_FD_CLOEXEC = 8n;
const PERF_EVENT_IOC_ENABLE = 0x2400n; // _IO('$', 0)
const SYS_PERF_EVENT_OPEN: Record<string, number> = { x86_64: 298, aarch64: 241 };

/**
 * Called once per sample with the bytes that hold it, the offset and length
 * of its raw data, and the CPU that sent it. The kernel pads the data to keep
 * records 8-byte aligned, so `length` may exceed what the program sent by up
 * to 7 bytes. The bytes are only valid during the call.
 */
export type PerfRecordHandler = (
  bytes: Uint8Array,
  offset: number,
  length: number,
  cpu: number,
) => void;

/** Options for {@linkcode PerfBuffer}. */
export interface PerfBufferOptions {
  /** Data pages per CPU, a power of two. Default 8 (32 KiB with 4 KiB pages). */
  pageCount?: number;
  /**
   * The kernel wakes the reader once per this many samples. Default 1. A
   * larger number saves wakeups in a storm, at the cost of latency: the
   * reader looks again {@linkcode tailWaitMs} after a wakeup, but samples
   * that arrive after that wait for the next wakeup.
   */
  wakeupEvents?: number;
  /**
   * With `wakeupEvents` above 1: after a wait that found samples, how long
   * to wait for the next wakeup before looking at the rings anyway, in ms.
   * Default 25.
   */
  tailWaitMs?: number;
}

function perfEventAttr(wakeupEvents: number): Uint8Array<ArrayBuffer> {
  const attr = new Uint8Array(PERF_ATTR_SIZE_VER0);
  const view = new DataView(attr.buffer);
  view.setUint32(0, PERF_TYPE_SOFTWARE, true); // type
  view.setUint32(4, PERF_ATTR_SIZE_VER0, true); // size
  view.setBigUint64(8, BigInt(PERF_COUNT_SW_BPF_OUTPUT), true); // config
  view.setBigUint64(16, 1n, true); // sample_period: every output is a sample
  view.setBigUint64(24, BigInt(PERF_SAMPLE_RAW), true); // sample_type
  view.setBigUint64(40, ATTR_DISABLED, true); // enabled once mapped
  view.setUint32(48, wakeupEvents, true); // wakeup_events
  return attr;
}

/**
 * Reads a `BPF_MAP_TYPE_PERF_EVENT_ARRAY` map that the BPF program writes
 * with `bpf_perf_event_output(ctx, &map, BPF_F_CURRENT_CPU, ...)`. Create it
 * after the object is loaded; it opens one perf event per online CPU and
 * stores it in the map at the CPU's index. Use one reader per map. After
 * {@linkcode close}, {@linkcode drain}, {@linkcode wait}, {@linkcode pending}
 * and {@linkcode records} throw a TypeError; `stop` and `close` do nothing.
 *
 * @example Count samples per CPU for a second (needs root and a loaded object)
 * ```ts
 * import { PerfBuffer } from "./perf_buffer.ts";
 * import type { BpfObject } from "./object.ts";
 *
 * export async function samplesPerCpu(obj: BpfObject): Promise<Map<number, number>> {
 *   using perf = new PerfBuffer(obj.map("events"), { pageCount: 16 });
 *   const counts = new Map<number, number>();
 *   const end = Date.now() + 1000;
 *   while (Date.now() < end && await perf.wait(end - Date.now())) {
 *     perf.drain((_bytes, _offset, _length, cpu) => counts.set(cpu, (counts.get(cpu) ?? 0) + 1));
 *   }
 *   return counts;
 * }
 * ```
 */
export class PerfBuffer implements Disposable {
  #map: BpfMap;
  #cpus: number[] = [];
  #poller: Poller<PerfRing>;

  /** Opens a perf ring on every online CPU and stores them in `map`. */
  constructor(map: BpfMap, options: PerfBufferOptions = {}) {
    const pageCount = options.pageCount ?? 8;
    if (!Number.isInteger(pageCount) || pageCount < 1 || (pageCount & (pageCount - 1)) !== 0) {
      throw new RangeError(`pageCount must be a power of two, got ${pageCount}`);
    }
    const wakeupEvents = options.wakeupEvents ?? 1;
    if (!Number.isInteger(wakeupEvents) || wakeupEvents < 1 || wakeupEvents > 0xffff_ffff) {
      throw new RangeError(`wakeupEvents must be a positive integer, got ${wakeupEvents}`);
    }
    const syscallNumber = SYS_PERF_EVENT_OPEN[Deno.build.arch];
    if (syscallNumber === undefined) {
      throw new TypeError(
        `PerfBuffer does not know perf_event_open's number on ${Deno.build.arch}`,
      );
    }
    if (map.fd < 0) throw new TypeError(`Map "${map.name}" is not loaded yet`);
    if (map.type !== "perf_event_array") {
      throw new TypeError(
        `Map "${map.name}" is not a BPF_MAP_TYPE_PERF_EVENT_ARRAY; read a ring buffer with RingBuffer`,
      );
    }
    const cpus = possibleCpus();
    if (map.maxEntries < cpus) {
      throw new TypeError(
        `Map "${map.name}" has ${map.maxEntries} entries for ${cpus} possible CPUs; ` +
          `leave its max_entries unset and libbpf sizes it`,
      );
    }
    this.#map = map;
    const tailWaitMs = options.tailWaitMs ?? 25;
    const poller = this.#poller = new Poller<PerfRing>({
      name: "PerfBuffer",
      noun: "perf buffer",
      plan: (found, deadline, pending) => {
        if (pending > 0) return null; // samples are waiting already
        // The tail of a burst may never reach the wakeup threshold.
        if (!found || wakeupEvents === 1) return deadline;
        return deadline < 0 ? tailWaitMs : Math.min(deadline, tailWaitMs);
      },
      onClose: () => this.#forget(),
    });
    const page = c().getpagesize();
    const length = (1 + pageCount) * page;
    const attr = perfEventAttr(wakeupEvents);
    const key = new Uint32Array(1);
    const value = new Int32Array(1);
    try {
      for (let cpu = 0; cpu < cpus; cpu++) {
        const opened = Number(
          c().perf_event_open(BigInt(syscallNumber), attr, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC),
        );
        if (opened < 0) {
          const error = failure(`open a BPF output perf event on CPU ${cpu}`);
          if (error.errno === ENODEV) continue; // possible but offline
          if (error.errno !== EACCES && error.errno !== EPERM) throw error;
          throw new BpfError(error.operation, error.errno, {
            hint: "it needs root or CAP_PERFMON; run it with sudo",
          });
        }
        const fd = poller.own(ownFd(opened));
        const mapped = poller.map(
          fd,
          length,
          PROT_READ | PROT_WRITE,
          0,
          `the perf ring of CPU ${cpu}`,
          "try a smaller pageCount",
        );
        const ring = new PerfRing(mapped, page, pageCount * page);
        checkErrno(
          c().ioctl(fd, PERF_EVENT_IOC_ENABLE, 0n),
          `enable the perf event of CPU ${cpu}`,
        );
        key[0] = cpu;
        value[0] = fd;
        map.update(new Uint8Array(key.buffer), new Uint8Array(value.buffer));
        this.#cpus.push(cpu);
        poller.add(fd, ring);
      }
      if (this.#cpus.length === 0) {
        throw new TypeError(`No CPU is online to open a perf ring on (${cpus} possible)`);
      }
    } catch (error) {
      this.#forget();
      poller.abandon();
      throw error;
    }
  }

  /** The CPUs that have a ring, in order. */
  get cpus(): number[] {
    return [...this.#cpus];
  }

  /**
   * Samples the kernel dropped because a ring was full, as reported so far.
   * The kernel reports a CPU's losses with its next sample that fits, so
   * drops show up after the reader has made room and the program has sent
   * again. Still readable after close.
   */
  get lost(): number {
    let lost = 0;
    for (const ring of this.#poller.rings) lost += ring.lost;
    return lost;
  }

  /** Bytes written by the kernel and not yet consumed, over all CPUs. */
  get pending(): number {
    return this.#poller.pending;
  }

  /**
   * Consumes the samples written so far, calling `fn` for each, at most
   * `limit` of them. Each CPU's samples come in order; successive calls start
   * from successive CPUs, so a storm on one cannot starve another. Lost
   * records add to {@linkcode lost}. A handler that closes the reader ends
   * the drain early: the samples after it stay in the rings, which are
   * unmapped on return. Returns the number of samples handed to `fn`.
   */
  drain(fn: PerfRecordHandler, limit: number = Infinity): number {
    const cpus = this.#cpus;
    return this.#poller.drain(
      (bytes, offset, length, i) => fn(bytes, offset, length, cpus[i]),
      limit,
    );
  }

  /**
   * Waits until samples may be ready, or `timeoutMs` (the deadline; -1 for
   * none) has passed. Resolves `true` when it is worth calling
   * {@linkcode drain} (which may find nothing after a timed wait), and
   * `false` once the reader is stopped, or closed while waiting.
   *
   * @throws {TypeError} if the reader is closed.
   */
  wait(timeoutMs: number = -1): Promise<boolean> {
    return this.#poller.wait(timeoutMs);
  }

  /**
   * Ends waiting: a pending {@linkcode wait} resolves `false` at once, and so
   * does every later one. Samples still in the rings can be drained until close.
   */
  stop(): void {
    this.#poller.stop();
  }

  /**
   * Yields every sample decoded with `layout`, until {@linkcode stop} (after
   * which what is left in the rings is still delivered) or close.
   *
   * @throws {TypeError} if the reader is closed.
   */
  records<L extends AnyLayout>(layout: L): AsyncGenerator<RecordOf<L>> {
    return this.#poller.records((bytes, offset, length) =>
      layout.decode(bytes, offset, length) as RecordOf<L>
    );
  }

  /**
   * Stops waiting, takes the perf events out of the map, closes them and
   * unmaps their rings. Idempotent.
   */
  close(): void {
    this.#poller.close();
  }

  /** Closes the reader: `using perf = new PerfBuffer(map)` does it at scope exit. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Takes this reader's perf events out of the map, if the map still exists. */
  #forget() {
    if (this.#map.unsafeHandle === null) return; // the object is closed, and its map with it
    const key = new Uint32Array(1);
    for (const cpu of this.#cpus) {
      key[0] = cpu;
      this.#map.delete(new Uint8Array(key.buffer));
    }
  }
}
