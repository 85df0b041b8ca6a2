// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The tutorial variant: fentry/fexit on do_unlinkat that bpf_printk one line
 * each to /sys/kernel/tracing/trace_pipe. Slow and global, but needs no
 * consumer at all: `cat trace_pipe` is enough.
 */
#include "kernel.h"
#include "printk.h"

#define FILENAME_LEN 256

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The filename seen at entry, keyed by thread id: at fexit do_unlinkat has
 * already released its struct filename. */
struct name {
	char s[FILENAME_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct name);
} names SEC(".maps");

SEC("fentry/do_unlinkat")
int BPF_PROG(printk_enter, int dfd, struct filename *name)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct name n;

	bpf_probe_read_kernel_str(n.s, sizeof(n.s), BPF_CORE_READ(name, name));
	bpf_map_update_elem(&names, &tid, &n, BPF_ANY);
	bpf_printk(PRINTK_MARKER " enter pid=%d filename=%s",
		   bpf_get_current_pid_tgid() >> 32, n.s);
	return 0;
}

SEC("fexit/do_unlinkat")
int BPF_PROG(printk_exit, int dfd, struct filename *name, long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct name *n = bpf_map_lookup_elem(&names, &tid);

	if (!n)
		return 0;
	bpf_printk(PRINTK_MARKER " exit pid=%d filename=%s ret=%d",
		   bpf_get_current_pid_tgid() >> 32, n->s, (int)ret);
	bpf_map_delete_elem(&names, &tid);
	return 0;
}
