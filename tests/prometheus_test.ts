/**
 * trace.ts --metrics scraped by Debian's prometheus, started by the test on
 * loopback with a 1 s scrape interval: exact counters for known unlinks, the
 * attach method, the latency histogram's count, and a bounded comm label
 * under a storm of 10,000 names.
 */

import assert from "node:assert/strict";
import { EXPECTED_METHOD, kernelTest, ROOT, scratch, spawnUnlinker } from "./_helpers.ts";
import { PERMS, runScript } from "./_trace.ts";
import { startPrometheus, startService, waitFor } from "./_servers.ts";

/** The least permissions of trace.ts --metrics on a loopback port. */
const METRICS_PERMS = [...PERMS, "--allow-net=127.0.0.1"];

kernelTest(
  "prometheus scrapes exact unlink counts by result and comm, the attach method and the latency count",
  async () => {
    const dir = scratch(["a", "b", "c"]);
    const ops = ["a", "missing1", "b", "c", "missing2"].map((f) => `unlink:${dir}/${f}`);
    const unlinker = await spawnUnlinker(ops);
    const service = await startService(METRICS_PERMS, [
      "--quiet",
      "-p",
      String(unlinker.pid),
      "--path",
      dir,
      "--metrics",
      "127.0.0.1:0",
    ]);
    const prometheus = await startPrometheus([service.metricsAddr!]);
    try {
      const results = await unlinker.go();
      assert.deepEqual(results.map((r) => r.ret < 0 ? r.errno : 0), [0, 2, 0, 0, 2]);
      const series = await waitFor("both counters scraped", 20_000, async () => {
        const v = await prometheus.query('deno_bpf_unlinks_total{comm="dbpf_unlinker"}');
        return v.length === 2 && v.reduce((n, s) => n + s.value, 0) === 5 ? v : undefined;
      });
      const byResult = Object.fromEntries(
        series.map((s) => [`${s.metric.op} ${s.metric.result} ${s.metric.comm}`, s.value]),
      );
      assert.deepEqual(byResult, {
        "unlink ok dbpf_unlinker": 3,
        "unlink ENOENT dbpf_unlinker": 2,
      });
      const [info] = await prometheus.query("deno_bpf_attach_info");
      const method = /attached via (\S+)/.exec(service.stderr())![1];
      assert.equal(info.metric.method, method);
      if (EXPECTED_METHOD) assert.equal(method, EXPECTED_METHOD);
      assert.equal(info.value, 1);
      const [count] = await prometheus.query('deno_bpf_unlink_latency_seconds_count{op="unlink"}');
      assert.equal(count.value, 5);
      const [inf] = await prometheus.query(
        'deno_bpf_unlink_latency_seconds_bucket{op="unlink",le="+Inf"}',
      );
      assert.equal(inf.value, 5);
      const [lost] = await prometheus.query("deno_bpf_lost_events_total");
      assert.equal(lost.value, 0);
      const [size] = await prometheus.query("deno_bpf_ring_buffer_size_bytes");
      assert.equal(size.value, 2 * 1024 * 1024);
      const { code, stdout } = await service.stop();
      assert.equal(code, 0);
      assert.equal(stdout, "");
    } finally {
      await prometheus.close();
      Deno.removeSync(dir, { recursive: true });
    }
  },
);

kernelTest(
  "a storm of 10,000 distinct comms keeps the comm label at its bound, the rest counted as other",
  async () => {
    const dir = scratch([]);
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${ROOT}tests/_comm_storm.ts`, "10000", dir],
      stdin: "piped",
      stdout: "piped",
    }).spawn();
    const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    assert.equal((await lines.read()).value?.trim(), "ready");
    const service = await startService(METRICS_PERMS, [
      "--quiet",
      "-p",
      String(child.pid),
      "--path",
      dir,
      "--metrics",
      "127.0.0.1:0",
      "--metrics-comms",
      "50",
      "--ringbuf-size",
      "16M",
    ]);
    const prometheus = await startPrometheus([service.metricsAddr!]);
    try {
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode("go\n"));
      await writer.close();
      assert.equal((await lines.read()).value?.trim(), "done 10000");
      await child.status;
      await waitFor("all 10,000 scraped", 20_000, async () => {
        const [sum] = await prometheus.query("sum(deno_bpf_unlinks_total)");
        return sum?.value === 10_000 ? true : undefined;
      });
      const [comms] = await prometheus.query("count(count by (comm) (deno_bpf_unlinks_total))");
      assert.equal(comms.value, 51, "50 comms of their own, and other");
      const [series] = await prometheus.query("count(deno_bpf_unlinks_total)");
      assert.equal(series.value, 51);
      const [other] = await prometheus.query('deno_bpf_unlinks_total{comm="other"}');
      assert.deepEqual(other.metric.result, "ENOENT");
      assert.equal(other.value, 10_000 - 50);
      const [labels] = await prometheus.query("deno_bpf_comm_labels");
      assert.equal(labels.value, 51);
      const [lost] = await prometheus.query("deno_bpf_lost_events_total");
      assert.equal(lost.value, 0);
      const { code } = await service.stop();
      assert.equal(code, 0);
    } finally {
      await prometheus.close();
      Deno.removeSync(dir, { recursive: true });
    }
  },
);

kernelTest("trace.ts --metrics without --allow-net names the flag in one line", async () => {
  const out = await runScript(["--metrics", "127.0.0.1:0"]);
  assert.equal(out.code, 1);
  assert.equal(
    out.stderr,
    "trace: Deno refused a permission this tool needs: add --allow-net " +
      "(sudo deno run --allow-ffi --allow-env scripts/trace.ts)\n",
  );
  assert.equal(out.stdout, "");
});
