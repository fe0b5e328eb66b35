"""Timing and memory helpers for ``bench_speed.py``.

Everything that compares two ways of doing the same work measures them side by
side in one process: the methods take turns within each round (in a rotating
order, so none always runs first), and a ratio is computed inside every round
before the median over rounds is taken. Load from other processes then moves
numerator and denominator together instead of biasing one of them.
"""

import contextlib
import json
import os
import re
import resource
import statistics
import sys
import tempfile
import time

import torch

__all__ = [
    "Interleaved",
    "limit_threads",
    "peak_rss_during",
    "fmt_ratio",
    "fmt_time",
    "markdown_table",
    "median_iqr",
    "step_peak_bytes",
    "synchronizer",
]


def synchronizer(device):
    """A function that waits for queued work on ``device`` (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def median_iqr(values):
    """Median and half the interquartile range of ``values``."""
    values = sorted(values)
    if len(values) < 2:
        return values[0], 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return statistics.median(values), (q3 - q1) / 2


class Interleaved:
    """Time several callables in alternation.

    Parameters
    ----------
    fns : dict of str -> callable
        Each callable does one unit of work (one training step, one fit).
    sync : callable
        Called before reading the clock (waits for the device).
    target_s : float
        Each timed chunk repeats a callable this long (at least once), so that
        very short steps are not dominated by clock resolution.
    warmup : int
        Untimed calls of every callable before calibration (skipped for a
        callable whose first call already takes longer than ``slow_s``).
    budget_s : float or None
        Timed seconds after which a callable sits out the remaining rounds
        (after at least one round). Keeps very slow methods from dominating the
        run time; their ratios then rest on fewer rounds.
    slow_s : float
        See ``warmup``.
    clock : callable
        The clock: ``time.perf_counter`` (wall time, the default) or
        ``time.process_time`` (CPU time of this process, all its threads),
        which other processes' load on the machine does not inflate.
    calibrate : bool
        Run every callable once (plus ``warmup`` calls) before the rounds to
        choose how often a timed chunk repeats it. ``False``: each chunk is one
        call and nothing runs before the first round (for callables that take
        seconds, e.g. a whole fit, that warm up on their own).
    """

    def __init__(self, fns, sync, *, target_s=0.02, warmup=3, budget_s=None, slow_s=0.2,
                 clock=time.perf_counter, calibrate=True):
        self.fns = dict(fns)
        self.sync = sync
        self.target_s = target_s
        self.warmup = warmup
        self.budget_s = budget_s
        self.slow_s = slow_s
        self.clock = clock
        self.inner = {} if calibrate else dict.fromkeys(self.fns, 1)
        self.times = {name: [] for name in self.fns}

    def _chunk(self, fn, n):
        self.sync()
        start = self.clock()
        for _ in range(n):
            fn()
        self.sync()
        return (self.clock() - start) / n

    def calibrate(self):
        for name, fn in self.fns.items():
            one = self._chunk(fn, 1)
            if one < self.slow_s:
                for _ in range(self.warmup):
                    fn()
                one = min(self._chunk(fn, 1) for _ in range(2))
            self.inner[name] = max(1, min(1000, round(self.target_s / max(one, 1e-7))))
        return self

    def run(self, rounds):
        """Run ``rounds`` rounds; return per-call seconds (``None``: sat out)."""
        if not self.inner:
            self.calibrate()
        names = list(self.fns)
        spent = dict.fromkeys(names, 0.0)
        for r in range(rounds):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                if self.budget_s is not None and r and spent[name] > self.budget_s:
                    self.times[name].append(None)
                    continue
                t = self._chunk(self.fns[name], self.inner[name])
                spent[name] += t * self.inner[name]
                self.times[name].append(t)
        return self.times

    def median(self, name):
        return median_iqr([t for t in self.times[name] if t is not None])[0]

    def ratios(self, base):
        """Per-round ratio of every callable's time to ``base``'s time."""
        return {
            name: [t / b for t, b in zip(ts, self.times[base])
                   if t is not None and b is not None]
            for name, ts in self.times.items()
        }


@contextlib.contextmanager
def _quiet_stderr():
    """Silence C++-level writes to stderr (the profiler's start/stop banners)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def step_peak_bytes(step, device, before=None):
    """Peak bytes allocated by torch during one call of ``step``, above the start.

    On CUDA this reads ``torch.cuda.max_memory_allocated``. On CPU ``tracemalloc``
    does not see torch's allocations; the torch profiler does (it records every
    allocation and release of torch's CPU allocator), so the peak is the maximum
    of the running sum of those events. Scratch memory that libraries such as
    oneDNN allocate on their own is not counted.

    Parameters
    ----------
    step : callable
        One training step.
    device : str or torch.device
    before : callable, optional
        Run before the measurement starts (e.g. to release gradients).

    Returns
    -------
    resident : int or None
        Bytes allocated when the step starts (CUDA only; ``None`` on CPU).
    peak_extra : int
        Peak bytes above that level during the step.
    """
    if before is not None:
        before()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        resident = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return resident, torch.cuda.max_memory_allocated() - resident

    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU],
                                  profile_memory=True) as prof:
        step()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    finally:
        os.unlink(path)
    memory = [
        e for e in events
        if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type") == 0
    ]
    memory.sort(key=lambda e: (e["ts"], e["args"].get("Ev Idx", 0)))
    running = peak = 0
    for event in memory:
        running += event["args"]["Bytes"]
        peak = max(peak, running)
    return None, peak


def limit_threads(n):
    """Run torch, and the BLAS and OpenMP pools of numpy and scikit-learn, on ``n`` threads.

    Returns the ``threadpoolctl`` limiter (keep it alive), or ``None`` when
    ``threadpoolctl`` is not installed (then only torch is limited).
    """
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=n)


def _status_bytes(field):
    with open("/proc/self/status") as f:
        match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def peak_rss_during(fn):
    """Resident memory of this process before ``fn()`` and its peak while ``fn()`` runs.

    On Linux the kernel's high-water mark of the resident set (``VmHWM``) is
    reset first (writing ``5`` to ``/proc/self/clear_refs``), so the peak is the
    one reached during ``fn()``. Where that is not possible, the peak is
    ``ru_maxrss``, the process's lifetime peak, which may predate ``fn()``.

    Returns
    -------
    before, peak : int
        Bytes.
    exact : bool
        Whether the high-water mark could be reset.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        exact = True
    except OSError:
        exact = False
    before = _status_bytes("VmRSS") if exact else None
    if before is None:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    fn()
    peak = _status_bytes("VmHWM") if exact else None
    if peak is None:
        exact = False
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return before, peak, exact


def fmt_ratio(values):
    """``1.23x ±0.02`` from per-round ratios (median, half the IQR)."""
    med, spread = median_iqr(values)
    if med >= 100:
        return f"{med:.0f}x" + (f" ±{spread:.0f}" if len(values) > 1 else " (1 round)")
    if med >= 10:
        return f"{med:.1f}x" + (f" ±{spread:.1f}" if len(values) > 1 else " (1 round)")
    return f"{med:.2f}x ±{spread:.2f}"


def fmt_time(seconds):
    """Seconds in a readable unit."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


def markdown_table(headers, rows):
    """A GitHub-flavoured markdown table."""
    rows = [[str(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join([line, sep, *body])
