// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * opensnoop: every openat(2) with its result. The entry tracepoint keeps the
 * arguments per thread; the exit tracepoint sends them with the fd or -errno.
 */
#include "../bpf/kernel.h"
#include "opensnoop.h"
#include "../bpf/deno_bpf.h"

/* The record sent to user space: `deno task gen` declares its layout in opensnoop_bpf.ts. */
DENO_BPF_RECORD(struct open_event);

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by opensnoop.ts before load (-p PID): only this process; 0 traces all. */
const volatile __u32 targ_pid = 0;

struct args {
	const char *path;
	__u32 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32); /* thread id */
	__type(value, struct args);
} starts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int on_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct args a = {};

	if (targ_pid && (__u32)(id >> 32) != targ_pid)
		return 0;
	a.path = (const char *)ctx->args[1];
	a.flags = (__u32)ctx->args[2];
	bpf_map_update_elem(&starts, &tid, &a, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int on_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct open_event *e;
	struct args *a;

	a = bpf_map_lookup_elem(&starts, &tid);
	if (!a)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (e) {
		e->pid = id >> 32;
		e->flags = a->flags;
		e->ret = (__s32)ctx->ret;
		bpf_get_current_comm(e->comm, sizeof(e->comm));
		/* At exit the kernel has read the name, so its page is present. */
		bpf_probe_read_user_str(e->path, sizeof(e->path), a->path);
		bpf_ringbuf_submit(e, 0);
	}
	bpf_map_delete_elem(&starts, &tid);
	return 0;
}
