/* SPDX-License-Identifier: MIT */
/*
 * vmshm_channel.h: a single-producer single-consumer ring of messages in shared memory, with a
 * doorbell as its notification. The layout is docs/channel.md; vmshm.ivshmem.channel is the same
 * ring in Python. C11 atomics, memcpy and errno values only: usable in a static guest program and
 * on the host alike.
 *
 * The producer sleeps only when the ring is full, the consumer only when it is empty; each says
 * so in its *_waiting word before sleeping and checks the ring again, and the other side rings
 * the doorbell only when that word is set (a store-load fence on both sides, so one of them
 * always sees the other: no lost wake-up, and no ring when nobody sleeps).
 */
#ifndef VMSHM_CHANNEL_H
#define VMSHM_CHANNEL_H

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "vmshm_channel.h: the ring's words are little-endian; this target is not"
#endif

#define VMSHM_CH_MAGIC            0x48434d56u  /* "VMCH" in memory */
#define VMSHM_CH_VERSION          1u
#define VMSHM_CH_OFF_MAGIC        0x00
#define VMSHM_CH_OFF_VERSION      0x04
#define VMSHM_CH_OFF_CAPACITY     0x08
#define VMSHM_CH_OFF_HEAD         0x40   /* producer's cache line */
#define VMSHM_CH_OFF_PROD_WAITING 0x44
#define VMSHM_CH_OFF_TAIL         0x80   /* consumer's cache line */
#define VMSHM_CH_OFF_CONS_WAITING 0x84
#define VMSHM_CH_HEADER           0x100  /* data follows the header */
#define VMSHM_CH_MIN_CAPACITY     64u
#define VMSHM_CH_MAX_CAPACITY     (1u << 30)

struct vmshm_ch {
	volatile unsigned char *base;    /* the header, 64-byte aligned in the object */
	uint32_t capacity;               /* data bytes, a power of two */
};

/* How a side rings the other and sleeps until rung; wait returns 0 when rung, -ETIMEDOUT. */
struct vmshm_doorbell {
	void (*ring)(void *ctx);
	int (*wait)(void *ctx, int timeout_ms);
	void *ctx;
};

static inline _Atomic uint32_t *vmshm_ch_word(const struct vmshm_ch *ch, unsigned off)
{
	return (_Atomic uint32_t *)(uintptr_t)(ch->base + off);
}

static inline uint32_t vmshm_ch_record(uint32_t len)
{
	return 4u + ((len + 3u) & ~3u);
}

/* The largest message a ring of this capacity carries. */
static inline uint32_t vmshm_ch_max_message(const struct vmshm_ch *ch)
{
	return ch->capacity - 4u;
}

/*
 * Lay a new, empty ring over `size` bytes at `mem` (64-byte aligned): the largest power-of-two
 * capacity that fits. Only one side initialises, before the other attaches. 0 or -EINVAL.
 */
static inline int vmshm_ch_init(struct vmshm_ch *ch, void *mem, size_t size)
{
	uint32_t cap = VMSHM_CH_MIN_CAPACITY;

	if (((uintptr_t)mem & 63u) || size < VMSHM_CH_HEADER + VMSHM_CH_MIN_CAPACITY)
		return -EINVAL;
	while (cap < VMSHM_CH_MAX_CAPACITY && (size_t)cap * 2 <= size - VMSHM_CH_HEADER)
		cap *= 2;
	ch->base = (volatile unsigned char *)mem;
	ch->capacity = cap;
	atomic_store_explicit(vmshm_ch_word(ch, VMSHM_CH_OFF_MAGIC), 0, memory_order_relaxed);
	memset((void *)(uintptr_t)(ch->base + 4), 0, VMSHM_CH_HEADER - 4);
	atomic_store_explicit(vmshm_ch_word(ch, VMSHM_CH_OFF_VERSION), VMSHM_CH_VERSION,
			      memory_order_relaxed);
	atomic_store_explicit(vmshm_ch_word(ch, VMSHM_CH_OFF_CAPACITY), cap, memory_order_relaxed);
	/* The magic last: a side that sees it sees the rest. */
	atomic_store_explicit(vmshm_ch_word(ch, VMSHM_CH_OFF_MAGIC), VMSHM_CH_MAGIC,
			      memory_order_release);
	return 0;
}

/* Attach to a ring another side initialised: 0, -EAGAIN (not yet initialised) or -EINVAL. */
static inline int vmshm_ch_attach(struct vmshm_ch *ch, void *mem, size_t size)
{
	uint32_t cap;

	if (((uintptr_t)mem & 63u) || size < VMSHM_CH_HEADER + VMSHM_CH_MIN_CAPACITY)
		return -EINVAL;
	ch->base = (volatile unsigned char *)mem;
	if (atomic_load_explicit(vmshm_ch_word(ch, VMSHM_CH_OFF_MAGIC), memory_order_acquire)
	    != VMSHM_CH_MAGIC)
		return -EAGAIN;
	cap = atomic_load_explicit(vmshm_ch_word(ch, VMSHM_CH_OFF_CAPACITY), memory_order_relaxed);
	if (atomic_load_explicit(vmshm_ch_word(ch, VMSHM_CH_OFF_VERSION), memory_order_relaxed)
	    != VMSHM_CH_VERSION || cap < VMSHM_CH_MIN_CAPACITY || cap > VMSHM_CH_MAX_CAPACITY
	    || (cap & (cap - 1)) || (size_t)cap > size - VMSHM_CH_HEADER)
		return -EINVAL;
	ch->capacity = cap;
	return 0;
}

static inline void vmshm_ch_copy_in(struct vmshm_ch *ch, uint32_t pos, const void *src,
				    uint32_t n)
{
	unsigned char *data = (unsigned char *)(uintptr_t)(ch->base + VMSHM_CH_HEADER);
	uint32_t at = pos & (ch->capacity - 1), first = ch->capacity - at;

	if (first > n)
		first = n;
	memcpy(data + at, src, first);
	memcpy(data, (const unsigned char *)src + first, n - first);
}

static inline void vmshm_ch_copy_out(struct vmshm_ch *ch, uint32_t pos, void *dst, uint32_t n)
{
	const unsigned char *data = (const unsigned char *)(uintptr_t)(ch->base + VMSHM_CH_HEADER);
	uint32_t at = pos & (ch->capacity - 1), first = ch->capacity - at;

	if (first > n)
		first = n;
	memcpy(dst, data + at, first);
	memcpy((unsigned char *)dst + first, data, n - first);
}

/*
 * Put one message of `len` bytes (1..capacity-4) in the ring without sleeping. Returns 1 if the
 * consumer sleeps and must be rung, 0 if not, -EAGAIN if it does not fit now, -EMSGSIZE if it
 * never will.
 */
static inline int vmshm_ch_try_send(struct vmshm_ch *ch, const void *msg, uint32_t len)
{
	uint32_t head, tail, need, hdr = len;

	if (len == 0 || len > vmshm_ch_max_message(ch))
		return -EMSGSIZE;
	need = vmshm_ch_record(len);
	head = atomic_load_explicit(vmshm_ch_word(ch, VMSHM_CH_OFF_HEAD), memory_order_relaxed);
	tail = atomic_load_explicit(vmshm_ch_word(ch, VMSHM_CH_OFF_TAIL), memory_order_acquire);
	if (ch->capacity - (head - tail) < need)
		return -EAGAIN;
	vmshm_ch_copy_in(ch, head, &hdr, 4);
	vmshm_ch_copy_in(ch, head + 4, msg, len);
	atomic_store_explicit(vmshm_ch_word(ch, VMSHM_CH_OFF_HEAD), head + need,
			      memory_order_release);
	atomic_thread_fence(memory_order_seq_cst);
	return atomic_load_explicit(vmshm_ch_word(ch, VMSHM_CH_OFF_CONS_WAITING),
				    memory_order_relaxed) != 0;
}

/*
 * Take one message into `buf` (room for `room` bytes) without sleeping. Returns its length,
 * -EAGAIN if the ring is empty, -EMSGSIZE if it is longer than `room` (it stays in the ring);
 * sets *ring_producer when the producer sleeps on a full ring and must be rung.
 */
static inline int vmshm_ch_try_recv(struct vmshm_ch *ch, void *buf, uint32_t room,
				    int *ring_producer)
{
	uint32_t head, tail, len;

	*ring_producer = 0;
	tail = atomic_load_explicit(vmshm_ch_word(ch, VMSHM_CH_OFF_TAIL), memory_order_relaxed);
	head = atomic_load_explicit(vmshm_ch_word(ch, VMSHM_CH_OFF_HEAD), memory_order_acquire);
	if (head == tail)
		return -EAGAIN;
	vmshm_ch_copy_out(ch, tail, &len, 4);
	if (len == 0 || len > vmshm_ch_max_message(ch) || vmshm_ch_record(len) > head - tail)
		return -EPROTO;         /* a corrupt ring: nothing sane to do but say so */
	if (len > room)
		return -EMSGSIZE;
	vmshm_ch_copy_out(ch, tail + 4, buf, len);
	atomic_store_explicit(vmshm_ch_word(ch, VMSHM_CH_OFF_TAIL), tail + vmshm_ch_record(len),
			      memory_order_release);
	atomic_thread_fence(memory_order_seq_cst);
	*ring_producer = atomic_load_explicit(vmshm_ch_word(ch, VMSHM_CH_OFF_PROD_WAITING),
					      memory_order_relaxed) != 0;
	return (int)len;
}

static inline int vmshm_ch_empty(struct vmshm_ch *ch)
{
	return atomic_load_explicit(vmshm_ch_word(ch, VMSHM_CH_OFF_HEAD), memory_order_acquire)
	       == atomic_load_explicit(vmshm_ch_word(ch, VMSHM_CH_OFF_TAIL), memory_order_relaxed);
}

static inline int vmshm_ch_fits(struct vmshm_ch *ch, uint32_t len)
{
	uint32_t head = atomic_load_explicit(vmshm_ch_word(ch, VMSHM_CH_OFF_HEAD),
					     memory_order_relaxed);
	uint32_t tail = atomic_load_explicit(vmshm_ch_word(ch, VMSHM_CH_OFF_TAIL),
					     memory_order_acquire);

	return ch->capacity - (head - tail) >= vmshm_ch_record(len);
}

/* Send one message, sleeping on `db` while the ring is full: 0, -ETIMEDOUT or -EMSGSIZE. */
static inline int vmshm_ch_send(struct vmshm_ch *ch, const void *msg, uint32_t len,
				const struct vmshm_doorbell *db, int timeout_ms)
{
	_Atomic uint32_t *waiting = vmshm_ch_word(ch, VMSHM_CH_OFF_PROD_WAITING);

	for (;;) {
		int r = vmshm_ch_try_send(ch, msg, len);

		if (r >= 0) {
			if (r)
				db->ring(db->ctx);
			return 0;
		}
		if (r != -EAGAIN)
			return r;
		atomic_store_explicit(waiting, 1, memory_order_relaxed);
		atomic_thread_fence(memory_order_seq_cst);
		if (!vmshm_ch_fits(ch, len))
			r = db->wait(db->ctx, timeout_ms);
		else
			r = 0;
		atomic_store_explicit(waiting, 0, memory_order_relaxed);
		if (r)
			return r;
	}
}

/* Receive one message, sleeping on `db` while the ring is empty: its length or -errno. */
static inline int vmshm_ch_recv(struct vmshm_ch *ch, void *buf, uint32_t room,
				const struct vmshm_doorbell *db, int timeout_ms)
{
	_Atomic uint32_t *waiting = vmshm_ch_word(ch, VMSHM_CH_OFF_CONS_WAITING);

	for (;;) {
		int ring, r = vmshm_ch_try_recv(ch, buf, room, &ring);

		if (r >= 0) {
			if (ring)
				db->ring(db->ctx);
			return r;
		}
		if (r != -EAGAIN)
			return r;
		atomic_store_explicit(waiting, 1, memory_order_relaxed);
		atomic_thread_fence(memory_order_seq_cst);
		if (vmshm_ch_empty(ch))
			r = db->wait(db->ctx, timeout_ms);
		else
			r = 0;
		atomic_store_explicit(waiting, 0, memory_order_relaxed);
		if (r)
			return r;
	}
}

#endif /* VMSHM_CHANNEL_H */
