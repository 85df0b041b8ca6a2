/**
 * Reads struct and data-section layouts out of BTF, so that TypeScript can
 * check its own declarations against what the compiler actually laid out,
 * or derive them ({@linkcode layoutFromBtf} in `layout.ts`).
 *
 * One reader, {@linkcode BtfReader}, interprets the BTF type graph; two thin
 * sources feed it raw `struct btf_type` words: {@linkcode Btf}, a view of the
 * BTF that libbpf holds for an open object, and {@linkcode BtfData}, the
 * `.BTF` bytes of an ELF file parsed with no native code at all (what the
 * skeleton generator uses, so it needs no `--allow-ffi`).
 *
 * @example Read a struct from an object's BTF
 * ```ts
 * import { BpfObject } from "./object.ts";
 * import { UNLINK_BPF_O } from "../bpf/unlink_bpf.ts";
 *
 * using obj = BpfObject.openMem(UNLINK_BPF_O, "unlink");
 * const event = obj.btf.struct("unlink_event");
 * console.log(event?.size, event?.members.map((m) => m.name));
 * ```
 *
 * @module
 */

import { bpf, cstr, readCString } from "./_ffi.ts";

// enum btf_kind, from linux/btf.h
const BTF_KIND_INT = 1;
const BTF_KIND_PTR = 2;
const BTF_KIND_ARRAY = 3;
const BTF_KIND_STRUCT = 4;
const BTF_KIND_UNION = 5;
const BTF_KIND_ENUM = 6;
const BTF_KIND_FWD = 7;
const BTF_KIND_TYPEDEF = 8;
const BTF_KIND_VOLATILE = 9;
const BTF_KIND_CONST = 10;
const BTF_KIND_RESTRICT = 11;
const BTF_KIND_FUNC_PROTO = 13;
const BTF_KIND_VAR = 14;
const BTF_KIND_DATASEC = 15;
const BTF_KIND_DECL_TAG = 17;
const BTF_KIND_TYPE_TAG = 18;
const BTF_KIND_ENUM64 = 19;
const BTF_INT_SIGNED = 1;
const BTF_INT_BOOL = 4;
/** Kinds that only qualify or rename the type they point to. */
const MODIFIERS = new Set([
  BTF_KIND_TYPEDEF,
  BTF_KIND_VOLATILE,
  BTF_KIND_CONST,
  BTF_KIND_RESTRICT,
  BTF_KIND_TYPE_TAG,
]);
/** Longest chain of modifiers followed before giving up (BTF has no cycles there). */
const MAX_HOPS = 32;

/**
 * What a type is, with typedefs and qualifiers resolved: an integer (enums
 * count as integers) with its signedness and C name, an array with its
 * element type and length, a struct with its members, a union, a pointer
 * (with the name of what it points to), or anything else.
 */
export type BtfShape =
  | { kind: "int"; size: number; signed: boolean; bool: boolean; name: string }
  | { kind: "array"; element: BtfShape; count: number }
  | { kind: "struct"; name: string; size: number; members: BtfMember[] }
  | { kind: "union"; name: string; size: number }
  | { kind: "pointer"; size: number; to: string }
  | { kind: "other"; size: number };

/** One member of a struct, or one variable of a data section, in bytes. */
export interface BtfSlot {
  /** The member's or variable's name (`""` for an anonymous member). */
  name: string;
  /** Its byte offset in the struct or section. */
  offset: number;
  /** Its size in bytes. */
  size: number;
}

/** One member of a struct: its slot, and the shape of its type. */
export interface BtfMember extends BtfSlot {
  /** The member's type. */
  shape: BtfShape;
  /** Whether it is a bitfield (its `offset` is then the containing byte). */
  bitfield: boolean;
}

/** One variable of a data section: its slot, its type, and its qualifiers. */
export interface BtfVar extends BtfSlot {
  /** The variable's type. */
  shape: BtfShape;
  /** Whether it is declared `volatile` (a `const volatile` setting in `.rodata`). */
  volatile: boolean;
}

/** A struct as BTF describes it. */
export interface BtfStruct {
  /** The struct's tag. */
  name: string;
  /** `sizeof(struct name)`. */
  size: number;
  /** Its members, in declaration order. */
  members: BtfMember[];
}

/** Whatever owns a `struct btf`: it is usable while `unsafeHandle` is non-null. */
export interface BtfOwner {
  /** The owner's native handle, `null` once it is closed. */
  readonly unsafeHandle: Deno.PointerValue;
}

/**
 * Interprets a BTF type graph: structs, data sections, and the shapes of
 * their members. Subclasses only supply the raw words of each type.
 *
 * @example Look up a data section's variables
 * ```ts
 * import { BtfData } from "./btf.ts";
 *
 * function settingsOf(btf: BtfData): string[] {
 *   return (btf.datasec(".rodata") ?? []).filter((v) => v.volatile).map((v) => v.name);
 * }
 * ```
 */
export abstract class BtfReader {
  /** Word `index` (u32) of type `id`: 0 name_off, 1 info, 2 size/type, 3... kind data. */
  protected abstract word(id: number, index: number): number;
  /** The string at `offset` of the string section. */
  protected abstract string(offset: number): string;
  /** The id of the type named `name` of kind `kind`, or -1. */
  protected abstract findId(name: string, kind: number): number;

  /** The struct named `name`, or `undefined` if BTF has none. */
  struct(name: string): BtfStruct | undefined {
    const id = this.findId(name, BTF_KIND_STRUCT);
    if (id < 0) return undefined;
    return { name, size: this.word(id, 2), members: this.#members(id) };
  }

  /** The variables of a data section such as `".rodata"`, or `undefined`. */
  datasec(name: string): BtfVar[] | undefined {
    const id = this.findId(name, BTF_KIND_DATASEC);
    if (id < 0) return undefined;
    const out: BtfVar[] = [];
    for (let i = 0; i < this.#vlen(id); i++) {
      // struct btf_var_secinfo { __u32 type, offset, size; }
      const base = 3 + i * 3;
      const v = this.word(id, base);
      if (this.#kind(v) !== BTF_KIND_VAR) continue;
      out.push({
        name: this.string(this.word(v, 0)),
        offset: this.varOffset(this.string(this.word(v, 0)), this.word(id, base + 1)),
        size: this.word(id, base + 2),
        shape: this.#shape(this.word(v, 2)),
        volatile: this.#qualified(this.word(v, 2), BTF_KIND_VOLATILE),
      });
    }
    return out;
  }

  /** A variable's offset in its section; sources that know better override it. */
  protected varOffset(_name: string, offset: number): number {
    return offset;
  }

  #kind(id: number): number {
    return (this.word(id, 1) >>> 24) & 0x1f;
  }

  #vlen(id: number): number {
    return this.word(id, 1) & 0xffff;
  }

  #members(id: number): BtfMember[] {
    const flagged = (this.word(id, 1) >>> 31) === 1;
    const members: BtfMember[] = [];
    for (let i = 0; i < this.#vlen(id); i++) {
      // struct btf_member { __u32 name_off, type, offset; }; with kind_flag the
      // offset's high 8 bits are a bitfield's size, the low 24 its bit offset.
      const base = 3 + i * 3;
      const type = this.word(id, base + 1);
      const raw = this.word(id, base + 2);
      const bitOffset = flagged ? raw & 0xffffff : raw;
      const shape = this.#shape(type);
      const bitfield = (flagged && raw >>> 24 !== 0) || bitOffset % 8 !== 0 ||
        this.#intBits(type) !== undefined;
      members.push({
        name: this.string(this.word(id, base)),
        offset: Math.floor(bitOffset / 8),
        size: this.#size(type),
        shape,
        bitfield,
      });
    }
    return members;
  }

  /** For an old-style bitfield (an INT narrower than its bytes), its bit count. */
  #intBits(id: number): number | undefined {
    id = this.#resolve(id);
    if (this.#kind(id) !== BTF_KIND_INT) return undefined;
    const encoding = this.word(id, 3);
    const bits = encoding & 0xff;
    const offset = (encoding >>> 16) & 0xff;
    return bits !== this.word(id, 2) * 8 || offset !== 0 ? bits : undefined;
  }

  /** Type `id` with every modifier peeled off (0 is void). */
  #resolve(id: number): number {
    for (let hops = 0; id !== 0 && hops < MAX_HOPS; hops++) {
      if (!MODIFIERS.has(this.#kind(id))) return id;
      id = this.word(id, 2);
    }
    return id;
  }

  /** Whether a modifier of kind `kind` sits on the chain from `id` to its base type. */
  #qualified(id: number, kind: number): boolean {
    for (let hops = 0; id !== 0 && hops < MAX_HOPS; hops++) {
      const k = this.#kind(id);
      if (k === kind) return true;
      // `const volatile char x[16]` qualifies the elements, not the array.
      if (k === BTF_KIND_ARRAY) id = this.word(id, 3);
      else if (MODIFIERS.has(k)) id = this.word(id, 2);
      else return false;
    }
    return false;
  }

  /** `sizeof` the type `id`. */
  #size(id: number): number {
    id = this.#resolve(id);
    if (id === 0) return 0;
    switch (this.#kind(id)) {
      case BTF_KIND_PTR:
        return 8;
      case BTF_KIND_ARRAY:
        return this.#size(this.word(id, 3)) * this.word(id, 5);
      case BTF_KIND_INT:
      case BTF_KIND_STRUCT:
      case BTF_KIND_UNION:
      case BTF_KIND_ENUM:
      case BTF_KIND_ENUM64:
      case BTF_KIND_DATASEC:
        return this.word(id, 2);
      default:
        return 0;
    }
  }

  /** The C name of a type, for messages: `struct foo`, `__u32`, `""` for void. */
  #typeName(id: number): string {
    id = this.#resolve(id);
    if (id === 0) return "void";
    const name = this.string(this.word(id, 0));
    switch (this.#kind(id)) {
      case BTF_KIND_STRUCT:
        return `struct ${name}`;
      case BTF_KIND_UNION:
        return `union ${name}`;
      case BTF_KIND_FWD:
        return `${(this.word(id, 1) >>> 31) === 1 ? "union" : "struct"} ${name}`;
      default:
        return name;
    }
  }

  /** The shape of type `id`, through typedefs and qualifiers. */
  #shape(id: number): BtfShape {
    id = this.#resolve(id);
    if (id === 0) return { kind: "other", size: 0 };
    const info = this.word(id, 1);
    const size = this.#size(id);
    const name = this.string(this.word(id, 0));
    switch (this.#kind(id)) {
      case BTF_KIND_INT: {
        const encoding = this.word(id, 3) >>> 24;
        return {
          kind: "int",
          size,
          signed: (encoding & BTF_INT_SIGNED) !== 0,
          bool: (encoding & BTF_INT_BOOL) !== 0,
          name,
        };
      }
      // For enums, kind_flag (bit 31) marks a signed one.
      case BTF_KIND_ENUM:
      case BTF_KIND_ENUM64:
        return {
          kind: "int",
          size,
          signed: (info >>> 31) === 1,
          bool: false,
          name: `enum ${name}`,
        };
      case BTF_KIND_ARRAY:
        // struct btf_array { __u32 type, index_type, nelems; } after btf_type.
        return { kind: "array", element: this.#shape(this.word(id, 3)), count: this.word(id, 5) };
      case BTF_KIND_STRUCT:
        return { kind: "struct", name, size, members: this.#members(id) };
      case BTF_KIND_UNION:
        return { kind: "union", name, size };
      case BTF_KIND_PTR:
        return { kind: "pointer", size, to: this.#typeName(this.word(id, 2)) };
      default:
        return { kind: "other", size };
    }
  }
}

/**
 * A borrowed view of a `struct btf` owned by a BPF object. Using it after its
 * owner is closed throws a TypeError instead of reading freed memory.
 *
 * @example Check a struct's size (opens the object, loads nothing)
 * ```ts
 * import { BpfObject } from "./object.ts";
 * import { UNLINK_BPF_O } from "../bpf/unlink_bpf.ts";
 *
 * using obj = BpfObject.openMem(UNLINK_BPF_O, "unlink");
 * console.log(obj.btf.struct("unlink_event")?.size); // 304
 * ```
 */
export class Btf extends BtfReader {
  #raw: Deno.PointerObject;
  #owner: BtfOwner;

  /** Wraps a `struct btf *` that stays owned by `owner` (a `BpfObject`). */
  constructor(ptr: Deno.PointerObject, owner: BtfOwner) {
    super();
    this.#raw = ptr;
    this.#owner = owner;
  }

  /** The pointer, after checking that the owner is still open. */
  get #ptr(): Deno.PointerObject {
    if (this.#owner.unsafeHandle === null) {
      throw new TypeError("Btf is closed: its BpfObject was closed");
    }
    return this.#raw;
  }

  /** Reads one u32 of `struct btf_type` `id` (and the kind data after it). */
  protected word(id: number, index: number): number {
    const t = bpf().btf__type_by_id(this.#ptr, id);
    if (!t) throw new RangeError(`BTF has no type ${id}`);
    return new Deno.UnsafePointerView(t).getUint32(index * 4);
  }

  /** Reads a string of the object's BTF. */
  protected string(offset: number): string {
    return readCString(bpf().btf__name_by_offset(this.#ptr, offset));
  }

  /** Finds a type through libbpf's index. */
  protected findId(name: string, kind: number): number {
    return bpf().btf__find_by_name_kind(this.#ptr, cstr(name), kind);
  }
}

/** Byte sizes of the data after `struct btf_type`, by kind (vlen-sized ones per entry). */
const KIND_DATA: Record<number, { fixed: number; perEntry: number }> = {
  [BTF_KIND_INT]: { fixed: 4, perEntry: 0 },
  [BTF_KIND_ARRAY]: { fixed: 12, perEntry: 0 },
  [BTF_KIND_STRUCT]: { fixed: 0, perEntry: 12 },
  [BTF_KIND_UNION]: { fixed: 0, perEntry: 12 },
  [BTF_KIND_ENUM]: { fixed: 0, perEntry: 8 },
  [BTF_KIND_FUNC_PROTO]: { fixed: 0, perEntry: 8 },
  [BTF_KIND_VAR]: { fixed: 4, perEntry: 0 },
  [BTF_KIND_DATASEC]: { fixed: 0, perEntry: 12 },
  [BTF_KIND_DECL_TAG]: { fixed: 4, perEntry: 0 },
  [BTF_KIND_ENUM64]: { fixed: 0, perEntry: 12 },
};
const BTF_MAGIC = 0xeb9f;

/**
 * BTF parsed from its raw bytes (an ELF object's `.BTF` section), with no
 * native code: what tools that only read files (the skeleton generator)
 * use. Offsets of data-section variables are 0 in an unlinked object until
 * libbpf places them; pass `offsets` (the ELF symbols' values) to fill them.
 *
 * @example Parse the `.BTF` section of an object
 * ```ts
 * import { BtfData } from "./btf.ts";
 * import { describeObject } from "./skeleton.ts";
 * import { UNLINK_BPF_O } from "../bpf/unlink_bpf.ts";
 *
 * const btf: BtfData = describeObject(UNLINK_BPF_O).btf;
 * console.log(btf.struct("unlink_event")?.size); // 304
 * ```
 */
export class BtfData extends BtfReader {
  #view: DataView;
  #types: number[] = [0];
  #strings: Uint8Array;
  #index: Map<string, number> | undefined;
  #offsets: ReadonlyMap<string, number>;

  /**
   * Parses raw BTF. Throws a RangeError for bytes that are not BTF, or BTF
   * in the other byte order.
   */
  constructor(raw: Uint8Array, offsets: ReadonlyMap<string, number> = new Map()) {
    super();
    this.#offsets = offsets;
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    if (raw.length < 24 || view.getUint16(0, true) !== BTF_MAGIC) {
      throw new RangeError("Not little-endian BTF: the bytes do not start with magic 0xeb9f");
    }
    const hdrLen = view.getUint32(4, true);
    const typeOff = hdrLen + view.getUint32(8, true);
    const typeLen = view.getUint32(12, true);
    const strOff = hdrLen + view.getUint32(16, true);
    const strLen = view.getUint32(20, true);
    if (typeOff + typeLen > raw.length || strOff + strLen > raw.length) {
      throw new RangeError("Truncated BTF: its header points past its end");
    }
    this.#view = new DataView(raw.buffer, raw.byteOffset + typeOff, typeLen);
    this.#strings = raw.subarray(strOff, strOff + strLen);
    for (let at = 0; at < typeLen;) {
      this.#types.push(at);
      const info = this.#view.getUint32(at + 4, true);
      const data = KIND_DATA[(info >>> 24) & 0x1f] ?? { fixed: 0, perEntry: 0 };
      at += 12 + data.fixed + data.perEntry * (info & 0xffff);
    }
  }

  /** Reads one u32 of type `id` from the type section. */
  protected word(id: number, index: number): number {
    const at = this.#types[id];
    if (at === undefined || id === 0) throw new RangeError(`BTF has no type ${id}`);
    return this.#view.getUint32(at + index * 4, true);
  }

  /** Reads a NUL-terminated string of the string section. */
  protected string(offset: number): string {
    const end = this.#strings.indexOf(0, offset);
    return new TextDecoder().decode(this.#strings.subarray(offset, end < 0 ? undefined : end));
  }

  /** Finds a type by name and kind through an index built on first use. */
  protected findId(name: string, kind: number): number {
    if (!this.#index) {
      this.#index = new Map();
      for (let id = 1; id < this.#types.length; id++) {
        const key = `${(this.word(id, 1) >>> 24) & 0x1f}:${this.string(this.word(id, 0))}`;
        if (!this.#index.has(key)) this.#index.set(key, id);
      }
    }
    return this.#index.get(`${kind}:${name}`) ?? -1;
  }

  /** The variable's ELF symbol value when given, else BTF's offset. */
  protected override varOffset(name: string, offset: number): number {
    return this.#offsets.get(name) ?? offset;
  }
}
