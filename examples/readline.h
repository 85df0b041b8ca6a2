/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The record readline.bpf.c sends for each line bash reads; readline.ts declares the same layout. */
#ifndef READLINE_H
#define READLINE_H

#define LINE_LEN 256

struct readline_event {
	__u32 pid;           /* the bash process */
	char line[LINE_LEN]; /* readline's result, cut at LINE_LEN - 1 bytes */
};

_Static_assert(sizeof(struct readline_event) == 260, "readline_event layout changed");

#endif /* READLINE_H */
