// SPDX-License-Identifier: MIT
/*
 * vmshm_channel_bench: `vmshm channel --bench`'s program in a VMShm guest. The channel
 * (vmshm_channel.h) through /dev/vmshm0: the window mmap'd, VMSHM_IOCTL_RING to wake the other
 * side, poll and a blocking read of the device to sleep.
 *
 *   vmshm_channel_bench host NAME COUNT LEN...
 *       the partner is the host, as for ivshmem/ivshmem_peer.c's bench (same layout): wait for
 *       the host's directory at 0 (magic "GO!!", 2, the host's ID, this guest's), then for each
 *       LEN send COUNT messages to the host through the ring at BENCH_TX(k) and receive COUNT
 *       from it at BENCH_RX(k); then echo COUNT of the host's round trips (vmshm_ch_echo, from
 *       BENCH_RX(0) back through BENCH_TX(0)).
 *   vmshm_channel_bench pair NAME COUNT LEN...
 *       under `vmshm qemu --guests 2`: guest 0 lays out a ring at BENCH_TX(k) for each LEN,
 *       writes $VMSHM_SESSION at PAIR_READY, and sends COUNT messages of each LEN; guest 1
 *       attaches once it reads the session and receives them. Then round trips between the
 *       two: guest 1 lays out a ring back at BENCH_RX(0), writes the session at PAIR_BACK and
 *       echoes COUNT messages (vmshm_ch_echo); guest 0 sends each (RTT_LEN bytes of i & 0xff)
 *       through BENCH_TX(0), waits for its echo, checks it and times it on its own clock:
 *       "ping COUNT" before, "rtt NS..." after (the host checks that clock against its own by
 *       when those two lines arrive).
 *
 * Message i of a row is LEN bytes of the value i & 0xff; every byte received is checked, and
 * its length, so a lost, reordered or altered message fails the run. Prints "id ID", "ready",
 * "tx LEN COUNT SECONDS" / "rx LEN COUNT SECONDS" (the guest's clock; a receiver's starts at
 * its first message, when it also prints "first LEN"), "done"; "error ..." and status 1 on
 * failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "vmshm_channel.h"
#include "vmshm_channel_pump.h"
#include "vmshm_ioctl.h"

#define DIR_MAGIC	0x21214f47u		/* "GO!!", ivshmem_peer.c's */
#define SLOT		0x10000u
#define BENCH_TX(k)	(SLOT * (1u + 2u * (k)))
#define BENCH_RX(k)	(SLOT * (2u + 2u * (k)))
#define PAIR_READY	0x100u
#define PAIR_BACK	0x104u
#define RTT_LEN		64u
#define MAX_SIZES	7			/* 15 slots: the default 1 MiB window */
#define WAIT_MS		60000

static int fd;
static unsigned long rings, waits;

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void db_ring(void *ctx)
{
	rings++;
	if (ioctl(fd, VMSHM_IOCTL_RING, VMSHM_DOORBELL((uintptr_t)ctx, 0)))
		printf("error ring: %s\n", strerror(errno));
}

static int db_wait(void *ctx, int timeout_ms)
{
	struct pollfd p = {fd, POLLIN, 0};
	uint32_t n;

	(void)ctx;
	waits++;
	if (poll(&p, 1, timeout_ms) != 1)
		return -ETIMEDOUT;
	return read(fd, &n, 4) == 4 ? 0 : -errno;
}

static int send_row(struct vmshm_ch *ch, struct vmshm_doorbell *db, uint32_t len,
		    uint32_t count)
{
	static unsigned char buf[4096];
	double t = now();

	for (uint32_t i = 0; i < count; i++) {
		memset(buf, (int)(i & 0xff), len);
		if (vmshm_ch_send(ch, buf, len, db, WAIT_MS)) {
			printf("error send %u of %u bytes\n", i, len);
			return 1;
		}
	}
	printf("tx %u %u %.6f\n", len, count, now() - t);
	fflush(stdout);
	return 0;
}

static int recv_row(struct vmshm_ch *ch, struct vmshm_doorbell *db, uint32_t len,
		    uint32_t count)
{
	static unsigned char buf[4096], want[4096];
	double t = now();

	for (uint32_t i = 0; i < count; i++) {
		int got = vmshm_ch_recv(ch, buf, sizeof buf, db, WAIT_MS);

		memset(want, (int)(i & 0xff), len);
		if (got != (int)len || memcmp(buf, want, len)) {
			printf("error message %u: %d bytes, first 0x%02x; expected %u of 0x%02x\n", i,
			       got, got > 0 ? buf[0] : 0, len, i & 0xff);
			return 1;
		}
		if (i == 0) {
			t = now();
			/* The host times the row by when this line and the last arrive: a guest's
			 * clock under TCG runs fast on a loaded machine. */
			printf("first %u\n", len);
			fflush(stdout);
		}
	}
	printf("rx %u %u %.6f\n", len, count, now() - t);
	fflush(stdout);
	return 0;
}

/* Guest 0's side of the round trips with guest 1: see the header. */
static int ping_row(struct vmshm_ch *tx, struct vmshm_ch *rx, struct vmshm_doorbell *db,
		    uint32_t count)
{
	static unsigned char buf[4096], want[RTT_LEN];
	uint64_t *ns = calloc(count ? count : 1, sizeof *ns);

	if (!ns) {
		printf("error no memory for %u round trips\n", count);
		return 1;
	}
	printf("ping %u\n", count);
	fflush(stdout);
	for (uint32_t i = 0; i < count; i++) {
		double t = now();
		int got;

		memset(want, (int)(i & 0xff), RTT_LEN);
		if (vmshm_ch_send(tx, want, RTT_LEN, db, WAIT_MS)) {
			printf("error ping send %u\n", i);
			return 1;
		}
		got = vmshm_ch_recv(rx, buf, sizeof buf, db, WAIT_MS);
		ns[i] = (uint64_t)((now() - t) * 1e9);
		if (got != (int)RTT_LEN || memcmp(buf, want, RTT_LEN)) {
			printf("error echo %u: %d bytes, first 0x%02x; expected %u of 0x%02x\n", i, got,
			       got > 0 ? buf[0] : 0, RTT_LEN, i & 0xff);
			return 1;
		}
	}
	printf("rtt");
	for (uint32_t i = 0; i < count; i++)
		printf(" %llu", (unsigned long long)ns[i]);
	printf("\n");
	fflush(stdout);
	free(ns);
	return 0;
}

static int fail(const char *what)
{
	printf("error %s: %s\n", what, strerror(errno));
	return 1;
}

int main(int argc, char **argv)
{
	struct vmshm_ch tx, rx;
	struct vmshm_doorbell db = {db_ring, db_wait, NULL};
	volatile uint32_t *words;
	unsigned char *shm;
	uint32_t count, len, partner, session = 0;
	int me, pair, index = 0, sizes = argc - 4;
	const char *env;
	double t0;

	if (argc < 5 || sizes > MAX_SIZES || (strcmp(argv[1], "host") && strcmp(argv[1], "pair"))) {
		fprintf(stderr, "usage: %s host|pair NAME COUNT LEN... (at most %d LEN)\n", argv[0],
			MAX_SIZES);
		return 2;
	}
	pair = !strcmp(argv[1], "pair");
	count = strtoul(argv[3], NULL, 0);
	fd = open("/dev/vmshm0", O_RDWR);
	if (fd < 0)
		return fail("open");
	if (ioctl(fd, VMSHM_IOCTL_OPEN, argv[2]))
		return fail("ioctl open");
	shm = mmap(NULL, BENCH_RX(sizes - 1) + SLOT, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (shm == MAP_FAILED)
		return fail("mmap");
	words = (volatile uint32_t *)shm;
	me = ioctl(fd, VMSHM_IOCTL_IVPOSITION);
	if (me < 0)
		return fail("ivposition");
	printf("id %d\nready\n", me);
	fflush(stdout);
	t0 = now();
	if (pair) {
		unsigned ids[2];

		env = getenv("VMSHM_PEERS");
		if (!env || sscanf(env, "%u %u", &ids[0], &ids[1]) != 2 || !getenv("VMSHM_GUEST")
		    || !getenv("VMSHM_SESSION")) {
			printf("error pair needs vmshm qemu --guests 2\n");
			return 2;
		}
		index = atoi(getenv("VMSHM_GUEST"));
		session = strtoul(getenv("VMSHM_SESSION"), NULL, 0);
		partner = ids[1 - index];
	} else {
		while (words[0] != DIR_MAGIC) {
			if (now() - t0 > 120) {
				printf("error no directory\n");
				return 1;
			}
			usleep(10000);
		}
		partner = words[2];
	}
	db.ctx = (void *)(uintptr_t)partner;
	if (pair && index == 1) {
		while (words[PAIR_READY / 4] != session) {
			if (now() - t0 > 120) {
				printf("error guest 0 never laid out the rings\n");
				return 1;
			}
			usleep(10000);
		}
	}
	for (int k = 0; k < sizes; k++) {
		len = strtoul(argv[4 + k], NULL, 0);
		if (len < 1 || len > 4096) {
			printf("error length %u\n", len);
			return 2;
		}
		if (pair && index == 0) {
			if (vmshm_ch_init(&tx, shm + BENCH_TX(k), SLOT))
				return fail("init");
			continue;
		}
		if (vmshm_ch_attach(&tx, shm + BENCH_TX(k), SLOT)
		    || (!pair && vmshm_ch_attach(&rx, shm + BENCH_RX(k), SLOT))) {
			printf("error attach %u\n", len);
			return 1;
		}
		if (pair ? recv_row(&tx, &db, len, count)
			 : send_row(&tx, &db, len, count) || recv_row(&rx, &db, len, count))
			return 1;
	}
	if (pair && index == 0) {
		atomic_thread_fence(memory_order_seq_cst);
		words[PAIR_READY / 4] = session;
		for (int k = 0; k < sizes; k++) {
			len = strtoul(argv[4 + k], NULL, 0);
			if (vmshm_ch_attach(&tx, shm + BENCH_TX(k), SLOT)
			    || send_row(&tx, &db, len, count))
				return 1;
		}
	}
	/* Round trips between the two guests: guest 1 lays out the way back at BENCH_RX(0). */
	if (pair && index == 1) {
		if (vmshm_ch_init(&rx, shm + BENCH_RX(0), SLOT)
		    || vmshm_ch_attach(&tx, shm + BENCH_TX(0), SLOT))
			return fail("init the way back");
		atomic_thread_fence(memory_order_seq_cst);
		words[PAIR_BACK / 4] = session;
		/* Echo what arrives through BENCH_TX(0) back through BENCH_RX(0). */
		if (vmshm_ch_echo(&tx, &rx, count, &db, WAIT_MS))
			return 1;
	}
	if (pair && index == 0) {
		while (words[PAIR_BACK / 4] != session) {
			if (now() - t0 > 300) {
				printf("error guest 1 never laid out the way back\n");
				return 1;
			}
			usleep(10000);
		}
		if (vmshm_ch_attach(&tx, shm + BENCH_TX(0), SLOT)
		    || vmshm_ch_attach(&rx, shm + BENCH_RX(0), SLOT)
		    || ping_row(&tx, &rx, &db, count))
			return 1;
	}
	/* The first size's rings are empty now: the host's round trips reuse them. */
	if (!pair && (vmshm_ch_attach(&tx, shm + BENCH_TX(0), SLOT)
		      || vmshm_ch_attach(&rx, shm + BENCH_RX(0), SLOT)
		      || vmshm_ch_echo(&rx, &tx, count, &db, WAIT_MS)))
		return 1;
	printf("rings %lu waits %lu\ndone\n", rings, waits);
	return 0;
}
