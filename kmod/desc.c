// SPDX-License-Identifier: GPL-2.0
/*
 * The queue fd of the descriptor transports (copy, pipe, splice): read()
 * returns a batch of request descriptors, write() takes a batch of
 * completions. In copy a WRITE's data follows its descriptor and a READ's
 * data its completion; pipe and splice move the data elsewhere, through the
 * push and pull of their struct userblk_desc_ops.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/pagemap.h>
#include <linux/poll.h>
#include <linux/uaccess.h>

#include "internal.h"

/* The entry of rq in read(): its descriptor, and its data if inline. */
static size_t userblk_desc_entry(const struct userblk_desc_ops *ops,
				 struct request *rq)
{
	size_t need = sizeof(struct userblk_io_desc);

	if (ops->inline_data && userblk_has_data_out(rq))
		need += blk_rq_bytes(rq);
	return need;
}

ssize_t userblk_desc_read(struct file *file, char __user *buf, size_t count,
			  const struct userblk_desc_ops *ops)
{
	struct userblk_queue *q = file->private_data;
	size_t min_read = ops->inline_data ?
		USERBLK_COPY_MIN_READ(q->dev->cfg.max_io_bytes) :
		USERBLK_DESC_MIN_READ;
	size_t done = 0;
	int ret;

	if (count < min_read)
		return -EINVAL;

	for (;;) {
		struct userblk_io_desc desc;
		struct request *rq;
		size_t entry;
		bool data;

		/* A recovery began: this fd's daemon gets no more requests. */
		if (READ_ONCE(q->reattach))
			return done;
		rq = userblk_take_pending(q, count - done, &desc,
					  ops->inline_data);
		if (!rq) {
			if (done)
				return done;
			if (READ_ONCE(q->dead))
				return 0;
			if (file->f_flags & O_NONBLOCK)
				return -EAGAIN;
			ret = wait_event_interruptible(q->wait,
						       userblk_pending_ready(q) ||
						       READ_ONCE(q->dead) ||
						       READ_ONCE(q->reattach));
			if (ret)
				return ret;
			continue;
		}

		/* Read rq now: once handed over, it may complete at any time. */
		entry = userblk_desc_entry(ops, rq);
		data = ops->inline_data && userblk_has_data_out(rq);
		pagefault_disable();
		ret = copy_to_user(buf + done, &desc, sizeof(desc)) ? -EFAULT : 0;
		pagefault_enable();
		if (!ret && data) {
			ret = userblk_copy_to_user_nofault(rq, buf + done + sizeof(desc));
			if (!ret)
				userblk_count(q, USERBLK_COPY_WRITE_USER,
						   blk_rq_bytes(rq));
		}
		if (ret) {
			/* Give it back before touching the page, which may sleep. */
			userblk_untake(q, rq);
			if (fault_in_writeable(buf + done, entry))
				return done ? done : -EFAULT;
			continue;
		}
		/* The descriptor is in buf but not counted until the data path is ready. */
		if (ops->push && ops->push(q, rq)) {
			userblk_finish(q, rq, -EIO);	/* the daemon never sees it */
			continue;
		}
		userblk_handed_over(q, rq);
		done += entry;
	}
}

ssize_t userblk_desc_write(struct file *file, const char __user *buf,
			   size_t count, const struct userblk_desc_ops *ops)
{
	struct userblk_queue *q = file->private_data;
	size_t done = 0;
	int ret = 0;

	if (READ_ONCE(q->dead))
		return -ENODEV;

	while (count - done >= sizeof(struct userblk_io_cpl)) {
		struct userblk_io_cpl cpl;
		struct request *rq;
		int result;
		size_t need;

		/* No request is held yet: this copy may sleep on a fault. */
		if (copy_from_user(&cpl, buf + done, sizeof(cpl))) {
			ret = -EFAULT;
			break;
		}
		ret = userblk_check_cpl(q, &cpl);
		if (ret)
			break;
		rq = userblk_claim(q, &cpl);
		if (!rq) {
			ret = -ENOENT;
			break;
		}
		need = sizeof(cpl);
		result = cpl.result;
		if (ops->inline_data && userblk_has_data_in(rq) && result == 0)
			need += blk_rq_bytes(rq);
		if (need > count - done) {
			userblk_reject(q, "completion for tag %u needs %zu bytes, %zu left",
				       cpl.tag, need, count - done);
			userblk_unclaim(q, rq);
			ret = -EINVAL;
			break;
		}
		if (need > sizeof(cpl)) {
			ret = userblk_copy_from_user_nofault(rq, buf + done + sizeof(cpl));
			if (ret) {
				/* Give it back, fault the data in, take this entry again. */
				userblk_unclaim(q, rq);
				if (fault_in_readable(buf + done + sizeof(cpl),
						      need - sizeof(cpl)))
					break;
				ret = 0;
				continue;
			}
			userblk_count(q, USERBLK_COPY_READ_USER,
					   need - sizeof(cpl));
		}
		if (ops->pull && userblk_has_data_in(rq) && result == 0 &&
		    ops->pull(q, rq))
			result = -EIO;
		if (ops->settle && userblk_has_data_out(rq))
			ops->settle(q, rq, &result);
		userblk_finish(q, rq, result);
		done += need;
	}
	if (done)
		return done;
	/* A buffer too short for even one completion is malformed too. */
	return ret ? ret : -EINVAL;
}

__poll_t userblk_desc_poll(struct file *file, struct poll_table_struct *wait)
{
	struct userblk_queue *q = file->private_data;
	__poll_t mask = EPOLLOUT | EPOLLWRNORM;

	poll_wait(file, &q->wait, wait);
	if (userblk_pending_ready(q))
		mask |= EPOLLIN | EPOLLRDNORM;
	if (READ_ONCE(q->dead) || READ_ONCE(q->reattach))
		mask |= EPOLLIN | EPOLLRDNORM | EPOLLHUP;
	return mask;
}
