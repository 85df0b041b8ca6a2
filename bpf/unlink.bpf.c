// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Who deletes which file, and whether it worked.
 *
 * Three ways to watch a deletion, all emitting the same struct unlink_event;
 * user space enables one method's programs with autoload before loading:
 *   fentry/fexit      do_unlinkat, do_rmdir, do_renameat2, and the
 *                     security_path_* hooks that see the looked-up file
 *   kprobe/kretprobe  the same functions (needs CONFIG_KPROBES)
 *   tracepoints       sys_{enter,exit}_{unlink,unlinkat,rmdir} (work nearly anywhere)
 *
 * A deletion is remembered per thread from entry to return. In between, the
 * security_path_* hook (fentry and kprobe only) records the file's inode and
 * its canonical path. At return the record is put together in a per-CPU
 * buffer, the path resolved from the name as passed if the hook did not run
 * (tracepoints, or a failed lookup), and sent with its path as a variable tail.
 */
#include "kernel.h"
#include "deno_bpf.h"
#include "path.h"
#include "unlink.h"

#define AT_REMOVEDIR 0x200
#define RENAME_EXCHANGE (1 << 1)
#define NO_UID ((__u32)-1)
#define S_IFMT 00170000
#define S_IFDIR 0040000
#define MAX_PREFIXES 8
#define PREFIX_LEN 256 /* bytes of path a --path prefix can match: BPF_LPM_TRIE's limit */

/* Bits of start.flags that stay in the kernel. */
#define START_F_PATH (1U << 31) /* the canonical path is in paths */
#define START_F_FOLD (1U << 30) /* the name has "." or "//": user space must fold it */
#define START_F_INTERNAL (START_F_PATH | START_F_FOLD)

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Filters, set by user space between open and load. 0 / NO_UID / "" = off. */
const volatile __u32 targ_tgid = 0;
const volatile __u32 targ_tid = 0;
const volatile __u32 targ_uid = NO_UID;
const volatile __u64 targ_cgroup = 0;
const volatile char targ_comm[TASK_COMM_LEN] = {};
const volatile bool targ_failed = false;
/* Whether unlinkat(AT_REMOVEDIR) is reported (the tracepoint method). */
const volatile bool targ_rmdir = false;
/* Whether prefixes holds --path prefixes. */
const volatile bool targ_paths = false;
/* How much of the command line leaves the kernel: UNLINK_ARGV_*. */
const volatile __u32 targ_argv = UNLINK_ARGV_FULL;
/* The kprobes read arguments from registers: arm64's instead of x86's. */
const volatile bool kprobe_arm64 = false;

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

/* What is known of a deletion between entry and return. */
struct start {
	__u64 ts_ns;
	__u64 uname; /* the name's user pointer (tracepoints): whole at return */
	__u64 ino;
	__s64 size;
	__u32 dev;
	__u32 nlink; /* before the call */
	__s32 dfd;
	__u32 flags; /* UNLINK_F_* and START_F_* */
	__u16 op;
	__u16 mode;
	__u16 path_len; /* with START_F_PATH */
	__u16 _pad;
	char filename[FILENAME_LEN];
};

/* A canonical path, from a security_path_* hook to the return. */
struct path_buf {
	char path[PATH_KEEP];
};

/* The record being put together, and the key of a --path lookup. */
struct pending {
	struct unlink_event e;
	char path[PATH_KEEP];
	struct {
		__u32 prefixlen; /* in bits */
		__u8 data[PREFIX_LEN];
	} key;
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

/*
 * The canonical path of each thread's last looked-up deletion, from the hook
 * to the return. An entry stays for the thread's next deletion, so that the
 * hook writes only the path's bytes into it, not a whole new 4 KiB value;
 * the least recently used threads' entries are reused. User space shrinks it
 * to one entry for the tracepoint method, which never uses it.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32); /* tid */
	__type(value, struct path_buf);
} paths SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct path_scratch);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pending);
} pendings SEC(".maps");

/* --path prefixes, each stored with a trailing '/'. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_PREFIXES);
	__uint(key_size, sizeof(__u32) + PREFIX_LEN);
	__uint(value_size, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} prefixes SEC(".maps");

/* Deletions that happened but could not be reported: ring full, or no room
 * to remember the entry. */
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

static __always_inline bool wanted(__u64 id)
{
	if (targ_tgid && targ_tgid != id >> 32)
		return false;
	if (targ_tid && targ_tid != (__u32)id)
		return false;
	if (targ_uid != NO_UID && targ_uid != (__u32)bpf_get_current_uid_gid())
		return false;
	if (targ_cgroup && targ_cgroup != bpf_get_current_cgroup_id())
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

/* Whether a name has "." at a component's start or "//": its joined path
 * must be folded before a prefix can be matched. */
static __always_inline bool needs_fold(const char *name)
{
	char prev = 0;

	for (int i = 0; i < FILENAME_LEN - 1; i++) {
		char c = name[i];

		if (!c)
			break;
		/* A component starts at the name's first byte or after a '/'. */
		if ((c == '.' && (i == 0 || prev == '/')) || (c == '/' && prev == '/'))
			return true;
		prev = c;
	}
	return false;
}

static __always_inline int on_enter(__u16 op, int dfd, const char *name, bool user)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct start s = {};
	long n, err;
	char next;

	if (!wanted(id))
		return 0;
	s.ts_ns = bpf_ktime_get_ns();
	if (user)
		s.uname = (__u64)name;
	s.op = op;
	s.dfd = dfd;
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
	if (targ_paths && needs_fold(s.filename))
		s.flags |= START_F_FOLD;
	if (bpf_map_update_elem(&starts, &tid, &s, BPF_ANY))
		count_lost();
	return 0;
}

/*
 * The kernel has looked the name up: (dir, dentry) is the file about to be
 * deleted, as security_path_unlink/rmdir/rename receive it. Records its
 * inode and canonical path for the return.
 */
static __always_inline int on_lookup(const struct path *dir, struct dentry *dentry)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid(), zero = 0;
	struct inode *inode = BPF_CORE_READ(dentry, d_inode);
	struct path_scratch *sc;
	struct path_buf *known;
	struct path_span span;
	struct pending *p;
	struct start *s;
	__u32 pflags;

	s = bpf_map_lookup_elem(&starts, &tid);
	if (!s || !inode)
		return 0;
	s->ino = BPF_CORE_READ(inode, i_ino);
	s->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	s->mode = BPF_CORE_READ(inode, i_mode);
	s->size = BPF_CORE_READ(inode, i_size);
	s->nlink = BPF_CORE_READ(inode, i_nlink);
	s->flags |= UNLINK_F_INODE;

	sc = bpf_map_lookup_elem(&scratch, &zero);
	p = bpf_map_lookup_elem(&pendings, &zero);
	if (!sc || !p)
		return 0;
	pflags = path_resolve_dentry(sc, dir, dentry, &span);
	if (pflags & PATH_F_FAULT)
		return 0; /* the return joins the name instead */
	known = bpf_map_lookup_elem(&paths, &tid);
	if (!known) { /* the thread's first: any 4 KiB make its entry */
		bpf_map_update_elem(&paths, &tid, p->path, BPF_NOEXIST);
		known = bpf_map_lookup_elem(&paths, &tid);
		if (!known)
			return 0;
	}
	s->path_len = path_copy(known->path, sc, &span);
	s->flags &= ~(UNLINK_F_PATH_TRUNCATED | UNLINK_F_PATH_PARTIAL);
	if (pflags & PATH_F_TRUNCATED)
		s->flags |= UNLINK_F_PATH_TRUNCATED;
	if (pflags & PATH_F_PARTIAL)
		s->flags |= UNLINK_F_PATH_PARTIAL;
	s->flags |= START_F_PATH;
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

/* The path into p->path: the canonical one a hook found, or the name joined
 * to its base. Returns UNLINK_F_PATH_* flags; sets e->path_len. */
static __always_inline __u32 fill_path(struct pending *p, struct start *s, __u32 tid)
{
	struct path_span span;
	struct path_scratch *sc;
	struct path_buf *known;
	__u32 zero = 0, pflags, len;

	if (s->flags & START_F_PATH) {
		known = bpf_map_lookup_elem(&paths, &tid);
		if (known) {
			len = s->path_len;
			asm volatile("" : "+r"(len));
			len &= PATH_KEEP - 1;
			bpf_probe_read_kernel(p->path, len, known->path);
			p->e.path_len = len;
			return s->flags & (UNLINK_F_PATH_TRUNCATED | UNLINK_F_PATH_PARTIAL);
		}
	}
	p->e.path_len = 0;
	sc = bpf_map_lookup_elem(&scratch, &zero);
	if (!sc)
		return UNLINK_F_PATH_UNRESOLVED;
	/* A syscall's name is still in the caller's memory, whole; a kernel
	 * one is gone, and only its first FILENAME_LEN - 1 bytes were kept. */
	if (s->uname)
		pflags = path_resolve_at(sc, s->dfd, (const char *)s->uname, true, &span);
	else
		pflags = path_resolve_at(sc, s->dfd, s->filename, false, &span);
	if (pflags & (PATH_F_NO_BASE | PATH_F_FAULT))
		return UNLINK_F_PATH_UNRESOLVED;
	p->e.path_len = path_copy(p->path, sc, &span);
	return UNLINK_F_PATH_JOINED |
	       (pflags & PATH_F_PARTIAL ? UNLINK_F_PATH_PARTIAL : 0) |
	       (pflags & PATH_F_TRUNCATED ? UNLINK_F_PATH_TRUNCATED : 0) |
	       (!s->uname && s->flags & UNLINK_F_NAME_TRUNCATED ?
			UNLINK_F_PATH_TRUNCATED | UNLINK_F_PATH_HEAD :
			0);
}

/* Whether the path is under one of the --path prefixes. A path that cannot
 * be checked here (cut, or to be folded) is left for user space. */
static __always_inline bool path_wanted(struct pending *p, __u32 fold)
{
	__u32 len = p->e.path_len;

	if (!targ_paths || fold ||
	    p->e.flags & (UNLINK_F_PATH_TRUNCATED | UNLINK_F_PATH_PARTIAL | UNLINK_F_PATH_UNRESOLVED) &&
		    !(p->e.flags & UNLINK_F_PATH_HEAD))
		return true;
	if (len >= PREFIX_LEN) {
		bpf_probe_read_kernel(p->key.data, PREFIX_LEN, p->path);
		p->key.prefixlen = PREFIX_LEN * 8;
	} else {
		/* Masked after the barrier, so clang cannot use the unmasked copy. */
		asm volatile("" : "+r"(len));
		len &= PREFIX_LEN - 1;
		bpf_probe_read_kernel(p->key.data, len, p->path);
		p->key.data[len] = '/'; /* so "/a" matches the prefix "/a/" */
		p->key.prefixlen = (len + 1) * 8;
	}
	return bpf_map_lookup_elem(&prefixes, &p->key) != NULL;
}

/*
 * argv[0] alone, with its NUL, from the n bytes of command line at start:
 * the string read stops at the first NUL, so no later argument is copied.
 * A full buffer holds ARGV_LEN - 1 bytes and a NUL whether argv[0] had
 * exactly that many bytes or more: the source byte after them tells.
 */
static __always_inline void copy_argv0(struct unlink_event *e, unsigned long start,
				       unsigned long n)
{
	long got = bpf_probe_read_user_str(e->argv, n, (const void *)start);
	char next;

	if (got <= 0) {
		__builtin_memset(e->argv, 0, sizeof(e->argv));
		return;
	}
	if (got == ARGV_LEN &&
	    (bpf_probe_read_user(&next, 1, (const void *)(start + ARGV_LEN - 1)) || next))
		e->flags |= UNLINK_F_ARGV_TRUNCATED;
	e->argv_len = got;
}

/* Who deletes, and where: the task's parent, login uid, namespaces, argv. */
static __always_inline void attribute(struct unlink_event *e)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	/* The parent process: real_parent is the thread that forked, whose
	 * comm may be a worker thread's; its group leader names the process. */
	struct task_struct *parent = BPF_CORE_READ(task, real_parent, group_leader);
	unsigned long start, end, n;

	e->ppid = BPF_CORE_READ(parent, tgid);
	bpf_probe_read_kernel_str(e->pcomm, sizeof(e->pcomm), &parent->comm);
	e->auid = NO_UID;
	if (bpf_core_field_exists(task->loginuid))
		e->auid = BPF_CORE_READ(task, loginuid.val);
	e->mntns = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	e->cgroup_id = bpf_get_current_cgroup_id();

	/* The record's buffer is reused: no byte of an earlier command line may
	 * stay after this one's. */
	__builtin_memset(e->argv, 0, sizeof(e->argv));
	e->argv_len = 0;
	if (targ_argv == UNLINK_ARGV_NONE)
		return;
	start = BPF_CORE_READ(task, mm, arg_start);
	end = BPF_CORE_READ(task, mm, arg_end);
	n = end > start ? end - start : 0;
	if (n > ARGV_LEN) {
		n = ARGV_LEN;
		if (targ_argv == UNLINK_ARGV_FULL)
			e->flags |= UNLINK_F_ARGV_TRUNCATED;
	}
	asm volatile("" : "+r"(n));
	if (n > ARGV_LEN)
		n = 0;
	if (!n)
		return;
	if (targ_argv == UNLINK_ARGV_FIRST) {
		copy_argv0(e, start, n);
		return;
	}
	if (bpf_probe_read_user(e->argv, n, (const void *)start))
		n = 0;
	e->argv_len = n;
}

/* ret is an int: do_unlinkat returns int since 5.11 (long before), and a
 * fexit/kretprobe sees the whole register, whose upper half is then junk. */
static __always_inline int on_exit(int ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id, zero = 0, fold, len;
	struct unlink_event *e;
	struct pending *p;
	struct start *s;
	__u64 now;

	s = bpf_map_lookup_elem(&starts, &tid);
	if (!s)
		return 0; /* filtered out at entry, or entry not seen */
	if (targ_failed && ret >= 0)
		goto out;
	/* A rename is a deletion only if it replaced an existing file. */
	if (s->op == UNLINK_OP_RENAME && !(s->flags & UNLINK_F_INODE))
		goto out;
	p = bpf_map_lookup_elem(&pendings, &zero);
	if (!p)
		goto out;
	e = &p->e;
	now = bpf_ktime_get_ns();
	e->ts_ns = now;
	e->latency_ns = now - s->ts_ns;
	e->tgid = id >> 32;
	e->tid = tid;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->ret = ret;
	e->op = s->op;
	e->mode = s->mode;
	e->ino = s->ino;
	e->size = s->size;
	e->dev = s->dev;
	e->nlink_after = s->nlink;
	if (ret == 0 && s->flags & UNLINK_F_INODE)
		e->nlink_after = (s->mode & S_IFMT) == S_IFDIR || !s->nlink ? 0 : s->nlink - 1;
	e->dfd = s->dfd;
	e->_pad = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_probe_read_kernel(e->filename, sizeof(e->filename), s->filename);
	fold = s->flags & START_F_FOLD;
	e->flags = s->flags & ~(START_F_INTERNAL | UNLINK_F_PATH_TRUNCATED | UNLINK_F_PATH_PARTIAL |
				UNLINK_F_PATH_HEAD);
	e->flags |= fill_path(p, s, tid);
	if (!path_wanted(p, fold && e->flags & UNLINK_F_PATH_JOINED))
		goto out;
	attribute(e);
	len = e->path_len;
	asm volatile("" : "+r"(len));
	len &= PATH_KEEP - 1;
	if (bpf_ringbuf_output(&events, p, sizeof(*e) + len, wakeup_flag(now)))
		count_lost();
out:
	bpf_map_delete_elem(&starts, &tid);
	return 0;
}

/* fentry/fexit. The exits cannot read the name: the kernel has released it. */
SEC("fentry/do_unlinkat")
int BPF_PROG(fentry_unlink, int dfd, struct filename *name)
{
	return on_enter(UNLINK_OP_UNLINK, dfd, BPF_CORE_READ(name, name), false);
}

SEC("fexit/do_unlinkat")
int BPF_PROG(fexit_unlink, int dfd, struct filename *name, long ret)
{
	return on_exit((int)ret);
}

SEC("fentry/do_rmdir")
int BPF_PROG(fentry_rmdir, int dfd, struct filename *name)
{
	return on_enter(UNLINK_OP_RMDIR, dfd, BPF_CORE_READ(name, name), false);
}

SEC("fexit/do_rmdir")
int BPF_PROG(fexit_rmdir, int dfd, struct filename *name, long ret)
{
	return on_exit((int)ret);
}

/*
 * do_renameat2's names are struct filename upstream since 5.12, user strings
 * before, and distributions backport the change (Debian's 5.10 has it). A
 * kernel pointer has its top bit set on x86_64 and arm64, a user one not.
 */
static __always_inline int on_rename(int newdfd, void *to)
{
	if ((long)to < 0)
		return on_enter(UNLINK_OP_RENAME, newdfd, BPF_CORE_READ((struct filename *)to, name),
				false);
	return on_enter(UNLINK_OP_RENAME, newdfd, to, true);
}

SEC("fentry/do_renameat2")
int BPF_PROG(fentry_rename, int olddfd, void *from, int newdfd, void *to)
{
	return on_rename(newdfd, to);
}

SEC("fexit/do_renameat2")
int BPF_PROG(fexit_rename, int olddfd, void *from, int newdfd, void *to, unsigned int flags,
	     long ret)
{
	return on_exit((int)ret);
}

SEC("fentry/security_path_unlink")
int BPF_PROG(fentry_lookup_unlink, const struct path *dir, struct dentry *dentry)
{
	return on_lookup(dir, dentry);
}

SEC("fentry/security_path_rmdir")
int BPF_PROG(fentry_lookup_rmdir, const struct path *dir, struct dentry *dentry)
{
	return on_lookup(dir, dentry);
}

/* The target of a rename: deleted if it exists, unless the two are exchanged. */
SEC("fentry/security_path_rename")
int BPF_PROG(fentry_lookup_rename, const struct path *old_dir, struct dentry *old_dentry,
	     const struct path *new_dir, struct dentry *new_dentry, unsigned int flags)
{
	if (flags & RENAME_EXCHANGE)
		return 0;
	return on_lookup(new_dir, new_dentry);
}

/*
 * kprobes: argument n of the probed function, from x86's or arm64's
 * registers. One object serves both architectures: the other one's register
 * names fail to relocate, and libbpf turns such an access into a trap that
 * the verifier drops as dead code, as kprobe_arm64 is a constant.
 */
static __always_inline unsigned long kp_arg(struct pt_regs *ctx, int n)
{
	struct user_pt_regs *arm = (struct user_pt_regs *)ctx;

	/* Read, not loaded: clang would merge the two architectures' loads
	 * into one at a computed offset, which the verifier refuses on ctx. */
	if (kprobe_arm64)
		return BPF_CORE_READ(arm, regs[n]);
	switch (n) {
	case 0:
		return BPF_CORE_READ(ctx, di);
	case 1:
		return BPF_CORE_READ(ctx, si);
	case 2:
		return BPF_CORE_READ(ctx, dx);
	case 3:
		return BPF_CORE_READ(ctx, cx);
	default:
		return BPF_CORE_READ(ctx, r8);
	}
}

static __always_inline int kp_ret(struct pt_regs *ctx)
{
	struct user_pt_regs *arm = (struct user_pt_regs *)ctx;

	return kprobe_arm64 ? (int)BPF_CORE_READ(arm, regs[0]) : (int)BPF_CORE_READ(ctx, ax);
}

static __always_inline const char *kp_name(struct pt_regs *ctx, int n)
{
	return BPF_CORE_READ((struct filename *)kp_arg(ctx, n), name);
}

SEC("kprobe/do_unlinkat")
int kprobe_unlink(struct pt_regs *ctx)
{
	return on_enter(UNLINK_OP_UNLINK, (int)kp_arg(ctx, 0), kp_name(ctx, 1), false);
}

SEC("kretprobe/do_unlinkat")
int kretprobe_unlink(struct pt_regs *ctx)
{
	return on_exit(kp_ret(ctx));
}

SEC("kprobe/do_rmdir")
int kprobe_rmdir(struct pt_regs *ctx)
{
	return on_enter(UNLINK_OP_RMDIR, (int)kp_arg(ctx, 0), kp_name(ctx, 1), false);
}

SEC("kretprobe/do_rmdir")
int kretprobe_rmdir(struct pt_regs *ctx)
{
	return on_exit(kp_ret(ctx));
}

SEC("kprobe/do_renameat2")
int kprobe_rename(struct pt_regs *ctx)
{
	return on_rename((int)kp_arg(ctx, 2), (void *)kp_arg(ctx, 3));
}

SEC("kretprobe/do_renameat2")
int kretprobe_rename(struct pt_regs *ctx)
{
	return on_exit(kp_ret(ctx));
}

SEC("kprobe/security_path_unlink")
int kprobe_lookup_unlink(struct pt_regs *ctx)
{
	return on_lookup((const struct path *)kp_arg(ctx, 0), (struct dentry *)kp_arg(ctx, 1));
}

SEC("kprobe/security_path_rmdir")
int kprobe_lookup_rmdir(struct pt_regs *ctx)
{
	return on_lookup((const struct path *)kp_arg(ctx, 0), (struct dentry *)kp_arg(ctx, 1));
}

SEC("kprobe/security_path_rename")
int kprobe_lookup_rename(struct pt_regs *ctx)
{
	if (kp_arg(ctx, 4) & RENAME_EXCHANGE)
		return 0;
	return on_lookup((const struct path *)kp_arg(ctx, 2), (struct dentry *)kp_arg(ctx, 3));
}

/* Syscall tracepoints: glibc's unlink(3) uses unlink(2), rm uses unlinkat(2),
 * and rmdir(2) and unlinkat(AT_REMOVEDIR) remove directories. */
SEC("tracepoint/syscalls/sys_enter_unlink")
int tp_enter_unlink(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter(UNLINK_OP_UNLINK, PATH_AT_FDCWD, (const char *)BPF_CORE_READ(ctx, args[0]),
			true);
}

SEC("tracepoint/syscalls/sys_exit_unlink")
int tp_exit_unlink(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit((int)BPF_CORE_READ(ctx, ret));
}

SEC("tracepoint/syscalls/sys_enter_unlinkat")
int tp_enter_unlinkat(struct trace_event_raw_sys_enter *ctx)
{
	bool rmdir = BPF_CORE_READ(ctx, args[2]) & AT_REMOVEDIR;

	if (rmdir && !targ_rmdir)
		return 0;
	return on_enter(rmdir ? UNLINK_OP_RMDIR : UNLINK_OP_UNLINK, (int)BPF_CORE_READ(ctx, args[0]),
			(const char *)BPF_CORE_READ(ctx, args[1]), true);
}

SEC("tracepoint/syscalls/sys_exit_unlinkat")
int tp_exit_unlinkat(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit((int)BPF_CORE_READ(ctx, ret));
}

SEC("tracepoint/syscalls/sys_enter_rmdir")
int tp_enter_rmdir(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter(UNLINK_OP_RMDIR, PATH_AT_FDCWD, (const char *)BPF_CORE_READ(ctx, args[0]),
			true);
}

SEC("tracepoint/syscalls/sys_exit_rmdir")
int tp_exit_rmdir(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit((int)BPF_CORE_READ(ctx, ret));
}
