"""How many records a worker asks for at each poll.

Each batch pays a fixed cost once (one catalog transaction, one event flush, one offset commit), so
big batches are cheaper per frame; but a batch's results reach the catalog only when the whole batch
is done. The sizer therefore asks for about `seconds` of work: a fast detector (a few ms a frame)
gets batches of up to `cap` records, a slow one (hundreds of ms) gets a frame or two, and results
keep coming at that pace while a backlog drains. A live stream polls what has arrived, so its
batches stay small whatever the sizer says.
"""

from __future__ import annotations

from ..errors import InputError

#: Records per poll at most (`worker --batch-size`).
DEFAULT_BATCH_SIZE = 32
#: Work per batch aimed at, in seconds (`worker --batch-seconds`); 0 always asks for the cap.
DEFAULT_BATCH_SECONDS = 0.5
#: The first batch, before the detector's speed is known.
FIRST_BATCH = 8


class BatchSizer:
    """The next poll's size from the time the last batches took per record."""

    def __init__(self, cap: int = DEFAULT_BATCH_SIZE, seconds: float = DEFAULT_BATCH_SECONDS) -> None:
        if cap < 1:
            raise InputError(f"batch size must be at least 1, not {cap}")
        if seconds < 0:
            raise InputError(f"batch seconds must be 0 or more, not {seconds}")
        self.cap = cap
        self.seconds = seconds
        self.per_record: float | None = None  # seconds, a moving average over recent batches

    def next(self) -> int:
        if self.seconds == 0:
            return self.cap
        if self.per_record is None:
            return min(self.cap, FIRST_BATCH)
        return max(1, min(self.cap, int(self.seconds / self.per_record)))

    def observe(self, records: int, seconds: float) -> None:
        """A batch of `records` took `seconds` (from the poll's return to the commit)."""
        if records <= 0 or seconds <= 0:
            return
        per = seconds / records
        self.per_record = per if self.per_record is None else 0.5 * self.per_record + 0.5 * per
