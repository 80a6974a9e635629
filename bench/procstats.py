"""CPU time and memory of processes, from /proc, for the benchmarks' per-process costs.

On a two-core host the load generator, the API, the operator, the control plane and
(with the s3 backend) the S3 server all share the cores, so throughput alone cannot say
which of them a job waits for. CPU time per job (or per request) of each process can,
and it does not depend on what else the host happens to run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process (all its threads) so far; None once it
    is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Fields after the parenthesised command name (which may hold spaces); utime and
    # stime are fields 14 and 15 of the whole line.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident) in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def pid_from_file(path: Path) -> int | None:
    """The PID a pidfile names while that process lives (plane and S3 server pidfiles)."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if cpu_seconds(pid) is not None else None


class CpuMeter:
    """CPU seconds each named process spends between construction and `stop()`."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self.started = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        """Seconds per process; a process that died meanwhile is left out rather than
        reported with a meaningless difference."""
        spent = {}
        for name, pid in self.pids.items():
            now, then = cpu_seconds(pid), self.started[name]
            if now is not None and then is not None:
                spent[name] = now - then
        return spent


def per_unit_ms(seconds: Mapping[str, float], units: int) -> dict[str, float]:
    """CPU-ms per job or per request of each process, plus their sum as `total`."""
    per = {name: round(1000 * value / max(units, 1), 3) for name, value in seconds.items()}
    per["total"] = round(sum(per.values()), 3)
    return per
