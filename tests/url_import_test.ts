/**
 * People import mod.ts by URL, without our deno.json: the library must need
 * only relative imports and built-ins, and the embedded object must be enough.
 * The README's URL commands are run as written against a loopback server
 * that hosts this checkout, with a fresh DENO_DIR.
 */

import assert from "node:assert/strict";
import { kernelTest, ROOT, scratch, spawnUnlinker } from "./_helpers.ts";
import {
  type CheckoutServer,
  clangLine,
  inTempDir,
  README_CHECKOUT,
  README_HOST,
  scriptOf,
  sectionBlocks,
  serveCheckout,
  THIS_DENO_ON_PATH,
  watchProbe,
  writeTutorial,
} from "./_readme.ts";

kernelTest(
  "mod.ts imported by file:// URL from outside the checkout traces an unlink",
  async () => {
    const away = Deno.makeTempDirSync({ prefix: "dbpf_url_" });
    const dir = scratch(["via_url"]);
    const child = await spawnUnlinker([`unlink:${dir}/via_url`]);
    Deno.writeTextFileSync(
      `${away}/tracer.ts`,
      `import { UnlinkTracer } from "${new URL("mod.ts", `file://${ROOT}`).href}";
using tracer = UnlinkTracer.open({ pid: ${child.pid}, paths: [${JSON.stringify(dir)}] });
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

/** The README's section on URL imports, whose commands these tests run as written. */
const URL_SECTION = "Importing by URL";

/**
 * Prepares `dir` as the README's URL section says, against `server`: the
 * tutorial's probe with probe.ts importing the pinned URL, `deno_bpf.h`
 * fetched from it, and the C compiled with the tutorial's clang line with
 * `-I .`. Returns the section's script and a fresh DENO_DIR, so that every
 * module is fetched from the server.
 */
async function preparedForUrl(dir: string, server: CheckoutServer) {
  writeTutorial(dir, server);
  // What the README's `curl -fsSO "$BASE/bpf/deno_bpf.h"` does, without needing curl.
  const header = await fetch(`${server.base}/bpf/deno_bpf.h`);
  assert.equal(header.status, 200);
  Deno.writeFileSync(`${dir}/deno_bpf.h`, new Uint8Array(await header.arrayBuffer()));
  const clang = clangLine().replace(`-I ${README_CHECKOUT}/bpf`, "-I .");
  assert.ok(clang.includes(" -I . "), clang);
  const out = await new Deno.Command("bash", { args: ["-ec", clang], cwd: dir, stderr: "piped" })
    .output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return {
    blocks: sectionBlocks(URL_SECTION),
    env: { DENO_DIR: Deno.makeTempDirSync({ dir, prefix: "deno_dir_" }) },
  };
}

/** Runs `script` in `dir`; its exit code and output, with Deno's colours off. */
async function bash(script: string, dir: string, env: Record<string, string>) {
  const out = await new Deno.Command("bash", {
    args: ["-c", script],
    cwd: dir,
    env: { NO_COLOR: "1", ...THIS_DENO_ON_PATH, ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, output: text.decode(out.stdout) + text.decode(out.stderr) };
}

const README = Deno.readTextFileSync(`${ROOT}README.md`).replace(/\s+/g, " ");

Deno.test(
  "the README's URL commands, as written, generate a module that imports the pinned URL and lock every module",
  async () => {
    await using server = serveCheckout();
    await inTempDir(async (dir) => {
      const { blocks, env } = await preparedForUrl(dir, server);
      const built = await bash(scriptOf(blocks, { server, run: false }), dir, env);
      assert.equal(built.code, 0, built.output);
      // gen.ts run from a URL makes the module import mod.ts from that URL.
      const module = Deno.readTextFileSync(`${dir}/probe_bpf.ts`);
      assert.equal(/from "([^"]+)"/.exec(module)?.[1], `${server.base}/mod.ts`);
      const lock = JSON.parse(Deno.readTextFileSync(`${dir}/deno.lock`));
      assert.ok(`${server.base}/lib/ring_buffer.ts` in lock.remote, JSON.stringify(lock));

      // Without --allow-import, Deno stops with what the README quotes.
      const denied = await bash(
        scriptOf(blocks, { server, run: false }).replaceAll(/--allow-import=\S+ /g, ""),
        dir,
        env,
      );
      const message =
        `Requires import access to "${server.host}", run again with the --allow-import flag`;
      assert.ok(denied.code !== 0 && denied.output.includes(message), denied.output);
      assert.ok(README.includes(message.replace(server.host, `${README_HOST}:443`)), message);
    });
  },
);

Deno.test(
  "the README's run command refuses a module that changed on the server after the lock was written",
  async () => {
    let changed = false;
    await using server = serveCheckout({
      edit: (path, body) =>
        changed && path === "/lib/errno.ts"
          ? new Uint8Array([...body, ...new TextEncoder().encode("// changed\n")])
          : undefined,
    });
    await inTempDir(async (dir) => {
      const { blocks, env } = await preparedForUrl(dir, server);
      const built = await bash(scriptOf(blocks, { server, run: false }), dir, env);
      assert.equal(built.code, 0, built.output);
      changed = true;
      const run = scriptOf(blocks, { server }).trimEnd().split("\n").at(-1)!;
      assert.match(run, /^exec deno run .*--lock=deno\.lock --frozen probe\.ts$/);
      const fresh = { DENO_DIR: Deno.makeTempDirSync({ dir, prefix: "deno_dir_" }) };
      const refused = await bash(run, dir, fresh);
      assert.notEqual(refused.code, 0, refused.output);
      assert.match(refused.output, /Integrity check failed for remote specifier/);
      assert.ok(refused.output.includes(`${server.base}/lib/errno.ts`), refused.output);
    });
  },
);

Deno.test(
  "a server that sends TypeScript as text/vnd.trolltech.linguist fails as the README says it does",
  async () => {
    // What python3 -m http.server sends for .ts.
    await using server = serveCheckout({ contentType: () => "text/vnd.trolltech.linguist" });
    await inTempDir(async (dir) => {
      const { blocks, env } = await preparedForUrl(dir, server);
      const script = scriptOf(blocks, { server, run: false });
      // Up to gen.ts, run by URL.
      const lines = script.split("\n");
      const gen = lines.findIndex((l) => l.includes("/scripts/gen.ts"));
      const asScript = await bash(lines.slice(0, gen + 1).join("\n"), dir, env);
      assert.notEqual(asScript.code, 0);
      // A module that imports mod.ts by URL, as the generated one does, run.
      Deno.writeTextFileSync(
        `${dir}/importer.ts`,
        `import { RingBuffer } from "${server.base}/mod.ts";\nconsole.log(RingBuffer.name);\n`,
      );
      const asImport = await bash(`deno run --allow-import=${server.host} importer.ts`, dir, env);
      assert.notEqual(asImport.code, 0);
      for (
        const [run, quoted] of [
          [asScript, "SyntaxError: Expected ','"],
          [asImport, "Expected a JavaScript or TypeScript module, but identified a Unknown module"],
        ] as const
      ) {
        assert.ok(run.output.includes(quoted), `Deno said:\n${run.output}`);
        assert.ok(README.includes(`\`${quoted}`), `the README does not quote "${quoted}"`);
      }
      assert.ok(README.includes("text/vnd.trolltech.linguist"));
    });
  },
);

kernelTest(
  "the README's probe, generated and run from a pinned URL as written, prints a known process's open",
  async () => {
    await using server = serveCheckout();
    await inTempDir(async (dir) => {
      const { blocks, env } = await preparedForUrl(dir, server);
      const probe = await watchProbe(scriptOf(blocks, { server }), dir, env);
      assert.equal(probe.code, 0, probe.stderr);
    });
  },
);
