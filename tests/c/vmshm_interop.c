// SPDX-License-Identifier: MIT
/*
 * vmshm_interop: the VMShm guest of tests/test_vmshm_ivshmem_qemu.py, run by
 * `vmshm qemu --ivshmem SOCKET --run`; its partner is QEMU's ivshmem-doorbell
 * in another guest (ivshmem/ivshmem_peer.c interop) on the same server and
 * object.
 *
 *   vmshm_interop OBJECT
 *
 * Maps OBJECT through /dev/vmshm0, publishes its IVPOSITION in the object,
 * waits for the partner's ID, writes a greeting, rings the partner and
 * sleeps in read() until the partner rings back; then prints the partner's
 * greeting.  Lines "key value..." say what happened; exit status 0 on success.
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

#include "vmshm_ioctl.h"

/* Shared with ivshmem_peer.c's interop mode: offsets into the object. */
#define IOP_VMSHM_ID	0x9000	/* 'V' << 24 | the VMShm guest's peer ID */
#define IOP_IVSHMEM_ID	0x9004	/* 'I' << 24 | the ivshmem guest's peer ID */
#define IOP_MSG_VMSHM	0x9100	/* the VMShm guest's greeting, NUL-ended */
#define IOP_MSG_IVSHMEM	0x9200	/* the ivshmem guest's greeting */
#define IOP_MSG_MAX	0x100
#define MAP_BYTES	0x10000

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
	uint32_t partner, n;
	int fd, me, i, tries;

	if (argc != 2) {
		fprintf(stderr, "usage: %s OBJECT\n", argv[0]);
		return 100;
	}
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
	munmap((void *)mem, MAP_BYTES);
	close(fd);
	return 0;
}
