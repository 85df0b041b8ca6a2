/** The committed BPF objects and their embedding modules are what the source builds. */

import assert from "node:assert/strict";
import { ROOT, runDeno } from "./_helpers.ts";

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
    const out = await runDeno(
      ["run", "--allow-read", "--allow-write", "--allow-run", `${ROOT}bpf/build.ts`, "--check"],
    );
    assert.equal(out.code, 0, out.stderr || "clang missing?");
    assert.match(out.stdout, /committed objects match a fresh build/);
  },
});
