/**
 * A test child that unlinks under many command names: for each i below N it
 * names itself `dbpf_c<i>` (prctl PR_SET_NAME) and unlinks a file that does
 * not exist (ENOENT) in DIR. Usage:
 *
 *   deno run -A tests/_comm_storm.ts N DIR
 *
 * It prints `ready`, waits for a line on stdin, does its N unlinks and prints
 * `done N`.
 *
 * @module
 */

const PR_SET_NAME = 15;
const libc = Deno.dlopen("libc.so.6", {
  unlink: { parameters: ["buffer"], result: "i32" },
  prctl: { parameters: ["i32", "buffer", "u64", "u64", "u64"], result: "i32" },
});
const cstr = (s: string) => new TextEncoder().encode(s + "\0");
const n = Number(Deno.args[0]);
const missing = cstr(`${Deno.args[1]}/missing`);

console.log("ready");
for await (const _ of Deno.stdin.readable) break;
for (let i = 0; i < n; i++) {
  libc.symbols.prctl(PR_SET_NAME, cstr(`dbpf_c${i}`), 0n, 0n, 0n);
  libc.symbols.unlink(missing);
}
console.log(`done ${n}`);
