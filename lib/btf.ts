/**
 * Reads struct and data-section layouts out of a BPF object's BTF through
 * libbpf, so that TypeScript can check its own declarations against what the
 * compiler actually laid out.
 *
 * @module
 */

import { bpf, cstr, readCString } from "./_ffi.ts";

// enum btf_kind, from linux/btf.h
const BTF_KIND_STRUCT = 4;
const BTF_KIND_DATASEC = 15;

/** One member of a struct, or one variable of a data section, in bytes. */
export interface BtfSlot {
  name: string;
  offset: number;
  size: number;
}

/** A struct as BTF describes it. */
export interface BtfStruct {
  name: string;
  size: number;
  members: BtfSlot[];
}

/** A borrowed view of a `struct btf` owned by a BPF object. */
export class Btf {
  #ptr: Deno.PointerObject;

  /** Wraps a `struct btf *` that stays owned by its BPF object. */
  constructor(ptr: Deno.PointerObject) {
    this.#ptr = ptr;
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
    }));
    return { name, size, members };
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
