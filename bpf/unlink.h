/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The record that bpf/unlink.bpf.c sends through its ring buffer. This header
 * is the source of truth: lib/unlink.ts declares the same layout and checks
 * it against the compiled object's BTF before it decodes anything.
 */
#ifndef DENO_BPF_UNLINK_H
#define DENO_BPF_UNLINK_H

#define TASK_COMM_LEN 16
#define FILENAME_LEN 256

/*
 * Bits of unlink_event.flags.
 *
 * UNLINK_F_NAME_TRUNCATED: the name was longer than the FILENAME_LEN - 1 bytes
 * kept, so filename holds only its first FILENAME_LEN - 1 bytes. Also set when
 * the byte after those could not be read, as the name may then go on.
 */
#define UNLINK_F_NAME_TRUNCATED (1U << 0)

struct unlink_event {
	__u64 ts_ns;      /* CLOCK_MONOTONIC when do_unlinkat returned */
	__u64 latency_ns; /* return minus entry */
	__u32 tgid;       /* process id */
	__u32 tid;        /* thread id */
	__u32 uid;
	__s32 ret;        /* 0 or -errno */
	__u32 flags;      /* UNLINK_F_* */
	__u32 _pad;       /* zero; keeps comm at 40 and the size a multiple of 8 */
	char comm[TASK_COMM_LEN];
	char filename[FILENAME_LEN]; /* as passed by the caller, NUL-terminated */
};

_Static_assert(sizeof(struct unlink_event) == 312, "unlink_event layout changed");

#endif /* DENO_BPF_UNLINK_H */
