/**
 * Checks, and as root installs, what the test suite needs from Debian:
 *
 *   sudo deno run -A tests/setup.ts      # part of `deno task test`
 *
 * With DENO_BPF_NO_INSTALL=1 it only reports what is missing.
 *
 * @module
 */

/** Debian packages the suite uses, and the file that shows each is there. */
const NEEDS: [pkg: string, probe: string, why: string][] = [
  ["libbpf1", "/usr/lib/x86_64-linux-gnu/libbpf.so.1", "the library under test"],
  [
    "libbpf-dev",
    "/usr/include/bpf/bpf_helpers.h",
    "rebuilding bpf/*.bpf.o to check the committed copies",
  ],
  ["clang", "/usr/bin/clang", "rebuilding bpf/*.bpf.o"],
  ["llvm", "/usr/bin/llvm-strip", "stripping DWARF from the rebuilt objects"],
  ["bpftool", "/usr/sbin/bpftool", "checking that no program outlives the tracer"],
  ["qemu-system-x86", "/usr/bin/qemu-system-x86_64", "the fentry tests on real Debian kernels"],
  ["busybox-static", "/bin/busybox", "the VM's initramfs"],
  ["qemu-system-arm", "/usr/bin/qemu-system-aarch64", "the arm64 kernel VMs"],
  ["cpio", "/usr/bin/cpio", "packing the VM's initramfs"],
  ["kmod", "/usr/sbin/depmod", "ordering the VM's kernel modules"],
  ["xz-utils", "/usr/bin/xz", "unpacking the VM's kernel modules"],
  ["prometheus", "/usr/bin/prometheus", "scraping trace.ts --metrics in the metrics tests"],
  ["rsyslog", "/usr/sbin/rsyslogd", "receiving trace.ts --syslog in the syslog tests"],
];

function has(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

const probePath = (p: string) => p.replace("x86_64", Deno.build.arch);
const missing = NEEDS.filter(([, probe]) => !has(probePath(probe)));
if (missing.length === 0) Deno.exit(0);

const list = missing.map(([pkg]) => pkg).join(" ");
for (const [pkg, , why] of missing) console.error(`missing ${pkg}: needed for ${why}`);
if (Deno.env.get("DENO_BPF_NO_INSTALL") === "1" || Deno.uid() !== 0 || !has("/usr/bin/apt-get")) {
  console.error(`Install them with: sudo apt-get update && sudo apt-get install -y ${list}`);
  Deno.exit(1);
}
console.error(`installing: apt-get install -y ${list}`);
const apt = (args: string[]) =>
  new Deno.Command("apt-get", {
    args,
    env: { DEBIAN_FRONTEND: "noninteractive" },
    stdout: "null",
    stderr: "inherit",
  }).outputSync().success;
if (!apt(["update", "-qq"]) || !apt(["install", "-y", "-qq", ...missing.map(([pkg]) => pkg)])) {
  console.error(`apt-get failed; install them yourself: apt-get install -y ${list}`);
  Deno.exit(1);
}
