"""Retention for ``prune`` (backup/retention.py): restic's keep rules, protections, the size cap, and
the duration / size parsers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from migrate_guard.backup.retention import (
    PrunePlan,
    RetentionPolicy,
    SnapshotInfo,
    format_duration,
    parse_duration,
    parse_size,
    plan_prune,
)
from migrate_guard.errors import EXIT_USAGE, UsageError

UTC = UTC
NOW = datetime(2027, 1, 10, 12, 0, tzinfo=UTC)


def snap(
    when: str, size: int = 100, pinned: bool = False, revision: tuple[str, ...] = ("0005",), sid: str | None = None
) -> SnapshotInfo:
    """A snapshot whose id is its timestamp ``YYYY-MM-DD HH:MM`` (UTC) unless given."""
    t = datetime.fromisoformat(when).replace(tzinfo=UTC)
    return SnapshotInfo(sid or when, t, size, pinned, revision)


def snaps(*whens: str) -> list[SnapshotInfo]:
    return [snap(w) for w in whens]


def kept(plan: PrunePlan) -> list[str]:
    return list(plan.keep)


# --- calendar rules, one rule at a time; ids listed oldest first --------------------------------

CALENDAR_CASES = [
    pytest.param(
        RetentionPolicy(keep_daily=2),
        ["2026-11-23 08:00", "2026-11-24 01:00", "2026-11-24 09:00", "2026-11-24 23:59"],
        ["2026-11-23 08:00", "2026-11-24 23:59"],
        id="several-a-day-newest-of-day-kept",
    ),
    pytest.param(
        RetentionPolicy(keep_daily=3),
        ["2026-11-01 10:00", "2026-11-10 10:00", "2026-11-20 10:00", "2026-11-21 10:00"],
        ["2026-11-10 10:00", "2026-11-20 10:00", "2026-11-21 10:00"],
        id="days-without-snapshots-not-counted",
    ),
    pytest.param(
        RetentionPolicy(keep_daily=2),
        ["2026-11-24 23:59", "2026-11-25 00:00", "2026-11-25 00:01"],
        ["2026-11-24 23:59", "2026-11-25 00:01"],
        id="midnight-utc-boundary",
    ),
    pytest.param(
        RetentionPolicy(keep_hourly=2),
        ["2026-03-29 00:30", "2026-03-29 01:10", "2026-03-29 01:50", "2026-03-29 02:05"],
        ["2026-03-29 01:50", "2026-03-29 02:05"],
        id="hourly-utc-no-dst-gap",  # 01:xx UTC on the EU DST switch day is an ordinary hour
    ),
    pytest.param(
        RetentionPolicy(keep_monthly=2),
        ["2026-01-30 10:00", "2026-01-31 23:00", "2026-02-01 00:00", "2026-02-28 10:00"],
        ["2026-01-31 23:00", "2026-02-28 10:00"],
        id="month-end-jan31-to-feb",
    ),
    pytest.param(
        RetentionPolicy(keep_daily=3),
        ["2028-02-28 10:00", "2028-02-29 09:00", "2028-02-29 10:00", "2028-03-01 10:00"],
        ["2028-02-28 10:00", "2028-02-29 10:00", "2028-03-01 10:00"],
        id="leap-day-is-its-own-day",
    ),
    pytest.param(
        RetentionPolicy(keep_monthly=1),
        ["2028-02-29 10:00", "2028-03-01 10:00"],
        ["2028-03-01 10:00"],
        id="leap-day-in-february",
    ),
    pytest.param(
        # 2026-12-28 .. 2027-01-03 is ISO week 2026-W53: one weekly bucket across the year boundary.
        RetentionPolicy(keep_weekly=2),
        ["2026-12-25 10:00", "2026-12-31 10:00", "2027-01-01 10:00", "2027-01-03 23:00"],
        ["2026-12-25 10:00", "2027-01-03 23:00"],
        id="iso-week-53-spans-new-year",
    ),
    pytest.param(
        RetentionPolicy(keep_weekly=2),
        ["2027-01-03 23:59", "2027-01-04 00:00"],  # Sunday of W53, Monday of 2027-W01
        ["2027-01-03 23:59", "2027-01-04 00:00"],
        id="iso-week-starts-monday",
    ),
    pytest.param(
        # ... while the calendar year does split there.
        RetentionPolicy(keep_yearly=2),
        ["2026-06-01 10:00", "2026-12-31 10:00", "2027-01-01 10:00"],
        ["2026-12-31 10:00", "2027-01-01 10:00"],
        id="yearly-splits-week-53",
    ),
    pytest.param(
        RetentionPolicy(keep_last=10),
        ["2026-11-01 10:00", "2026-11-02 10:00"],
        ["2026-11-01 10:00", "2026-11-02 10:00"],
        id="keep-last-more-than-there-are",
    ),
    pytest.param(
        RetentionPolicy(keep_last=2),
        ["2026-11-01 10:00", "2026-11-01 11:00", "2026-11-01 12:00"],
        ["2026-11-01 11:00", "2026-11-01 12:00"],
        id="keep-last-counts-snapshots-not-days",
    ),
    pytest.param(
        RetentionPolicy(keep_yearly=5),
        ["2020-05-01 10:00", "2024-05-01 10:00", "2024-06-01 10:00"],
        ["2020-05-01 10:00", "2024-06-01 10:00"],
        id="yearly-more-buckets-than-years",
    ),
]


@pytest.mark.parametrize(("policy", "whens", "expected"), CALENDAR_CASES)
def test_calendar_rules(policy: RetentionPolicy, whens: list[str], expected: list[str]) -> None:
    plan = plan_prune(snaps(*whens), policy, now=NOW)
    assert kept(plan) == expected
    assert plan.remove == [w for w in whens if w not in expected]


def test_input_order_does_not_matter_and_output_is_oldest_first() -> None:
    whens = ["2026-11-24 10:00", "2026-11-20 10:00", "2026-11-22 10:00", "2026-11-21 10:00"]
    plan = plan_prune(snaps(*whens), RetentionPolicy(keep_last=2), now=NOW)
    assert kept(plan) == ["2026-11-22 10:00", "2026-11-24 10:00"]
    assert plan.remove == ["2026-11-20 10:00", "2026-11-21 10:00"]


def test_reasons() -> None:
    whens = ["2026-11-23 08:00", "2026-11-24 09:00", "2026-11-24 23:00"]
    policy = RetentionPolicy(keep_last=1, keep_hourly=1, keep_daily=2, keep_weekly=1, keep_monthly=1, keep_yearly=1)
    plan = plan_prune(snaps(*whens), policy, now=NOW)
    assert plan.keep == {
        "2026-11-23 08:00": ["daily 2026-11-23"],
        "2026-11-24 23:00": [
            "newest",
            "last 1",
            "hourly 2026-11-24 23:00",
            "daily 2026-11-24",
            "weekly 2026-W48",
            "monthly 2026-11",
            "yearly 2026",
        ],
    }
    assert plan.remove == ["2026-11-24 09:00"]


def test_keep_last_reason_is_rank() -> None:
    whens = ["2026-11-01 10:00", "2026-11-02 10:00", "2026-11-03 10:00"]
    plan = plan_prune(snaps(*whens), RetentionPolicy(keep_last=3), now=NOW)
    assert [r[-1] for r in plan.keep.values()] == ["last 3", "last 2", "last 1"]


def test_week_label_uses_iso_year() -> None:
    plan = plan_prune(snaps("2027-01-01 10:00"), RetentionPolicy(keep_weekly=1), now=NOW)
    assert plan.keep["2027-01-01 10:00"] == ["newest", "weekly 2026-W53"]


def test_buckets_are_utc_whatever_the_input_zone() -> None:
    plus2 = timezone(timedelta(hours=2))
    # 2026-11-25 01:00 at +02:00 is 2026-11-24 23:00 UTC: same UTC day as the other one.
    a = SnapshotInfo("a", datetime(2026, 11, 24, 12, 0, tzinfo=UTC), 1)
    b = SnapshotInfo("b", datetime(2026, 11, 25, 1, 0, tzinfo=plus2), 1)
    plan = plan_prune([a, b], RetentionPolicy(keep_daily=1), now=NOW)
    assert plan.keep == {"b": ["newest", "daily 2026-11-24"]}
    assert plan.remove == ["a"]


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        plan_prune([SnapshotInfo("a", datetime(2026, 1, 1), 1)], RetentionPolicy(keep_last=1), now=NOW)


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        twins = [snap("2026-01-01 10:00", sid="x"), snap("2026-01-02 10:00", sid="x")]
        plan_prune(twins, RetentionPolicy(keep_last=1), now=NOW)


# --- keep_within, combined rules ---------------------------------------------------------------


def test_keep_within_is_relative_to_now_and_inclusive() -> None:
    whens = ["2027-01-03 11:59", "2027-01-03 12:00", "2027-01-09 12:00"]
    plan = plan_prune(snaps(*whens), RetentionPolicy(keep_within=timedelta(days=7)), now=NOW)
    assert plan.keep == {
        "2027-01-03 12:00": ["within 7d"],
        "2027-01-09 12:00": ["newest", "within 7d"],
    }
    assert plan.remove == ["2027-01-03 11:59"]


def test_keep_within_nothing_recent_still_keeps_newest() -> None:
    policy = RetentionPolicy(keep_within=timedelta(hours=36))
    plan = plan_prune(snaps("2020-01-01 10:00", "2020-01-02 10:00"), policy, now=NOW)
    assert plan.keep == {"2020-01-02 10:00": ["newest"]}
    assert plan.remove == ["2020-01-01 10:00"]


def test_combined_rules_union_and_reasons_accumulate() -> None:
    # Daily snapshots for 40 days up to 2027-01-09; keep 3 last, 7 daily, 4 weekly, 3 monthly.
    start = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    times = [start + timedelta(days=i) for i in range(40)]
    all_snaps = [SnapshotInfo(t.strftime("%m-%d"), t, 1) for t in times]
    policy = RetentionPolicy(keep_last=3, keep_daily=7, keep_weekly=4, keep_monthly=3)
    plan = plan_prune(all_snaps, policy, now=NOW)
    assert kept(plan) == [
        "12-20",  # weekly 2026-W51 (the 4th week: W01, W53, W52, W51)
        "12-27",  # weekly 2026-W52
        "12-31",  # monthly 2026-12 (only two months have snapshots, so monthly=3 keeps two)
        "01-03",
        "01-04",
        "01-05",
        "01-06",
        "01-07",
        "01-08",
        "01-09",  # daily 7
    ]
    assert plan.keep["01-03"] == ["daily 2027-01-03", "weekly 2026-W53"]
    assert plan.keep["01-07"] == ["last 3", "daily 2027-01-07"]
    assert plan.keep["12-31"] == ["monthly 2026-12"]
    assert plan.keep["01-09"] == ["newest", "last 1", "daily 2027-01-09", "weekly 2027-W01", "monthly 2027-01"]
    assert plan.remove == [s.id for s in all_snaps if s.id not in plan.keep]
    assert len(plan.keep) + len(plan.remove) == 40


def test_zero_counts_are_no_rule() -> None:
    assert RetentionPolicy(keep_last=0, keep_daily=0, keep_within=timedelta(0)).empty
    policy = RetentionPolicy(keep_last=0, keep_daily=1)
    plan = plan_prune(snaps("2026-11-01 10:00", "2026-11-02 10:00"), policy, now=NOW)
    assert plan.remove == ["2026-11-01 10:00"]


@pytest.mark.parametrize("field", ["keep_last", "keep_daily", "keep_yearly", "max_size"])
def test_negative_values_are_refused(field: str) -> None:
    with pytest.raises(UsageError, match=field.replace("_", "-")):
        RetentionPolicy(**{field: -1})
    with pytest.raises(UsageError, match="keep-within"):
        RetentionPolicy(keep_within=timedelta(days=-1))


# --- empty policy --------------------------------------------------------------------------------


def test_empty_policy_removes_nothing() -> None:
    assert RetentionPolicy().empty
    assert not RetentionPolicy(keep_last=1).empty
    assert not RetentionPolicy(max_size=10).empty
    plan = plan_prune(snaps("2026-11-01 10:00", "2026-11-02 10:00"), RetentionPolicy(), now=NOW)
    assert plan.remove == []
    assert plan.keep == {"2026-11-01 10:00": ["no policy"], "2026-11-02 10:00": ["newest", "no policy"]}


def test_no_snapshots() -> None:
    policy = RetentionPolicy(keep_last=1, max_size=0)
    assert plan_prune([], policy, now=NOW, current_revision=("a",)) == PrunePlan({}, [])


# --- protections -------------------------------------------------------------------------------


def test_pinned_kept_whatever_the_policy() -> None:
    s = [
        snap("2026-01-01 10:00", pinned=True),
        snap("2026-06-01 10:00"),
        snap("2026-11-01 10:00", pinned=True),
        snap("2026-11-02 10:00"),
    ]
    plan = plan_prune(s, RetentionPolicy(keep_last=1), now=NOW)
    assert plan.keep == {
        "2026-01-01 10:00": ["pinned"],
        "2026-11-01 10:00": ["pinned"],
        "2026-11-02 10:00": ["newest", "last 1"],
    }
    assert plan.remove == ["2026-06-01 10:00"]


def test_newest_kept_even_when_no_rule_matches_it() -> None:
    policy = RetentionPolicy(keep_within=timedelta(minutes=5))
    plan = plan_prune(snaps("2020-01-01 10:00", "2020-01-02 10:00"), policy, now=NOW)
    assert kept(plan) == ["2020-01-02 10:00"]


def test_newest_tie_broken_by_id() -> None:
    s = [snap("2026-11-01 10:00", sid="b"), snap("2026-11-01 10:00", sid="a")]
    plan = plan_prune(s, RetentionPolicy(keep_within=timedelta(minutes=1)), now=NOW)
    assert plan.keep == {"b": ["newest"]} and plan.remove == ["a"]


REVISION_CASES = [
    # (revisions oldest first, current, expected protected index or None)
    pytest.param([("0003",), ("0004",), ("0005",), ("0005",)], ("0005",), 1, id="last-before-migration"),
    pytest.param([("0004",), ("0005",), ("0004",), ("0005",)], ("0005",), 2, id="after-downgrade-and-reupgrade"),
    pytest.param([(), ("0005",)], ("0005",), 0, id="empty-revision-counts-as-before"),
    pytest.param([("0005",), ("0005",), ("0005",)], ("0005",), None, id="all-at-current"),
    pytest.param([("0004",), ("0004",)], (), None, id="no-current-revision-rule-skipped"),
    pytest.param([("b", "a"), ("a", "c"), ("a", "b")], ("b", "a"), 1, id="heads-compared-as-sets"),
]


@pytest.mark.parametrize(("revisions", "current", "protected"), REVISION_CASES)
def test_last_before_current_revision(
    revisions: list[tuple[str, ...]], current: tuple[str, ...], protected: int | None
) -> None:
    s = [snap(f"2026-11-0{i + 1} 10:00", revision=r, sid=f"s{i}") for i, r in enumerate(revisions)]
    plan = plan_prune(s, RetentionPolicy(keep_last=1), now=NOW, current_revision=current)
    expected = {f"s{len(s) - 1}"} | ({f"s{protected}"} if protected is not None else set())
    assert set(plan.keep) == expected
    if protected is not None and protected != len(s) - 1:
        assert plan.keep[f"s{protected}"] == [f"last before current revision {','.join(current)}"]


# --- max_size ------------------------------------------------------------------------------------


def test_max_size_removes_oldest_first_until_it_fits() -> None:
    s = [snap(f"2026-11-0{i} 10:00", size=100) for i in range(1, 6)]
    plan = plan_prune(s, RetentionPolicy(keep_daily=5, max_size=250), now=NOW)
    assert kept(plan) == ["2026-11-04 10:00", "2026-11-05 10:00"]
    assert plan.remove == ["2026-11-01 10:00", "2026-11-02 10:00", "2026-11-03 10:00"]


def test_max_size_exact_fit_removes_nothing() -> None:
    s = [snap(f"2026-11-0{i} 10:00", size=100) for i in range(1, 4)]
    plan = plan_prune(s, RetentionPolicy(keep_last=3, max_size=300), now=NOW)
    assert plan.remove == []


def test_max_size_never_removes_protected() -> None:
    s = [
        snap("2026-11-01 10:00", size=1000, pinned=True),
        snap("2026-11-02 10:00", size=10, revision=("0004",)),  # last before current revision
        snap("2026-11-03 10:00", size=10),
        snap("2026-11-04 10:00", size=10),
        snap("2026-11-05 10:00", size=1000),  # newest
    ]
    plan = plan_prune(s, RetentionPolicy(keep_last=5, max_size=100), now=NOW, current_revision=("0005",))
    assert kept(plan) == ["2026-11-01 10:00", "2026-11-02 10:00", "2026-11-05 10:00"]
    assert plan.remove == ["2026-11-03 10:00", "2026-11-04 10:00"]
    assert plan.keep["2026-11-01 10:00"] == ["pinned", "last 5"]


def test_max_size_skips_protected_and_continues_with_next_oldest() -> None:
    s = [snap("2026-11-01 10:00", pinned=True), snap("2026-11-02 10:00"), snap("2026-11-03 10:00")]  # 100 bytes each
    plan = plan_prune(s, RetentionPolicy(keep_last=3, max_size=200), now=NOW)
    assert plan.remove == ["2026-11-02 10:00"]


def test_max_size_counts_only_snapshots_the_rules_kept() -> None:
    s = [snap("2026-11-01 10:00", size=10_000), snap("2026-11-02 10:00", size=100), snap("2026-11-03 10:00", size=100)]
    plan = plan_prune(s, RetentionPolicy(keep_last=2, max_size=200), now=NOW)
    assert kept(plan) == ["2026-11-02 10:00", "2026-11-03 10:00"]


def test_max_size_alone_keeps_all_that_fit() -> None:
    s = [snap(f"2026-11-0{i} 10:00", size=100) for i in range(1, 5)]
    plan = plan_prune(s, RetentionPolicy(max_size=250), now=NOW)
    assert plan.keep == {"2026-11-03 10:00": ["within max size"], "2026-11-04 10:00": ["newest", "within max size"]}
    assert plan.remove == ["2026-11-01 10:00", "2026-11-02 10:00"]


def test_max_size_zero_leaves_only_protected() -> None:
    s = [snap("2026-11-01 10:00", pinned=True), snap("2026-11-02 10:00"), snap("2026-11-03 10:00")]
    plan = plan_prune(s, RetentionPolicy(keep_last=3, max_size=0), now=NOW)
    assert kept(plan) == ["2026-11-01 10:00", "2026-11-03 10:00"]


# --- parse_duration / parse_size -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90m", timedelta(minutes=90)),
        ("36h", timedelta(hours=36)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("1y6mo3d", timedelta(days=365 + 180 + 3)),
        ("1y", timedelta(days=365)),
        ("3mo", timedelta(days=90)),
        ("2h30m", timedelta(hours=2, minutes=30)),
        ("1w2d3h4m", timedelta(days=9, hours=3, minutes=4)),
        (" 7D ", timedelta(days=7)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "bad duration ''"),
        ("7", "bad duration '7'"),
        ("d", "bad duration 'd'"),
        ("7 d", "bad duration '7 d'"),
        ("-7d", "bad duration '-7d'"),
        ("1.5d", "bad duration '1.5d'"),
        ("7x", "bad duration '7x'"),
        ("7days", "bad duration '7days'"),
        ("0d", "more than zero"),
        ("3d1w", "largest to smallest"),
        ("1d1d", "largest to smallest"),
        ("1y6m3d", "write 'mo' for months"),
    ],
)
def test_parse_duration_invalid(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as e:
        parse_duration(text)
    assert e.value.exit_code == EXIT_USAGE
    assert "\n" not in e.value.message


@pytest.mark.parametrize(
    ("d", "text"),
    [
        (timedelta(days=7), "7d"),
        (timedelta(hours=36), "1d12h"),
        (timedelta(minutes=90), "1h30m"),
        (timedelta(seconds=5), "5s"),
    ],
)
def test_format_duration(d: timedelta, text: str) -> None:
    assert format_duration(d) == text
    if not text.endswith("s"):
        assert parse_duration(text) == d


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2048", 2048),
        ("0", 0),
        ("2048B", 2048),
        ("500MB", 500_000_000),
        ("500 mb", 500_000_000),
        ("1KB", 1000),
        ("1KiB", 1024),
        ("1K", 1024),
        ("1.5GiB", 1536 * 1024**2),
        ("10G", 10 * 1024**3),
        ("2TB", 2 * 10**12),
        ("1TiB", 1024**4),
        ("1.5B", 1),
        (".5KiB", 512),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MB", "-1MB", "1e6", "1,5GB", "10 gigabytes", "1PB", "1..5G", "1.5.2GB", "12 34"])
def test_parse_size_invalid(text: str) -> None:
    with pytest.raises(UsageError, match="bad size") as e:
        parse_size(text)
    assert repr(text) in e.value.message
