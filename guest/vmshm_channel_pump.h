/* SPDX-License-Identifier: MIT */
/*
 * vmshm_channel_pump.h: two peers exchange COUNT checked messages each way through a pair of
 * vmshm_channel.h rings, in one loop (guest/vmshm_channel_guests.c between two VMShm guests,
 * tests/c/vmshm_interop.c and ivshmem/ivshmem_peer.c between a VMShm and an ivshmem guest).
 *
 * Message `seq` from peer `from` is its sequence number (4 bytes), the sender's index, three
 * 0xA5 bytes and a pattern of both, 8..64 bytes in all; the receiver checks its length and every
 * byte against the one it expects next, so a lost, repeated, reordered or altered message stops
 * the exchange with a line "error message ...". A side that can neither send nor receive says
 * so in both rings' waiting words, looks again and sleeps on its doorbell (half a second at most:
 * a wake-up lost to a peer that was not listening yet costs time, not the run).
 */
#ifndef VMSHM_CHANNEL_PUMP_H
#define VMSHM_CHANNEL_PUMP_H

#include <stdio.h>
#include <time.h>

#include "vmshm_channel.h"

#define VMSHM_PUMP_MAX_LEN	64
#define VMSHM_PUMP_STALL_S	120	/* no progress for this long: the peer is gone */

struct vmshm_pump_stats {
	double seconds;
	unsigned long rings, waits;
};

static inline double vmshm_pump_now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static inline uint32_t vmshm_pump_len(uint32_t seq)
{
	return 8 + (seq * 13u) % (VMSHM_PUMP_MAX_LEN - 7);
}

static inline void vmshm_pump_make(uint8_t *m, uint32_t seq, unsigned from)
{
	uint32_t i, len = vmshm_pump_len(seq);

	memcpy(m, &seq, 4);
	m[4] = (uint8_t)from;
	m[5] = m[6] = m[7] = 0xA5;
	for (i = 8; i < len; i++)
		m[i] = (uint8_t)(seq * 31u + i * 7u + from * 101u + 1u);
}

static inline int vmshm_pump_check(const uint8_t *m, int len, uint32_t seq, unsigned from)
{
	uint8_t want[VMSHM_PUMP_MAX_LEN];
	uint32_t got_seq;

	vmshm_pump_make(want, seq, from);
	if ((uint32_t)len == vmshm_pump_len(seq) && !memcmp(m, want, len))
		return 0;
	memcpy(&got_seq, m, 4);
	printf("error message %u: %d bytes, sequence %u, from %u; expected %u bytes, sequence %u, "
	       "from %u%s\n", seq, len, got_seq, m[4], vmshm_pump_len(seq), seq, from,
	       (uint32_t)len == vmshm_pump_len(seq) && got_seq == seq ? ", pattern differs" : "");
	return -1;
}

/*
 * Send `count` messages on `out` and receive `count` on `in`, interleaved; `me` and `peer` are
 * the senders' indices written into and expected in messages. Returns 0, or 1 after an "error"
 * line. The doorbell counts its own rings and waits only through `stats`.
 */
static inline int vmshm_pump(struct vmshm_ch *out, struct vmshm_ch *in, uint32_t count,
			     unsigned me, unsigned peer, const struct vmshm_doorbell *db,
			     struct vmshm_pump_stats *stats)
{
	_Atomic uint32_t *pw = vmshm_ch_word(out, VMSHM_CH_OFF_PROD_WAITING);
	_Atomic uint32_t *cw = vmshm_ch_word(in, VMSHM_CH_OFF_CONS_WAITING);
	uint8_t buf[VMSHM_PUMP_MAX_LEN], rbuf[VMSHM_PUMP_MAX_LEN];
	uint32_t sent = 0, got = 0;
	double t0 = vmshm_pump_now(), last = t0;

	while (sent < count || got < count) {
		int progress = 0, r, ring;

		if (sent < count) {
			vmshm_pump_make(buf, sent, me);
			r = vmshm_ch_try_send(out, buf, vmshm_pump_len(sent));
			if (r >= 0) {
				if (r) {
					stats->rings++;
					db->ring(db->ctx);
				}
				sent++;
				progress = 1;
			} else if (r != -EAGAIN) {
				printf("error send %u: %d\n", sent, r);
				return 1;
			}
		}
		if (got < count) {
			r = vmshm_ch_try_recv(in, rbuf, sizeof(rbuf), &ring);
			if (r >= 0) {
				if (vmshm_pump_check(rbuf, r, got, peer))
					return 1;
				if (ring) {
					stats->rings++;
					db->ring(db->ctx);
				}
				got++;
				progress = 1;
			} else if (r != -EAGAIN) {
				printf("error receive %u: %d\n", got, r);
				return 1;
			}
		}
		if (progress) {
			last = vmshm_pump_now();
			continue;
		}
		/* Neither ring moves: say so in both, look again, then sleep. */
		if (sent < count)
			atomic_store_explicit(pw, 1, memory_order_relaxed);
		if (got < count)
			atomic_store_explicit(cw, 1, memory_order_relaxed);
		atomic_thread_fence(memory_order_seq_cst);
		if (!((sent < count && vmshm_ch_fits(out, vmshm_pump_len(sent)))
		      || (got < count && !vmshm_ch_empty(in)))) {
			stats->waits++;
			db->wait(db->ctx, 500);
		}
		atomic_store_explicit(pw, 0, memory_order_relaxed);
		atomic_store_explicit(cw, 0, memory_order_relaxed);
		if (vmshm_pump_now() - last > VMSHM_PUMP_STALL_S) {
			printf("error stalled: sent %u received %u of %u\n", sent, got, count);
			return 1;
		}
	}
	stats->seconds = vmshm_pump_now() - t0;
	/* One line, so two peers' summaries never interleave. */
	printf("sent %u received %u checked; %.2f s, %.0f messages/s each way; rings %lu "
	       "waits %lu\n", sent, got, stats->seconds,
	       stats->seconds > 0 ? count / stats->seconds : 0.0, stats->rings, stats->waits);
	return 0;
}

/*
 * The responder of `vmshm channel --bench`'s round trips: print "echo COUNT", then receive COUNT
 * messages through `rx` and send each back as it came through `tx` (the host's initiator checks
 * and times them), then print "echoed COUNT". 0, or 1 after a line "error ...".
 */
static inline int vmshm_ch_echo(struct vmshm_ch *rx, struct vmshm_ch *tx, uint32_t count,
				const struct vmshm_doorbell *db, int timeout_ms)
{
	static unsigned char buf[4096];

	printf("echo %u\n", count);
	fflush(stdout);
	for (uint32_t i = 0; i < count; i++) {
		int r = vmshm_ch_recv(rx, buf, sizeof buf, db, timeout_ms);

		if (r < 0 || vmshm_ch_send(tx, buf, (uint32_t)r, db, timeout_ms)) {
			printf("error echo %u: %d\n", i, r);
			return 1;
		}
	}
	printf("echoed %u\n", count);
	fflush(stdout);
	return 0;
}

#endif /* VMSHM_CHANNEL_PUMP_H */
