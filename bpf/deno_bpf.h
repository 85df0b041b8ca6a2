/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * deno_bpf's helpers for BPF C sources read from TypeScript.
 *
 * DENO_BPF_RECORD(type) marks a struct that the program sends to user space
 * (through a ring buffer, a map...). It keeps the struct in the object's BTF
 * even if no code names it, and tells `deno task gen` to declare a typed
 * layout for it in the generated module, checked against BTF at open:
 *
 *	#include "deno_bpf.h"
 *
 *	struct event {
 *		__u64 ts_ns;
 *		__u32 pid;
 *		__u32 path_len;   // bytes used in path[], NUL included or not
 *		char path[];      // a variable-length tail
 *	};
 *	DENO_BPF_RECORD(struct event);
 *
 * A struct that ends in a flexible array member x[] of bytes (char: decoded
 * as a string; __u8: as bytes) is a record with a variable tail: its length
 * in bytes is the integer member named x_len. The decoder never reads past
 * the record's length as the ring buffer reports it.
 *
 * The marker is an unused global pointer, __deno_bpf_record_<n>, in .bss.
 */
#ifndef DENO_BPF_H
#define DENO_BPF_H

#define __DENO_BPF_CAT2(a, b) a##b
#define __DENO_BPF_CAT(a, b) __DENO_BPF_CAT2(a, b)

#define DENO_BPF_RECORD(type) \
	type *__DENO_BPF_CAT(__deno_bpf_record_, __COUNTER__) __attribute__((unused))

#endif /* DENO_BPF_H */
