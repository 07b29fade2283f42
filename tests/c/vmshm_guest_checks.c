// SPDX-License-Identifier: MIT
/*
 * vmshm_guest_checks: every guest-side check of tests/test_qemu.py, in one boot.
 *
 *   vmshm_guest_checks EXAMPLE_OBJ PATTERN_OBJ MISSING_OBJ
 *
 * Runs the example against EXAMPLE_OBJ, then checks /dev/vmshm0's rules and
 * prints one line per check, "CHECK <name> ok" or "CHECK <name> FAIL <why>",
 * plus "PID <name> <pid>" lines the host test needs.  The exit status is the
 * number of failed checks.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vmshm_check.h"

#define DEV "/dev/vmshm0"
#define MIB (1 << 20)
#define PAGE 4096

static void check_errno(const char *name, int rc, int want)
{
	char why[160];

	snprintf(why, sizeof(why), "returned %d, errno %d (%s), wanted errno %d (%s)",
		 rc, errno, strerror(errno), want, strerror(want));
	check(name, rc < 0 && errno == want, why);
}

static uint8_t pattern(size_t i, unsigned int seed)
{
	return (uint8_t)(i * 131 + seed + (i >> 8));
}

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY), rc = -1;

	if (fd >= 0) {
		if (write(fd, text, strlen(text)) == (ssize_t)strlen(text))
			rc = 0;
		close(fd);
	}
	return rc;
}

static int open_named(const char *obj)
{
	int fd = open(DEV, O_RDWR);

	if (fd < 0)
		return -1;
	if (ioctl(fd, 0, obj) < 0) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

int main(int argc, char **argv)
{
	const char *example_obj, *pattern_obj, *missing_obj;
	char name[1100], cmd[300], why[160];
	int fd, fd2, rc, bad, pipefd[2];
	volatile uint64_t *w64;
	volatile uint32_t *w32;
	volatile uint16_t *w16;
	volatile uint8_t *mem;
	pid_t child;
	size_t i;

	if (argc != 4) {
		fprintf(stderr, "usage: %s EXAMPLE_OBJ PATTERN_OBJ MISSING_OBJ\n", argv[0]);
		return 100;
	}
	example_obj = argv[1];
	pattern_obj = argv[2];
	missing_obj = argv[3];

	/* The seed's example, unmodified, against the host's object. */
	snprintf(cmd, sizeof(cmd), "/bin/vmshm_example %s", example_obj);
	rc = system(cmd);
	snprintf(why, sizeof(why), "status %d", rc);
	check("example", rc == 0, why);

	/* open is exclusive. */
	fd = open(DEV, O_RDWR);
	check("open", fd >= 0, strerror(errno));
	fd2 = open(DEV, O_RDWR);
	check_errno("second_open_ebusy", fd2, EBUSY);
	if (fd2 >= 0)
		close(fd2);

	/* A missing object: the host's ENOENT reaches errno. */
	check_errno("missing_enoent", ioctl(fd, 0, missing_obj), ENOENT);

	/* 1023 bytes and the NUL fill the 1024-byte buffer: OPEN sees it. */
	name[0] = '/';
	memset(name + 1, 'a', 1022);
	name[1023] = '\0';
	check_errno("name_1023_reaches_open", ioctl(fd, 0, name), ENAMETOOLONG);
	/* 1024 bytes leave no room for the NUL: refused, nothing written. */
	memset(name + 1, 'b', 1023);
	name[1024] = '\0';
	check_errno("name_1024_enametoolong", ioctl(fd, 0, name), ENAMETOOLONG);
	printf("MARK after_long_names\n");
	fflush(stdout);

	/* The window: at most MAP_SIZE. */
	rc = ioctl(fd, 0, pattern_obj);
	check("open_pattern_obj", rc == 0, strerror(errno));
	mem = mmap(NULL, MIB + PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	check_errno("mmap_past_map_size_einval", mem == MAP_FAILED ? -1 : 0, EINVAL);
	if (mem != MAP_FAILED)
		munmap((void *)mem, MIB + PAGE);
	mem = mmap(NULL, MIB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	check("mmap_1mib", mem != MAP_FAILED, strerror(errno));
	if (mem != MAP_FAILED) {
		/* First 4 KiB in 8-byte stores; the last in 4-, 2- and 1-byte ones. */
		w64 = (volatile uint64_t *)mem;
		for (i = 0; i < PAGE / 8; i++) {
			uint64_t v = 0;
			int b;

			for (b = 7; b >= 0; b--)
				v = v << 8 | pattern(8 * i + b, 1);
			w64[i] = v;
		}
		w32 = (volatile uint32_t *)(mem + MIB - PAGE);
		for (i = 0; i < PAGE / 8; i++)
			w32[i] = pattern(4 * i, 2) | pattern(4 * i + 1, 2) << 8 |
				 pattern(4 * i + 2, 2) << 16 |
				 (uint32_t)pattern(4 * i + 3, 2) << 24;
		w16 = (volatile uint16_t *)(mem + MIB - PAGE / 2);
		for (i = 0; i < PAGE / 8; i++)
			w16[i] = pattern(PAGE / 2 + 2 * i, 2) |
				 pattern(PAGE / 2 + 2 * i + 1, 2) << 8;
		for (i = 3 * PAGE / 4; i < PAGE; i++)
			mem[MIB - PAGE + i] = pattern(i, 2);
		/* Read both back in 8-byte loads. */
		bad = 0;
		for (i = 0; i < PAGE / 8; i++) {
			uint64_t v = w64[i], u = w64[(MIB - PAGE) / 8 + i];
			int b;

			for (b = 0; b < 8; b++) {
				bad += (uint8_t)(v >> 8 * b) != pattern(8 * i + b, 1);
				bad += (uint8_t)(u >> 8 * b) != pattern(8 * i + b, 2);
			}
		}
		snprintf(why, sizeof(why), "%d bytes differ", bad);
		check("pattern_read_back_in_guest", bad == 0, why);
		munmap((void *)mem, MIB);
	}
	close(fd);

	/* A process killed with the device open releases it. */
	if (pipe(pipefd) < 0)
		return 101;
	child = fork();
	if (child == 0) {
		int cfd = open_named(pattern_obj);

		if (write(pipefd[1], cfd >= 0 ? "y" : "n", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	if (read(pipefd[0], cmd, 1) != 1)
		cmd[0] = '?';
	check("child_opened", cmd[0] == 'y', "the child could not open the object");
	printf("PID killed %d\n", (int)child);
	fflush(stdout);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	printf("MARK after_kill\n");
	fflush(stdout);
	fd = open_named(pattern_obj);
	check("open_after_kill", fd >= 0, strerror(errno));
	if (fd >= 0)
		close(fd);

	/* The function removed while its file is open: no oops, and back on rescan. */
	fd = open_named(example_obj);
	check("open_before_remove", fd >= 0, strerror(errno));
	rc = write_file("/sys/class/misc/vmshm0/device/remove", "1");
	check("remove_function", rc == 0, strerror(errno));
	check_errno("ioctl_after_remove_enodev", ioctl(fd, 0, example_obj), ENODEV);
	check("close_after_remove", close(fd) == 0, strerror(errno));
	rc = write_file("/sys/bus/pci/rescan", "1");
	check("rescan", rc == 0, strerror(errno));
	for (i = 0; i < 50 && access(DEV, F_OK) < 0; i++)
		usleep(100000);
	fd = open_named(example_obj);
	check("open_after_rescan", fd >= 0, strerror(errno));
	if (fd >= 0)
		close(fd);

	printf("CHECKS %d failed\n", failures);
	return failures;
}
