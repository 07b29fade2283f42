/*
 * channel_peer: one side of a vmshm_channel.h ring in a POSIX object (tests/test_ivshmem.py,
 * `vmshm channel --bench`).
 *
 *   channel_peer send|recv NAME OFFSET SIZE COUNT RING_FD WAIT_FD [init|attach] [LEN]
 *   channel_peer ping|pong NAME OFFSET SIZE COUNT RING_FD WAIT_FD attach LEN RX_OFFSET [BAD]
 *
 * Sends (or receives and checks) COUNT messages of msg_len(i) bytes of pattern(i, k) through
 * the ring at OFFSET (SIZE bytes) of the object NAME; `init` lays the ring out first. With LEN,
 * every message is LEN bytes of one byte value (i), and only its ends are checked: the bench's
 * loop. The doorbell is a pair of eventfds (an ivshmem peer's): ring writes 1 to RING_FD, wait
 * polls WAIT_FD. Prints "ok BYTES RINGS WAITS SECONDS" (SECONDS from the first message on) or
 * "error ...".
 *
 * ping and pong time round trips (`vmshm channel --bench`'s latency table): one message
 * outstanding, LEN bytes of the value i, sent through the ring at OFFSET and answered through
 * the ring at RX_OFFSET. pong sends back each message it receives as it came (its message BAD
 * altered in its last byte: the tests' deliberate break); ping sends message i, waits for the
 * echo, checks its length and every byte, and prints "rtt NS..." (each round trip on this
 * host's clock, in order), or "error ...".
 */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "vmshm_channel.h"

static int ring_fd, wait_fd;
static unsigned long rings, waits;

static void db_ring(void *ctx)
{
	uint64_t one = 1;

	(void)ctx;
	rings++;
	if (write(ring_fd, &one, 8) != 8)
		perror("ring");
}

static int db_wait(void *ctx, int timeout_ms)
{
	struct pollfd p = { .fd = wait_fd, .events = POLLIN };
	uint64_t count;

	(void)ctx;
	waits++;
	if (poll(&p, 1, timeout_ms) <= 0)
		return -ETIMEDOUT;
	if (read(wait_fd, &count, 8) != 8)
		return 0;           /* another reader took it: a spurious wake-up, harmless */
	return 0;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint32_t msg_len(uint32_t i)
{
	return i == 0 ? 1 : i == 1 ? 4096 : 1 + (i * 997u) % 4096;
}

static unsigned char pattern(uint32_t i, uint32_t k)
{
	return (unsigned char)(i * 7 + k * 13 + 1);
}

/* ping or pong COUNT messages of `len` bytes; tx and rx are attached rings. */
static int ping_pong(int ping, struct vmshm_ch *tx, struct vmshm_ch *rx,
		     const struct vmshm_doorbell *db, uint32_t count, uint32_t len, long bad)
{
	static unsigned char buf[4096], want[4096];
	static uint64_t rtt[1000000];
	int r;

	if (count > sizeof rtt / sizeof rtt[0]) {
		printf("error COUNT %u above %zu round trips\n", count, sizeof rtt / sizeof rtt[0]);
		return 2;
	}
	for (uint32_t i = 0; i < count; i++) {
		double t = now();

		memset(want, (int)(i & 0xff), len);
		if (ping && (r = vmshm_ch_send(tx, want, len, db, 20000))) {
			printf("error send %u: %d\n", i, r);
			return 1;
		}
		r = vmshm_ch_recv(rx, buf, sizeof buf, db, 20000);
		if (r < 0) {
			printf("error recv %u: %d\n", i, r);
			return 1;
		}
		if (ping) {
			rtt[i] = (uint64_t)((now() - t) * 1e9);
			if (r != (int)len || memcmp(buf, want, len)) {
				printf("error echo %u: %d bytes, first 0x%02x last 0x%02x; expected %u of "
				       "0x%02x\n", i, r, r > 0 ? buf[0] : 0, r > 0 ? buf[r - 1] : 0, len,
				       i & 0xff);
				return 1;
			}
			continue;
		}
		if (r > 0 && (long)i == bad)
			buf[r - 1] ^= 0x5a;
		if ((r = vmshm_ch_send(tx, buf, (uint32_t)r, db, 20000))) {
			printf("error echo %u: %d\n", i, r);
			return 1;
		}
	}
	if (!ping) {
		printf("echoed %u\n", count);
		return 0;
	}
	printf("rtt");
	for (uint32_t i = 0; i < count; i++)
		printf(" %llu", (unsigned long long)rtt[i]);
	printf("\n");
	return 0;
}

int main(int argc, char **argv)
{
	static unsigned char buf[8192];
	struct vmshm_doorbell db = { db_ring, db_wait, NULL };
	struct vmshm_ch ch;
	unsigned long bytes = 0, offset, size, count, fixed, rx_offset;
	double t0 = 0;
	unsigned char *mem;
	int fd, r;

	if (argc < 8) {
		fprintf(stderr, "usage: %s send|recv NAME OFFSET SIZE COUNT RING_FD WAIT_FD [init]\n",
			argv[0]);
		return 2;
	}
	offset = strtoul(argv[3], NULL, 0);
	size = strtoul(argv[4], NULL, 0);
	count = strtoul(argv[5], NULL, 0);
	ring_fd = atoi(argv[6]);
	wait_fd = atoi(argv[7]);
	fixed = argc > 9 ? strtoul(argv[9], NULL, 0) : 0;
	if (fixed > 4096) {
		printf("error LEN %lu above 4096\n", fixed);
		return 2;
	}
	fd = shm_open(argv[2], O_RDWR, 0);
	if (fd < 0) {
		perror(argv[2]);
		return 2;
	}
	/* ping and pong map their second ring too, wherever it lies */
	rx_offset = argc > 10 ? strtoul(argv[10], NULL, 0) : offset;
	mem = mmap(NULL, (rx_offset > offset ? rx_offset : offset) + size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (mem == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	r = argc > 8 && !strcmp(argv[8], "init") ? vmshm_ch_init(&ch, mem + offset, size)
						 : vmshm_ch_attach(&ch, mem + offset, size);
	if (r) {
		printf("error channel %d\n", r);
		return 1;
	}
	if (!strcmp(argv[1], "ping") || !strcmp(argv[1], "pong")) {
		struct vmshm_ch rx;

		if (argc < 11 || !fixed || (rx_offset < offset + size && offset < rx_offset + size)) {
			printf("error %s needs attach LEN RX_OFFSET (another ring's)\n", argv[1]);
			return 2;
		}
		if (vmshm_ch_attach(&rx, mem + rx_offset, size)) {
			printf("error channel at %#lx\n", rx_offset);
			return 1;
		}
		return ping_pong(argv[1][1] == 'i', &ch, &rx, &db, count, fixed,
				 argc > 11 ? strtol(argv[11], NULL, 0) : -1);
	}
	printf("capacity %u\n", ch.capacity);
	fflush(stdout);
	t0 = now();
	for (uint32_t i = 0; i < count; i++) {
		uint32_t len = fixed ? fixed : msg_len(i);

		if (!strcmp(argv[1], "send")) {
			if (fixed)
				memset(buf, (int)(i & 0xff), len);
			else
				for (uint32_t k = 0; k < len; k++)
					buf[k] = pattern(i, k);
			r = vmshm_ch_send(&ch, buf, len, &db, 20000);
			if (r) {
				printf("error send %u: %d\n", i, r);
				return 1;
			}
		} else {
			r = vmshm_ch_recv(&ch, buf, sizeof buf, &db, 20000);
			if (i == 0)
				t0 = now();
			if (r != (int)len) {
				printf("error recv %u: %d, expected %u\n", i, r, len);
				return 1;
			}
			if (fixed ? buf[0] != (i & 0xff) || buf[len - 1] != (i & 0xff) : 0) {
				printf("error data %u\n", i);
				return 1;
			}
			for (uint32_t k = 0; !fixed && k < len; k++)
				if (buf[k] != pattern(i, k)) {
					printf("error data %u at %u\n", i, k);
					return 1;
				}
		}
		bytes += len;
	}
	printf("ok %lu %lu %lu %.6f\n", bytes, rings, waits, now() - t0);
	return 0;
}
