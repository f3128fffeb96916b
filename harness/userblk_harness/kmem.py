"""Kernel memory around a device, from /proc/meminfo and /proc/slabinfo: what making it (and
then using it) took. A pipe per tag costs slab (each pipe's inode, files and buffer ring) and
whole pages (a pipe keeps one spare page after it has carried data); both show here."""

MEMINFO = "/proc/meminfo"
SLABINFO = "/proc/slabinfo"


def meminfo(path=MEMINFO):
    """{key: KiB} of /proc/meminfo, or {} if unreadable."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[key] = int(parts[0])
    except OSError:
        pass
    return out


def slabinfo(path=SLABINFO):
    """{cache: bytes of its active objects} of /proc/slabinfo (root only), or {}."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(("slabinfo", "#")):
                    continue
                f_ = line.split()
                if len(f_) >= 4 and f_[1].isdigit() and f_[3].isdigit():
                    out[f_[0]] = int(f_[1]) * int(f_[3])
    except OSError:
        pass
    return out


def snapshot():
    return {"meminfo": meminfo(), "slabinfo": slabinfo()}


def kernel_kib(m):
    """Memory in use that is neither free, nor file cache, nor process memory (anonymous),
    in KiB: slab, page tables, stacks and pages the kernel allocated for itself (a pipe's)."""
    keys = ("MemTotal", "MemFree", "Buffers", "Cached", "AnonPages")
    if not all(k in m for k in keys):
        return None
    return m["MemTotal"] - m["MemFree"] - m["Buffers"] - m["Cached"] - m["AnonPages"]


def delta(before, after, top=5):
    """What grew from before to after: kernel_kib, slab_kib (meminfo's Slab), and the top
    slab caches by bytes of active objects. None unless both snapshots have meminfo."""
    if not before or not after or not before.get("meminfo") or not after.get("meminfo"):
        return None
    kb, ka = kernel_kib(before["meminfo"]), kernel_kib(after["meminfo"])
    sb, sa = before["meminfo"].get("Slab"), after["meminfo"].get("Slab")
    caches = {}
    b, a = before.get("slabinfo") or {}, after.get("slabinfo") or {}
    for name in set(a) | set(b):
        d = a.get(name, 0) - b.get(name, 0)
        if d:
            caches[name] = d
    biggest = sorted(caches.items(), key=lambda kv: -kv[1])[:top]
    return {"kernel_kib": None if kb is None or ka is None else ka - kb,
            "slab_kib": None if sb is None or sa is None else sa - sb,
            "slab_caches_bytes": dict(biggest)}
