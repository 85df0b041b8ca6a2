/**
 * Record layouts: a C struct declared once in TypeScript, field by field, with
 * its C type and byte offset. The TypeScript type of a decoded record, its
 * decoder and its encoder all come from that one declaration, and
 * {@linkcode checkLayout} holds it against the BPF object's BTF so a stale
 * layout fails loudly instead of decoding garbage. {@linkcode layoutFromBtf}
 * derives a layout from BTF instead, at run time.
 *
 * Field types:
 *
 * | type | C | decodes to |
 * | --- | --- | --- |
 * | `u8` `u16` `u32` `u64` `i8` `i16` `i32` `i64` | `__u8` ... `__s64` | `number` (64-bit ones exact up to 2^53) |
 * | `u64n` `i64n` | `__u64` `__s64` | `bigint` (exact) |
 * | `char[N]` | `char x[N]` | `string`, up to the first NUL |
 * | `u32[N]`, `i64n[N]`, ... | `__u32 x[N]` | `number[]` or `bigint[]` |
 * | another `Layout` | `struct inner x` | the nested record |
 *
 * A record may end in a variable-length tail whose byte length is a field of
 * the struct (`struct ev { __u32 path_len; char path[]; }`): declare it with
 * `{ tail: { length: "path_len", as: "path" } }`.
 *
 * @example Declaring, decoding and encoding a record
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
 * const bytes = point.encode({ x: 7, y: -1, label: "hi" });
 * const p: Point = point.decode(bytes);
 * console.log(p.x, p.label); // 7 "hi"
 * ```
 *
 * @example A record with a variable-length tail, as a ring buffer delivers it
 * ```ts
 * import { defineLayout } from "./layout.ts";
 *
 * const ev = defineLayout("ev", 8, { pid: ["u32", 0], path_len: ["u32", 4] }, {
 *   tail: { length: "path_len", as: "path" },
 * });
 * const bytes = ev.encode({ pid: 1, path_len: 0, path: "/tmp/x" });
 * const e = ev.decode(bytes, 0, bytes.length); // { pid: 1, path_len: 6, path: "/tmp/x" }
 * console.log(e.path);
 * ```
 *
 * @module
 */

import type { BtfMember, BtfShape, BtfStruct } from "./btf.ts";
import { LayoutMismatchError } from "./errors.ts";

/** An integer field that decodes to a `number`. */
export type IntType = "u8" | "u16" | "u32" | "u64" | "i8" | "i16" | "i32" | "i64";

/** A 64-bit integer field that decodes to a `bigint`. */
export type BigIntType = "u64n" | "i64n";

/** An integer field type. */
export type ScalarType = IntType | BigIntType;

/**
 * A field's C type: an integer, a `char[N]` string, an array of integers,
 * or a nested struct's {@linkcode Layout}.
 */
export type FieldType =
  | ScalarType
  | `char[${number}]`
  | `${ScalarType}[${number}]`
  | Layout<Fields, undefined>;

/** A field declaration: its C type and its byte offset in the struct. */
export type FieldSpec = readonly [type: FieldType, offset: number];

/** The value a field of type `T` decodes to. */
export type FieldValue<T extends FieldType> = T extends Layout<infer F, undefined> ? Decoded<F>
  : T extends `char[${number}]` ? string
  : T extends `${BigIntType}[${number}]` ? bigint[]
  : T extends `u8[${number}]` ? Uint8Array
  : T extends `${IntType}[${number}]` ? number[]
  : T extends BigIntType ? bigint
  : number;

/** A struct's fields, by name. */
export type Fields = Record<string, FieldSpec>;

/** The decoded record type of a layout's fields. */
export type Decoded<F extends Fields> = {
  -readonly [K in keyof F]: FieldValue<F[K][0]>;
};

/**
 * A variable-length tail after the fixed struct: its byte length is the
 * integer field `length`, it decodes into the property `as`, as a string (up
 * to its first NUL, the default) or as bytes (`type: "bytes"`). It starts at
 * `offset` (default: the struct's size; a C flexible array member's offset
 * may be smaller, inside the struct's trailing padding).
 */
export interface Tail<K extends string = string> {
  /** The integer field that holds the tail's length in bytes. */
  readonly length: K;
  /** The property the tail decodes into. */
  readonly as: string;
  /** `"string"` (default) or `"bytes"` (a `Uint8Array`). */
  readonly type?: "string" | "bytes";
  /** Where the tail starts in the record; default `size`. */
  readonly offset?: number;
}

/** The value a tail decodes to. */
export type TailValue<T extends Tail> = T extends { readonly type: "bytes" } ? Uint8Array : string;

/** A decoded record: its fields, and its tail if it has one. */
export type LayoutRecord<F extends Fields, T extends Tail | undefined> =
  & Decoded<F>
  & (T extends Tail ? { [K in T["as"]]: TailValue<T> } : unknown);

/**
 * The decoded record type of a {@linkcode Layout}.
 *
 * @example
 * ```ts
 * import { defineLayout, type RecordOf } from "./layout.ts";
 *
 * const ev = defineLayout("ev", 8, { pid: ["u32", 0], n: ["u32", 4] }, {
 *   tail: { length: "n", as: "path" },
 * });
 * type Ev = RecordOf<typeof ev>; // { pid: number; n: number } & { path: string }
 * ```
 */
export type RecordOf<L> = L extends Layout<infer F, infer T> ? LayoutRecord<F, T> : never;

/**
 * A declared C struct layout with its decoder and encoder.
 *
 * @example Decode the records of a ring buffer (needs root)
 * ```ts
 * import type { Layout } from "./layout.ts";
 * import type { RingBuffer } from "./ring_buffer.ts";
 *
 * export function drainAll(ring: RingBuffer, layout: Layout): number {
 *   return ring.drain((bytes, offset, length) => {
 *     console.log(layout.decode(bytes, offset, length));
 *   });
 * }
 * ```
 */
export interface Layout<F extends Fields = Fields, T extends Tail | undefined = undefined> {
  /** The C struct's tag, e.g. `"unlink_event"` for `struct unlink_event`. */
  readonly name: string;
  /** `sizeof(struct name)`. */
  readonly size: number;
  /** The fields, as declared. */
  readonly fields: F;
  /** The variable-length tail, if the record has one. */
  readonly tail: T;
  /**
   * Decodes one record that starts at `offset` in `bytes`. A record with a
   * tail needs its `length` (the ring reader's third argument): the tail is
   * cut where the record ends, never read past it.
   */
  decode(bytes: Uint8Array, offset?: number, length?: number): LayoutRecord<F, T>;
  /**
   * Encodes a record into new bytes (a map key or value, a test record).
   * Unlisted padding is zero; a tail's length field is set to the tail's
   * byte length.
   */
  encode(record: LayoutRecord<F, T>): Uint8Array<ArrayBuffer>;
}

/** Any layout, with or without a tail. */
export type AnyLayout = Layout<Fields, Tail | undefined>;

/** Options for {@linkcode defineLayout}. */
export interface LayoutOptions<T> {
  /** The record's variable-length tail. */
  tail?: T;
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
  u64n: 8,
  i64n: 8,
};

/** A field type taken apart: a scalar, a string, an array of scalars, or a struct. */
type Parsed =
  | { kind: "scalar"; type: ScalarType }
  | { kind: "string"; size: number }
  | { kind: "array"; type: ScalarType; count: number }
  | { kind: "struct"; layout: Layout<Fields, undefined> };

function parse(type: FieldType): Parsed {
  if (typeof type === "object") return { kind: "struct", layout: type };
  const array = /^(\w+)\[(\d+)\]$/.exec(type);
  if (array && array[1] === "char") return { kind: "string", size: Number(array[2]) };
  const scalar = array ? array[1] : type;
  if (!INT_SIZES[scalar]) throw new TypeError(`Unknown field type "${type}"`);
  if (array) return { kind: "array", type: scalar as ScalarType, count: Number(array[2]) };
  return { kind: "scalar", type: scalar as ScalarType };
}

/**
 * The byte size of a field type.
 *
 * @example
 * ```ts
 * import { fieldSize } from "./layout.ts";
 *
 * console.log(fieldSize("u32[4]"), fieldSize("char[16]")); // 16 16
 * ```
 */
export function fieldSize(type: FieldType): number {
  const p = parse(type);
  switch (p.kind) {
    case "scalar":
      return INT_SIZES[p.type];
    case "string":
      return p.size;
    case "array":
      return INT_SIZES[p.type] * p.count;
    case "struct":
      return p.layout.size;
  }
}

/** How a field is read from and written to the whole underlying buffer. */
interface Codec {
  read(view: DataView, bytes: Uint8Array, at: number): unknown;
  write(view: DataView, bytes: Uint8Array, at: number, value: unknown, field: string): void;
}

/** What a layout keeps for layouts that nest it. */
interface Internals {
  read(view: DataView, bytes: Uint8Array, at: number): Record<string, unknown>;
  write(view: DataView, bytes: Uint8Array, at: number, value: unknown, field: string): void;
}
const internals = new WeakMap<object, Internals>();

// ignoreBOM: a name may start with U+FEFF, and it must not vanish.
const utf8 = new TextDecoder("utf-8", { ignoreBOM: true });
const utf8Encoder = new TextEncoder();

/**
 * Decodes the NUL-terminated string in `bytes[start, start + max)`. Pure ASCII
 * (nearly every path and comm) skips the TextDecoder; anything else decodes as
 * UTF-8 with invalid bytes replaced by U+FFFD.
 *
 * @example
 * ```ts
 * import { decodeCString } from "./layout.ts";
 *
 * console.log(decodeCString(new Uint8Array([0x72, 0x6d, 0, 0x78]), 0, 4)); // "rm"
 * ```
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

type ScalarRead = (v: DataView, at: number) => number | bigint;
type ScalarWrite = (v: DataView, at: number, x: number | bigint) => void;

const READ: Record<ScalarType, ScalarRead> = {
  u8: (v, at) => v.getUint8(at),
  i8: (v, at) => v.getInt8(at),
  u16: (v, at) => v.getUint16(at, true),
  i16: (v, at) => v.getInt16(at, true),
  u32: (v, at) => v.getUint32(at, true),
  i32: (v, at) => v.getInt32(at, true),
  // Two 32-bit reads beat getBigUint64 + Number() by far on the hot path.
  u64: (v, at) => v.getUint32(at, true) + v.getUint32(at + 4, true) * 0x1_0000_0000,
  i64: (v, at) => v.getUint32(at, true) + v.getInt32(at + 4, true) * 0x1_0000_0000,
  u64n: (v, at) => v.getBigUint64(at, true),
  i64n: (v, at) => v.getBigInt64(at, true),
};

const WRITE: Record<ScalarType, ScalarWrite> = {
  u8: (v, at, x) => v.setUint8(at, Number(x)),
  i8: (v, at, x) => v.setInt8(at, Number(x)),
  u16: (v, at, x) => v.setUint16(at, Number(x), true),
  i16: (v, at, x) => v.setInt16(at, Number(x), true),
  u32: (v, at, x) => v.setUint32(at, Number(x), true),
  i32: (v, at, x) => v.setInt32(at, Number(x), true),
  u64: (v, at, x) => v.setBigUint64(at, BigInt(x), true),
  i64: (v, at, x) => v.setBigInt64(at, BigInt(x), true),
  u64n: (v, at, x) => v.setBigUint64(at, BigInt(x), true),
  i64n: (v, at, x) => v.setBigInt64(at, BigInt(x), true),
};

/** Checks that `x` fits scalar `type` (a number, or a bigint for `u64n`/`i64n`). */
function checkScalar(type: ScalarType, x: unknown, field: string): void {
  const bits = INT_SIZES[type] * 8;
  const signed = type.startsWith("i");
  const min = signed ? -(2n ** BigInt(bits - 1)) : 0n;
  const max = (signed ? 2n ** BigInt(bits - 1) : 2n ** BigInt(bits)) - 1n;
  const big = type.endsWith("n");
  if (big ? typeof x !== "bigint" : !Number.isSafeInteger(x)) {
    throw new TypeError(
      `Field "${field}" is ${type}: expected ${big ? "a bigint" : "a safe integer"}, got ${
        String(x)
      }`,
    );
  }
  const n = BigInt(x as number | bigint);
  if (n < min || n > max) {
    throw new RangeError(`Field "${field}" is ${type}: ${n} is outside ${min}..${max}`);
  }
}

function encodeString(value: unknown, max: number, field: string): Uint8Array {
  if (typeof value !== "string") {
    throw new TypeError(`Field "${field}" is char[${max}]: expected a string, got ${value}`);
  }
  const encoded = utf8Encoder.encode(value);
  if (encoded.length > max) {
    throw new RangeError(
      `Field "${field}" holds at most ${max} bytes, got ${encoded.length} ("${value}")`,
    );
  }
  return encoded;
}

function codec(type: FieldType, offset: number): Codec {
  const p = parse(type);
  switch (p.kind) {
    case "scalar": {
      const read = READ[p.type];
      const write = WRITE[p.type];
      return {
        read: (v, _, at) => read(v, at + offset),
        write: (v, _, at, x, field) => {
          checkScalar(p.type, x, field);
          write(v, at + offset, x as number | bigint);
        },
      };
    }
    case "string":
      return {
        read: (_, b, at) => decodeCString(b, at + offset, p.size),
        write: (_, b, at, x, field) => b.set(encodeString(x, p.size, field), at + offset),
      };
    case "array": {
      if (p.type === "u8") return bytesCodec(p.count, offset, `u8[${p.count}]`);
      const read = READ[p.type];
      const write = WRITE[p.type];
      const step = INT_SIZES[p.type];
      return {
        read: (v, _, at) => {
          const out = new Array(p.count);
          for (let i = 0; i < p.count; i++) out[i] = read(v, at + offset + i * step);
          return out;
        },
        write: (v, _, at, x, field) => {
          if (!Array.isArray(x) || x.length > p.count) {
            throw new TypeError(
              `Field "${field}" is ${type}: expected an array of at most ${p.count} elements`,
            );
          }
          x.forEach((e, i) => {
            checkScalar(p.type, e, `${field}[${i}]`);
            write(v, at + offset + i * step, e);
          });
        },
      };
    }
    case "struct": {
      const inner = internals.get(p.layout)!;
      return {
        read: (v, b, at) => inner.read(v, b, at + offset),
        write: (v, b, at, x, field) => inner.write(v, b, at + offset, x, field),
      };
    }
  }
}

/** A `u8[N]` field: bytes, decoded as a copy (ring memory is reused). */
function bytesCodec(count: number, offset: number, type: string): Codec {
  return {
    read: (_, b, at) => b.slice(at + offset, at + offset + count),
    write: (_, b, at, x, field) => {
      const ok = (x instanceof Uint8Array || Array.isArray(x)) && x.length <= count &&
        [...x].every((e) => Number.isInteger(e) && e >= 0 && e <= 255);
      if (!ok) {
        throw new TypeError(
          `Field "${field}" is ${type}: expected a Uint8Array or byte array of at most ${count} bytes`,
        );
      }
      b.set(x as ArrayLike<number>, at + offset);
    },
  };
}

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

/**
 * Declares the layout of `struct name`: its size and each field's C type and
 * byte offset, exactly as the C header lays them out (little-endian, as BPF
 * on x86_64 and arm64). Overlapping or out-of-bounds fields are a RangeError.
 *
 * @param name the C struct's tag
 * @param size `sizeof(struct name)`
 * @param fields each field's type and offset
 * @param options `tail`: a variable-length tail after the struct
 * @returns the layout, whose `decode` and `encode` are typed by `fields`
 *
 * @example A record with a nested struct and 64-bit values as bigints
 * ```ts
 * import { defineLayout } from "./layout.ts";
 *
 * const range = defineLayout("range", 16, { lo: ["u64n", 0], hi: ["u64n", 8] });
 * const ev = defineLayout("ev", 24, { cpu: ["u32", 0], span: [range, 8] });
 * const e = ev.decode(ev.encode({ cpu: 1, span: { lo: 1n, hi: 2n ** 64n - 1n } }));
 * console.log(e.span.hi); // 18446744073709551615n
 * ```
 */
export function defineLayout<
  const F extends Fields,
  const T extends Tail<Extract<keyof F, string>> | undefined = undefined,
>(
  name: string,
  size: number,
  fields: F,
  options: LayoutOptions<T> = {},
): Layout<F, T> {
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
  for (const [field, [type]] of entries) {
    if (!IDENTIFIER.test(field)) {
      throw new TypeError(`Field name "${field}" of struct ${name} is not an identifier`);
    }
    if (typeof type === "object" && (!internals.has(type) || type.tail)) {
      throw new TypeError(
        `Field "${field}" of struct ${name} nests a layout that defineLayout did not make, or one with a tail`,
      );
    }
  }
  const tail = options.tail as Tail | undefined;
  const tailAt = tail?.offset ?? size;
  if (tail) {
    const len = fields[tail.length]?.[0];
    if (typeof len !== "string" || parse(len).kind !== "scalar") {
      throw new TypeError(
        `The tail of struct ${name} takes its length from the field "${tail.length}", which is not an integer field`,
      );
    }
    if (!IDENTIFIER.test(tail.as) || tail.as in fields) {
      throw new TypeError(
        `The tail of struct ${name} decodes into "${tail.as}": pick an identifier that is not a field`,
      );
    }
    if (!Number.isInteger(tailAt) || tailAt < end || tailAt > size) {
      throw new RangeError(
        `The tail of struct ${name} starts at ${tailAt}: it must be after the last field (${end}) and at most sizeof (${size})`,
      );
    }
  }

  const codecs = entries.map(([, [type, offset]]) => codec(type, offset));
  const readers = codecs.map((c) => c.read);
  // One object literal with every field: V8 gives all records one hidden
  // class, which makes decoding ~40% cheaper than adding keys in a loop. The
  // generated code only names the (checked) fields and indexes `readers`.
  const names = entries.map(([field]) => field);
  const build = new Function(
    "r",
    "v",
    "b",
    "at",
    "t",
    `return { ${names.map((field, i) => `${field}: r[${i}](v, b, at)`).join(", ")}${
      tail ? `, ${tail.as}: t` : ""
    } };`,
  ) as (
    r: Codec["read"][],
    v: DataView,
    b: Uint8Array,
    at: number,
    t?: unknown,
  ) => Record<string, unknown>;
  const readLength = tail ? codecs[names.indexOf(tail.length)].read : undefined;

  const write = (v: DataView, b: Uint8Array, at: number, value: unknown, path: string) => {
    if (typeof value !== "object" || value === null) {
      throw new TypeError(`Cannot encode struct ${name}${path && ` (${path})`}: not an object`);
    }
    const record = value as Record<string, unknown>;
    for (let i = 0; i < names.length; i++) {
      const field = path ? `${path}.${names[i]}` : names[i];
      if (!(names[i] in record)) {
        throw new TypeError(`Cannot encode struct ${name}: field "${field}" is missing`);
      }
      codecs[i].write(v, b, at, record[names[i]], field);
    }
  };
  // Readers address the whole underlying buffer, so one DataView and one
  // byte view serve every record in it.
  let lastBuffer: ArrayBufferLike | undefined;
  let view!: DataView;
  let all!: Uint8Array;

  const layout: Layout<F, T> = {
    name,
    size,
    fields,
    tail: options.tail as T,
    decode(bytes: Uint8Array, offset = 0, length?: number): LayoutRecord<F, T> {
      const available = bytes.length - offset;
      // A record with a tail may end inside the struct's trailing padding.
      const need = Math.max(tail ? tailAt : size, length ?? 0);
      if (offset < 0 || need > available) {
        throw new RangeError(
          `struct ${name} needs ${need} bytes at ${offset}, but only ${
            Math.max(available, 0)
          } are there`,
        );
      }
      if (bytes.buffer !== lastBuffer) {
        lastBuffer = bytes.buffer;
        view = new DataView(bytes.buffer);
        all = new Uint8Array(bytes.buffer);
      }
      const at = bytes.byteOffset + offset;
      if (!tail) return build(readers, view, all, at) as LayoutRecord<F, T>;
      if (length === undefined) {
        throw new TypeError(
          `struct ${name} has a variable tail: decode(bytes, offset, length) needs the record's length`,
        );
      }
      if (length < tailAt) {
        throw new RangeError(`struct ${name} needs ${tailAt} bytes, but the record has ${length}`);
      }
      const declared = Number(readLength!(view, all, at));
      const n = Math.max(0, Math.min(declared, length - tailAt));
      const t = tail.type === "bytes"
        ? all.slice(at + tailAt, at + tailAt + n)
        : decodeCString(all, at + tailAt, n);
      return build(readers, view, all, at, t) as LayoutRecord<F, T>;
    },
    encode(record: LayoutRecord<F, T>): Uint8Array<ArrayBuffer> {
      let extra: Uint8Array | undefined;
      let input = record as Record<string, unknown>;
      if (tail) {
        const t = input[tail.as];
        if (tail.type === "bytes" ? !(t instanceof Uint8Array) : typeof t !== "string") {
          throw new TypeError(
            `Cannot encode struct ${name}: its tail "${tail.as}" must be ${
              tail.type === "bytes" ? "a Uint8Array" : "a string"
            }`,
          );
        }
        extra = typeof t === "string" ? utf8Encoder.encode(t) : t as Uint8Array;
        const lenType = fields[tail.length][0] as ScalarType;
        input = {
          ...input,
          [tail.length]: lenType.endsWith("n") ? BigInt(extra.length) : extra.length,
        };
      }
      const bytes = new Uint8Array(extra ? Math.max(size, tailAt + extra.length) : size);
      write(new DataView(bytes.buffer), bytes, 0, input, "");
      if (extra) bytes.set(extra, tailAt);
      return bytes;
    },
  };
  internals.set(layout, { read: (v, b, at) => build(readers, v, b, at), write });
  return layout;
}

/** Whether a declared scalar or string type is the C type BTF describes. */
function fits(type: Exclude<FieldType, Layout<Fields, undefined>>, shape: BtfShape): boolean {
  const p = parse(type);
  if (p.kind === "string") {
    return shape.kind === "array" && shape.count === p.size &&
      shape.element.kind === "int" && shape.element.size === 1;
  }
  if (p.kind === "array") {
    return shape.kind === "array" && shape.count === p.count && fits(p.type, shape.element);
  }
  if (p.kind !== "scalar") return false;
  if (shape.kind === "pointer") return p.type === "u64" || p.type === "u64n";
  return shape.kind === "int" && shape.size === INT_SIZES[p.type] &&
    shape.signed === p.type.startsWith("i");
}

/** A BTF shape in the layout's own words: `i32`, `char[16]`, `struct foo`. */
function shapeText(shape: BtfShape): string {
  switch (shape.kind) {
    case "int":
      return `${shape.signed ? "i" : "u"}${shape.size * 8}`;
    case "array":
      return `an array of ${shape.count} ${shapeText(shape.element)}`;
    case "struct":
      return `struct ${shape.name || "(anonymous)"}`;
    case "union":
      return `union ${shape.name || "(anonymous)"}`;
    case "pointer":
      return "a pointer";
    default:
      return `a ${shape.size}-byte value`;
  }
}

/** What to write in C so that `struct name` is in the object's BTF. */
function markerHint(name: string): string {
  return `add DENO_BPF_RECORD(struct ${name}); to the C source (#include "deno_bpf.h") ` +
    `so that the compiler keeps it in BTF`;
}

/**
 * Checks a declared layout against the struct that BTF describes: the same
 * size, the same members, and each member at the same offset with the same
 * C type (size, and signedness for integers, 64-bit ones included), nested
 * structs member by member. A tail must start where a flexible array member
 * (`char path[]`) does, if the struct has one. Throws a
 * {@linkcode LayoutMismatchError} naming the first difference.
 *
 * @example
 * ```ts
 * import { checkLayout, defineLayout } from "./layout.ts";
 * import { BpfObject } from "./object.ts";
 *
 * // struct exec_event { __u32 pid; char comm[16]; } in your object's C
 * const execEvent = defineLayout("exec_event", 20, { pid: ["u32", 0], comm: ["char[16]", 4] });
 * using obj = BpfObject.openFile("exec.bpf.o");
 * checkLayout(execEvent, obj.btf.struct("exec_event")); // throws if they differ
 * ```
 */
export function checkLayout(layout: AnyLayout, btf: BtfStruct | undefined): void {
  const fail = (problem: string): never => {
    throw new LayoutMismatchError(layout.name, problem);
  };
  if (!btf) {
    throw new LayoutMismatchError(
      layout.name,
      "the object has no such struct in its BTF",
      markerHint(layout.name),
    );
  }
  if (btf.size !== layout.size) {
    fail(`its size is ${btf.size} in BTF, ${layout.size} declared`);
  }
  let members = btf.members;
  const flexible = members.at(-1);
  if (flexible?.shape.kind === "array" && flexible.shape.count === 0) {
    members = members.slice(0, -1);
    const at = layout.tail?.offset ?? layout.size;
    if (!layout.tail) {
      fail(`it ends in the flexible array "${flexible.name}", but the layout declares no tail`);
    } else if (at !== flexible.offset) {
      fail(`its tail "${flexible.name}" is at offset ${flexible.offset} in BTF, ${at} declared`);
    }
  }
  checkMembers(layout, members, "", fail);
}

function checkMembers(
  layout: AnyLayout,
  members: BtfMember[],
  prefix: string,
  fail: (problem: string) => never,
): void {
  const declared = new Map(Object.entries(layout.fields));
  for (const member of members) {
    const name = prefix + member.name;
    const spec = declared.get(member.name);
    if (!spec) {
      fail(`field "${name}" (offset ${member.offset}) is missing from the layout`);
    }
    const [type, offset] = spec!;
    if (offset !== member.offset) {
      fail(`field "${name}" is at offset ${member.offset} in BTF, ${offset} declared`);
    }
    const size = fieldSize(type);
    const typeText = typeof type === "object" ? `struct ${type.name}` : type;
    if (size !== member.size) {
      fail(`field "${name}" is ${member.size} bytes in BTF, ${typeText} (${size} bytes) declared`);
    }
    if (member.bitfield) fail(`field "${name}" is a bitfield, which layouts cannot express`);
    if (typeof type === "object") {
      if (member.shape.kind !== "struct") {
        fail(`field "${name}" is ${shapeText(member.shape)} in BTF, ${typeText} declared`);
      } else {
        checkMembers(type, member.shape.members, `${name}.`, fail);
      }
    } else if (!fits(type, member.shape)) {
      fail(`field "${name}" is ${shapeText(member.shape)} in BTF, ${type} declared`);
    }
    declared.delete(member.name);
  }
  for (const field of declared.keys()) {
    fail(`field "${prefix}${field}" is declared but BTF has no such member`);
  }
}

/** What {@linkcode layoutFromBtf} reads: a `Btf` or `BtfData`. */
export interface BtfStructSource {
  /** The struct named `name`, or `undefined`. */
  struct(name: string): BtfStruct | undefined;
}

/** Options for {@linkcode layoutFromBtf}. */
export interface LayoutFromBtfOptions {
  /** Decode 64-bit integers as `bigint` (`u64n`/`i64n`) instead of `number`. Default false. */
  bigint?: boolean;
  /**
   * For a struct that ends in a flexible array member `x[]`: the integer
   * member holding its length in bytes. Default `x_len`.
   */
  tailLength?: string;
}

/** Plain `char`: its arrays are strings; `__u8`/`unsigned char` arrays are numbers. */
function isChar(shape: BtfShape): boolean {
  return shape.kind === "int" && shape.size === 1 && shape.name === "char";
}

function scalarOf(shape: BtfShape, bigint: boolean): ScalarType | undefined {
  if (shape.kind === "pointer") return bigint ? "u64n" : "u64";
  if (shape.kind !== "int" || ![1, 2, 4, 8].includes(shape.size)) return undefined;
  const type = `${shape.signed ? "i" : "u"}${shape.size * 8}`;
  return (shape.size === 8 && bigint ? `${type}n` : type) as ScalarType;
}

/**
 * Derives the layout of `struct name` from BTF: integers with their
 * signedness (enums as integers, pointers as `u64`), `char[N]` as strings,
 * arrays of integers as arrays of numbers, nested structs as nested records,
 * typedefs and qualifiers resolved. With `{ bigint: true }` 64-bit integers
 * decode to `bigint`. A struct ending in a flexible array member `x[]` of
 * bytes gets a tail whose length is the member `x_len` (a `char` tail is a
 * string, any other byte tail a `Uint8Array`). Bitfields, unions, anonymous
 * members and arrays of structs are refused with a TypeError naming the
 * field; a struct BTF lacks is a {@linkcode LayoutMismatchError}.
 *
 * The layout's TypeScript type is only `AnyLayout`: to get typed records,
 * generate a module with `deno task gen` (see `scripts/gen.ts`), which
 * declares the same layout with {@linkcode defineLayout}.
 *
 * @param btf an object's BTF (`obj.btf`) or a `BtfData`
 * @param name `"struct foo"` or `"foo"`
 * @param options `bigint`, `tailLength`
 * @returns the layout of the struct
 *
 * @example
 * ```ts
 * import { layoutFromBtf } from "./layout.ts";
 * import { BpfObject } from "./object.ts";
 * import { UNLINK_BPF_O } from "../bpf/unlink_bpf.ts";
 *
 * using obj = BpfObject.openMem(UNLINK_BPF_O, "unlink");
 * const event = layoutFromBtf(obj.btf, "struct unlink_event", { bigint: true });
 * console.log(event.fields.ts_ns); // ["u64n", 0]
 * ```
 */
export function layoutFromBtf(
  btf: BtfStructSource,
  name: string,
  options: LayoutFromBtfOptions = {},
): AnyLayout {
  const tag = name.replace(/^struct\s+/, "");
  const struct = btf.struct(tag);
  if (!struct) {
    throw new LayoutMismatchError(tag, "the object has no such struct in its BTF", markerHint(tag));
  }
  const bigint = options.bigint ?? false;
  let members = struct.members;
  let tail: Tail | undefined;
  const last = members.at(-1);
  if (last?.shape.kind === "array" && last.shape.count === 0) {
    members = members.slice(0, -1);
    const length = options.tailLength ?? `${last.name}_len`;
    const element = last.shape.element;
    if (element.kind !== "int" || element.size !== 1) {
      throw new TypeError(
        `struct ${tag}: field "${last.name}" is a flexible array of ${
          shapeText(element)
        }; only byte tails are supported`,
      );
    }
    const len = members.find((m) => m.name === length);
    if (!len || len.shape.kind !== "int") {
      throw new TypeError(
        `struct ${tag}: field "${last.name}" is a flexible array; add an integer member "${length}" ` +
          `holding its length in bytes (or pass { tailLength })`,
      );
    }
    tail = {
      length,
      as: last.name,
      ...(isChar(element) ? {} : { type: "bytes" as const }),
      ...(last.offset !== struct.size ? { offset: last.offset } : {}),
    };
  }
  return defineLayout(
    tag,
    struct.size,
    fieldsFromBtf(tag, members, bigint, ""),
    tail ? { tail: tail as Tail<string> } : {},
  ) as AnyLayout;
}

function fieldsFromBtf(tag: string, members: BtfMember[], bigint: boolean, prefix: string): Fields {
  const fields: Record<string, FieldSpec> = {};
  for (const m of members) {
    const field = prefix + m.name;
    const refuse = (what: string): never => {
      throw new TypeError(
        `struct ${tag}: field "${field}" is ${what}, which layouts cannot express`,
      );
    };
    if (!m.name) refuse(`an anonymous ${m.shape.kind} at offset ${m.offset}`);
    if (m.bitfield) refuse("a bitfield");
    const shape = m.shape;
    if (shape.kind === "union") refuse(`a union (union ${shape.name || "(anonymous)"})`);
    let type: FieldType | undefined;
    if (shape.kind === "struct") {
      type = defineLayout(
        shape.name,
        shape.size,
        fieldsFromBtf(tag, shape.members, bigint, `${field}.`),
      );
    } else if (shape.kind === "array") {
      if (isChar(shape.element)) type = `char[${shape.count}]`;
      else {
        const element = scalarOf(shape.element, bigint);
        if (!element) refuse(`an array of ${shapeText(shape.element)}`);
        type = `${element!}[${shape.count}]`;
      }
    } else {
      type = scalarOf(shape, bigint) ?? refuse(shapeText(shape));
    }
    fields[m.name] = [type!, m.offset];
  }
  return fields;
}
