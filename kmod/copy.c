// SPDX-License-Identifier: GPL-2.0
/*
 * The copy transport: read() on the queue fd returns a batch of request
 * descriptors, each followed by a write's data; write() takes a batch of
 * completions, each followed by a successful read's data. The data is copied
 * between the bio pages and the daemon's buffer inside those two syscalls, as
 * FUSE and BUSE do. See include/uapi/userblk.h for the exact format.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/module.h>
#include <linux/poll.h>
#include <linux/uaccess.h>

#include "internal.h"

static ssize_t copy_read(struct file *file, char __user *buf, size_t count,
			 loff_t *ppos)
{
	struct userblk_queue *q = file->private_data;
	size_t done = 0;
	int ret;

	if (count < USERBLK_COPY_MIN_READ(q->dev->cfg.max_io_bytes))
		return -EINVAL;

	for (;;) {
		struct userblk_io_desc desc;
		struct request *rq;

		rq = userblk_take_pending(q, count - done, &desc);
		if (!rq) {
			if (done)
				return done;
			if (READ_ONCE(q->dead))
				return 0;
			if (file->f_flags & O_NONBLOCK)
				return -EAGAIN;
			ret = wait_event_interruptible(q->wait,
						       !list_empty_careful(&q->pending) ||
						       READ_ONCE(q->dead));
			if (ret)
				return ret;
			continue;
		}

		ret = 0;
		if (copy_to_user(buf + done, &desc, sizeof(desc)))
			ret = -EFAULT;
		else if (userblk_has_data_out(rq))
			ret = userblk_copy_to_user(rq, buf + done + sizeof(desc));
		if (ret) {
			userblk_untake(q, rq);
			return done ? done : ret;
		}
		userblk_handed_over(q, rq);
		done += sizeof(desc);
		if (desc.op == USERBLK_OP_WRITE)
			done += desc.len;
	}
}

static ssize_t copy_write(struct file *file, const char __user *buf,
			  size_t count, loff_t *ppos)
{
	struct userblk_queue *q = file->private_data;
	size_t done = 0;
	int ret = 0;

	if (READ_ONCE(q->dead))
		return -ENODEV;

	while (count - done >= sizeof(struct userblk_io_cpl)) {
		struct userblk_io_cpl cpl;
		struct request *rq;
		size_t need;

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
		if (userblk_has_data_in(rq) && cpl.result == 0)
			need += blk_rq_bytes(rq);
		if (need > count - done) {
			userblk_reject(q, "completion for tag %u needs %zu bytes, %zu left",
				       cpl.tag, need, count - done);
			userblk_unclaim(q, rq);
			ret = -EINVAL;
			break;
		}
		if (need > sizeof(cpl)) {
			ret = userblk_copy_from_user(rq, buf + done + sizeof(cpl));
			if (ret) {
				userblk_unclaim(q, rq);
				break;
			}
		}
		userblk_finish(q, rq, cpl.result);
		done += need;
	}
	if (done)
		return done;
	/* A buffer too short for even one completion is malformed too. */
	return ret ? ret : -EINVAL;
}

static __poll_t copy_poll(struct file *file, struct poll_table_struct *wait)
{
	struct userblk_queue *q = file->private_data;
	__poll_t mask = EPOLLOUT | EPOLLWRNORM;

	poll_wait(file, &q->wait, wait);
	if (!list_empty_careful(&q->pending))
		mask |= EPOLLIN | EPOLLRDNORM;
	if (READ_ONCE(q->dead))
		mask |= EPOLLIN | EPOLLRDNORM | EPOLLHUP;
	return mask;
}

static const struct file_operations copy_fops = {
	.owner		= THIS_MODULE,
	.read		= copy_read,
	.write		= copy_write,
	.poll		= copy_poll,
	.release	= userblk_queue_release,
	.llseek		= noop_llseek,
};

static const struct blk_mq_ops copy_mq_ops = {
	.queue_rq	= userblk_queue_rq,
	.commit_rqs	= userblk_commit_rqs,
	.timeout	= userblk_timeout,
	.init_hctx	= userblk_init_hctx,
};

const struct userblk_transport userblk_copy_transport = {
	.name		= "copy",
	.mode		= USERBLK_MODE_COPY,
	.mq_ops		= &copy_mq_ops,
	.fops		= &copy_fops,
};
