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

#include "internal.h"

static const struct userblk_desc_ops copy_desc_ops = {
	.inline_data	= true,
};

static ssize_t copy_read(struct file *file, char __user *buf, size_t count,
			 loff_t *ppos)
{
	return userblk_desc_read(file, buf, count, &copy_desc_ops);
}

static ssize_t copy_write(struct file *file, const char __user *buf,
			  size_t count, loff_t *ppos)
{
	return userblk_desc_write(file, buf, count, &copy_desc_ops);
}

static const struct file_operations copy_fops = {
	.owner		= THIS_MODULE,
	.read		= copy_read,
	.write		= copy_write,
	.poll		= userblk_desc_poll,
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
	.can_recover	= true,
};
