/**
 * Every way trace.ts is stopped, and every way its output is read: it says it
 * is ready at once, detaches on every exit path, prints its summary where the
 * path allows, and never a stack trace.
 */

import assert from "node:assert/strict";
import { kernelTest, readUntil, scratch, spawnUnlinker, TEST_MODE } from "./_helpers.ts";
import { orphanedPrograms, PERMS, SCRIPT } from "./_trace.ts";

const STACK = /^\s+at /m;

/** Starts trace.ts with piped output; resolves once it is attached. */
async function startTracer(args: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMS, SCRIPT, "--mode", TEST_MODE, ...args],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const err = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  const stderr = await readUntil(err, "attached via");
  assert.match(stderr, /attached via/, `trace.ts did not attach: ${stderr}`);
  return { child, out, err, stderr };
}

/** Rejects after `ms` with `what`, for waits that must not hang. */
function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Orphaned programs are freed by the kernel shortly after the last fd closes. */
async function assertNoOrphans() {
  for (let i = 0; i < 20 && orphanedPrograms().length > 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.deepEqual(orphanedPrograms(), [], "no deno_bpf program remains loaded");
}

const FIRST_LINES: [string, string[], string][] = [
  ["json", ["--json"], '{"type":"attach"'],
  ["text", [], "TIME "],
];
for (const [mode, args, first] of FIRST_LINES) {
  kernelTest(
    `trace.ts in ${mode} mode writes its first stdout line within 1 s of attaching, with no event`,
    async () => {
      // A pid that cannot exist: no event will ever come to flush the line.
      const { child, out } = await startTracer([...args, "-p", "4194304"]);
      const attachedAt = Date.now();
      const text = await within(5000, "first stdout line", readUntil(out, "\n"));
      const delay = Date.now() - attachedAt;
      child.kill("SIGINT");
      await child.status;
      assert.ok(text.startsWith(first), text);
      assert.ok(delay < 1000, `first line came ${delay} ms after attaching`);
    },
  );
}

for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  kernelTest(
    `${signal} makes trace.ts detach, print its summary and exit 0, with no stack trace`,
    async () => {
      const dir = scratch(["a"]);
      const unlinker = await spawnUnlinker([`unlink:${dir}/a`]);
      const { child, out, err, stderr } = await startTracer([
        "--json",
        "-p",
        `${unlinker.pid}`,
        "-n",
        "dbpf_unlinker",
        "--path",
        dir,
      ]);
      await unlinker.go();
      let stdout = await within(10_000, "the event line", readUntil(out, '"type":"event"'));
      child.kill(signal);
      const status = await within(10_000, "exit", child.status);
      stdout = await readUntil(out, undefined, stdout);
      const errText = await readUntil(err, undefined, stderr);
      Deno.removeSync(dir, { recursive: true });
      assert.equal(status.code, 0, errText);
      assert.deepEqual(JSON.parse(stdout.trimEnd().split("\n").at(-1)!), {
        type: "summary",
        data: { events: 1, lost: 0 },
      });
      assert.match(errText, /^1 events, 0 lost$/m);
      assert.doesNotMatch(errText, STACK);
      await assertNoOrphans();
    },
  );
}

kernelTest("--count and --duration stop trace.ts cleanly and leave no program behind", async () => {
  for (const args of [["--duration", "0.3"], ["--count", "1"]]) {
    const { child, out, err, stderr } = await startTracer(["--json", "-n", "rm", ...args]);
    if (args[0] === "--count") {
      await new Deno.Command("rm", { args: ["/nonexistent/dbpf"], stderr: "null" }).output();
    }
    const status = await within(10_000, `${args[0]} exit`, child.status);
    const stdout = await readUntil(out);
    const errText = await readUntil(err, undefined, stderr);
    assert.equal(status.code, 0, errText);
    const last = JSON.parse(stdout.trimEnd().split("\n").at(-1)!);
    assert.equal(last.type, "summary", stdout);
    assert.doesNotMatch(errText, STACK);
  }
  await assertNoOrphans();
});

kernelTest("trace.ts --json | head -1 ends at once with no event, and cleans up", async () => {
  const started = Date.now();
  const pipeline = await within(
    15_000,
    "the pipeline to end",
    new Deno.Command("sh", {
      args: [
        "-c",
        `"${Deno.execPath()}" run ${PERMS.join(" ")} ${SCRIPT} --mode ${TEST_MODE} --json ` +
        `-p 4194304 | head -1`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output(),
  );
  const stdout = new TextDecoder().decode(pipeline.stdout);
  const stderr = new TextDecoder().decode(pipeline.stderr);
  assert.equal(pipeline.code, 0, stderr);
  assert.equal(JSON.parse(stdout).type, "attach");
  assert.match(stderr, /^0 events, 0 lost$/m);
  assert.doesNotMatch(stderr, STACK);
  console.log(`pipeline ended ${Date.now() - started} ms after it started`);
  await assertNoOrphans();
});

kernelTest("SIGKILL leaves nothing loaded: the kernel frees what trace.ts held", async () => {
  const { child } = await startTracer(["--json"]);
  child.kill("SIGKILL");
  const status = await child.status;
  assert.equal(status.signal, "SIGKILL");
  await assertNoOrphans();
});

kernelTest(
  "two tracers at once both see every event, and closing one leaves the other",
  async () => {
    const dir = scratch(["1", "2", "3", "4"]);
    const a = await startTracer(["--json", "-n", "dbpf_unlinker", "--path", dir]);
    const b = await startTracer(["--json", "-n", "dbpf_unlinker", "--path", dir]);
    const first = await spawnUnlinker([`unlink:${dir}/1`, `unlink:${dir}/2`]);
    await first.go();
    let aText = await within(10_000, "tracer A", readUntil(a.out, `${dir}/2`));
    let bText = await within(10_000, "tracer B", readUntil(b.out, `${dir}/2`));
    a.child.kill("SIGINT");
    assert.equal((await a.child.status).code, 0);
    aText = await readUntil(a.out, undefined, aText);
    const second = await spawnUnlinker([`unlink:${dir}/3`, `unlinkat:${dir}/4`]);
    await second.go();
    bText = await within(10_000, "tracer B after A left", readUntil(b.out, `${dir}/4`, bText));
    b.child.kill("SIGINT");
    assert.equal((await b.child.status).code, 0);
    bText = await readUntil(b.out, undefined, bText);
    Deno.removeSync(dir, { recursive: true });
    const names = (text: string) =>
      text.trimEnd().split("\n").map((l) => JSON.parse(l)).filter((l) => l.type === "event")
        .map((l) => l.data.filename);
    assert.deepEqual(names(aText), [`${dir}/1`, `${dir}/2`]);
    assert.deepEqual(names(bText), [1, 2, 3, 4].map((n) => `${dir}/${n}`));
    await assertNoOrphans();
  },
);
