/* The services bench's client: times COUNT fresh TCP connect()s to IP:PORT (after WARMUP
 * untimed ones) with CLOCK_MONOTONIC around the syscall alone, and prints the nanoseconds as a
 * JSON list. Each socket closes with RST (SO_LINGER 0) so no TIME_WAIT piles up. In C so that
 * the client's own cost stays far below the microseconds it measures; every mode uses it.
 * Built by pylium/bench/services.py with the system C compiler. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct sockaddr_in addr = {.sin_family = AF_INET};
	struct linger linger = {.l_onoff = 1, .l_linger = 0};
	struct timespec start, end;
	int count, warmup, fd, ret;

	if (argc != 5) {
		fprintf(stderr, "usage: %s IP PORT COUNT WARMUP\n", argv[0]);
		return 2;
	}
	if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
		fprintf(stderr, "not an IPv4 address: %s\n", argv[1]);
		return 2;
	}
	addr.sin_port = htons((unsigned short)atoi(argv[2]));
	count = atoi(argv[3]);
	warmup = atoi(argv[4]);
	printf("[");
	for (int i = 0; i < warmup + count; i++) {
		fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, sizeof(linger))) {
			perror("socket");
			return 1;
		}
		clock_gettime(CLOCK_MONOTONIC, &start);
		ret = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
		clock_gettime(CLOCK_MONOTONIC, &end);
		if (ret) {
			perror("connect");
			return 1;
		}
		close(fd);
		if (i >= warmup)
			printf("%s%lld", i > warmup ? "," : "",
			       (end.tv_sec - start.tv_sec) * 1000000000LL + (end.tv_nsec - start.tv_nsec));
	}
	printf("]\n");
	return 0;
}
