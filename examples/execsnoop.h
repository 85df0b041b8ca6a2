/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The record execsnoop.bpf.c sends for each exec; execsnoop.ts declares the same layout. */
#ifndef EXECSNOOP_H
#define EXECSNOOP_H

#define TASK_COMM_LEN 16
#define FILENAME_LEN 256

struct exec_event {
	__u32 pid;                 /* process id (unchanged by exec) */
	__u32 ppid;                /* its parent's process id */
	char comm[TASK_COMM_LEN];  /* the new command name */
	char filename[FILENAME_LEN]; /* as passed to execve, cut at FILENAME_LEN - 1 bytes */
};

_Static_assert(sizeof(struct exec_event) == 280, "exec_event layout changed");

#endif /* EXECSNOOP_H */
