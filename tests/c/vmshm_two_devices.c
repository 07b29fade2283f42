// SPDX-License-Identifier: MIT
/*
 * vmshm_two_devices: the guest of tests/test_qemu_guests.py's two-device boot, run by
 * `vmshm qemu --devices 2 --run`: for each of /dev/vmshm0 and /dev/vmshm1, open it, map the host
 * object named on the command line through it, write "written through /dev/vmshmN" at offset 0
 * and read it back, unmap and close. Both devices are open at once, so each keeps its own object.
 *
 *   vmshm_two_devices OBJECT0 OBJECT1
 *
 * Lines "key value..." say what happened; exit status 0 on success.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <errno.h>
#include <unistd.h>

#include "vmshm_ioctl.h"

#define MAP_BYTES 4096

int main(int argc, char **argv)
{
	volatile char *mem[2];
	char path[32], text[64];
	int fd[2], i;

	if (argc != 3) {
		fprintf(stderr, "usage: %s OBJECT0 OBJECT1\n", argv[0]);
		return 2;
	}
	for (i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "/dev/vmshm%d", i);
		fd[i] = open(path, O_RDWR);
		if (fd[i] < 0 || ioctl(fd[i], VMSHM_IOCTL_OPEN, argv[1 + i])) {
			printf("error %s: %s\n", path, strerror(errno));
			return 1;
		}
		mem[i] = mmap(NULL, MAP_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd[i], 0);
		if (mem[i] == MAP_FAILED) {
			printf("error mmap %s: %s\n", path, strerror(errno));
			return 1;
		}
		printf("opened %s %s\n", path, argv[1 + i]);
	}
	for (i = 0; i < 2; i++) {
		snprintf(text, sizeof(text), "written through /dev/vmshm%d", i);
		for (size_t k = 0; k <= strlen(text); k++)
			mem[i][k] = text[k];
	}
	for (i = 0; i < 2; i++) {
		char back[64];

		for (size_t k = 0; k < sizeof(back); k++)
			back[k] = mem[i][k];
		back[sizeof(back) - 1] = 0;
		printf("vmshm%d reads back: %s\n", i, back);
		munmap((void *)mem[i], MAP_BYTES);
		close(fd[i]);
	}
	return 0;
}
