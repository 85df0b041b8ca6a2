/**
 * Every fenced code block of README.md, checked by what reads that language:
 * TypeScript by `deno check`, C by the README's own clang line, shell by
 * bash, the Prometheus and rsyslog configurations by promtool and rsyslogd.
 * `text` blocks are samples of output and listings, and a block of any other
 * language fails, so nothing slips through. The "Write your own tool"
 * section is also run as written, from a directory outside the checkout.
 */

import assert from "node:assert/strict";
import { kernelTest, ROOT } from "./_helpers.ts";
import {
  asHere,
  type Block,
  clangLine,
  inTempDir,
  readmeBlocks,
  scriptOf,
  THIS_DENO_ON_PATH,
  TUTORIAL,
  watchProbe,
  writeTutorial,
} from "./_readme.ts";

/** What checks each language, and the languages of output samples. */
const LANGUAGES = {
  ts: "deno check",
  c: "the README's clang line",
  sh: "bash -n (and the tutorial's are run)",
  yaml: "promtool check config (the README's YAML is Prometheus configuration)",
  promql: "promtool check rules",
  rsyslog: "rsyslogd -N1",
  text: "nothing: a sample of output or a listing",
} as const;

const where = (b: Block) => `README.md:${b.line} (${b.info || "no language"})`;

/** Runs `cmd args` in `cwd`; fails with its output unless it exits 0. */
async function mustRun(cmd: string, args: string[], cwd: string, what: string): Promise<string> {
  const out = await new Deno.Command(cmd, {
    args,
    cwd,
    env: { NO_COLOR: "1", ...THIS_DENO_ON_PATH },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  const output = text.decode(out.stdout) + text.decode(out.stderr);
  assert.equal(out.code, 0, `${what}: ${cmd} ${args.join(" ")} failed:\n${output}`);
  return output;
}

/** The blocks of `lang`, which the README must have. */
function blocksOf(lang: keyof typeof LANGUAGES): Block[] {
  const blocks = readmeBlocks().filter((b) => b.lang === lang);
  assert.ok(blocks.length > 0, `README.md has no ${lang} block`);
  return blocks;
}

Deno.test("every code block in the README is in a language that a check here reads", () => {
  const unknown = readmeBlocks().filter((b) => !(b.info in LANGUAGES)).map(where);
  assert.deepEqual(unknown, [], `give each block one of: ${Object.keys(LANGUAGES).join(", ")}`);
});

Deno.test("every TypeScript block in the README type-checks", async () => {
  await inTempDir(async (dir) => {
    const files: string[] = [];
    for (const b of blocksOf("ts")) {
      if (b.section === TUTORIAL) continue; // checked by the tutorial's own `deno check`
      // Outside the tutorial, a block's relative imports are the checkout's.
      const file = `${dir}/readme_${b.line}.ts`;
      Deno.writeTextFileSync(file, asHere(b.text).replaceAll(`from "./`, `from "${ROOT}`));
      files.push(file);
    }
    assert.ok(files.length > 0, "no TypeScript block outside the tutorial");
    await mustRun(Deno.execPath(), ["check", "--no-config", ...files], dir, "README TypeScript");
  });
});

Deno.test("every C block in the README compiles with the README's own clang line", async () => {
  const line = clangLine();
  const source = /-c (\S+\.c)/.exec(line)?.[1];
  assert.ok(source, `the clang line names no .c file: ${line}`);
  for (const b of blocksOf("c")) {
    await inTempDir(async (dir) => {
      Deno.writeTextFileSync(`${dir}/${source}`, b.text);
      await mustRun("bash", ["-ec", asHere(line)], dir, where(b));
    });
  }
});

Deno.test("every shell block in the README is valid bash", async () => {
  for (const b of blocksOf("sh")) await mustRun("bash", ["-n", "-c", b.text], ROOT, where(b));
});

Deno.test("the README's Prometheus and rsyslog configurations are valid to their own tools", async () => {
  await inTempDir(async (dir) => {
    for (const b of blocksOf("yaml")) {
      Deno.writeTextFileSync(`${dir}/prometheus.yml`, b.text);
      await mustRun("promtool", ["check", "config", "prometheus.yml"], dir, where(b));
    }
    for (const b of blocksOf("promql")) {
      const rule = { groups: [{ name: "readme", rules: [{ record: "readme", expr: b.text }] }] };
      Deno.writeTextFileSync(`${dir}/rules.yml`, JSON.stringify(rule)); // JSON is YAML
      await mustRun("promtool", ["check", "rules", "rules.yml"], dir, where(b));
    }
    for (const b of blocksOf("rsyslog")) {
      Deno.writeTextFileSync(`${dir}/rsyslog.conf`, b.text);
      await mustRun("rsyslogd", ["-N1", "-f", `${dir}/rsyslog.conf`], dir, where(b));
    }
  });
});

Deno.test(
  "the README's own probe, built as written in a directory outside the checkout, compiles, generates and type-checks",
  async () => {
    await inTempDir(async (dir) => {
      const blocks = writeTutorial(dir);
      await mustRun("bash", ["-c", scriptOf(blocks, { run: false })], dir, TUTORIAL);
      const generated = Deno.readTextFileSync(`${dir}/probe_bpf.ts`);
      // Generated from a checkout, the module imports that checkout's mod.ts.
      const from = /from "([^"]+)"/.exec(generated)?.[1];
      assert.equal(new URL(from!, `file://${dir}/`).pathname, `${ROOT}mod.ts`);
    });
  },
);

kernelTest(
  "the README's own probe, run as written, prints a known process's open and stops on Ctrl-C",
  async () => {
    await inTempDir(async (dir) => {
      const probe = await watchProbe(scriptOf(writeTutorial(dir)), dir);
      assert.equal(probe.code, 0, probe.stderr);
    });
  },
);

Deno.test("the README's tutorial documents every option of gen.ts --help", async () => {
  const help = await mustRun(Deno.execPath(), ["run", `${ROOT}scripts/gen.ts`, "--help"], ROOT, "");
  const options = [...help.matchAll(/^ +(--[a-z-]+)/gm)].map((m) => m[1]);
  assert.ok(options.length >= 3, help);
  const readme = Deno.readTextFileSync(`${ROOT}README.md`);
  const start = readme.indexOf(`### ${TUTORIAL}`);
  const section = readme.slice(start, readme.indexOf("\n#", start + 1));
  const missing = options.filter((o) => o !== "--help" && !section.includes(`\`${o}`));
  assert.deepEqual(missing, [], `gen.ts options the tutorial does not mention`);
});
