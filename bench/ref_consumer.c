// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The C reference consumers for bench/run.ts: plain libbpf on the very same
 * bpf/unlink.bpf.o that deno_bpf embeds, counting records and nothing else.
 * It also loads older builds of that object (bench/run.ts feeds it the
 * unenriched one of commit b5bb32d): programs and constants that an object
 * lacks are left out, and the record's size comes from the object's BTF.
 *
 *   ref_consumer OBJ --wakeup=each|batched [--mode=tracepoint|fentry] [--comm=NAME]
 *
 *   each     wakeup_bytes = 0, so every submit forces a wakeup: the classic
 *            ring_buffer__poll loop woken once per record.
 *   batched  the object's defaults (wakeup at 256 KiB or 20 ms), polled with a
 *            25 ms timeout after which the tail is consumed.
 *
 * Records are a fixed head (struct unlink_event) plus, in objects that have
 * a path_len field, a variable tail of up to sizeof(struct path_buf) bytes.
 * Each record's length is checked against those bounds from the ring's own
 * header, without touching the record, and the ring bytes it took (8-byte
 * header, then the record rounded up to 8) are summed.
 *
 * Prints "attached via MODE (wakeup=...)" to stderr once attached. SIGINT or
 * SIGTERM detaches, drains the ring and prints "N events, M lost, B ring
 * bytes" to stderr; a record out of bounds makes it exit 1 after that line.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#define MAX_LINKS 4
#define TASK_COMM_LEN 16
#define RINGBUF_HDR_SZ 8 /* BPF_RINGBUF_HDR_SZ: each record's header in the ring */

/*
 * Entry programs first, then the hook that sees the looked-up file, then the
 * returns: attached in that order and detached in it too, as the library does.
 * A name the object lacks is skipped (fentry_lookup_unlink is new in schema 2).
 */
static const char *const tracepoint_progs[] = {
	"tp_enter_unlink", "tp_enter_unlinkat", "tp_exit_unlink", "tp_exit_unlinkat", NULL,
};
static const char *const fentry_progs[] = {
	"fentry_unlink", "fentry_lookup_unlink", "fexit_unlink", NULL,
};

/* What the record callback counts. */
struct tally {
	unsigned long long events, ring_bytes, bad;
	size_t min_size, max_size; /* the bounds a record's length must be in */
};

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static void fail(const char *what, int err)
{
	fprintf(stderr, "ref_consumer: cannot %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

static int count_record(void *ctx, void *data, size_t size)
{
	struct tally *t = ctx;

	(void)data;
	t->events++;
	t->ring_bytes += (RINGBUF_HDR_SZ + size + 7) & ~(size_t)7;
	if (size < t->min_size || size > t->max_size)
		t->bad++;
	return 0;
}

/* The size of the named struct in the object's BTF, or 0 if it has none. */
static size_t struct_size(const struct btf *btf, const char *name)
{
	int id = btf ? btf__find_by_name_kind(btf, name, BTF_KIND_STRUCT) : -ENOENT;
	__s64 size = id < 0 ? 0 : btf__resolve_size(btf, id);

	return size > 0 ? (size_t)size : 0;
}

/* Whether the named struct of the object's BTF has a member called member. */
static bool has_member(const struct btf *btf, const char *name, const char *member)
{
	int id = btf__find_by_name_kind(btf, name, BTF_KIND_STRUCT);
	const struct btf_type *t = id < 0 ? NULL : btf__type_by_id(btf, id);
	const struct btf_member *m = t ? btf_members(t) : NULL;

	for (int i = 0; t && i < btf_vlen(t); i++)
		if (!strcmp(btf__name_by_offset(btf, m[i].name_off), member))
			return true;
	return false;
}

/* The bounds of a record's length: the head, plus the path tail if there is one. */
static void record_bounds(struct bpf_object *obj, struct tally *t)
{
	const struct btf *btf = bpf_object__btf(obj);

	t->min_size = t->max_size = struct_size(btf, "unlink_event");
	if (!t->min_size)
		fail("find struct unlink_event in the object's BTF", ENOENT);
	if (has_member(btf, "unlink_event", "path_len"))
		t->max_size += struct_size(btf, "path_buf");
}

static bool listed(const char *const *names, const char *name)
{
	for (; *names; names++)
		if (!strcmp(*names, name))
			return true;
	return false;
}

/*
 * Writes a const volatile global of .rodata, found through the object's BTF.
 * Returns false if the object has no such constant and it is optional.
 */
static bool set_const(struct bpf_object *obj, const char *name, const void *value, size_t size,
		      bool optional)
{
	const struct btf *btf = bpf_object__btf(obj);
	int sec_id = btf ? btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC) : -ENOENT;
	const struct btf_type *sec;
	const struct btf_var_secinfo *vars;
	struct bpf_map *map, *rodata = NULL;
	const void *initial;
	size_t total;
	char *copy;
	int err;

	if (sec_id < 0)
		fail("find .rodata in the object's BTF", sec_id);
	bpf_object__for_each_map(map, obj) {
		const char *map_name = bpf_map__name(map);
		size_t n = strlen(map_name);

		if (n >= 7 && !strcmp(map_name + n - 7, ".rodata"))
			rodata = map;
	}
	if (!rodata)
		fail("find the .rodata map", ENOENT);
	sec = btf__type_by_id(btf, sec_id);
	vars = btf_var_secinfos(sec);
	for (int i = 0; i < btf_vlen(sec); i++) {
		const struct btf_type *var = btf__type_by_id(btf, vars[i].type);

		if (strcmp(btf__name_by_offset(btf, var->name_off), name))
			continue;
		if (size > vars[i].size)
			fail("set a constant larger than its variable", EINVAL);
		initial = bpf_map__initial_value(rodata, &total);
		copy = malloc(total);
		if (!initial || !copy)
			fail("read .rodata", ENOMEM);
		memcpy(copy, initial, total);
		memset(copy + vars[i].offset, 0, vars[i].size);
		memcpy(copy + vars[i].offset, value, size);
		err = bpf_map__set_initial_value(rodata, copy, total);
		free(copy);
		if (err)
			fail("write .rodata", err);
		return true;
	}
	if (optional)
		return false;
	fprintf(stderr, "ref_consumer: the object has no constant \"%s\"\n", name);
	exit(1);
}

static unsigned long long read_lost(struct bpf_object *obj)
{
	struct bpf_map *map = bpf_object__find_map_by_name(obj, "lost");
	int cpus = libbpf_num_possible_cpus();
	unsigned long long sum = 0, *values;
	__u32 key = 0;
	int err;

	if (!map || cpus <= 0)
		fail("find the lost map", ENOENT);
	values = calloc(cpus, sizeof(*values));
	if (!values)
		fail("allocate", ENOMEM);
	err = bpf_map__lookup_elem(map, &key, sizeof(key), values, cpus * sizeof(*values), 0);
	if (err)
		fail("read the lost map", err);
	for (int i = 0; i < cpus; i++)
		sum += values[i];
	free(values);
	return sum;
}

int main(int argc, char **argv)
{
	const char *path = NULL, *wakeup = NULL, *mode = "tracepoint", *comm = NULL;
	const char *const *progs;
	struct sigaction sa = { .sa_handler = on_signal };
	struct bpf_link *links[MAX_LINKS];
	struct bpf_program *prog;
	struct bpf_object *obj;
	struct ring_buffer *rb;
	struct bpf_map *paths;
	struct tally tally = { 0 };
	int nlinks = 0, timeout_ms, err;

	for (int i = 1; i < argc; i++) {
		if (!strncmp(argv[i], "--wakeup=", 9))
			wakeup = argv[i] + 9;
		else if (!strncmp(argv[i], "--mode=", 7))
			mode = argv[i] + 7;
		else if (!strncmp(argv[i], "--comm=", 7))
			comm = argv[i] + 7;
		else if (argv[i][0] != '-' && !path)
			path = argv[i];
		else
			wakeup = NULL, path = NULL, i = argc;
	}
	if (!path || !wakeup || (strcmp(wakeup, "each") && strcmp(wakeup, "batched")) ||
	    (strcmp(mode, "tracepoint") && strcmp(mode, "fentry")) ||
	    (comm && (!*comm || strlen(comm) >= TASK_COMM_LEN))) {
		fprintf(stderr, "usage: ref_consumer OBJ --wakeup=each|batched "
				"[--mode=tracepoint|fentry] [--comm=NAME]\n");
		return 2;
	}
	progs = strcmp(mode, "fentry") ? tracepoint_progs : fentry_progs;
	timeout_ms = strcmp(wakeup, "each") ? 25 : 100;

	obj = bpf_object__open_file(path, NULL);
	if (!obj)
		fail("open the BPF object", errno);
	if (!strcmp(wakeup, "each")) {
		__u64 zero = 0;

		set_const(obj, "wakeup_bytes", &zero, sizeof(zero), false);
	}
	if (comm)
		set_const(obj, "targ_comm", comm, strlen(comm), false);
#ifdef __aarch64__
	{
		bool yes = true; /* schema 2 reads kprobe registers by this constant */

		set_const(obj, "kprobe_arm64", &yes, sizeof(yes), true);
	}
#endif
	/* Only fentry's lookup hook fills paths: tracepoints need no room there. */
	paths = bpf_object__find_map_by_name(obj, "paths");
	if (paths && progs == tracepoint_progs) {
		err = bpf_map__set_max_entries(paths, 1);
		if (err)
			fail("shrink the paths map", err);
	}
	record_bounds(obj, &tally);
	bpf_object__for_each_program(prog, obj)
		bpf_program__set_autoload(prog, listed(progs, bpf_program__name(prog)));
	err = bpf_object__load(obj);
	if (err)
		fail("load the BPF object", err);
	for (const char *const *name = progs; *name; name++) {
		prog = bpf_object__find_program_by_name(obj, *name);
		if (!prog && progs == fentry_progs && !strcmp(*name, "fentry_lookup_unlink"))
			continue; /* an object older than schema 2 */
		links[nlinks] = prog ? bpf_program__attach(prog) : NULL;
		if (!links[nlinks])
			fail("attach a program", prog ? errno : ENOENT);
		nlinks++;
	}
	rb = ring_buffer__new(bpf_object__find_map_fd_by_name(obj, "events"), count_record,
			      &tally, NULL);
	if (!rb)
		fail("open the ring buffer", errno);

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	fprintf(stderr, "attached via %s (wakeup=%s)\n", mode, wakeup);

	/* A signal interrupts the poll; the timeout bounds the race with it. */
	while (!stopping) {
		err = ring_buffer__poll(rb, timeout_ms);
		if (err == 0)
			err = ring_buffer__consume(rb); /* the tail, submitted without a wakeup */
		if (err < 0 && err != -EINTR)
			fail("poll the ring buffer", err);
	}
	for (int i = 0; i < nlinks; i++) /* entry programs first, as attached */
		bpf_link__destroy(links[i]);
	err = ring_buffer__consume(rb);
	if (err < 0)
		fail("drain the ring buffer", err);
	fprintf(stderr, "%llu events, %llu lost, %llu ring bytes\n", tally.events, read_lost(obj),
		tally.ring_bytes);
	ring_buffer__free(rb);
	bpf_object__close(obj);
	if (tally.bad) {
		fprintf(stderr, "ref_consumer: %llu records were not %zu to %zu bytes long\n", tally.bad,
			tally.min_size, tally.max_size);
		return 1;
	}
	return 0;
}
