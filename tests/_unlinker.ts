/**
 * A test child with a known pid and comm that deletes files on cue, so tests
 * can trace exactly what it did. Usage:
 *
 *   deno run -A tests/_unlinker.ts unlink:PATH unlinkat:PATH rmdir:PATH ...
 *
 * It names itself `dbpf_unlinker`, prints `ready`, waits for a line on stdin,
 * performs each operation with the raw libc call (unlink(2), unlinkat(2), or
 * unlinkat(2) with AT_REMOVEDIR), and prints one JSON array of results.
 *
 * @module
 */

const AT_FDCWD = -100;
const AT_REMOVEDIR = 0x200;
const PR_SET_NAME = 15;

const libc = Deno.dlopen("libc.so.6", {
  unlink: { parameters: ["buffer"], result: "i32" },
  unlinkat: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  prctl: { parameters: ["i32", "buffer", "u64", "u64", "u64"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
});
const cstr = (s: string) => new TextEncoder().encode(s + "\0");
const errno = () => new Deno.UnsafePointerView(libc.symbols.__errno_location()!).getInt32();

libc.symbols.prctl(PR_SET_NAME, cstr("dbpf_unlinker"), 0n, 0n, 0n);
console.log("ready");
for await (const _ of Deno.stdin.readable) break;

const results = Deno.args.map((arg) => {
  const [op, path] = [arg.slice(0, arg.indexOf(":")), arg.slice(arg.indexOf(":") + 1)];
  const ret = op === "unlink"
    ? libc.symbols.unlink(cstr(path))
    : libc.symbols.unlinkat(AT_FDCWD, cstr(path), op === "rmdir" ? AT_REMOVEDIR : 0);
  return { op, path, ret, errno: ret < 0 ? errno() : 0 };
});
console.log(JSON.stringify(results));
