// SPDX-License-Identifier: GPL-2.0
/*
 * The splice transport: descriptors and completions as in copy, without
 * inline data; the data moves through a data fd (USERBLK_IOC_SPLICE_DATA_FD)
 * whose file offset names a request by tag (USERBLK_SPLICE_OFF). Its
 * read_iter gives a WRITE's data and its write_iter takes a READ's data, so
 * pread()/pwrite() work, and splice() works through the generic helpers:
 * splice(data fd -> pipe) runs read_iter into fresh pipe pages (one copy in
 * the kernel), splice(pipe -> data fd) runs write_iter over the pipe's pages
 * (one copy). The daemon splices the other end of its pipe to a file or a
 * socket, so data it only forwards never enters its memory.
 *
 * By default the request's pages are not lent to the pipe: a pipe buffer
 * can outlive the request. A socket that was spliced the pages keeps them
 * until the peer acknowledges the data, long after the request completed and
 * its pages went back to the page cache or to the application, which may
 * have written new data into them: the peer would get the new data, or the
 * pages of an unrelated file. The one copy is what makes the completion
 * final. USERBLK_F_LEND lends them (lend.c) and trusts the daemon to answer
 * only once the data was received.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/module.h>
#include <linux/sched/mm.h>
#include <linux/splice.h>
#include <linux/uio.h>

#include "internal.h"

#define SPLICE_POS_MASK	((1ULL << USERBLK_SPLICE_TAG_SHIFT) - 1)
#define SPLICE_TAG_MASK	((1ULL << (USERBLK_SPLICE_GEN_SHIFT - USERBLK_SPLICE_TAG_SHIFT)) - 1)

/* Hold the request a data fd offset names; pos gets the offset within it. */
static struct request *splice_hold(struct userblk_queue *q, loff_t off,
				   size_t *pos)
{
	u64 tag = ((u64)off >> USERBLK_SPLICE_TAG_SHIFT) & SPLICE_TAG_MASK;
	u32 gen = (u64)off >> USERBLK_SPLICE_GEN_SHIFT;

	if (off < 0 || tag >= q->dev->cfg.queue_depth)
		return ERR_PTR(-EINVAL);
	*pos = off & SPLICE_POS_MASK;
	return userblk_hold(q, tag, gen);
}

/*
 * Move up to want bytes between the request on the offset's tag (from byte
 * pos) and it, holding the request only while the copy cannot sleep: into or
 * out of user memory (pread, pwrite) page faults are disabled, and a fault
 * gives the request back, faults the pages in and tries again. Returns the
 * bytes moved, 0 at the end of the request, or -errno. check() says whether
 * the held request may move that way.
 */
static ssize_t splice_data_move(struct kiocb *iocb, struct iov_iter *it, bool to_rq,
				ssize_t (*check)(struct userblk_queue *q, struct request *rq,
						 size_t pos, size_t *want))
{
	struct userblk_queue *q = iocb->ki_filp->private_data;
	bool user = user_backed_iter(it);
	size_t pos, want, n;
	unsigned int noio;
	struct request *rq;
	ssize_t ret;

	for (;;) {
		rq = splice_hold(q, iocb->ki_pos, &pos);
		if (IS_ERR(rq))
			return PTR_ERR(rq);
		want = iov_iter_count(it);
		ret = check(q, rq, pos, &want);
		if (ret || !want) {
			userblk_unhold(q, rq);
			return ret;
		}
		/*
		 * Nothing here may sleep on the daemon: no page faults on its
		 * memory, and the pipe pages an ITER_PIPE allocates come without
		 * reclaim that waits for I/O (which could be this device's).
		 */
		noio = memalloc_noio_save();
		if (user)
			pagefault_disable();
		n = userblk_copy_rq_iter(rq, pos, want, it, to_rq);
		if (user)
			pagefault_enable();
		memalloc_noio_restore(noio);
		if (to_rq)
			userblk_cmd(rq)->filled += n;
		userblk_count(q, to_rq ? (user ? USERBLK_COPY_READ_USER :
					       USERBLK_COPY_READ_KERNEL) :
				   (user ? USERBLK_COPY_WRITE_USER :
					   USERBLK_COPY_WRITE_KERNEL), n);
		userblk_unhold(q, rq);
		if (n) {
			iocb->ki_pos += n;
			return n;
		}
		if (!user)
			return -EFAULT;
		if ((to_rq ? fault_in_iov_iter_readable(it, want) :
			     fault_in_iov_iter_writeable(it, want)) == want)
			return -EFAULT;
	}
}

/* A WRITE's data, from byte pos of the request on the offset's tag. */
static ssize_t splice_check_read(struct userblk_queue *q, struct request *rq,
				 size_t pos, size_t *want)
{
	size_t len = blk_rq_bytes(rq);

	if (!userblk_has_data_out(rq))
		return -EINVAL;
	*want = pos < len ? min_t(size_t, len - pos, *want) : 0;
	return 0;
}

static ssize_t splice_data_read_iter(struct kiocb *iocb, struct iov_iter *to)
{
	return splice_data_move(iocb, to, false, splice_check_read);
}

/* A READ's data, in order: each write starts where the last one ended. */
static ssize_t splice_check_write(struct userblk_queue *q, struct request *rq,
				  size_t pos, size_t *want)
{
	struct userblk_cmd *cmd = userblk_cmd(rq);
	size_t len = blk_rq_bytes(rq);

	if (!userblk_has_data_in(rq)) {
		userblk_reject(q, "data written for tag %u, which is not a READ",
			       rq->tag);
		return -EINVAL;
	}
	if (pos != cmd->filled || *want > len - pos) {
		userblk_reject(q, "tag %u: %zu bytes written at %zu; the READ has %u of %zu bytes",
			       rq->tag, *want, pos, cmd->filled, len);
		return -EINVAL;
	}
	return 0;
}

static ssize_t splice_data_write_iter(struct kiocb *iocb, struct iov_iter *from)
{
	return splice_data_move(iocb, from, true, splice_check_write);
}

/*
 * splice(data fd -> pipe). On a lending device a WRITE's own pages go into
 * the pipe (lend.c); otherwise, or for pages that cannot be lent, read_iter
 * copies them into fresh pipe pages. The caller holds the pipe's mutex and
 * has capped len at the room in the pipe.
 */
static ssize_t splice_data_splice_read(struct file *in, loff_t *ppos,
				       struct pipe_inode_info *pipe, size_t len,
				       unsigned int flags)
{
	struct userblk_queue *q = in->private_data;
	struct request *rq;
	ssize_t ret;
	size_t pos;

	if (!userblk_lends(q))
		return generic_file_splice_read(in, ppos, pipe, len, flags);
	rq = splice_hold(q, *ppos, &pos);
	if (IS_ERR(rq))
		return PTR_ERR(rq);
	ret = splice_check_read(q, rq, pos, &len);
	if (!ret)
		ret = userblk_lend(q, rq, pos, len, pipe, false);
	userblk_unhold(q, rq);
	if (ret == -EOPNOTSUPP || ret == -ENOMEM)
		return generic_file_splice_read(in, ppos, pipe, len, flags);
	if (ret > 0)
		*ppos += ret;
	return ret;
}

static int splice_data_release(struct inode *inode, struct file *file)
{
	struct userblk_queue *q = file->private_data;

	userblk_dev_put(q->dev);
	return 0;
}

static const struct file_operations splice_data_fops = {
	.owner		= THIS_MODULE,
	.read_iter	= splice_data_read_iter,
	.write_iter	= splice_data_write_iter,
	.splice_read	= splice_data_splice_read,
	.splice_write	= iter_file_splice_write,
	.release	= splice_data_release,
	.llseek		= no_llseek,
};

static int splice_data_fd(struct userblk_queue *q)
{
	struct file *f;
	int fd;

	fd = get_unused_fd_flags(O_CLOEXEC);
	if (fd < 0)
		return fd;
	f = anon_inode_getfile("[userblk-data]", &splice_data_fops, q, O_RDWR);
	if (IS_ERR(f)) {
		put_unused_fd(fd);
		return PTR_ERR(f);
	}
	/* Positioned reads and writes (pread, splice with an offset). */
	f->f_mode |= FMODE_PREAD | FMODE_PWRITE;
	userblk_dev_get(q->dev);
	fd_install(fd, f);
	return fd;
}

static long splice_ioctl(struct file *file, unsigned int cmd,
			 unsigned long arg)
{
	struct userblk_queue *q = file->private_data;

	switch (cmd) {
	case USERBLK_IOC_SPLICE_DATA_FD:
		return arg ? -EINVAL : splice_data_fd(q);
	default:
		return -ENOTTY;
	}
}

/* A READ answered 0 must have had every byte written. */
static int splice_pull(struct userblk_queue *q, struct request *rq)
{
	u32 filled = userblk_cmd(rq)->filled;

	if (likely(filled == blk_rq_bytes(rq)))
		return 0;
	userblk_reject(q, "tag %u: READ answered 0 with %u of %u bytes written",
		       rq->tag, filled, blk_rq_bytes(rq));
	return -EIO;
}

static const struct userblk_desc_ops splice_desc_ops = {
	.pull		= splice_pull,
};

static ssize_t splice_read(struct file *file, char __user *buf, size_t count,
			   loff_t *ppos)
{
	return userblk_desc_read(file, buf, count, &splice_desc_ops);
}

static ssize_t splice_write(struct file *file, const char __user *buf,
			    size_t count, loff_t *ppos)
{
	return userblk_desc_write(file, buf, count, &splice_desc_ops);
}

static const struct file_operations splice_fops = {
	.owner		= THIS_MODULE,
	.read		= splice_read,
	.write		= splice_write,
	.poll		= userblk_desc_poll,
	.unlocked_ioctl	= splice_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.release	= userblk_queue_release,
	.llseek		= noop_llseek,
};

static const struct blk_mq_ops splice_mq_ops = {
	.queue_rq	= userblk_queue_rq,
	.commit_rqs	= userblk_commit_rqs,
	.timeout	= userblk_timeout,
	.init_hctx	= userblk_init_hctx,
};

const struct userblk_transport userblk_splice_transport = {
	.name		= "splice",
	.mode		= USERBLK_MODE_SPLICE,
	.mq_ops		= &splice_mq_ops,
	.fops		= &splice_fops,
	.can_lend	= true,
};
