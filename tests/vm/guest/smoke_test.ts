// Copyright the deno_bpf authors. MIT license.
// Placeholder guest test: tests/vm/vm_test.ts runs tests/vm/guest/ inside the
// VM. The guest suite's owner replaces this file.
import assert from "node:assert/strict";

const kernel = Deno.env.get("DENO_BPF_VM_KERNEL");

Deno.test({
  name: "The VM runs the requested Debian kernel, with BTF",
  ignore: kernel === undefined,
  fn() {
    const version = Deno.readTextFileSync("/proc/version");
    assert.ok(
      version.startsWith(`Linux version ${kernel}.`),
      `expected kernel ${kernel}, got: ${version.trim()}`,
    );
    assert.ok(Deno.statSync("/sys/kernel/btf/vmlinux").isFile);
  },
});
