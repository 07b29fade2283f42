// SPDX-License-Identifier: MIT
/*
 * vmshm_doorbell_checks: interrupts and doorbells through /dev/vmshm0, in one
 * boot: the guest side of tests/test_qemu_doorbell.py and of
 * `vmshm qemu --doorbell-bench` (vmshm/qemu/doorbell.py is the host side).
 *
 *   vmshm_doorbell_checks PEER_ID ROUNDS
 *
 * Prints "CHECK <name> ok|FAIL <why>" per check, "WAIT <what>" when it is
 * about to block for the host (the test rings then), "IRQ <dev> <irq>"
 * and at the end "INTERRUPTS <its /proc/interrupts line>" for the interrupt
 * the kernel gave the function, and "RTT ..." for ROUNDS
 * round trips: ring the host (vector 9), whose answer is a ring back, and
 * wait in read().  Last, it removes the function under a sleeping reader.
 * The exit status is the number of failed checks.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vmshm_check.h"
#include "vmshm_ioctl.h"

#define DEV "/dev/vmshm0"
#define DRIVER "/sys/bus/pci/drivers/vmshm"
/* The vector the host answers with a ring back (the test's host side). */
#define PING 9

static void say(const char *what)
{
	printf("WAIT %s\n", what);
	fflush(stdout);
}

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Print the function's PCI address and the interrupt the kernel gave it. */
static void show_irq(void)
{
	char path[300];
	struct dirent *e;
	DIR *d = opendir(DRIVER);
	FILE *f;
	int irq;

	if (!d)
		return;
	while ((e = readdir(d))) {
		if (strncmp(e->d_name, "0000:", 5))
			continue;
		snprintf(path, sizeof(path), DRIVER "/%s/irq", e->d_name);
		irq = -1;
		f = fopen(path, "r");
		if (f) {
			if (fscanf(f, "%d", &irq) != 1)
				irq = -1;
			fclose(f);
		}
		printf("IRQ %s %d\n", e->d_name, irq);
	}
	closedir(d);
	fflush(stdout);
}

/* The kernel's own line for the function: IO-APIC (level) or PCI-MSI. */
static void show_interrupts(void)
{
	char line[256];
	FILE *f = fopen("/proc/interrupts", "r");

	while (f && fgets(line, sizeof(line), f))
		if (strstr(line, "vmshm"))
			printf("INTERRUPTS %s", line);
	if (f)
		fclose(f);
	fflush(stdout);
}

/*
 * Last: a reader asleep in read() when its function is removed wakes with
 * ENODEV (the child shares the parent's file: opening is exclusive).
 */
static void removed_wakes_reader(int fd)
{
	int fd2, status = -1;
	uint32_t n;
	pid_t child;

	fflush(stdout);
	child = fork();
	if (child == 0) {
		alarm(60);
		_exit(read(fd, &n, sizeof(n)) < 0 && errno == ENODEV ? 0 : 1);
	}
	usleep(500000);
	fd2 = open("/sys/class/misc/vmshm0/device/remove", O_WRONLY);
	if (fd2 < 0 || write(fd2, "1", 1) != 1)
		printf("CHECK remove FAIL %s\n", strerror(errno));
	if (fd2 >= 0)
		close(fd2);
	if (child > 0)
		waitpid(child, &status, 0);
	check("remove_wakes_reader_enodev",
	      WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "the reader did not return ENODEV");
}

static int read_count(int fd, uint32_t *n)
{
	return read(fd, n, sizeof(*n)) == sizeof(*n) ? 0 : -1;
}

int main(int argc, char **argv)
{
	struct pollfd pfd;
	double t0, *rtt;
	char why[200];
	int fd, rc, peer, rounds, i;
	uint32_t n = 0, big[2];

	if (argc != 3) {
		fprintf(stderr, "usage: %s PEER_ID ROUNDS\n", argv[0]);
		return 100;
	}
	peer = atoi(argv[1]);
	rounds = atoi(argv[2]);
	show_irq();

	fd = open(DEV, O_RDWR);
	check("open", fd >= 0, strerror(errno));
	if (fd < 0)
		return failures;

	rc = ioctl(fd, VMSHM_IOCTL_IVPOSITION);
	snprintf(why, sizeof(why), "returned %d (%s), wanted %d", rc,
		 rc < 0 ? strerror(errno) : "", peer);
	check("ivposition", rc == peer, why);

	/* Nothing rang: poll times out, a non-blocking read says so. */
	pfd.fd = fd;
	pfd.events = POLLIN;
	rc = poll(&pfd, 1, 300);
	snprintf(why, sizeof(why), "returned %d, revents %#x", rc, pfd.revents);
	check("poll_times_out", rc == 0, why);
	fcntl(fd, F_SETFL, O_NONBLOCK);
	rc = read(fd, &n, sizeof(n));
	check("nonblocking_read_eagain", rc < 0 && errno == EAGAIN,
	      strerror(errno));
	fcntl(fd, F_SETFL, 0);
	rc = read(fd, big, sizeof(big));
	check("read_of_8_bytes_einval", rc < 0 && errno == EINVAL,
	      strerror(errno));

	/* A blocking read wakes when the host rings. */
	say("ring");
	t0 = now_us();
	rc = read_count(fd, &n);
	snprintf(why, sizeof(why), "rc %d count %u: %s", rc, n,
		 strerror(errno));
	check("read_wakes_on_ring", rc == 0 && n == 1, why);
	printf("BLOCKED %.0f ms\n", (now_us() - t0) / 1e3);

	/* So does poll, and the read after it returns at once. */
	say("poll");
	rc = poll(&pfd, 1, 60000);
	snprintf(why, sizeof(why), "returned %d, revents %#x", rc, pfd.revents);
	check("poll_wakes_on_ring", rc == 1 && (pfd.revents & POLLIN), why);
	rc = read_count(fd, &n);
	check("read_after_poll", rc == 0 && n == 1, "count not 1");

	/*
	 * Two rings, two interrupts, one read: the count since the last.  The
	 * host says it has rung both by changing IVPOSITION to PEER_ID + 1.
	 */
	say("two");
	for (i = 0; ioctl(fd, VMSHM_IOCTL_IVPOSITION) != peer + 1; i++) {
		if (i > 6000)
			break;
		usleep(10000);
	}
	rc = read_count(fd, &n);
	snprintf(why, sizeof(why), "rc %d count %u", rc, n);
	check("read_counts_since_last_read", rc == 0 && n == 2, why);

	/* The guest rings the host: peer 3, vector 5 (the host records it). */
	rc = ioctl(fd, VMSHM_IOCTL_RING, VMSHM_DOORBELL(3, 5));
	check("ring_host", rc == 0, strerror(errno));
	rc = ioctl(fd, VMSHM_IOCTL_RING, 1UL << 32);
	check("ring_past_32_bits_einval", rc < 0 && errno == EINVAL,
	      strerror(errno));

	/* Round trips: ring the host, which rings back; wait in read. */
	rtt = calloc(rounds ? rounds : 1, sizeof(*rtt));
	for (i = 0; i < rounds; i++) {
		t0 = now_us();
		if (ioctl(fd, VMSHM_IOCTL_RING, VMSHM_DOORBELL(0, PING)) ||
		    read_count(fd, &n))
			break;
		rtt[i] = now_us() - t0;
	}
	snprintf(why, sizeof(why), "%d of %d round trips: %s", i, rounds,
		 strerror(errno));
	check("round_trips", i == rounds, why);
	if (rounds && i == rounds) {
		qsort(rtt, rounds, sizeof(*rtt), cmp_double);
		printf("RTT rounds %d min %.0f median %.0f p90 %.0f max %.0f"
		       " us\n", rounds, rtt[0], rtt[rounds / 2],
		       rtt[rounds * 9 / 10], rtt[rounds - 1]);
	}
	free(rtt);
	show_interrupts();
	removed_wakes_reader(fd);
	close(fd);
	fflush(stdout);
	return failures;
}
