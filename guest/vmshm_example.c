// SPDX-License-Identifier: MIT
/*
 * vmshm_example: the original VMShm userspace example, run inside the guest.
 *
 *   vmshm_example [NAME [DEVICE]]
 *
 * Opens DEVICE (/dev/vmshm0), asks the host for the shared-memory object NAME
 * (/shared-with-qemu), maps 1 MiB of it (or the object, if it is smaller),
 * prints the line at offset 0, writes "I was here: <pid>" there, unmaps and
 * closes.  Errors go to stderr with strerror(errno); the exit status is 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAP_BYTES (1 << 20)
#define LINE_BYTES 80

static int fail(const char *what, const char *arg)
{
	fprintf(stderr, "vmshm_example: %s %s: %s\n", what, arg, strerror(errno));
	return 1;
}

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "/shared-with-qemu";
	const char *path = argc > 2 ? argv[2] : "/dev/vmshm0";
	char line[LINE_BYTES + 1];
	size_t len = MAP_BYTES;
	char *mem = MAP_FAILED;
	int fd;

	fd = open(path, O_RDWR);
	if (fd < 0)
		return fail("open", path);
	if (ioctl(fd, 0, name) < 0) {
		fail("ioctl", name);
		close(fd);
		return 1;
	}
	/* The driver refuses a mapping past the object: halve until it fits. */
	while (len >= 4096) {
		mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (mem != MAP_FAILED || errno != EINVAL)
			break;
		len /= 2;
	}
	if (mem == MAP_FAILED) {
		fail("mmap", path);
		close(fd);
		return 1;
	}
	memcpy(line, mem, LINE_BYTES);
	line[LINE_BYTES] = '\0';
	printf("mapped %zu bytes of %s; offset 0 holds: %s\n", len, name, line);
	snprintf(line, sizeof(line), "I was here: %d", (int)getpid());
	memcpy(mem, line, strlen(line) + 1);
	printf("wrote: %s\n", line);
	if (munmap(mem, len) < 0)
		fail("munmap", path);
	if (close(fd) < 0)
		return fail("close", path);
	return 0;
}
