/**
 * Reads struct and data-section layouts out of a BPF object's BTF through
 * libbpf, so that TypeScript can check its own declarations against what the
 * compiler actually laid out.
 *
 * @module
 */

import { bpf, cstr, readCString } from "./_ffi.ts";

// enum btf_kind, from linux/btf.h
const BTF_KIND_INT = 1;
const BTF_KIND_ARRAY = 3;
const BTF_KIND_STRUCT = 4;
const BTF_KIND_ENUM = 6;
const BTF_KIND_TYPEDEF = 8;
const BTF_KIND_VOLATILE = 9;
const BTF_KIND_CONST = 10;
const BTF_KIND_RESTRICT = 11;
const BTF_KIND_DATASEC = 15;
const BTF_KIND_TYPE_TAG = 18;
const BTF_KIND_ENUM64 = 19;
const BTF_INT_SIGNED = 1;
/** Kinds that only qualify or rename the type they point to. */
const MODIFIERS = new Set([
  BTF_KIND_TYPEDEF,
  BTF_KIND_VOLATILE,
  BTF_KIND_CONST,
  BTF_KIND_RESTRICT,
  BTF_KIND_TYPE_TAG,
]);

/**
 * What a member's type is, with typedefs and qualifiers resolved: an integer
 * (enums count as integers) with its signedness, an array with its element
 * type and length, or anything else (struct, pointer...).
 */
export type BtfShape =
  | { kind: "int"; size: number; signed: boolean }
  | { kind: "array"; element: BtfShape; count: number }
  | { kind: "other"; size: number };

/** One member of a struct, or one variable of a data section, in bytes. */
export interface BtfSlot {
  name: string;
  offset: number;
  size: number;
}

/** One member of a struct: its slot, and the shape of its type. */
export interface BtfMember extends BtfSlot {
  shape: BtfShape;
}

/** A struct as BTF describes it. */
export interface BtfStruct {
  name: string;
  size: number;
  members: BtfMember[];
}

/** Whatever owns a `struct btf`: it is usable while `unsafeHandle` is non-null. */
export interface BtfOwner {
  readonly unsafeHandle: Deno.PointerValue;
}

/**
 * A borrowed view of a `struct btf` owned by a BPF object. Using it after its
 * owner is closed throws a TypeError instead of reading freed memory.
 */
export class Btf {
  #raw: Deno.PointerObject;
  #owner: BtfOwner;

  /** Wraps a `struct btf *` that stays owned by `owner` (a `BpfObject`). */
  constructor(ptr: Deno.PointerObject, owner: BtfOwner) {
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

  /** The struct named `name`, or `undefined` if BTF has none. */
  struct(name: string): BtfStruct | undefined {
    const found = this.#find(name, BTF_KIND_STRUCT);
    if (!found) return undefined;
    const { size, slots } = found;
    const members = slots.map(([nameOff, type, bits]) => ({
      name: this.#name(nameOff),
      // Without kind_flag the member offset is in bits; with it (bitfields) the
      // low 24 bits are. We have no bitfields, but mask for safety.
      offset: (bits & 0xffffff) / 8,
      size: Number(bpf().btf__resolve_size(this.#ptr, type)),
      shape: this.#shape(type),
    }));
    return { name, size, members };
  }

  /** The shape of type `id`, through typedefs and qualifiers. */
  #shape(id: number): BtfShape {
    for (let hops = 0; hops < 32; hops++) {
      const t = bpf().btf__type_by_id(this.#ptr, id);
      if (!t) break;
      const view = new Deno.UnsafePointerView(t);
      const info = view.getUint32(4);
      const kind = (info >>> 24) & 0x1f;
      if (MODIFIERS.has(kind)) {
        id = view.getUint32(8);
        continue;
      }
      const size = view.getUint32(8);
      if (kind === BTF_KIND_INT) {
        return { kind: "int", size, signed: (view.getUint32(12) >>> 24 & BTF_INT_SIGNED) !== 0 };
      }
      // For enums, kind_flag (bit 31) marks a signed one.
      if (kind === BTF_KIND_ENUM || kind === BTF_KIND_ENUM64) {
        return { kind: "int", size, signed: (info >>> 31) === 1 };
      }
      if (kind === BTF_KIND_ARRAY) {
        // struct btf_array { __u32 type, index_type, nelems; } after btf_type.
        return {
          kind: "array",
          element: this.#shape(view.getUint32(12)),
          count: view.getUint32(20),
        };
      }
      return { kind: "other", size: Number(bpf().btf__resolve_size(this.#ptr, id)) };
    }
    return { kind: "other", size: 0 };
  }

  /** The variables of a data section such as `".rodata"`, or `undefined`. */
  datasec(name: string): BtfSlot[] | undefined {
    const found = this.#find(name, BTF_KIND_DATASEC);
    if (!found) return undefined;
    return found.slots.map(([type, offset, size]) => {
      const v = bpf().btf__type_by_id(this.#ptr, type)!;
      return {
        name: this.#name(new Deno.UnsafePointerView(v).getUint32(0)),
        offset,
        size,
      };
    });
  }

  /** Finds a type by name and kind; returns its size and its trailing u32 triples. */
  #find(name: string, kind: number) {
    const id = bpf().btf__find_by_name_kind(this.#ptr, cstr(name), kind);
    if (id < 0) return undefined;
    const t = bpf().btf__type_by_id(this.#ptr, id);
    if (!t) return undefined;
    const view = new Deno.UnsafePointerView(t);
    const info = view.getUint32(4);
    const vlen = info & 0xffff;
    const size = view.getUint32(8);
    // struct btf_member / struct btf_var_secinfo: three u32 each, after the
    // 12-byte struct btf_type.
    const slots: [number, number, number][] = [];
    for (let i = 0; i < vlen; i++) {
      const at = 12 + i * 12;
      slots.push([
        view.getUint32(at),
        view.getUint32(at + 4),
        view.getUint32(at + 8),
      ]);
    }
    return { size, slots };
  }

  #name(offset: number): string {
    return readCString(bpf().btf__name_by_offset(this.#ptr, offset));
  }
}
