/** Record layouts: declaration, decoding, and the check against real BTF. */

import assert from "node:assert/strict";
import { UNLINK_BPF_O } from "../bpf/unlink_bpf.ts";
import {
  BpfObject,
  checkLayout,
  decodeCString,
  defineLayout,
  LayoutMismatchError,
  unlinkEvent,
} from "../mod.ts";
import { layoutFromBtf, type RecordOf } from "../lib/layout.ts";
import { describeObject } from "../lib/skeleton.ts";

function unlinkRecord(): Uint8Array {
  const bytes = new Uint8Array(640 + 16 + 4);
  const view = new DataView(bytes.buffer);
  const at = 16; // decode from an offset, as from a ring
  view.setUint32(at + 0, 0x89abcdef, true);
  view.setUint32(at + 4, 0x12345, true); // ts_ns = 0x12345_89abcdef
  view.setUint32(at + 8, 1500, true); // latency_ns
  view.setUint32(at + 16, 4321, true);
  view.setUint32(at + 20, 4322, true);
  view.setUint32(at + 24, 1000, true);
  view.setInt32(at + 28, -13, true);
  view.setUint32(at + 32, 1, true); // flags
  bytes.set(new TextEncoder().encode("rm\0garbage"), at + 40);
  bytes.set(new TextEncoder().encode("/tmp/caf\u00e9"), at + 56);
  view.setUint16(at + 36, 1, true); // op: rmdir
  view.setUint16(at + 38, 0o40755, true); // mode
  view.setUint32(at + 312, 77, true); // cgroup_id
  view.setUint32(at + 320, 99, true); // ino
  view.setInt32(at + 328, 4096, true); // size
  view.setUint32(at + 336, (8 << 20) | 1, true); // dev 8:1
  view.setUint32(at + 344, 1, true); // ppid
  view.setUint32(at + 348, 1000, true); // auid
  view.setUint32(at + 352, 4026531841, true); // mntns
  view.setInt32(at + 356, -100, true); // dfd
  bytes.set(new TextEncoder().encode("sh"), at + 360);
  view.setUint16(at + 376, 3, true); // argv_len
  view.setUint16(at + 378, 4, true); // path_len
  bytes.set(new TextEncoder().encode("rm\0"), at + 384);
  bytes.set(new TextEncoder().encode("/a/b"), at + 640);
  return bytes;
}

Deno.test("unlinkEvent decodes every field of struct unlink_event", () => {
  assert.deepEqual(unlinkEvent.decode(unlinkRecord(), 16), {
    ts_ns: 0x12345_89abcdef,
    latency_ns: 1500,
    tgid: 4321,
    tid: 4322,
    uid: 1000,
    ret: -13,
    flags: 1,
    op: 1,
    mode: 0o40755,
    comm: "rm",
    filename: "/tmp/caf\u00e9",
    cgroup_id: 77,
    ino: 99,
    size: 4096,
    dev: (8 << 20) | 1,
    nlink_after: 0,
    ppid: 1,
    auid: 1000,
    mntns: 4026531841,
    dfd: -100,
    pcomm: "sh",
    argv_len: 3,
    path_len: 4,
    _pad: 0,
    argv: new Uint8Array([0x72, 0x6d, 0, ...new Array(253).fill(0)]),
    path: "/a/b",
  });
});

Deno.test("decodeCString stops at NUL or the field's end and replaces invalid UTF-8", () => {
  const bytes = new Uint8Array([0x61, 0x62, 0x63, 0, 0x64]);
  assert.equal(decodeCString(bytes, 0, 5), "abc");
  assert.equal(decodeCString(bytes, 0, 2), "ab"); // no NUL within the field
  assert.equal(decodeCString(new Uint8Array([0x66, 0xff, 0x67]), 0, 3), "f\ufffdg");
  const long = new Uint8Array(200).fill(0x78);
  assert.equal(decodeCString(long, 0, 200), "x".repeat(200));
});

Deno.test("defineLayout rejects overlapping and out-of-bounds fields", () => {
  assert.throws(
    () => defineLayout("s", 8, { a: ["u32", 0], b: ["u32", 2] }),
    /Field "b" of struct s overlaps the field before it/,
  );
  assert.throws(
    () => defineLayout("s", 8, { a: ["u64", 4] }),
    /ends at 12, past sizeof\(struct s\) = 8/,
  );
  const s = defineLayout("s", 8, { a: ["u64", 0] });
  assert.throws(() => s.decode(new Uint8Array(7)), RangeError);
});

Deno.test("the declared unlink layout matches the compiled object's BTF", () => {
  using obj = BpfObject.openMem(UNLINK_BPF_O, "unlink");
  checkLayout(unlinkEvent, obj.btf.struct("unlink_event"));
});

Deno.test("a layout that disagrees with the real object's BTF is caught, naming the field", () => {
  using obj = BpfObject.openMem(UNLINK_BPF_O, "unlink");
  const btf = obj.btf.struct("unlink_event");
  const fields = { ...unlinkEvent.fields };
  const tail = { tail: unlinkEvent.tail! };
  const cases: [string, ReturnType<typeof defineLayout>, RegExp][] = [
    [
      "shifted",
      defineLayout("unlink_event", 640, { ...fields, uid: ["u32", 28], ret: ["i32", 24] }, tail),
      /field "uid" is at offset 24 in BTF, 28 declared/,
    ],
    [
      "resized",
      defineLayout("unlink_event", 640, {
        ...fields,
        ret: ["i64", 24],
        uid: ["u32", 20],
        tid: ["u32", 16],
        tgid: ["u8", 8],
        latency_ns: ["u32", 0],
        ts_ns: ["u16", 4],
      }, tail),
      /field "ts_ns" is at offset 0 in BTF, 4 declared/,
    ],
    [
      "wrong type",
      defineLayout("unlink_event", 640, { ...fields, comm: ["char[8]", 40] }, tail),
      /field "comm" is 16 bytes in BTF, char\[8\] \(8 bytes\) declared/,
    ],
    [
      "unsigned for signed",
      defineLayout("unlink_event", 640, { ...fields, ret: ["u32", 28] }, tail),
      /field "ret" is i32 in BTF, u32 declared/,
    ],
    [
      "signed for unsigned, 64-bit",
      defineLayout("unlink_event", 640, { ...fields, ts_ns: ["i64", 0] }, tail),
      /field "ts_ns" is u64 in BTF, i64 declared/,
    ],
    [
      "integer for a char array",
      defineLayout("unlink_event", 640, { ...fields, comm: ["u64", 40] }, tail),
      /field "comm" is 16 bytes in BTF, u64 \(8 bytes\) declared/,
    ],
    [
      "missing",
      defineLayout("unlink_event", 640, (({ uid: _, ...rest }) => rest)(fields), tail),
      /field "uid" \(offset 24\) is missing from the layout/,
    ],
    [
      "extra",
      defineLayout("unlink_event", 648, { ...fields, extra: ["u64", 640] }, tail),
      /its size is 640 in BTF, 648 declared/,
    ],
    [
      "renamed",
      defineLayout(
        "unlink_event",
        640,
        (({ tgid, ...rest }) => ({ ...rest, pid: tgid }))(fields),
        tail,
      ),
      /field "tgid" \(offset 16\) is missing/,
    ],
  ];
  for (const [what, layout, message] of cases) {
    assert.throws(() => checkLayout(layout, btf), (e: unknown) => {
      assert.ok(e instanceof LayoutMismatchError, what);
      assert.match(e.message, message, what);
      assert.match(e.message, /^Record layout "struct unlink_event" does not match/);
      return true;
    });
  }
  assert.throws(() => checkLayout(unlinkEvent, obj.btf.struct("no_such_struct")), /no such struct/);
});

Deno.test("BpfObject sets const volatile globals by name before load, and refuses unknown ones", () => {
  using obj = BpfObject.openMem(UNLINK_BPF_O, "unlink");
  obj.setConst("targ_tgid", 1234);
  obj.setConst("targ_comm", "rm");
  obj.setConst("targ_failed", true);
  const rodata = obj.btf.datasec(".rodata")!;
  assert.deepEqual(
    rodata.filter((v) => v.name.startsWith("targ_")).map((v) => [v.name, v.size]),
    [
      ["targ_tgid", 4],
      ["targ_tid", 4],
      ["targ_uid", 4],
      ["targ_cgroup", 8],
      ["targ_comm", 16],
      ["targ_failed", 1],
      ["targ_rmdir", 1],
      ["targ_paths", 1],
      ["targ_argv", 4],
    ],
  );
  assert.throws(() => obj.setConst("nope", 1), /no global variable "nope"/);
  // Values are checked against the variable's C type.
  assert.throws(() => obj.setConst("targ_tgid", "1"), TypeError);
  assert.throws(() => obj.setConst("targ_tgid", 2 ** 40), /outside 0\.\.4294967295/);
  assert.throws(() => obj.setConst("targ_tgid", -1), RangeError);
  assert.throws(() => obj.setConst("targ_tgid", 1.5), /not an integer/);
  assert.throws(() => obj.setConst("targ_failed", 1), /give a boolean/);
  assert.throws(() => obj.setConst("targ_comm", 7), /give a string/);
  obj.setConst("wakeup_ns", 2n ** 64n - 1n);
  // .data and .bss globals take their initial values the same way.
  obj.setConst("last_wakeup_ns", 5);
  assert.throws(() => obj.setConst("targ_comm", "x".repeat(16)), /at most 15 bytes/);
  assert.deepEqual(
    obj.programs.map((p) => p.section),
    [
      ...["do_unlinkat", "do_rmdir", "do_renameat2"].flatMap((f) => [`fentry/${f}`, `fexit/${f}`]),
      ...["unlink", "rmdir", "rename"].map((op) => `fentry/security_path_${op}`),
      ...["do_unlinkat", "do_rmdir", "do_renameat2"].flatMap((
        f,
      ) => [`kprobe/${f}`, `kretprobe/${f}`]),
      ...["unlink", "rmdir", "rename"].map((op) => `kprobe/security_path_${op}`),
      ...["unlink", "unlinkat", "rmdir"].flatMap((s) => [
        `tracepoint/syscalls/sys_enter_${s}`,
        `tracepoint/syscalls/sys_exit_${s}`,
      ]),
    ],
  );
  obj.close();
  assert.throws(() => obj.programs, /BpfObject is closed/);
});

Deno.test("layoutFromBtf derives the hand-declared unlink layout from the object's BTF", () => {
  using obj = BpfObject.openMem(UNLINK_BPF_O, "unlink");
  const derived = layoutFromBtf(obj.btf, "struct unlink_event");
  assert.equal(derived.size, unlinkEvent.size);
  assert.deepEqual(derived.fields, unlinkEvent.fields);
  assert.deepEqual(derived.tail, { length: "path_len", as: "path" });
  checkLayout(derived, obj.btf.struct("unlink_event"));
  // The file's BTF, read without libbpf, says the same.
  assert.deepEqual(layoutFromBtf(describeObject(UNLINK_BPF_O).btf, "unlink_event").fields, {
    ...unlinkEvent.fields,
  });
  const big = layoutFromBtf(obj.btf, "unlink_event", { bigint: true });
  assert.deepEqual(big.fields.ts_ns, ["u64n", 0]);
  assert.deepEqual(big.fields.ret, ["i32", 28]);
  checkLayout(big, obj.btf.struct("unlink_event"));
});

Deno.test("a struct missing from BTF is an error that says to mark it in the C source", () => {
  using obj = BpfObject.openMem(UNLINK_BPF_O, "unlink");
  for (
    const attempt of [
      () => checkLayout(defineLayout("nope", 4, { a: ["u32", 0] }), obj.btf.struct("nope")),
      () => layoutFromBtf(obj.btf, "struct nope"),
    ]
  ) {
    assert.throws(attempt, (e: unknown) => {
      assert.ok(e instanceof LayoutMismatchError);
      assert.match(e.message, /no such struct in its BTF; add DENO_BPF_RECORD\(struct nope\);/);
      assert.doesNotMatch(e.message, /update the layout/);
      return true;
    });
  }
});

Deno.test("every field type round-trips through encode and decode", () => {
  const inner = defineLayout("inner", 16, {
    lo: ["u64n", 0],
    delta: ["i32", 8],
    flags: ["u16", 12],
  });
  const outer = defineLayout("outer", 80, {
    small: ["i8", 0],
    byte: ["u8", 1],
    half: ["i16", 2],
    word: ["u32", 4],
    big: ["u64", 8],
    negative: ["i64", 16],
    exact: ["i64n", 24],
    inner: [inner, 32],
    counts: ["u32[3]", 48],
    wide: ["i64n[1]", 64],
    name: ["char[8]", 72],
  });
  const record: RecordOf<typeof outer> = {
    small: -128,
    byte: 255,
    half: -2,
    word: 0xffff_ffff,
    big: 2 ** 53 - 1,
    negative: -(2 ** 40),
    exact: -(2n ** 63n),
    inner: { lo: 2n ** 64n - 1n, delta: -5, flags: 0x8001 },
    counts: [1, 2, 0xffff_ffff],
    wide: [123n],
    name: "caf\u00e9",
  };
  const bytes = outer.encode(record);
  assert.equal(bytes.length, 80);
  assert.deepEqual(outer.decode(bytes), record);
  // Decoding from an offset inside a larger buffer, as from a ring.
  const ring = new Uint8Array(200);
  ring.set(bytes, 40);
  assert.deepEqual(outer.decode(ring.subarray(8), 32), record);
  // The unlink record too, through its C layout.
  const event = unlinkEvent.decode(unlinkRecord(), 16);
  const encoded = unlinkEvent.encode(event);
  assert.deepEqual(unlinkEvent.decode(encoded, 0, encoded.length), event);
});

Deno.test("encode refuses values that do not fit, naming the field", () => {
  const s = defineLayout("s", 24, {
    a: ["u8", 0],
    b: ["i32", 4],
    c: ["char[4]", 8],
    d: ["u64n", 16],
  });
  const ok = { a: 1, b: 2, c: "abc", d: 3n };
  assert.throws(() => s.encode({ ...ok, a: 256 }), /Field "a" is u8: 256 is outside 0\.\.255/);
  assert.throws(() => s.encode({ ...ok, b: 1.5 }), /Field "b" is i32: expected a safe integer/);
  assert.throws(() => s.encode({ ...ok, c: "abcde" }), /Field "c" holds at most 4 bytes, got 5/);
  // @ts-expect-error: a u64n field takes a bigint
  assert.throws(() => s.encode({ ...ok, d: 3 }), /Field "d" is u64n: expected a bigint/);
  const { b: _, ...missing } = ok;
  // @ts-expect-error: b is missing
  assert.throws(() => s.encode(missing), /field "b" is missing/);
});

Deno.test("a record with a variable tail decodes its tail, cut at the record's end", () => {
  const ev = defineLayout("ev", 12, {
    ts: ["u64", 0],
    path_len: ["u32", 8],
  }, { tail: { length: "path_len", as: "path" } });
  const bytes = new Uint8Array(64).fill(0x7a); // 'z' everywhere after the record
  bytes.fill(0, 16, 28);
  const view = new DataView(bytes.buffer);
  view.setUint32(16 + 0, 42, true);
  view.setUint32(16 + 8, 9, true); // path_len: 9 bytes, NUL included
  bytes.set(new TextEncoder().encode("/tmp/abc\0"), 16 + 12);
  // A ring record of 21 bytes at offset 16: the whole tail.
  assert.deepEqual(ev.decode(bytes, 16, 21), { ts: 42, path_len: 9, path: "/tmp/abc" });
  // A record cut short: path_len says 9, but the record ends after 4 tail bytes.
  assert.deepEqual(ev.decode(bytes, 16, 16), { ts: 42, path_len: 9, path: "/tmp" });
  // A length field larger than anything there never reads into the next record.
  view.setUint32(16 + 8, 1000, true);
  assert.equal(ev.decode(bytes, 16, 21).path, "/tmp/abc");
  assert.throws(() => ev.decode(bytes, 16), /has a variable tail: decode\(bytes, offset, length\)/);
  assert.throws(() => ev.decode(bytes, 16, 11), /needs 12 bytes, but the record has 11/);
  assert.throws(() => ev.decode(bytes, 16, 49), /needs 49 bytes at 16, but only 48/);

  const encoded = ev.encode({ ts: 7, path_len: 0, path: "/etc/x" });
  assert.equal(encoded.length, 18);
  assert.deepEqual(ev.decode(encoded, 0, encoded.length), { ts: 7, path_len: 6, path: "/etc/x" });
});

Deno.test("a byte tail decodes to a copy, and a tail may start inside the struct's padding", () => {
  const ev = defineLayout("ev", 16, {
    ts: ["u64", 0],
    n: ["u16", 8],
  }, { tail: { length: "n", as: "data", type: "bytes", offset: 10 } });
  const bytes = ev.encode({ ts: 1, n: 0, data: new Uint8Array([1, 2, 3, 0, 5]) });
  assert.equal(bytes.length, 16);
  const e = ev.decode(bytes, 0, 15);
  assert.deepEqual(e.data, new Uint8Array([1, 2, 3, 0, 5]));
  bytes[10] = 9;
  assert.equal(e.data[0], 1); // the bytes of a ring are only valid during the call
  assert.throws(
    () => defineLayout("bad", 8, { n: ["char[4]", 0] }, { tail: { length: "n", as: "x" } }),
    /takes its length from the field "n", which is not an integer field/,
  );
  assert.throws(
    () => defineLayout("bad", 8, { n: ["u32", 0] }, { tail: { length: "n", as: "n" } }),
    /decodes into "n": pick an identifier that is not a field/,
  );
});
