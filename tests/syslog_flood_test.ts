/**
 * trace.ts --syslog over TCP to a relay that goes down, then a flood of the
 * largest events a local user can make: the queue holds at most its byte
 * bound, what does not fit is dropped and counted, and the tracer neither
 * grows past the bound nor exits.
 */

import assert from "node:assert/strict";
import { DEFAULT_SYSLOG_QUEUE_BYTES } from "../lib/unlink/syslog.ts";
import { kernelTest, rssKiB } from "./_helpers.ts";
import { HOSTILE_COMM, spawnHostile } from "./_hostile.ts";
import { startService, waitFor } from "./_servers.ts";
import { PERMS } from "./_trace.ts";

const MiB = 1024 * 1024;
const EVENTS = 20_000;

/** A relay that takes every byte sent to it and counts them, until closed. */
function startSink() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  let bytes = 0;
  let closed = false;
  const accepting = (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      (async () => {
        for await (const chunk of conn.readable) bytes += chunk.length;
      })().catch(() => {});
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    bytes: () => bytes,
    async close() {
      if (closed) return;
      closed = true;
      listener.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch { /* closed by the peer */ }
      }
      await accepting;
    },
  };
}

kernelTest(
  "a relay that goes down and 20,000 hostile events: memory stays within the queue's byte bound plus 16 MiB, every drop counted",
  async () => {
    const dir = Deno.makeTempDirSync({ prefix: "dbpf_flood_" });
    const sink = startSink();
    try {
      const service = await startService(
        [...PERMS, `--allow-net=127.0.0.1:${sink.port}`],
        // The defaults otherwise: a 16 MiB queue, messages cut to 8096 bytes.
        ["--quiet", "-n", HOSTILE_COMM, "--path", dir, "--syslog", `tcp://127.0.0.1:${sink.port}`],
      );
      // Control bytes in the path and a full command line: each takes six
      // bytes of JSON, about 25 KB an event. A first 2,000 go to the relay
      // while it is up, as a service's would before an attack.
      const warm = await spawnHostile("controls", `${dir}`, 2000, 2000, 256);
      assert.equal(await warm.go(), 2000);
      await waitFor(
        "the relay to have the warm-up",
        20_000,
        () => sink.bytes() > 2000 * 7000 ? true : undefined,
      );
      await sink.close(); // the relay goes down, and every reconnect is refused
      await new Promise((r) => setTimeout(r, 1000));

      const before = rssKiB(service.pid) * 1024;
      let peak = before;
      const sampler = setInterval(() => peak = Math.max(peak, rssKiB(service.pid) * 1024), 50);
      let unlinks: number;
      try {
        const flood = await spawnHostile(
          "controls",
          Deno.makeTempDirSync({ dir }),
          EVENTS,
          2000,
          256,
        );
        unlinks = await flood.go();
        await new Promise((r) => setTimeout(r, 1000)); // the drain catches up
        peak = Math.max(peak, rssKiB(service.pid) * 1024);
      } finally {
        clearInterval(sampler);
      }
      const grew = peak - before;
      const bound = DEFAULT_SYSLOG_QUEUE_BYTES + 16 * MiB;
      console.log(
        `RSS ${(before / MiB).toFixed(1)} MiB before the flood, grew ${
          (grew / MiB).toFixed(1)
        } MiB ` +
          `(bound ${(bound / MiB).toFixed(0)} MiB) over ${unlinks} unlinks of 4095-byte paths`,
      );
      assert.equal(unlinks, EVENTS);
      assert.ok(grew <= bound, `RSS grew ${(grew / MiB).toFixed(1)} MiB`);
      const { code, stdout, stderr } = await service.stop();
      assert.equal(code, 0, `the tracer was still running and exited cleanly: ${stderr}`);
      assert.equal(stdout, "", "--quiet leaves stdout empty");
      const [, events, lost, dropped] = /^(\d+) events, (\d+) lost, (\d+) not sent to syslog$/m
        .exec(stderr)!.map(Number);
      assert.equal(
        events + lost,
        2000 + unlinks,
        `every unlink was delivered or counted lost: ${stderr}`,
      );
      // The warm-up's were sent; of the flood's, those the tracer saw were all dropped.
      assert.ok(dropped >= events - 2000 && dropped <= events, `${dropped} dropped: ${stderr}`);
      assert.ok(dropped > EVENTS / 2, `most of the flood was dropped: ${stderr}`);
      assert.doesNotMatch(stderr, /Uncaught|RangeError|error:/i);
    } finally {
      await sink.close();
      Deno.removeSync(dir, { recursive: true });
    }
  },
);
