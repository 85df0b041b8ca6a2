/**
 * People import mod.ts by URL, without our deno.json: the library must need
 * only relative imports and built-ins, and the embedded object must be enough.
 */

import assert from "node:assert/strict";
import { kernelTest, ROOT, scratch, spawnUnlinker } from "./_helpers.ts";

kernelTest(
  "mod.ts imported by file:// URL from outside the checkout traces an unlink",
  async () => {
    const away = Deno.makeTempDirSync({ prefix: "dbpf_url_" });
    const dir = scratch(["via_url"]);
    const child = await spawnUnlinker([`unlink:${dir}/via_url`]);
    Deno.writeTextFileSync(
      `${away}/tracer.ts`,
      `import { UnlinkTracer } from "${new URL("mod.ts", `file://${ROOT}`).href}";
using tracer = UnlinkTracer.open({ pid: ${child.pid} });
console.log("attached");
for await (const e of tracer) {
  console.log(JSON.stringify([e.tgid, e.comm, e.filename, e.ret]));
  break;
}
`,
    );
    const proc = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-config", "--no-lock", `${away}/tracer.ts`],
      cwd: away,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const lines = proc.stdout.pipeThrough(new TextDecoderStream()).values();
    assert.equal((await lines.next()).value, "attached\n");
    await child.go();
    const rest = (await lines.next()).value;
    const status = await proc.status;
    const stderr = await new Response(proc.stderr).text();
    Deno.removeSync(away, { recursive: true });
    Deno.removeSync(dir, { recursive: true });
    assert.equal(status.code, 0, stderr);
    assert.deepEqual(JSON.parse(rest!), [child.pid, "dbpf_unlinker", `${dir}/via_url`, 0]);
  },
);

Deno.test("library code imports only relative paths and built-ins", () => {
  for (const dir of ["lib", "bpf"]) {
    for (const entry of Deno.readDirSync(`${ROOT}${dir}`)) {
      if (!entry.name.endsWith(".ts")) continue;
      const text = Deno.readTextFileSync(`${ROOT}${dir}/${entry.name}`);
      for (
        const [, from, bare] of text.matchAll(
          /\bfrom\s+["']([^"']+)["']|\bimport\s*\(?\s*["']([^"']+)["']/g,
        )
      ) {
        const spec = from ?? bare;
        assert.match(spec, /^(\.\.?\/|node:)/, `${dir}/${entry.name} imports "${spec}"`);
      }
    }
  }
});
