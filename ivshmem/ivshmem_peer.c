/* SPDX-License-Identifier: MIT */
/*
 * ivshmem_peer: a guest peer of an ivshmem group, on QEMU's own ivshmem-doorbell device.
 *
 * User space only, no driver: the device's BARs through sysfs (resource0, the registers:
 * IntrMask 0x00, IntrStatus 0x04, IVPosition 0x08, Doorbell 0x0c; resource1, the MSI-X table;
 * resource2, the shared object). QEMU 7.2's ivshmem-doorbell always has MSI-X (no msi=off) and
 * drops a peer's ring while MSI-X is off, so IntrStatus never moves. An MSI-X message is a
 * memory write of its data to its address: this program points vector 0 at a mailbox word of
 * its own in the shared object (BAR2's bus address + MAILBOX(id)) and enables MSI-X and bus
 * mastering; a peer's ring then lands as QEMU's MSI-X write of 1 there, which it polls and
 * clears. The interrupt message is real; only its target is memory instead of the local APIC.
 *
 * The host (tests/test_ivshmem.py) lays out the object: at 0 a directory (magic "GO!!", the
 * number of peers, their IDs, the host's first) and a channel (guest/vmshm_channel.h) from each
 * peer to each other at CHAN(src index, dst index). Then:
 *   1. wait to be rung by the host, ring the host back;
 *   2. the lower guest ID rings the higher (once that one says it is past step 1), which
 *      waits and rings back;
 *   3. send a greeting to every peer through its channel, then COUNT messages of 1..4096 bytes
 *      to the host, receive every peer's greeting and the host's COUNT messages, check them.
 * Lines "key value..." on stdout say what happened.
 *
 * `ivshmem_peer interop [COUNT]` is the partner of a VMShm guest (tests/c/vmshm_interop.c, same
 * IOP_* offsets): publish this ID, wait for the VMShm guest's ID and its ring, print its greeting
 * ("got-from-vmshm ..."), write one back and ring it; then exchange COUNT checked messages each
 * way with it through the two channels it laid out (vmshm_channel_pump.h).
 *
 * `ivshmem_peer bench COUNT ECHO LEN...` is `vmshm channel --bench`'s guest: with the host as
 * the only other peer, for each LEN it sends COUNT messages of LEN bytes to the host through the
 * channel at BENCH_TX(k), then receives COUNT from it at BENCH_RX(k), printing
 * "tx|rx LEN COUNT SECONDS" (the receiver's clock starts at its first message); then it echoes
 * ECHO of the host's round trips (vmshm_ch_echo: from BENCH_RX(0) back through BENCH_TX(0)).
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vmshm_channel.h"
#include "vmshm_channel_pump.h"

#define DIR_MAGIC 0x21214f47u     /* "GO!!" */
#define SLOT 0x10000u
#define BENCH_TX(k) (SLOT * (1u + 2u * (k)))
#define BENCH_RX(k) (SLOT * (2u + 2u * (k)))
#define PHASE1_DONE(index) (0x800u + 4u * (index))
#define MAILBOX(id) (0x1000u + 64u * (id))
#define CHAN(s, d, n) (SLOT * (1u + (s) * (n) + (d)))
#define IOP_VMSHM_ID 0x9000u      /* 'V' << 24 | the VMShm guest's peer ID */
#define IOP_IVSHMEM_ID 0x9004u    /* 'I' << 24 | this guest's peer ID */
#define IOP_MSG_VMSHM 0x9100u
#define IOP_MSG_IVSHMEM 0x9200u
#define IOP_MSG_MAX 0x100u
#define IOP_CH_TO_IVSHMEM 0x10000u  /* the VMShm guest's ring to this one */
#define IOP_CH_TO_VMSHM 0x11000u    /* and this one's back */
#define IOP_CH_BYTES 0x1000u

static volatile uint32_t *regs;
static uint32_t *mailbox;
static unsigned char *shm;
static size_t shm_size;
static unsigned long rings_seen;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *map_resource(const char *dev, const char *res, size_t *size)
{
	char path[512];
	struct stat st;
	void *p;
	int fd;

	snprintf(path, sizeof path, "%s/%s", dev, res);
	fd = open(path, O_RDWR | O_SYNC);
	if (fd < 0 || fstat(fd, &st)) {
		perror(path);
		exit(2);
	}
	*size = st.st_size;
	p = mmap(NULL, st.st_size < 4096 ? 4096 : st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		 fd, 0);
	if (p == MAP_FAILED) {
		perror(path);
		exit(2);
	}
	close(fd);
	return p;
}

static int read_hex(const char *dev, const char *file)
{
	char path[512], buf[32] = "";
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", dev, file);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (!fgets(buf, sizeof buf, f))
		buf[0] = 0;
	fclose(f);
	return (int)strtol(buf, NULL, 16);
}

static int find_device(char *out, size_t len)
{
	const char *root = "/sys/bus/pci/devices";
	struct dirent *e;
	DIR *d = opendir(root);

	while (d && (e = readdir(d))) {
		char dev[300];

		if (e->d_name[0] == '.')
			continue;
		snprintf(dev, sizeof dev, "%s/%s", root, e->d_name);
		if (read_hex(dev, "vendor") == 0x1af4 && read_hex(dev, "device") == 0x1110) {
			snprintf(out, len, "%s", dev);
			closedir(d);
			return 0;
		}
	}
	if (d)
		closedir(d);
	return -1;
}

static void ring(uint32_t peer)
{
	regs[3] = peer << 16;       /* vector 0 */
}

/* Sleep until rung: QEMU's MSI-X write of 1 lands in the mailbox; take it, leaving 0. */
static int wait_ring(int timeout_ms)
{
	double end = now() + timeout_ms / 1000.0;

	for (;;) {
		if (__atomic_exchange_n(mailbox, 0, __ATOMIC_SEQ_CST)) {
			rings_seen++;
			return 0;
		}
		if (now() > end)
			return -ETIMEDOUT;
		usleep(20);
	}
}

static uint64_t bar_address(const char *dev, int bar)
{
	char path[512], line[200];
	unsigned long long start = 0;
	FILE *f;

	snprintf(path, sizeof path, "%s/resource", dev);
	f = fopen(path, "r");
	for (int i = 0; f && i <= bar; i++)
		if (!fgets(line, sizeof line, f))
			line[0] = 0;
	if (f)
		fclose(f);
	sscanf(line, "%llx", &start);
	return start;
}

static int cfg_rw(int fd, unsigned off, void *buf, size_t n, int write)
{
	return (write ? pwrite(fd, buf, n, off) : pread(fd, buf, n, off)) == (ssize_t)n ? 0 : -1;
}

/* Vector 0's message: write 1 to the mailbox's bus address; MSI-X and bus mastering on. */
static int msix_to_mailbox(const char *dev, uint64_t addr)
{
	char path[512];
	uint8_t pos = 0, id = 0;
	uint16_t ctl, cmd;
	uint32_t table;
	size_t size;
	volatile uint32_t *t;
	int fd;

	snprintf(path, sizeof path, "%s/config", dev);
	fd = open(path, O_RDWR);
	if (fd < 0 || cfg_rw(fd, 0x34, &pos, 1, 0))
		return -1;
	while (pos && !cfg_rw(fd, pos, &id, 1, 0) && id != 0x11)
		if (cfg_rw(fd, pos + 1, &pos, 1, 0))
			return -1;
	if (id != 0x11 || cfg_rw(fd, pos + 2, &ctl, 2, 0) || cfg_rw(fd, pos + 4, &table, 4, 0))
		return -1;
	snprintf(path, sizeof path, "resource%u", table & 7);
	t = (volatile uint32_t *)((char *)map_resource(dev, path, &size) + (table & ~7u));
	t[0] = (uint32_t)addr;
	t[1] = (uint32_t)(addr >> 32);
	t[2] = 1;
	t[3] = 0;                   /* unmasked */
	ctl = (ctl | 0x8000) & ~0x4000;
	if (cfg_rw(fd, 0x04, &cmd, 2, 0))
		return -1;
	cmd |= 0x0006;              /* memory space, bus master: the MSI-X write goes out */
	if (cfg_rw(fd, 0x04, &cmd, 2, 1) || cfg_rw(fd, pos + 2, &ctl, 2, 1))
		return -1;
	close(fd);
	return 0;
}

static void db_ring(void *ctx)
{
	ring((uint32_t)(uintptr_t)ctx);
}

static int db_wait(void *ctx, int timeout_ms)
{
	(void)ctx;
	return wait_ring(timeout_ms);
}

static unsigned char pattern(uint32_t i, uint32_t k)
{
	return (unsigned char)(i * 7 + k * 13 + 1);
}

static uint32_t msg_len(uint32_t i)
{
	return 1 + (i * 997) % 4096;
}

static int bench(uint32_t host, int argc, char **argv)
{
	static unsigned char buf[4096];
	struct vmshm_doorbell db = { db_ring, db_wait, (void *)(uintptr_t)host };
	uint32_t count = strtoul(argv[2], NULL, 0), echo = argc > 3 ? strtoul(argv[3], NULL, 0) : 0;
	struct vmshm_ch tx, rx;

	for (int k = 0; k + 4 < argc; k++) {
		uint32_t len = strtoul(argv[k + 4], NULL, 0);
		double t;

		if (len < 1 || len > sizeof buf || BENCH_RX(k) + SLOT > shm_size ||
		    vmshm_ch_attach(&tx, shm + BENCH_TX(k), SLOT) ||
		    vmshm_ch_attach(&rx, shm + BENCH_RX(k), SLOT)) {
			printf("error bench %u\n", len);
			return 1;
		}
		t = now();
		for (uint32_t i = 0; i < count; i++) {
			memset(buf, (int)(i & 0xff), len);
			if (vmshm_ch_send(&tx, buf, len, &db, 60000)) {
				printf("error bench send %u\n", i);
				return 1;
			}
		}
		printf("tx %u %u %.6f\n", len, count, now() - t);
		fflush(stdout);
		for (uint32_t i = 0; i < count; i++) {
			if (vmshm_ch_recv(&rx, buf, sizeof buf, &db, 60000) != (int)len ||
			    buf[0] != (i & 0xff) || buf[len - 1] != (i & 0xff)) {
				printf("error bench recv %u\n", i);
				return 1;
			}
			if (i == 0) {
				t = now();
				/* The host times the row by when this line and the last arrive:
				 * a TCG guest's clock runs fast on a loaded machine. */
				printf("first %u\n", len);
				fflush(stdout);
			}
		}
		printf("rx %u %u %.6f\n", len, count, now() - t);
		fflush(stdout);
	}
	/* The first size's rings are empty now: the round trips reuse them. */
	if (echo && (vmshm_ch_attach(&tx, shm + BENCH_TX(0), SLOT) ||
		     vmshm_ch_attach(&rx, shm + BENCH_RX(0), SLOT) ||
		     vmshm_ch_echo(&rx, &tx, echo, &db, 60000)))
		return 1;
	printf("rings %lu\ndone\n", rings_seen);
	return 0;
}

static int interop(uint32_t me, uint32_t count)
{
	struct vmshm_ch in, out;
	struct vmshm_doorbell db = { db_ring, db_wait, NULL };
	struct vmshm_pump_stats stats = { 0 };
	volatile uint32_t *vmshm_id = (volatile uint32_t *)(shm + IOP_VMSHM_ID);
	char msg[IOP_MSG_MAX];
	uint32_t partner;
	double t0 = now();

	__atomic_store_n((uint32_t *)(shm + IOP_IVSHMEM_ID), 'I' << 24 | me, __ATOMIC_SEQ_CST);
	while ((*vmshm_id >> 24) != 'V') {
		if (now() - t0 > 120) {
			printf("error no vmshm partner\n");
			return 1;
		}
		usleep(1000);
	}
	partner = *vmshm_id & 0xffff;
	printf("partner %u\n", partner);
	fflush(stdout);
	if (wait_ring(120000)) {
		printf("error not rung by %u\n", partner);
		return 1;
	}
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	memcpy(msg, shm + IOP_MSG_VMSHM, sizeof(msg) - 1);
	msg[sizeof(msg) - 1] = 0;
	printf("got-from-vmshm %s\n", msg);
	snprintf((char *)shm + IOP_MSG_IVSHMEM, IOP_MSG_MAX, "hello from ivshmem %u", me);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	ring(partner);
	printf("rang %u\n", partner);
	fflush(stdout);
	if (count) {
		/* The VMShm guest laid the rings out before its greeting. */
		db.ctx = (void *)(uintptr_t)partner;
		if (vmshm_ch_attach(&in, shm + IOP_CH_TO_IVSHMEM, IOP_CH_BYTES) ||
		    vmshm_ch_attach(&out, shm + IOP_CH_TO_VMSHM, IOP_CH_BYTES)) {
			printf("error attach\n");
			return 1;
		}
		if (vmshm_pump(&out, &in, count, 1, 0, &db, &stats))
			return 1;
	}
	printf("done\n");
	return 0;
}

int main(int argc, char **argv)
{
	char dev[300], path[400];
	static unsigned char buf[8192];
	size_t regs_size;
	uint32_t me, n, ids[16], mine = 0, count = argc > 1 ? strtoul(argv[1], NULL, 0) : 64;
	int benching = argc > 2 && !strcmp(argv[1], "bench");
	double t0, t;
	unsigned long bytes;
	int fd;

	if (find_device(dev, sizeof dev)) {
		printf("error no ivshmem device\n");
		return 1;
	}
	snprintf(path, sizeof path, "%s/enable", dev);
	fd = open(path, O_WRONLY);
	if (fd < 0 || write(fd, "1", 1) != 1) {
		perror(path);
		return 2;
	}
	close(fd);
	regs = map_resource(dev, "resource0", &regs_size);
	shm = map_resource(dev, "resource2", &shm_size);
	me = regs[2];
	if (me >= 64 || shm_size < CHAN(1, 0, 1)) {
		printf("error id %u or object of %zu bytes out of this program's range\n", me,
		       shm_size);
		return 1;
	}
	mailbox = (uint32_t *)(shm + MAILBOX(me));
	if (msix_to_mailbox(dev, bar_address(dev, 2) + MAILBOX(me))) {
		printf("error could not set up MSI-X\n");
		return 1;
	}
	printf("device %s\nid %u\nshm %zu\nready\n", strrchr(dev, '/') + 1, me, shm_size);
	fflush(stdout);
	if (argc > 1 && !strcmp(argv[1], "interop"))
		return interop(me, argc > 2 ? strtoul(argv[2], NULL, 0) : 0);

	t0 = now();
	while (((volatile uint32_t *)shm)[0] != DIR_MAGIC) {
		if (now() - t0 > 60) {
			printf("error no directory\n");
			return 1;
		}
		usleep(1000);
	}
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	n = ((uint32_t *)shm)[1];
	if (n > 16 || CHAN(n, 0, n) > shm_size) {
		printf("error bad directory n=%u\n", n);
		return 1;
	}
	for (uint32_t i = 0; i < n; i++) {
		ids[i] = ((uint32_t *)shm)[2 + i];
		if (ids[i] == me)
			mine = i;
	}

	if (benching)
		return bench(ids[0], argc, argv);

	/* 1. the host rings first; nobody else rings until rung by it */
	if (wait_ring(60000)) {
		printf("error not rung by host\n");
		return 1;
	}
	printf("rung-by-host\n");
	fflush(stdout);
	ring(ids[0]);
	/* Say phase 1 is over here: a ring from the other guest before that would merge with the
	 * host's in the mailbox, and phase 2 would wait for a ring already taken. */
	__atomic_store_n((uint32_t *)(shm + PHASE1_DONE(mine)), 1, __ATOMIC_SEQ_CST);

	/* 2. guest to guest: the lower ID starts */
	if (n == 3) {
		uint32_t other = ids[mine == 1 ? 2 : 1];

		if (me < other) {
			t0 = now();
			while (!__atomic_load_n((uint32_t *)(shm + PHASE1_DONE(mine == 1 ? 2 : 1)),
						__ATOMIC_SEQ_CST)) {
				if (now() - t0 > 60) {
					printf("error %u never finished phase 1\n", other);
					return 1;
				}
				usleep(100);
			}
			ring(other);
			if (wait_ring(60000)) {
				printf("error not rung back by %u\n", other);
				return 1;
			}
		} else {
			if (wait_ring(60000)) {
				printf("error not rung by %u\n", other);
				return 1;
			}
			ring(other);
		}
		printf("rung-by-guest %u\n", other);
		fflush(stdout);
	}

	/* 3. channels */
	for (uint32_t j = 0; j < n; j++) {
		struct vmshm_ch ch;
		struct vmshm_doorbell db = { db_ring, db_wait, (void *)(uintptr_t)ids[j] };
		int len;

		if (j == mine)
			continue;
		if (vmshm_ch_attach(&ch, shm + CHAN(mine, j, n), SLOT)) {
			printf("error no channel %u->%u\n", me, ids[j]);
			return 1;
		}
		len = snprintf((char *)buf, sizeof buf, "hello from %u to %u", me, ids[j]);
		if (vmshm_ch_send(&ch, buf, len, &db, 60000)) {
			printf("error send to %u\n", ids[j]);
			return 1;
		}
	}
	{
		struct vmshm_ch ch;
		struct vmshm_doorbell db = { db_ring, db_wait, (void *)(uintptr_t)ids[0] };

		vmshm_ch_attach(&ch, shm + CHAN(mine, 0, n), SLOT);
		t = now();
		bytes = 0;
		for (uint32_t i = 0; i < count; i++) {
			uint32_t len = msg_len(i);

			for (uint32_t k = 0; k < len; k++)
				buf[k] = pattern(i, k);
			if (vmshm_ch_send(&ch, buf, len, &db, 60000)) {
				printf("error bulk send %u\n", i);
				return 1;
			}
			bytes += len;
		}
		t = now() - t;
		printf("sent %u %lu %.6f\n", count, bytes, t);
	}
	for (uint32_t j = 0; j < n; j++) {
		struct vmshm_ch ch;
		struct vmshm_doorbell db = { db_ring, db_wait, (void *)(uintptr_t)ids[j] };
		int len;

		if (j == mine)
			continue;
		if (vmshm_ch_attach(&ch, shm + CHAN(j, mine, n), SLOT)) {
			printf("error no channel %u->%u\n", ids[j], me);
			return 1;
		}
		len = vmshm_ch_recv(&ch, buf, sizeof buf - 1, &db, 60000);
		if (len < 0) {
			printf("error recv from %u: %d\n", ids[j], len);
			return 1;
		}
		buf[len] = 0;
		printf("got %u %s\n", ids[j], buf);
		fflush(stdout);
		if (j != 0)
			continue;
		t = now();
		bytes = 0;
		for (uint32_t i = 0; i < count; i++) {
			len = vmshm_ch_recv(&ch, buf, sizeof buf, &db, 60000);
			if (len != (int)msg_len(i)) {
				printf("error bulk recv %u: %d\n", i, len);
				return 1;
			}
			for (uint32_t k = 0; k < (uint32_t)len; k++)
				if (buf[k] != pattern(i, k)) {
					printf("error bulk data %u at %u\n", i, k);
					return 1;
				}
			bytes += len;
		}
		t = now() - t;
		printf("received %u %lu %.6f\n", count, bytes, t);
	}
	printf("rings %lu\ndone\n", rings_seen);
	return 0;
}
