/* SPDX-License-Identifier: MIT */
/*
 * vmshm_ioctl.h: what a program passes to /dev/vmshmN (vmshm.ko), for the
 * guest's programs and the module alike.
 *
 *   ioctl(fd, VMSHM_IOCTL_OPEN, name)      the seed's: map the host object
 *                                          NAME; returns 0 or -1 with errno
 *   ioctl(fd, VMSHM_IOCTL_RING, db)        ring a peer: db is
 *                                          VMSHM_DOORBELL(peer, vector), by
 *                                          value; the device's DOORBELL
 *   ioctl(fd, VMSHM_IOCTL_IVPOSITION)      this device's peer ID (0..65535),
 *                                          or -1 with errno ENXIO while the
 *                                          host has none
 *   read(fd, &u32, 4)                      block until an interrupt; the
 *                                          count of interrupts since the last
 *                                          read (EAGAIN with O_NONBLOCK)
 *   poll(fd, POLLIN)                       readable once an interrupt came
 *
 * Interrupts count from open(): opening clears what was pending.
 */
#ifndef VMSHM_IOCTL_H
#define VMSHM_IOCTL_H

#include <linux/ioctl.h>

/*
 * Not plain 1 and 2 after the seed's 0: the VFS answers some small numbers
 * itself before any driver sees them (2 is FIGETBSZ, 1 is FIBMAP).
 */
#define VMSHM_IOCTL_OPEN	0
#define VMSHM_IOCTL_RING	_IO('v', 1)
#define VMSHM_IOCTL_IVPOSITION	_IO('v', 2)

/* The DOORBELL register's value: ring vector VECTOR of peer PEER (16 bits
 * each; the ioctl refuses a value past 32 bits with EINVAL). */
#define VMSHM_DOORBELL(peer, vector) \
	(((unsigned long)(peer) << 16) | (unsigned long)(vector))

#endif /* VMSHM_IOCTL_H */
