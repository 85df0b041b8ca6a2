/**
 * A test child that deletes files with the largest events a local user can
 * make: paths of 4,095 bytes (the most the kernel takes), so that every
 * event's JSON is as long as it gets. Usage:
 *
 *   deno run -A tests/_hostile.ts KIND DIR COUNT RATE [ARG...]
 *
 * KIND `controls`: every byte of the path below DIR is \x01, which JSON
 * writes as `\u0001` (six bytes for one). KIND `notutf8`: the path is `a`s
 * with one 0xff byte at the end of the file's name, so the event carries
 * `path_b64` too. The directories are made under DIR (the caller removes
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

/** The comm of the child. */
export const HOSTILE_COMM = "dbpf_hostile";

/** The path's length in bytes: PATH_MAX (4096) less its NUL. */
export const HOSTILE_PATH_BYTES = 4095;

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
  const name = new Array(HOSTILE_PATH_BYTES - path.length - 1).fill(fill);
  if (kind === "notutf8") name[name.length - 1] = 0xff;
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
