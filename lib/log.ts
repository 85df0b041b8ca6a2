/**
 * libbpf's log. libbpf prints through one process-wide callback with a
 * `va_list`; we format it with libc's `vsnprintf` and either show it live or
 * keep its tail, so that a failed load can carry its verifier log.
 *
 * @module
 */

import { bpf, c } from "./_ffi.ts";

/** libbpf's log levels (`enum libbpf_print_level`). */
export type LogLevel = "warn" | "info" | "debug";
const LEVELS: LogLevel[] = ["warn", "info", "debug"];

/** Receives each formatted libbpf log message. */
export type LogHandler = (level: LogLevel, message: string) => void;

const TAIL_BYTES = 64 * 1024;
const line = new Uint8Array(64 * 1024);
const decoder = new TextDecoder();

let handler: LogHandler | undefined;
let tail: string[] = [];
let tailBytes = 0;
let callback:
  | Deno.UnsafeCallback<{
    readonly parameters: readonly ["i32", "pointer", "pointer"];
    readonly result: "i32";
  }>
  | undefined;

function onPrint(
  level: number,
  format: Deno.PointerValue,
  args: Deno.PointerValue,
): number {
  try {
    const n = c().vsnprintf(line, BigInt(line.length), format, args);
    if (n <= 0) return 0;
    const text = decoder.decode(line.subarray(0, Math.min(n, line.length - 1)));
    const name = LEVELS[level] ?? "debug";
    if (name !== "debug") keep(text);
    handler?.(name, text);
  } catch {
    // A throw cannot cross back into C; losing one log line is the lesser harm.
  }
  return 0;
}

function keep(text: string) {
  tail.push(text);
  tailBytes += text.length;
  while (tailBytes > TAIL_BYTES && tail.length > 1) {
    tailBytes -= tail.shift()!.length;
  }
}

/**
 * Installs the log callback (once per process) and sets who sees the log live:
 * a handler, or nobody. The tail is kept either way.
 */
export function setLogHandler(fn?: LogHandler): void {
  handler = fn;
  installLog();
}

/**
 * Routes libbpf's log through deno_bpf (kept quietly unless a handler is
 * set) instead of libbpf's default of printing to stderr. Idempotent.
 */
export function installLog(): void {
  if (callback) return;
  callback = new Deno.UnsafeCallback(
    { parameters: ["i32", "pointer", "pointer"], result: "i32" } as const,
    onPrint,
  );
  // libbpf holds this pointer for the life of the process: never closed.
  bpf().libbpf_set_print(callback.pointer);
}

/** A handler that writes every message, debug included, to stderr. */
export const logToStderr: LogHandler = (_level, message) => {
  Deno.stderr.writeSync(new TextEncoder().encode(message));
};

/** Returns the log kept since the last call, and starts a new one. */
export function takeLog(): string {
  const text = tail.join("");
  tail = [];
  tailBytes = 0;
  return text;
}
