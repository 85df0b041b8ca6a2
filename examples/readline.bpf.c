// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * readline: the lines interactive bash reads, from a uretprobe on its
 * readline() function. readline.ts attaches it to /bin/bash at run time, so
 * the section names no target.
 */
#include "../bpf/kernel.h"
#include "readline.h"
#include "../bpf/deno_bpf.h"

/* The record sent to user space: `deno task gen` declares its layout in readline_bpf.ts. */
DENO_BPF_RECORD(struct readline_event);

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} events SEC(".maps");

static __always_inline int send_line(const char *line)
{
	struct readline_event *e;

	if (!line) /* EOF (Ctrl-D) */
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_probe_read_user_str(e->line, sizeof(e->line), line);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(on_readline_return, const char *line)
{
	return send_line(line);
}

/* The same for arm64, whose return register (x0) bpf_tracing.h cannot name
 * in this x86 build: readline.ts loads the one that matches the machine. */
SEC("uretprobe")
int on_readline_return_arm64(struct user_pt_regs *regs)
{
	return send_line((const char *)regs->regs[0]);
}
