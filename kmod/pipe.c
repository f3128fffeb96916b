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
 * files of its own on the pipe, non-blocking, so that nothing the daemon does
 * to its fds (fcntl, close) can make the kernel block on a full or empty
 * pipe, and it goes through the pipe's own read_iter/write_iter only. Each of
 * those copies once, between the request's pages and the pipe's own pages.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bio.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/module.h>
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

/*
 * Move the request's data through f, one bio at a time (vfs_iter_read() into
 * the request, vfs_iter_write() out of it). f is non-blocking: a pipe that is
 * full or empty ends the transfer short.
 */
static int pipe_transfer(struct userblk_queue *q, struct request *rq,
			 struct file *f, bool to_rq)
{
	struct bio *bio;

	__rq_for_each_bio(bio, rq) {
		struct bvec_iter bi;
		struct iov_iter it;
		struct bio_vec bv;
		unsigned long nr = 0;

		bio_for_each_bvec(bv, bio, bi)
			nr++;
		iov_iter_bvec(&it, to_rq ? ITER_DEST : ITER_SOURCE,
			      __bvec_iter_bvec(bio->bi_io_vec, bio->bi_iter), nr,
			      bio->bi_iter.bi_size);
		it.iov_offset = bio->bi_iter.bi_bvec_done;

		while (iov_iter_count(&it)) {
			size_t want = iov_iter_count(&it);
			ssize_t n;

			n = to_rq ? vfs_iter_read(f, &it, NULL, 0) :
				    vfs_iter_write(f, &it, NULL, 0);
			if (n <= 0) {
				userblk_reject(q, "tag %u: the pipe %s %zu bytes short (%zd): %s",
					       rq->tag, to_rq ? "was" : "had no room,",
					       want, n, to_rq ?
					       "write a READ's data before its completion" :
					       "drain the pipe and size it to max_io_bytes");
				return -EIO;
			}
		}
		if (to_rq) {
			bio_for_each_segment(bv, bio, bi)
				flush_dcache_page(bv.bv_page);
		}
	}
	return 0;
}

static int pipe_push(struct userblk_queue *q, struct request *rq)
{
	return pipe_transfer(q, rq, pipe_of(q, rq->tag)->wr, false);
}

static int pipe_pull(struct userblk_queue *q, struct request *rq)
{
	return pipe_transfer(q, rq, pipe_of(q, rq->tag)->rd, true);
}

static const struct userblk_desc_ops pipe_desc_ops = {
	.push		= pipe_push,
	.pull		= pipe_pull,
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
	.init_queue	= pipe_init_queue,
	.exit_queue	= pipe_exit_queue,
	.start_queue	= pipe_start_queue,
};
