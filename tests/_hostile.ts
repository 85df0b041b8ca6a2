/**
 * A test child that deletes files with the largest events a local user can
 * make: paths of 4,095 bytes (the most the kernel takes), so that every
 * event's JSON is as long as it gets. Usage:
 *
 *   deno run -A tests/_hostile.ts KIND DIR COUNT RATE [ARG...]
 *
 * KIND `controls`: every byte of the path below DIR is \x01, which JSON
 * writes as `\u0001` (six bytes for one). KIND `notutf8`: the path is `a`s
 * with one 0xff byte near the end of the file's name, so the event carries
 * `path_b64` too. Either way the file's name ends in {@linkcode HOSTILE_END},
 * so a test can tell which end of a cut path was kept. The directories are made under DIR (the caller removes
 * DIR); extra ARGs only lengthen the command line the tracer reports (pass
 * control characters to make `argv` hostile as well).
 *
 * It names itself `dbpf_hostile`, prints `ready` and the path's length,
 * waits for a line on stdin, then creates and unlinks the one file COUNT
 * times at RATE per second (openat(2) and unlinkat(2) on its directory's
 * fd, so the name passed is at most 255 bytes and the kernel resolves the
 * rest), and prints `{"unlinks":N}`, N the unlink calls
 * that succeeded.
 *
 * @module
 */

import { readUntil } from "./_helpers.ts";

/** The comm of the child. */
export const HOSTILE_COMM = "dbpf_hostile";

/** The last bytes of the file's name. */
export const HOSTILE_END = ".end";

/** The path's length in bytes: PATH_MAX (4096) less its NUL. */
export const HOSTILE_PATH_BYTES = 4095;

/** A hostile child, ready: its pid, and the go that starts its unlinks. */
export interface Hostile {
  pid: number;
  /** The path's length in bytes, as the child reported it. */
  pathBytes: number;
  /** Starts the unlinks; resolves with how many succeeded, once the child exits. */
  go(): Promise<number>;
}

/**
 * One argument of \x01 bytes that makes the command line, NULs included,
 * `bytes` long: the most the tracer reports without cutting it is 256.
 */
function controlsToFill(bytes: number, argv: string[]): string {
  const used = [Deno.execPath(), ...argv].reduce(
    (n, a) => n + new TextEncoder().encode(a).length + 1,
    0,
  );
  return "\x01".repeat(Math.max(1, bytes - used - 1));
}

/**
 * Starts this module as a child (see the module doc for the arguments) and
 * waits until it is ready. `args` as a number fills the command line to that
 * many bytes with one argument of controls.
 */
export async function spawnHostile(
  kind: "controls" | "notutf8",
  dir: string,
  count: number,
  rate: number,
  args: string[] | number = [],
): Promise<Hostile> {
  const argv = ["run", "-A", import.meta.filename!, kind, dir, String(count), String(rate)];
  const child = new Deno.Command(Deno.execPath(), {
    args: [...argv, ...(typeof args === "number" ? [controlsToFill(args, argv)] : args)],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = await readUntil(lines, "\n");
  if (!text.includes("\n")) throw new Error("the hostile child exited before it was ready");
  const pathBytes = Number(/^ready (\d+)$/m.exec(text)?.[1]);
  return {
    pid: child.pid,
    pathBytes,
    async go() {
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode("go\n"));
      await writer.close();
      text = await readUntil(lines, undefined, text);
      const status = await child.status;
      if (!status.success) throw new Error(`the hostile child failed: ${text}`);
      return JSON.parse(text.trim().split("\n").at(-1)!).unlinks;
    },
  };
}

if (import.meta.main) {
  const [kind, dir, count, rate] = Deno.args;
  const libc = Deno.dlopen("libc.so.6", {
    mkdir: { parameters: ["buffer", "u32"], result: "i32" },
    open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
    openat: { parameters: ["i32", "buffer", "i32", "u32"], result: "i32" },
    close: { parameters: ["i32"], result: "i32" },
    unlinkat: { parameters: ["i32", "buffer", "i32"], result: "i32" },
    prctl: { parameters: ["i32", "buffer", "u64", "u64", "u64"], result: "i32" },
  });
  const { mkdir, open, openat, close, unlinkat, prctl } = libc.symbols;
  const [O_WRONLY, O_CREAT, O_DIRECTORY] = [0o1, 0o100, 0o200000];
  const PR_SET_NAME = 15;
  prctl(PR_SET_NAME, new TextEncoder().encode(HOSTILE_COMM + "\0"), 0n, 0n, 0n);

  const fill = kind === "controls" ? 0x01 : 0x61;
  let path = [...new TextEncoder().encode(dir)];
  // Directories of 250 fill bytes until the file's name fits in 255.
  while (HOSTILE_PATH_BYTES - path.length - 1 > 255) {
    path = [...path, 0x2f, ...new Array(250).fill(fill)];
    if (mkdir(new Uint8Array([...path, 0]), 0o755) !== 0) throw new Error("mkdir failed");
  }
  const end = [...new TextEncoder().encode(HOSTILE_END)];
  const name = [...new Array(HOSTILE_PATH_BYTES - path.length - 1 - end.length).fill(fill), ...end];
  if (kind === "notutf8") name[name.length - end.length - 1] = 0xff;
  // The file is named relative to its directory's fd: the kernel then
  // resolves the directory, so the path is whole on every attach method.
  const dirFd = open(new Uint8Array([...path, 0]), O_DIRECTORY, 0);
  if (dirFd < 0) throw new Error("open of the directory failed");
  const file = new Uint8Array([...name, 0]);

  console.log(`ready ${path.length + 1 + name.length}`);
  for await (const _ of Deno.stdin.readable) break;
  const total = Number(count);
  const perTick = Math.max(1, Math.round(Number(rate) / 100));
  const start = performance.now();
  let unlinks = 0;
  for (let done = 0; done < total;) {
    for (let i = 0; i < perTick && done < total; i++, done++) {
      const fd = openat(dirFd, file, O_WRONLY | O_CREAT, 0o644);
      if (fd >= 0) close(fd);
      if (unlinkat(dirFd, file, 0) === 0) unlinks++;
    }
    // Evenly spaced: tick k starts at k * 10 ms.
    const due = start + (done / perTick) * 10 - performance.now();
    if (due > 0) await new Promise((r) => setTimeout(r, due));
  }
  console.log(JSON.stringify({ unlinks }));
}
