/** The committed BPF objects and their embedding modules are what the source builds. */

import assert from "node:assert/strict";
import { ROOT } from "./_helpers.ts";

const hasClang = (() => {
  try {
    return new Deno.Command("clang", { args: ["--version"], stdout: "null" }).outputSync().success;
  } catch {
    return false;
  }
})();
const CI = Deno.env.get("CI") === "true";
if (!hasClang && !CI) console.log("skipping the stale-object check: needs clang and llvm");

Deno.test({
  name: "the committed *.bpf.o and *_bpf.ts of bpf/ and examples/ match a fresh build of their C",
  ignore: !hasClang && !CI,
  fn: async () => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-read",
        "--allow-write",
        "--allow-run",
        `${ROOT}bpf/build.ts`,
        "--check",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder();
    assert.ok(out.success, text.decode(out.stderr) || "clang missing?");
    assert.match(text.decode(out.stdout), /committed objects match a fresh build/);
  },
});
