// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* opencount: openat(2) calls per command name, in a hash map that opencount.ts reads and clears. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "opencount.h"
#include "../bpf/deno_bpf.h"

/* Read from user space: `deno task gen` declares their layouts in opencount_bpf.ts. */
DENO_BPF_RECORD(struct comm_key);
DENO_BPF_RECORD(struct open_count);

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct comm_key);
	__type(value, struct open_count);
} counts SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int count_open(void *ctx)
{
	struct comm_key key = {};
	struct open_count zero = {}, *n;

	bpf_get_current_comm(key.comm, sizeof(key.comm));
	n = bpf_map_lookup_elem(&counts, &key);
	if (!n) {
		/* NOEXIST: if another CPU inserted it meanwhile, add to theirs. */
		bpf_map_update_elem(&counts, &key, &zero, BPF_NOEXIST);
		n = bpf_map_lookup_elem(&counts, &key);
	}
	if (n)
		__sync_fetch_and_add(&n->opens, 1);
	return 0;
}
