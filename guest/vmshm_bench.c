// SPDX-License-Identifier: MIT
/*
 * vmshm_bench: latency of 32-bit reads of BAR0's ID register and of the
 * window, from inside the guest, on every VMShm function (through sysfs, with
 * no driver bound, so that BAR0 can be mapped too).
 *
 *   vmshm_bench NAME COUNT
 *
 * For each function: enable it, set Memory Space and Bus Master, write NAME
 * into the name BAR, read OPEN, time COUNT reads of ID and of window offset 0
 * one by one with clock_gettime, read CLOSE.  Prints
 *   BENCH <pci address> <subsystem id> <regs|window> <base> <median ns> <p99 ns>
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "vmshm_regs.h"

#define SYSFS "/sys/bus/pci/devices"

static unsigned long read_hex(const char *dev, const char *file)
{
	char path[300], buf[64] = "";
	FILE *f;

	snprintf(path, sizeof(path), SYSFS "/%s/%s", dev, file);
	f = fopen(path, "r");
	if (!f)
		return 0;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = '\0';
	fclose(f);
	return strtoul(buf, NULL, 0);
}

static volatile void *map_bar(const char *dev, int bar, size_t *len)
{
	char path[300];
	void *p;
	int fd;

	snprintf(path, sizeof(path), SYSFS "/%s/resource%d", dev, bar);
	fd = open(path, O_RDWR | O_SYNC);
	if (fd < 0)
		return NULL;
	*len = lseek(fd, 0, SEEK_END);
	if (*len < 4096)
		*len = 4096;
	p = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	return p == MAP_FAILED ? NULL : p;
}

static unsigned long long bar_start(const char *dev, int bar)
{
	char path[300];
	unsigned long long start = 0, end, flags;
	FILE *f;
	int i;

	snprintf(path, sizeof(path), SYSFS "/%s/resource", dev);
	f = fopen(path, "r");
	if (!f)
		return 0;
	for (i = 0; i <= bar; i++)
		if (fscanf(f, "%llx %llx %llx", &start, &end, &flags) != 3)
			start = 0;
	fclose(f);
	return start;
}

static int cmp(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return (x > y) - (x < y);
}

static long long ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void time_reads(const char *dev, unsigned long sub, const char *what,
		       volatile uint32_t *p, unsigned long long base, long long *t,
		       int count)
{
	long long t0;
	int i;

	for (i = 0; i < count; i++) {
		t0 = ns();
		(void)*p;
		t[i] = ns() - t0;
	}
	qsort(t, count, sizeof(*t), cmp);
	printf("BENCH %s %#06lx %s %#llx %lld %lld\n", dev, sub, what, base,
	       t[count / 2], t[count * 99 / 100]);
	fflush(stdout);
}

static int bench(const char *dev, const char *name, int count, long long *t)
{
	volatile uint32_t *regs, *window;
	volatile uint8_t *names;
	size_t rl, wl, nl;
	unsigned long sub = read_hex(dev, "subsystem_device");
	uint16_t cmd;
	char path[300];
	uint32_t status;
	size_t i;
	int fd;

	snprintf(path, sizeof(path), SYSFS "/%s/enable", dev);
	fd = open(path, O_WRONLY);
	if (fd < 0 || write(fd, "1", 1) != 1)
		perror(path);
	if (fd >= 0)
		close(fd);
	snprintf(path, sizeof(path), SYSFS "/%s/config", dev);
	fd = open(path, O_RDWR);
	if (fd < 0 || pread(fd, &cmd, 2, 4) != 2) {
		perror(path);
		return 1;
	}
	cmd |= 0x6;	/* Memory Space, Bus Master: OPEN needs both */
	if (pwrite(fd, &cmd, 2, 4) != 2)
		perror(path);
	close(fd);
	regs = map_bar(dev, VMSHM_BAR_REGS, &rl);
	window = map_bar(dev, VMSHM_BAR_WINDOW, &wl);
	names = map_bar(dev, VMSHM_BAR_NAME, &nl);
	if (!regs || !window || !names) {
		fprintf(stderr, "vmshm_bench: %s: cannot map its BARs: %s\n", dev,
			strerror(errno));
		return 1;
	}
	for (i = 0; i <= strlen(name); i++)
		names[i] = name[i];
	status = regs[VMSHM_REG_OPEN / 4];
	if (status)
		fprintf(stderr, "vmshm_bench: %s: OPEN %s: %s\n", dev, name,
			strerror(status));
	time_reads(dev, sub, "regs", regs + VMSHM_REG_ID / 4,
		   bar_start(dev, VMSHM_BAR_REGS) + VMSHM_REG_ID, t, count);
	time_reads(dev, sub, "window", window,
		   bar_start(dev, VMSHM_BAR_WINDOW), t, count);
	(void)regs[VMSHM_REG_CLOSE / 4];
	return status != 0;
}

int main(int argc, char **argv)
{
	int count = argc > 2 ? atoi(argv[2]) : 10000, rc = 0;
	struct dirent *d;
	long long *t;
	DIR *dir;

	if (argc < 2 || count < 1) {
		fprintf(stderr, "usage: %s NAME [COUNT]\n", argv[0]);
		return 2;
	}
	t = calloc(count, sizeof(*t));
	dir = opendir(SYSFS);
	if (!t || !dir) {
		perror(SYSFS);
		return 1;
	}
	while ((d = readdir(dir))) {
		if (d->d_name[0] == '.')
			continue;
		if (read_hex(d->d_name, "vendor") != VMSHM_PCI_VENDOR_ID ||
		    read_hex(d->d_name, "device") != VMSHM_PCI_DEVICE_ID)
			continue;
		rc |= bench(d->d_name, argv[1], count, t);
	}
	closedir(dir);
	return rc;
}
