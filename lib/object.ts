/**
 * Handles over libbpf's objects: {@linkcode BpfObject} owns its programs and
 * maps (borrowed views that die with it); a {@linkcode Link} owns one
 * attachment. Follow libbpf's lifecycle: open → configure → load → attach,
 * then dispose in reverse, which `using` declarations do by themselves.
 *
 * @example Load an object and attach one program (needs root)
 * ```ts
 * import { BpfObject } from "./object.ts";
 *
 * export function attachOne(): void {
 *   using obj = BpfObject.openFile("bpf/unlink.bpf.o");
 *   obj.setConst("targ_tgid", Deno.pid);
 *   for (const prog of obj.programs) prog.autoload = prog.name.startsWith("tp_");
 *   obj.load();
 *   using _link = obj.program("tp_enter_unlinkat").attach();
 * }
 * ```
 *
 * @module
 */

import { EACCES, EPERM } from "./errno.ts";
import { Handle } from "./_handle.ts";
import { bpf, c, checkPtr, cstr, readCString } from "./_ffi.ts";
import { Btf, type BtfShape } from "./btf.ts";
import { BpfError, check, PermissionError, VerifierError, verifierLog } from "./errors.ts";
import { installLog, takeLog } from "./log.ts";
import { BpfMap } from "./map.ts";
import { processCanTrace } from "./_sys.ts";

/** The use-after-close guard for a pointer borrowed from another handle. */
function live<T>(ptr: T | null, what: string): T {
  if (ptr === null) throw new TypeError(`${what} is closed`);
  return ptr;
}

/**
 * A compiled BPF ELF object, opened by libbpf. Owns its programs and maps.
 *
 * @example Open an embedded object, configure it, load it
 * ```ts
 * import { UNLINK_BPF_O } from "../bpf/unlink_bpf.ts";
 * import { BpfObject } from "./object.ts";
 *
 * export function loadTracepoints(pid: number): BpfObject {
 *   const obj = BpfObject.openMem(UNLINK_BPF_O, "unlink");
 *   obj.setConst("targ_tgid", pid);
 *   for (const p of obj.programs) p.autoload = p.section.startsWith("tracepoint/");
 *   obj.load(); // a VerifierError carries the verifier's log
 *   return obj;
 * }
 * ```
 */
export class BpfObject implements Disposable {
  #ptr: Handle<Deno.PointerObject>;
  #name: string;
  #bytes: Uint8Array | undefined;
  #loaded = false;

  private constructor(ptr: Deno.PointerObject, name: string, bytes?: Uint8Array) {
    this.#ptr = new Handle(ptr, (ptr) => bpf().bpf_object__close(ptr));
    this.#name = name;
    this.#bytes = bytes;
  }

  /** Opens an object from its ELF bytes (e.g. an embedded `.bpf.o`). */
  static openMem(bytes: Uint8Array, name = "bpf_object"): BpfObject {
    // libbpf parses the ELF in place until load: keep the bytes alive with it.
    const copy = new Uint8Array(bytes);
    installLog();
    takeLog();
    // struct bpf_object_open_opts { size_t sz; const char *object_name; ... }:
    // libbpf accepts a prefix of the struct, sized by sz.
    const cname = cstr(name);
    const opts = new BigUint64Array([16n, Deno.UnsafePointer.value(Deno.UnsafePointer.of(cname))]);
    const ptr = bpf().bpf_object__open_mem(copy, BigInt(copy.length), Deno.UnsafePointer.of(opts));
    return new BpfObject(openChecked(ptr, `open BPF object "${name}"`), name, copy);
  }

  /** Opens an object from a `.bpf.o` file. */
  static openFile(path: string): BpfObject {
    installLog();
    takeLog();
    const ptr = bpf().bpf_object__open_file(cstr(path), null);
    return new BpfObject(openChecked(ptr, `open BPF object "${path}"`), path);
  }

  /** The name this object was opened under. */
  get name(): string {
    return this.#name;
  }

  /** Whether {@linkcode load} has succeeded. */
  get loaded(): boolean {
    return this.#loaded;
  }

  /** Every program in the object, in ELF order. */
  get programs(): Program[] {
    const obj = this.#ptr.use("BpfObject");
    const out: Program[] = [];
    for (
      let p = bpf().bpf_object__next_program(obj, null);
      p;
      p = bpf().bpf_object__next_program(obj, p)
    ) out.push(new Program(this, p));
    return out;
  }

  /** Every map in the object, including `.rodata`/`.bss`. */
  get maps(): BpfMap[] {
    const obj = this.#ptr.use("BpfObject");
    const out: BpfMap[] = [];
    for (
      let m = bpf().bpf_object__next_map(obj, null);
      m;
      m = bpf().bpf_object__next_map(obj, m)
    ) out.push(new BpfMap(this, m));
    return out;
  }

  /** The program named `name` (its C function name). */
  program(name: string): Program {
    const found = this.programs.find((p) => p.name === name);
    if (!found) throw new TypeError(`BPF object has no program "${name}"`);
    return found;
  }

  /** The map named `name`; `".rodata"` etc. find the global-data maps. */
  map(name: string): BpfMap {
    const found = this.maps.find((m) =>
      m.name === name || (name.startsWith(".") && m.name.endsWith(name))
    );
    if (!found) throw new TypeError(`BPF object has no map "${name}"`);
    return found;
  }

  /** The object's own BTF: a borrowed view, unusable once the object is closed. */
  get btf(): Btf {
    const ptr = bpf().bpf_object__btf(this.#ptr.use("BpfObject"));
    if (!ptr) throw new TypeError(`BPF object "${this.#name}" has no BTF`);
    return new Btf(ptr, this);
  }

  /**
   * Sets a global variable of the object before load: a `const volatile`
   * setting in `.rodata`, or the initial value of a global in `.data` or
   * `.bss`. An integer takes a number or a bigint that fits its C type, a
   * `bool` takes a boolean, a `char` array a string that fits with its NUL.
   * Anything else is a TypeError or a RangeError that names the variable.
   */
  setConst(name: string, value: number | bigint | boolean | string): void {
    if (this.#loaded) {
      throw new TypeError(`Cannot set "${name}": the object is already loaded`);
    }
    const btf = this.btf;
    for (const section of [".rodata", ".data", ".bss"]) {
      const slot = btf.datasec(section)?.find((v) => v.name === name);
      if (!slot) continue;
      const map = live(this.map(section).unsafeHandle, "BpfMap");
      const sizeOut = new BigUint64Array(1);
      const data = bpf().bpf_map__initial_value(map, sizeOut);
      if (!data) throw new TypeError(`Cannot reach ${section} to set "${name}"`);
      const bytes = new Uint8Array(
        Deno.UnsafePointerView.getArrayBuffer(data, Number(sizeOut[0])),
        slot.offset,
        slot.size,
      );
      return writeVariable(bytes, name, slot.shape, value);
    }
    throw new TypeError(`BPF object has no global variable "${name}" (in .rodata, .data or .bss)`);
  }

  /**
   * Loads every program whose autoload is on, and creates the maps. A
   * program the verifier refuses throws a {@linkcode VerifierError} (its log
   * in `error.log`); a process without the privileges for BPF throws a
   * {@linkcode PermissionError}; any other refusal is a {@linkcode BpfError}.
   */
  load(): void {
    const obj = this.#ptr.use("BpfObject");
    takeLog();
    const ret = bpf().bpf_object__load(obj);
    const log = takeLog();
    if (ret < 0) throw loadError(`load BPF object "${this.#name}"`, -ret, log);
    this.#loaded = true;
    this.#bytes = undefined;
  }

  /** UNSAFE: the raw `struct bpf_object *`, valid until close. */
  get unsafeHandle(): Deno.PointerObject | null {
    return this.#ptr.value;
  }

  /** Unloads the programs and frees the maps. Idempotent. */
  close(): void {
    this.#ptr.release();
    this.#bytes = undefined;
  }

  /** Calls {@linkcode close}, for `using` declarations. */

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Returns freed native heap to the kernel (glibc's `malloc_trim`), for the
 * whole process. Loading an object parses the kernel's BTF (several MiB) and
 * frees it again, but glibc keeps freed heap resident: a long-running tool
 * can call this once after loading to shrink its RSS by about 10 MiB.
 * deno_bpf never calls it by itself.
 */
export function releaseFreedMemory(): void {
  c().malloc_trim(0n);
}

/** takeLog() runs no native code, so errno is still the failed call's. */
function openChecked(ptr: Deno.PointerValue, operation: string): Deno.PointerObject {
  return checkPtr(ptr, operation, { log: takeLog() });
}

/**
 * The error for a failed load: the verifier's rejection if libbpf printed a
 * verifier log, "needs root" only if the process really lacks the
 * privileges, else the kernel's plain refusal (e.g. lockdown's EPERM).
 */
function loadError(operation: string, errno: number, log: string): BpfError {
  if (verifierLog(log).trim()) {
    const program = /prog '([^']+)': -- BEGIN PROG LOAD LOG --/.exec(log)?.[1] ?? "";
    return new VerifierError(operation, errno, program, log);
  }
  if ((errno === EPERM || errno === EACCES) && processCanTrace() === false) {
    return new PermissionError(operation, errno, log);
  }
  return new BpfError(operation, errno, { log });
}

/** Writes `value` into a variable's bytes after checking it fits the C type. */
function writeVariable(
  bytes: Uint8Array,
  name: string,
  shape: BtfShape,
  value: number | bigint | boolean | string,
) {
  if (shape.kind === "array" && shape.element.kind === "int" && shape.element.size === 1) {
    if (typeof value !== "string") {
      throw new TypeError(`"${name}" is char[${shape.count}]: give a string, not ${typeof value}`);
    }
    const encoded = new TextEncoder().encode(value);
    if (encoded.length >= bytes.length) {
      throw new RangeError(
        `"${name}" holds at most ${bytes.length - 1} bytes, got ${encoded.length}`,
      );
    }
    bytes.fill(0);
    bytes.set(encoded);
    return;
  }
  if (shape.kind !== "int") {
    throw new TypeError(`"${name}" is a ${shape.kind}: setConst sets integers, bools and strings`);
  }
  if (
    shape.bool ? typeof value !== "boolean" : typeof value !== "number" && typeof value !== "bigint"
  ) {
    throw new TypeError(
      `"${name}" is ${shape.name}: give ${shape.bool ? "a boolean" : "a number or bigint"}, ` +
        `not ${typeof value}`,
    );
  }
  if (typeof value === "number" && !Number.isInteger(value)) {
    throw new RangeError(`"${name}" is ${shape.name}: ${value} is not an integer`);
  }
  const n = BigInt(value);
  const bits = BigInt(shape.size * 8);
  const [min, max] = shape.signed
    ? [-(1n << (bits - 1n)), (1n << (bits - 1n)) - 1n]
    : [0n, (1n << bits) - 1n];
  if (n < min || n > max) {
    throw new RangeError(`"${name}" is ${shape.name}: ${value} is outside ${min}..${max}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const raw = BigInt.asUintN(Number(bits), n);
  switch (shape.size) {
    case 1:
      return view.setUint8(0, Number(raw));
    case 2:
      return view.setUint16(0, Number(raw), true);
    case 4:
      return view.setUint32(0, Number(raw), true);
    case 8:
      return view.setBigUint64(0, raw, true);
  }
  throw new TypeError(`"${name}" is ${shape.size} bytes: not a scalar`);
}

/**
 * A program inside a {@linkcode BpfObject}; borrowed, valid while it is open.
 *
 * @example Attach by section name, or pick the target at run time
 * ```ts
 * import type { BpfObject, Link } from "./object.ts";
 *
 * export function attachAll(obj: BpfObject, fn?: string): Link[] {
 *   const prog = obj.program("on_call");
 *   return [fn ? prog.attachKprobe(fn) : prog.attach()];
 * }
 * ```
 */
export class Program {
  #obj: BpfObject;
  #ptr: Deno.PointerObject;

  /** @internal Use {@linkcode BpfObject.program} or {@linkcode BpfObject.programs}. */
  constructor(obj: BpfObject, ptr: Deno.PointerObject) {
    this.#obj = obj;
    this.#ptr = ptr;
  }

  /** The program's pointer, after checking its object is still open. */
  private p(): Deno.PointerObject {
    live(this.#obj.unsafeHandle, "BpfObject");
    return this.#ptr;
  }

  /** UNSAFE: the raw `struct bpf_program *`, or null once the object is closed. */
  get unsafeHandle(): Deno.PointerObject | null {
    return this.#obj.unsafeHandle ? this.#ptr : null;
  }

  /** The C function name, e.g. `"fentry_unlink"`. */
  get name(): string {
    return readCString(bpf().bpf_program__name(this.p()));
  }

  /** The ELF section, e.g. `"fentry/do_unlinkat"`. */
  get section(): string {
    return readCString(bpf().bpf_program__section_name(this.p()));
  }

  /** Whether {@linkcode BpfObject.load} loads this program. */
  get autoload(): boolean {
    return bpf().bpf_program__autoload(this.p());
  }

  set autoload(on: boolean) {
    const ret = bpf().bpf_program__set_autoload(this.p(), on);
    if (ret < 0) {
      throw new BpfError(`set autoload of "${this.name}"`, -ret, {
        hint: "autoload can only change before load",
      });
    }
  }

  /**
   * Attaches by the program's section name (`fentry/do_unlinkat`,
   * `tracepoint/syscalls/sys_enter_unlinkat`, ...). A program whose section
   * names no target (a bare `SEC("tracepoint")`) needs one of the `attach*`
   * methods below instead.
   */
  attach(): Link {
    return this.#link(
      `attach "${this.name}" (${this.section})`,
      (p) => bpf().bpf_program__attach(p),
    );
  }

  /** Attaches to the tracepoint `category/name` (e.g. `"syscalls"`, `"sys_enter_openat"`). */
  attachTracepoint(category: string, name: string): Link {
    return this.#link(
      `attach "${this.name}" to tracepoint ${category}/${name}`,
      (p) => bpf().bpf_program__attach_tracepoint(p, cstr(category), cstr(name)),
    );
  }

  /** Attaches to the raw tracepoint `name` (e.g. `"sys_enter"`). */
  attachRawTracepoint(name: string): Link {
    return this.#link(
      `attach "${this.name}" to raw tracepoint ${name}`,
      (p) => bpf().bpf_program__attach_raw_tracepoint(p, cstr(name)),
    );
  }

  /** Attaches a kprobe (or, with `retprobe`, a kretprobe) to kernel function `fn`. */
  attachKprobe(fn: string, options: { retprobe?: boolean } = {}): Link {
    const kind = options.retprobe ? "kretprobe" : "kprobe";
    return this.#link(
      `attach "${this.name}" as a ${kind} on ${fn}`,
      (p) => bpf().bpf_program__attach_kprobe(p, options.retprobe ?? false, cstr(fn)),
    );
  }

  /**
   * Attaches a uprobe (or uretprobe) to `binary` (a path, or a library name
   * libbpf finds, like `"libc.so.6"`), at `symbol` or at a file `offset`, in
   * every process or only in `pid`.
   */
  attachUprobe(binary: string, options: UprobeOptions): Link {
    if ((options.symbol === undefined) === (options.offset === undefined)) {
      throw new TypeError("attachUprobe needs exactly one of symbol and offset");
    }
    // struct bpf_uprobe_opts { size_t sz; size_t ref_ctr_offset; __u64 bpf_cookie;
    // bool retprobe; const char *func_name; }: libbpf 1.0's layout, 40 bytes.
    const symbol = options.symbol === undefined ? undefined : cstr(options.symbol);
    const opts = new BigUint64Array(5);
    opts[0] = 40n;
    opts[3] = options.retprobe ? 1n : 0n;
    opts[4] = symbol ? BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(symbol))) : 0n;
    const where = options.symbol ?? `offset ${options.offset}`;
    const link = this.#link(
      `attach "${this.name}" as a ${
        options.retprobe ? "uretprobe" : "uprobe"
      } on ${binary}:${where}`,
      (p) =>
        bpf().bpf_program__attach_uprobe_opts(
          p,
          options.pid ?? -1,
          cstr(binary),
          BigInt(options.offset ?? 0),
          new Uint8Array(opts.buffer),
        ),
    );
    void symbol; // kept alive until libbpf has copied it
    return link;
  }

  /**
   * Before load: sets the kernel function an fentry, fexit or tp_btf program
   * attaches to, for programs whose section names none (`SEC("fentry")`).
   */
  setAttachTarget(fn: string): void {
    check(
      bpf().bpf_program__set_attach_target(this.p(), 0, cstr(fn)),
      `set the attach target of "${this.name}" to ${fn}`,
      { hint: "the target can only be set before load" },
    );
  }

  /** Calls `attach` and wraps its link; errno is read right after the call. */
  #link(what: string, attach: (prog: Deno.PointerObject) => Deno.PointerValue): Link {
    const prog = this.p();
    takeLog();
    const ptr = attach(prog);
    // Nothing native may run between the call and checkPtr's errno read.
    return new Link(checkPtr(ptr, what, { log: takeLog() }));
  }
}

/** Where {@linkcode Program.attachUprobe} attaches. */
export interface UprobeOptions {
  /** The function's symbol in the binary (one of `symbol` and `offset`). */
  symbol?: string;
  /** The file offset of the instruction to probe (one of `symbol` and `offset`). */
  offset?: number;
  /** Only this process; default all processes. */
  pid?: number;
  /** Probe the function's return instead of its entry. */
  retprobe?: boolean;
}

/**
 * An attached program. Closing it detaches (unless it is pinned).
 *
 * @example Keep a program attached after this process exits
 * ```ts
 * import { type BpfObject, Link } from "./object.ts";
 *
 * export function pinForever(obj: BpfObject, path: string): void {
 *   using link = obj.program("on_exec").attachTracepoint("sched", "sched_process_exec");
 *   link.pin(path); // later: Link.open(path).unpin()
 * }
 * export function detach(path: string): void {
 *   using link = Link.open(path);
 *   link.unpin();
 * }
 * ```
 */
export class Link implements Disposable {
  #ptr: Handle<Deno.PointerObject>;

  /** @internal Use {@linkcode Program.attach}. */
  constructor(ptr: Deno.PointerObject) {
    this.#ptr = new Handle(ptr, (ptr) => bpf().bpf_link__destroy(ptr));
  }

  /** Whether the link is still attached. */
  get attached(): boolean {
    return this.#ptr.value !== null;
  }

  /** UNSAFE: the raw `struct bpf_link *`, or null once closed. */
  get unsafeHandle(): Deno.PointerObject | null {
    return this.#ptr.value;
  }

  /**
   * Pins the link at `path` in bpffs: the program stays attached after this
   * process exits, until the pin is removed ({@linkcode unpin}, or `rm`).
   */
  pin(path: string): void {
    check(
      bpf().bpf_link__pin(this.#ptr.use("Link"), cstr(path)),
      `pin a link at ${path}`,
      { hint: "bpffs must be mounted there (mount -t bpf bpf /sys/fs/bpf)" },
    );
  }

  /** Removes the link's pin; closing it then detaches. */
  unpin(): void {
    check(bpf().bpf_link__unpin(this.#ptr.use("Link")), "unpin a link");
  }

  /** Opens a link pinned at `path`; closing it leaves the pin, and so the attachment. */
  static open(path: string): Link {
    const ptr = bpf().bpf_link__open(cstr(path));
    return new Link(checkPtr(ptr, `open the pinned link ${path}`));
  }

  /** Detaches (a pinned link stays attached through its pin). Idempotent. */
  close(): void {
    this.#ptr.release();
  }

  /** Calls {@linkcode close}, for `using` declarations. */

  [Symbol.dispose](): void {
    this.close();
  }
}
