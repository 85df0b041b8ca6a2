// Copyright the deno_bpf authors. MIT license.
/**
 * The guest's run script, read as text: a checkout or a Deno under the
 * folders the guest covers with tmpfs (/tmp, /run, /root) is mounted after
 * that tmpfs, on a mount point made inside it. No VM is booted here.
 *
 * @module
 */

import assert from "node:assert/strict";
import { hiddenByTmpfs, runScript } from "./qemu.ts";

/** The script's lines, and the index of the first that contains each of `parts`. */
function order(script: string, parts: string[]): number[] {
  const lines = script.split("\n");
  return parts.map((part) => {
    const at = lines.findIndex((line) => line.includes(part));
    assert.notEqual(at, -1, `no line contains ${part}:\n${script}`);
    return at;
  });
}

const script = (checkout: string, keep: string[] = []) =>
  runScript(checkout, ["true"], {}, "nonce", 1000, keep);

Deno.test("hiddenByTmpfs names what is under /tmp, /run and /root, and nothing beside them", () => {
  for (const path of ["/tmp", "/tmp/x", "/root/a/b", "/run/user"]) assert.ok(hiddenByTmpfs(path));
  for (const path of ["/", "/tmpx", "/rootfs/x", "/work/x", "/usr/bin"]) {
    assert.ok(!hiddenByTmpfs(path), path);
  }
});

Deno.test("a checkout under /tmp or /root is mounted on a point made after the tmpfs", () => {
  for (const [dir, checkout] of [["/tmp", "/tmp/x y"], ["/root", "/root/it's"]]) {
    const text = script(checkout);
    const at = `/host'${checkout.replaceAll("'", `'\\''`)}'`;
    const [tmpfs, mkdir, mount, chroot] = order(text, [
      `mnt tmpfs ${dir} `,
      `mkdir -p ${at}`,
      `checkout ${at}`,
      "chroot /host",
    ]);
    assert.ok(tmpfs < mkdir && mkdir < mount && mount < chroot, text);
  }
});

Deno.test("a Deno under /root is kept aside before the tmpfs and put back after it", () => {
  const text = script("/work/x", ["/root/.deno/bin"]);
  const [aside, tmpfs, back, chroot] = order(text, [
    "aside '/root/.deno/bin'",
    "mnt tmpfs /root ",
    "back '/root/.deno/bin'",
    "chroot /host",
  ]);
  assert.ok(aside < tmpfs && tmpfs < back && back < chroot, text);
  assert.doesNotMatch(script("/work/x", ["/usr/bin"]), /^(aside|back) /m);
});
