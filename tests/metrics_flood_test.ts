/**
 * trace.ts --metrics under hostile clients, as real processes: thousands of
 * connections held open (idle, or with half a request), and a descriptor
 * limit the connections run into. The tracer must keep tracing (a real
 * unlink after the flood is reported) and serving (a scrape succeeds), stay
 * within a memory bound, and count what it turned away.
 */

import assert from "node:assert/strict";
import { kernelTest, rssKiB, scratch, spawnUnlinker } from "./_helpers.ts";
import { PERMS } from "./_trace.ts";
import { startService, waitFor } from "./_servers.ts";

const METRICS_PERMS = [...PERMS, "--allow-net=127.0.0.1"];
const MiB = 1024 * 1024;

/** A process's resident memory now, in bytes. */
const rss = (pid: number) => rssKiB(pid) * 1024;

/** The value of one sample line of an exposition, or undefined. */
function sample(exposition: string, series: string): number | undefined {
  const line = exposition.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** Scrapes `addr` until it answers 200 (at most `ms`), returning the body. */
function scrape(addr: string, ms = 10_000): Promise<string> {
  return waitFor(`a scrape of ${addr}`, ms, async () => {
    const response = await fetch(`http://${addr}/metrics`);
    const body = await response.text();
    return response.status === 200 ? body : undefined;
  });
}

/** Opens `n` connections to `addr`, every other one sending half a request. */
async function flood(addr: string, n: number): Promise<Deno.Conn[]> {
  const [hostname, port] = [addr.slice(0, addr.lastIndexOf(":")), Number(addr.split(":").at(-1))];
  const half = new TextEncoder().encode("GET /metrics HTTP/1.1\r\nHost: x\r\n");
  const conns: Deno.Conn[] = [];
  for (let i = 0; i < n; i++) {
    const conn = await Deno.connect({ hostname, port });
    conns.push(conn);
    // The server may have closed it already: a failed write is part of the game.
    if (i % 2 === 1) await conn.write(half).catch(() => {});
  }
  return conns;
}

kernelTest(
  "5,000 connections held against /metrics: the tracer keeps tracing and serving, within 16 MiB more memory",
  async () => {
    const dir = scratch(["after"]);
    const unlinker = await spawnUnlinker([`unlink:${dir}/after`]);
    const service = await startService(METRICS_PERMS, [
      "--json",
      "-p",
      String(unlinker.pid),
      "--path",
      dir,
      "--metrics",
      "127.0.0.1:0",
    ]);
    const addr = service.metricsAddr!;
    let conns: Deno.Conn[] = [];
    try {
      await scrape(addr); // warm: the first answer allocates what every later one reuses
      const before = rss(service.pid);
      let peak = before;
      const sampler = setInterval(() => peak = Math.max(peak, rss(service.pid)), 50);
      try {
        conns = await flood(addr, 5000);
        await new Promise((r) => setTimeout(r, 1000)); // let the server take them all
        peak = Math.max(peak, rss(service.pid));
        const [result] = await unlinker.go();
        assert.equal(result.ret, 0);
        const body = await waitFor("the unlink after the flood counted", 10_000, async () => {
          const text = await scrape(addr);
          const n = sample(
            text,
            'deno_bpf_unlinks_total{op="unlink",result="ok",comm="dbpf_unlinker"}',
          );
          return n === 1 ? text : undefined;
        });
        const full = sample(body, 'deno_bpf_metrics_rejected_total{reason="full"}')!;
        assert.ok(full >= 5000 - 64, `connections turned away as full: ${full}`);
        peak = Math.max(peak, rss(service.pid));
      } finally {
        clearInterval(sampler);
      }
      const grew = peak - before;
      console.log(
        `RSS ${(before / MiB).toFixed(1)} MiB before, grew ${(grew / MiB).toFixed(1)} MiB`,
      );
      assert.ok(grew <= 16 * MiB, `RSS grew ${(grew / MiB).toFixed(1)} MiB`);
      for (const conn of conns) conn.close();
      conns = [];
      const { code, stdout, stderr } = await service.stop();
      assert.equal(code, 0, stderr);
      const events = stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l))
        .filter((l) => l.type === "event");
      assert.deepEqual(events.map((e) => e.data.path), [`${dir}/after`], "the unlink was traced");
    } finally {
      for (const conn of conns) conn.close();
      Deno.removeSync(dir, { recursive: true });
    }
  },
);

kernelTest(
  "out of file descriptors, the tracer survives, keeps tracing and serving, and counts EMFILE",
  async () => {
    const dir = scratch(["after"]);
    const unlinker = await spawnUnlinker([`unlink:${dir}/after`]);
    const service = await startService(METRICS_PERMS, [
      "--json",
      "-p",
      String(unlinker.pid),
      "--path",
      dir,
      "--metrics",
      "127.0.0.1:0",
    ]);
    const addr = service.metricsAddr!;
    let conns: Deno.Conn[] = [];
    try {
      await scrape(addr);
      // A few descriptors more than it holds: far fewer than the 64 connections it allows.
      const open = [...Deno.readDirSync(`/proc/${service.pid}/fd`)].length;
      const limit = open + 8;
      const prlimit = await new Deno.Command("prlimit", {
        args: ["--pid", String(service.pid), `--nofile=${limit}:${limit}`],
      }).output();
      assert.ok(prlimit.success, new TextDecoder().decode(prlimit.stderr));
      conns = await flood(addr, 300);
      await new Promise((r) => setTimeout(r, 2000));
      for (const conn of conns) conn.close();
      conns = [];
      const [result] = await unlinker.go();
      assert.equal(result.ret, 0);
      const body = await waitFor("the unlink counted", 20_000, async () => {
        const text = await scrape(addr);
        const n = sample(
          text,
          'deno_bpf_unlinks_total{op="unlink",result="ok",comm="dbpf_unlinker"}',
        );
        return n === 1 ? text : undefined;
      });
      const emfile = sample(body, 'deno_bpf_metrics_rejected_total{reason="EMFILE"}') ?? 0;
      assert.ok(
        emfile > 0,
        `EMFILE counted: ${body.split("\n").filter((l) => l.includes("rejected"))}`,
      );
      const { code, stdout, stderr } = await service.stop();
      assert.equal(code, 0, stderr);
      assert.doesNotMatch(stderr, /Uncaught|Too many open files/);
      const events = stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l))
        .filter((l) => l.type === "event");
      assert.deepEqual(events.map((e) => e.data.path), [`${dir}/after`]);
    } finally {
      for (const conn of conns) conn.close();
      Deno.removeSync(dir, { recursive: true });
    }
  },
);
