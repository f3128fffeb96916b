/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * How the ring transport lays out a queue's shared area: the one computation,
 * used by kmod/ring.c and by the user-space fakes of that kernel (the unit
 * tests' and the microbenchmarks', through ring::expected_layout()).
 *
 * Not part of the ABI: a daemon reads the layout with USERBLK_IOC_RING_LAYOUT
 * and checks it, and never computes it, so the kernel may change this file.
 * Plain C that also compiles as C++.
 */
#ifndef USERBLK_RING_LAYOUT_H
#define USERBLK_RING_LAYOUT_H

#include <uapi/userblk.h>

/* v rounded up to a multiple of a, a power of two. */
static inline __u64 userblk_ring_align(__u64 v, __u64 a)
{
	return (v + a - 1) & ~(a - 1);
}

/* The smallest power of two not below v (v >= 1). */
static inline __u32 userblk_ring_pow2(__u32 v)
{
	__u32 p = 1;

	while (p < v)
		p <<= 1;
	return p;
}

/*
 * Lays out the area of a queue of depth tags and buffers of max_io bytes:
 * the read-only part (the kernel's indices, then the submission ring) from
 * offset 0; from the next page on, the writable part (the daemon's indices,
 * the completion ring, then one page-aligned buffer per tag). Each index
 * block starts on its own cache line of line bytes; page and line are powers
 * of two. Sets every field, map_size included.
 */
static inline void userblk_ring_lay_out(struct userblk_ring_layout *l,
					__u32 depth, __u32 max_io,
					__u64 page, __u64 line)
{
	l->sq_entries = userblk_ring_pow2(depth);
	l->cq_entries = l->sq_entries;
	l->kernel_off = 0;
	l->sq_off = userblk_ring_align(sizeof(struct userblk_ring_kernel_indices), line);
	l->rw_off = userblk_ring_align(l->sq_off + (__u64)l->sq_entries *
				       sizeof(struct userblk_io_desc), page);
	l->daemon_off = l->rw_off;
	l->cq_off = l->daemon_off +
		    userblk_ring_align(sizeof(struct userblk_ring_daemon_indices), line);
	l->buf_off = userblk_ring_align(l->cq_off + (__u64)l->cq_entries *
					sizeof(struct userblk_io_cpl), page);
	l->buf_size = (__u32)userblk_ring_align(max_io, page);
	l->nr_bufs = depth;
	l->map_size = l->buf_off + (__u64)l->nr_bufs * l->buf_size;
	l->reserved[0] = 0;
	l->reserved[1] = 0;
}

#endif /* USERBLK_RING_LAYOUT_H */
