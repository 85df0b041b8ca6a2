/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The record opensnoop.bpf.c sends for each openat(2); opensnoop.ts declares the same layout. */
#ifndef OPENSNOOP_H
#define OPENSNOOP_H

#define TASK_COMM_LEN 16
#define PATH_LEN 256

struct open_event {
	__u32 pid;             /* process id */
	__u32 flags;           /* openat's flags argument */
	__s32 ret;             /* the new fd, or -errno */
	char comm[TASK_COMM_LEN];
	char path[PATH_LEN];   /* as passed, NUL-terminated, cut at PATH_LEN - 1 bytes */
};

_Static_assert(sizeof(struct open_event) == 284, "open_event layout changed");

#endif /* OPENSNOOP_H */
