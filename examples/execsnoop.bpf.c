// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* execsnoop: every successful exec, from the sched_process_exec tracepoint. */
#include "../bpf/kernel.h"
#include "execsnoop.h"
#include "../bpf/deno_bpf.h"

/* The record sent to user space: `deno task gen` declares its layout in execsnoop_bpf.ts. */
DENO_BPF_RECORD(struct exec_event);

/*
 * The tracepoint's record, declared with only the fields this program reads
 * (task_struct comes from kernel.h): preserve_access_index makes libbpf find
 * each field's offset in the running kernel's BTF at load time (CO-RE).
 */
#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)
struct trace_event_raw_sched_process_exec {
	struct trace_entry ent;
	__u32 __data_loc_filename; /* low 16 bits: the name's offset in the record */
	int pid;
	int old_pid;
};
#pragma clang attribute pop

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

SEC("tracepoint/sched/sched_process_exec")
int on_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	unsigned int name_at = ctx->__data_loc_filename & 0xFFFF;
	struct exec_event *e;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), (void *)ctx + name_at);
	bpf_ringbuf_submit(e, 0);
	return 0;
}
