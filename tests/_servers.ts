/**
 * The real servers the service tests talk to, started by the tests on
 * loopback with their own config and data under a temp dir (no systemd):
 * Debian's rsyslog (UDP, TCP and a Unix socket in, one file out) and
 * Prometheus (scraping trace.ts every second). Plus trace.ts itself run as
 * such a service, with the least permissions its outputs need.
 *
 * @module
 */

import { readUntil, ROOT, TEST_MODE } from "./_helpers.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A TCP port nobody listens on now. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** Polls `check` every 100 ms until it returns a value other than undefined, or throws after `ms`. */
export async function waitFor<T>(
  what: string,
  ms: number,
  check: () => Promise<T | undefined> | T | undefined,
): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms (${last ?? ""})`);
    await sleep(100);
  }
}

/** A line of rsyslog's output file: the header fields and the JSON message. */
export interface SyslogLine {
  msgid: string;
  app: string;
  procid: string;
  pri: number;
  /** The RFC 5424 `meta` sequenceId: repeats after a reconnect share it. */
  seq: number;
  // deno-lint-ignore no-explicit-any
  json: any;
}

/** rsyslogd under the test's control. */
export interface Rsyslog {
  udpPort: number;
  tcpPort: number;
  /** Its Unix datagram socket, as /dev/log would be. */
  socket: string;
  /** Every line written so far. */
  lines(): SyslogLine[];
  /** SIGTERM, and waits for it to exit. */
  stop(): Promise<void>;
  /** Starts it (again) and waits until every input listens. */
  start(): Promise<void>;
  /** Stops it and removes its directory. */
  close(): Promise<void>;
}

/** Starts rsyslogd: UDP, TCP and a Unix socket on loopback, each message to one file. */
export async function startRsyslog(): Promise<Rsyslog> {
  const dir = Deno.makeTempDirSync({ prefix: "dbpf_rsyslog_" });
  const [udpPort, tcpPort] = [freePort(), freePort()];
  const socket = `${dir}/log`;
  const file = `${dir}/messages`;
  Deno.mkdirSync(`${dir}/work`);
  Deno.writeTextFileSync(
    `${dir}/rsyslog.conf`,
    `global(workDirectory="${dir}/work")
module(load="imudp")
module(load="imtcp")
module(load="imuxsock" SysSock.Use="off")
template(name="dbpf" type="string" string="%msgid% %app-name% %procid% %pri% %structured-data% %msg%\\n")
ruleset(name="dbpf") { action(type="omfile" file="${file}" template="dbpf") }
input(type="imudp" address="127.0.0.1" port="${udpPort}" ruleset="dbpf")
input(type="imtcp" address="127.0.0.1" port="${tcpPort}" ruleset="dbpf")
input(type="imuxsock" Socket="${socket}" UseSpecialParser="off" ruleset="dbpf")
`,
  );
  let child: Deno.ChildProcess | undefined;
  const server: Rsyslog = {
    udpPort,
    tcpPort,
    socket,
    lines() {
      let text = "";
      try {
        text = Deno.readTextFileSync(file);
      } catch { /* nothing written yet */ }
      return text.split("\n").filter(Boolean).map((line) => {
        const m = /^(\S+) (\S+) (\S+) (\d+) (-|\[[^\]]*\]) (.*)$/.exec(line);
        if (!m) throw new Error(`not a line of the test's template: ${line}`);
        const [, msgid, app, procid, pri, sd, msg] = m;
        const seq = Number(/^\[meta sequenceId="(\d+)"\]$/.exec(sd)?.[1]);
        return { msgid, app, procid, pri: Number(pri), seq, json: JSON.parse(msg) };
      });
    },
    async stop() {
      if (!child) return;
      child.kill("SIGTERM");
      await child.status;
      child = undefined;
    },
    async start() {
      child = new Deno.Command("rsyslogd", {
        args: ["-n", "-f", `${dir}/rsyslog.conf`, "-i", `${dir}/pid`],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      await waitFor("rsyslogd listening on TCP", 15_000, async () => {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: tcpPort });
        conn.close();
        return Deno.statSync(socket).isSocket ? true : undefined;
      });
    },
    async close() {
      await server.stop();
      Deno.removeSync(dir, { recursive: true });
    },
  };
  await server.start();
  return server;
}

/** Prometheus scraping `targets` every second. */
export interface Prometheus {
  /** Runs an instant PromQL query; returns its vector. */
  query(q: string): Promise<{ metric: Record<string, string>; value: number }[]>;
  close(): Promise<void>;
}

/** Starts Debian's prometheus on a loopback port, scraping `targets` (HOST:PORT) each second. */
export async function startPrometheus(targets: string[]): Promise<Prometheus> {
  const dir = Deno.makeTempDirSync({ prefix: "dbpf_prometheus_" });
  const port = freePort();
  Deno.writeTextFileSync(
    `${dir}/prometheus.yml`,
    `global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: deno_bpf
    static_configs:
      - targets: [${targets.map((t) => `"${t}"`).join(", ")}]
`,
  );
  const child = new Deno.Command("prometheus", {
    args: [
      `--config.file=${dir}/prometheus.yml`,
      `--storage.tsdb.path=${dir}/data`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const base = `http://127.0.0.1:${port}`;
  await waitFor("prometheus ready", 30_000, async () => {
    const r = await fetch(`${base}/-/ready`);
    await r.body?.cancel();
    return r.ok ? true : undefined;
  });
  return {
    async query(q) {
      const r = await fetch(`${base}/api/v1/query?query=${encodeURIComponent(q)}`);
      const body = await r.json();
      if (body.status !== "success") throw new Error(`query ${q}: ${JSON.stringify(body)}`);
      return body.data.result.map((
        s: { metric: Record<string, string>; value: [number, string] },
      ) => ({
        metric: s.metric,
        value: Number(s.value[1]),
      }));
    },
    async close() {
      child.kill("SIGTERM");
      await child.status;
      Deno.removeSync(dir, { recursive: true });
    },
  };
}

/** trace.ts running as a service. */
export interface Service {
  pid: number;
  /** stderr so far. */
  stderr(): string;
  /** `HOST:PORT` of its metrics, from its state line (with `--metrics 127.0.0.1:0`). */
  metricsAddr: string | undefined;
  /** SIGINT; resolves with its exit code and all it printed. */
  stop(): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Sends a signal. */
  kill(signal: Deno.Signal): void;
}

/** Starts scripts/trace.ts with `perms` and `args`; resolves once it has attached. */
export async function startService(perms: string[], args: string[]): Promise<Service> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...perms, `${ROOT}scripts/trace.ts`, "--mode", TEST_MODE, ...args],
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = new Response(child.stdout).text();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let err = await readUntil(reader, "attached via");
  if (!err.includes("attached via")) {
    await child.status;
    throw new Error(`trace.ts did not attach: ${err}`);
  }
  const rest = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      err += value;
    }
  })();
  return {
    pid: child.pid,
    stderr: () => err,
    metricsAddr: /metrics on http:\/\/(\S+)\/metrics/.exec(err)?.[1],
    kill: (signal) => child.kill(signal),
    async stop() {
      child.kill("SIGINT");
      const { code } = await child.status;
      await rest;
      return { code, stdout: await stdout, stderr: err };
    },
  };
}
