/** BpfObject and Link lifetimes on the real kernel. */

import assert from "node:assert/strict";
import { kernelTest, ROOT, runSnippet } from "./_helpers.ts";

kernelTest(
  "an attached object dropped without close() is freed by garbage collection",
  async () => {
    const script = `
import { UNLINK_BPF_O } from "${ROOT}bpf/unlink_bpf.ts";
import { BpfObject } from "${ROOT}mod.ts";
const bpfFds = () => [...Deno.readDirSync("/proc/self/fd")].filter((e) => {
  try { return Deno.readLinkSync("/proc/self/fd/" + e.name).startsWith("anon_inode:bpf"); } catch { return false; }
}).length;
(() => {
  const obj = BpfObject.openMem(UNLINK_BPF_O, "unlink");
  for (const p of obj.programs) p.autoload = p.name.startsWith("tp_");
  obj.load();
  obj.program("tp_enter_unlink").attach();
})();
const before = bpfFds();
for (let i = 0; i < 5; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 20)); }
console.log(JSON.stringify([before, bpfFds()]));
`;
    const [before, after] = await runSnippet(script, ["--v8-flags=--expose-gc"]) as number[];
    assert.ok(before > 0, "the object and its link hold BPF fds while reachable");
    assert.equal(after, 0, "collected without close(): every BPF fd is released");
  },
);
