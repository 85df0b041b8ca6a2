/**
 * trace.ts --syslog over TCP to a relay that is down, flooded with the
 * largest events a local user can make: the queue holds at most its byte
 * bound, what does not fit is dropped and counted, and the tracer neither
 * grows past the bound nor exits.
 */

import assert from "node:assert/strict";
import { DEFAULT_SYSLOG_QUEUE_BYTES } from "../lib/unlink/syslog.ts";
import { kernelTest, rssKiB } from "./_helpers.ts";
import { HOSTILE_COMM, spawnHostile } from "./_hostile.ts";
import { freePort, startService } from "./_servers.ts";
import { PERMS } from "./_trace.ts";

const MiB = 1024 * 1024;
const EVENTS = 20_000;

kernelTest(
  "a relay that is down and 20,000 hostile events: memory stays within the queue's byte bound plus 16 MiB, every drop counted",
  async () => {
    const dir = Deno.makeTempDirSync({ prefix: "dbpf_flood_" });
    const port = freePort(); // nobody listens: every connect is refused
    try {
      // Control bytes in the path and a full command line: each takes six bytes of JSON.
      const hostile = await spawnHostile("controls", dir, EVENTS, 2000, 256);
      const service = await startService(
        [...PERMS, `--allow-net=127.0.0.1:${port}`],
        [
          ...["--quiet", "-p", String(hostile.pid), "--path", dir],
          ...["--syslog", `tcp://127.0.0.1:${port}`],
          // The largest cap: every queued message is the whole event.
          ...["--syslog-max-message", "65507"],
        ],
      );
      await new Promise((r) => setTimeout(r, 1000)); // the first reconnects, the timers settle
      const before = rssKiB(service.pid) * 1024;
      let peak = before;
      const sampler = setInterval(() => peak = Math.max(peak, rssKiB(service.pid) * 1024), 50);
      let unlinks: number;
      try {
        unlinks = await hostile.go();
        await new Promise((r) => setTimeout(r, 1000)); // the drain catches up
        peak = Math.max(peak, rssKiB(service.pid) * 1024);
      } finally {
        clearInterval(sampler);
      }
      const grew = peak - before;
      const bound = DEFAULT_SYSLOG_QUEUE_BYTES + 16 * MiB;
      console.log(
        `RSS ${(before / MiB).toFixed(1)} MiB before, grew ${(grew / MiB).toFixed(1)} MiB ` +
          `(bound ${
            (bound / MiB).toFixed(0)
          } MiB) over ${unlinks} unlinks of ${hostile.pathBytes}-byte paths`,
      );
      assert.equal(unlinks, EVENTS);
      assert.ok(grew <= bound, `RSS grew ${(grew / MiB).toFixed(1)} MiB`);
      const { code, stdout, stderr } = await service.stop();
      assert.equal(code, 0, `the tracer was still running and exited cleanly: ${stderr}`);
      assert.equal(stdout, "", "--quiet leaves stdout empty");
      const [, events, lost, dropped] = /^(\d+) events, (\d+) lost, (\d+) not sent to syslog$/m
        .exec(stderr)!.map(Number);
      assert.equal(events + lost, unlinks, `every unlink was delivered or counted lost: ${stderr}`);
      assert.ok(events > 0);
      assert.equal(dropped, events, "with the relay down throughout, every event was dropped");
      assert.doesNotMatch(stderr, /Uncaught|RangeError|error:/i);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
);
