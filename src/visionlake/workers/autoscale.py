"""Workers that follow the load on one machine: `visionlake worker --autoscale MIN:MAX`.

A supervisor samples the consumer group's lag (records on the log its members have not committed)
every `interval` seconds and decides from it alone, so the same figure serves an external autoscaler
(KEDA's Kafka scaler reads the same consumer-group lag):

- **add a worker** when the backlog is real (lag above `high`) and the workers are not winning:
  the lag did not fall over the last `window` samples, or at the rate they commit it would take
  longer than `max_drain` seconds to clear. Then no decision for `settle` seconds, while the new
  member joins the group and warms up;
- **remove a worker** when the lag stayed at or below `low` for `cooldown` seconds: the newest one
  gets SIGTERM, finishes the frame in hand, commits and leaves the group (nothing is lost or counted
  twice: the rest of its batch is re-read by the partition's next owner, whose writes are idempotent);
- never fewer than MIN or more than MAX; a worker that dies is replaced to keep MIN.

Every decision is logged with the lag and the rates that caused it. `Policy.decide` holds the rule,
apart from processes, so it can be read and tested on its own.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import InputError
from ..log.base import FrameLog

log = logging.getLogger("visionlake.autoscale")


@dataclass(frozen=True)
class Policy:
    """When to add and remove workers (counts in records, times in seconds)."""

    min_workers: int
    max_workers: int
    interval: float = 2.0
    high: int = 20
    low: int = 0
    window: int = 3
    max_drain: float = 30.0
    settle: float = 10.0
    cooldown: float = 30.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_workers <= self.max_workers <= 256:
            raise InputError(
                f"--autoscale needs 1 <= MIN <= MAX <= 256, got {self.min_workers}:{self.max_workers}"
            )
        if self.window < 2 or min(self.interval, self.max_drain, self.settle, self.cooldown) <= 0:
            raise InputError("autoscale window must be >= 2 samples and its times > 0")

    @classmethod
    def parse(cls, text: str, **settings: float) -> Policy:
        """`MIN:MAX`, e.g. `1:4`."""
        lo, sep, hi = text.partition(":")
        if not sep or not lo.strip().isdigit() or not hi.strip().isdigit():
            raise InputError(f"--autoscale takes MIN:MAX, e.g. 1:4; got {text!r}")
        return cls(int(lo), int(hi), **settings)

    def decide(self, samples: list[Sample], workers: int, now: float, last_change: float) -> Decision | None:
        """Add, remove or keep, from the lag samples so far (oldest first)."""
        if workers < self.min_workers:
            return Decision("up", f"{workers} workers, below the minimum {self.min_workers}")
        if not samples or now - last_change < self.settle:
            return None
        cur = samples[-1]
        if workers < self.max_workers and cur.lag > self.high and len(samples) >= self.window:
            past = samples[-self.window]
            rate = (cur.committed - past.committed) / max(cur.at - past.at, 1e-9)
            drain = cur.lag / rate if rate > 0 else float("inf")
            if cur.lag >= past.lag:
                return Decision(
                    "up", f"lag {cur.lag} did not fall in {cur.at - past.at:.0f} s (was {past.lag})"
                )
            if drain > self.max_drain:
                return Decision(
                    "up", f"lag {cur.lag} would take {drain:.0f} s to clear at {rate:.1f} records/s"
                )
        if workers > self.min_workers and now - last_change >= self.cooldown:
            recent = [s for s in samples if s.at >= now - self.cooldown]
            if (
                recent
                and recent[0].at <= now - self.cooldown + self.interval
                and all(s.lag <= self.low for s in recent)
            ):
                return Decision("down", f"lag at most {self.low} for {self.cooldown:.0f} s")
        return None


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    lag: int
    committed: int  # records the group has committed, over all partitions


@dataclass(frozen=True)
class Decision:
    action: str  # "up" | "down"
    reason: str


def group_lag(frame_log: FrameLog, group: str, topic: str, shared: bool = False) -> tuple[int, int]:
    """(lag, committed records) of `group` on `topic`: the same lag `log groups` shows.

    For a share group the committed offset is its start: every record before it is acknowledged.
    """
    info = next((t for t in frame_log.topics() if t.name == topic), None)
    if info is None:
        return 0, 0
    end = {p.partition: p.end_offset for p in info.partitions}
    start = {p.partition: p.start_offset for p in info.partitions}
    committed = (frame_log.share_offsets if shared else frame_log.group_offsets)(group, topic)
    lag = sum(max(0, e - committed.get(p, start[p])) for p, e in end.items())
    return lag, sum(committed.values())


@dataclass
class Supervisor:
    """Runs worker processes (`start()` makes one) and scales them with `policy`."""

    policy: Policy
    start: Callable[[int], subprocess.Popen]
    lag: Callable[[], tuple[int, int]]
    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=1000))
    workers: list[subprocess.Popen] = field(default_factory=list)
    finished: list[subprocess.Popen] = field(default_factory=list)
    decisions: list[dict] = field(default_factory=list)
    _stop: bool = False
    _started: int = 0

    def stop(self, *_args: object) -> None:
        self._stop = True

    def run(self, until_idle: float | None = None) -> list[subprocess.Popen]:
        """Supervise until stopped (or, with `until_idle`, until the lag stayed 0 that long with the
        minimum of workers); then stop every worker (SIGTERM) and return all that ran."""
        last_change = float("-inf")
        idle_since: float | None = None
        try:
            while not self._stop:
                now = time.monotonic()
                self._reap()
                try:
                    lag, committed = self.lag()
                except Exception as e:  # noqa: BLE001 - the log being away is a reason to wait, not to die
                    log.warning("autoscale: cannot read the group's lag (%s); trying again", e)
                    time.sleep(self.policy.interval)
                    continue
                self.samples.append(Sample(now, lag, committed))
                decision = self.policy.decide(list(self.samples), len(self.workers), now, last_change)
                if decision is not None:
                    self._apply(decision, lag)
                    last_change = time.monotonic()
                if until_idle is not None:
                    idle_since = (idle_since or now) if lag == 0 else None
                    if (
                        idle_since is not None
                        and now - idle_since >= until_idle
                        and (len(self.workers) <= self.policy.min_workers)
                    ):
                        break
                time.sleep(self.policy.interval)
        finally:
            for w in self.workers:
                if w.poll() is None:
                    w.send_signal(signal.SIGTERM)
            for w in self.workers:
                w.wait()
            self.finished += self.workers
            self.workers = []
        return self.finished

    def _apply(self, decision: Decision, lag: int) -> None:
        before = len(self.workers)
        if decision.action == "up":
            self.workers.append(self.start(self._started))
            self._started += 1
        else:
            newest = self.workers.pop()
            newest.send_signal(signal.SIGTERM)  # it finishes its frame, commits and leaves the group
            newest.wait()
            self.finished.append(newest)
        after = len(self.workers)
        self.decisions.append(
            {
                "at": time.time(),
                "action": decision.action,
                "workers": after,
                "lag": lag,
                "reason": decision.reason,
            }
        )
        log.info("autoscale: %d -> %d workers: %s", before, after, decision.reason)

    def _reap(self) -> None:
        """Workers that exited by themselves (a crash, a bad frame that killed a plugin) leave the pool."""
        for w in [w for w in self.workers if w.poll() is not None]:
            self.workers.remove(w)
            self.finished.append(w)
            log.warning("autoscale: worker pid %d exited with %s", w.pid, w.returncode)
