// SPDX-License-Identifier: GPL-2.0
/*
 * userblk: block devices whose requests are served by a user-space daemon.
 *
 * The core owns the control device, device lifecycle, tag sets, queues,
 * timeouts and validation; kernel-side transports (copy.c, ...) supply how
 * requests and data cross to user space. See internal.h for the request
 * states and include/uapi/userblk.h for the contract with user space.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/miscdevice.h>
#include <linux/anon_inodes.h>
#include <linux/blkdev.h>
#include <linux/fs.h>
#include <linux/idr.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "internal.h"

static unsigned int default_timeout_ms = 30000;
static unsigned int default_max_io_kb = 512;

static int param_set_timeout(const char *val, const struct kernel_param *kp)
{
	return param_set_uint_minmax(val, kp, USERBLK_MIN_TIMEOUT_MS,
				     USERBLK_MAX_TIMEOUT_MS);
}

static const struct kernel_param_ops timeout_param_ops = {
	.set = param_set_timeout,
	.get = param_get_uint,
};

static int param_set_max_io_kb(const char *val, const struct kernel_param *kp)
{
	return param_set_uint_minmax(val, kp, PAGE_SIZE / 1024,
				     USERBLK_MAX_IO_BYTES / 1024);
}

static const struct kernel_param_ops max_io_param_ops = {
	.set = param_set_max_io_kb,
	.get = param_get_uint,
};

module_param_cb(default_timeout_ms, &timeout_param_ops, &default_timeout_ms, 0644);
MODULE_PARM_DESC(default_timeout_ms,
		 "Request timeout when ADD_DEV passes 0, in ms (100..600000). Default: 30000");
module_param_cb(default_max_io_kb, &max_io_param_ops, &default_max_io_kb, 0644);
MODULE_PARM_DESC(default_max_io_kb,
		 "Largest request when ADD_DEV passes 0, in KiB (4..1024). Default: 512");

/* Serialises device creation, state changes and removal. */
static DEFINE_MUTEX(userblk_ctl_mutex);
static DEFINE_IDR(userblk_idr);
/* Runs the recovery timeouts; destroyed at unload, after every device is gone. */
static struct workqueue_struct *userblk_wq;

static const struct userblk_transport *userblk_transports[] = {
	&userblk_copy_transport,
	&userblk_ring_transport,
	&userblk_pipe_transport,
	&userblk_splice_transport,
};

static const struct userblk_transport *userblk_find_transport(u32 mode)
{
	int i;

	for (i = 0; i < ARRAY_SIZE(userblk_transports); i++)
		if (userblk_transports[i]->mode == mode)
			return userblk_transports[i];
	return NULL;
}

/* ---- requests ---------------------------------------------------------- */

u8 userblk_op(struct request *rq)
{
	switch (req_op(rq)) {
	case REQ_OP_READ:
		return USERBLK_OP_READ;
	case REQ_OP_WRITE:
		return USERBLK_OP_WRITE;
	case REQ_OP_FLUSH:
		return USERBLK_OP_FLUSH;
	case REQ_OP_DISCARD:
		return USERBLK_OP_DISCARD;
	case REQ_OP_WRITE_ZEROES:
		return USERBLK_OP_WRITE_ZEROES;
	default:
		return U8_MAX;
	}
}

/* An operation the daemon knows, with no more data than a slot holds. */
bool userblk_op_supported(struct userblk_queue *q, struct request *rq)
{
	if (unlikely(userblk_op(rq) == U8_MAX))
		return false;
	return likely(blk_rq_bytes(rq) <= q->dev->cfg.max_io_bytes ||
		      req_op(rq) == REQ_OP_DISCARD ||
		      req_op(rq) == REQ_OP_WRITE_ZEROES);
}

/* The common queue_rq of transports that keep a pending list. */
blk_status_t userblk_queue_rq(struct blk_mq_hw_ctx *hctx,
			      const struct blk_mq_queue_data *bd)
{
	struct userblk_queue *q = hctx->driver_data;
	struct request *rq = bd->rq;
	struct userblk_cmd *cmd = userblk_cmd(rq);

	if (unlikely(!userblk_op_supported(q, rq)))
		return BLK_STS_NOTSUPP;

	cmd->loan = NULL;
	cmd->held = false;
	blk_mq_start_request(rq);
	spin_lock(&q->lock);
	if (unlikely(q->dead)) {
		spin_unlock(&q->lock);
		return BLK_STS_IOERR;
	}
	cmd->state = USERBLK_CMD_QUEUED;
	q->rqs[rq->tag] = rq;
	list_add_tail(&cmd->node, &q->pending);
	spin_unlock(&q->lock);

	/* Wake the daemon once per batch: blk-mq calls commit_rqs otherwise. */
	if (bd->last)
		wake_up(&q->wait);
	return BLK_STS_OK;
}

void userblk_commit_rqs(struct blk_mq_hw_ctx *hctx)
{
	struct userblk_queue *q = hctx->driver_data;

	wake_up(&q->wait);
}

int userblk_init_hctx(struct blk_mq_hw_ctx *hctx, void *data,
		      unsigned int hctx_idx)
{
	struct userblk_dev *dev = data;

	hctx->driver_data = &dev->queues[hctx_idx];
	return 0;
}

/*
 * Default queues first, then the poll queues (the last nr_poll_queues), as
 * ADD_DEV documents; no queue of its own for reads.
 */
void userblk_map_queues(struct blk_mq_tag_set *set)
{
	struct userblk_dev *dev = set->driver_data;
	unsigned int poll = dev->cfg.nr_poll_queues, off = 0, i;

	for (i = 0; i < set->nr_maps; i++) {
		struct blk_mq_queue_map *map = &set->map[i];

		switch (i) {
		case HCTX_TYPE_DEFAULT:
			map->nr_queues = dev->cfg.nr_queues - poll;
			break;
		case HCTX_TYPE_POLL:
			map->nr_queues = poll;
			break;
		default:
			map->nr_queues = 0;
			continue;
		}
		map->queue_offset = off;
		off += map->nr_queues;
		blk_mq_map_queues(map);
	}
}

/*
 * Complete rq, which the caller has taken out of every list, as IDLE. Pages
 * it lent that a pipe still holds stay with that pipe (lend.c).
 */
static void userblk_end(struct request *rq, int result)
{
	if (unlikely(userblk_cmd(rq)->loan))
		userblk_loan_detach(rq->mq_hctx->driver_data, rq);
	blk_mq_end_request(rq, result ? errno_to_blk_status(result) : BLK_STS_OK);
}

/* Fill desc for rq, whose gen the caller has set. */
void userblk_describe(struct request *rq, struct userblk_io_desc *desc)
{
	desc->tag = rq->tag;
	desc->op = userblk_op(rq);
	desc->flags = 0;
	if (rq->cmd_flags & REQ_FUA)
		desc->flags |= USERBLK_IO_F_FUA;
	if (req_op(rq) == REQ_OP_WRITE_ZEROES && (rq->cmd_flags & REQ_NOUNMAP))
		desc->flags |= USERBLK_IO_F_NOUNMAP;
	desc->gen = userblk_cmd(rq)->gen;
	desc->offset = (u64)blk_rq_pos(rq) << SECTOR_SHIFT;
	desc->len = req_op(rq) == REQ_OP_FLUSH ? 0 : blk_rq_bytes(rq);
	desc->reserved = 0;
}

/*
 * Whether cmd, first on a pending list, may be handed out: not if a recovery
 * holds it and the device has not resumed (START_DEV). A queue the old daemon
 * still has open keeps its own requests, which are not held.
 */
static bool userblk_may_hand_out(struct userblk_queue *q, struct userblk_cmd *cmd)
{
	lockdep_assert_held(&q->lock);
	return !cmd->held || READ_ONCE(q->dev->state) != USERBLK_STATE_RECOVERING;
}

/* Is a request waiting on q's pending list that the daemon may take now? */
bool userblk_pending_ready(struct userblk_queue *q)
{
	struct userblk_cmd *cmd;
	bool ready;

	if (list_empty_careful(&q->pending))
		return false;
	/* Only a device with recovery holds requests: the others need no lock. */
	if (!(q->dev->cfg.features & USERBLK_F_RECOVERY))
		return true;
	spin_lock(&q->lock);
	cmd = list_first_entry_or_null(&q->pending, struct userblk_cmd, node);
	ready = cmd && userblk_may_hand_out(q, cmd);
	spin_unlock(&q->lock);
	return ready;
}

/*
 * Take the oldest pending request whose entry (its descriptor, and a write's
 * data if inline_data) fits in room bytes, mark it OUT and describe it in
 * desc. Returns NULL when none is pending or the oldest does not fit.
 */
struct request *userblk_take_pending(struct userblk_queue *q, size_t room,
				     struct userblk_io_desc *desc, bool inline_data)
{
	struct userblk_cmd *cmd;
	struct request *rq;
	size_t need;

	spin_lock(&q->lock);
	cmd = list_first_entry_or_null(&q->pending, struct userblk_cmd, node);
	if (!cmd || !userblk_may_hand_out(q, cmd))
		goto out_none;
	rq = blk_mq_rq_from_pdu(cmd);
	need = sizeof(*desc);
	if (inline_data && userblk_has_data_out(rq))
		need += blk_rq_bytes(rq);
	if (need > room)
		goto out_none;
	list_del_init(&cmd->node);
	cmd->state = USERBLK_CMD_OUT;
	/* Per tag, not per request: with a scheduler requests share tags. */
	cmd->gen = ++q->tag_gen[rq->tag];
	cmd->filled = 0;
	spin_unlock(&q->lock);

	userblk_describe(rq, desc);
	return rq;

out_none:
	spin_unlock(&q->lock);
	return NULL;
}

/*
 * Give back a request a syscall held (OUT or IN) without completing it: it
 * goes to state, or is failed if the queue died meanwhile, since the abort
 * passed over it.
 */
static void userblk_put_back(struct userblk_queue *q, struct request *rq,
			     enum userblk_cmd_state state)
{
	struct userblk_cmd *cmd = userblk_cmd(rq);

	spin_lock(&q->lock);
	if (likely(!q->dead)) {
		cmd->state = state;
		if (state == USERBLK_CMD_QUEUED)
			list_add(&cmd->node, &q->pending);
		spin_unlock(&q->lock);
		/* Another reader may have gone to sleep while this one held it. */
		if (state == USERBLK_CMD_QUEUED)
			wake_up(&q->wait);
		return;
	}
	cmd->state = USERBLK_CMD_IDLE;
	q->rqs[rq->tag] = NULL;
	spin_unlock(&q->lock);
	userblk_end(rq, -EIO);
}

/* An OUT request reached user space, which now owes an answer. */
void userblk_handed_over(struct userblk_queue *q, struct request *rq)
{
	userblk_put_back(q, rq, USERBLK_CMD_DISPATCHED);
}

/* An OUT request could not be handed over: back to the head of the list. */
void userblk_untake(struct userblk_queue *q, struct request *rq)
{
	userblk_put_back(q, rq, USERBLK_CMD_QUEUED);
}

/* Validate the fields of a completion that need no lock. */
int userblk_check_cpl(struct userblk_queue *q, const struct userblk_io_cpl *cpl)
{
	if (cpl->reserved0 || cpl->reserved1) {
		userblk_reject(q, "completion for tag %u has reserved bits set",
			       cpl->tag);
		return -EINVAL;
	}
	if (cpl->result > 0 || cpl->result < -MAX_ERRNO) {
		userblk_reject(q, "completion for tag %u has result %d, not 0 or -errno",
			       cpl->tag, cpl->result);
		return -EINVAL;
	}
	if (cpl->tag >= q->dev->cfg.queue_depth) {
		userblk_reject(q, "completion for tag %u, beyond depth %u",
			       cpl->tag, q->dev->cfg.queue_depth);
		return -EINVAL;
	}
	return 0;
}

/*
 * Claim the DISPATCHED request a completion answers (tag and gen must match)
 * and mark it IN. Returns NULL if no such request waits for an answer.
 */
struct request *userblk_claim(struct userblk_queue *q,
			      const struct userblk_io_cpl *cpl)
{
	struct userblk_cmd *cmd;
	struct request *rq;

	spin_lock(&q->lock);
	rq = q->rqs[cpl->tag];
	if (unlikely(!rq))
		goto out_stale;
	cmd = userblk_cmd(rq);
	if (unlikely(cmd->state != USERBLK_CMD_DISPATCHED || cmd->gen != cpl->gen))
		goto out_stale;
	cmd->state = USERBLK_CMD_IN;
	spin_unlock(&q->lock);
	return rq;

out_stale:
	spin_unlock(&q->lock);
	userblk_reject(q, "completion for tag %u gen %u answers no outstanding request",
		       cpl->tag, cpl->gen);
	return NULL;
}

/* A claimed request's answer could not be taken: it waits for another. */
void userblk_unclaim(struct userblk_queue *q, struct request *rq)
{
	userblk_put_back(q, rq, USERBLK_CMD_DISPATCHED);
}

/*
 * Hold the DISPATCHED request on tag, handed out with gen (its low
 * USERBLK_SPLICE_GEN_MASK bits), for a syscall that moves its data (a splice
 * data fd), marking it DATA so that neither its completion nor an abort ends
 * it meanwhile. Returns an ERR_PTR: -EINVAL for a tag beyond the depth,
 * -ENOENT if no request with that gen waits on it, -EBUSY if another syscall
 * holds it.
 */
struct request *userblk_hold(struct userblk_queue *q, unsigned int tag, u32 gen)
{
	struct userblk_cmd *cmd;
	struct request *rq;

	if (tag >= q->dev->cfg.queue_depth)
		return ERR_PTR(-EINVAL);
	spin_lock(&q->lock);
	rq = q->rqs[tag];
	if (!rq) {
		rq = ERR_PTR(-ENOENT);
		goto out;
	}
	cmd = userblk_cmd(rq);
	if ((cmd->gen & USERBLK_SPLICE_GEN_MASK) != gen)
		rq = ERR_PTR(-ENOENT);	/* meant for an earlier request on tag */
	else if (cmd->state == USERBLK_CMD_DISPATCHED)
		cmd->state = USERBLK_CMD_DATA;
	else
		rq = ERR_PTR(cmd->state == USERBLK_CMD_DATA ? -EBUSY : -ENOENT);
out:
	spin_unlock(&q->lock);
	return rq;
}

/* Give back a held request: it waits for its answer, or fails if q died. */
void userblk_unhold(struct userblk_queue *q, struct request *rq)
{
	userblk_put_back(q, rq, USERBLK_CMD_DISPATCHED);
}

/*
 * Complete a claimed (IN) request with result (0 or -errno); one that still
 * lends pages to a pipe is LENT instead, and the last release completes it.
 */
void userblk_finish(struct userblk_queue *q, struct request *rq, int result)
{
	struct userblk_cmd *cmd = userblk_cmd(rq);

	spin_lock(&q->lock);
	/* A dead queue's abort has passed: nothing would end a LENT request. */
	if (unlikely(cmd->loan) && !q->dead && userblk_loan_answer(cmd, result)) {
		cmd->state = USERBLK_CMD_LENT;
		spin_unlock(&q->lock);
		return;
	}
	cmd->state = USERBLK_CMD_IDLE;
	q->rqs[rq->tag] = NULL;
	spin_unlock(&q->lock);
	userblk_end(rq, result);
}

/*
 * The last pipe buffer lent from a LENT request was released: complete it
 * with its answer. lend.c has taken it, so no abort ends it meanwhile, and
 * its loan is gone.
 */
void userblk_lent_done(struct userblk_queue *q, struct request *rq, int result)
{
	struct userblk_cmd *cmd = userblk_cmd(rq);

	spin_lock(&q->lock);
	cmd->loan = NULL;
	cmd->state = USERBLK_CMD_IDLE;
	q->rqs[rq->tag] = NULL;
	spin_unlock(&q->lock);
	blk_mq_end_request(rq, result ? errno_to_blk_status(result) : BLK_STS_OK);
}

static void userblk_abort_all(struct userblk_dev *dev, struct request *timed_out);
static void userblk_recovery_now(struct userblk_dev *dev);

/*
 * A request the daemon did not answer in time fails, and so does the device:
 * a daemon that late may still act on requests the kernel gave up on (write
 * old data over newer, or fill a tag's buffer after the tag was reused), so
 * nothing it does afterwards may be taken. NBD shuts its socket for the same
 * reason. Every queue is marked dead before the request's tag is freed, so
 * no request that reuses a tag of this device is handed to the daemon again.
 */
enum blk_eh_timer_return userblk_timeout(struct request *rq)
{
	struct userblk_queue *q = rq->mq_hctx->driver_data;
	struct userblk_cmd *cmd = userblk_cmd(rq);
	u8 state;

	struct userblk_dev *dev = q->dev;
	bool held;

	spin_lock(&q->lock);
	state = cmd->state;
	held = cmd->held;
	spin_unlock(&q->lock);
	/*
	 * IDLE: completed meanwhile, or started and not yet queued (queue_rq
	 * arms the timer before it takes q->lock): the daemon does not have it.
	 * Rearm rather than lose its timeout; a completed request ignores it.
	 */
	if (state == USERBLK_CMD_IDLE)
		return BLK_EH_RESET_TIMER;
	/*
	 * Held by a recovery: the recovery timeout bounds its wait, and once the
	 * device resumed the new daemon has a whole timeout for it.
	 */
	if (held && (READ_ONCE(dev->state) == USERBLK_STATE_RECOVERING ||
		     time_before(jiffies, READ_ONCE(dev->resumed) +
				 msecs_to_jiffies(dev->cfg.timeout_ms))))
		return BLK_EH_RESET_TIMER;

	pr_warn_ratelimited("dev %u queue %u: request tag %u timed out after %u ms: failing all I/O of the device\n",
			    q->dev->id, q->id, rq->tag, q->dev->cfg.timeout_ms);
	/* Recovering: what the recovery holds must not wait for its timeout. */
	if (xchg(&dev->state, USERBLK_STATE_DEAD) == USERBLK_STATE_RECOVERING)
		userblk_recovery_now(dev);
	userblk_abort_all(q->dev, rq);
	/*
	 * The abort ended rq unless a syscall holds it (OUT, IN or DATA): that
	 * syscall gives it back within a bounded time (it never sleeps on the
	 * daemon) and fails it then, as the queue is dead. IDLE now: ended by
	 * the abort, or still in queue_rq, which finds the queue dead.
	 */
	spin_lock(&q->lock);
	state = cmd->state;
	spin_unlock(&q->lock);
	return state == USERBLK_CMD_IDLE ? BLK_EH_DONE : BLK_EH_RESET_TIMER;
}

/*
 * Fail everything queued or dispatched on q, and every later request;
 * timed_out, if it is among them, with a timeout.
 */
static void userblk_abort_queue(struct userblk_queue *q, struct request *timed_out)
{
	unsigned int tag, depth = q->dev->cfg.queue_depth;
	struct request *rq;
	LIST_HEAD(doomed);

	spin_lock(&q->lock);
	q->dead = true;
	for (tag = 0; tag < depth; tag++) {
		struct userblk_cmd *cmd;

		rq = q->rqs[tag];
		if (!rq)
			continue;
		cmd = userblk_cmd(rq);
		if (cmd->state == USERBLK_CMD_QUEUED)
			list_del(&cmd->node);
		else if (cmd->state == USERBLK_CMD_LENT && !userblk_loan_abort(cmd))
			continue;	/* its last lent buffer is completing it */
		else if (cmd->state != USERBLK_CMD_DISPATCHED &&
			 cmd->state != USERBLK_CMD_LENT)
			continue;	/* OUT, IN or DATA: its syscall finishes it */
		cmd->state = USERBLK_CMD_IDLE;
		q->rqs[tag] = NULL;
		list_add_tail(&cmd->node, &doomed);
	}
	spin_unlock(&q->lock);

	while (!list_empty(&doomed)) {
		struct userblk_cmd *cmd = list_first_entry(&doomed, struct userblk_cmd, node);

		list_del_init(&cmd->node);
		rq = blk_mq_rq_from_pdu(cmd);
		userblk_end(rq, rq == timed_out ? -ETIMEDOUT : -EIO);
	}
	wake_up_all(&q->wait);
}

/* ---- copying request data ---------------------------------------------- */

/*
 * Copy a request's data to or from the daemon's memory with page faults
 * disabled, for a caller that holds the request: a page that is not present
 * fails the copy with -EFAULT at once instead of sleeping on the daemon (a
 * userfaultfd, a stalled network mapping), and the caller gives the request
 * back before it faults the page in and tries again.
 */
int userblk_copy_to_user_nofault(struct request *rq, void __user *dst)
{
	struct req_iterator iter;
	struct bio_vec bv;
	int ret = 0;

	pagefault_disable();
	rq_for_each_segment(bv, rq, iter) {
		void *p = bvec_kmap_local(&bv);
		unsigned long left = copy_to_user(dst, p, bv.bv_len);

		kunmap_local(p);
		if (left) {
			ret = -EFAULT;
			break;
		}
		dst += bv.bv_len;
	}
	pagefault_enable();
	return ret;
}

int userblk_copy_from_user_nofault(struct request *rq, const void __user *src)
{
	struct req_iterator iter;
	struct bio_vec bv;
	int ret = 0;

	pagefault_disable();
	rq_for_each_segment(bv, rq, iter) {
		void *p = bvec_kmap_local(&bv);
		unsigned long left = copy_from_user(p, src, bv.bv_len);

		kunmap_local(p);
		if (left) {
			ret = -EFAULT;
			break;
		}
		flush_dcache_page(bv.bv_page);
		src += bv.bv_len;
	}
	pagefault_enable();
	return ret;
}

/*
 * Copy len bytes between the request's pages from byte pos on and the
 * iterator it (into the request if to_rq). Returns the bytes copied, short
 * if it ran out. Only copy_to_iter()/copy_from_iter(): copy_page_to_iter()
 * would lend the request's pages to a pipe (ITER_PIPE), where they could
 * outlive the request.
 */
size_t userblk_copy_rq_iter(struct request *rq, size_t pos, size_t len,
			    struct iov_iter *it, bool to_rq)
{
	struct req_iterator iter;
	struct bio_vec bv;
	size_t done = 0;

	rq_for_each_segment(bv, rq, iter) {
		size_t n, copied;
		void *p;

		if (pos >= bv.bv_len) {
			pos -= bv.bv_len;
			continue;
		}
		n = min_t(size_t, bv.bv_len - pos, len - done);
		p = bvec_kmap_local(&bv);
		if (to_rq)
			copied = copy_from_iter(p + pos, n, it);
		else
			copied = copy_to_iter(p + pos, n, it);
		kunmap_local(p);
		if (to_rq)
			flush_dcache_page(bv.bv_page);
		done += copied;
		pos = 0;
		if (copied < n || done == len)
			return done;
	}
	return done;
}

/* ---- devices ----------------------------------------------------------- */

/* Undo the per-queue set-up, of every queue or as far as it got. */
static void userblk_free_queues(struct userblk_dev *dev)
{
	unsigned int i;

	for (i = 0; i < dev->cfg.nr_queues; i++) {
		if (dev->tr->exit_queue)
			dev->tr->exit_queue(&dev->queues[i]);
		kfree(dev->queues[i].tag_gen);
		kfree(dev->queues[i].rqs);
	}
}

static void userblk_dev_release(struct kref *ref)
{
	struct userblk_dev *dev = container_of(ref, struct userblk_dev, ref);

	if (dev->disk)
		put_disk(dev->disk);
	blk_mq_free_tag_set(&dev->tag_set);
	userblk_free_queues(dev);
	put_pid(dev->owner);
	kfree(dev);
}

void userblk_dev_get(struct userblk_dev *dev)
{
	kref_get(&dev->ref);
}

void userblk_dev_put(struct userblk_dev *dev)
{
	kref_put(&dev->ref, userblk_dev_release);
}

static void userblk_free_disk(struct gendisk *disk)
{
	userblk_dev_put(disk->private_data);
}

static const struct block_device_operations userblk_bdev_ops = {
	.owner		= THIS_MODULE,
	.free_disk	= userblk_free_disk,
};

/*
 * The disk's userblk/ directory in sysfs: what the kernel copied or lent of
 * the requests' data (enum userblk_count_kind), summed over the queues. The
 * files live as long as the disk, whose private_data is the device.
 */
static u64 userblk_counted(struct device *d, enum userblk_count_kind kind)
{
	struct userblk_dev *dev = dev_to_disk(d)->private_data;
	u64 sum = 0;
	unsigned int i;

	for (i = 0; i < dev->cfg.nr_queues; i++)
		sum += atomic64_read(&dev->queues[i].counts[kind]);
	return sum;
}

#define USERBLK_COUNT_ATTR(name, kind)					\
static ssize_t name##_show(struct device *d, struct device_attribute *a, \
			   char *buf)					\
{									\
	return sysfs_emit(buf, "%llu\n", userblk_counted(d, kind));	\
}									\
static DEVICE_ATTR_RO(name)

USERBLK_COUNT_ATTR(write_copied_user_bytes, USERBLK_COPY_WRITE_USER);
USERBLK_COUNT_ATTR(read_copied_user_bytes, USERBLK_COPY_READ_USER);
USERBLK_COUNT_ATTR(write_copied_kernel_bytes, USERBLK_COPY_WRITE_KERNEL);
USERBLK_COUNT_ATTR(read_copied_kernel_bytes, USERBLK_COPY_READ_KERNEL);
USERBLK_COUNT_ATTR(write_lent_bytes, USERBLK_LENT_WRITE);
USERBLK_COUNT_ATTR(lent_abandoned_requests, USERBLK_LENT_ABANDONED);
USERBLK_COUNT_ATTR(daemon_wakeups, USERBLK_COUNT_WAKEUPS);
USERBLK_COUNT_ATTR(daemon_wakeups_skipped, USERBLK_COUNT_WAKE_SKIPPED);
USERBLK_COUNT_ATTR(poll_completions, USERBLK_COUNT_POLL_REAPED);

static struct attribute *userblk_disk_attrs[] = {
	&dev_attr_write_copied_user_bytes.attr,
	&dev_attr_read_copied_user_bytes.attr,
	&dev_attr_write_copied_kernel_bytes.attr,
	&dev_attr_read_copied_kernel_bytes.attr,
	&dev_attr_write_lent_bytes.attr,
	&dev_attr_lent_abandoned_requests.attr,
	&dev_attr_daemon_wakeups.attr,
	&dev_attr_daemon_wakeups_skipped.attr,
	&dev_attr_poll_completions.attr,
	NULL,
};

static const struct attribute_group userblk_disk_group = {
	.name	= "userblk",
	.attrs	= userblk_disk_attrs,
};

static const struct attribute_group *userblk_disk_groups[] = {
	&userblk_disk_group,
	NULL,
};

/*
 * Stop I/O for good: everything outstanding and everything later fails.
 * Every queue is dead before the first request is ended and its tag freed.
 */
static void userblk_abort_all(struct userblk_dev *dev, struct request *timed_out)
{
	unsigned int i;

	for (i = 0; i < dev->cfg.nr_queues; i++) {
		spin_lock(&dev->queues[i].lock);
		dev->queues[i].dead = true;
		spin_unlock(&dev->queues[i].lock);
	}
	for (i = 0; i < dev->cfg.nr_queues; i++)
		userblk_abort_queue(&dev->queues[i], timed_out);
}

/* Recovery is over, one way or the other: blk-mq dispatches again. */
static void userblk_unquiesce(struct userblk_dev *dev)
{
	lockdep_assert_held(&userblk_ctl_mutex);
	if (!dev->quiesced)
		return;
	/* Not _sync: the timeout takes userblk_ctl_mutex, and finds nothing to do. */
	if (cancel_delayed_work(&dev->recover_work))
		userblk_dev_put(dev);	/* the pending timeout's reference */
	dev->quiesced = false;
	blk_mq_unquiesce_queue(dev->disk->queue);
	blk_mq_kick_requeue_list(dev->disk->queue);
}

static void userblk_kill(struct userblk_dev *dev)
{
	lockdep_assert_held(&userblk_ctl_mutex);
	/* Idempotent: a timeout may have killed it already. */
	WRITE_ONCE(dev->state, USERBLK_STATE_DEAD);
	userblk_abort_all(dev, NULL);
	/* Every queue is dead: what recovery held is dispatched now, and fails. */
	userblk_unquiesce(dev);
}

/*
 * USERBLK_F_RECOVERY: the first queue fd of a live device closed. Stop
 * dispatching (queue_rq runs nowhere once this returns, and new I/O waits in
 * blk-mq), mark every queue as wanting a new daemon's fd, and arm the timeout.
 * A request timeout may have killed the device meanwhile: then it stays dead.
 */
static bool userblk_begin_recovery(struct userblk_dev *dev, struct userblk_queue *q)
{
	unsigned int i;

	lockdep_assert_held(&userblk_ctl_mutex);
	if (cmpxchg(&dev->state, USERBLK_STATE_LIVE, USERBLK_STATE_RECOVERING) !=
	    USERBLK_STATE_LIVE)
		return false;
	if (q)
		pr_warn("dev %u (%s): the daemon of queue %u went away: holding I/O for a new daemon for up to %u ms\n",
			dev->id, dev->tr->name, q->id, dev->cfg.recovery_timeout_ms);
	else
		pr_info("dev %u (%s): handed over by pid %d: holding I/O for a new daemon for up to %u ms\n",
			dev->id, dev->tr->name, task_tgid_vnr(current),
			dev->cfg.recovery_timeout_ms);
	/*
	 * Every queue wants a new daemon's fd: an old fd still open hands out
	 * nothing more (end of file, RING_ENTER ENODEV) and its waiters wake to
	 * see it, while the answers it owes are still taken.
	 */
	for (i = 0; i < dev->cfg.nr_queues; i++) {
		WRITE_ONCE(dev->queues[i].reattach, true);
		wake_up(&dev->queues[i].wait);
	}
	blk_mq_quiesce_queue(dev->disk->queue);
	dev->quiesced = true;
	/* Not pending: the last recovery's timeout was cancelled, or ran. */
	userblk_dev_get(dev);
	if (!queue_delayed_work(userblk_wq, &dev->recover_work,
				msecs_to_jiffies(dev->cfg.recovery_timeout_ms)))
		userblk_dev_put(dev);	/* a stale run still pending: it finds us */
	return true;
}

/*
 * Recovery: q's fd is closed, so no syscall holds a request of it, and blk-mq
 * is quiesced, so queue_rq adds none. The transport first takes what the old
 * daemon answered and gives the next daemon a clean channel (reset_queue);
 * then every request the old daemon had and did not answer goes back to the
 * pending list, held, with the requests it had not taken yet. The next daemon
 * gets each under a new gen (gens count a tag's hand-outs and go on counting),
 * so no late answer of the old daemon can be taken for one of its own. They
 * stay started: no requeue, so blk-mq's timeout handler (which rearms a held
 * request) never races one. None is IN (ring's reset reaped under its lock)
 * or LENT (no recovery with USERBLK_F_LEND). Returns an error if the
 * transport could not reset its channel.
 */
static int userblk_hold_queue(struct userblk_queue *q)
{
	unsigned int tag, depth = q->dev->cfg.queue_depth, n = 0;
	int ret;

	lockdep_assert_held(&userblk_ctl_mutex);
	WRITE_ONCE(q->reattach, true);
	if (q->dev->tr->reset_queue) {
		ret = q->dev->tr->reset_queue(q);
		if (ret)
			return ret;
	}
	spin_lock(&q->lock);
	for (tag = 0; tag < depth; tag++) {
		struct request *rq = q->rqs[tag];
		struct userblk_cmd *cmd;

		if (!rq)
			continue;
		cmd = userblk_cmd(rq);
		if (cmd->state == USERBLK_CMD_DISPATCHED) {
			cmd->state = USERBLK_CMD_QUEUED;
			list_add_tail(&cmd->node, &q->pending);
		} else if (cmd->state != USERBLK_CMD_QUEUED) {
			continue;
		}
		cmd->held = true;
		n++;
	}
	spin_unlock(&q->lock);
	if (n)
		pr_info("dev %u queue %u: %u requests held for the next daemon\n",
			q->dev->id, q->id, n);
	return 0;
}

/* Run the recovery timeout at once (a request timeout killed the device). */
static void userblk_recovery_now(struct userblk_dev *dev)
{
	userblk_dev_get(dev);
	/* true: it was pending, and holds a reference of its own. */
	if (mod_delayed_work(userblk_wq, &dev->recover_work, 0))
		userblk_dev_put(dev);
}

/* The recovery timeout: no daemon resumed the device in time. */
static void userblk_recovery_timeout(struct work_struct *work)
{
	struct userblk_dev *dev = container_of(to_delayed_work(work),
					       struct userblk_dev, recover_work);

	mutex_lock(&userblk_ctl_mutex);
	/*
	 * Pending again: this run was overtaken (the device resumed, and a new
	 * recovery began while it waited for the mutex); the new one decides.
	 */
	if (dev->quiesced && !delayed_work_pending(&dev->recover_work)) {
		if (dev->state == USERBLK_STATE_RECOVERING)
			pr_warn("dev %u (%s): no daemon took over within %u ms: failing all I/O\n",
				dev->id, dev->tr->name, dev->cfg.recovery_timeout_ms);
		userblk_kill(dev);
	}
	mutex_unlock(&userblk_ctl_mutex);
	userblk_dev_put(dev);
}

int userblk_queue_release(struct inode *inode, struct file *file)
{
	struct userblk_queue *q = file->private_data;
	struct userblk_dev *dev = q->dev;

	mutex_lock(&userblk_ctl_mutex);
	q->attached = false;
	dev->nr_attached--;
	if (READ_ONCE(dev->state) == USERBLK_STATE_LIVE &&
	    (dev->cfg.features & USERBLK_F_RECOVERY))
		userblk_begin_recovery(dev, q);
	if (READ_ONCE(dev->state) == USERBLK_STATE_RECOVERING) {
		int ret = userblk_hold_queue(q);

		if (ret) {
			pr_warn("dev %u (%s): queue %u cannot be made ready for a new daemon (%d): failing all I/O\n",
				dev->id, dev->tr->name, q->id, ret);
			userblk_kill(dev);
		}
	} else if (READ_ONCE(dev->state) == USERBLK_STATE_LIVE) {
		pr_warn("dev %u (%s): the daemon of queue %u went away: failing all I/O\n",
			dev->id, dev->tr->name, q->id);
		userblk_kill(dev);
	}
	mutex_unlock(&userblk_ctl_mutex);
	userblk_dev_put(dev);
	return 0;
}

#define userblk_bad_config(fmt, ...)					\
	({ pr_warn_ratelimited("ADD_DEV: " fmt "\n", ##__VA_ARGS__); -EINVAL; })

static int userblk_check_config(struct userblk_dev_config *c)
{
	unsigned int i;

	if (c->abi_version != USERBLK_ABI_VERSION)
		return userblk_bad_config("abi version %u, this module speaks %u",
					  c->abi_version, USERBLK_ABI_VERSION);
	if (c->features & ~USERBLK_F_ALL)
		return userblk_bad_config("unknown feature bits 0x%llx",
					  c->features & ~USERBLK_F_ALL);
	for (i = 0; i < ARRAY_SIZE(c->reserved); i++)
		if (c->reserved[i])
			return userblk_bad_config("reserved field %u is not zero", i);
	if (!(c->features & USERBLK_F_RECOVERY) && c->recovery_timeout_ms)
		return userblk_bad_config("a recovery timeout without USERBLK_F_RECOVERY");
	if (c->state || c->nr_queues_open)
		return userblk_bad_config("output fields state/nr_queues_open are not zero");
	if (c->dev_id != USERBLK_DEV_ID_ANY && c->dev_id >= USERBLK_MAX_DEVICES)
		return userblk_bad_config("dev_id %u beyond %u", c->dev_id,
					  USERBLK_MAX_DEVICES - 1);
	if (c->logical_block_size < SECTOR_SIZE ||
	    c->logical_block_size > PAGE_SIZE ||
	    !is_power_of_2(c->logical_block_size))
		return userblk_bad_config("logical block size %u is not a power of two in 512..%lu",
					  c->logical_block_size, PAGE_SIZE);
	if (!c->size || c->size % c->logical_block_size || c->size > LLONG_MAX)
		return userblk_bad_config("size %llu is zero, too large or not a multiple of %u",
					  c->size, c->logical_block_size);
	if (!c->nr_queues || c->nr_queues > USERBLK_MAX_QUEUES)
		return userblk_bad_config("%u queues, not 1..%u", c->nr_queues,
					  USERBLK_MAX_QUEUES);
	if (c->nr_poll_queues >= c->nr_queues)
		return userblk_bad_config("%u poll queues of %u: at least one queue must take I/O that is not polled",
					  c->nr_poll_queues, c->nr_queues);
	if (!c->queue_depth || c->queue_depth > USERBLK_MAX_DEPTH)
		return userblk_bad_config("queue depth %u, not 1..%u",
					  c->queue_depth, USERBLK_MAX_DEPTH);
	if (!c->max_io_bytes)
		c->max_io_bytes = READ_ONCE(default_max_io_kb) * 1024;
	if (c->max_io_bytes < PAGE_SIZE || c->max_io_bytes > USERBLK_MAX_IO_BYTES ||
	    c->max_io_bytes % c->logical_block_size)
		return userblk_bad_config("max I/O %u bytes, not a multiple of %u in %lu..%u",
					  c->max_io_bytes, c->logical_block_size,
					  PAGE_SIZE, USERBLK_MAX_IO_BYTES);
	if ((c->features & USERBLK_F_FUA) && !(c->features & USERBLK_F_FLUSH))
		return userblk_bad_config("FUA without FLUSH: FUA only means something with a volatile cache");
	if (!c->timeout_ms)
		c->timeout_ms = READ_ONCE(default_timeout_ms);
	if (c->timeout_ms < USERBLK_MIN_TIMEOUT_MS ||
	    c->timeout_ms > USERBLK_MAX_TIMEOUT_MS)
		return userblk_bad_config("timeout %u ms, not %u..%u", c->timeout_ms,
					  USERBLK_MIN_TIMEOUT_MS, USERBLK_MAX_TIMEOUT_MS);
	if (c->features & USERBLK_F_RECOVERY) {
		if ((c->features & USERBLK_F_LEND))
			return userblk_bad_config("USERBLK_F_RECOVERY with USERBLK_F_LEND: a request whose pages a dead daemon's pipes still hold cannot be handed out again (not implemented)");
		if (!c->recovery_timeout_ms)
			c->recovery_timeout_ms = USERBLK_DEFAULT_RECOVERY_TIMEOUT_MS;
		if (c->recovery_timeout_ms < USERBLK_MIN_TIMEOUT_MS ||
		    c->recovery_timeout_ms > USERBLK_MAX_TIMEOUT_MS)
			return userblk_bad_config("recovery timeout %u ms, not %u..%u",
						  c->recovery_timeout_ms,
						  USERBLK_MIN_TIMEOUT_MS,
						  USERBLK_MAX_TIMEOUT_MS);
	}
	return 0;
}

static void userblk_set_limits(struct userblk_dev *dev)
{
	struct userblk_dev_config *c = &dev->cfg;
	struct request_queue *rq = dev->disk->queue;
	unsigned int max_sectors = c->max_io_bytes >> SECTOR_SHIFT;

	blk_queue_logical_block_size(rq, c->logical_block_size);
	blk_queue_physical_block_size(rq, c->logical_block_size);
	blk_queue_max_hw_sectors(rq, max_sectors);
	blk_queue_max_segments(rq, USHRT_MAX);
	blk_queue_max_segment_size(rq, UINT_MAX);
	blk_queue_flag_set(QUEUE_FLAG_NONROT, rq);
	blk_queue_write_cache(rq, c->features & USERBLK_F_FLUSH,
			      c->features & USERBLK_F_FUA);
	if (c->features & USERBLK_F_DISCARD) {
		rq->limits.discard_granularity = c->logical_block_size;
		blk_queue_max_discard_sectors(rq, UINT_MAX >> SECTOR_SHIFT);
	}
	if (c->features & USERBLK_F_WRITE_ZEROES)
		blk_queue_max_write_zeroes_sectors(rq, UINT_MAX >> SECTOR_SHIFT);
	/*
	 * A lent page goes on to a socket or a file after the daemon saw the
	 * request: writeback must not change it meanwhile, or the backend gets
	 * data the request never carried (and a checksum over it is wrong).
	 */
	if (c->features & USERBLK_F_LEND)
		blk_queue_flag_set(QUEUE_FLAG_STABLE_WRITES, rq);
	set_capacity(dev->disk, c->size >> SECTOR_SHIFT);
	set_disk_ro(dev->disk, c->features & USERBLK_F_READ_ONLY);
}

/*
 * ADD_DEV. The id is reserved at once (idr_alloc of NULL: a lookup finds
 * nothing, another ADD_DEV of the id gets EEXIST) and the device is published
 * (idr_replace) only when it is whole and the reply reached user space, so no
 * other ioctl can see it half-built, and a failure frees what nobody else can
 * hold.
 */
static int userblk_add(struct userblk_dev_config __user *arg)
{
	const struct userblk_transport *tr;
	struct userblk_dev_config cfg;
	struct userblk_dev *dev;
	struct gendisk *disk;
	unsigned int i;
	int id, ret;

	if (copy_from_user(&cfg, arg, sizeof(cfg)))
		return -EFAULT;
	ret = userblk_check_config(&cfg);
	if (ret)
		return ret;
	tr = userblk_find_transport(cfg.mode);
	if (!tr) {
		pr_warn_ratelimited("ADD_DEV: transport mode %u is not built into this module\n",
				    cfg.mode);
		return cfg.mode >= USERBLK_MODE_COPY && cfg.mode < USERBLK_MODE_END ?
			-EOPNOTSUPP : -EINVAL;
	}
	if ((cfg.features & USERBLK_F_LEND) && !tr->can_lend) {
		pr_warn_ratelimited("ADD_DEV: the %s transport cannot lend pages (USERBLK_F_LEND is for pipe and splice)\n",
				    tr->name);
		return -EINVAL;
	}
	if ((cfg.features & USERBLK_F_RECOVERY) && !tr->can_recover) {
		pr_warn_ratelimited("ADD_DEV: the %s transport cannot recover from its daemon's death yet (USERBLK_F_RECOVERY is for copy and ring)\n",
				    tr->name);
		return -EINVAL;
	}
	if (cfg.nr_poll_queues && !tr->mq_ops->poll) {
		pr_warn_ratelimited("ADD_DEV: the %s transport has no poll queues (nr_poll_queues is for ring, whose completions the submitter can reap)\n",
				    tr->name);
		return -EINVAL;
	}
	/* blk-mq maps no more hardware queues than possible CPUs per map. */
	cfg.nr_poll_queues = min_t(u32, cfg.nr_poll_queues, nr_cpu_ids);
	cfg.nr_queues = min_t(u32, cfg.nr_queues - cfg.nr_poll_queues, nr_cpu_ids) +
			cfg.nr_poll_queues;

	dev = kzalloc(struct_size(dev, queues, cfg.nr_queues), GFP_KERNEL);
	if (!dev)
		return -ENOMEM;
	kref_init(&dev->ref);
	dev->tr = tr;
	dev->cfg = cfg;
	dev->state = USERBLK_STATE_ADDED;
	dev->owner = get_pid(task_tgid(current));
	INIT_DELAYED_WORK(&dev->recover_work, userblk_recovery_timeout);
	/* No grace for held requests before a first resume (jiffies start negative). */
	dev->resumed = jiffies - msecs_to_jiffies(cfg.timeout_ms);
	for (i = 0; i < cfg.nr_queues; i++) {
		struct userblk_queue *q = &dev->queues[i];

		q->dev = dev;
		q->id = i;
		spin_lock_init(&q->lock);
		INIT_LIST_HEAD(&q->pending);
		init_waitqueue_head(&q->wait);
		q->rqs = kcalloc(cfg.queue_depth, sizeof(*q->rqs), GFP_KERNEL);
		q->tag_gen = kcalloc(cfg.queue_depth, sizeof(*q->tag_gen), GFP_KERNEL);
		if (!q->rqs || !q->tag_gen) {
			ret = -ENOMEM;
			goto out_free_queues;
		}
		if (tr->init_queue) {
			ret = tr->init_queue(q);
			if (ret)
				goto out_free_queues;
		}
	}

	dev->tag_set.ops = tr->mq_ops;
	dev->tag_set.nr_hw_queues = cfg.nr_queues;
	dev->tag_set.queue_depth = cfg.queue_depth;
	dev->tag_set.numa_node = NUMA_NO_NODE;
	dev->tag_set.cmd_size = sizeof(struct userblk_cmd);
	dev->tag_set.timeout = msecs_to_jiffies(cfg.timeout_ms);
	dev->tag_set.flags = BLK_MQ_F_SHOULD_MERGE;
	dev->tag_set.driver_data = dev;
	if (cfg.nr_poll_queues)
		dev->tag_set.nr_maps = HCTX_MAX_TYPES;	/* READ stays empty */
	ret = blk_mq_alloc_tag_set(&dev->tag_set);
	if (ret)
		goto out_free_queues;
	if (WARN_ON_ONCE(dev->tag_set.nr_hw_queues != cfg.nr_queues)) {
		ret = -EINVAL;
		goto out_free_tag_set;
	}

	disk = blk_mq_alloc_disk(&dev->tag_set, dev);
	if (IS_ERR(disk)) {
		ret = PTR_ERR(disk);
		goto out_free_tag_set;
	}
	dev->disk = disk;

	mutex_lock(&userblk_ctl_mutex);
	if (cfg.dev_id == USERBLK_DEV_ID_ANY)
		id = idr_alloc(&userblk_idr, NULL, 0, USERBLK_MAX_DEVICES, GFP_KERNEL);
	else
		id = idr_alloc(&userblk_idr, NULL, cfg.dev_id, cfg.dev_id + 1, GFP_KERNEL);
	mutex_unlock(&userblk_ctl_mutex);
	if (id < 0) {
		ret = id == -ENOSPC ? (cfg.dev_id == USERBLK_DEV_ID_ANY ? -ENOSPC : -EEXIST) : id;
		goto out_put_disk;
	}
	dev->id = id;
	dev->cfg.dev_id = id;
	disk->fops = &userblk_bdev_ops;
	disk->private_data = dev;
	disk->flags |= GENHD_FL_NO_PART;
	snprintf(disk->disk_name, sizeof(disk->disk_name), USERBLK_DISK_PREFIX "%d", id);
	userblk_set_limits(dev);

	cfg = dev->cfg;
	cfg.state = dev->state;
	if (copy_to_user(arg, &cfg, sizeof(cfg))) {
		ret = -EFAULT;
		goto out_remove_id;
	}
	mutex_lock(&userblk_ctl_mutex);
	idr_replace(&userblk_idr, dev, id);
	mutex_unlock(&userblk_ctl_mutex);
	return 0;

out_remove_id:
	mutex_lock(&userblk_ctl_mutex);
	idr_remove(&userblk_idr, id);
	mutex_unlock(&userblk_ctl_mutex);
out_put_disk:
	put_disk(disk);		/* never added: ->free_disk is not called */
	dev->disk = NULL;
out_free_tag_set:
	blk_mq_free_tag_set(&dev->tag_set);
out_free_queues:
	userblk_free_queues(dev);
	put_pid(dev->owner);
	kfree(dev);
	return ret;
}

static struct userblk_dev *userblk_lookup(unsigned long id)
{
	lockdep_assert_held(&userblk_ctl_mutex);
	if (id >= USERBLK_MAX_DEVICES)
		return NULL;
	return idr_find(&userblk_idr, id);
}

/*
 * May the calling process control dev? The process that added it may; any
 * other only when it says USERBLK_CTL_FORCE (an administrator's tool).
 */
static int userblk_may_control(struct userblk_dev *dev, bool force, const char *what)
{
	if (force || task_tgid(current) == dev->owner)
		return 0;
	pr_warn_ratelimited("%s: dev %u belongs to another process (pid %d): pass USERBLK_CTL_FORCE to act on it anyway\n",
			    what, dev->id, pid_vnr(dev->owner));
	return -EPERM;
}

/* Let the transports check their queues before the device goes live. */
static int userblk_start_queues(struct userblk_dev *dev)
{
	unsigned int i;
	int ret;

	if (!dev->tr->start_queue)
		return 0;
	for (i = 0; i < dev->cfg.nr_queues; i++) {
		ret = dev->tr->start_queue(&dev->queues[i]);
		if (ret)
			return ret;
	}
	return 0;
}

/* START_DEV of a recovering device: its new daemon has every queue. */
static int userblk_resume(struct userblk_dev *dev)
{
	unsigned int i;
	int ret;

	lockdep_assert_held(&userblk_ctl_mutex);
	for (i = 0; i < dev->cfg.nr_queues; i++) {
		if (dev->queues[i].reattach || !dev->queues[i].attached) {
			pr_warn_ratelimited("START_DEV: dev %u recovers, and queue %u has no new daemon (%s)\n",
					    dev->id, i, dev->queues[i].attached ?
					    "the old daemon's fd is still open" :
					    "open it first");
			return -ENOTCONN;
		}
	}
	ret = userblk_start_queues(dev);
	if (ret)
		return ret;
	/* Before LIVE: a held request's timeout sees the grace as soon as LIVE. */
	WRITE_ONCE(dev->resumed, jiffies);
	/* A request timeout may have killed it since the ioctl looked. */
	if (cmpxchg(&dev->state, USERBLK_STATE_RECOVERING, USERBLK_STATE_LIVE) !=
	    USERBLK_STATE_RECOVERING) {
		userblk_kill(dev);
		return -EBUSY;
	}
	pr_info("dev %u (%s): recovered, served by pid %d\n", dev->id,
		dev->tr->name, pid_vnr(dev->owner));
	for (i = 0; i < dev->cfg.nr_queues; i++) {
		if (dev->tr->resume_queue)
			dev->tr->resume_queue(&dev->queues[i]);
		else
			wake_up(&dev->queues[i].wait);
	}
	userblk_unquiesce(dev);
	return 0;
}

static int userblk_start(unsigned long id)
{
	struct userblk_dev *dev;
	int ret;

	mutex_lock(&userblk_ctl_mutex);
	dev = userblk_lookup(id);
	ret = -ENODEV;
	if (!dev)
		goto out_unlock;
	ret = userblk_may_control(dev, false, "START_DEV");
	if (ret)
		goto out_unlock;
	if (READ_ONCE(dev->state) == USERBLK_STATE_RECOVERING) {
		ret = userblk_resume(dev);
		goto out_unlock;
	}
	ret = -EBUSY;
	if (dev->state != USERBLK_STATE_ADDED)
		goto out_unlock;
	ret = -ENOTCONN;
	if (dev->nr_attached != dev->cfg.nr_queues) {
		pr_warn_ratelimited("START_DEV: dev %u has %u of %u queues open\n",
				    dev->id, dev->nr_attached, dev->cfg.nr_queues);
		goto out_unlock;
	}
	ret = userblk_start_queues(dev);
	if (ret)
		goto out_unlock;
	/* The live disk holds a reference, dropped by ->free_disk. */
	kref_get(&dev->ref);
	dev->state = USERBLK_STATE_LIVE;
	ret = device_add_disk(NULL, dev->disk, userblk_disk_groups);
	if (ret) {
		/* A disk whose add_disk failed can only be put: the device is done. */
		pr_warn("START_DEV: dev %u: add_disk failed (%d): delete the device\n",
			dev->id, ret);
		userblk_kill(dev);
		kref_put(&dev->ref, userblk_dev_release);
	}
out_unlock:
	mutex_unlock(&userblk_ctl_mutex);
	return ret;
}

static int userblk_stop(unsigned long arg)
{
	struct userblk_dev *dev;
	int ret = -ENODEV;

	mutex_lock(&userblk_ctl_mutex);
	dev = userblk_lookup(arg & ~(unsigned long)USERBLK_CTL_FORCE);
	if (dev) {
		ret = userblk_may_control(dev, arg & USERBLK_CTL_FORCE, "STOP_DEV");
		if (!ret)
			userblk_kill(dev);
	}
	mutex_unlock(&userblk_ctl_mutex);
	return ret;
}

/*
 * Remove a device found under userblk_ctl_mutex, which the caller holds and
 * which is dropped (and taken again) around del_gendisk: that waits for the
 * disk's I/O and openers, and must not stall every other device's ioctls and
 * queue fds. The id stays reserved meanwhile (a lookup finds nothing, an
 * ADD_DEV of it gets EEXIST), so no new disk of the same name can appear
 * before this one is gone.
 */
static void userblk_remove(struct userblk_dev *dev)
{
	bool was_added = test_bit(GD_ADDED, &dev->disk->state);
	u32 id = dev->id;

	lockdep_assert_held(&userblk_ctl_mutex);
	userblk_kill(dev);
	idr_replace(&userblk_idr, NULL, id);
	if (was_added) {
		mutex_unlock(&userblk_ctl_mutex);
		/* The disk's last reference drops the device via ->free_disk. */
		del_gendisk(dev->disk);
		put_disk(dev->disk);
		dev->disk = NULL;
		mutex_lock(&userblk_ctl_mutex);
	}
	idr_remove(&userblk_idr, id);
	userblk_dev_put(dev);
}

static int userblk_del(unsigned long arg)
{
	struct userblk_dev *dev;
	int ret = -ENODEV;

	mutex_lock(&userblk_ctl_mutex);
	dev = userblk_lookup(arg & ~(unsigned long)USERBLK_CTL_FORCE);
	if (dev) {
		ret = userblk_may_control(dev, arg & USERBLK_CTL_FORCE, "DEL_DEV");
		if (!ret)
			userblk_remove(dev);
	}
	mutex_unlock(&userblk_ctl_mutex);
	return ret;
}

/*
 * RECOVER_DEV: the caller takes over a recovering device as its new daemon.
 * Any admin process may: the one that added the device is gone, as a rule.
 */
static int userblk_recover(unsigned long id)
{
	struct userblk_dev *dev;
	int ret = -ENODEV;

	mutex_lock(&userblk_ctl_mutex);
	dev = userblk_lookup(id);
	if (!dev)
		goto out_unlock;
	ret = READ_ONCE(dev->state) == USERBLK_STATE_DEAD ? -ESHUTDOWN : -EBUSY;
	if (READ_ONCE(dev->state) != USERBLK_STATE_RECOVERING) {
		pr_warn_ratelimited("RECOVER_DEV: dev %u is not recovering (state %u)\n",
				    dev->id, READ_ONCE(dev->state));
		goto out_unlock;
	}
	put_pid(dev->owner);
	dev->owner = get_pid(task_tgid(current));
	ret = 0;
out_unlock:
	mutex_unlock(&userblk_ctl_mutex);
	return ret;
}

/*
 * A planned upgrade: the owner (or an administrator, with USERBLK_CTL_FORCE)
 * makes a live device with USERBLK_F_RECOVERY recover now, as if a queue fd
 * had closed. Its daemon answers what it holds, sees end of file, closes its
 * queues and exits; the next daemon takes over with RECOVER_DEV.
 */
static int userblk_handover(unsigned long arg)
{
	struct userblk_dev *dev;
	int ret = -ENODEV;
	u32 state;

	mutex_lock(&userblk_ctl_mutex);
	dev = userblk_lookup(arg & ~(unsigned long)USERBLK_CTL_FORCE);
	if (!dev)
		goto out_unlock;
	ret = userblk_may_control(dev, arg & USERBLK_CTL_FORCE, "HANDOVER_DEV");
	if (ret)
		goto out_unlock;
	ret = -EINVAL;
	if (!(dev->cfg.features & USERBLK_F_RECOVERY)) {
		pr_warn_ratelimited("HANDOVER_DEV: dev %u was added without USERBLK_F_RECOVERY: no daemon could take it over\n",
				    dev->id);
		goto out_unlock;
	}
	state = READ_ONCE(dev->state);
	ret = state == USERBLK_STATE_DEAD ? -ESHUTDOWN : -EBUSY;
	if (state != USERBLK_STATE_LIVE) {
		pr_warn_ratelimited("HANDOVER_DEV: dev %u is not live (state %u)\n",
				    dev->id, state);
		goto out_unlock;
	}
	/* A request timeout may have killed it since. */
	ret = userblk_begin_recovery(dev, NULL) ? 0 : -ESHUTDOWN;
out_unlock:
	mutex_unlock(&userblk_ctl_mutex);
	return ret;
}

static int userblk_get_info(struct userblk_dev_config __user *arg)
{
	struct userblk_dev_config cfg;
	struct userblk_dev *dev;

	if (copy_from_user(&cfg, arg, sizeof(cfg)))
		return -EFAULT;
	if (cfg.abi_version != USERBLK_ABI_VERSION)
		return -EINVAL;
	mutex_lock(&userblk_ctl_mutex);
	dev = userblk_lookup(cfg.dev_id);
	if (!dev) {
		mutex_unlock(&userblk_ctl_mutex);
		return -ENODEV;
	}
	cfg = dev->cfg;
	cfg.state = dev->state;
	cfg.nr_queues_open = dev->nr_attached;
	mutex_unlock(&userblk_ctl_mutex);
	return copy_to_user(arg, &cfg, sizeof(cfg)) ? -EFAULT : 0;
}

static int userblk_open_queue(struct userblk_queue_open __user *arg)
{
	struct userblk_queue_open qo;
	struct userblk_queue *q;
	struct userblk_dev *dev;
	int fd;

	if (copy_from_user(&qo, arg, sizeof(qo)))
		return -EFAULT;
	if (qo.flags || qo.reserved)
		return -EINVAL;
	mutex_lock(&userblk_ctl_mutex);
	dev = userblk_lookup(qo.dev_id);
	fd = -ENODEV;
	if (!dev)
		goto out_unlock;
	fd = -EINVAL;
	if (qo.queue_id >= dev->cfg.nr_queues)
		goto out_unlock;
	fd = -ESHUTDOWN;
	if (dev->state == USERBLK_STATE_DEAD)
		goto out_unlock;
	q = &dev->queues[qo.queue_id];
	fd = -EBUSY;
	if (q->attached)
		goto out_unlock;
	fd = -EPERM;
	if (!(dev->cfg.features & USERBLK_F_ANY_DAEMON) &&
	    task_tgid(current) != dev->owner) {
		pr_warn_ratelimited("OPEN_QUEUE: dev %u belongs to another process (pid %d), and was not added with USERBLK_F_ANY_DAEMON\n",
				    dev->id, pid_vnr(dev->owner));
		goto out_unlock;
	}
	kref_get(&dev->ref);
	fd = anon_inode_getfd("[userblk-queue]", dev->tr->fops, q, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		kref_put(&dev->ref, userblk_dev_release);
		goto out_unlock;
	}
	q->attached = true;
	WRITE_ONCE(q->reattach, false);
	dev->nr_attached++;
out_unlock:
	mutex_unlock(&userblk_ctl_mutex);
	return fd;
}

static long userblk_ctl_ioctl(struct file *file, unsigned int cmd,
			      unsigned long arg)
{
	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;

	switch (cmd) {
	case USERBLK_IOC_ADD_DEV:
		return userblk_add((void __user *)arg);
	case USERBLK_IOC_START_DEV:
		return userblk_start(arg);
	case USERBLK_IOC_STOP_DEV:
		return userblk_stop(arg);
	case USERBLK_IOC_DEL_DEV:
		return userblk_del(arg);
	case USERBLK_IOC_GET_INFO:
		return userblk_get_info((void __user *)arg);
	case USERBLK_IOC_OPEN_QUEUE:
		return userblk_open_queue((void __user *)arg);
	case USERBLK_IOC_RECOVER_DEV:
		return userblk_recover(arg);
	case USERBLK_IOC_HANDOVER_DEV:
		return userblk_handover(arg);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations userblk_ctl_fops = {
	.owner		= THIS_MODULE,
	.open		= nonseekable_open,
	.unlocked_ioctl	= userblk_ctl_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.llseek		= noop_llseek,
};

static struct miscdevice userblk_misc = {
	.minor	= MISC_DYNAMIC_MINOR,
	.name	= USERBLK_CONTROL_NAME,
	.fops	= &userblk_ctl_fops,
	.mode	= 0600,
};

static int __init userblk_init(void)
{
	int ret;

	BUILD_BUG_ON(sizeof(struct userblk_dev_config) != 88);
	BUILD_BUG_ON(sizeof(struct userblk_queue_open) != 16);
	BUILD_BUG_ON(sizeof(struct userblk_io_desc) != 24);
	BUILD_BUG_ON(sizeof(struct userblk_io_cpl) != 16);
	BUILD_BUG_ON(USERBLK_MAX_DEPTH > (1 << 16));
	BUILD_BUG_ON(sizeof(struct userblk_pipe_set) != 24);
	BUILD_BUG_ON(sizeof(struct userblk_ring_layout) != 88);
	BUILD_BUG_ON(sizeof(struct userblk_ring_kernel_indices) != 192);
	BUILD_BUG_ON(sizeof(struct userblk_ring_daemon_indices) != 128);
	/* A splice data fd offset holds any position within a request, its end included... */
	BUILD_BUG_ON(USERBLK_MAX_IO_BYTES >= (1U << USERBLK_SPLICE_TAG_SHIFT));
	/* ... and any tag. */
	BUILD_BUG_ON(USERBLK_MAX_DEPTH >
		     (1U << (USERBLK_SPLICE_GEN_SHIFT - USERBLK_SPLICE_TAG_SHIFT)));
	BUILD_BUG_ON(USERBLK_CTL_FORCE <= USERBLK_MAX_DEVICES);

	/* It fails held I/O, perhaps while writeback to the disk waits for memory. */
	userblk_wq = alloc_workqueue("userblk", WQ_MEM_RECLAIM, 0);
	if (!userblk_wq)
		return -ENOMEM;
	ret = misc_register(&userblk_misc);
	if (ret) {
		pr_err("cannot register /dev/%s: %d\n", USERBLK_CONTROL_NAME, ret);
		destroy_workqueue(userblk_wq);
		return ret;
	}
	pr_info("loaded, abi %d\n", USERBLK_ABI_VERSION);
	return 0;
}

static void __exit userblk_exit(void)
{
	struct userblk_dev *dev;
	int id;

	/* No fd and no open disk holds the module now: remove what is left. */
	misc_deregister(&userblk_misc);
	mutex_lock(&userblk_ctl_mutex);
	idr_for_each_entry(&userblk_idr, dev, id)
		userblk_remove(dev);
	mutex_unlock(&userblk_ctl_mutex);
	/* Every timeout was cancelled by the removal, or runs to its end here. */
	destroy_workqueue(userblk_wq);
	idr_destroy(&userblk_idr);
	pr_info("unloaded\n");
}

module_init(userblk_init);
module_exit(userblk_exit);

MODULE_AUTHOR("The userblk authors");
MODULE_DESCRIPTION("Block devices served by a user-space daemon");
MODULE_LICENSE("GPL");
