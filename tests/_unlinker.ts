/**
 * A test child with a known pid and comm that deletes files on cue, so tests
 * can trace exactly what it did. Usage:
 *
 *   deno run -A tests/_unlinker.ts unlink:PATH unlinkat:PATH rmdir:PATH touch:PATH ...
 *     unlinkatdir:DIR:NAME unlinkatfd:FD:NAME chdir:PATH chroot:PATH mkdir:PATH rmdir2:PATH
 *     rename:OLD:NEW
 *
 * It names itself `dbpf_unlinker`, prints `ready`, waits for a line on stdin,
 * performs each operation with the raw libc call (unlink(2), unlinkat(2),
 * unlinkat(2) with AT_REMOVEDIR, or for `touch` creat(2), which makes an
 * empty file), and prints one JSON array of results. `rmdir2` calls libc's
 * rmdir() (rmdir(2) on x86_64), `rename` calls rename(2) (OLD holds no
 * colon). `unlinkatdir` opens DIR and calls unlinkat(2) with that fd;
 * `unlinkatfd` calls it with the number FD, open or not; `chdir` and `chroot` move the
 * process, and `mkdir` makes a directory (for tests of how paths resolve). An op ending in
 * `hex` takes the path as hex bytes (`unlinkhex:2f746d702fff`), so it can
 * name a file whose name is not UTF-8, which a command-line argument cannot.
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
  creat: { parameters: ["buffer", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  chdir: { parameters: ["buffer"], result: "i32" },
  chroot: { parameters: ["buffer"], result: "i32" },
  mkdir: { parameters: ["buffer", "u32"], result: "i32" },
  rmdir: { parameters: ["buffer"], result: "i32" },
  rename: { parameters: ["buffer", "buffer"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
});
const cstr = (s: string) => new TextEncoder().encode(s + "\0");
const hexCstr = (hex: string) =>
  new Uint8Array([...(hex.match(/../g) ?? []).map((b) => parseInt(b, 16)), 0]);
const errno = () => new Deno.UnsafePointerView(libc.symbols.__errno_location()!).getInt32();

libc.symbols.prctl(PR_SET_NAME, cstr("dbpf_unlinker"), 0n, 0n, 0n);
console.log("ready");
for await (const _ of Deno.stdin.readable) break;

function run(op: string, name: Uint8Array): number {
  const { unlink, unlinkat, creat, close, open, chdir, chroot, mkdir, rmdir, rename } =
    libc.symbols;
  if (op === "unlink") return unlink(name);
  if (op === "rmdir2") return rmdir(name);
  if (op === "rename") {
    const text = new TextDecoder().decode(name.subarray(0, -1));
    const colon = text.indexOf(":");
    return rename(cstr(text.slice(0, colon)), cstr(text.slice(colon + 1)));
  }
  if (op === "mkdir") return mkdir(name, 0o755);
  if (op === "chdir") return chdir(name);
  if (op === "chroot") return chroot(name);
  if (op === "unlinkatfd") {
    const text = new TextDecoder().decode(name.subarray(0, -1));
    return unlinkat(
      Number(text.slice(0, text.indexOf(":"))),
      cstr(text.slice(text.indexOf(":") + 1)),
      0,
    );
  }
  if (op === "unlinkatdir") {
    const text = new TextDecoder().decode(name.subarray(0, -1));
    const fd = open(cstr(text.slice(0, text.indexOf(":"))), 0, 0);
    if (fd < 0) return fd;
    const ret = unlinkat(fd, cstr(text.slice(text.indexOf(":") + 1)), 0);
    close(fd);
    return ret;
  }
  if (op === "touch") {
    const fd = creat(name, 0o644);
    return fd < 0 ? fd : close(fd);
  }
  return unlinkat(AT_FDCWD, name, op === "rmdir" ? AT_REMOVEDIR : 0);
}

const results = Deno.args.map((arg) => {
  const [op, path] = [arg.slice(0, arg.indexOf(":")), arg.slice(arg.indexOf(":") + 1)];
  const hex = op.endsWith("hex");
  const ret = run(hex ? op.slice(0, -3) : op, hex ? hexCstr(path) : cstr(path));
  return { op, path, ret, errno: ret < 0 ? errno() : 0 };
});
console.log(JSON.stringify(results));
