// SPDX-License-Identifier: MIT
/*
 * vmshm_interop: the VMShm guest of tests/test_vmshm_ivshmem_qemu.py, run by
 * `vmshm qemu --ivshmem SOCKET --run`; its partner is QEMU's ivshmem-doorbell
 * in another guest (ivshmem/ivshmem_peer.c interop) on the same server and
 * object.
 *
 *   vmshm_interop OBJECT [COUNT]
 *
 * Maps OBJECT through /dev/vmshm0, publishes its IVPOSITION in the object,
 * waits for the partner's ID, lays out two channels (vmshm_channel.h: to the
 * partner at IOP_CH_TO_IVSHMEM, from it at IOP_CH_TO_VMSHM), writes a
 * greeting, rings the partner and sleeps in read() until the partner rings
 * back; then prints the partner's greeting and exchanges COUNT checked
 * messages each way with it through the channels (vmshm_channel_pump.h: this
 * guest is sender 0, the partner 1), ringing through DOORBELL and sleeping on
 * the device's interrupt.  Lines "key value..." say what happened; exit
 * status 0 on success.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <poll.h>
#include <stdlib.h>

#include "vmshm_channel.h"
#include "vmshm_channel_pump.h"
#include "vmshm_ioctl.h"

/* Shared with ivshmem_peer.c's interop mode: offsets into the object. */
#define IOP_VMSHM_ID	0x9000	/* 'V' << 24 | the VMShm guest's peer ID */
#define IOP_IVSHMEM_ID	0x9004	/* 'I' << 24 | the ivshmem guest's peer ID */
#define IOP_MSG_VMSHM	0x9100	/* the VMShm guest's greeting, NUL-ended */
#define IOP_MSG_IVSHMEM	0x9200	/* the ivshmem guest's greeting */
#define IOP_MSG_MAX	0x100
#define IOP_CH_TO_IVSHMEM	0x10000	/* a ring from this guest to the partner */
#define IOP_CH_TO_VMSHM		0x11000	/* and back */
#define IOP_CH_BYTES		0x1000
#define MAP_BYTES	0x12000

static int fd;
static uint32_t partner;

static void db_ring(void *ctx)
{
	(void)ctx;
	if (ioctl(fd, VMSHM_IOCTL_RING, VMSHM_DOORBELL(partner, 0)))
		printf("error ring: %s\n", strerror(errno));
}

static int db_wait(void *ctx, int ms)
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
	volatile uint8_t *mem;
	volatile uint32_t *word;
	char msg[IOP_MSG_MAX];
	struct vmshm_ch out, in;
	struct vmshm_doorbell db = {db_ring, db_wait, NULL};
	struct vmshm_pump_stats stats = {0};
	uint32_t n, count;
	int me, i, tries;

	if (argc != 2 && argc != 3) {
		fprintf(stderr, "usage: %s OBJECT [COUNT]\n", argv[0]);
		return 100;
	}
	count = argc == 3 ? strtoul(argv[2], NULL, 0) : 0;
	fd = open("/dev/vmshm0", O_RDWR);
	if (fd < 0)
		return fail("open");
	if (ioctl(fd, VMSHM_IOCTL_OPEN, argv[1]))
		return fail("ioctl open");
	mem = mmap(NULL, MAP_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (mem == MAP_FAILED)
		return fail("mmap");
	me = ioctl(fd, VMSHM_IOCTL_IVPOSITION);
	if (me < 0)
		return fail("ivposition");
	printf("id %d\n", me);
	fflush(stdout);
	word = (volatile uint32_t *)(mem + IOP_VMSHM_ID);
	*word = 'V' << 24 | me;

	/* The partner says who it is: each look is a read of the device's window. */
	word = (volatile uint32_t *)(mem + IOP_IVSHMEM_ID);
	for (tries = 0; (*word >> 24) != 'I'; tries++) {
		if (tries > 9000) {
			printf("error no partner\n");
			return 1;
		}
		usleep(20000);
	}
	partner = *word & 0xffff;
	printf("partner %u\n", partner);

	/* The rings exist before the greeting: a partner that read it may attach. */
	if (vmshm_ch_init(&out, (void *)(mem + IOP_CH_TO_IVSHMEM), IOP_CH_BYTES)
	    || vmshm_ch_init(&in, (void *)(mem + IOP_CH_TO_VMSHM), IOP_CH_BYTES))
		return fail("init");
	atomic_thread_fence(memory_order_seq_cst);
	n = snprintf(msg, sizeof(msg), "hello from vmshm %d", me) + 1;
	for (i = 0; i < (int)n; i++)
		mem[IOP_MSG_VMSHM + i] = msg[i];
	if (ioctl(fd, VMSHM_IOCTL_RING, VMSHM_DOORBELL(partner, 0)))
		return fail("ring");
	printf("rang %u\n", partner);
	fflush(stdout);

	/* Sleep until the partner's ring interrupts this guest. */
	if (read(fd, &n, sizeof(n)) != sizeof(n))
		return fail("read");
	printf("interrupted %u\n", n);
	for (i = 0; i < IOP_MSG_MAX - 1; i++) {
		msg[i] = mem[IOP_MSG_IVSHMEM + i];
		if (!msg[i])
			break;
	}
	msg[i] = '\0';
	printf("got %s\n", msg);
	fflush(stdout);
	if (count && vmshm_pump(&out, &in, count, 0, 1, &db, &stats))
		return 1;
	munmap((void *)mem, MAP_BYTES);
	close(fd);
	return 0;
}
