/* SPDX-License-Identifier: GPL-2.0 */
/*
 * userblk internals shared by the core and the kernel-side transports.
 *
 * The core owns devices, tag sets, queues, timeouts and validation. A
 * transport supplies one struct userblk_transport: its blk_mq_ops and the
 * file operations of its queue fd. Requests move through these states, every
 * transition under the queue's lock:
 *
 *   IDLE -> QUEUED      queue_rq put it on the pending list
 *   QUEUED -> OUT       a syscall took it to hand it to user space
 *   OUT -> DISPATCHED   user space has it and owes an answer
 *   DISPATCHED -> IN    a syscall is taking user space's answer
 *   DISPATCHED -> DATA  a syscall on a splice data fd moves its data
 *   DATA -> DISPATCHED  ... and is done
 *   IN -> LENT          answered, but pipe buffers still lend its pages
 *   LENT -> IDLE        ... and the last of them was released (lend.c)
 *   IN/QUEUED/DISPATCHED/LENT -> IDLE   completed (answer, abort or timeout)
 *   DISPATCHED -> QUEUED  USERBLK_F_RECOVERY: its daemon went away; held on the
 *                       pending list for the next one (held set)
 *
 * OUT, IN and DATA belong to a syscall that copies data without the lock;
 * abort and timeout leave such a request to that syscall, which finishes it
 * (failing it if the queue died meanwhile). That is only sound because such
 * a syscall never sleeps on the daemon while it holds a request: user memory
 * is copied with page faults disabled (a fault gives the request back, faults
 * the page in and tries again), and a tag's pipe is only ever trylocked.
 */
#ifndef USERBLK_INTERNAL_H
#define USERBLK_INTERNAL_H

#include <linux/blk-mq.h>
#include <linux/kref.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include <uapi/userblk.h>

enum userblk_cmd_state {
	USERBLK_CMD_IDLE,
	USERBLK_CMD_QUEUED,
	USERBLK_CMD_OUT,
	USERBLK_CMD_DISPATCHED,
	USERBLK_CMD_IN,
	USERBLK_CMD_DATA,
	USERBLK_CMD_LENT,
};

struct userblk_loan;

/* Per-request state, in the request's pdu. */
struct userblk_cmd {
	struct list_head node;		/* on queue->pending while QUEUED */
	u32 gen;			/* the tag's gen at this hand-over */
	u32 filled;			/* splice: READ bytes written so far */
	struct userblk_loan *loan;	/* USERBLK_F_LEND: its lent pipe buffers */
	u8 state;			/* enum userblk_cmd_state */
	bool held;			/* a recovery held it for the next daemon */
};

struct userblk_dev;

/*
 * What the kernel did with request data (the disk's sysfs directory
 * userblk/). Bytes copied, by the operation and by what the other side of
 * the copy is: memory the daemon reads or writes (its buffers, the ring's
 * shared area), or kernel pages (a pipe's); one count per byte copied once.
 * Bytes lent: a WRITE's own pages put into a pipe, not copied. And requests
 * ended while a pipe still held pages lent from them. And, for ring, what
 * the handing over of requests cost: wake-ups of the daemon, publications a
 * spinning daemon took without one, and requests the submitter's poll reaped.
 */
enum userblk_count_kind {
	USERBLK_COPY_WRITE_USER,	/* a WRITE's data into the daemon's memory */
	USERBLK_COPY_READ_USER,		/* a READ's data from the daemon's memory */
	USERBLK_COPY_WRITE_KERNEL,	/* a WRITE's data into kernel pages */
	USERBLK_COPY_READ_KERNEL,	/* a READ's data from kernel pages */
	USERBLK_LENT_WRITE,		/* a WRITE's pages lent to a pipe */
	USERBLK_LENT_ABANDONED,		/* requests ended with pages still lent */
	USERBLK_COUNT_WAKEUPS,		/* wake-ups of a daemon sleeping for requests */
	USERBLK_COUNT_WAKE_SKIPPED,	/* publications to a spinning daemon, no wake-up */
	USERBLK_COUNT_POLL_REAPED,	/* requests completed by blk-mq's poll */
	USERBLK_COUNT_NR,
};

struct userblk_queue {
	struct userblk_dev *dev;
	u16 id;
	spinlock_t lock;
	struct list_head pending;	/* QUEUED requests, oldest first */
	struct request **rqs;		/* by tag: requests not yet completed */
	u32 *tag_gen;			/* by tag: hand-outs so far, under lock */
	wait_queue_head_t wait;		/* daemon waits here for requests */
	bool dead;			/* no daemon any more: fail fast */
	bool attached;			/* a queue fd is open */
	bool reattach;			/* recovering: needs a new daemon's fd */
	atomic64_t rejected;		/* answers refused as invalid */
	atomic64_t counts[USERBLK_COUNT_NR];	/* by enum userblk_count_kind */
	void *priv;			/* the transport's per-queue state */
};

struct userblk_transport {
	const char *name;
	u32 mode;					/* USERBLK_MODE_* */
	const struct blk_mq_ops *mq_ops;
	const struct file_operations *fops;		/* of the queue fd */
	bool can_lend;					/* takes USERBLK_F_LEND */
	/* Optional: set up q->priv at ADD_DEV, free it with the device. */
	int (*init_queue)(struct userblk_queue *q);
	void (*exit_queue)(struct userblk_queue *q);
	/* Optional: may q go live? START_DEV fails with its error if not. */
	int (*start_queue)(struct userblk_queue *q);
	/* USERBLK_F_RECOVERY: the transport's channel survives its daemon. */
	bool can_recover;
	/*
	 * Optional: q's fd was closed while the device recovers, before its
	 * requests are held: take what the old daemon answered and give the
	 * next one a clean channel (ring: a new area). An error fails the device.
	 */
	int (*reset_queue)(struct userblk_queue *q);
	/*
	 * Optional: the device resumes; hand q's held requests (QUEUED on
	 * q->pending) to the new daemon (ring: publish them). Without it the
	 * daemon reads them from the pending list.
	 */
	void (*resume_queue)(struct userblk_queue *q);
};

/*
 * How a descriptor transport (copy, pipe, splice) moves data; desc.c runs
 * the read() of descriptors and the write() of completions for all three.
 */
struct userblk_desc_ops {
	/* copy: a WRITE's data follows its descriptor in read(), a READ's its completion in write() */
	bool inline_data;
	/*
	 * Optional: ready the data path of a request as its descriptor is
	 * handed out (the request is OUT; the descriptor is in the daemon's
	 * buffer but not yet counted), moving a WRITE's data out. Must not
	 * sleep on the daemon. An error fails the request, unseen.
	 */
	int (*push)(struct userblk_queue *q, struct request *rq);
	/*
	 * Optional: take a READ's data as its result 0 completion is applied
	 * (the request is IN). Must not sleep on the daemon. An error fails
	 * the request with EIO.
	 */
	int (*pull)(struct userblk_queue *q, struct request *rq);
	/*
	 * Optional: as any answer to a WRITE is applied (the request is IN),
	 * settle its data path; may turn result into an error. Must not sleep
	 * on the daemon.
	 */
	void (*settle)(struct userblk_queue *q, struct request *rq, int *result);
};

struct userblk_dev {
	struct kref ref;		/* control, each queue fd, the live disk */
	u32 id;
	struct pid *owner;		/* the thread group that added it */
	/* enum userblk_state, under userblk_ctl_mutex; a request timeout writes DEAD without it */
	u32 state;
	struct userblk_dev_config cfg;
	const struct userblk_transport *tr;
	struct blk_mq_tag_set tag_set;
	struct gendisk *disk;
	unsigned int nr_attached;
	/* USERBLK_F_RECOVERY, under userblk_ctl_mutex */
	bool quiesced;			/* blk-mq dispatch stopped for recovery */
	unsigned long resumed;		/* jiffies of the last resume */
	struct delayed_work recover_work;	/* the recovery timeout */
	struct userblk_queue queues[];
};

static inline struct userblk_cmd *userblk_cmd(struct request *rq)
{
	return blk_mq_rq_to_pdu(rq);
}

/* core.c: shared by the transports. */
void userblk_dev_get(struct userblk_dev *dev);
void userblk_dev_put(struct userblk_dev *dev);
blk_status_t userblk_queue_rq(struct blk_mq_hw_ctx *hctx,
			      const struct blk_mq_queue_data *bd);
void userblk_commit_rqs(struct blk_mq_hw_ctx *hctx);
enum blk_eh_timer_return userblk_timeout(struct request *rq);
int userblk_init_hctx(struct blk_mq_hw_ctx *hctx, void *data,
		      unsigned int hctx_idx);
void userblk_map_queues(struct blk_mq_tag_set *set);
int userblk_queue_release(struct inode *inode, struct file *file);

struct request *userblk_take_pending(struct userblk_queue *q, size_t room,
				     struct userblk_io_desc *desc, bool inline_data);
void userblk_handed_over(struct userblk_queue *q, struct request *rq);
void userblk_untake(struct userblk_queue *q, struct request *rq);
struct request *userblk_claim(struct userblk_queue *q,
			      const struct userblk_io_cpl *cpl);
void userblk_unclaim(struct userblk_queue *q, struct request *rq);
void userblk_finish(struct userblk_queue *q, struct request *rq, int result);
int userblk_check_cpl(struct userblk_queue *q, const struct userblk_io_cpl *cpl);

bool userblk_op_supported(struct userblk_queue *q, struct request *rq);
u8 userblk_op(struct request *rq);
void userblk_describe(struct request *rq, struct userblk_io_desc *desc);
int userblk_copy_to_user_nofault(struct request *rq, void __user *dst);
int userblk_copy_from_user_nofault(struct request *rq, const void __user *src);
size_t userblk_copy_rq_iter(struct request *rq, size_t pos, size_t len,
			    struct iov_iter *it, bool to_rq);

struct request *userblk_hold(struct userblk_queue *q, unsigned int tag, u32 gen);
void userblk_unhold(struct userblk_queue *q, struct request *rq);

void userblk_lent_done(struct userblk_queue *q, struct request *rq, int result);

/* lend.c: WRITE pages lent to pipes (USERBLK_F_LEND). */
ssize_t userblk_lend(struct userblk_queue *q, struct request *rq, size_t pos,
		     size_t len, struct pipe_inode_info *pipe, bool whole);
bool userblk_loan_answer(struct userblk_cmd *cmd, int result);
bool userblk_loan_abort(struct userblk_cmd *cmd);
void userblk_loan_detach(struct userblk_queue *q, struct request *rq);

static inline bool userblk_lends(struct userblk_queue *q)
{
	return q->dev->cfg.features & USERBLK_F_LEND;
}

/* desc.c: the queue fd of copy, pipe and splice. */
ssize_t userblk_desc_read(struct file *file, char __user *buf, size_t count,
			  const struct userblk_desc_ops *ops);
ssize_t userblk_desc_write(struct file *file, const char __user *buf,
			   size_t count, const struct userblk_desc_ops *ops);
__poll_t userblk_desc_poll(struct file *file, struct poll_table_struct *wait);

bool userblk_pending_ready(struct userblk_queue *q);

static inline bool userblk_has_data_out(struct request *rq)
{
	return req_op(rq) == REQ_OP_WRITE;
}

static inline bool userblk_has_data_in(struct request *rq)
{
	return req_op(rq) == REQ_OP_READ;
}

static inline void userblk_count(struct userblk_queue *q,
				      enum userblk_count_kind kind, size_t bytes)
{
	atomic64_add(bytes, &q->counts[kind]);
}

#define userblk_reject(q, fmt, ...)					\
	do {								\
		atomic64_inc(&(q)->rejected);				\
		pr_warn_ratelimited("dev %u queue %u: " fmt "\n",	\
				    (q)->dev->id, (q)->id, ##__VA_ARGS__); \
	} while (0)

/* The transports. */
extern const struct userblk_transport userblk_copy_transport;
extern const struct userblk_transport userblk_ring_transport;
extern const struct userblk_transport userblk_pipe_transport;
extern const struct userblk_transport userblk_splice_transport;

#endif /* USERBLK_INTERNAL_H */
