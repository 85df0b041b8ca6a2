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

function unlinkRecord(): Uint8Array {
  const bytes = new Uint8Array(312 + 16);
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
    _pad: 0,
    comm: "rm",
    filename: "/tmp/caf\u00e9",
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
  const cases: [string, ReturnType<typeof defineLayout>, RegExp][] = [
    [
      "shifted",
      defineLayout("unlink_event", 312, { ...fields, uid: ["u32", 28], ret: ["i32", 24] }),
      /field "uid" is at offset 24 in BTF, 28 declared/,
    ],
    [
      "resized",
      defineLayout("unlink_event", 312, {
        ...fields,
        ret: ["i64", 24],
        uid: ["u32", 20],
        tid: ["u32", 16],
        tgid: ["u8", 8],
        latency_ns: ["u32", 0],
        ts_ns: ["u16", 4],
      }),
      /field "ts_ns" is at offset 0 in BTF, 4 declared/,
    ],
    [
      "wrong type",
      defineLayout("unlink_event", 312, { ...fields, comm: ["char[8]", 40] }),
      /field "comm" is 16 bytes in BTF, char\[8\] \(8 bytes\) declared/,
    ],
    [
      "unsigned for signed",
      defineLayout("unlink_event", 312, { ...fields, ret: ["u32", 28] }),
      /field "ret" is i32 in BTF, u32 declared/,
    ],
    [
      "signed for unsigned, 64-bit",
      defineLayout("unlink_event", 312, { ...fields, ts_ns: ["i64", 0] }),
      /field "ts_ns" is u64 in BTF, i64 declared/,
    ],
    [
      "integer for a char array",
      defineLayout("unlink_event", 312, { ...fields, comm: ["u64", 40] }),
      /field "comm" is 16 bytes in BTF, u64 \(8 bytes\) declared/,
    ],
    [
      "missing",
      defineLayout("unlink_event", 312, (({ uid: _, ...rest }) => rest)(fields)),
      /field "uid" \(offset 24\) is missing from the layout/,
    ],
    [
      "extra",
      defineLayout("unlink_event", 320, { ...fields, extra: ["u64", 312] }),
      /its size is 312 in BTF, 320 declared/,
    ],
    [
      "renamed",
      defineLayout("unlink_event", 312, (({ tgid, ...rest }) => ({ ...rest, pid: tgid }))(fields)),
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
    [["targ_tgid", 4], ["targ_uid", 4], ["targ_comm", 16], ["targ_failed", 1]],
  );
  assert.throws(() => obj.setConst("nope", 1), /no const volatile "nope"/);
  assert.throws(() => obj.setConst("targ_comm", "x".repeat(16)), /at most 15 bytes/);
  assert.deepEqual(
    obj.programs.map((p) => p.section),
    [
      "fentry/do_unlinkat",
      "fexit/do_unlinkat",
      "kprobe/do_unlinkat",
      "kretprobe/do_unlinkat",
      "tracepoint/syscalls/sys_enter_unlink",
      "tracepoint/syscalls/sys_exit_unlink",
      "tracepoint/syscalls/sys_enter_unlinkat",
      "tracepoint/syscalls/sys_exit_unlinkat",
    ],
  );
  obj.close();
  assert.throws(() => obj.programs, /BpfObject is closed/);
});
