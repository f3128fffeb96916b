"""Reading fio's JSON output (fio --output-format=json) into the harness's numbers.

The job files report with group_reporting (one entry per job section) and
unified_rw_reporting=both, so each job has read, write and "mixed" (both directions
together) statistics. The harness's numbers are the mixed ones; without a mixed entry
(other job files, older fio) they are combined from read, write and trim, and
percentiles then come from the direction with the most I/Os (marked approximate).
"""

import json

PERCENTILES = {"p50": "50.000000", "p99": "99.000000", "p999": "99.900000"}
DIRECTIONS = ("read", "write", "trim")
MIB = 1024 * 1024


class FioResultError(ValueError):
    pass


def load_text(text):
    """Parse fio's JSON, skipping anything fio printed before it (warnings)."""
    start = text.find("{")
    if start < 0:
        raise FioResultError("no JSON in fio's output")
    try:
        return json.loads(text[start:])
    except ValueError as e:
        raise FioResultError(f"fio's JSON does not parse: {e}") from None


def load(path):
    with open(path, errors="replace") as f:
        return load_text(f.read())


def _percentile(clat, key):
    pct = clat.get("percentile") or {}
    v = pct.get(key)
    if v is None:  # fio spells them with six decimals; accept any spelling
        want = float(key)
        for k, val in pct.items():
            try:
                if abs(float(k) - want) < 1e-9:
                    v = val
                    break
            except ValueError:
                continue
    return None if v is None else v / 1000.0


def _stats_of(d):
    clat = d.get("clat_ns") or {}
    out = {
        "ios": d.get("total_ios", 0),
        "io_bytes": d.get("io_bytes", 0),
        "iops": d.get("iops", 0.0),
        "bw_mibps": d.get("bw_bytes", 0) / MIB,
        "runtime_ms": d.get("runtime", 0),
        "lat_mean_us": clat.get("mean", 0.0) / 1000.0 if clat.get("N") else None,
        "lat_total_mean_us": (d["lat_ns"]["mean"] / 1000.0
                              if (d.get("lat_ns") or {}).get("N") else None),
    }
    for name, key in PERCENTILES.items():
        out[f"lat_{name}_us"] = _percentile(clat, key) if clat.get("N") else None
    return out


def _sum_parts(parts):
    """Directions of a job, or jobs of a run, as one: counts and rates add up, the window is
    the longest, mean latencies are weighted by I/Os."""
    ios = sum(p["ios"] for p in parts)

    def weighted(key):
        return sum((p[key] or 0) * p["ios"] for p in parts) / ios if ios else None

    return {
        "ios": ios,
        "io_bytes": sum(p["io_bytes"] for p in parts),
        "iops": sum(p["iops"] for p in parts),
        "bw_mibps": sum(p["bw_mibps"] for p in parts),
        "runtime_ms": max(p["runtime_ms"] for p in parts),
        "lat_mean_us": weighted("lat_mean_us"),
        "lat_total_mean_us": weighted("lat_total_mean_us"),
    }


def job_metrics(job):
    """The numbers of one fio job entry (read and write together)."""
    mixed = job.get("mixed")
    if mixed and mixed.get("total_ios", 0) > 0:
        m = _stats_of(mixed)
        m["combined_from"] = "mixed"
    else:
        parts = [_stats_of(job[d]) for d in DIRECTIONS if d in job and job[d].get("total_ios", 0)]
        if not parts:
            m = {"ios": 0, "io_bytes": 0, "iops": 0.0, "bw_mibps": 0.0, "runtime_ms": 0,
                 "lat_mean_us": None, "lat_total_mean_us": None, "lat_p50_us": None,
                 "lat_p99_us": None, "lat_p999_us": None, "combined_from": "none"}
        else:
            main = max(parts, key=lambda p: p["ios"])
            m = _sum_parts(parts)
            for name in PERCENTILES:
                m[f"lat_{name}_us"] = main[f"lat_{name}_us"]
            m["combined_from"] = "+".join(d for d in DIRECTIONS
                                          if d in job and job[d].get("total_ios", 0))
            if len(parts) > 1:
                m["combined_from"] += " (percentiles of the larger direction)"
    # fio's own accounting, for reference: % of the job's runtime, summed over its threads
    m["fio_usr_cpu_pct"] = job.get("usr_cpu")
    m["fio_sys_cpu_pct"] = job.get("sys_cpu")
    m["fio_ctx"] = job.get("ctx")
    m["error"] = job.get("error", 0)
    return m


def metrics(doc):
    """The numbers of a whole fio run: one job entry, or several summed.

    Returns a dict with ios, iops, bw_mibps, lat_mean_us, lat_p50_us, lat_p99_us,
    lat_p999_us (completion latency, microseconds), lat_total_mean_us (submission and
    completion: what one I/O costs the application; at QD1 about 1/IOPS), runtime_ms (the
    measured window), end_s (when fio wrote its report, seconds since the epoch), version,
    error.
    """
    jobs = doc.get("jobs") or []
    if not jobs:
        raise FioResultError("fio's JSON has no jobs")
    per = [job_metrics(j) for j in jobs]
    if len(per) == 1:
        m = dict(per[0])
    else:
        m = _sum_parts(per)
        m.update({
            "combined_from": f"{len(per)} jobs (percentiles: the largest)",
            "fio_usr_cpu_pct": None, "fio_sys_cpu_pct": None,
            "fio_ctx": sum(p["fio_ctx"] or 0 for p in per),
            "error": next((p["error"] for p in per if p["error"]), 0),
        })
        for name in PERCENTILES:
            vals = [p[f"lat_{name}_us"] for p in per if p[f"lat_{name}_us"] is not None]
            m[f"lat_{name}_us"] = max(vals) if vals else None
    m["version"] = doc.get("fio version")
    ts = doc.get("timestamp_ms")
    m["end_s"] = ts / 1000.0 if ts else doc.get("timestamp")
    return m
