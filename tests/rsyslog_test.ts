/**
 * trace.ts --syslog against Debian's rsyslogd, started by the test on
 * loopback: every event arrives with its fields over UDP, TCP and a Unix
 * socket, and over TCP a relay stopped mid-stream loses nothing silently.
 */

import assert from "node:assert/strict";
import { kernelTest, scratch, spawnUnlinker } from "./_helpers.ts";
import { buildStorm } from "./_storm.ts";
import { PERMS, runScript } from "./_trace.ts";
import { HOSTILE_END, HOSTILE_PATH_BYTES, spawnHostile } from "./_hostile.ts";
import { DEFAULT_SYSLOG_MAX_MESSAGE } from "../lib/unlink/syslog.ts";
import { type Rsyslog, startRsyslog, startService, waitFor } from "./_servers.ts";

/** The events of tracer `pid` that rsyslog wrote, each once (repeats share a sequenceId). */
function eventsOf(server: Rsyslog, pid: number) {
  const seen = new Set<number>();
  return server.lines().filter((l) => {
    if (l.procid !== String(pid) || l.msgid !== "event" || seen.has(l.seq)) return false;
    seen.add(l.seq);
    return true;
  });
}

for (const transport of ["udp", "tcp", "unix"] as const) {
  kernelTest(
    `syslog over ${transport} delivers every event as RFC 5424 with the JSON line as MSG`,
    async () => {
      const server = await startRsyslog();
      const dir = scratch(["a", "b"]);
      try {
        const url = transport === "unix"
          ? `unix://${server.socket}`
          : `${transport}://127.0.0.1:${transport === "udp" ? server.udpPort : server.tcpPort}`;
        const perms = transport === "tcp"
          ? [...PERMS, `--allow-net=127.0.0.1:${server.tcpPort}`]
          : PERMS;
        const unlinker = await spawnUnlinker([
          `unlink:${dir}/a`,
          `unlink:${dir}/missing`,
          `unlink:${dir}/b`,
        ]);
        const service = await startService(perms, [
          "--quiet",
          "-p",
          String(unlinker.pid),
          "--path",
          dir,
          "--syslog",
          url,
        ]);
        const results = await unlinker.go();
        const got = await waitFor(
          "three events in rsyslog's file",
          10_000,
          () =>
            eventsOf(server, service.pid).length === 3 ? eventsOf(server, service.pid) : undefined,
        );
        const { code, stdout, stderr } = await service.stop();
        assert.equal(code, 0, stderr);
        assert.equal(stdout, "", "--quiet leaves stdout empty");
        assert.match(stderr, /^3 events, 0 lost, 0 not sent to syslog$/m);
        const attach = server.lines().find((l) => l.procid === String(service.pid));
        assert.equal(attach?.msgid, "attach");
        assert.equal(attach?.json.type, "attach");
        assert.deepEqual(
          got.map((l) => [l.app, l.pri, l.seq, l.json.type]),
          [["deno_bpf", 30, 2, "event"], ["deno_bpf", 30, 3, "event"], [
            "deno_bpf",
            30,
            4,
            "event",
          ]],
        );
        assert.deepEqual(
          got.map((l) => {
            const { pid, comm, filename, ret, error } = l.json.data;
            return { pid, comm, filename, ret, error };
          }),
          results.map((r) => ({
            pid: unlinker.pid,
            comm: "dbpf_unlinker",
            filename: r.path,
            ret: r.ret < 0 ? -r.errno : 0,
            error: r.ret < 0 ? "ENOENT" : null,
          })),
        );
        for (const l of got) {
          assert.match(l.json.data.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
          assert.ok(l.json.data.latency_ns > 0);
        }
      } finally {
        await server.close();
        Deno.removeSync(dir, { recursive: true });
      }
    },
  );
}

for (const transport of ["udp", "tcp", "unix"] as const) {
  kernelTest(
    `over ${transport}, an event with a 4,095-byte path reaches rsyslog as one valid JSON message, cut and marked, the path keeping its end`,
    async () => {
      const server = await startRsyslog();
      const dir = Deno.makeTempDirSync({ prefix: "dbpf_long_" });
      try {
        const url = transport === "unix"
          ? `unix://${server.socket}`
          : `${transport}://127.0.0.1:${transport === "udp" ? server.udpPort : server.tcpPort}`;
        const perms = transport === "tcp"
          ? [...PERMS, `--allow-net=127.0.0.1:${server.tcpPort}`]
          : PERMS;
        // Control bytes, six bytes of JSON each: the event is about 25 KB as a JSON line.
        const hostile = await spawnHostile("controls", dir, 1, 100);
        assert.equal(hostile.pathBytes, HOSTILE_PATH_BYTES);
        const service = await startService(perms, [
          ...["--quiet", "-p", String(hostile.pid), "--path", dir, "--syslog", url],
        ]);
        assert.equal(await hostile.go(), 1);
        // lines() parses every message's JSON: a cut one would throw here.
        const [got] = await waitFor(
          "the event in rsyslog's file",
          10_000,
          () => {
            const events = eventsOf(server, service.pid);
            return events.length > 0 ? events : undefined;
          },
        );
        const { code, stderr } = await service.stop();
        assert.equal(code, 0, stderr);
        assert.match(stderr, /^1 events, 0 lost, 0 not sent to syslog$/m);
        assert.equal(eventsOf(server, service.pid).length, 1, "one message, not pieces");
        const { data } = got.json;
        assert.deepEqual(data.syslog_truncated, ["path"]);
        assert.ok(data.path.startsWith("\u2026\x01"), "a cut path starts with the mark");
        assert.ok(data.path.endsWith(`\x01${HOSTILE_END}`), "and keeps the file's name");
        assert.equal(data.comm, "dbpf_hostile");
        assert.equal(data.pid, hostile.pid);
        const msgBytes = new TextEncoder().encode(JSON.stringify(got.json)).length;
        assert.ok(msgBytes < DEFAULT_SYSLOG_MAX_MESSAGE, `${msgBytes} bytes of MSG`);
      } finally {
        await server.close();
        Deno.removeSync(dir, { recursive: true });
      }
    },
  );
}

const COMM = "dbpf_svc";

kernelTest(
  "syslog over tcp with rsyslog stopped mid-stream: delivered plus dropped equals done, then delivery resumes",
  async () => {
    const server = await startRsyslog();
    const bin = await buildStorm(Deno.makeTempDirSync({ prefix: "dbpf_storm_" }));
    try {
      const service = await startService(
        [...PERMS, `--allow-net=127.0.0.1:${server.tcpPort}`],
        [
          "--json",
          "-n",
          COMM,
          "--syslog",
          `tcp://127.0.0.1:${server.tcpPort}`,
          "--syslog-queue-bytes",
          "300K",
        ],
      );
      // 500 unlinks a second for 5 s; the relay is down from 1.5 s to 3 s.
      const storm = new Deno.Command(bin, {
        args: ["paced", "500", "5"],
        env: { DBPF_STORM_COMM: COMM },
        stdout: "piped",
        stderr: "piped",
      }).output();
      await new Promise((r) => setTimeout(r, 1500));
      await server.stop();
      const during = eventsOf(server, service.pid).length;
      await new Promise((r) => setTimeout(r, 1500));
      await server.start();
      const out = await storm;
      assert.ok(out.success, new TextDecoder().decode(out.stderr));
      const done: number =
        JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!)
          .unlinks;
      // Let the tracer reconnect and send what it queued.
      let last = -1;
      await waitFor("rsyslog's file to settle", 20_000, async () => {
        const n = eventsOf(server, service.pid).length;
        const settled = n === last && n > during;
        last = n;
        await new Promise((r) => setTimeout(r, 400));
        return settled ? true : undefined;
      });
      const { code, stdout, stderr } = await service.stop();
      assert.equal(code, 0, stderr);
      const summary = JSON.parse(stdout.trimEnd().split("\n").at(-1)!);
      assert.equal(summary.type, "summary");
      assert.equal(summary.data.events, done, "the tracer saw every unlink");
      const dropped = summary.data.syslog_dropped;
      const delivered = eventsOf(server, service.pid).length;
      assert.ok(dropped > 0, `the relay was down for 1.5 s at 500/s: ${stderr}`);
      assert.ok(delivered > during, "delivery resumed after the restart");
      assert.equal(delivered + dropped, done, `delivered ${delivered} + dropped ${dropped}`);
      // The drops are in lost records on stdout and, once it was back, at the relay.
      const lostOut = stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l))
        .filter((l) => l.type === "lost" && l.data.output === "syslog")
        .reduce((n, l) => n + l.data.count, 0);
      assert.equal(lostOut, dropped);
      const told = server.lines().filter((l) => l.procid === String(service.pid))
        .filter((l) => l.msgid === "lost").reduce((n, l) => n + l.json.data.count, 0);
      assert.equal(told, dropped);
    } finally {
      await server.close();
      Deno.removeSync(bin.slice(0, bin.lastIndexOf("/")), { recursive: true });
    }
  },
);

kernelTest(
  "with --syslog, SIGHUP reopens the connection to the relay and tracing goes on",
  async () => {
    const server = await startRsyslog();
    const dir = scratch(["a"]);
    try {
      const unlinker = await spawnUnlinker([`unlink:${dir}/a`]);
      const service = await startService(
        [...PERMS, `--allow-net=127.0.0.1:${server.tcpPort}`],
        [
          ...["--json", "-p", String(unlinker.pid), "--path", dir],
          ...["--syslog", `tcp://127.0.0.1:${server.tcpPort}`],
        ],
      );
      service.kill("SIGHUP");
      await waitFor(
        "the SIGHUP state line",
        5000,
        () => service.stderr().includes("SIGHUP: reopening outputs") ? true : undefined,
      );
      await unlinker.go();
      await waitFor(
        "the event after SIGHUP",
        10_000,
        () => eventsOf(server, service.pid).length === 1 ? true : undefined,
      );
      const { code, stdout, stderr } = await service.stop();
      assert.equal(code, 0, stderr);
      assert.deepEqual(JSON.parse(stdout.trimEnd().split("\n").at(-1)!), {
        type: "summary",
        data: { events: 1, lost: 0, syslog_dropped: 0 },
      });
    } finally {
      await server.close();
      Deno.removeSync(dir, { recursive: true });
    }
  },
);

kernelTest("trace.ts --syslog tcp:// without --allow-net names the flag in one line", async () => {
  const out = await runScript(["--syslog", "tcp://127.0.0.1:6601"]);
  assert.equal(out.code, 1);
  assert.equal(
    out.stderr,
    "trace: Deno refused a permission this tool needs: add --allow-net " +
      "(sudo deno run --allow-ffi --allow-env scripts/trace.ts)\n",
  );
});
