"""Workloads: names, the fio job file each runs, and the named sets.

A workload name says everything fio needs: <rw>-<bs>-qd<N>[-j<jobs>][-hipri], for example
randread-4k-qd1, randread-4k-qd32-j2, write-1m-qd4, randrw70-4k-qd16, verify-4k-qd16,
randread-4k-qd1-hipri (polled I/O: io_uring with IORING_SETUP_IOPOLL, fio's hipri).
A few workloads that do not fit that pattern have names of their own (NAMED, e.g.
write-1m-seq-verify). The job files in workloads/ are parameterised with ${VAR}; this
module maps a name to its file, section and variables. Sets (workloads/<name>.set) list
names and settings.
"""

import os
import re
from dataclasses import dataclass

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKLOADS_DIR = os.path.join(TOP, "workloads")

# rw -> (job file, section). randrw<P> and the QD1/QD>1 split are handled in job().
RW_KINDS = ("randread", "randwrite", "read", "write", "randrw<P>", "verify")
VERIFY_SIZE = "32M"  # bytes each verify job writes and checks

_NAME_RE = re.compile(r"^(?P<rw>[a-z]+(?:\d{1,2})?)-(?P<bs>\d+[km]?)-qd(?P<qd>\d+)"
                      r"(?:-j(?P<jobs>\d+))?(?P<hipri>-hipri)?$")

# Workloads with names of their own: name -> (rw, bs, iodepth, jobs, section of verify.fio,
# bytes per job: "device" for the whole device).
NAMED = {
    # 1 MiB sequential writes over the whole device, each block with a crc32c that fio reads
    # back and checks: the forwarding case's data path, both ways, with its integrity proven.
    "write-1m-seq-verify": ("verify", "1m", 4, 1, "write-seq", "device"),
}


class WorkloadError(ValueError):
    pass


@dataclass(frozen=True)
class Workload:
    name: str          # canonical name, e.g. randread-4k-qd1
    rw: str            # randread, randwrite, read, write, randrw, verify
    mix_read: int      # percentage of reads for randrw (0 otherwise)
    bs: str            # fio's spelling, e.g. 4k, 1m
    bs_bytes: int
    iodepth: int
    jobs: int
    section: str = None   # the job file's section, where the name alone does not say it
    size: str = None      # bytes each job moves: "device" (the whole device); None: default
    hipri: bool = False   # polled I/O (fio hipri: io_uring IOPOLL), randread/randwrite only

    @property
    def time_based(self):
        return self.rw != "verify"

    def job(self):
        """(job file path, section) that runs this workload."""
        if self.rw == "verify":
            name, section = "verify.fio", self.section or "verify"
        elif self.rw == "randrw":
            name, section = "mix.fio", "randrw"
        elif self.rw in ("read", "write"):
            name, section = "bandwidth.fio", self.rw
        elif self.iodepth == 1 and self.jobs == 1:
            name, section = "latency.fio", self.rw
        else:
            name, section = "scaling.fio", self.rw
        return os.path.join(WORKLOADS_DIR, name), section

    def env(self, dev, size, runtime, ramp):
        """The ${VAR} values of the job file, as strings."""
        if self.size == "device":
            per_job = str(size)
        else:
            per_job = VERIFY_SIZE if self.rw == "verify" else str(size)
        return {
            "DEV": dev,
            "SIZE": per_job,
            "RUNTIME": str(runtime),
            "RAMP": str(ramp),
            "BS": self.bs,
            "IODEPTH": str(self.iodepth),
            "NUMJOBS": str(self.jobs),
            "MIXREAD": str(self.mix_read or 0),
            "HIPRI": "1" if self.hipri else "0",
        }


def _bs_bytes(text):
    mult = {"": 1, "k": 1024, "m": 1024 * 1024}[text[-1] if text[-1] in "km" else ""]
    digits = text.rstrip("km")
    return int(digits) * mult


def parse(name):
    """Parse a workload name; raise WorkloadError saying what is wrong."""
    named = NAMED.get(name.strip().lower())
    if named:
        rw, bs, qd, jobs, section, size = named
        return Workload(name.strip().lower(), rw, 0, bs, _bs_bytes(bs), qd, jobs, section, size)
    m = _NAME_RE.match(name.strip().lower())
    if not m:
        raise WorkloadError(
            f"bad workload name {name!r}: expected <rw>-<bs>-qd<N>[-j<jobs>][-hipri] with rw one of "
            f"{', '.join(RW_KINDS)}, e.g. randread-4k-qd1, write-1m-qd4, randrw70-4k-qd16; "
            f"or one of {', '.join(NAMED)}")
    rw, bs = m.group("rw"), m.group("bs")
    qd, jobs = int(m.group("qd")), int(m.group("jobs") or 1)
    mix = 0
    mm = re.fullmatch(r"randrw(\d{1,2})", rw)
    if mm:
        mix = int(mm.group(1))
        if not 1 <= mix <= 99:
            raise WorkloadError(f"bad workload name {name!r}: randrw<P> needs P in 1..99")
        rw = "randrw"
    elif rw not in ("randread", "randwrite", "read", "write", "verify"):
        raise WorkloadError(f"bad workload name {name!r}: unknown rw {rw!r}; valid: "
                            f"{', '.join(RW_KINDS)}")
    bs_bytes = _bs_bytes(bs)
    if bs_bytes < 512 or bs_bytes % 512 or bs_bytes > 16 * 1024 * 1024:
        raise WorkloadError(f"bad workload name {name!r}: block size {bs} must be a multiple "
                            "of 512 bytes, at most 16m")
    if not 1 <= qd <= 4096:
        raise WorkloadError(f"bad workload name {name!r}: queue depth must be 1..4096")
    if not 1 <= jobs <= 64:
        raise WorkloadError(f"bad workload name {name!r}: jobs must be 1..64")
    hipri = bool(m.group("hipri"))
    if hipri and rw not in ("randread", "randwrite"):
        raise WorkloadError(f"bad workload name {name!r}: -hipri (polled I/O) is for randread "
                            "and randwrite")
    canon = f"{'randrw%d' % mix if rw == 'randrw' else rw}-{bs}-qd{qd}"
    if jobs > 1:
        canon += f"-j{jobs}"
    if hipri:
        canon += "-hipri"
    return Workload(canon, rw, mix, bs, bs_bytes, qd, jobs, hipri=hipri)


@dataclass
class WorkloadSet:
    name: str
    runtime: float
    ramp: float
    workloads: list


def set_names():
    try:
        return sorted(f[:-4] for f in os.listdir(WORKLOADS_DIR) if f.endswith(".set"))
    except OSError:
        return []


def load_set(name, directory=None):
    path = os.path.join(directory or WORKLOADS_DIR, f"{name}.set")
    if not os.path.isfile(path):
        raise WorkloadError(f"unknown workload set {name!r}; valid sets: "
                            f"{', '.join(set_names()) or 'none found in workloads/'}")
    settings = {"runtime": 5.0, "ramp": 1.0}
    names = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            key, eq, value = line.partition("=")
            if eq:
                if key.strip() not in settings:
                    raise WorkloadError(f"{path}:{n}: unknown setting {key.strip()!r}")
                settings[key.strip()] = float(value)
            else:
                names.append(parse(line))
    return WorkloadSet(name, settings["runtime"], settings["ramp"], names)


def known_names():
    """Every workload named in a set, in set order, without repeats."""
    out = []
    for name in set_names():
        try:
            for w in load_set(name).workloads:
                if w.name not in out:
                    out.append(w.name)
        except (WorkloadError, ValueError):
            continue
    return out


def _unknown(item):
    return WorkloadError(
        f"unknown workload {item!r}: give a set ({', '.join(set_names()) or 'none found'}) or "
        "a comma list of names <rw>-<bs>-qd<N>[-j<jobs>] (rw: " + ", ".join(RW_KINDS) + ") "
        "or " + ", ".join(NAMED) + "; the sets' workloads: " + ", ".join(known_names()))


def resolve(spec):
    """A set name or a comma list of workload names -> (workloads, runtime, ramp, set name).

    Runtime and ramp come from the set; a comma list gets those of the quick set.
    """
    spec = (spec or "quick").strip()
    if "," not in spec and spec in set_names():
        ws = load_set(spec)
        return ws.workloads, ws.runtime, ws.ramp, ws.name
    out, seen = [], set()
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        if not _NAME_RE.match(item.lower()) and item.lower() not in NAMED:
            raise _unknown(item)
        w = parse(item)
        if w.name not in seen:
            seen.add(w.name)
            out.append(w)
    if not out:
        raise WorkloadError("no workloads given: " + str(_unknown("")).split(": ", 1)[1])
    quick = load_set("quick") if "quick" in set_names() else WorkloadSet("", 4.0, 1.0, [])
    return out, quick.runtime, quick.ramp, None
