/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The record that bpf/unlink.bpf.c sends through its ring buffer: a fixed
 * head, then path_len bytes of absolute path. This header is the source of
 * truth: `deno task build:bpf` generates the TypeScript layout from the
 * object's BTF, and the tracer checks it again at open.
 */
#ifndef DENO_BPF_UNLINK_H
#define DENO_BPF_UNLINK_H

#define TASK_COMM_LEN 16
#define FILENAME_LEN 256
#define ARGV_LEN 256

/*
 * Bits of unlink_event.flags.
 *
 * UNLINK_F_NAME_TRUNCATED: the name was longer than the FILENAME_LEN - 1 bytes
 * kept, so filename holds only its first FILENAME_LEN - 1 bytes. Also set when
 * the byte after those could not be read, as the name may then go on.
 */
#define UNLINK_F_NAME_TRUNCATED (1U << 0)
/* argv holds the first ARGV_LEN bytes of a longer command line. */
#define UNLINK_F_ARGV_TRUNCATED (1U << 1)
/* The path is longer than the bytes kept: path holds its end. */
#define UNLINK_F_PATH_TRUNCATED (1U << 2)
/* The walk met its step limit or a mount it could not cross: path is a suffix. */
#define UNLINK_F_PATH_PARTIAL (1U << 3)
/* No path: dfd is not an open directory, or a read failed. */
#define UNLINK_F_PATH_UNRESOLVED (1U << 4)
/* The path was joined from the name as passed (not from a looked-up dentry):
 * "." and ".." in the name are left for user space to fold. */
#define UNLINK_F_PATH_JOINED (1U << 5)
/* ino, dev, mode, size and nlink_after describe the file (the kernel looked it up). */
#define UNLINK_F_INODE (1U << 6)
/* With UNLINK_F_PATH_TRUNCATED: path holds its beginning, not its end (a
 * name over FILENAME_LEN - 1 bytes that fentry or kprobe did not find). */
#define UNLINK_F_PATH_HEAD (1U << 7)

/*
 * Set by user space, never by this program: the tracer replaced parts of argv
 * with "*****" (--redact), in its copy of the record.
 */
#define UNLINK_F_ARGV_REDACTED (1U << 8)

/* How much of the command line the program copies (targ_argv). */
#define UNLINK_ARGV_NONE 0  /* nothing: argv_len is 0 */
#define UNLINK_ARGV_FIRST 1 /* argv[0] only, with its NUL */
#define UNLINK_ARGV_FULL 2  /* the first ARGV_LEN bytes */

/* unlink_event.op */
#define UNLINK_OP_UNLINK 0
#define UNLINK_OP_RMDIR 1
#define UNLINK_OP_RENAME 2 /* a rename that replaced (so deleted) an existing file */

struct unlink_event {
	__u64 ts_ns;      /* CLOCK_MONOTONIC when the call returned */
	__u64 latency_ns; /* return minus entry */
	__u32 tgid;       /* process id */
	__u32 tid;        /* thread id */
	__u32 uid;
	__s32 ret;        /* 0 or -errno */
	__u32 flags;      /* UNLINK_F_* */
	__u16 op;         /* UNLINK_OP_* */
	__u16 mode;       /* the file's i_mode (with UNLINK_F_INODE) */
	char comm[TASK_COMM_LEN];
	char filename[FILENAME_LEN]; /* as passed by the caller, NUL-terminated */
	__u64 cgroup_id;  /* cgroup v2 id */
	__u64 ino;        /* with UNLINK_F_INODE */
	__s64 size;       /* i_size before the call, with UNLINK_F_INODE */
	__u32 dev;        /* the kernel's dev_t: major << 20 | minor */
	__u32 nlink_after;/* links left after the call, with UNLINK_F_INODE */
	__u32 ppid;       /* the real parent's tgid */
	__u32 auid;       /* login uid; (__u32)-1 when unset */
	__u32 mntns;      /* mount namespace inode number */
	__s32 dfd;        /* the directory fd passed, or AT_FDCWD (-100) */
	char pcomm[TASK_COMM_LEN];
	__u16 argv_len;   /* bytes of argv used */
	__u16 path_len;   /* bytes of path that follow */
	__u32 _pad;       /* zero */
	__u8 argv[ARGV_LEN]; /* the command line, NUL-separated; zero after argv_len */
	char path[];      /* the absolute path, path_len bytes, no NUL */
};

_Static_assert(sizeof(struct unlink_event) == 640, "unlink_event layout changed");

#endif /* DENO_BPF_UNLINK_H */
