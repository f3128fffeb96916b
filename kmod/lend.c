// SPDX-License-Identifier: GPL-2.0
/*
 * Lending (USERBLK_F_LEND, pipe and splice): a WRITE's data goes into a pipe
 * as the request's own pages instead of a copy. The rules, from
 * docs/splice-and-pipe.md:
 *
 * - Every lent pipe buffer holds the request. A request has one loan; each
 *   buffer over its pages takes a page reference and a count on the loan,
 *   .get (tee) takes both again and .release drops both. A daemon's answer
 *   to a request that still has lent buffers is recorded (the request is
 *   LENT) and applied by the last release, so the pages go back to their
 *   owner (the page cache, an O_DIRECT buffer) only once no pipe reads them.
 * - Lent pages are never writable through a pipe: no PIPE_BUF_FLAG_CAN_MERGE
 *   (a write() into the pipe never appends into them: Dirty Pipe), no
 *   PIPE_BUF_FLAG_GIFT (vmsplice cannot take them), no .try_steal (a splice
 *   into a file cannot move them into its page cache).
 * - A request the kernel must end while buffers are still lent (the device
 *   died, the request timed out) is ended anyway: the loan lets go of the
 *   request and keeps only the page references, so no page is freed while a
 *   pipe can read it. Counted (lent_abandoned_requests) and logged: whoever
 *   holds such a buffer can read what the pages hold later.
 *
 * Locking: the loan's lock nests inside q->lock. A release takes only the
 * loan's lock; when it is the last one for an answered request it takes the
 * request off the loan (loan->rq = NULL) and then completes it under q->lock:
 * the request is not ended yet, so its device is alive. An abort that finds a
 * LENT request still on its loan takes it by withdrawing the answer, so the
 * two never both end it. The loan is freed when it has no request and no
 * buffer; while buffers exist it pins the module, whose code their ops are.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/blk-mq.h>
#include <linux/module.h>
#include <linux/mm.h>
#include <linux/net.h>
#include <linux/pipe_fs_i.h>
#include <linux/splice.h>
#include <linux/slab.h>

#include "internal.h"

struct userblk_loan {
	spinlock_t lock;
	struct request *rq;	/* until the request is ended, then NULL */
	unsigned int bufs;	/* lent pipe buffers not yet released */
	bool answered;		/* the daemon answered: the last release completes */
	int result;		/* ... with this */
};

/*
 * Last in every path that frees a loan, so that nothing of the module runs
 * after its reference is gone but the return (pipe_buf_operations has no
 * owner for the pipe code to hold instead; the window is that return).
 */
static void userblk_loan_free(struct userblk_loan *loan)
{
	kfree(loan);
	module_put(THIS_MODULE);
}

static void lend_buf_release(struct pipe_inode_info *pipe,
			     struct pipe_buffer *buf)
{
	struct userblk_loan *loan = (struct userblk_loan *)buf->private;
	struct request *rq = NULL;
	int result = 0;
	bool free;

	put_page(buf->page);
	spin_lock(&loan->lock);
	if (!--loan->bufs && loan->rq && loan->answered) {
		rq = loan->rq;
		result = loan->result;
		loan->rq = NULL;
	}
	free = !loan->bufs && !loan->rq;
	spin_unlock(&loan->lock);
	if (rq)
		userblk_lent_done(rq->mq_hctx->driver_data, rq, result);
	if (free)
		userblk_loan_free(loan);
}

/* tee() and the like: a second buffer over the page holds the request too. */
static bool lend_buf_get(struct pipe_inode_info *pipe, struct pipe_buffer *buf)
{
	struct userblk_loan *loan = (struct userblk_loan *)buf->private;

	if (!try_get_page(buf->page))
		return false;
	spin_lock(&loan->lock);
	loan->bufs++;
	spin_unlock(&loan->lock);
	return true;
}

/*
 * No .confirm: the pages are up to date. No .try_steal: nobody may take
 * them. The buffers never carry CAN_MERGE or GIFT (userblk_lend sets no
 * flags, link_pipe clears both on copies).
 */
static const struct pipe_buf_operations lend_buf_ops = {
	.release	= lend_buf_release,
	.get		= lend_buf_get,
};

/* The loan of rq, made on its first lend. rq is held (OUT or DATA). */
static struct userblk_loan *userblk_loan_of(struct userblk_queue *q,
					    struct request *rq)
{
	struct userblk_cmd *cmd = userblk_cmd(rq);
	struct userblk_loan *loan;

	if (cmd->loan)
		return cmd->loan;
	/* Reclaim must not wait for I/O: it may be this device's. */
	loan = kmalloc(sizeof(*loan), GFP_NOIO);
	if (!loan)
		return NULL;
	spin_lock_init(&loan->lock);
	loan->rq = rq;
	loan->bufs = 0;
	loan->answered = false;
	loan->result = 0;
	__module_get(THIS_MODULE);
	spin_lock(&q->lock);
	cmd->loan = loan;
	spin_unlock(&q->lock);
	return loan;
}

/*
 * A page a socket can take a reference on and send from (not slab memory,
 * a live page): the same test the network stack makes before it sends a
 * page without copying it.
 */
static bool userblk_lendable(struct request *rq, size_t pos, size_t len)
{
	struct req_iterator iter;
	struct bio_vec bv;
	size_t at = 0;

	rq_for_each_segment(bv, rq, iter) {
		if (at + bv.bv_len > pos && at < pos + len &&
		    !sendpage_ok(bv.bv_page))
			return false;
		at += bv.bv_len;
		if (at >= pos + len)
			break;
	}
	return true;
}

/*
 * Lend bytes pos..pos+len of the WRITE rq, which the caller holds, to pipe,
 * whose mutex the caller holds: one buffer per page segment, as many as the
 * pipe has room for (all of them or none if whole). Returns the bytes lent,
 * -EOPNOTSUPP if a page cannot be lent or (whole) the pipe has too few
 * slots, so that the caller copies instead, or another -errno.
 */
ssize_t userblk_lend(struct userblk_queue *q, struct request *rq, size_t pos,
		     size_t len, struct pipe_inode_info *pipe, bool whole)
{
	unsigned int room = pipe->max_usage -
		min(pipe_occupancy(pipe->head, pipe->tail), pipe->max_usage);
	struct userblk_loan *loan;
	struct req_iterator iter;
	struct bio_vec bv;
	size_t at = 0, done = 0;
	unsigned int nbufs = 0;
	ssize_t ret = 0;

	if (!len)
		return 0;
	if (!room)
		return -EAGAIN;
	if (!userblk_lendable(rq, pos, len))
		return -EOPNOTSUPP;
	if (whole) {
		rq_for_each_segment(bv, rq, iter) {
			if (at + bv.bv_len > pos && at < pos + len)
				nbufs++;
			at += bv.bv_len;
		}
		if (nbufs > room)
			return -EOPNOTSUPP;
		at = 0;
	}
	loan = userblk_loan_of(q, rq);
	if (!loan)
		return -ENOMEM;

	rq_for_each_segment(bv, rq, iter) {
		struct pipe_buffer buf = {
			.page	= bv.bv_page,
			.offset	= bv.bv_offset,
			.len	= bv.bv_len,
			.ops	= &lend_buf_ops,
			.flags	= 0,
			.private = (unsigned long)loan,
		};
		size_t end = at + bv.bv_len;

		if (end <= pos) {
			at = end;
			continue;
		}
		if (at < pos) {
			buf.offset += pos - at;
			buf.len -= pos - at;
		}
		if (end > pos + len)
			buf.len -= end - (pos + len);
		if (!room)
			break;
		get_page(buf.page);
		spin_lock(&loan->lock);
		loan->bufs++;
		spin_unlock(&loan->lock);
		/* On failure add_to_pipe releases the buffer: page and count. */
		ret = add_to_pipe(pipe, &buf);
		if (ret < 0)
			break;
		room--;
		done += buf.len;
		at = end;
		if (at >= pos + len)
			break;
	}
	userblk_count(q, USERBLK_LENT_WRITE, done);
	return done ? done : ret;
}

/*
 * Under q->lock, as the daemon's answer to rq is applied: if pipes still
 * hold buffers lent from it, record the answer for the last release and
 * return true (the request is LENT). Else the request ends now.
 */
bool userblk_loan_answer(struct userblk_cmd *cmd, int result)
{
	struct userblk_loan *loan = cmd->loan;
	bool lent;

	spin_lock(&loan->lock);
	lent = loan->bufs;
	if (lent) {
		loan->answered = true;
		loan->result = result;
	}
	spin_unlock(&loan->lock);
	return lent;
}

/*
 * Under q->lock, by an abort that found rq LENT: take it (withdraw the
 * answer, so that no release completes it) unless its last release already
 * did, in which case it returns false and leaves the request to it.
 */
bool userblk_loan_abort(struct userblk_cmd *cmd)
{
	struct userblk_loan *loan = cmd->loan;
	bool taken;

	spin_lock(&loan->lock);
	taken = loan->rq;
	if (taken)
		loan->answered = false;
	spin_unlock(&loan->lock);
	return taken;
}

/*
 * rq is being ended by whoever owns it (answer, abort, timeout): its loan
 * lets go of it. Buffers still lent keep their pages, not the request.
 */
void userblk_loan_detach(struct userblk_queue *q, struct request *rq)
{
	struct userblk_cmd *cmd = userblk_cmd(rq);
	struct userblk_loan *loan;
	unsigned int left;

	spin_lock(&q->lock);
	loan = cmd->loan;
	cmd->loan = NULL;
	spin_unlock(&q->lock);
	if (!loan)
		return;
	spin_lock(&loan->lock);
	loan->rq = NULL;
	left = loan->bufs;
	spin_unlock(&loan->lock);
	if (!left) {
		userblk_loan_free(loan);
		return;
	}
	userblk_count(q, USERBLK_LENT_ABANDONED, 1);
	pr_warn_ratelimited("dev %u queue %u: tag %u ended while %u pipe buffers still hold its pages: whoever holds them can read what the pages hold later\n",
			    q->dev->id, q->id, rq->tag, left);
}
