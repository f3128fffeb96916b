"""The daemon's statistics (`userblk add --stats-json`, schema userblk-stats/1): deltas
between two snapshots and the per-I/O numbers derived from them."""

SCHEMA = "userblk-stats/1"


def _flatten(d, prefix="", out=None):
    out = {} if out is None else out
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            _flatten(v, key + ".", out)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
    return out


def delta(before, after):
    """Counter deltas of the "total" section: {"requests.read": n, ..., "user_data_bytes": n}.

    Maxima ("...max") and histograms (lists) are not counters and are left out.
    """
    a = _flatten((before or {}).get("total") or {})
    b = _flatten((after or {}).get("total") or {})
    return {k: b[k] - a.get(k, 0) for k in b if not k.endswith(".max")}


def per_io(d, bytes_per_io=None):
    """Per-I/O numbers from a delta; None where the statistics lack a counter.

    bytes_per_io is the workload's block size. A fio I/O larger than the device's request
    limit reaches the daemon as several requests, so "per I/O" numbers scale the daemon's
    per-byte ratios by it: user_bytes_per_io = user_data_bytes / bytes.total x bytes_per_io,
    and adapter_bytes_per_io likewise from adapter_copied_bytes (the snapshots bracket fio's
    ramp too; ratios within them are unaffected by it). user_data_bytes and
    adapter_copied_bytes are also returned as they are: the bytes between the snapshots.
    """
    reqs = d.get("requests.total")
    out = {"daemon_requests": reqs or 0, "user_bytes_per_io": None,
           "adapter_bytes_per_io": None, "daemon_requests_per_io": None,
           "daemon_syscalls_per_request": None, "adapter_copied_bytes_per_request": None,
           "daemon_requests_per_batch": None,
           "user_data_bytes": d.get("user_data_bytes"),
           "adapter_copied_bytes": d.get("adapter_copied_bytes")}
    if not reqs:
        return out
    data = d.get("bytes.total")
    if data and bytes_per_io:
        if d.get("user_data_bytes") is not None:
            out["user_bytes_per_io"] = d["user_data_bytes"] / data * bytes_per_io
        if d.get("adapter_copied_bytes") is not None:
            out["adapter_bytes_per_io"] = d["adapter_copied_bytes"] / data * bytes_per_io
        out["daemon_requests_per_io"] = reqs / data * bytes_per_io
    syscalls = [d[k] for k in ("syscalls.read", "syscalls.write", "syscalls.wait",
                               "syscalls.data") if k in d]
    if syscalls:
        out["daemon_syscalls_per_request"] = sum(syscalls) / reqs
    if d.get("adapter_copied_bytes") is not None:
        out["adapter_copied_bytes_per_request"] = d["adapter_copied_bytes"] / reqs
    batches = d.get("request_batches.count")
    if batches:
        out["daemon_requests_per_batch"] = d.get("request_batches.entries", 0) / batches
    return out
