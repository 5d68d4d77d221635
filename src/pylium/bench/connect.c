/* The services bench's client: `connect COUNT WARMUP IP:PORT...` makes WARMUP untimed and then
 * COUNT timed rounds; each round opens one fresh TCP connection to every target in turn, timed
 * with CLOCK_MONOTONIC around the connect() syscall alone. Taking the targets in turn puts
 * them under the same conditions (a loaded machine drifts between fast and slow phases).
 * Prints one JSON list of nanoseconds per target, in a list. Each socket closes with RST
 * (SO_LINGER 0) so no TIME_WAIT piles up. In C so that the client's own cost stays far below
 * the microseconds it measures; every mode uses it. Built by pylium/bench/services.py. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_TARGETS 4

static int parse(const char *arg, struct sockaddr_in *addr)
{
	char ip[INET_ADDRSTRLEN];
	const char *colon = strrchr(arg, ':');

	if (!colon || (size_t)(colon - arg) >= sizeof(ip))
		return -1;
	memcpy(ip, arg, colon - arg);
	ip[colon - arg] = 0;
	addr->sin_family = AF_INET;
	addr->sin_port = htons((unsigned short)atoi(colon + 1));
	return inet_pton(AF_INET, ip, &addr->sin_addr) == 1 ? 0 : -1;
}

/* Nanoseconds of one connect() to addr, or -1. */
static long long timed_connect(const struct sockaddr_in *addr)
{
	struct linger linger = {.l_onoff = 1, .l_linger = 0};
	struct timespec start, end;
	int fd, ret;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, sizeof(linger))) {
		perror("socket");
		return -1;
	}
	clock_gettime(CLOCK_MONOTONIC, &start);
	ret = connect(fd, (const struct sockaddr *)addr, sizeof(*addr));
	clock_gettime(CLOCK_MONOTONIC, &end);
	close(fd);
	if (ret) {
		perror("connect");
		return -1;
	}
	return (end.tv_sec - start.tv_sec) * 1000000000LL + (end.tv_nsec - start.tv_nsec);
}

int main(int argc, char **argv)
{
	struct sockaddr_in addrs[MAX_TARGETS] = {};
	int count, warmup, targets = argc - 3;
	long long *ns;

	if (argc < 4 || targets > MAX_TARGETS) {
		fprintf(stderr, "usage: %s COUNT WARMUP IP:PORT [IP:PORT...]\n", argv[0]);
		return 2;
	}
	count = atoi(argv[1]);
	warmup = atoi(argv[2]);
	for (int t = 0; t < targets; t++) {
		if (parse(argv[3 + t], &addrs[t])) {
			fprintf(stderr, "not IPv4:PORT: %s\n", argv[3 + t]);
			return 2;
		}
	}
	ns = calloc((size_t)count * targets, sizeof(*ns));
	if (!ns)
		return 1;
	for (int i = 0; i < warmup + count; i++) {
		for (int t = 0; t < targets; t++) {
			long long took = timed_connect(&addrs[t]);

			if (took < 0)
				return 1;
			if (i >= warmup)
				ns[(i - warmup) * targets + t] = took;
		}
	}
	printf("[");
	for (int t = 0; t < targets; t++) {
		printf("%s[", t ? "," : "");
		for (int i = 0; i < count; i++)
			printf("%s%lld", i ? "," : "", ns[i * targets + t]);
		printf("]");
	}
	printf("]\n");
	free(ns);
	return 0;
}
