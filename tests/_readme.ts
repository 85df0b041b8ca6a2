/**
 * The README as tests read it: its fenced code blocks, the placeholders its
 * commands use for where deno_bpf lives, and a loopback server that hosts
 * this checkout as a web server would.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ROOT } from "./_helpers.ts";

/** One fenced code block of the README. */
export interface Block {
  /** The info string's first word (`ts`, `sh`…), or `""` if there is none. */
  lang: string;
  /** The whole info string. */
  info: string;
  /** The block's text, without the indent of a block inside a list item. */
  text: string;
  /** The 1-based line of the opening fence. */
  line: number;
  /** The heading the block is under. */
  section: string;
}

/** Every fenced code block of `markdown` (the README by default), in order. */
export function readmeBlocks(
  markdown: string = Deno.readTextFileSync(`${ROOT}README.md`),
): Block[] {
  const blocks: Block[] = [];
  const lines = markdown.split("\n");
  let section = "";
  for (let i = 0; i < lines.length; i++) {
    const heading = /^#+ (.*)$/.exec(lines[i]);
    if (heading) section = heading[1];
    const open = /^( *)(```+)(.*)$/.exec(lines[i]);
    if (!open) continue;
    const [, indent, fence, info] = open;
    const body: string[] = [];
    let j = i + 1;
    while (j < lines.length && lines[j] !== indent + fence) {
      body.push(lines[j].startsWith(indent) ? lines[j].slice(indent.length) : lines[j]);
      j++;
    }
    if (j === lines.length) throw new Error(`README.md:${i + 1}: the code block is never closed`);
    blocks.push({
      lang: info.trim().split(/\s+/)[0],
      info: info.trim(),
      text: body.join("\n") + "\n",
      line: i + 1,
      section,
    });
    i = j;
  }
  return blocks;
}

/** Where the README's commands say the checkout is. */
export const README_CHECKOUT = "/opt/deno_bpf";
/** The pinned URL the README's commands import deno_bpf from. */
export const README_BASE = "https://git.example.com/deno_bpf/raw/v0.1.0";
/** That URL's host, as the README's `--allow-import` names it. */
export const README_HOST = "git.example.com";

/**
 * `text` with the README's placeholders made real: the checkout is this one,
 * and the pinned URL is `base` (a loopback server's) on `host`.
 */
export function asHere(text: string, server?: { base: string; host: string }): string {
  let out = text.replaceAll(README_CHECKOUT, ROOT.replace(/\/$/, ""));
  if (server) {
    out = out.replaceAll(README_BASE, server.base).replaceAll(README_HOST, server.host);
  }
  return out;
}

/** A loopback web server that hosts this checkout's files. */
export interface CheckoutServer extends AsyncDisposable {
  /** `http://127.0.0.1:PORT`, this checkout's root. */
  base: string;
  /** `127.0.0.1:PORT`, as `--allow-import` takes it. */
  host: string;
}

/** Options for {@linkcode serveCheckout}. */
export interface ServeOptions {
  /** The media type sent for `path`. */
  contentType?: (path: string) => string;
  /** What is sent in place of the file at `path`, or undefined for the file itself. */
  edit?: (path: string, body: Uint8Array<ArrayBuffer>) => Uint8Array<ArrayBuffer> | undefined;
}

/**
 * Serves this checkout on 127.0.0.1 with `contentType(path)` as each file's
 * media type: `application/typescript` for `.ts` by default, as a server
 * that knows TypeScript sends it; `edit` stands for a file changed on the
 * server.
 */
export function serveCheckout(options: ServeOptions = {}): CheckoutServer {
  const contentType = options.contentType ??
    ((path) => path.endsWith(".ts") ? "application/typescript" : "application/octet-stream");
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    if (path.split("/").includes("..")) return new Response("no", { status: 403 });
    try {
      const file = await Deno.readFile(`${ROOT}${path.slice(1)}`);
      const body = options.edit?.(path, file) ?? file;
      return new Response(body, { headers: { "content-type": contentType(path) } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  const host = `127.0.0.1:${server.addr.port}`;
  return {
    base: `http://${host}`,
    host,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

/** Options for {@linkcode scriptOf}. */
export interface ScriptOptions {
  /** The server that stands for the README's pinned URL. */
  server?: { base: string; host: string };
  /** Whether to keep the last command, the README's `sudo` one (default true). */
  run?: boolean;
}

/**
 * The README's commands of `blocks` (its `sh` blocks, in order) as one bash
 * script, made real by {@linkcode asHere}. The tests run as root, so the one
 * command the README gives as `sudo CMD`, which must come last, runs as
 * `exec CMD`: it is the long one, which the test stops once it has seen what
 * it came for.
 */
export function scriptOf(blocks: Block[], options: ScriptOptions = {}): string {
  const lines = blocks.filter((b) => b.lang === "sh").flatMap((b) => b.text.trimEnd().split("\n"));
  const sudo = lines.findIndex((l) => l.startsWith("sudo "));
  if (sudo !== -1 && sudo !== lines.length - 1) {
    throw new Error(`only the last command may be a sudo one: "${lines[sudo]}"`);
  }
  const kept = sudo !== -1 && options.run === false ? lines.slice(0, sudo) : lines;
  const script = asHere(kept.join("\n"), options.server).replace(/^sudo /m, "exec ");
  return `set -e\n${script}\n`;
}

/** The README's blocks under `heading`, which must have some. */
export function sectionBlocks(heading: string): Block[] {
  const blocks = readmeBlocks().filter((b) => b.section === heading);
  if (blocks.length === 0) throw new Error(`README.md has no code under "${heading}"`);
  return blocks;
}

/** The README's tutorial, whose commands the tests run as written. */
export const TUTORIAL = "Write your own tool";

/**
 * PATH for a shell that runs the README's `deno` commands: the Deno running
 * the tests comes first, so they use it, whatever the PATH of the machine
 * (sudo's secure_path, say) finds or misses.
 */
export const THIS_DENO_ON_PATH: Record<string, string> = {
  PATH: `${Deno.execPath().replace(/\/[^/]*$/, "")}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`,
};

/** A fresh directory outside the checkout, removed after `fn`. */
export async function inTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = Deno.makeTempDirSync({ prefix: "dbpf_readme_" });
  try {
    return await fn(dir);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

/**
 * Writes the tutorial's probe into `dir` as the files its commands name:
 * its C block as `probe.bpf.c`, its TypeScript block as `probe.ts`. That
 * imports deno_bpf from this checkout, or, given the `server` that stands
 * for the README's pinned URL, from there, as the README says to change it.
 * Returns the tutorial's blocks.
 */
export function writeTutorial(dir: string, server?: { base: string; host: string }): Block[] {
  const blocks = sectionBlocks(TUTORIAL);
  const [c, ts] = [blocks.filter((b) => b.lang === "c"), blocks.filter((b) => b.lang === "ts")];
  assert.equal(c.length, 1, "the tutorial has one C block");
  assert.equal(ts.length, 1, "the tutorial has one TypeScript block");
  const script = scriptOf(blocks);
  for (const name of ["probe.bpf.c", "probe.ts"]) assert.ok(script.includes(name), name);
  Deno.writeTextFileSync(`${dir}/probe.bpf.c`, c[0].text);
  Deno.writeTextFileSync(
    `${dir}/probe.ts`,
    asHere(server ? ts[0].text.replaceAll(README_CHECKOUT, README_BASE) : ts[0].text, server),
  );
  return blocks;
}

/**
 * Runs `script`, whose last command is the tutorial's probe, in `dir`, while
 * a shell opens a file in its own process every 100 ms (the probe prints no
 * line once attached); Ctrl-C once the probe printed that open as the
 * tutorial does (`PID PATH`). Fails if it did not within 120 s.
 */
export async function watchProbe(
  script: string,
  dir: string,
  env: Record<string, string> = {},
): Promise<{ code: number; stderr: string }> {
  const file = `${dir}/opened`;
  Deno.writeTextFileSync(file, "");
  const opener = new Deno.Command("sh", {
    args: ["-c", `while :; do : < ${file}; sleep 0.1; done`],
  }).spawn();
  const probe = new Deno.Command("bash", {
    args: ["-c", script],
    cwd: dir,
    env: { NO_COLOR: "1", ...THIS_DENO_ON_PATH, ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(probe.stderr).text();
  const want = `${opener.pid} ${file}`;
  const deadline = setTimeout(() => probe.kill("SIGKILL"), 120_000);
  let seen = "";
  let found = false;
  for await (const chunk of probe.stdout.pipeThrough(new TextDecoderStream())) {
    seen = (seen + chunk).slice(-100_000);
    if (seen.split("\n").includes(want)) {
      found = true;
      probe.kill("SIGINT");
      break;
    }
  }
  const status = await probe.status;
  clearTimeout(deadline);
  opener.kill();
  await opener.status;
  assert.ok(found, `no "${want}" in:\n${seen}\n${await stderr}`);
  return { code: status.code, stderr: await stderr };
}

/** The README's clang command line: the one line of its shell blocks that runs clang. */
export function clangLine(): string {
  const lines = readmeBlocks().filter((b) => b.lang === "sh").flatMap((b) => b.text.split("\n"))
    .filter((l) => l.startsWith("clang "));
  assert.equal(lines.length, 1, `one clang line in the README, found: ${lines.join(" | ")}`);
  return lines[0];
}
