/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * userblk: block devices served by a user-space daemon.
 *
 * This header is the whole contract between userblk.ko and user space.
 * Every structure has a fixed size and explicit padding; reserved fields
 * must be zero and unknown feature bits are rejected, so the ABI can grow
 * without guessing.
 *
 * Life of a device:
 *   fd = open(USERBLK_CONTROL_PATH)
 *   ioctl(fd, USERBLK_IOC_ADD_DEV, &cfg)        -> cfg.dev_id
 *   qfd[q] = ioctl(fd, USERBLK_IOC_OPEN_QUEUE, &qo)   for every queue
 *   ioctl(fd, USERBLK_IOC_START_DEV, cfg.dev_id) -> /dev/userblk<id> appears
 *   ... serve requests on qfd[] with the device's transport ...
 *   ioctl(fd, USERBLK_IOC_DEL_DEV, cfg.dev_id)
 *
 * Who may do what. Every control ioctl needs CAP_SYS_ADMIN. A device belongs to
 * the process (thread group) that added it: only that process may start it
 * and open its queues (the latter also any process, if it was added with
 * USERBLK_F_ANY_DAEMON); STOP_DEV and DEL_DEV
 * from any other process must say USERBLK_CTL_FORCE in their argument
 * (dev_id | USERBLK_CTL_FORCE), as an administrator's tool does; GET_INFO is
 * anybody's. Else EPERM.
 *
 * Errors of the control ioctls:
 *   EINVAL     a field out of range, reserved bits set, unknown features
 *   EOPNOTSUPP a transport mode this module was built without
 *   ENOTTY     an unknown command, or a structure of the wrong size
 *   ENODEV     no device with that id
 *   EEXIST     ADD_DEV: the id asked for is taken
 *   ENOTCONN   START_DEV: not every queue has a daemon (an open queue fd; of a
 *              recovering device, one opened since it began to recover)
 *   EBUSY      START_DEV twice, or after a failed START_DEV; OPEN_QUEUE of
 *              a queue already open; RECOVER_DEV of a device that is not
 *              recovering; HANDOVER_DEV of one that is not live
 *   ESHUTDOWN  OPEN_QUEUE of a dead device: delete it and add a new one
 *              (RECOVER_DEV, HANDOVER_DEV of one: its recovery timed out)
 *   E2BIG      ADD_DEV in ring mode: a queue's shared area (rings plus
 *              queue_depth buffers of max_io_bytes) is larger than the
 *              module allows (256 MiB): lower the depth or the max I/O
 *
 * A device dies when STOP_DEV or DEL_DEV is called, or when any queue fd of
 * a live device is closed (its daemon exited): everything outstanding fails
 * with an I/O error at once and every later request fails fast. A request
 * the daemon does not answer within timeout_ms fails with a timeout and
 * kills the device the same way: a daemon that late may still act on
 * requests the kernel gave up on, so nothing it does afterwards is taken.
 * That holds whatever the daemon does: a request that a system call is
 * moving the data of fails within its timeout too, since no system call
 * sleeps while it holds a request (a fault on the daemon's memory is taken
 * with the request given back, a locked pipe fails the request).
 *
 * Unless the device was added with USERBLK_F_RECOVERY: then a closed queue
 * fd makes it recover instead of die (see there).
 */
#ifndef _UAPI_USERBLK_H
#define _UAPI_USERBLK_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define USERBLK_ABI_VERSION	2
#define USERBLK_CONTROL_NAME	"userblk-control"
#define USERBLK_CONTROL_PATH	"/dev/" USERBLK_CONTROL_NAME
#define USERBLK_DISK_PREFIX	"userblk"	/* /dev/userblk<dev_id> */

/* Transport modes: how requests and their data cross the boundary. */
enum userblk_mode {
	USERBLK_MODE_COPY	= 1,	/* read()/write() on the queue fd, data copied */
	USERBLK_MODE_RING	= 2,	/* mmap'ed rings and per-tag buffers */
	USERBLK_MODE_PIPE	= 3,	/* a pipe per tag carries the data */
	USERBLK_MODE_SPLICE	= 4,	/* a data fd spliced by tag */
	USERBLK_MODE_END,		/* one past the last mode: not a mode */
};

/*
 * Each live disk's sysfs directory userblk/ (/sys/block/userblkN/userblk/)
 * counts the bytes of request data the kernel copied since ADD_DEV, one
 * decimal number per file: write_copied_user_bytes, read_copied_user_bytes
 * (between a request and memory the daemon reads or writes: its buffers, the
 * ring's area) and write_copied_kernel_bytes, read_copied_kernel_bytes
 * (between a request and kernel pages: a pipe's). With USERBLK_F_LEND,
 * write_lent_bytes counts the bytes of WRITEs whose own pages went into a
 * pipe instead, and lent_abandoned_requests the requests that had to end
 * (device death, timeout) while some pipe still held pages lent from them.
 */

/* Device features, requested at ADD_DEV. */
#define USERBLK_F_FLUSH		(1ULL << 0) /* volatile cache: pass FLUSH down */
#define USERBLK_F_DISCARD	(1ULL << 1) /* pass DISCARD down */
#define USERBLK_F_WRITE_ZEROES	(1ULL << 2) /* pass WRITE_ZEROES down */
#define USERBLK_F_READ_ONLY	(1ULL << 3) /* the disk is read-only */
#define USERBLK_F_FUA		(1ULL << 4) /* pass FUA writes down (needs FLUSH) */
#define USERBLK_F_ANY_DAEMON	(1ULL << 5) /* any admin process may open the queues */
/*
 * USERBLK_F_LEND (pipe and splice only): a WRITE's data goes into the pipe
 * as the request's own pages, read-only, instead of a copy, and the request
 * completes only when the daemon has answered it and every pipe buffer lent
 * from it has been released. A socket the pages were spliced to takes its
 * own page references, so the daemon must answer only once the data has
 * been received (an NBD reply), never before: see docs/splice-and-pipe.md.
 * A request whose lent buffers are still held at its timeout fails, and so
 * does the device; the pages stay referenced by the pipe that holds them.
 */
#define USERBLK_F_LEND		(1ULL << 6)
/*
 * USERBLK_F_RECOVERY (copy and ring, not with USERBLK_F_LEND): a queue fd of
 * a live device that closes (its daemon exited or crashed) does not fail the
 * device, it makes it RECOVERING. blk-mq stops dispatching, so new I/O waits;
 * each request the daemon had on a closed queue and had not answered is
 * held, to be handed out again with a new gen, so no answer of the old daemon
 * can be taken for the new one's. A new daemon (any admin process) calls
 * RECOVER_DEV, which makes it the device's owner, opens every queue once the
 * old daemon's fds are closed (OPEN_QUEUE says EBUSY until then), and
 * START_DEV resumes the device: the held requests and those that waited are
 * dispatched to it. From the moment recovery begins the old daemon's queue
 * fds that are still open hand out nothing more (read() returns end of file,
 * RING_ENTER fails with ENODEV, poll() says EPOLLHUP), while its answers to
 * the requests it already has are still taken; what it leaves unanswered
 * when it closes them is held like the rest. HANDOVER_DEV, from the owner
 * (or with USERBLK_CTL_FORCE), begins a recovery of a live device on purpose:
 * a planned upgrade, in which the old daemon answers what it has, sees end
 * of file, closes its queues and exits, and the new one takes over as above
 * (EINVAL without the feature, EBUSY if the device is not live). If no START_DEV comes within recovery_timeout_ms of the
 * first close, the device dies as it would without the feature: held and
 * waiting I/O fails, and it can only be deleted. A new daemon that closes a
 * queue before its START_DEV changes nothing; the same timeout runs on. Once
 * live again, the next close begins a new recovery with a new timeout.
 * Requests the old daemon took on queues it keeps open are its own to
 * answer, with the usual timeout. The kernel cannot know what the old
 * daemon had already sent on: a write it passed to a store that outlives it
 * (a server) may be applied after the new daemon's newer write of the same
 * blocks, unless the daemons fence the store between them.
 */
#define USERBLK_F_RECOVERY	(1ULL << 7)
#define USERBLK_F_ALL		(USERBLK_F_FLUSH | USERBLK_F_DISCARD | \
				 USERBLK_F_WRITE_ZEROES | USERBLK_F_READ_ONLY | \
				 USERBLK_F_FUA | USERBLK_F_ANY_DAEMON | \
				 USERBLK_F_LEND | USERBLK_F_RECOVERY)

/* Limits checked by ADD_DEV. */
#define USERBLK_MAX_DEVICES	1024
#define USERBLK_MAX_QUEUES	64
#define USERBLK_MAX_DEPTH	1024
#define USERBLK_MAX_IO_BYTES	(1U << 20)
#define USERBLK_MIN_TIMEOUT_MS	100U
#define USERBLK_MAX_TIMEOUT_MS	600000U
#define USERBLK_DEFAULT_RECOVERY_TIMEOUT_MS	30000U
#define USERBLK_DEV_ID_ANY	0xffffffffU

/* Device states reported by GET_INFO. */
enum userblk_state {
	USERBLK_STATE_ADDED	= 1,	/* configured, waiting for START_DEV */
	USERBLK_STATE_LIVE	= 2,	/* disk visible, serving I/O */
	USERBLK_STATE_DEAD	= 3,	/* stopped or daemon gone: I/O fails */
	USERBLK_STATE_RECOVERING = 4,	/* USERBLK_F_RECOVERY: daemon gone, I/O held */
};

/*
 * ADD_DEV (in/out) and GET_INFO (dev_id and abi_version in, rest out).
 * A zero timeout_ms or max_io_bytes selects the module's default; ADD_DEV
 * writes the whole structure back with the values in force. Besides the
 * limits above: logical_block_size <= PAGE_SIZE, max_io_bytes >= PAGE_SIZE,
 * size <= LLONG_MAX, FUA only with FLUSH. blk-mq serves no more hardware
 * queues than there are possible CPUs: ADD_DEV lowers nr_queues to that
 * number, and the daemon opens the queues the reply names.
 *
 * nr_poll_queues (ring only; 0 for the others) makes the last nr_poll_queues
 * of the nr_queues poll queues (HCTX_TYPE_POLL): they take only polled I/O
 * (io_uring IOPOLL, RWF_HIPRI), and blk-mq reaps their completion rings from
 * the submitter's context, so a daemon that spins on the ring (see
 * USERBLK_RING_NEED_WAKEUP) serves them without a system call or a wake-up
 * per request. At least one queue stays a default one; ADD_DEV lowers the
 * default and the poll queues each to the CPUs.
 *
 * recovery_timeout_ms (USERBLK_F_RECOVERY only, else zero): how long a
 * recovering device waits for a new daemon's START_DEV; zero selects
 * USERBLK_DEFAULT_RECOVERY_TIMEOUT_MS, and the range is that of timeout_ms.
 */
struct userblk_dev_config {
	__u32 abi_version;		/* in: USERBLK_ABI_VERSION */
	__u32 dev_id;			/* in: wanted id or USERBLK_DEV_ID_ANY; out */
	__u32 mode;			/* enum userblk_mode */
	__u32 logical_block_size;	/* 512..4096, a power of two */
	__u64 size;			/* bytes, a multiple of logical_block_size */
	__u64 features;			/* USERBLK_F_* */
	__u32 nr_queues;		/* 1..USERBLK_MAX_QUEUES; out: at most the CPUs */
	__u32 queue_depth;		/* 1..USERBLK_MAX_DEPTH */
	__u32 max_io_bytes;		/* multiple of logical_block_size */
	__u32 timeout_ms;		/* request timeout */
	__u32 state;			/* out: enum userblk_state */
	__u32 nr_queues_open;		/* out: queues with a daemon attached */
	__u32 nr_poll_queues;		/* of nr_queues, the last ones are polled */
	__u32 recovery_timeout_ms;	/* USERBLK_F_RECOVERY: wait for a daemon */
	__u64 reserved[3];		/* must be zero */
};

/* OPEN_QUEUE: returns a new fd (close-on-exec) bound to one queue. */
struct userblk_queue_open {
	__u32 dev_id;
	__u16 queue_id;
	__u16 flags;			/* must be zero */
	__u64 reserved;			/* must be zero */
};

/* STOP_DEV, DEL_DEV: a process that did not add the device acts on it anyway. */
#define USERBLK_CTL_FORCE	(1U << 31)

#define USERBLK_IOC_MAGIC	0xbd
#define USERBLK_IOC_ADD_DEV	_IOWR(USERBLK_IOC_MAGIC, 0x00, struct userblk_dev_config)
#define USERBLK_IOC_START_DEV	_IO(USERBLK_IOC_MAGIC, 0x01)	/* arg: dev_id */
#define USERBLK_IOC_STOP_DEV	_IO(USERBLK_IOC_MAGIC, 0x02)	/* arg: dev_id [| FORCE] */
#define USERBLK_IOC_DEL_DEV	_IO(USERBLK_IOC_MAGIC, 0x03)	/* arg: dev_id [| FORCE] */
#define USERBLK_IOC_GET_INFO	_IOWR(USERBLK_IOC_MAGIC, 0x04, struct userblk_dev_config)
#define USERBLK_IOC_OPEN_QUEUE	_IOW(USERBLK_IOC_MAGIC, 0x05, struct userblk_queue_open)
/* RECOVER_DEV: the caller takes over a RECOVERING device (USERBLK_F_RECOVERY). */
#define USERBLK_IOC_RECOVER_DEV	_IO(USERBLK_IOC_MAGIC, 0x06)	/* arg: dev_id */
/* HANDOVER_DEV: a live device with USERBLK_F_RECOVERY begins to recover now. */
#define USERBLK_IOC_HANDOVER_DEV	_IO(USERBLK_IOC_MAGIC, 0x07)	/* arg: dev_id [| FORCE] */

/* Request operations as the daemon sees them. */
enum userblk_op {
	USERBLK_OP_READ		= 0,
	USERBLK_OP_WRITE	= 1,
	USERBLK_OP_FLUSH	= 2,
	USERBLK_OP_DISCARD	= 3,
	USERBLK_OP_WRITE_ZEROES	= 4,
};

/* Request flags. */
#define USERBLK_IO_F_FUA	(1U << 0)	/* WRITE: durable before the answer */
#define USERBLK_IO_F_NOUNMAP	(1U << 1)	/* WRITE_ZEROES: keep the blocks allocated */

/*
 * A request handed to the daemon. tag names the request's slot in its
 * queue (0..queue_depth-1); gen is the tag's own count of hand-outs, so it
 * changes every time the slot is reused whichever request takes it (with an
 * I/O scheduler many requests share a tag), and a completion must echo both:
 * a late or repeated answer is rejected instead of completing a successor.
 */
struct userblk_io_desc {
	__u16 tag;
	__u8 op;			/* enum userblk_op */
	__u8 flags;			/* USERBLK_IO_F_* */
	__u32 gen;
	__u64 offset;			/* bytes */
	__u32 len;			/* bytes; 0 for FLUSH */
	__u32 reserved;
};

/* The daemon's answer. result is 0 or a negative errno. */
struct userblk_io_cpl {
	__u16 tag;
	__u16 reserved0;		/* must be zero */
	__u32 gen;
	__s32 result;
	__u32 reserved1;		/* must be zero */
};

/*
 * The copy transport (USERBLK_MODE_COPY).
 *
 * read(qfd, buf, n) blocks until at least one request is pending (or
 * returns EAGAIN with O_NONBLOCK), also before START_DEV, so queue threads
 * can wait before the disk appears; then it fills buf with as many entries as
 * fit: each entry is a struct userblk_io_desc, followed for a WRITE by its
 * len bytes of data. n must be at least USERBLK_COPY_MIN_READ(max_io_bytes).
 *
 * write(qfd, buf, n) takes one or more entries: a struct userblk_io_cpl,
 * followed, for a successful READ, by the request's len bytes of data. The
 * entries are applied in order; the return value is the number of bytes of
 * the entries applied. An invalid entry stops the batch: if it is the first,
 * write() fails with EINVAL (malformed), ENOENT (tag not waiting for an
 * answer, or stale gen) or EFAULT.
 *
 * Once the device is stopped or deleted, read() returns 0 (end of file: no
 * request will ever come) and write() fails with ENODEV; every request
 * still outstanding has been failed with an I/O error. poll() reports
 * POLLIN while requests are pending and POLLHUP once the device is dead.
 * Entries are packed without padding; since len is a multiple of the logical
 * block size, every entry stays 8-byte aligned.
 */
#define USERBLK_COPY_MIN_READ(max_io_bytes) \
	(sizeof(struct userblk_io_desc) + (max_io_bytes))

/*
 * The ring transport (USERBLK_MODE_RING).
 *
 * Each queue fd holds one shared area of layout.map_size bytes, with the
 * offsets of USERBLK_IOC_RING_LAYOUT (an ioctl on the queue fd), in two parts
 * the daemon maps apart (MAP_SHARED, each once or more, never executable, and
 * not inherited by fork() unless the daemon asks with MADV_DOFORK):
 *   - [0, rw_off): what only the kernel writes, mapped PROT_READ only:
 *     mmap(NULL, rw_off, PROT_READ, MAP_SHARED, qfd, 0). It holds the
 *     kernel's indices (struct userblk_ring_kernel_indices at kernel_off) and
 *     the submission ring: sq_entries struct userblk_io_desc at sq_off.
 *   - [rw_off, map_size): what the daemon writes, mapped PROT_READ|PROT_WRITE:
 *     mmap(NULL, map_size - rw_off, ..., MAP_SHARED, qfd, rw_off). It holds
 *     the daemon's indices (struct userblk_ring_daemon_indices at daemon_off),
 *     the completion ring (cq_entries struct userblk_io_cpl at cq_off) and one
 *     data buffer of buf_size bytes per tag at buf_off + tag * buf_size.
 * Offsets are from the start of the area, so a daemon that maps both parts
 * side by side (the second at base + rw_off) adds them to one base.
 * The submission ring is produced by the kernel (sq_tail) and consumed by the
 * daemon (sq_head); the completion ring the other way (cq_tail, cq_head).
 * Indices run freely and wrap at 2^32; an entry's slot is index & (entries - 1).
 * Each side publishes its index with a store-release after writing the
 * entries and reads the other side's with a load-acquire.
 *
 * The kernel copies a WRITE's data into the tag's buffer before it
 * publishes the request, and a READ's data out of it when it takes the
 * completion; once the device is dead it writes no buffer again.
 * USERBLK_IOC_RING_ENTER takes every published completion and, with
 * USERBLK_RING_ENTER_WAIT, then sleeps until a request is pending or the
 * device dies. It returns the number of requests published and not yet
 * consumed, or fails with ENODEV once the device is dead (no request will
 * come; everything outstanding has been failed). poll() reports POLLIN while
 * requests are pending and POLLHUP once the device is dead.
 *
 * The kernel trusts nothing in the mapping: it keeps its own copies of the
 * indices it produces, reads the daemon's once, and rejects (and counts in
 * rejected) an index out of range or a completion whose tag, gen, result or
 * state is wrong.
 */
struct userblk_ring_kernel_indices {
	__u32 sq_tail;			/* next request slot to fill */
	__u32 pad0[15];			/* own cache line */
	__u32 cq_head;			/* next completion to take */
	__u32 pad1[15];
	__u64 rejected;			/* entries and indices refused */
	__u64 pad2[7];
};

struct userblk_ring_daemon_indices {
	__u32 sq_head;			/* next request to consume */
	__u32 flags;			/* USERBLK_RING_NEED_WAKEUP */
	__u32 pad0[14];			/* own cache line */
	__u32 cq_tail;			/* next completion slot to fill */
	__u32 pad1[15];
};

struct userblk_ring_layout {
	__u32 sq_entries;		/* a power of two >= queue_depth */
	__u32 cq_entries;		/* a power of two >= queue_depth */
	__u64 kernel_off;		/* read-only part */
	__u64 sq_off;			/* read-only part */
	__u64 rw_off;			/* page aligned: the writable part starts */
	__u64 daemon_off;		/* writable part */
	__u64 cq_off;			/* writable part */
	__u64 buf_off;			/* writable part, page aligned */
	__u32 buf_size;			/* max_io_bytes rounded up to a page */
	__u32 nr_bufs;			/* queue_depth */
	__u64 map_size;
	__u64 reserved[2];
};

#define USERBLK_RING_ENTER_WAIT		(1U << 0)

/*
 * In the daemon's flags: it may sleep, so the kernel must wake it when it
 * publishes a request. A daemon that spins on sq_tail clears the flag while
 * it spins, and the kernel then publishes without a wake-up; before it sleeps
 * (RING_ENTER with WAIT, or poll()) it sets the flag, issues a full fence and
 * reads sq_tail once more, as the kernel publishes sq_tail, issues a full
 * fence and reads the flag: one of the two sees the other. The flag starts
 * set. RING_ENTER with WAIT and the flag clear fails with EINVAL (no one
 * would wake the daemon); a daemon that stops spinning without the flag and
 * without sleeping serves nothing, and its requests time out.
 */
#define USERBLK_RING_NEED_WAKEUP	(1U << 0)

#define USERBLK_IOC_RING_LAYOUT	_IOR(USERBLK_IOC_MAGIC, 0x10, struct userblk_ring_layout)
#define USERBLK_IOC_RING_ENTER	_IO(USERBLK_IOC_MAGIC, 0x11)	/* arg: USERBLK_RING_ENTER_* */

/*
 * The pipe transport (USERBLK_MODE_PIPE).
 *
 * Requests and completions as in copy, without inline data: read(qfd, buf,
 * n) returns struct userblk_io_desc entries only (n >= USERBLK_DESC_MIN_READ)
 * and write(qfd) takes struct userblk_io_cpl entries only. The data travels
 * in one pipe per tag, which the daemon creates and registers with
 * USERBLK_IOC_PIPE_SET on the queue fd (both ends of the same pipe; the
 * kernel keeps its own references). START_DEV fails with ENOTCONN until every
 * tag of every queue has a pipe; a tag's pipe can be replaced while no
 * request is outstanding on it (else EBUSY).
 *
 * Whenever read() hands out a request, the tag's pipe must be empty: bytes
 * left in it belong to an earlier request, so the kernel drops them and fails
 * the request with an I/O error (counting a rejection) rather than let them
 * pass for this request's data. A WRITE's data is then written into the pipe
 * by that read(), without blocking: the pipe must hold max_io_bytes
 * (F_SETPIPE_SZ), else the request fails the same way and nothing of it stays
 * in the pipe. A READ answered with result 0 takes exactly len bytes out of
 * the tag's pipe in the write() of its completion; if fewer or more are there,
 * the request fails with EIO and the pipe is emptied. The kernel never waits
 * for the pipe: while another thread holds it (splicing it to a socket that
 * does not drain, say), a request that needs it fails with an I/O error. Pipes
 * that are notification queues (O_NOTIFICATION_PIPE) are refused. A pipe
 * therefore costs the daemon two fds: Q queues x D depth need 2 * Q * D + Q
 * fds, and the kernel holds 2 * Q * D file references.
 */
struct userblk_pipe_set {
	__u32 tag;			/* 0..queue_depth-1 */
	__s32 read_fd;			/* the pipe's read end */
	__s32 write_fd;			/* the same pipe's write end */
	__u32 flags;			/* must be zero */
	__u64 reserved;			/* must be zero */
};

/* The smallest read() of the pipe and splice transports: one descriptor. */
#define USERBLK_DESC_MIN_READ	(sizeof(struct userblk_io_desc))

#define USERBLK_IOC_PIPE_SET	_IOW(USERBLK_IOC_MAGIC, 0x20, struct userblk_pipe_set)

/*
 * The splice transport (USERBLK_MODE_SPLICE).
 *
 * Requests and completions as in pipe (descriptors only). The data moves
 * through a data fd, USERBLK_IOC_SPLICE_DATA_FD on the queue fd (a new fd,
 * O_RDWR, close-on-exec; any number per queue). The file offset
 * USERBLK_SPLICE_OFF(tag, gen, pos) names byte pos of the request handed out
 * on tag with gen (the low 31 bits of the descriptor's gen, so a late transfer
 * meant for an earlier request on the tag fails instead of moving the next
 * one's data), from when read() hands it out until its completion is written:
 *   - a WRITE's data is read from it: splice(data_fd, &off, pipe, NULL, ...)
 *     or pread(); reading at or past len gives 0 (end of that request);
 *   - a READ's data is written to it: splice(pipe, NULL, data_fd, &off, ...)
 *     or pwrite(), in order: each write starts where the previous ended
 *     (pos 0 first) and stays within len. A completion with result 0 is
 *     taken only once all len bytes were written; else the request fails
 *     with EIO, so a daemon can never expose pages it did not fill.
 * Other offsets fail with EINVAL (tag beyond the depth, or a WRITE written,
 * a READ read, a write out of order) or ENOENT (no request handed out on that
 * tag with that gen). A transfer never blocks on the request: while another
 * transfer of the same request is under way, it fails with EBUSY (retry).
 *
 * splice() from the data fd copies the request's data once, inside the
 * kernel, into fresh pages of the pipe: no page of a request is ever lent to
 * a pipe, so a socket or file that still holds the pipe's pages after the
 * request completed cannot see later changes to them.
 */
#define USERBLK_SPLICE_TAG_SHIFT	21	/* pos: 0..max_io_bytes, inclusive */
#define USERBLK_SPLICE_GEN_SHIFT	32	/* tag: 0..2047 */
#define USERBLK_SPLICE_GEN_MASK		0x7fffffffU	/* a loff_t is signed */
#define USERBLK_SPLICE_OFF(tag, gen, pos)					\
	(((__u64)((gen) & USERBLK_SPLICE_GEN_MASK) << USERBLK_SPLICE_GEN_SHIFT) + \
	 ((__u64)(tag) << USERBLK_SPLICE_TAG_SHIFT) + (pos))

#define USERBLK_IOC_SPLICE_DATA_FD	_IO(USERBLK_IOC_MAGIC, 0x30)

#endif /* _UAPI_USERBLK_H */
