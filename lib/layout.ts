/**
 * Record layouts: a C struct declared once in TypeScript, field by field, with
 * its C type and byte offset. The TypeScript type of a decoded record and its
 * decoder both come from that one declaration, and {@linkcode checkLayout}
 * holds it against the BPF object's BTF so a stale layout fails loudly instead
 * of decoding garbage.
 *
 * @example Declaring and decoding a record
 * ```ts
 * import { defineLayout, type RecordOf } from "./layout.ts";
 *
 * const point = defineLayout("point", 24, {
 *   x: ["u32", 0],
 *   y: ["i32", 4],
 *   label: ["char[16]", 8],
 * });
 * type Point = RecordOf<typeof point>; // { x: number; y: number; label: string }
 *
 * const bytes = new Uint8Array(24);
 * new DataView(bytes.buffer).setUint32(0, 7, true);
 * bytes.set(new TextEncoder().encode("hi"), 8);
 * const p: Point = point.decode(bytes);
 * console.log(p.x, p.label); // 7 "hi"
 * ```
 *
 * @module
 */

import type { BtfShape, BtfStruct } from "./btf.ts";
import { LayoutMismatchError } from "./errors.ts";

/**
 * A field's C type. Integers decode to `number` (64-bit ones exactly up to
 * 2^53); `char[N]` decodes a NUL-terminated string.
 */
export type FieldType =
  | "u8"
  | "u16"
  | "u32"
  | "u64"
  | "i8"
  | "i16"
  | "i32"
  | "i64"
  | `char[${number}]`;

/** A field declaration: its C type and its byte offset in the struct. */
export type FieldSpec = readonly [type: FieldType, offset: number];

/** The value a field of type `T` decodes to. */
export type FieldValue<T extends FieldType> = T extends `char[${number}]` ? string
  : number;

/** A struct's fields, by name. */
export type Fields = Record<string, FieldSpec>;

/** The decoded record type of a layout's fields. */
export type Decoded<F extends Fields> = {
  -readonly [K in keyof F]: FieldValue<F[K][0]>;
};

/** The decoded record type of a {@linkcode Layout}. */
export type RecordOf<L> = L extends Layout<infer F> ? Decoded<F> : never;

/** A declared C struct layout with its decoder. */
export interface Layout<F extends Fields = Fields> {
  /** The C struct's tag, e.g. `"unlink_event"` for `struct unlink_event`. */
  readonly name: string;
  /** `sizeof(struct name)`. */
  readonly size: number;
  /** The fields, as declared. */
  readonly fields: F;
  /** Decodes one record that starts at `offset` in `bytes`. */
  decode(bytes: Uint8Array, offset?: number): Decoded<F>;
}

const INT_SIZES: Record<string, number> = {
  u8: 1,
  i8: 1,
  u16: 2,
  i16: 2,
  u32: 4,
  i32: 4,
  u64: 8,
  i64: 8,
};

/** The byte size of a field type. */
export function fieldSize(type: FieldType): number {
  const array = /^char\[(\d+)\]$/.exec(type);
  if (array) return Number(array[1]);
  const size = INT_SIZES[type];
  if (!size) throw new TypeError(`Unknown field type "${type}"`);
  return size;
}

type Reader = (view: DataView, bytes: Uint8Array, at: number) => number | string;

// ignoreBOM: a name may start with U+FEFF, and it must not vanish.
const utf8 = new TextDecoder("utf-8", { ignoreBOM: true });

/**
 * Decodes the NUL-terminated string in `bytes[start, start + max)`. Pure ASCII
 * (nearly every path and comm) skips the TextDecoder; anything else decodes as
 * UTF-8 with invalid bytes replaced by U+FFFD.
 */
export function decodeCString(
  bytes: Uint8Array,
  start: number,
  max: number,
): string {
  let end = start;
  const limit = start + max;
  let ascii = true;
  while (end < limit) {
    const b = bytes[end];
    if (b === 0) break;
    if (b > 0x7f) ascii = false;
    end++;
  }
  if (!ascii) return utf8.decode(bytes.subarray(start, end));
  if (end - start <= 64) {
    let s = "";
    for (let i = start; i < end; i++) s += String.fromCharCode(bytes[i]);
    return s;
  }
  return String.fromCharCode.apply(
    null,
    bytes.subarray(start, end) as unknown as number[],
  );
}

function reader(type: FieldType, offset: number): Reader {
  switch (type) {
    case "u8":
      return (v, _, at) => v.getUint8(at + offset);
    case "i8":
      return (v, _, at) => v.getInt8(at + offset);
    case "u16":
      return (v, _, at) => v.getUint16(at + offset, true);
    case "i16":
      return (v, _, at) => v.getInt16(at + offset, true);
    case "u32":
      return (v, _, at) => v.getUint32(at + offset, true);
    case "i32":
      return (v, _, at) => v.getInt32(at + offset, true);
    case "u64":
      return (v, _, at) =>
        v.getUint32(at + offset, true) +
        v.getUint32(at + offset + 4, true) * 0x1_0000_0000;
    case "i64":
      return (v, _, at) =>
        v.getUint32(at + offset, true) +
        v.getInt32(at + offset + 4, true) * 0x1_0000_0000;
    default: {
      const max = fieldSize(type);
      return (_, bytes, at) => decodeCString(bytes, at + offset, max);
    }
  }
}

/**
 * Declares the layout of `struct name`: its size and each field's C type and
 * byte offset, exactly as the C header lays them out (little-endian, as BPF
 * on x86_64 and arm64). Overlapping or out-of-bounds fields are a RangeError.
 */
export function defineLayout<const F extends Fields>(
  name: string,
  size: number,
  fields: F,
): Layout<F> {
  const entries = Object.entries(fields);
  const spans = entries
    .map(([field, [type, offset]]) => ({
      field,
      offset,
      end: offset + fieldSize(type),
    }))
    .sort((a, b) => a.offset - b.offset);
  let end = 0;
  for (const span of spans) {
    if (!Number.isInteger(span.offset) || span.offset < end) {
      throw new RangeError(
        `Field "${span.field}" of struct ${name} overlaps the field before it`,
      );
    }
    end = span.end;
  }
  if (end > size) {
    throw new RangeError(
      `Field "${spans.at(-1)!.field}" ends at ${end}, past sizeof(struct ${name}) = ${size}`,
    );
  }

  for (const [field] of entries) {
    if (!/^[A-Za-z_$][\w$]*$/.test(field)) {
      throw new TypeError(`Field name "${field}" of struct ${name} is not an identifier`);
    }
  }
  const readers = entries.map(([, [type, offset]]) => reader(type, offset));
  // One object literal with every field: V8 gives all records one hidden
  // class, which makes decoding ~40% cheaper than adding keys in a loop. The
  // generated code only names the (checked) fields and indexes `readers`.
  const build = new Function(
    "r",
    "v",
    "b",
    "at",
    `return { ${entries.map(([field], i) => `${field}: r[${i}](v, b, at)`).join(", ")} };`,
  ) as (r: Reader[], v: DataView, b: Uint8Array, at: number) => Decoded<F>;
  // Readers address the whole underlying buffer, so one DataView and one
  // byte view serve every record in it.
  let lastBuffer: ArrayBufferLike | undefined;
  let view!: DataView;
  let all!: Uint8Array;

  return {
    name,
    size,
    fields,
    decode(bytes: Uint8Array, offset = 0): Decoded<F> {
      if (offset < 0 || offset + size > bytes.length) {
        throw new RangeError(
          `struct ${name} needs ${size} bytes at ${offset}, but only ${
            bytes.length - offset
          } are there`,
        );
      }
      if (bytes.buffer !== lastBuffer) {
        lastBuffer = bytes.buffer;
        view = new DataView(bytes.buffer);
        all = new Uint8Array(bytes.buffer);
      }
      return build(readers, view, all, bytes.byteOffset + offset);
    },
  };
}

/** Whether a declared field type is the C type BTF describes. */
function fits(type: FieldType, shape: BtfShape): boolean {
  const array = /^char\[(\d+)\]$/.exec(type);
  if (array) {
    return shape.kind === "array" && shape.count === Number(array[1]) &&
      shape.element.kind === "int" && shape.element.size === 1;
  }
  return shape.kind === "int" && shape.size === fieldSize(type) &&
    shape.signed === type.startsWith("i");
}

/** A BTF shape in the layout's own words: `i32`, `char[16]`, `a 8-byte struct or pointer`. */
function shapeText(shape: BtfShape): string {
  if (shape.kind === "int") return `${shape.signed ? "i" : "u"}${shape.size * 8}`;
  if (shape.kind === "array") return `an array of ${shape.count} ${shapeText(shape.element)}`;
  return `a ${shape.size}-byte struct or pointer`;
}

/**
 * Checks a declared layout against the struct that BTF describes: the same
 * size, the same members, and each member at the same offset with the same
 * C type (size, and signedness for integers, 64-bit ones included). Throws a
 * {@linkcode LayoutMismatchError} naming the first difference.
 */
export function checkLayout(layout: Layout, btf: BtfStruct | undefined): void {
  const fail = (problem: string) => {
    throw new LayoutMismatchError(layout.name, problem);
  };
  if (!btf) return fail("the object has no such struct in its BTF");
  if (btf.size !== layout.size) {
    fail(`its size is ${btf.size} in BTF, ${layout.size} declared`);
  }
  const declared = new Map(Object.entries(layout.fields));
  for (const member of btf.members) {
    const spec = declared.get(member.name);
    if (!spec) {
      return fail(
        `field "${member.name}" (offset ${member.offset}) is missing from the layout`,
      );
    }
    const [type, offset] = spec;
    if (offset !== member.offset) {
      fail(
        `field "${member.name}" is at offset ${member.offset} in BTF, ${offset} declared`,
      );
    }
    if (fieldSize(type) !== member.size) {
      fail(
        `field "${member.name}" is ${member.size} bytes in BTF, ${type} (${
          fieldSize(type)
        } bytes) declared`,
      );
    }
    const wanted = shapeText(member.shape);
    if (!fits(type, member.shape)) {
      fail(`field "${member.name}" is ${wanted} in BTF, ${type} declared`);
    }
    declared.delete(member.name);
  }
  for (const field of declared.keys()) {
    fail(`field "${field}" is declared but BTF has no such member`);
  }
}
