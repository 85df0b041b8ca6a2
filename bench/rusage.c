// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Runs a command and writes what it cost, measured by the kernel for that
 * process alone (wait4), to a file as one JSON line:
 *
 *   rusage OUT CMD [ARGS...]
 *   => {"user_s":0.12,"sys_s":0.03,"maxrss_kib":45312,"status":0}
 *
 * SIGINT and SIGTERM are passed on to the command, so bench/run.ts can stop a
 * tracer through this wrapper and still get its CPU time including the final
 * drain. "status" is the exit code, or 128 + the signal that ended it. If the
 * wrapper itself dies, the command gets SIGTERM.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile pid_t child;

static void forward(int sig)
{
	if (child > 0)
		kill(child, sig);
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = forward };
	struct rusage ru;
	int status, code;
	FILE *out;

	if (argc < 3) {
		fprintf(stderr, "usage: rusage OUT CMD [ARGS...]\n");
		return 2;
	}
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	child = fork();
	if (child < 0) {
		fprintf(stderr, "rusage: cannot fork: %s\n", strerror(errno));
		return 1;
	}
	if (child == 0) {
		/* Never outlive this wrapper: if it is killed, stop the command too. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() == 1)
			_exit(1);
		execvp(argv[2], argv + 2);
		fprintf(stderr, "rusage: cannot run %s: %s\n", argv[2], strerror(errno));
		_exit(127);
	}
	while (wait4(child, &status, 0, &ru) < 0) {
		if (errno != EINTR) {
			fprintf(stderr, "rusage: wait failed: %s\n", strerror(errno));
			return 1;
		}
	}
	code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	out = fopen(argv[1], "w");
	if (!out) {
		fprintf(stderr, "rusage: cannot write %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	fprintf(out, "{\"user_s\":%.6f,\"sys_s\":%.6f,\"maxrss_kib\":%ld,\"status\":%d}\n",
		ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
		ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6, ru.ru_maxrss, code);
	fclose(out);
	return code;
}
