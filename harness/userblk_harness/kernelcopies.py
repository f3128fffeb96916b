"""What userblk.ko copied of the requests' data, from the disk's sysfs directory userblk/
(kmod/core.c): bytes of WRITE and READ data copied between a request's pages and memory the
daemon reads or writes ("user": its buffers, the ring's shared area) or kernel pages ("kernel":
a pipe's); and bytes of WRITEs lent to a pipe as their own pages, not copied (--lend on), and
requests ended while pipes still held pages lent from them. Devices of other drivers (ublk,
nbd, the references) have no such directory."""

import os

SYSFS_BLOCK = "/sys/block"
# Key in the results -> file in <disk>/userblk/.
FILES = {
    "write_user": "write_copied_user_bytes",
    "read_user": "read_copied_user_bytes",
    "write_kernel": "write_copied_kernel_bytes",
    "read_kernel": "read_copied_kernel_bytes",
    "write_lent": "write_lent_bytes",
    "lent_abandoned": "lent_abandoned_requests",
}


def read(disk, sysfs_block=SYSFS_BLOCK):
    """The counters of disk (e.g. "userblk0"), or None if it has none."""
    d = os.path.join(sysfs_block, disk, "userblk")
    out = {}
    for key, name in FILES.items():
        try:
            with open(os.path.join(d, name)) as f:
                out[key] = int(f.read().strip())
        except (OSError, ValueError):
            return None
    return out


def delta(before, after):
    """after - before per counter; None unless both were read."""
    if before is None or after is None:
        return None
    return {k: after[k] - before[k] for k in FILES}


def per_io(d, data_bytes, bytes_per_io):
    """Copied (and lent) bytes per fio I/O of bytes_per_io, by kind: the counters' share of the data the
    daemon saw between the two reads (data_bytes, its bytes.total). None where unknown."""
    out = {"kernel_copy_user_bytes_per_io": None, "kernel_copy_kernel_bytes_per_io": None,
           "kernel_lent_bytes_per_io": None}
    if d is None or not data_bytes or not bytes_per_io:
        return out
    out["kernel_copy_user_bytes_per_io"] = \
        (d["write_user"] + d["read_user"]) / data_bytes * bytes_per_io
    out["kernel_copy_kernel_bytes_per_io"] = \
        (d["write_kernel"] + d["read_kernel"]) / data_bytes * bytes_per_io
    out["kernel_lent_bytes_per_io"] = d["write_lent"] / data_bytes * bytes_per_io
    return out
