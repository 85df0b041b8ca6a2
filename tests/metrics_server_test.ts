/**
 * The metrics endpoint's HTTP server on loopback, against raw TCP clients:
 * what it answers, and the bounds a hostile client meets (connections at
 * once, the head's deadline and size), each refusal counted.
 */

import assert from "node:assert/strict";
import {
  headEnd,
  MAX_HEAD_BYTES,
  MetricsServer,
  type MetricsServerOptions,
  parseRequestHead,
} from "../lib/unlink/metrics_server.ts";
import { waitFor } from "./_servers.ts";

const text = new TextEncoder();

/** A server of `hello N` on a free loopback port, and the reasons it turned connections away. */
function serve(options: Partial<MetricsServerOptions> = {}) {
  const rejected: string[] = [];
  let n = 0;
  const server = MetricsServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    path: "/metrics",
    body: () => `hello ${++n}\n`,
    contentType: "text/plain; version=0.0.4; charset=utf-8",
    onReject: (reason) => rejected.push(reason),
    ...options,
  });
  return { server, rejected, port: server.addr.port };
}

/** Sends `request` on a fresh connection and reads until the server closes it. */
async function exchange(port: number, request: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(text.encode(request));
  return await new Response(conn.readable).text();
}

/** Whether the server closed `conn` (a read ends), within `ms`. */
async function closedWithin(conn: Deno.Conn, ms: number): Promise<boolean> {
  const timeout = new Promise<"open">((r) => setTimeout(() => r("open"), ms));
  const read = conn.read(new Uint8Array(16)).then(() => "closed" as const, () => "closed" as const);
  const result = await Promise.race([read, timeout]);
  return result === "closed";
}

Deno.test("a request head ends at its blank line, CRLF or bare LF", () => {
  assert.equal(headEnd(text.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\nrest")), 27);
  assert.equal(headEnd(text.encode("GET / HTTP/1.1\nHost: x\n\n")), 24);
  assert.equal(headEnd(text.encode("GET / HTTP/1.1\r\nHost: x\r\n")), -1);
});

Deno.test("a request line gives its method and path, without the query", () => {
  assert.deepEqual(parseRequestHead("GET /metrics?x=1 HTTP/1.1\r\n\r\n"), {
    method: "GET",
    path: "/metrics",
  });
  assert.deepEqual(parseRequestHead("HEAD http://h:1/metrics HTTP/1.0\r\n\r\n"), {
    method: "HEAD",
    path: "/metrics",
  });
  for (
    const bad of ["GET /metrics\r\n\r\n", "GET metrics HTTP/1.1\r\n\r\n", "get / HTTP/1.1\n\n"]
  ) {
    assert.equal(parseRequestHead(bad), undefined, bad);
  }
});

Deno.test("the server answers GET and HEAD of its path, 404 elsewhere, and closes each connection", async () => {
  const { server, rejected, port } = serve();
  try {
    const ok = await exchange(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.match(ok, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(ok, /\r\nContent-Type: text\/plain; version=0\.0\.4; charset=utf-8\r\n/);
    assert.match(ok, /\r\nContent-Length: 8\r\n/);
    assert.match(ok, /\r\nConnection: close\r\n\r\nhello 1\n$/);
    const head = await exchange(port, "HEAD /metrics HTTP/1.1\r\n\r\n");
    assert.match(head, /Content-Length: 8\r\nConnection: close\r\n\r\n$/);
    assert.match(await exchange(port, "GET / HTTP/1.1\r\n\r\n"), /^HTTP\/1\.1 404 Not Found\r\n/);
    const post = await exchange(port, "POST /metrics HTTP/1.1\r\n\r\n");
    assert.match(post, /^HTTP\/1\.1 405 Method Not Allowed\r\n(.*\r\n)*Allow: GET, HEAD\r\n/);
    assert.match(await exchange(port, "hello\r\n\r\n"), /^HTTP\/1\.1 400 Bad Request\r\n/);
    const big = `GET /metrics HTTP/1.1\r\nX: ${"x".repeat(MAX_HEAD_BYTES)}\r\n\r\n`;
    assert.match(await exchange(port, big), /^HTTP\/1\.1 431 /);
    assert.deepEqual(rejected, ["bad_request", "bad_request", "bad_request"]);
    // A real HTTP client agrees.
    const response = await fetch(`http://127.0.0.1:${port}/metrics`);
    assert.equal(await response.text(), "hello 3\n");
    assert.equal(server.connections, 0);
  } finally {
    await server.close();
  }
});

Deno.test("a connection that sends no whole head within the deadline is closed and counted", async () => {
  const { server, rejected, port } = serve({ headerTimeoutMs: 300 });
  const idle = await Deno.connect({ hostname: "127.0.0.1", port });
  const half = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await half.write(text.encode("GET /metrics HTTP/1.1\r\nHost: x\r\n"));
    assert.ok(await closedWithin(idle, 2000), "the idle connection was closed");
    assert.ok(await closedWithin(half, 2000), "the half-sent one too");
    assert.deepEqual(rejected, ["timeout", "timeout"]);
    assert.equal(server.connections, 0);
  } finally {
    idle.close();
    half.close();
    await server.close();
  }
});

Deno.test("past maxConnections a new connection replaces the oldest still waiting, so a scrape gets through", async () => {
  const { server, rejected, port } = serve({ maxConnections: 4 });
  const held: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 50; i++) held.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    await waitFor("50 accepted", 5000, () => rejected.length === 46 ? true : undefined);
    assert.equal(server.connections, 4);
    assert.ok(rejected.every((r) => r === "full"));
    assert.ok(await closedWithin(held[0], 1000), "the oldest was closed");
    assert.ok(!(await closedWithin(held[49], 200)), "the newest is still open");
    const response = await fetch(`http://127.0.0.1:${port}/metrics`);
    assert.equal(response.status, 200);
    assert.equal(await response.text(), "hello 1\n");
  } finally {
    for (const conn of held) conn.close();
    await server.close();
  }
});

Deno.test("close stops accepting and closes every connection", async () => {
  const { server, port } = serve();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await waitFor("accepted", 5000, () => server.connections === 1 ? true : undefined);
  await server.close();
  assert.ok(await closedWithin(conn, 1000));
  conn.close();
  await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port }));
  await server.close(); // idempotent
});
