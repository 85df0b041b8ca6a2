// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Who deletes which file, and whether it worked.
 *
 * Three ways to watch do_unlinkat, all emitting the same struct unlink_event;
 * user space enables exactly one pair with autoload before loading:
 *   fentry/fexit      do_unlinkat   (5.5+, BTF trampolines; fastest)
 *   kprobe/kretprobe  do_unlinkat   (needs CONFIG_KPROBES)
 *   tracepoints       sys_{enter,exit}_{unlink,unlinkat}  (works nearly anywhere)
 */
#include "kernel.h"
#include "deno_bpf.h"
#include "unlink.h"

#define AT_REMOVEDIR 0x200
#define NO_UID ((__u32)-1)

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Filters, set by user space between open and load. 0 / NO_UID / "" = off. */
const volatile __u32 targ_tgid = 0;
const volatile __u32 targ_uid = NO_UID;
const volatile char targ_comm[TASK_COMM_LEN] = {};
const volatile bool targ_failed = false;

/*
 * Wakeup policy. A consumer woken once per record spends most of its time
 * waking up, so records are submitted without a wakeup unless the ring holds
 * wakeup_bytes, or wakeup_ns have passed since the last wakeup (so a quiet
 * trickle is delivered at once). The reader covers the tail of a burst with a
 * short timed wait; see lib/ring_buffer.ts.
 */
const volatile __u64 wakeup_bytes = 256 * 1024;
const volatile __u64 wakeup_ns = 20 * 1000 * 1000;
__u64 last_wakeup_ns = 0;

struct start {
	__u64 ts_ns;
	__u32 flags; /* UNLINK_F_* */
	__u32 _pad;  /* written, so no uninitialised hole of s reaches the map */
	char filename[FILENAME_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 2 * 1024 * 1024); /* user space sets the size it wants */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32); /* tid */
	__type(value, struct start);
} starts SEC(".maps");

/* Unlinks that happened but could not be reported: ring full, or no room to
 * remember the entry. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* The record user space decodes: kept in BTF, and declared by the generator. */
DENO_BPF_RECORD(struct unlink_event);

static __always_inline void count_lost(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&lost, &zero);

	if (n)
		*n += 1;
}

static __always_inline bool wanted(__u32 tgid)
{
	if (targ_tgid && targ_tgid != tgid)
		return false;
	if (targ_uid != NO_UID && targ_uid != (__u32)bpf_get_current_uid_gid())
		return false;
	if (targ_comm[0]) {
		char comm[TASK_COMM_LEN];

		bpf_get_current_comm(comm, sizeof(comm));
		for (int i = 0; i < TASK_COMM_LEN; i++) {
			if (comm[i] != targ_comm[i])
				return false;
			if (!comm[i])
				break;
		}
	}
	return true;
}

static __always_inline int on_enter(const char *name, bool user)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct start s;
	long n, err;
	char next;

	if (!wanted(id >> 32))
		return 0;
	s.ts_ns = bpf_ktime_get_ns();
	s.flags = 0;
	s._pad = 0;
	if (user)
		n = bpf_probe_read_user_str(s.filename, sizeof(s.filename), name);
	else
		n = bpf_probe_read_kernel_str(s.filename, sizeof(s.filename), name);
	/*
	 * A full buffer holds FILENAME_LEN - 1 bytes and a NUL whether the name
	 * had exactly that many bytes or more: the source byte after them tells,
	 * NUL for a name that fit. If it cannot be read, the name may go on.
	 */
	if (n == sizeof(s.filename)) {
		if (user)
			err = bpf_probe_read_user(&next, 1, name + FILENAME_LEN - 1);
		else
			err = bpf_probe_read_kernel(&next, 1, name + FILENAME_LEN - 1);
		if (err || next)
			s.flags |= UNLINK_F_NAME_TRUNCATED;
	}
	if (bpf_map_update_elem(&starts, &tid, &s, BPF_ANY))
		count_lost();
	return 0;
}

static __always_inline __u64 wakeup_flag(__u64 now)
{
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ||
	    now - last_wakeup_ns >= wakeup_ns) {
		last_wakeup_ns = now;
		return BPF_RB_FORCE_WAKEUP;
	}
	return BPF_RB_NO_WAKEUP;
}

/* ret is an int: do_unlinkat returns int since 5.11 (long before), and a
 * fexit/kretprobe sees the whole register, whose upper half is then junk. */
static __always_inline int on_exit(int ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct unlink_event *e;
	struct start *s;
	__u64 now;

	s = bpf_map_lookup_elem(&starts, &tid);
	if (!s)
		return 0; /* filtered out at entry, or entry not seen */
	if (targ_failed && ret >= 0)
		goto out;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost();
		goto out;
	}
	now = bpf_ktime_get_ns();
	e->ts_ns = now;
	e->latency_ns = now - s->ts_ns;
	e->tgid = id >> 32;
	e->tid = tid;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->ret = ret;
	e->flags = s->flags;
	e->_pad = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_probe_read_kernel(e->filename, sizeof(e->filename), s->filename);
	bpf_ringbuf_submit(e, wakeup_flag(now));
out:
	bpf_map_delete_elem(&starts, &tid);
	return 0;
}

/* fentry/fexit: do_unlinkat(int dfd, struct filename *name). fexit cannot
 * read name: do_unlinkat has already released it. */
SEC("fentry/do_unlinkat")
int BPF_PROG(fentry_unlink, int dfd, struct filename *name)
{
	return on_enter(BPF_CORE_READ(name, name), false);
}

SEC("fexit/do_unlinkat")
int BPF_PROG(fexit_unlink, int dfd, struct filename *name, long ret)
{
	return on_exit((int)ret);
}

SEC("kprobe/do_unlinkat")
int BPF_KPROBE(kprobe_unlink, int dfd, struct filename *name)
{
	return on_enter(BPF_CORE_READ(name, name), false);
}

SEC("kretprobe/do_unlinkat")
int BPF_KRETPROBE(kretprobe_unlink, long ret)
{
	return on_exit((int)ret);
}

/* The same kprobes for arm64, whose registers bpf_tracing.h cannot name in
 * this (x86) build: one object serves both architectures, and user space
 * loads the pair that matches the running one. libbpf relocates only the
 * programs it loads, so the other pair's register names never matter. */
SEC("kprobe/do_unlinkat")
int kprobe_unlink_arm64(struct user_pt_regs *regs)
{
	struct filename *name = (struct filename *)regs->regs[1];

	return on_enter(BPF_CORE_READ(name, name), false);
}

SEC("kretprobe/do_unlinkat")
int kretprobe_unlink_arm64(struct user_pt_regs *regs)
{
	return on_exit((int)regs->regs[0]);
}

/* Syscall tracepoints: glibc's unlink(3) uses unlink(2), rm uses unlinkat(2);
 * unlinkat with AT_REMOVEDIR is rmdir and is left out. */
SEC("tracepoint/syscalls/sys_enter_unlink")
int tp_enter_unlink(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter((const char *)BPF_CORE_READ(ctx, args[0]), true);
}

SEC("tracepoint/syscalls/sys_exit_unlink")
int tp_exit_unlink(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit((int)BPF_CORE_READ(ctx, ret));
}

SEC("tracepoint/syscalls/sys_enter_unlinkat")
int tp_enter_unlinkat(struct trace_event_raw_sys_enter *ctx)
{
	if (BPF_CORE_READ(ctx, args[2]) & AT_REMOVEDIR)
		return 0;
	return on_enter((const char *)BPF_CORE_READ(ctx, args[1]), true);
}

SEC("tracepoint/syscalls/sys_exit_unlinkat")
int tp_exit_unlinkat(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit((int)BPF_CORE_READ(ctx, ret));
}
