// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* opencount: openat(2) calls per command name, in a hash map that opencount.ts reads and clears. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, char[16]); /* comm */
	__type(value, __u64);  /* opens */
} counts SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int count_open(void *ctx)
{
	char comm[16] = {};
	__u64 zero = 0, *n;

	bpf_get_current_comm(comm, sizeof(comm));
	n = bpf_map_lookup_elem(&counts, comm);
	if (!n) {
		/* NOEXIST: if another CPU inserted it meanwhile, add to theirs. */
		bpf_map_update_elem(&counts, comm, &zero, BPF_NOEXIST);
		n = bpf_map_lookup_elem(&counts, comm);
	}
	if (n)
		__sync_fetch_and_add(n, 1);
	return 0;
}
