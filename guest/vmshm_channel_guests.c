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
 * messages and receives COUNT, interleaved in one loop: a message is its sequence number, the
 * sender's index and a pattern of 8..64 bytes that depends on both; every message received is
 * checked (length, sequence, sender, every byte), so a lost, repeated, reordered or corrupted one
 * ends the run with status 1. Lines "key value..." say what happened.
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
#include "vmshm_ioctl.h"

#define RING_BYTES	0x1000			/* capacity 2048: CI's count wraps it several times */
#define READY		(2 * RING_BYTES)	/* guest 0's session number: the rings are laid out */
#define MAP_BYTES	(READY + 0x1000)
#define MAX_LEN		64
#define STALL_S		120			/* no progress for this long: the peer is gone */

static int fd;
static unsigned peer_id;
static unsigned long rings, waits;

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void ring_peer(void)
{
	rings++;
	if (ioctl(fd, VMSHM_IOCTL_RING, VMSHM_DOORBELL(peer_id, 0)))
		printf("error ring: %s\n", strerror(errno));
}

/* Sleep until the device interrupts (a peer rang), or `ms` pass: spurious wake-ups are fine. */
static void wait_ring(int ms)
{
	struct pollfd p = {fd, POLLIN, 0};
	uint32_t n;

	waits++;
	if (poll(&p, 1, ms) == 1 && read(fd, &n, 4) != 4)
		printf("error read: %s\n", strerror(errno));
}

static uint32_t msg_len(uint32_t seq)
{
	return 8 + (seq * 13u) % (MAX_LEN - 7);
}

static uint8_t pattern(uint32_t seq, unsigned from, uint32_t i)
{
	return (uint8_t)(seq * 31u + i * 7u + from * 101u + 1u);
}

static void make(uint8_t *m, uint32_t seq, unsigned from)
{
	uint32_t i, len = msg_len(seq);

	memcpy(m, &seq, 4);
	m[4] = (uint8_t)from;
	m[5] = m[6] = m[7] = 0xA5;
	for (i = 8; i < len; i++)
		m[i] = pattern(seq, from, i);
}

static int check(const uint8_t *m, int len, uint32_t seq, unsigned from)
{
	uint8_t want[MAX_LEN];

	make(want, seq, from);
	if ((uint32_t)len != msg_len(seq) || memcmp(m, want, len)) {
		uint32_t got_seq;

		memcpy(&got_seq, m, 4);
		printf("error message %u: %d bytes, sequence %u, from %u; expected %u bytes, "
		       "sequence %u, from %u%s\n", seq, len, got_seq, m[4], msg_len(seq), seq, from,
		       (uint32_t)len == msg_len(seq) && got_seq == seq ? ", pattern differs" : "");
		return -1;
	}
	return 0;
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
	volatile uint8_t *mem;
	volatile uint32_t *ready;
	uint8_t buf[MAX_LEN], rbuf[MAX_LEN];
	uint32_t count, sent = 0, got = 0, session;
	unsigned me, ids[2];
	double t0, last;
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
	t0 = last = now();
	while (sent < count || got < count) {
		int progress = 0, r, ring;
		_Atomic uint32_t *pw = vmshm_ch_word(&out, VMSHM_CH_OFF_PROD_WAITING);
		_Atomic uint32_t *cw = vmshm_ch_word(&in, VMSHM_CH_OFF_CONS_WAITING);

		if (sent < count) {
			make(buf, sent, me);
			r = vmshm_ch_try_send(&out, buf, msg_len(sent));
			if (r >= 0) {
				if (r)
					ring_peer();
				sent++;
				progress = 1;
			} else if (r != -EAGAIN) {
				errno = -r;
				return fail("send");
			}
		}
		if (got < count) {
			r = vmshm_ch_try_recv(&in, rbuf, sizeof(rbuf), &ring);
			if (r >= 0) {
				if (check(rbuf, r, got, 1 - me))
					return 1;
				if (ring)
					ring_peer();
				got++;
				progress = 1;
			} else if (r != -EAGAIN) {
				errno = -r;
				return fail("recv");
			}
		}
		if (progress) {
			last = now();
			continue;
		}
		/* Neither side can move: say so in both rings, look again, then sleep. */
		if (sent < count)
			atomic_store_explicit(pw, 1, memory_order_relaxed);
		if (got < count)
			atomic_store_explicit(cw, 1, memory_order_relaxed);
		atomic_thread_fence(memory_order_seq_cst);
		if (!((sent < count && vmshm_ch_fits(&out, msg_len(sent)))
		      || (got < count && !vmshm_ch_empty(&in))))
			wait_ring(500);
		atomic_store_explicit(pw, 0, memory_order_relaxed);
		atomic_store_explicit(cw, 0, memory_order_relaxed);
		if (now() - last > STALL_S) {
			printf("error stalled: sent %u received %u of %u\n", sent, got, count);
			return 1;
		}
	}
	t0 = now() - t0;
	/* One line, so two guests' summaries never interleave. */
	printf("sent %u received %u checked; %.2f s, %.0f messages/s each way; rings %lu "
	       "waits %lu\n", sent, got, t0, t0 > 0 ? count / t0 : 0.0, rings, waits);
	return 0;
}
