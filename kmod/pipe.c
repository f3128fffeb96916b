// SPDX-License-Identifier: GPL-2.0
/*
 * The pipe transport: descriptors and completions as in copy, without
 * inline data; the data travels in one pipe per tag, which the daemon makes
 * and registers with USERBLK_IOC_PIPE_SET. The kernel writes a WRITE's data
 * into the tag's pipe as it hands out the descriptor, and reads a READ's data
 * out of it as it takes the completion; in between, the daemon may splice the
 * pipe to a file or socket without touching the data.
 *
 * The kernel never uses the daemon's own struct files: PIPE_SET opens two
 * files of its own on the pipe, which keep it alive whatever the daemon does
 * to its fds. It never sleeps on the pipe either: the pipe's mutex is only
 * ever trylocked, since a daemon thread may hold it for as long as it likes
 * (splicing the pipe to a socket that does not drain), and a request that
 * finds it taken fails. With the mutex held the kernel fills the pipe through
 * an ITER_PIPE iterator (fresh pages: one copy from the request's pages) or,
 * with USERBLK_F_LEND, with buffers over the request's own pages (lend.c),
 * and empties it buffer by buffer (one copy into the request's pages), so it
 * can check before and undo after: a request never leaves bytes in the pipe
 * for the next one on its tag.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bio.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/module.h>
#include <linux/pagemap.h>
#include <linux/pipe_fs_i.h>
#include <linux/sched/mm.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/uio.h>

#include "internal.h"

struct userblk_tag_pipe {
	struct file *rd;		/* the kernel's own read end */
	struct file *wr;		/* the kernel's own write end */
};

/* q->priv: an array of one pipe per tag, each set while its tag is idle. */
static struct userblk_tag_pipe *pipe_of(struct userblk_queue *q,
					unsigned int tag)
{
	struct userblk_tag_pipe *pipes = q->priv;

	return &pipes[tag];
}

static struct pipe_inode_info *pipe_info(struct userblk_tag_pipe *p)
{
	return p->rd->private_data;
}

/* Lock the pipe of rq's tag without sleeping, or say why not and fail. */
static struct pipe_inode_info *pipe_trylock(struct userblk_queue *q,
					    struct request *rq)
{
	struct pipe_inode_info *pipe = pipe_info(pipe_of(q, rq->tag));

	if (likely(mutex_trylock(&pipe->mutex)))
		return pipe;
	userblk_reject(q, "tag %u: another thread holds the pipe (splicing it?): the request fails",
		       rq->tag);
	return NULL;
}

static void pipe_unlock_wake(struct pipe_inode_info *pipe, bool filled, bool emptied)
{
	mutex_unlock(&pipe->mutex);
	if (filled)
		wake_up_interruptible_sync_poll(&pipe->rd_wait, EPOLLIN | EPOLLRDNORM);
	if (emptied)
		wake_up_interruptible_sync_poll(&pipe->wr_wait, EPOLLOUT | EPOLLWRNORM);
}

/* Drop everything in a locked pipe; returns the bytes dropped. */
static size_t pipe_drain(struct pipe_inode_info *pipe)
{
	unsigned int mask = pipe->ring_size - 1;
	size_t dropped = 0;

	while (!pipe_empty(pipe->head, pipe->tail)) {
		struct pipe_buffer *buf = &pipe->bufs[pipe->tail & mask];

		dropped += buf->len;
		pipe_buf_release(pipe, buf);
		pipe->tail++;
	}
	return dropped;
}

/*
 * As the descriptor is handed out: the tag's pipe must be empty (what is left
 * belongs to an earlier request: dropped, and the request fails), and a
 * WRITE's data goes into it whole or not at all.
 */
static int pipe_push(struct userblk_queue *q, struct request *rq)
{
	size_t len = blk_rq_bytes(rq), done = 0, stale;
	struct pipe_inode_info *pipe;
	struct req_iterator iter;
	struct iov_iter it;
	struct bio_vec bv;
	unsigned int noio;
	int ret = 0;

	pipe = pipe_trylock(q, rq);
	if (!pipe)
		return -EIO;
	/* The pipe's fresh pages: no reclaim that waits for I/O, maybe this device's. */
	noio = memalloc_noio_save();
	stale = pipe_drain(pipe);
	if (unlikely(stale)) {
		userblk_reject(q, "tag %u: %zu bytes of an earlier request were left in the pipe: dropped, and the request fails",
			       rq->tag, stale);
		ret = -EIO;
		goto out_unlock;
	}
	if (!userblk_has_data_out(rq))
		goto out_unlock;
	if (DIV_ROUND_UP(len, PAGE_SIZE) > pipe->max_usage) {
		userblk_reject(q, "tag %u: the pipe holds %u pages, the WRITE needs %zu bytes: size it to max_io_bytes",
			       rq->tag, pipe->max_usage, len);
		ret = -EIO;
		goto out_unlock;
	}
	if (userblk_lends(q)) {
		ssize_t lent = userblk_lend(q, rq, 0, len, pipe, true);

		if (lent == len) {
			done = len;
			goto out_unlock;
		}
		if (lent != -EOPNOTSUPP && lent != -ENOMEM) {
			userblk_reject(q, "tag %u: only %zd of %zu bytes could be lent to the pipe",
				       rq->tag, lent, len);
			pipe_drain(pipe);
			ret = -EIO;
			goto out_unlock;
		}
		/* A page that cannot be lent, or too few slots: copy. */
	}
	iov_iter_pipe(&it, ITER_DEST, pipe, len);
	rq_for_each_segment(bv, rq, iter) {
		void *p = bvec_kmap_local(&bv);
		size_t n = copy_to_iter(p, bv.bv_len, &it);

		kunmap_local(p);
		done += n;
		if (n < bv.bv_len)
			break;
	}
	userblk_count(q, USERBLK_COPY_WRITE_KERNEL, done);
	if (unlikely(done < len)) {
		userblk_reject(q, "tag %u: only %zu of %zu bytes went into the pipe",
			       rq->tag, done, len);
		pipe_drain(pipe);
		ret = -EIO;
	}
out_unlock:
	memalloc_noio_restore(noio);
	pipe_unlock_wake(pipe, !ret && done, stale || ret);
	return ret;
}

/* A READ answered 0: exactly its len bytes must be in the pipe. */
static int pipe_pull(struct userblk_queue *q, struct request *rq)
{
	size_t len = blk_rq_bytes(rq), done = 0, extra;
	struct pipe_inode_info *pipe;
	struct iov_iter it;
	struct bio *bio;
	int ret = 0;

	pipe = pipe_trylock(q, rq);
	if (!pipe)
		return -EIO;
	__rq_for_each_bio(bio, rq) {
		unsigned int mask = pipe->ring_size - 1;
		struct bvec_iter bi;
		struct bio_vec bv;
		unsigned long nr = 0;

		bio_for_each_bvec(bv, bio, bi)
			nr++;
		iov_iter_bvec(&it, ITER_DEST,
			      __bvec_iter_bvec(bio->bi_io_vec, bio->bi_iter), nr,
			      bio->bi_iter.bi_size);
		it.iov_offset = bio->bi_iter.bi_bvec_done;
		while (iov_iter_count(&it) && !pipe_empty(pipe->head, pipe->tail)) {
			struct pipe_buffer *buf = &pipe->bufs[pipe->tail & mask];
			size_t n = min_t(size_t, buf->len, iov_iter_count(&it));

			/*
			 * A page-cache page not yet read would make confirm sleep
			 * on its lock (maybe on I/O the daemon must serve): take
			 * only pages that are there; the rest fails the READ.
			 */
			if (buf->ops->confirm && !PageUptodate(buf->page))
				break;
			n = copy_page_to_iter(buf->page, buf->offset, n, &it);
			if (!n)
				break;
			buf->offset += n;
			buf->len -= n;
			done += n;
			if (!buf->len) {
				pipe_buf_release(pipe, buf);
				pipe->tail++;
			}
		}
		bio_for_each_segment(bv, bio, bi)
			flush_dcache_page(bv.bv_page);
		if (iov_iter_count(&it))
			break;
	}
	extra = pipe_drain(pipe);
	/* Copied, even into a READ that then fails. */
	userblk_count(q, USERBLK_COPY_READ_KERNEL, done);
	if (unlikely(done < len || extra)) {
		userblk_reject(q, "tag %u: the READ of %zu bytes found %zu in the pipe: write a READ's data, exactly, before its completion",
			       rq->tag, len, done + extra);
		ret = -EIO;
	}
	pipe_unlock_wake(pipe, false, true);
	return ret;
}

/*
 * Lending: buffers a WRITE lent to its tag's pipe that are still there when
 * it is answered were never read, and nothing else would release them (the
 * tag's pipe is the kernel's until the device goes): drop them, and an
 * answer of 0 for data the daemon did not take becomes an error. Buffers it
 * moved or tee'd elsewhere hold the request until they are released. A pipe
 * another thread holds is left: that thread is moving them.
 */
static void pipe_settle(struct userblk_queue *q, struct request *rq, int *result)
{
	struct pipe_inode_info *pipe;
	size_t left;

	if (!userblk_cmd(rq)->loan)
		return;
	pipe = pipe_info(pipe_of(q, rq->tag));
	if (!mutex_trylock(&pipe->mutex))
		return;
	left = pipe_drain(pipe);
	pipe_unlock_wake(pipe, false, left);
	if (left && *result == 0) {
		userblk_reject(q, "tag %u: WRITE answered 0 with %zu of its bytes still in the pipe: it fails",
			       rq->tag, left);
		*result = -EIO;
	}
}

static const struct userblk_desc_ops pipe_desc_ops = {
	.push		= pipe_push,
	.pull		= pipe_pull,
	.settle		= pipe_settle,
};

/* Open a non-blocking file of our own on the pipe behind fd. */
static struct file *pipe_open_end(int fd, fmode_t mode, int flags)
{
	struct file *f = fget(fd), *own;

	if (!f)
		return ERR_PTR(-EBADF);
	if (!S_ISFIFO(file_inode(f)->i_mode) || !(f->f_mode & mode)) {
		fput(f);
		return ERR_PTR(-EINVAL);
	}
	own = dentry_open(&f->f_path, flags | O_NONBLOCK, current_cred());
	fput(f);
	return own;
}

static long pipe_set(struct userblk_queue *q,
		     struct userblk_pipe_set __user *arg)
{
	struct userblk_tag_pipe old, new;
	struct userblk_pipe_set ps;
	long ret;

	if (copy_from_user(&ps, arg, sizeof(ps)))
		return -EFAULT;
	if (ps.flags || ps.reserved || ps.tag >= q->dev->cfg.queue_depth)
		return -EINVAL;

	new.rd = pipe_open_end(ps.read_fd, FMODE_READ, O_RDONLY);
	if (IS_ERR(new.rd))
		return PTR_ERR(new.rd);
	new.wr = pipe_open_end(ps.write_fd, FMODE_WRITE, O_WRONLY);
	if (IS_ERR(new.wr)) {
		ret = PTR_ERR(new.wr);
		goto out_rd;
	}
	ret = -EINVAL;
	if (file_inode(new.rd) != file_inode(new.wr))
		goto out_wr;	/* not the two ends of one pipe */
	if (!new.rd->private_data || new.rd->private_data != file_inode(new.rd)->i_pipe ||
	    new.wr->private_data != new.rd->private_data ||
	    pipe_has_watch_queue(new.rd->private_data))
		goto out_wr;	/* not a plain pipe we can lock (a notification queue) */

	spin_lock(&q->lock);
	if (q->rqs[ps.tag] || READ_ONCE(q->dead)) {
		spin_unlock(&q->lock);
		ret = READ_ONCE(q->dead) ? -ENODEV : -EBUSY;
		goto out_wr;
	}
	old = *pipe_of(q, ps.tag);
	*pipe_of(q, ps.tag) = new;
	spin_unlock(&q->lock);

	if (old.rd) {
		fput(old.rd);
		fput(old.wr);
	}
	return 0;

out_wr:
	fput(new.wr);
out_rd:
	fput(new.rd);
	return ret;
}

static long pipe_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct userblk_queue *q = file->private_data;

	switch (cmd) {
	case USERBLK_IOC_PIPE_SET:
		return pipe_set(q, (struct userblk_pipe_set __user *)arg);
	default:
		return -ENOTTY;
	}
}

static int pipe_init_queue(struct userblk_queue *q)
{
	q->priv = kvcalloc(q->dev->cfg.queue_depth,
			   sizeof(struct userblk_tag_pipe), GFP_KERNEL);
	return q->priv ? 0 : -ENOMEM;
}

static void pipe_exit_queue(struct userblk_queue *q)
{
	unsigned int tag;

	if (!q->priv)
		return;
	for (tag = 0; tag < q->dev->cfg.queue_depth; tag++) {
		struct userblk_tag_pipe *p = pipe_of(q, tag);

		if (p->rd) {
			fput(p->rd);
			fput(p->wr);
		}
	}
	kvfree(q->priv);
	q->priv = NULL;
}

static int pipe_start_queue(struct userblk_queue *q)
{
	unsigned int tag, missing = 0;

	spin_lock(&q->lock);
	for (tag = 0; tag < q->dev->cfg.queue_depth; tag++)
		missing += !pipe_of(q, tag)->rd;
	spin_unlock(&q->lock);
	if (!missing)
		return 0;
	pr_warn_ratelimited("START_DEV: dev %u queue %u: %u of %u tags have no pipe (USERBLK_IOC_PIPE_SET)\n",
			    q->dev->id, q->id, missing, q->dev->cfg.queue_depth);
	return -ENOTCONN;
}

static ssize_t pipe_read(struct file *file, char __user *buf, size_t count,
			 loff_t *ppos)
{
	return userblk_desc_read(file, buf, count, &pipe_desc_ops);
}

static ssize_t pipe_write(struct file *file, const char __user *buf,
			  size_t count, loff_t *ppos)
{
	return userblk_desc_write(file, buf, count, &pipe_desc_ops);
}

static const struct file_operations pipe_fops = {
	.owner		= THIS_MODULE,
	.read		= pipe_read,
	.write		= pipe_write,
	.poll		= userblk_desc_poll,
	.unlocked_ioctl	= pipe_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.release	= userblk_queue_release,
	.llseek		= noop_llseek,
};

static const struct blk_mq_ops pipe_mq_ops = {
	.queue_rq	= userblk_queue_rq,
	.commit_rqs	= userblk_commit_rqs,
	.timeout	= userblk_timeout,
	.init_hctx	= userblk_init_hctx,
};

const struct userblk_transport userblk_pipe_transport = {
	.name		= "pipe",
	.mode		= USERBLK_MODE_PIPE,
	.mq_ops		= &pipe_mq_ops,
	.fops		= &pipe_fops,
	.can_lend	= true,
	.init_queue	= pipe_init_queue,
	.exit_queue	= pipe_exit_queue,
	.start_queue	= pipe_start_queue,
};
