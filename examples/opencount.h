/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The key and value of opencount.bpf.c's map; opencount_bpf.ts declares their layouts. */
#ifndef OPENCOUNT_H
#define OPENCOUNT_H

struct comm_key {
	char comm[16]; /* the command name, NUL-padded */
};

struct open_count {
	__u64 opens;
};

#endif /* OPENCOUNT_H */
