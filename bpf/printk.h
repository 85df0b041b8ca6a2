/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * bpf/printk.bpf.c writes its lines to the kernel trace buffer instead of a
 * ring buffer. Every line starts with this marker, which scripts/printk.ts
 * uses to pick its own lines out of trace_pipe.
 */
#ifndef DENO_BPF_PRINTK_H
#define DENO_BPF_PRINTK_H

#define PRINTK_MARKER "deno_bpf-unlink:"

#endif /* DENO_BPF_PRINTK_H */
