/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The few kernel types the deno_bpf programs touch, declared by hand with
 * preserve_access_index so that libbpf relocates every field access against
 * the running kernel's BTF (CO-RE). A hand-written header keeps the build
 * independent of the build machine's kernel: the same source gives the same
 * object everywhere, which is what lets CI check the committed copy.
 */
#ifndef DENO_BPF_KERNEL_H
#define DENO_BPF_KERNEL_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <stdbool.h>

/* bpf_tracing.h picks the kernel's pt_regs field names (di, si, ax) only
 * when it believes it is compiled against vmlinux.h. */
#define __VMLINUX_H__ 1

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct filename {
	const char *name;
};

struct qstr {
	union {
		struct {
			__u32 hash;
			__u32 len;
		};
		__u64 hash_len;
	};
	const unsigned char *name;
};

struct super_block {
	__u32 s_dev; /* dev_t: major << 20 | minor */
};

struct inode {
	unsigned short i_mode;
	unsigned long i_ino;
	unsigned int i_nlink; /* in an anonymous union in the kernel */
	long long i_size;
	struct super_block *i_sb;
};

struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
	struct inode *d_inode;
};

struct vfsmount {
	struct dentry *mnt_root;
};

/* The kernel's private wrapper around a vfsmount (fs/mount.h). */
struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
};

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
};

struct fs_struct {
	struct path root;
	struct path pwd;
};

struct file {
	struct path f_path;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
};

struct ns_common {
	unsigned int inum;
};

struct mnt_namespace {
	struct ns_common ns;
};

struct nsproxy {
	struct mnt_namespace *mnt_ns;
};

typedef struct {
	__u32 val;
} kuid_t;

struct task_struct {
	int tgid;
	char comm[16];
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	struct fs_struct *fs;
	struct files_struct *files;
	struct mm_struct *mm;
	struct nsproxy *nsproxy;
	kuid_t loginuid; /* CONFIG_AUDIT */
};

/* arm64: kprobe arguments are in x0..x7, user_pt_regs.regs[] (the first
 * member of the kernel's struct pt_regs). */
struct user_pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
};

/* x86_64: kprobe arguments are read from these registers. */
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	unsigned long ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};

struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
};

struct trace_event_raw_sys_enter {
	struct trace_entry ent;
	long id;
	unsigned long args[6];
};

struct trace_event_raw_sys_exit {
	struct trace_entry ent;
	long id;
	long ret;
};

#pragma clang attribute pop

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#endif /* DENO_BPF_KERNEL_H */
