"""Which snapshots ``prune`` keeps: restic's ``forget`` policy plus a total-size cap. Pure, no I/O.

Rules (restic semantics): ``keep_last N`` keeps the N newest snapshots; ``keep_hourly/daily/weekly/
monthly/yearly N`` walk the snapshots newest first and keep the newest one in each of the N most
recent hours/days/ISO weeks/months/years that *have* snapshots (empty periods are not counted);
buckets are in UTC. ``keep_within D`` keeps every snapshot taken at or after ``now - D``. A
snapshot kept by any rule is kept, and its reasons accumulate. A count of 0 (or None) is no rule.

Whatever the policy, these are always kept ("protected"), also under ``max_size``: the newest
snapshot, every pinned snapshot, the last safe point before the current schema -- the newest
snapshot whose Alembic heads differ from ``current_revision`` (skipped when that is empty) -- and
every snapshot the caller names in ``needed`` (what recovery needs: an unfinished run's safety
snapshot). One call plans one database's snapshots: the caller groups them.

``max_size`` (spatie/laravel-backup's cap) applies last: while the kept snapshots' ``stored_bytes``
add up to more than it, the oldest unprotected kept snapshot is removed. With no keep rule at all
but a ``max_size``, every snapshot starts kept ("within max size") and only the cap removes any.
An empty policy (nothing set) removes nothing; the caller refuses to prune with it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from ..errors import UsageError


@dataclass(frozen=True)
class SnapshotInfo:
    id: str
    created_at: datetime  # timezone-aware
    stored_bytes: int  # bytes this snapshot added to the repository (roughly what removing it frees)
    pinned: bool = False
    revision: tuple[str, ...] = ()  # the database's Alembic heads when it was taken


@dataclass(frozen=True)
class RetentionPolicy:
    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    keep_within: timedelta | None = None
    max_size: int | None = None  # bytes; applied after the rules above

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and value < (timedelta(0) if f.name == "keep_within" else 0):
                raise UsageError(f"{f.name.replace('_', '-')} must not be negative, got {value}")

    @property
    def has_rules(self) -> bool:
        """Whether any keep rule (not counting ``max_size``) is set."""
        return any(getattr(self, f.name) for f in fields(self) if f.name != "max_size")

    @property
    def empty(self) -> bool:
        return not self.has_rules and self.max_size is None


@dataclass
class PrunePlan:
    keep: dict[str, list[str]] = field(default_factory=dict)  # id -> reasons, oldest first
    remove: list[str] = field(default_factory=list)  # ids, oldest first


# name, bucket key, label for the reason
_CALENDAR: list[tuple[str, Callable[[datetime], object], Callable[[datetime], str]]] = [
    ("hourly", lambda t: (t.date(), t.hour), lambda t: t.strftime("%Y-%m-%d %H:00")),
    ("daily", lambda t: t.date(), lambda t: t.strftime("%Y-%m-%d")),
    ("weekly", lambda t: t.isocalendar()[:2], lambda t: "{:d}-W{:02d}".format(*t.isocalendar()[:2])),
    ("monthly", lambda t: (t.year, t.month), lambda t: t.strftime("%Y-%m")),
    ("yearly", lambda t: t.year, lambda t: str(t.year)),
]


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"naive datetime {t.isoformat()}: retention needs timezone-aware times")
    return t.astimezone(UTC)


def plan_prune(
    snapshots: Sequence[SnapshotInfo],
    policy: RetentionPolicy,
    *,
    now: datetime,
    current_revision: tuple[str, ...] = (),
    needed: Mapping[str, str] | None = None,
) -> PrunePlan:
    ids = [s.id for s in snapshots]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate snapshot ids")
    when = {s.id: _utc(s.created_at) for s in snapshots}
    newest_first = sorted(snapshots, key=lambda s: (when[s.id], s.id), reverse=True)
    reasons: dict[str, list[str]] = {s.id: [] for s in newest_first}

    # Protected: the newest, the pinned, the last one before the current revision was reached.
    protected: set[str] = set()

    def protect(s: SnapshotInfo, reason: str) -> None:
        protected.add(s.id)
        reasons[s.id].append(reason)

    if newest_first:
        protect(newest_first[0], "newest")
    for s in newest_first:
        if needed and s.id in needed:
            protect(s, needed[s.id])
    for s in newest_first:
        if s.pinned:
            protect(s, "pinned")
    if current_revision:
        current = sorted(current_revision)
        before = next((s for s in newest_first if sorted(s.revision) != current), None)
        if before is not None:
            protect(before, f"last before current revision {','.join(current_revision)}")

    if policy.empty:
        for s in newest_first:
            reasons[s.id].append("no policy")
    elif not policy.has_rules:
        for s in newest_first:
            reasons[s.id].append("within max size")
    else:
        for rank, s in enumerate(newest_first[: policy.keep_last or 0], 1):
            reasons[s.id].append(f"last {rank}")
        for name, key, label in _CALENDAR:
            left, previous = getattr(policy, f"keep_{name}") or 0, None
            for s in newest_first:
                if not left:
                    break
                if (k := key(when[s.id])) != previous:
                    reasons[s.id].append(f"{name} {label(when[s.id])}")
                    left, previous = left - 1, k
        if policy.keep_within:
            cutoff = _utc(now) - policy.keep_within
            for s in newest_first:
                if when[s.id] >= cutoff:
                    reasons[s.id].append(f"within {format_duration(policy.keep_within)}")

    oldest_first = newest_first[::-1]
    if policy.max_size is not None:
        total = sum(s.stored_bytes for s in oldest_first if reasons[s.id])
        for s in oldest_first:
            if total <= policy.max_size:
                break
            if reasons[s.id] and s.id not in protected:
                reasons[s.id] = []
                total -= s.stored_bytes

    return PrunePlan(
        keep={s.id: reasons[s.id] for s in oldest_first if reasons[s.id]},
        remove=[s.id for s in oldest_first if not reasons[s.id]],
    )


# --- durations and sizes, as written on the command line or in the config --------------------------

_DURATION_UNITS = {
    "y": timedelta(days=365),
    "mo": timedelta(days=30),
    "w": timedelta(weeks=1),
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
}
_DURATION_HELP = "e.g. 90m, 36h, 7d, 2w, 1y6mo3d (y=365d, mo=30d, w=7d, m=minutes; largest unit first)"


def parse_duration(text: str) -> timedelta:
    """``90m``, ``36h``, ``7d``, ``2w``, ``1y6mo3d``: fixed-length units, largest first, each once.

    ``y`` is 365 days and ``mo`` 30 days (not calendar arithmetic as in restic); ``m`` is always
    minutes, so ``1y6m3d`` is refused with a hint rather than read as six minutes.
    """
    s = text.strip().lower()
    parts = re.findall(r"(\d+)(mo|[ywdhm])", s)
    if not s or "".join(n + u for n, u in parts) != s:
        raise UsageError(f"bad duration {text!r}: {_DURATION_HELP}")
    order = [list(_DURATION_UNITS).index(u) for _, u in parts]
    if any(a >= b for a, b in zip(order, order[1:], strict=False)):
        hint = "; 'm' is minutes, write 'mo' for months" if any(u == "m" for _, u in parts[:-1]) else ""
        raise UsageError(f"bad duration {text!r}: units must go from largest to smallest, each once{hint}")
    total = sum((int(n) * _DURATION_UNITS[u] for n, u in parts), timedelta())
    if not total:
        raise UsageError(f"bad duration {text!r}: must be more than zero")
    return total


def format_duration(d: timedelta) -> str:
    """The shortest ``parse_duration`` spelling in days/hours/minutes (``7d``, ``1d12h``, ``90m``)."""
    minutes = int(d.total_seconds() // 60)
    days, rest = divmod(minutes, 1440)
    out = "".join(f"{n}{u}" for n, u in ((days, "d"), (rest // 60, "h"), (rest % 60, "m")) if n)
    return out or f"{int(d.total_seconds())}s"


_SIZE_UNITS = {"": 1, "b": 1}
for _i, _p in enumerate("kmgt", 1):
    _SIZE_UNITS |= {_p: 1024**_i, _p + "ib": 1024**_i, _p + "b": 1000**_i}


def parse_size(text: str) -> int:
    """Bytes from ``2048``, ``500MB``, ``1.5GiB``, ``10G``. Case-insensitive; fractions round down.

    ``KB/MB/GB/TB`` are decimal (1000-based), ``KiB/MiB/GiB/TiB`` and bare ``K/M/G/T`` binary
    (1024-based, as restic reads them).
    """
    m = re.fullmatch(r"(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)", text.strip().lower())
    if not m or m[2] not in _SIZE_UNITS:
        raise UsageError(f"bad size {text!r}: e.g. 2048, 500MB, 1.5GiB, 10G (KB=1000 bytes, KiB=K=1024 bytes)")
    return int(Decimal(m[1]) * _SIZE_UNITS[m[2]])
