// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The C reference consumers for bench/run.ts: plain libbpf on the very same
 * bpf/unlink.bpf.o that deno_bpf embeds, counting records and nothing else.
 *
 *   ref_consumer OBJ --wakeup=each|batched [--mode=tracepoint|fentry] [--comm=NAME]
 *
 *   each     wakeup_bytes = 0, so every submit forces a wakeup: the classic
 *            ring_buffer__poll loop woken once per record.
 *   batched  the object's defaults (wakeup at 256 KiB or 20 ms), polled with a
 *            25 ms timeout after which the tail is consumed.
 *
 * Prints "attached via MODE (wakeup=...)" to stderr once attached. SIGINT or
 * SIGTERM detaches, drains the ring and prints "N events, M lost" to stderr.
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

static const char *const tracepoint_progs[] = {
	"tp_enter_unlink", "tp_enter_unlinkat", "tp_exit_unlink", "tp_exit_unlinkat", NULL,
};
static const char *const fentry_progs[] = { "fentry_unlink", "fexit_unlink", NULL };

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
	(void)data;
	(void)size;
	(*(unsigned long long *)ctx)++;
	return 0;
}

static bool listed(const char *const *names, const char *name)
{
	for (; *names; names++)
		if (!strcmp(*names, name))
			return true;
	return false;
}

/* Writes a const volatile global of .rodata, found through the object's BTF. */
static void set_const(struct bpf_object *obj, const char *name, const void *value, size_t size)
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
		return;
	}
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
	unsigned long long events = 0;
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

		set_const(obj, "wakeup_bytes", &zero, sizeof(zero));
	}
	if (comm)
		set_const(obj, "targ_comm", comm, strlen(comm));
	bpf_object__for_each_program(prog, obj)
		bpf_program__set_autoload(prog, listed(progs, bpf_program__name(prog)));
	err = bpf_object__load(obj);
	if (err)
		fail("load the BPF object", err);
	for (const char *const *name = progs; *name; name++) {
		prog = bpf_object__find_program_by_name(obj, *name);
		links[nlinks] = prog ? bpf_program__attach(prog) : NULL;
		if (!links[nlinks])
			fail("attach a program", prog ? errno : ENOENT);
		nlinks++;
	}
	rb = ring_buffer__new(bpf_object__find_map_fd_by_name(obj, "events"), count_record,
			      &events, NULL);
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
	fprintf(stderr, "%llu events, %llu lost\n", events, read_lost(obj));
	ring_buffer__free(rb);
	bpf_object__close(obj);
	return 0;
}
