/**
 * scripts/deno-bpf.service: it passes `systemd-analyze verify`, it asks for
 * the documented least Deno permissions, and its command line traces with
 * nothing but the two capabilities its bounding set keeps.
 */

import assert from "node:assert/strict";
import { ensureTracefs } from "../mod.ts";
import { kernelTest, ROOT } from "./_helpers.ts";
import { PERMS } from "./_trace.ts";
import { freePort } from "./_servers.ts";

const UNIT = `${ROOT}scripts/deno-bpf.service`;

/** The unit's `Key=value` lines by section; a key given twice keeps both values. */
function parseUnit(text: string): Record<string, Record<string, string[]>> {
  const sections: Record<string, Record<string, string[]>> = {};
  let section = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const header = /^\[(\w+)\]$/.exec(line);
    if (header) {
      section = header[1];
      sections[section] ??= {};
      continue;
    }
    const eq = line.indexOf("=");
    assert.ok(eq > 0 && section, `not a unit line: ${line}`);
    (sections[section][line.slice(0, eq)] ??= []).push(line.slice(eq + 1));
  }
  return sections;
}

/** The unit with its install paths pointing at this Deno and this checkout. */
function localUnit(): string {
  return Deno.readTextFileSync(UNIT)
    .replaceAll("/usr/local/bin/deno", Deno.execPath())
    .replaceAll("/opt/deno_bpf/", ROOT);
}

Deno.test("the systemd unit passes systemd-analyze verify with no warning", async (t) => {
  const dir = Deno.makeTempDirSync({ prefix: "dbpf_unit_" });
  try {
    Deno.writeTextFileSync(`${dir}/deno-bpf.service`, localUnit());
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command("systemd-analyze", {
        args: ["verify", `${dir}/deno-bpf.service`],
        stdout: "piped",
        stderr: "piped",
      }).output();
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      await t.step({ name: "systemd-analyze is not installed", ignore: true, fn: () => {} });
      return;
    }
    const text = new TextDecoder();
    const said = (text.decode(out.stdout) + text.decode(out.stderr)).trim();
    assert.ok(out.success, said);
    assert.equal(said, "", "no warning");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("the systemd unit restarts on failure, hardens, and keeps only CAP_BPF and CAP_PERFMON", () => {
  const unit = parseUnit(Deno.readTextFileSync(UNIT));
  const service = unit.Service;
  assert.deepEqual(service.Restart, ["on-failure"]);
  assert.deepEqual(service.CapabilityBoundingSet, ["CAP_BPF CAP_PERFMON"]);
  assert.deepEqual(service.NoNewPrivileges, ["yes"]);
  assert.deepEqual(service.ProtectSystem, ["strict"]);
  assert.deepEqual(service.ExecReload, ["/bin/kill -HUP $MAINPID"]);
  assert.deepEqual(unit.Install.WantedBy, ["multi-user.target"]);
  const [exec] = service.ExecStart;
  const argv = exec.split(" ");
  const script = argv.findIndex((a) => a.endsWith("scripts/trace.ts"));
  assert.deepEqual(argv.slice(1, script), ["run", ...PERMS, "--allow-net=127.0.0.1:9469"]);
  assert.deepEqual(argv.slice(script + 1), [
    "--quiet",
    "--metrics",
    "127.0.0.1:9469",
    "--syslog",
    "unix:///dev/log",
  ]);
});

kernelTest("the unit's command line traces with only CAP_BPF and CAP_PERFMON", async () => {
  ensureTracefs(); // as sys-kernel-tracing.mount does: mounting takes CAP_SYS_ADMIN
  const port = String(freePort());
  const [exec] = parseUnit(localUnit()).Service.ExecStart;
  const argv = exec.replaceAll("9469", port).split(" ");
  const out = await new Deno.Command("setpriv", {
    args: [
      "--bounding-set",
      "-all,+bpf,+perfmon",
      "--inh-caps",
      "-all",
      "--",
      ...argv,
      "--duration",
      "1",
    ],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  assert.match(stderr, new RegExp(`^metrics on http://127\\.0\\.0\\.1:${port}/metrics$`, "m"));
  assert.match(stderr, /^attached via /m);
  assert.match(stderr, /^\d+ events, 0 lost, \d+ not sent to syslog$/m);
  assert.equal(new TextDecoder().decode(out.stdout), "");
});
