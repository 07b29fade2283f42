// SPDX-License-Identifier: MIT
/*
 * vmshm_channel_guests: two VMShm guests exchange messages through vmshm_channel.h, each through
 * its own /dev/vmshm0 (the window mmap'd, VMSHM_IOCTL_RING to wake the other, a blocking read
 * to sleep), run by
 *
 *   vmshm qemu --guests 2 --shm NAME --ivshmem SOCKET \
 *       --run guest/vmshm_channel_guests.c -- NAME COUNT
 *
 * which sets VMSHM_GUEST (0 or 1), VMSHM_PEERS (both peer IDs, in guest order) and VMSHM_SESSION
 * (a number new each run). Guest 0 lays out two rings in the object (0 -> 1 at 0, 1 -> 0 at
 * RING_BYTES) and then writes the session number at READY; guest 1 attaches once it reads it
 * (so a ring left from an earlier run is never taken for this one's). Each guest sends COUNT
 * messages and receives COUNT, interleaved in one loop (vmshm_channel_pump.h: every message
 * checked, so a lost, repeated, reordered or corrupted one ends the run with status 1). Lines
 * "key value..." say what happened.
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

#define RING_BYTES	0x1000			/* capacity 2048: CI's count wraps it several times */
#define READY		(2 * RING_BYTES)	/* guest 0's session number: the rings are laid out */
#define MAP_BYTES	(READY + 0x1000)

static int fd;
static unsigned peer_id;

static void ring_peer(void *ctx)
{
	(void)ctx;
	if (ioctl(fd, VMSHM_IOCTL_RING, VMSHM_DOORBELL(peer_id, 0)))
		printf("error ring: %s\n", strerror(errno));
}

/* Sleep until the device interrupts (a peer rang), or `ms` pass: spurious wake-ups are fine. */
static int wait_ring(void *ctx, int ms)
{
	struct pollfd p = {fd, POLLIN, 0};
	uint32_t n;

	(void)ctx;
	if (poll(&p, 1, ms) != 1)
		return -ETIMEDOUT;
	return read(fd, &n, 4) == 4 ? 0 : -errno;
}

static int fail(const char *what)
{
	printf("error %s: %s\n", what, strerror(errno));
	return 1;
}

int main(int argc, char **argv)
{
	const char *g = getenv("VMSHM_GUEST"), *peers = getenv("VMSHM_PEERS");
	const char *session_s = getenv("VMSHM_SESSION");
	struct vmshm_ch out, in;
	struct vmshm_doorbell db = {ring_peer, wait_ring, NULL};
	struct vmshm_pump_stats stats = {0};
	volatile uint8_t *mem;
	volatile uint32_t *ready;
	uint32_t count, session;
	unsigned me, ids[2];
	int tries;

	if (argc != 3 || !g || !peers || !session_s
	    || sscanf(peers, "%u %u", &ids[0], &ids[1]) != 2) {
		fprintf(stderr, "usage: %s OBJECT COUNT, under vmshm qemu --guests 2\n", argv[0]);
		return 2;
	}
	me = (unsigned)atoi(g);
	count = (uint32_t)strtoul(argv[2], NULL, 0);
	session = (uint32_t)strtoul(session_s, NULL, 0);
	if (me > 1) {
		fprintf(stderr, "%s: two guests only (this is guest %u)\n", argv[0], me);
		return 2;
	}
	peer_id = ids[1 - me];
	/* Opened before the rings exist: a ring from the peer from now on is not lost. */
	fd = open("/dev/vmshm0", O_RDWR);
	if (fd < 0)
		return fail("open");
	if (ioctl(fd, VMSHM_IOCTL_OPEN, argv[1]))
		return fail("ioctl open");
	mem = mmap(NULL, MAP_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (mem == MAP_FAILED)
		return fail("mmap");
	tries = ioctl(fd, VMSHM_IOCTL_IVPOSITION);
	printf("guest %u id %d peer %u\n", me, tries, peer_id);
	if (tries != (int)ids[me]) {
		printf("error IVPOSITION %d is not VMSHM_PEERS' entry %u for this guest\n", tries,
		       ids[me]);
		return 1;
	}
	fflush(stdout);
	ready = (volatile uint32_t *)(mem + READY);
	if (me == 0) {
		if (vmshm_ch_init(&out, (void *)mem, RING_BYTES)
		    || vmshm_ch_init(&in, (void *)(mem + RING_BYTES), RING_BYTES))
			return fail("init");
		atomic_thread_fence(memory_order_seq_cst);
		*ready = session;
	} else {
		for (tries = 0; *ready != session; tries++) {
			if (tries > 9000) {
				printf("error guest 0 never laid out the rings\n");
				return 1;
			}
			usleep(20000);
		}
		if (vmshm_ch_attach(&in, (void *)mem, RING_BYTES)
		    || vmshm_ch_attach(&out, (void *)(mem + RING_BYTES), RING_BYTES))
			return fail("attach");
	}
	printf("rings ready, capacity %u\n", out.capacity);
	fflush(stdout);
	return vmshm_pump(&out, &in, count, me, 1 - me, &db, &stats);
}
