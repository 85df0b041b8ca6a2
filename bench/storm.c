// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The unlink storm that bench/run.ts traces: create+unlink pairs on /dev/shm,
 * as fast as possible or at a fixed rate, under the comm "dbpf_storm" so that
 * every tracer can filter on it.
 *
 *   storm full WRITERS PAIRS     WRITERS processes, PAIRS pairs each, full speed
 *   storm paced RATE SECONDS     one writer, RATE pairs/s, evenly spaced
 *   storm trickle COUNT MS       COUNT pairs, MS apart; before each unlink prints
 *                                "T <CLOCK_REALTIME ns> <path>"
 *
 * The environment variable DBPF_STORM_COMM sets another comm (at most 15 bytes
 * are kept), so that a test's storm cannot be confused with a bench's.
 *
 * A pair is open(O_CREAT) + close + unlink of a per-writer file name. The last
 * line is JSON: {"unlinks":N,"seconds":S,"rate":R}, N being the exact number of
 * unlink calls made (all succeeded, or the storm fails).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define COMM "dbpf_storm"
#define MAX_WRITERS 64

static void die(const char *what, const char *path)
{
	fprintf(stderr, "storm: cannot %s %s: %s\n", what, path, strerror(errno));
	exit(1);
}

static double now_s(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void create(const char *path)
{
	int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);

	if (fd < 0)
		die("create", path);
	close(fd);
}

static void pair(const char *path)
{
	create(path);
	if (unlink(path))
		die("unlink", path);
}

static long number(const char *text, const char *what)
{
	char *end;
	long n = strtol(text, &end, 10);

	if (*text == '\0' || *end != '\0' || n <= 0) {
		fprintf(stderr, "storm: %s must be a positive integer, got \"%s\"\n", what, text);
		exit(2);
	}
	return n;
}

static void report(long unlinks, double seconds)
{
	printf("{\"unlinks\":%ld,\"seconds\":%.6f,\"rate\":%.1f}\n", unlinks, seconds,
	       unlinks / seconds);
}

/* WRITERS children start together on a pipe's EOF and count into shared memory. */
static void full(long writers, long pairs)
{
	long *done = mmap(NULL, sizeof(long) * MAX_WRITERS, PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int gate[2];
	long total = 0;
	double start;

	if (writers > MAX_WRITERS) {
		fprintf(stderr, "storm: at most %d writers\n", MAX_WRITERS);
		exit(2);
	}
	if (done == MAP_FAILED || pipe(gate))
		die("set up", "writers");
	for (long w = 0; w < writers; w++) {
		pid_t pid = fork();
		char path[64], c;

		if (pid < 0)
			die("fork", "writer");
		if (pid > 0)
			continue;
		close(gate[1]);
		snprintf(path, sizeof(path), "/dev/shm/" COMM ".%d", getpid());
		if (read(gate[0], &c, 1) < 0)
			die("wait for", "start");
		for (long i = 0; i < pairs; i++, done[w]++)
			pair(path);
		_exit(0);
	}
	close(gate[0]);
	start = now_s(CLOCK_MONOTONIC);
	close(gate[1]);
	for (int status; wait(&status) > 0;) {
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "storm: a writer failed\n");
			exit(1);
		}
	}
	for (long w = 0; w < writers; w++)
		total += done[w];
	report(total, now_s(CLOCK_MONOTONIC) - start);
}

static void paced(long rate, long seconds)
{
	long pairs = rate * seconds, period_ns = 1000000000L / rate;
	struct timespec next;
	char path[64];
	double start;

	snprintf(path, sizeof(path), "/dev/shm/" COMM ".%d", getpid());
	prctl(PR_SET_TIMERSLACK, 1UL); /* sleeps of a few µs must stay that short */
	clock_gettime(CLOCK_MONOTONIC, &next);
	start = now_s(CLOCK_MONOTONIC);
	for (long i = 0; i < pairs; i++) {
		pair(path);
		next.tv_nsec += period_ns;
		if (next.tv_nsec >= 1000000000L) {
			next.tv_nsec -= 1000000000L;
			next.tv_sec++;
		}
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
	}
	report(pairs, now_s(CLOCK_MONOTONIC) - start);
}

static void trickle(long count, long interval_ms)
{
	struct timespec gap = { interval_ms / 1000, interval_ms % 1000 * 1000000L };
	struct timespec t;
	double start = now_s(CLOCK_MONOTONIC);
	char path[64];

	for (long i = 0; i < count; i++) {
		snprintf(path, sizeof(path), "/dev/shm/" COMM ".%d.t%ld", getpid(), i);
		create(path);
		nanosleep(&gap, NULL);
		clock_gettime(CLOCK_REALTIME, &t);
		printf("T %lld %s\n", (long long)t.tv_sec * 1000000000LL + t.tv_nsec, path);
		fflush(stdout);
		if (unlink(path))
			die("unlink", path);
	}
	report(count, now_s(CLOCK_MONOTONIC) - start);
}

int main(int argc, char **argv)
{
	const char *comm = getenv("DBPF_STORM_COMM");

	if (argc != 4) {
		fprintf(stderr, "usage: storm full WRITERS PAIRS | paced RATE SECONDS | "
				"trickle COUNT MS\n");
		return 2;
	}
	prctl(PR_SET_NAME, comm && *comm ? comm : COMM);
	if (!strcmp(argv[1], "full"))
		full(number(argv[2], "WRITERS"), number(argv[3], "PAIRS"));
	else if (!strcmp(argv[1], "paced"))
		paced(number(argv[2], "RATE"), number(argv[3], "SECONDS"));
	else if (!strcmp(argv[1], "trickle"))
		trickle(number(argv[2], "COUNT"), number(argv[3], "MS"));
	else {
		fprintf(stderr, "storm: unknown mode \"%s\": use full, paced or trickle\n", argv[1]);
		return 2;
	}
	return 0;
}
