/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The absolute path of a name passed to a syscall, resolved in the kernel.
 *
 * Two ways. Before the kernel has looked the name up (at a syscall's entry,
 * or after a failed lookup), path_resolve_at builds it from what the task holds: its working directory (for AT_FDCWD) or the
 * open file that dfd refers to, walked up dentry by dentry to the process's
 * root (current->fs->root), crossing mount points through struct mount, and
 * then the name as the caller passed it. The result is what the process meant,
 * seen from its own root (a chroot shows its own "/"), joined but not
 * normalised: "." and ".." in the name stay for user space to fold lexically,
 * which is right unless a symlinked directory is followed by "..". Once the
 * kernel has the dentry (security_path_unlink), path_resolve_dentry walks
 * from the file itself, and the path is canonical.
 *
 * Include after kernel.h. Usage, with both buffers in per-CPU map values (on
 * the stack the verifier tracks every byte of the walk and gives up):
 *
 *   struct path_span span;
 *   __u32 flags = path_resolve_at(scratch, dfd, user_name, true, &span);
 *   len = path_copy(out, scratch, &span);   // out: char[PATH_KEEP]
 *
 * The walk loop is bounded (PATH_DEPTH steps) and opens with an empty asm
 * statement: without it clang 14 rotates the loop into a shape that the 5.10
 * and 6.1 verifiers reject ("back-edge from insn N to N+1").
 */
#ifndef DENO_BPF_PATH_H
#define DENO_BPF_PATH_H

/* Bytes of path kept, NUL excluded: PATH_KEEP - 1. A power of two. */
#ifndef PATH_KEEP
#define PATH_KEEP 4096
#endif
/* Walk steps: one per directory component or mount crossed. */
#ifndef PATH_DEPTH
#define PATH_DEPTH 64
#endif
#define PATH_NAME_MAX 255 /* a component's longest name (NAME_MAX) */
#define PATH_AT_FDCWD -100

_Static_assert((PATH_KEEP & (PATH_KEEP - 1)) == 0, "PATH_KEEP must be a power of two");
_Static_assert(PATH_KEEP > PATH_NAME_MAX + 1, "PATH_KEEP must hold one component");

/* What path_resolve_at reports: 0 when the path is whole and absolute. */
#define PATH_F_TRUNCATED 0x1 /* longer than PATH_KEEP - 1 bytes: its end is kept */
#define PATH_F_PARTIAL 0x2   /* the walk met PATH_DEPTH before the root: a suffix only */
#define PATH_F_NO_BASE 0x4   /* dfd is not an open file: the name alone */
#define PATH_F_FAULT 0x8     /* a kernel or user read failed */


/*
 * Scratch for one resolution. The directory is written right to left so that
 * it ends at buf[PATH_KEEP]; the name follows it. A per-CPU map value.
 */
struct path_scratch {
	char buf[2 * PATH_KEEP];
	/* The walk's write position, kept here rather than in a register: read
	 * back from the map it is an unknown number to the verifier, so every
	 * iteration looks the same and the states prune. */
	__u32 pos;
	__u32 _pad;
};

/* Where the joined path lies in a path_scratch. */
struct path_span {
	__u32 start; /* first byte, in buf */
	__u32 len;   /* bytes, NUL excluded; may exceed PATH_KEEP - 1 */
};

static __always_inline struct mount *path_real_mount(struct vfsmount *vfsmnt)
{
	return (struct mount *)((char *)vfsmnt - bpf_core_field_offset(struct mount, mnt));
}

/*
 * Writes the directory (dentry, vfsmnt) as "/a/b", right-aligned to end at
 * buf[PATH_KEEP], walking up to (root_dentry, root_mnt) or to the top of the
 * mount tree. Returns the first byte's index (PATH_KEEP for "/" itself, which
 * is written as the empty string) and ors PATH_F_* into *flags.
 */
static __always_inline __u32 path_walk_dir(struct path_scratch *s, struct dentry *dentry,
					   struct vfsmount *vfsmnt, struct dentry *root_dentry,
					   struct vfsmount *root_mnt, __u32 *flags)
{
	struct mount *mnt = path_real_mount(vfsmnt);
	bool done = false;
	__u32 pos;

	s->pos = PATH_KEEP;

	for (int i = 0; i < PATH_DEPTH; i++) {
		struct dentry *parent, *mnt_root;
		const unsigned char *name;
		__u32 nlen;

		asm volatile("" ::: "memory");
		if (dentry == root_dentry && vfsmnt == root_mnt) {
			done = true;
			break;
		}
		mnt_root = BPF_CORE_READ(vfsmnt, mnt_root);
		if (dentry == mnt_root) {
			struct mount *up = BPF_CORE_READ(mnt, mnt_parent);

			if (up == mnt) { /* the top of the mount tree */
				done = true;
				break;
			}
			dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = up;
			vfsmnt = &up->mnt;
			continue;
		}
		parent = BPF_CORE_READ(dentry, d_parent);
		if (parent == dentry || !parent) { /* a disconnected dentry */
			break;
		}
		name = BPF_CORE_READ(dentry, d_name.name);
		nlen = BPF_CORE_READ(dentry, d_name.len);
		if (nlen > PATH_NAME_MAX)
			nlen = PATH_NAME_MAX;
		pos = s->pos;
		if (nlen + 1 > pos) {
			*flags |= PATH_F_TRUNCATED;
			return pos;
		}
		pos -= nlen + 1;
		s->pos = pos;
		if (bpf_probe_read_kernel(&s->buf[(pos & (PATH_KEEP - 1)) + 1], nlen & PATH_NAME_MAX,
					  name))
			*flags |= PATH_F_FAULT;
		s->buf[pos & (PATH_KEEP - 1)] = '/';
		dentry = parent;
	}
	if (!done)
		*flags |= PATH_F_PARTIAL;
	return s->pos;
}

/*
 * Resolves (dfd, name) of the current task into s: name is a user pointer as
 * a syscall receives it, or with user false a kernel one. Returns PATH_F_*
 * flags, 0 for a whole absolute path.
 */
static __always_inline __u32 path_resolve_at(struct path_scratch *s, int dfd, const char *name,
					     bool user, struct path_span *span)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	struct dentry *dentry, *root_dentry;
	struct vfsmount *vfsmnt, *root_mnt;
	__u32 flags = 0, start = PATH_KEEP, at;
	long n;
	char first = 0;

	if (user ? bpf_probe_read_user(&first, 1, name) : bpf_probe_read_kernel(&first, 1, name))
		flags |= PATH_F_FAULT;
	if (first != '/') {
		if (dfd == PATH_AT_FDCWD) {
			dentry = BPF_CORE_READ(fs, pwd.dentry);
			vfsmnt = BPF_CORE_READ(fs, pwd.mnt);
		} else {
			struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
			struct file **fds = BPF_CORE_READ(fdt, fd);
			struct file *file = NULL;

			if (dfd >= 0 && dfd < BPF_CORE_READ(fdt, max_fds))
				bpf_probe_read_kernel(&file, sizeof(file), &fds[dfd]);
			dentry = file ? BPF_CORE_READ(file, f_path.dentry) : NULL;
			vfsmnt = file ? BPF_CORE_READ(file, f_path.mnt) : NULL;
		}
		if (dentry && vfsmnt) {
			root_dentry = BPF_CORE_READ(fs, root.dentry);
			root_mnt = BPF_CORE_READ(fs, root.mnt);
			start = path_walk_dir(s, dentry, vfsmnt, root_dentry, root_mnt, &flags);
		} else {
			flags |= PATH_F_NO_BASE;
		}
	}
	/* The name goes after the directory, behind a '/' unless it has one. */
	at = PATH_KEEP;
	if (first != '/' && !(flags & PATH_F_NO_BASE)) {
		s->buf[PATH_KEEP] = '/';
		at = PATH_KEEP + 1;
	}
	if (user)
		n = bpf_probe_read_user_str(&s->buf[at & (2 * PATH_KEEP - 1)], PATH_KEEP - 1, name);
	else
		n = bpf_probe_read_kernel_str(&s->buf[at & (2 * PATH_KEEP - 1)], PATH_KEEP - 1, name);
	if (n < 0) {
		flags |= PATH_F_FAULT;
		n = 1;
	}
	if (n == PATH_KEEP - 1) /* the name may have gone on */
		flags |= PATH_F_TRUNCATED;
	span->len = (at - start) + (__u32)n - 1;
	span->start = start;
	if (span->len > PATH_KEEP - 1) { /* keep the end, which names the file */
		span->start = start + span->len - (PATH_KEEP - 1);
		span->len = PATH_KEEP - 1;
		flags |= PATH_F_TRUNCATED;
	}
	return flags;
}

/*
 * Resolves a dentry that the kernel has looked up, on the mount of dir (as
 * security_path_unlink(dir, dentry) receives them), into s: the walk starts
 * at the file itself, so the path is canonical (symlinks and ".." resolved).
 * Returns PATH_F_* flags, 0 for a whole absolute path.
 */
static __always_inline __u32 path_resolve_dentry(struct path_scratch *s, const struct path *dir,
						 struct dentry *dentry, struct path_span *span)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	struct vfsmount *vfsmnt = BPF_CORE_READ(dir, mnt);
	struct dentry *root_dentry = BPF_CORE_READ(fs, root.dentry);
	struct vfsmount *root_mnt = BPF_CORE_READ(fs, root.mnt);
	__u32 flags = 0, start;

	start = path_walk_dir(s, dentry, vfsmnt, root_dentry, root_mnt, &flags);
	if (start >= PATH_KEEP) { /* the root itself */
		start = PATH_KEEP - 1;
		s->buf[PATH_KEEP - 1] = '/';
	}
	if (start == 0) { /* PATH_KEEP bytes: one too many */
		start = 1;
		flags |= PATH_F_TRUNCATED;
	}
	span->start = start;
	span->len = PATH_KEEP - start;
	return flags;
}

/* Copies the resolved path into out (char[PATH_KEEP]), NUL-terminated; returns its length. */
static __always_inline __u32 path_copy(char *out, struct path_scratch *s,
				       const struct path_span *span)
{
	__u32 len = span->len, start = span->start;

	/* Hide the values from clang, which knows their bounds and would drop
	 * the masks that the verifier needs to see. */
	asm volatile("" : "+r"(len), "+r"(start));
	len &= PATH_KEEP - 1;
	bpf_probe_read_kernel(out, len, &s->buf[start & (2 * PATH_KEEP - 1)]);
	out[len] = 0;
	return len;
}

#endif /* DENO_BPF_PATH_H */
