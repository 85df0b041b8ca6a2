/**
 * The HTTP server behind `scripts/trace.ts --metrics`: HTTP/1.1 `GET` (and
 * `HEAD`) of one path on `Deno.listen`, with every bound a hostile client
 * could otherwise push on. `Deno.serve` keeps an idle connection open with
 * no deadline and about 15 KB of memory, and ends the process when accept
 * fails with EMFILE; this one cannot be held open, grown, or stopped:
 *
 * - at most {@linkcode MetricsServerOptions.maxConnections} connections at
 *   once (default {@linkcode DEFAULT_MAX_CONNECTIONS}); when full, a new one
 *   takes the place of the oldest that has not sent its request yet (or, if
 *   every one is being answered, is closed at once);
 * - the request's head must arrive within
 *   {@linkcode HEADER_TIMEOUT_MS}, in at most {@linkcode MAX_HEAD_BYTES};
 *   the whole exchange ends within {@linkcode EXCHANGE_TIMEOUT_MS}; every
 *   response closes its connection;
 * - accept errors (EMFILE, ENFILE: out of file descriptors) are survived:
 *   the oldest waiting connection is closed to free a descriptor, and
 *   accepting resumes after a pause (10 ms doubling to 1 s).
 *
 * Each connection turned away is reported through
 * {@linkcode MetricsServerOptions.onReject} with a reason: `full`, `timeout`,
 * `bad_request`, or the accept error's code (`EMFILE`). Nothing here rejects
 * a promise that nobody handles.
 *
 * @module
 */

/** The default bound on connections open at once. */
export const DEFAULT_MAX_CONNECTIONS = 64;

/** How long a client has to send its request's head, in ms. */
export const HEADER_TIMEOUT_MS = 5000;

/** How long a whole exchange may take, from accept to the last byte of the answer, in ms. */
export const EXCHANGE_TIMEOUT_MS = 10_000;

/** The longest request head read, in bytes; a longer one is answered 431. */
export const MAX_HEAD_BYTES = 8192;

/** How often deadlines are checked, in ms: each is kept to within this much. */
const SWEEP_MS = 100;

/** The room a request head is first read into, grown up to {@linkcode MAX_HEAD_BYTES}. */
const FIRST_READ_BYTES = 512;

/** The reasons {@linkcode MetricsServerOptions.onReject} reports, besides accept errors' codes. */
export const REJECT_REASONS = ["full", "timeout", "bad_request"] as const;

/** A request head as far as this server reads it. */
export interface RequestHead {
  method: string;
  /** The target's path, without its query. */
  path: string;
}

/** Where the head ends in `bytes` (the index after its blank line), or -1 if not yet. */
export function headEnd(bytes: Uint8Array): number {
  for (let i = bytes.indexOf(10); i >= 0; i = bytes.indexOf(10, i + 1)) {
    if (bytes[i + 1] === 10) return i + 2; // bare LF, as RFC 9112 lets servers accept
    if (bytes[i + 1] === 13 && bytes[i + 2] === 10) return i + 3;
  }
  return -1;
}

/**
 * Parses a request line (`GET /metrics?x HTTP/1.1`) from a complete head;
 * undefined if it is not HTTP/1.x. An absolute-form target gives its path.
 */
export function parseRequestHead(head: string): RequestHead | undefined {
  const m = /^([A-Z]+) (\S+) HTTP\/1\.[01]\r?\n/.exec(head);
  if (!m) return undefined;
  const target = m[2];
  let path = target.split("?")[0];
  if (/^https?:\/\//i.test(target)) {
    try {
      path = new URL(target).pathname;
    } catch {
      return undefined;
    }
  } else if (!path.startsWith("/")) return undefined;
  return { method: m[1], path };
}

/** What {@linkcode MetricsServer.listen} serves, and its bounds. */
export interface MetricsServerOptions {
  /** The address to bind: `0.0.0.0` for every IPv4 address, `::` for every address. */
  hostname: string;
  /** The TCP port; 0 picks a free one. */
  port: number;
  /** The one path served (e.g. `/metrics`); others get 404. */
  path: string;
  /** The body of each answer, made when asked. */
  body: () => string;
  /** The answer's `Content-Type`. */
  contentType: string;
  /** At most this many connections at once (default {@linkcode DEFAULT_MAX_CONNECTIONS}). */
  maxConnections?: number;
  /** How long a client has to send its head, in ms (default {@linkcode HEADER_TIMEOUT_MS}). */
  headerTimeoutMs?: number;
  /** How long an exchange may take, in ms (default {@linkcode EXCHANGE_TIMEOUT_MS}). */
  exchangeTimeoutMs?: number;
  /** Called once for each connection turned away, with why. */
  onReject?: (reason: string) => void;
}

/** One accepted connection. */
interface Client {
  conn: Deno.Conn;
  /** Whether its request's head has arrived (it is being answered). */
  answering: boolean;
  /** When it is closed if still open (ms since the epoch). */
  deadline: number;
  closed: boolean;
}

const encoder = new TextEncoder();
const latin1 = new TextDecoder("latin1");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Closes `conn`, which may be closed already. */
function closeQuietly(conn: Deno.Conn) {
  try {
    conn.close();
  } catch { /* already closed */ }
}

/**
 * A bounded HTTP/1.1 server of one text resource.
 *
 * @example Serve a counter on a free loopback port (needs --allow-net)
 * ```ts ignore
 * import { MetricsServer } from "./metrics_server.ts";
 *
 * let n = 0;
 * const server = MetricsServer.listen({
 *   hostname: "127.0.0.1",
 *   port: 0,
 *   path: "/metrics",
 *   body: () => `requests_total ${++n}\n`,
 *   contentType: "text/plain; version=0.0.4; charset=utf-8",
 * });
 * const { port } = server.addr;
 * console.log(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());
 * await server.close();
 * ```
 */
export class MetricsServer implements AsyncDisposable {
  readonly #listener: Deno.Listener<Deno.TcpConn, Deno.NetAddr>;
  readonly #options: MetricsServerOptions;
  readonly #max: number;
  readonly #headerMs: number;
  readonly #exchangeMs: number;
  readonly #onReject: (reason: string) => void;
  /** Open connections, oldest first. */
  readonly #clients = new Set<Client>();
  #accepting: Promise<void>;
  /** The sweep that closes connections past their deadline, while any is open. */
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #closed = false;

  private constructor(options: MetricsServerOptions) {
    this.#options = options;
    this.#max = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    if (!Number.isInteger(this.#max) || this.#max < 1) {
      throw new RangeError(`maxConnections must be a positive integer, got ${this.#max}`);
    }
    this.#headerMs = options.headerTimeoutMs ?? HEADER_TIMEOUT_MS;
    this.#exchangeMs = options.exchangeTimeoutMs ?? EXCHANGE_TIMEOUT_MS;
    const onReject = options.onReject ?? (() => {});
    this.#onReject = (reason) => {
      try {
        onReject(reason);
      } catch { /* a counter that throws must not stop the server */ }
    };
    this.#listener = Deno.listen({ hostname: options.hostname, port: options.port });
    this.#accepting = this.#acceptLoop();
  }

  /** Listens at once (a taken port throws here) and serves until {@linkcode close}. */
  static listen(options: MetricsServerOptions): MetricsServer {
    return new MetricsServer(options);
  }

  /** The address it listens on (the port chosen, with port 0). */
  get addr(): Deno.NetAddr {
    return this.#listener.addr;
  }

  /** Connections open now. */
  get connections(): number {
    return this.#clients.size;
  }

  /** Stops accepting, closes every connection, and waits for the accept loop. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#listener.close();
    } catch { /* already closed */ }
    for (const client of [...this.#clients]) this.#drop(client);
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
    await this.#accepting;
  }

  /** Calls {@linkcode close}, for `await using` declarations. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #acceptLoop(): Promise<void> {
    let pause = 0;
    while (!this.#closed) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#closed) return;
        const code = (error as { code?: unknown }).code;
        this.#onReject(typeof code === "string" ? code : "accept_error");
        // Out of descriptors: free one, so that the next accept can work.
        if (code === "EMFILE" || code === "ENFILE") this.#evictWaiting();
        pause = Math.min(1000, pause === 0 ? 10 : pause * 2);
        await sleep(pause);
        continue;
      }
      pause = 0;
      if (this.#closed) {
        closeQuietly(conn);
        return;
      }
      if (this.#clients.size >= this.#max && !this.#evictWaiting()) {
        this.#onReject("full");
        closeQuietly(conn);
        continue;
      }
      this.#serve(conn); // never rejects: nothing here can end the process
    }
  }

  /** Closes the oldest connection still waiting for its request; false if none is. */
  #evictWaiting(): boolean {
    for (const client of this.#clients) {
      if (client.answering) continue;
      this.#onReject("full");
      this.#drop(client);
      return true;
    }
    return false;
  }

  #drop(client: Client) {
    if (client.closed) return;
    client.closed = true;
    this.#clients.delete(client);
    closeQuietly(client.conn);
    if (this.#clients.size === 0) {
      clearInterval(this.#sweeper);
      this.#sweeper = undefined;
    }
  }

  /**
   * Closes every connection past its deadline. One sweep for all of them,
   * rather than a timer each: a flood of connections makes no timers.
   */
  #sweep() {
    const now = Date.now();
    for (const client of [...this.#clients]) {
      if (client.deadline > now) continue;
      this.#onReject("timeout");
      this.#drop(client);
    }
  }

  /** Reads one request and answers it; never throws. */
  async #serve(conn: Deno.Conn): Promise<void> {
    const started = Date.now();
    const client: Client = {
      conn,
      answering: false,
      deadline: started + this.#headerMs,
      closed: false,
    };
    try {
      this.#clients.add(client);
      this.#sweeper ??= setInterval(() => this.#sweep(), SWEEP_MS);
      const head = await this.#readHead(conn);
      if (head === null || client.closed) return; // it went away, or a deadline passed
      client.answering = true;
      client.deadline = started + this.#exchangeMs;
      const answer = this.#answer(head);
      for (let at = 0; at < answer.length && !client.closed;) {
        at += await conn.write(answer.subarray(at));
      }
    } catch {
      /* reset, or closed by a deadline */
    } finally {
      this.#drop(client);
    }
  }

  /** The answer to a request head. */
  #answer(head: string | "too_large"): Uint8Array {
    if (head === "too_large") return this.#error(431, "Request Header Fields Too Large");
    const request = parseRequestHead(head);
    if (!request) return this.#error(400, "Bad Request");
    if (request.method !== "GET" && request.method !== "HEAD") {
      return this.#error(405, "Method Not Allowed", "Allow: GET, HEAD\r\n");
    }
    const headOnly = request.method === "HEAD";
    const { path, contentType, body } = this.#options;
    if (request.path !== path) {
      return response(404, "Not Found", "text/plain; charset=utf-8", `try ${path}\n`, headOnly);
    }
    return response(200, "OK", contentType, body(), headOnly);
  }

  /** 400, 405 and 431 answers, each counted as a bad request. */
  #error(status: number, text: string, headers = ""): Uint8Array {
    this.#onReject("bad_request");
    return response(status, text, "text/plain; charset=utf-8", `${text}\n`, false, headers);
  }

  /** The request head as text; null if the connection ended first; "too_large" past the bound. */
  async #readHead(conn: Deno.Conn): Promise<string | null | "too_large"> {
    // Small at first, as a scrape's head is: thousands of connections that
    // send nothing must not each hold the largest head's room.
    let head = new Uint8Array(FIRST_READ_BYTES);
    let length = 0;
    for (;;) {
      if (length === head.length) {
        if (length === MAX_HEAD_BYTES) return "too_large";
        const more = new Uint8Array(Math.min(MAX_HEAD_BYTES, length * 2));
        more.set(head);
        head = more;
      }
      const n = await conn.read(head.subarray(length));
      if (n === null) return null;
      const from = Math.max(0, length - 3);
      length += n;
      const end = headEnd(head.subarray(from, length));
      if (end >= 0) return latin1.decode(head.subarray(0, from + end));
    }
  }
}

/** A whole HTTP/1.1 answer that closes its connection. */
function response(
  status: number,
  text: string,
  contentType: string,
  body: string,
  headOnly = false,
  headers = "",
): Uint8Array {
  const bytes = encoder.encode(body);
  const top = encoder.encode(
    `HTTP/1.1 ${status} ${text}\r\nContent-Type: ${contentType}\r\nContent-Length: ${bytes.length}\r\n` +
      `${headers}Connection: close\r\n\r\n`,
  );
  const out = new Uint8Array(top.length + (headOnly ? 0 : bytes.length));
  out.set(top);
  if (!headOnly) out.set(bytes, top.length);
  return out;
}
