/**
 * The scripts run with the Deno permissions they document, and a missing one
 * is one line that names the flag to add.
 */

import assert from "node:assert/strict";
import { kernelTest, ROOT, runDeno, TEST_MODE } from "./_helpers.ts";
import { SCRIPT } from "./_trace.ts";

function run(script: string, perms: string[], args: string[]) {
  return runDeno(["run", ...perms, script, ...args]);
}

/** The unit's flag: LIBBPF_PATH and NO_COLOR are all deno_bpf reads. */
const SCOPED_ENV = "--allow-env=LIBBPF_PATH,NO_COLOR";

const EVERY_FLAG_BUT_ALL = [
  "--allow-read",
  "--allow-write",
  "--allow-net",
  "--allow-env",
  "--allow-run",
  "--allow-ffi",
  "--allow-sys",
  "--allow-import",
];

for (
  const [what, perms] of [
    ["exactly --allow-ffi --allow-env", ["--allow-ffi", "--allow-env"]],
    ["--allow-env scoped to the variables it reads", ["--allow-ffi", SCOPED_ENV]],
    ["every --allow-* flag but --allow-all", EVERY_FLAG_BUT_ALL],
  ] as const
) {
  kernelTest(`trace.ts traces with ${what}`, async () => {
    const r = await run(SCRIPT, [...perms], ["--mode", TEST_MODE, "--json", "--duration", "0.3"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^attached via /);
    assert.equal(JSON.parse(r.stdout.split("\n")[0]).type, "attach");
  });
}

for (
  const [perms, flag] of [
    [["--allow-ffi"], "--allow-env"],
    [["--allow-env"], "--allow-ffi"],
    [["--allow-read", "--allow-env"], "--allow-ffi"],
    [["--allow-ffi", "--allow-env=NO_COLOR"], "--allow-env"],
  ] as const
) {
  kernelTest(`trace.ts with only ${perms.join(" ")} names ${flag} in one line`, async () => {
    const r = await run(SCRIPT, [...perms], ["--mode", TEST_MODE]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(
      r.stderr,
      `trace: Deno refused a permission this tool needs: add ${flag} ` +
        `(sudo deno run --allow-ffi --allow-env scripts/trace.ts)\n`,
    );
    assert.equal(r.stdout, "");
  });
}

kernelTest("printk.ts needs no more than --allow-ffi --allow-env", async () => {
  const r = await run(`${ROOT}scripts/printk.ts`, ["--allow-ffi", "--allow-env"], ["--bogus"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^printk: [^\n]+; see --help\n$/);
  const denied = await run(`${ROOT}scripts/printk.ts`, ["--allow-env"], []);
  assert.equal(denied.code, 1);
  assert.match(
    denied.stderr,
    /^printk: Deno refused a permission this tool needs: add --allow-ffi/,
  );
});

kernelTest(
  "trace.ts --doctor counts --allow-env scoped to LIBBPF_PATH,NO_COLOR as granted",
  async () => {
    const r = await run(SCRIPT, ["--allow-ffi", SCOPED_ENV], ["--doctor", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.permissions.env, true);
    assert.equal(report.permissions.ffi, true);
    assert.notEqual(report.auto, null);
  },
);
