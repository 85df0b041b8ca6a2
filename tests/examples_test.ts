/**
 * The examples, run as a user runs them: each is a subprocess with exactly
 * its documented permissions, read from a pipe, while a child does known
 * work (opens, an exec, a line typed into bash) whose lines must come out
 * exactly. Also: their command lines, and that the embedded objects are
 * what the committed C builds.
 */

import assert from "node:assert/strict";
import { checkoutForOthers, kernelTest, ROOT, scratch } from "./_helpers.ts";

const EXAMPLES = ["opensnoop", "opencount", "execsnoop", "readline"] as const;
/** The permissions every example documents, and no more. */
const PERMISSIONS = ["--allow-ffi", "--allow-env"];
/** How long any one wait for an example's output may take. */
const WAIT_MS = 30_000;

const encoder = new TextEncoder();

/** A child process's stdout, line by line. */
class Lines {
  #reader: ReadableStreamDefaultReader<string>;
  #partial = "";
  #done = false;
  /** Every complete line read so far. */
  readonly all: string[] = [];
  #next = 0;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** Reads one chunk; false at the end of the stream. */
  async #read(): Promise<boolean> {
    if (this.#done) return false;
    const { value, done } = await this.#reader.read();
    if (done) {
      this.#done = true;
      if (this.#partial) this.all.push(this.#partial);
      return false;
    }
    const parts = (this.#partial + value).split("\n");
    this.#partial = parts.pop()!;
    this.all.push(...parts);
    return true;
  }

  /** The next line (after the last one returned) that `match` accepts; throws at the end or after WAIT_MS. */
  async until(match: (line: string) => boolean, what: string): Promise<string> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no ${what} within ${WAIT_MS} ms in:\n${this.all.join("\n")}`)),
        WAIT_MS,
      );
    });
    try {
      for (;;) {
        while (this.#next < this.all.length) {
          const line = this.all[this.#next++];
          if (match(line)) return line;
        }
        if (!await Promise.race([this.#read(), timeout])) {
          throw new Error(`no ${what} before the output ended:\n${this.all.join("\n")}`);
        }
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** Reads to the end of the stream (the process must be ending); returns every line. */
  async rest(): Promise<string[]> {
    while (await this.#read());
    return this.all;
  }
}

/** An example running as a subprocess, with its stdout as lines. */
interface Running {
  proc: Deno.ChildProcess;
  out: Lines;
  /** Sends `signal`, drains stdout, and returns the exit code and stderr. */
  stop(signal?: Deno.Signal): Promise<{ code: number; stderr: string; lines: string[] }>;
}

/** Starts `examples/<name>.ts` with its documented permissions; resolves once `ready` printed. */
async function start(name: string, args: string[], ready: RegExp): Promise<Running> {
  const proc = new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, `${ROOT}examples/${name}.ts`, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(proc.stderr).text();
  const out = new Lines(proc.stdout);
  const running: Running = {
    proc,
    out,
    async stop(signal) {
      if (signal) {
        try {
          proc.kill(signal);
        } catch { /* already exited */ }
      }
      const deadline = setTimeout(() => proc.kill("SIGKILL"), WAIT_MS);
      try {
        const lines = await out.rest();
        return { code: (await proc.status).code, stderr: await stderr, lines };
      } finally {
        clearTimeout(deadline);
      }
    },
  };
  try {
    await out.until((line) => ready.test(line), `ready line ${ready}`);
  } catch (error) {
    const { stderr } = await running.stop("SIGKILL");
    throw new Error(`${name}.ts did not start: ${stderr.trim()}`, { cause: error });
  }
  return running;
}

/** A `sh` child that runs `script` once it is told to go, with stdin as the cue. */
function spawnShell(script: string) {
  const child = new Deno.Command("/bin/sh", {
    args: ["-c", `read go; ${script}`],
    stdin: "piped",
    stdout: "null",
    stderr: "null",
  }).spawn();
  return {
    pid: child.pid,
    async go(): Promise<Deno.CommandStatus> {
      const writer = child.stdin.getWriter();
      await writer.write(encoder.encode("go\n"));
      await writer.close();
      return await child.status;
    },
  };
}

/** How the ring-buffer examples print a pid column. */
const col = (n: number | string, width = 7) => String(n).padEnd(width);

for (const name of EXAMPLES) {
  Deno.test(`${name}.ts --help exits 0, and a bad flag exits 2 with one line`, async () => {
    const run = (args: string[]) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", ...PERMISSIONS, `${ROOT}examples/${name}.ts`, ...args],
        stdout: "piped",
        stderr: "piped",
      }).output();
    const text = new TextDecoder();
    const help = await run(["--help"]);
    assert.equal(help.code, 0);
    assert.match(text.decode(help.stdout), new RegExp(`^Usage: .*${name}\\.ts`));
    const bad = await run(["--no-such-flag"]);
    assert.equal(bad.code, 2);
    assert.equal(text.decode(bad.stdout), "");
    assert.equal(
      text.decode(bad.stderr),
      `${name}: Unknown option '--no-such-flag'; see --help\n`,
    );
    // A value that starts with a dash (here for a flag that takes one, or an unknown flag).
    const dashed = await run(name === "opensnoop" ? ["-p", "-5"] : ["--no-such-flag", "-5"]);
    assert.equal(dashed.code, 2);
    assert.equal(text.decode(dashed.stderr).split("\n").length, 2, text.decode(dashed.stderr));
  });
}

kernelTest(
  "opensnoop.ts -p shows one process's successful and failed opens, exactly, and exits 0 on Ctrl-C",
  async () => {
    const dir = scratch(["present"]);
    const child = spawnShell(`exec cat ${dir}/present ${dir}/missing`);
    const snoop = await start("opensnoop", ["-p", String(child.pid)], /^PID +COMM +FLAGS/);
    await child.go();
    const cat = col(child.pid) + " " + "cat".padEnd(16);
    const want = [
      `${cat} 00000000      3 ${dir}/present`,
      `${cat} 00000000 ENOENT ${dir}/missing`,
    ];
    for (const line of want) await snoop.out.until((l) => l === line, JSON.stringify(line));
    const { code, stderr, lines } = await snoop.stop("SIGINT");
    Deno.removeSync(dir, { recursive: true });
    assert.equal(code, 0, stderr);
    assert.equal(stderr, "");
    // -p: the filter runs in the kernel, so only the child's opens arrive.
    const others = lines.slice(1).filter((l) => !l.startsWith(`${col(child.pid)} `));
    assert.deepEqual(others, []);
  },
);

kernelTest(
  "opencount.ts counts a command's opens in one interval exactly, then clears them",
  async () => {
    const N = 7;
    // After the cue, dash renames itself (that open still counts for "sh"),
    // then opens a file N times: a redirection is one openat each.
    const comm = "dbpf-opencount";
    const child = spawnShell(
      `printf ${comm} > /proc/self/comm; ` +
        `i=0; while [ $i -lt ${N} ]; do : < /etc/hostname; i=$((i + 1)); done`,
    );
    // --top high enough that a busy machine cannot push the child out of the table.
    const count = await start(
      "opencount",
      ["--interval", "1", "--top", "100000", "--count", "3"],
      /^Counting/,
    );
    const isTime = (line: string) => /^\d\d:\d\d:\d\d$/.test(line);
    await count.out.until(isTime, "first table");
    await count.out.until((l) => l.startsWith("COMM"), "first table's header");
    // Right after a table: the child's opens land well inside the next interval.
    assert.equal((await child.go()).code, 0);
    const { code, stderr, lines } = await count.stop();
    assert.equal(code, 0, stderr);
    assert.equal(stderr, "");
    // Split the output into its three tables (each: a blank line, the time, the header, rows).
    const tables = lines.join("\n").split(/\n\n\d\d:\d\d:\d\d\n/).slice(1)
      .map((t) => t.split("\n").slice(1));
    assert.equal(tables.length, 3, lines.join("\n"));
    const row = (table: string[]) => table.filter((l) => l.startsWith(`${comm} `));
    assert.deepEqual(row(tables[0]), []);
    assert.deepEqual(row(tables[1]), [`${comm.padEnd(16)} ${N}`]);
    assert.deepEqual(row(tables[2]), [], "the map was not cleared after the table");
  },
);

kernelTest("opencount.ts prints the interval so far and exits 0 at once on Ctrl-C", async () => {
  const count = await start("opencount", ["--interval", "60"], /^Counting/);
  const started = Date.now();
  const { code, stderr, lines } = await count.stop("SIGINT");
  assert.equal(code, 0, stderr);
  assert.equal(stderr, "");
  assert.ok(Date.now() - started < 10_000, "Ctrl-C waited for the interval to end");
  assert.match(lines.join("\n"), /\n\n\d\d:\d\d:\d\d\nCOMM +OPENS(\n|$)/);
});

kernelTest(
  "execsnoop.ts shows an exec with its exact pid, parent, command and file name",
  async () => {
    const child = spawnShell("exec /bin/true");
    const snoop = await start("execsnoop", [], /^PID +PPID +COMM +FILENAME$/);
    await child.go();
    const want = `${col(child.pid)} ${col(Deno.pid)} ${"true".padEnd(16)} /bin/true`;
    await snoop.out.until((l) => l === want, JSON.stringify(want));
    const { code, stderr } = await snoop.stop("SIGTERM");
    assert.equal(code, 0, stderr);
    assert.equal(stderr, "");
  },
);

kernelTest(
  "readline.ts shows a line typed into an interactive bash, with that bash's pid",
  async () => {
    const snoop = await start("readline", [], /^PID +LINE$/);
    // bash calls readline() only when its input is a terminal: `script` runs
    // it on a pseudo-terminal and copies our piped stdin there.
    const shell = new Deno.Command("script", {
      args: ["-qec", "bash --norc --noprofile -i", "/dev/null"],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
      env: { TERM: "dumb", HISTFILE: "" }, // an empty HISTFILE: bash saves no history
    }).spawn();
    const writer = shell.stdin.getWriter();
    await writer.write(encoder.encode("echo dbpf-readline-test\necho bash-pid=$$\nexit\n"));
    await writer.close();
    const typed = await new Response(shell.stdout).text();
    assert.equal((await shell.status).code, 0, typed);
    const pid = /bash-pid=(\d+)/.exec(typed)?.[1];
    assert.ok(pid, `bash printed no pid:\n${typed}`);
    for (const line of ["echo dbpf-readline-test", "echo bash-pid=$$", "exit"]) {
      const want = `${col(pid)} ${line}`;
      await snoop.out.until((l) => l === want, JSON.stringify(want));
    }
    const { code, stderr } = await snoop.stop("SIGINT");
    assert.equal(code, 0, stderr);
    assert.equal(stderr, "");
  },
);

kernelTest(
  "each example says in one line that it needs root, when run without privileges",
  async () => {
    // As nobody, with a cache dir nobody can write; `setpriv` drops every capability.
    const cache = Deno.makeTempDirSync({ prefix: "dbpf_nobody_" });
    Deno.chmodSync(cache, 0o777);
    try {
      for (const name of EXAMPLES) {
        const out = await new Deno.Command("setpriv", {
          args: [
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "env",
            `DENO_DIR=${cache}`,
            Deno.execPath(),
            "run",
            ...PERMISSIONS,
            `${checkoutForOthers()}examples/${name}.ts`,
          ],
          stdout: "piped",
          stderr: "piped",
        }).output();
        const text = new TextDecoder();
        assert.equal(out.code, 1, name);
        assert.equal(text.decode(out.stdout), "", name);
        assert.equal(
          text.decode(out.stderr),
          `${name}: deno_bpf needs root (or CAP_BPF and CAP_PERFMON); run it with sudo\n`,
        );
      }
    } finally {
      Deno.removeSync(cache, { recursive: true });
    }
  },
);
