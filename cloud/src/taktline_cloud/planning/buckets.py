"""Time buckets of a plan: a past-due bucket, then equal periods of days from a start date."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

PAST_DUE = 0


@dataclass(frozen=True, slots=True)
class Buckets:
    """Bucket 0 holds everything dated before `start`; bucket k (1..count) covers the k-th period.

    Buckets are indices, not objects, so a plan's rows are plain tuples indexed by bucket.
    """

    start: date
    days: int
    count: int

    def __post_init__(self) -> None:
        if isinstance(self.start, datetime):
            raise ValueError("the plan starts on a date, not a datetime")
        if self.days < 1 or self.count < 1:
            raise ValueError("buckets need at least one day and one period")

    @property
    def size(self) -> int:
        """The number of buckets including the past-due one: the length of every row."""
        return self.count + 1

    @property
    def end(self) -> date:
        """The first day after the horizon."""
        return self.start + timedelta(days=self.days * self.count)

    def index(self, when: date) -> int | None:
        """The bucket of a date (an aware datetime by its UTC date); None past the horizon."""
        if isinstance(when, datetime):
            if when.tzinfo is None:
                raise ValueError("naive datetime: planning dates are aware UTC datetimes")
            when = when.astimezone(UTC).date()
        offset = (when - self.start).days
        if offset < 0:
            return PAST_DUE
        bucket = offset // self.days + 1
        return bucket if bucket <= self.count else None

    def first_day(self, bucket: int) -> date:
        """The first day of a bucket; the past-due bucket reports the day before the start."""
        if bucket == PAST_DUE:
            return self.start - timedelta(days=1)
        return self.start + timedelta(days=self.days * (bucket - 1))

    def lead_buckets(self, days: int) -> int:
        """A lead time in days as whole buckets, rounded up (a 3-day lead in weeks is one week)."""
        return -(-days // self.days)
