/**
 * ensureTracefs mounts tracefs with nosuid, nodev and noexec, checked in the
 * kernel's own mount table, in a private mount namespace so the host's
 * tracefs is left as it is.
 */

import assert from "node:assert/strict";
import { kernelTest, ROOT } from "./_helpers.ts";

/** The per-mount options (mountinfo's 6th field) of the mount at `point`. */
function mountOptions(mountinfo: string, point: string): string[] | undefined {
  let found: string[] | undefined;
  for (const line of mountinfo.split("\n")) {
    const fields = line.split(" ");
    if (fields[4] === point) found = fields[5].split(","); // the last one is on top
  }
  return found;
}

kernelTest("ensureTracefs mounts tracefs nosuid, nodev and noexec", async () => {
  // A tmpfs over /sys/kernel hides both tracefs places (and debugfs) in the new
  // namespace only, so ensureTracefs finds none and mounts its own.
  const script = [
    "mount -t tmpfs none /sys/kernel",
    "mkdir /sys/kernel/tracing",
    `"$0" eval 'import { ensureTracefs } from "${ROOT}mod.ts"; console.log(ensureTracefs())'`,
    "cat /proc/self/mountinfo",
  ].join(" && ");
  const out = await new Deno.Command("unshare", {
    args: ["--mount", "--propagation", "private", "sh", "-c", script, Deno.execPath()],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  const stdout = text.decode(out.stdout);
  assert.equal(out.code, 0, text.decode(out.stderr));
  const [dir, ...mountinfo] = stdout.split("\n");
  assert.equal(dir, "/sys/kernel/tracing");
  const options = mountOptions(mountinfo.join("\n"), "/sys/kernel/tracing");
  assert.ok(options, `no mount at /sys/kernel/tracing in:\n${stdout}`);
  for (const flag of ["nosuid", "nodev", "noexec"]) {
    assert.ok(options.includes(flag), `${flag} missing from ${options.join(",")}`);
  }
});
