// SPDX-License-Identifier: GPL-2.0
/*
 * The ring transport: per queue, one area shared with the daemon by mmap
 * holds a submission ring, a completion ring and a data buffer per tag.
 * queue_rq copies a write's data into its tag's buffer and publishes the
 * request; USERBLK_IOC_RING_ENTER takes the daemon's completions (copying a
 * read's data out of the buffer) and waits for more requests, so one
 * syscall serves a batch in both directions. Nothing in the shared area is
 * trusted: see include/uapi/userblk.h.
 *
 * Polling: on a poll queue (nr_poll_queues) blk-mq calls ring_poll_hctx from
 * the submitter's own context, which reaps the completion ring there, and a
 * daemon that spins on sq_tail clears USERBLK_RING_NEED_WAKEUP so that
 * queue_rq publishes without a wake-up. Together: no system call, no
 * context switch per request on either side.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/log2.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/poll.h>
#include <linux/sched/mm.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include <userblk_ring_layout.h>

#include "internal.h"

/* A queue's area may not exceed this: depth * max I/O is the bulk of it. */
#define RING_MAX_MAP_SIZE	(256UL << 20)

struct ring_queue {
	void *area;			/* vmalloc_user, mapped by the daemon */
	struct userblk_ring_layout layout;
	struct userblk_ring_kernel_indices *kidx;	/* read-only to the daemon */
	struct userblk_ring_daemon_indices *didx;
	struct userblk_io_desc *sq;
	struct userblk_io_cpl *cq;
	u8 *bufs;
	u32 sq_tail;			/* ours; the shared copy is for the daemon */
	u32 cq_head;			/* ours, under reap_lock */
	struct mutex reap_lock;
};

static struct ring_queue *ring_of(struct userblk_queue *q)
{
	return q->priv;
}

static u8 *ring_buf(struct ring_queue *r, unsigned int tag)
{
	return r->bufs + (size_t)tag * r->layout.buf_size;
}

/* Point r at area, laid out as r->layout says, with empty rings. */
static void ring_use_area(struct ring_queue *r, void *area)
{
	const struct userblk_ring_layout *l = &r->layout;

	r->area = area;
	r->kidx = area + l->kernel_off;
	r->didx = area + l->daemon_off;
	r->sq = area + l->sq_off;
	r->cq = area + l->cq_off;
	r->bufs = area + l->buf_off;
	r->sq_tail = 0;
	r->cq_head = 0;
	/* A daemon that never spins needs no word of the flag. */
	r->didx->flags = USERBLK_RING_NEED_WAKEUP;
}

static int ring_init_queue(struct userblk_queue *q)
{
	const struct userblk_dev_config *c = &q->dev->cfg;
	struct userblk_ring_layout *l;
	struct ring_queue *r;
	void *area;
	u64 size;

	r = kzalloc(sizeof(*r), GFP_KERNEL);
	if (!r)
		return -ENOMEM;
	l = &r->layout;
	userblk_ring_lay_out(l, c->queue_depth, c->max_io_bytes, PAGE_SIZE,
			     SMP_CACHE_BYTES);
	size = l->map_size;
	if (size > RING_MAX_MAP_SIZE) {
		pr_warn_ratelimited("ADD_DEV: a ring queue of depth %u and max I/O %u needs %llu MiB, more than %lu: lower the depth or the max I/O\n",
				    c->queue_depth, c->max_io_bytes, size >> 20,
				    RING_MAX_MAP_SIZE >> 20);
		kfree(r);
		return -E2BIG;
	}
	area = vmalloc_user(size);
	if (!area) {
		kfree(r);
		return -ENOMEM;
	}
	ring_use_area(r, area);
	mutex_init(&r->reap_lock);
	q->priv = r;
	return 0;
}

static void ring_exit_queue(struct userblk_queue *q)
{
	struct ring_queue *r = ring_of(q);

	if (!r)
		return;
	vfree(r->area);
	kfree(r);
	q->priv = NULL;
}

static void ring_count_reject(struct userblk_queue *q, struct ring_queue *r)
{
	WRITE_ONCE(r->kidx->rejected, atomic64_read(&q->rejected));
}

/* Requests published and not yet consumed; 0 if the daemon's head lies. */
static u32 ring_sq_pending(struct ring_queue *r)
{
	u32 n = READ_ONCE(r->sq_tail) - READ_ONCE(r->didx->sq_head);

	return n <= r->layout.sq_entries ? n : 0;
}

static void ring_copy_from_rq(struct request *rq, u8 *dst)
{
	struct req_iterator iter;
	struct bio_vec bv;

	rq_for_each_segment(bv, rq, iter) {
		memcpy_from_bvec(dst, &bv);
		dst += bv.bv_len;
	}
}

static void ring_copy_to_rq(struct request *rq, const u8 *src)
{
	struct req_iterator iter;
	struct bio_vec bv;

	rq_for_each_segment(bv, rq, iter) {
		memcpy_to_bvec(&bv, src);
		src += bv.bv_len;
	}
}

/*
 * After publishing sq_tail: wake the daemon unless it spins. The full fence
 * orders the tail's store before the flag's load, against the daemon's store
 * of the flag, fence and load of sq_tail (uapi: USERBLK_RING_NEED_WAKEUP);
 * wq_has_sleeper() orders the same way against a sleeper that is queued.
 */
static void ring_wake(struct userblk_queue *q, struct ring_queue *r)
{
	/* sq_tail's store before the flag's load: pairs with the daemon's fence. */
	smp_mb();
	if (!(READ_ONCE(r->didx->flags) & USERBLK_RING_NEED_WAKEUP)) {
		userblk_count(q, USERBLK_COUNT_WAKE_SKIPPED, 1);
		return;
	}
	if (wq_has_sleeper(&q->wait)) {
		userblk_count(q, USERBLK_COUNT_WAKEUPS, 1);
		wake_up(&q->wait);
	}
}

/* A WRITE's data into its tag's buffer, before the request is published. */
static void ring_stage_write(struct userblk_queue *q, struct ring_queue *r,
			     struct request *rq)
{
	ring_copy_from_rq(rq, ring_buf(r, rq->tag));
	userblk_count(q, USERBLK_COPY_WRITE_USER, blk_rq_bytes(rq));
}

/* Hand rq out on the submission ring under a new gen. */
static void ring_publish(struct userblk_queue *q, struct ring_queue *r,
			 struct request *rq)
{
	struct userblk_cmd *cmd = userblk_cmd(rq);

	lockdep_assert_held(&q->lock);
	cmd->gen = ++q->tag_gen[rq->tag];
	cmd->state = USERBLK_CMD_DISPATCHED;
	q->rqs[rq->tag] = rq;
	userblk_describe(rq, &r->sq[r->sq_tail & (r->layout.sq_entries - 1)]);
	r->sq_tail++;
	/* The entry and a write's data are visible before the new tail. */
	smp_store_release(&r->kidx->sq_tail, r->sq_tail);
}

static blk_status_t ring_queue_rq(struct blk_mq_hw_ctx *hctx,
				  const struct blk_mq_queue_data *bd)
{
	struct userblk_queue *q = hctx->driver_data;
	struct ring_queue *r = ring_of(q);
	struct request *rq = bd->rq;
	struct userblk_cmd *cmd = userblk_cmd(rq);
	bool dead;
	u32 head;

	if (unlikely(!userblk_op_supported(q, rq)))
		return BLK_STS_NOTSUPP;

	cmd->loan = NULL;	/* ring never lends; the core's completion looks */
	cmd->held = false;
	blk_mq_start_request(rq);
	if (userblk_has_data_out(rq)) {
		/*
		 * The tag's buffer is this request's until it completes, but only
		 * while the device lives: a queue dies before any of its tags is
		 * freed by an abort or a timeout, so a live queue here means the
		 * tag's last request was answered, and no late daemon still reads
		 * the buffer for it. A dead one: leave the buffer alone.
		 */
		spin_lock(&q->lock);
		dead = q->dead;
		spin_unlock(&q->lock);
		if (unlikely(dead))
			return BLK_STS_IOERR;
		ring_stage_write(q, r, rq);
	}

	spin_lock(&q->lock);
	if (unlikely(q->dead)) {
		spin_unlock(&q->lock);
		return BLK_STS_IOERR;
	}
	/* Pairs with the daemon's release of sq_head: its reads of the slot are done. */
	head = smp_load_acquire(&r->didx->sq_head);
	if (unlikely(r->sq_tail - head >= r->layout.sq_entries)) {
		/* At most depth requests are out: a full ring is a lying head. */
		userblk_reject(q, "submission head %u is out of range (tail %u)",
			       head, r->sq_tail);
		ring_count_reject(q, r);
		spin_unlock(&q->lock);
		return BLK_STS_IOERR;
	}
	ring_publish(q, r, rq);
	spin_unlock(&q->lock);

	if (bd->last)
		ring_wake(q, r);
	return BLK_STS_OK;
}

static void ring_commit_rqs(struct blk_mq_hw_ctx *hctx)
{
	struct userblk_queue *q = hctx->driver_data;

	ring_wake(q, ring_of(q));
}

/*
 * Take every completion the daemon published, under reap_lock. Returns the
 * requests completed, or -EINVAL for a lying completion tail.
 */
static int __ring_reap(struct userblk_queue *q, struct ring_queue *r)
{
	u32 tail, mask = r->layout.cq_entries - 1;
	int ret = 0;

	lockdep_assert_held(&r->reap_lock);
	/* Pairs with the daemon's release of cq_tail: its entries are visible. */
	tail = smp_load_acquire(&r->didx->cq_tail);
	if (tail == r->cq_head)
		return 0;	/* a poller's common case: nothing to store */
	if (tail - r->cq_head > r->layout.cq_entries) {
		userblk_reject(q, "completion tail %u is out of range (head %u)",
			       tail, r->cq_head);
		ret = -EINVAL;
		goto out_unlock;
	}
	while (r->cq_head != tail) {
		struct userblk_io_cpl cpl;
		struct request *rq;

		/* One read of the entry: the daemon may change it meanwhile. */
		memcpy(&cpl, &r->cq[r->cq_head & mask], sizeof(cpl));
		/* Validate the copy, never the shared entry. */
		barrier();
		r->cq_head++;
		if (userblk_check_cpl(q, &cpl))
			continue;
		rq = userblk_claim(q, &cpl);
		if (!rq)
			continue;
		if (userblk_has_data_in(rq) && cpl.result == 0) {
			ring_copy_to_rq(rq, ring_buf(r, rq->tag));
			userblk_count(q, USERBLK_COPY_READ_USER,
					   blk_rq_bytes(rq));
		}
		userblk_finish(q, rq, cpl.result);
		ret++;
	}
	/* Our reads of the slots are done before the daemon may reuse them. */
	smp_store_release(&r->kidx->cq_head, r->cq_head);
out_unlock:
	ring_count_reject(q, r);
	return ret;
}

static int ring_reap(struct userblk_queue *q, struct ring_queue *r)
{
	int ret;

	mutex_lock(&r->reap_lock);
	ret = __ring_reap(q, r);
	mutex_unlock(&r->reap_lock);
	return ret < 0 ? ret : 0;
}

/*
 * blk-mq's poll of a poll queue, from the submitter's context (io_uring
 * IOPOLL, RWF_HIPRI), which must not sleep here: if the daemon's RING_ENTER
 * reaps meanwhile, it completes the requests, and the poller finds them done.
 * A lying completion tail is counted and refused as in RING_ENTER; the
 * requests behind it time out. Once the queue is dead, its requests have
 * been failed by the abort and nothing the ring holds is taken.
 */
static int ring_poll_hctx(struct blk_mq_hw_ctx *hctx, struct io_comp_batch *iob)
{
	struct userblk_queue *q = hctx->driver_data;
	struct ring_queue *r = ring_of(q);
	int ret;

	if (READ_ONCE(q->dead))
		return 0;
	/*
	 * Only under the lock: a recovery swaps the area (ring_reset_queue),
	 * and a poller of RWF_HIPRI is not under RCU. Looking without it first
	 * made no difference that could be measured (docs/polling.md).
	 */
	if (!mutex_trylock(&r->reap_lock))
		return 0;
	ret = __ring_reap(q, r);
	mutex_unlock(&r->reap_lock);
	if (ret > 0)
		userblk_count(q, USERBLK_COUNT_POLL_REAPED, ret);
	return ret > 0 ? ret : 0;
}

/*
 * A poll queue's completions wait in the ring until someone polls: a
 * submitter that stopped polling (or polls rarely) must not have its answered
 * requests taken for lost ones. Reap first, as NVMe's timeout looks at its
 * completion queue; a request that was answered is then done, and
 * userblk_timeout() finds it IDLE.
 */
static enum blk_eh_timer_return ring_timeout(struct request *rq)
{
	struct userblk_queue *q = rq->mq_hctx->driver_data;
	struct ring_queue *r = ring_of(q);

	if (rq->mq_hctx->type == HCTX_TYPE_POLL && !READ_ONCE(q->dead)) {
		mutex_lock(&r->reap_lock);
		__ring_reap(q, r);
		mutex_unlock(&r->reap_lock);
	}
	return userblk_timeout(rq);
}

/*
 * Recovery (USERBLK_F_RECOVERY): the old daemon's fd is closed, so no process
 * maps the area (a mapping holds the file). Take the completions it published
 * before it went: they answer requests it had. Then give the next daemon a
 * new area. The old one may still be written by the old daemon's I/O in
 * flight (an O_DIRECT read into a buffer, which pins its page): vfree drops
 * only our references, so such a page lives until that I/O ends and can never
 * land in a buffer of the new daemon. The held requests are published in the
 * new area when the device resumes (ring_resume_queue).
 */
static int ring_reset_queue(struct userblk_queue *q)
{
	struct ring_queue *r = ring_of(q);
	unsigned int noio = memalloc_noio_save();
	void *area, *old;

	/* No I/O for reclaim: this device's I/O is held, and may be the one written back. */
	area = vmalloc_user(r->layout.map_size);
	memalloc_noio_restore(noio);
	if (!area)
		return -ENOMEM;
	mutex_lock(&r->reap_lock);
	__ring_reap(q, r);
	spin_lock(&q->lock);
	old = r->area;
	ring_use_area(r, area);
	ring_count_reject(q, r);	/* the count goes on in the new area */
	spin_unlock(&q->lock);
	mutex_unlock(&r->reap_lock);
	/* Every reader of the area takes reap_lock or q->lock, or is quiesced. */
	vfree(old);
	return 0;
}

/*
 * The device resumes: publish the held requests (QUEUED on q->pending, in
 * order) in the new area, each under a new gen, a WRITE's data copied again.
 * Each is taken off the list as OUT first, so that an abort meanwhile (a
 * request timeout) leaves it to us, and its data is copied without the lock;
 * then it is published, or failed if the queue died meanwhile.
 */
static void ring_resume_queue(struct userblk_queue *q)
{
	struct ring_queue *r = ring_of(q);

	for (;;) {
		struct userblk_cmd *cmd;
		struct request *rq;

		spin_lock(&q->lock);
		cmd = list_first_entry_or_null(&q->pending, struct userblk_cmd, node);
		if (!cmd) {
			spin_unlock(&q->lock);
			break;
		}
		list_del_init(&cmd->node);
		cmd->state = USERBLK_CMD_OUT;
		spin_unlock(&q->lock);
		rq = blk_mq_rq_from_pdu(cmd);
		if (userblk_has_data_out(rq))
			ring_stage_write(q, r, rq);
		spin_lock(&q->lock);
		if (unlikely(q->dead)) {
			cmd->state = USERBLK_CMD_IDLE;
			q->rqs[rq->tag] = NULL;
			spin_unlock(&q->lock);
			blk_mq_end_request(rq, BLK_STS_IOERR);
			continue;
		}
		/* At most depth requests are out, and the ring is new: room for all. */
		ring_publish(q, r, rq);
		spin_unlock(&q->lock);
	}
	ring_wake(q, r);
}

static long ring_enter(struct userblk_queue *q, unsigned long flags)
{
	struct ring_queue *r = ring_of(q);
	int ret;

	if (flags & ~USERBLK_RING_ENTER_WAIT)
		return -EINVAL;
	ret = ring_reap(q, r);
	if (ret)
		return ret;
	if (flags & USERBLK_RING_ENTER_WAIT) {
		if (!(READ_ONCE(r->didx->flags) & USERBLK_RING_NEED_WAKEUP)) {
			userblk_reject(q, "RING_ENTER waits with NEED_WAKEUP clear: nothing would wake it");
			ring_count_reject(q, r);
			return -EINVAL;
		}
		/* A recovery began: this fd's daemon gets no more requests. */
		if (READ_ONCE(q->reattach))
			return -ENODEV;
		ret = wait_event_interruptible(q->wait, ring_sq_pending(r) ||
					       READ_ONCE(q->dead) ||
					       READ_ONCE(q->reattach));
		if (ret)
			return ret;
	}
	if (READ_ONCE(q->dead) || READ_ONCE(q->reattach))
		return -ENODEV;
	return ring_sq_pending(r);
}

static long ring_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct userblk_queue *q = file->private_data;

	switch (cmd) {
	case USERBLK_IOC_RING_ENTER:
		return ring_enter(q, arg);
	case USERBLK_IOC_RING_LAYOUT:
		if (copy_to_user((void __user *)arg, &ring_of(q)->layout,
				 sizeof(struct userblk_ring_layout)))
			return -EFAULT;
		return 0;
	default:
		return -ENOTTY;
	}
}

/*
 * The daemon maps the area in its two parts, each whole: [0, rw_off) read-only
 * (the kernel's indices and the submission ring: a daemon cannot scribble on
 * what the kernel tells it) and [rw_off, map_size) read-write (its indices,
 * the completion ring, the buffers). Never executable, never private (a
 * copy-on-write page would be the daemon's alone), not inherited by fork():
 * only the daemon that opened the queue touches it.
 */
static int ring_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct userblk_queue *q = file->private_data;
	struct ring_queue *r = ring_of(q);
	const struct userblk_ring_layout *l = &r->layout;
	unsigned long size = vma->vm_end - vma->vm_start;
	bool ro = vma->vm_pgoff == 0;

	if (ro ? size != l->rw_off :
	    vma->vm_pgoff != l->rw_off >> PAGE_SHIFT || size != l->map_size - l->rw_off)
		return -EINVAL;
	if (!(vma->vm_flags & VM_SHARED) || (vma->vm_flags & VM_EXEC) ||
	    (ro && (vma->vm_flags & VM_WRITE)))
		return -EPERM;
	vma->vm_flags &= ~VM_MAYEXEC;
	if (ro)
		vma->vm_flags &= ~VM_MAYWRITE;
	vma->vm_flags |= VM_DONTEXPAND | VM_DONTDUMP | VM_DONTCOPY;
	return remap_vmalloc_range(vma, r->area, vma->vm_pgoff);
}

static __poll_t ring_poll(struct file *file, struct poll_table_struct *wait)
{
	struct userblk_queue *q = file->private_data;
	__poll_t mask = 0;

	poll_wait(file, &q->wait, wait);
	if (ring_sq_pending(ring_of(q)))
		mask |= EPOLLIN | EPOLLRDNORM;
	if (READ_ONCE(q->dead) || READ_ONCE(q->reattach))
		mask |= EPOLLIN | EPOLLRDNORM | EPOLLHUP;
	return mask;
}

static const struct file_operations ring_fops = {
	.owner		= THIS_MODULE,
	.unlocked_ioctl	= ring_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.mmap		= ring_mmap,
	.poll		= ring_poll,
	.release	= userblk_queue_release,
	.llseek		= noop_llseek,
};

static const struct blk_mq_ops ring_mq_ops = {
	.queue_rq	= ring_queue_rq,
	.commit_rqs	= ring_commit_rqs,
	.timeout	= ring_timeout,
	.init_hctx	= userblk_init_hctx,
	.map_queues	= userblk_map_queues,
	.poll		= ring_poll_hctx,
};

const struct userblk_transport userblk_ring_transport = {
	.name		= "ring",
	.mode		= USERBLK_MODE_RING,
	.mq_ops		= &ring_mq_ops,
	.fops		= &ring_fops,
	.init_queue	= ring_init_queue,
	.exit_queue	= ring_exit_queue,
	.can_recover	= true,
	.reset_queue	= ring_reset_queue,
	.resume_queue	= ring_resume_queue,
};
