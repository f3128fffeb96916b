// SPDX-License-Identifier: GPL-2.0
/*
 * userblk: block devices whose requests are served by a user-space daemon.
 *
 * The core owns the control device; the block devices and their transports
 * build on it.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>

#include <uapi/userblk.h>

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
	return param_set_uint_minmax(val, kp, 4, USERBLK_MAX_IO_BYTES / 1024);
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

static long userblk_ctl_ioctl(struct file *file, unsigned int cmd,
			      unsigned long arg)
{
	return -ENOTTY;
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

	ret = misc_register(&userblk_misc);
	if (ret) {
		pr_err("cannot register /dev/%s: %d\n", USERBLK_CONTROL_NAME, ret);
		return ret;
	}
	pr_info("loaded, abi %d\n", USERBLK_ABI_VERSION);
	return 0;
}

static void __exit userblk_exit(void)
{
	misc_deregister(&userblk_misc);
	pr_info("unloaded\n");
}

module_init(userblk_init);
module_exit(userblk_exit);

MODULE_AUTHOR("The userblk authors");
MODULE_DESCRIPTION("Block devices served by a user-space daemon");
MODULE_LICENSE("GPL");
