"""Recovery objectives in `status`: the measured RPO (age of the newest snapshot a `verify --read-data`
restored) and RTO (how long that last restore took), their `rpo_max`/`rto_max` checks, and how the JSON,
Prometheus, text and HTML outputs show them. Real backups of the example project on SQLite."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from conftest import migrate_example, use_repository


class Setup:
    def __init__(self, root: Path, url: str, run_cli) -> None:
        self.root, self.url, self.run_cli = root, url, run_cli

    @property
    def args(self) -> tuple[str, ...]:
        return ("-c", str(self.root / "alembic.ini"), "--url", self.url)

    def run(self, *args: str):
        return self.run_cli(*self.args, *args)

    def settings(self, toml: str) -> None:
        path = self.root / "migrate-guard.toml"
        path.write_text(path.read_text() + "\n" + toml + "\n")

    def status(self) -> tuple[int, dict]:
        result = self.run("status", "--format", "json")
        return result.exit_code, json.loads(result.stdout)

    def backup(self) -> str:
        result = self.run("backup", "--format", "json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["id"]

    def repository(self):
        from migrate_guard.backup.service import open_repository
        from migrate_guard.config import load_project

        return open_repository(load_project(self.root / "alembic.ini", self.url))


def check(report: dict, name: str) -> dict:
    return next(c for c in report["checks"] if c["name"] == name)


def shift_clock(monkeypatch: pytest.MonkeyPatch, delta: dt.timedelta) -> None:
    from migrate_guard.backup import service

    real = service.utcnow
    monkeypatch.setattr(service, "utcnow", lambda: real() + delta)


@pytest.fixture
def setup(example: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, run_cli) -> Setup:
    """The example at 0004 on SQLite with an encrypted repository and one backup, not verified yet."""
    migrate_example(example, sqlite_url, revision="0004", customers=5)
    use_repository(example, example / "repo", monkeypatch)
    s = Setup(example, sqlite_url, run_cli)
    s.snapshot = s.backup()
    return s


def test_unknown_until_a_verify_restores_the_data(setup):
    _, report = setup.status()
    rec = report["recovery"]
    assert rec["rpo_seconds"] is None and rec["rto_seconds"] is None and rec["verified_snapshot"] is None
    assert rec["rpo_max_seconds"] is None and rec["rto_max_seconds"] is None
    assert check(report, "rpo")["level"] == "ok" and check(report, "rto")["level"] == "ok"  # no threshold: reported
    assert "not known" in check(report, "rpo")["message"]
    assert setup.run("verify", "--all").exit_code == 0  # blobs checked, nothing restored: not "verified"
    code, report = setup.status()
    assert code == 0 and report["recovery"]["rpo_seconds"] is None and report["recovery"]["rto_seconds"] is None
    prom = setup.run("status", "--format", "prometheus").stdout
    assert "migrate_guard_rpo_seconds" not in prom and "migrate_guard_rto_seconds" not in prom  # unknown: left out
    assert 'migrate_guard_check_status{check="rpo"} 0' in prom
    setup.settings('[status]\nrpo_max = "26h"\nrto_max = "10m"')
    code, report = setup.status()
    assert code == 1 and report["healthy"] is False
    assert check(report, "rpo")["level"] == "critical" and "(rpo_max 1d2h)" in check(report, "rpo")["message"]
    assert check(report, "rto")["level"] == "critical" and "(rto_max 10m)" in check(report, "rto")["message"]
    assert report["recovery"]["rpo_max_seconds"] == 26 * 3600 and report["recovery"]["rto_max_seconds"] == 600


def test_verify_read_data_measures_both(setup):
    result = setup.run("verify", "--all", "--read-data", "--format", "json")
    assert result.exit_code == 0, result.output
    (verified,) = json.loads(result.stdout)
    assert verified["restore_seconds"] > 0 and verified["restore_seconds"] <= verified["seconds"]
    state = setup.repository().read_state("verify")[setup.snapshot]
    assert state["restore_seconds"] == verified["restore_seconds"] and state["restored_at"] == state["verified_at"]
    code, report = setup.status()
    assert code == 0, report
    rec = report["recovery"]
    assert rec["verified_snapshot"] == setup.snapshot and rec["last_restore_snapshot"] == setup.snapshot
    assert rec["verified_snapshot_at"] == report["figures"]["last_snapshot_at"]
    assert abs(rec["rpo_seconds"] - report["figures"]["last_snapshot_age_seconds"]) <= 1 and rec["rpo_seconds"] < 60
    assert rec["rto_seconds"] == verified["restore_seconds"] > 0
    text = setup.run("status").stdout
    assert re.search(rf"\n  ok +rpo +the newest snapshot a verify --read-data restored, {setup.snapshot}, is", text)
    assert re.search(r"\n  ok +rto +the last verify --read-data restore \(.*\) took [0-9.]+s", text), text
    prom = setup.run("status", "--format", "prometheus").stdout
    assert "# TYPE migrate_guard_rpo_seconds gauge" in prom and "# TYPE migrate_guard_rto_seconds gauge" in prom
    assert float(re.search(r"^migrate_guard_rto_seconds (\S+)$", prom, re.M)[1]) == rec["rto_seconds"]
    assert float(re.search(r"^migrate_guard_rpo_seconds (\S+)$", prom, re.M)[1]) == pytest.approx(
        rec["rpo_seconds"], abs=1
    )
    # the daily blob check after the weekly restore test keeps the restore it does not repeat
    assert setup.run("verify", "--all").exit_code == 0
    _, again = setup.status()
    assert again["recovery"]["verified_snapshot"] == setup.snapshot
    assert again["recovery"]["rto_seconds"] == rec["rto_seconds"]
    assert again["recovery"]["last_restore_at"] == rec["last_restore_at"]


def test_rpo_is_the_age_of_the_newest_verified_snapshot(setup, monkeypatch):
    assert setup.run("verify", setup.snapshot, "--read-data").exit_code == 0
    shift_clock(monkeypatch, dt.timedelta(hours=3))
    newer = setup.backup()  # taken "3 hours later", not verified
    setup.settings('[status]\nrpo_max = "2h30m"')
    code, report = setup.status()
    assert report["recovery"]["verified_snapshot"] == setup.snapshot
    assert 3 * 3600 - 5 <= report["recovery"]["rpo_seconds"] <= 3 * 3600 + 60
    assert code == 1 and check(report, "rpo")["level"] == "critical", report["checks"]
    assert "is 3h old (rpo_max 2h30m)" in check(report, "rpo")["message"]
    assert check(report, "snapshot_age")["level"] == "ok"  # a new snapshot, just not a verified one
    text = setup.run("status")
    assert text.exit_code == 1 and text.stdout.startswith("UNHEALTHY")
    assert setup.run("verify", newer, "--read-data").exit_code == 0
    code, report = setup.status()
    assert code == 0 and report["recovery"]["verified_snapshot"] == newer and report["recovery"]["rpo_seconds"] < 60
    assert check(report, "rpo")["level"] == "ok"


def test_rpo_max_exceeded_as_the_snapshot_ages(setup, monkeypatch):
    assert setup.run("verify", "--all", "--read-data").exit_code == 0
    setup.settings('[status]\nrpo_max = "1h"')
    assert setup.status()[0] == 0
    shift_clock(monkeypatch, dt.timedelta(hours=2))
    code, report = setup.status()
    assert code == 1 and check(report, "rpo")["level"] == "critical" and report["recovery"]["rpo_seconds"] >= 7200
    assert [c["name"] for c in report["checks"] if c["level"] == "critical"] == ["rpo"]


def test_rto_max_exceeded(setup):
    assert setup.run("verify", "--all", "--read-data").exit_code == 0
    # a restore of the example takes a millisecond or two: record a slow one (90 s) rather than race the clock
    repo = setup.repository()
    state = repo.read_state("verify")
    state[setup.snapshot]["restore_seconds"] = 90.0
    repo.write_state("verify", state)
    setup.settings('[status]\nrto_max = "1m"')
    code, report = setup.status()
    assert report["recovery"]["rto_seconds"] == 90.0
    assert code == 1 and check(report, "rto")["level"] == "critical"
    assert "took 1m30s (rto_max 1m)" in check(report, "rto")["message"]
    assert [c["name"] for c in report["checks"] if c["level"] == "critical"] == ["rto"]
    path = setup.root / "migrate-guard.toml"
    path.write_text(path.read_text().replace('rto_max = "1m"', 'rto_max = "2m"'))
    code, report = setup.status()
    assert code == 0 and check(report, "rto")["level"] == "ok" and "(rto_max 2m)" in check(report, "rto")["message"]


def test_a_verify_recorded_before_restore_times_gives_rto_unknown(setup):
    repo = setup.repository()
    old = {"verified_at": "2026-01-01T00:00:00Z", "ok": True, "read_data": True, "problems": [], "seconds": 1.5}
    repo.write_state("verify", {setup.snapshot: old})
    code, report = setup.status()
    rec = report["recovery"]
    assert rec["verified_snapshot"] == setup.snapshot and rec["rpo_seconds"] is not None
    assert rec["rto_seconds"] is None and rec["last_restore_snapshot"] == setup.snapshot
    assert "was not timed" in check(report, "rto")["message"] and check(report, "rto")["level"] == "ok"
    assert setup.run("verify", "--all").exit_code == 0  # a blob check keeps the old restore, still untimed
    state = setup.repository().read_state("verify")[setup.snapshot]
    assert state["restored_at"] == "2026-01-01T00:00:00Z" and "restore_seconds" not in state
    setup.settings('[status]\nrto_max = "1h"')
    code, report = setup.status()
    assert code == 1 and check(report, "rto")["level"] == "critical"
    assert setup.run("verify", "--all", "--read-data").exit_code == 0
    code, report = setup.status()
    assert code == 0 and report["recovery"]["rto_seconds"] > 0


def test_a_failed_verify_unverifies_the_snapshot(setup):
    assert setup.run("verify", "--all", "--read-data").exit_code == 0
    blob = next(p for p in (setup.root / "repo" / "blobs").rglob("*") if p.is_file())
    data = bytearray(blob.read_bytes())
    data[-5] ^= 0xFF
    blob.write_bytes(bytes(data))
    assert setup.run("verify", "--all").exit_code == 1
    _, report = setup.status()
    assert report["recovery"]["rpo_seconds"] is None and report["recovery"]["rto_seconds"] is None


def test_html_report_shows_both_figures_and_thresholds(setup, tmp_path):
    page = tmp_path / "status.html"
    assert setup.run("report", "--html", str(page)).exit_code == 0
    html = page.read_text()
    assert "Recovery objectives" in html
    assert re.search(r'data-recovery="rpo"><span class="unknown">unknown</span>', html)
    assert '<span data-recovery="rto_max">not set</span>' in html
    assert setup.run("verify", "--all", "--read-data").exit_code == 0
    setup.settings('[status]\nrpo_max = "26h"\nrto_max = "1ms"')
    _, report = setup.status()
    assert setup.run("report", "--html", str(page)).exit_code == 0
    html = page.read_text()
    shown = dict(re.findall(r'data-recovery="([a-z_]+)">([^<]*)<', html))
    assert shown["rpo"].endswith("s") and float(shown["rpo"][:-1]) == pytest.approx(
        report["recovery"]["rpo_seconds"], abs=2
    )
    assert shown["rto"] == f"{report['recovery']['rto_seconds']:g}s"
    assert shown["rpo_max"] == "1d2h" and shown["rto_max"] == "0.001s"
    assert 'class="level critical" data-recovery="rto"' in html and 'class="level ok" data-recovery="rpo"' in html
    embedded = json.loads(re.search(r'<script type="application/json" id="status-json">(.*?)</script>', html)[1])
    assert embedded["recovery"]["verified_snapshot"] == setup.snapshot


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("26", "status.rpo_max: must be a duration string"),
        ('"5x"', "status.rpo_max: bad duration '5x'"),
        ('"0s"', "status.rpo_max: bad duration '0s': must be more than zero"),
        ('"30s1m"', "status.rpo_max: bad duration '30s1m'"),
    ],
)
def test_bad_thresholds_are_one_line_errors(setup, value, message):
    setup.settings(f"[status]\nrpo_max = {value}")
    result = setup.run("status")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_threshold_spellings():
    from migrate_guard.config import _parse_status

    def fail(key, message):
        return ValueError(f"{key}: {message}")

    for text, seconds in [("26h", 93600), ("30m", 1800), ("45s", 45), ("1h30m45s", 5445), ("500ms", 0.5)]:
        assert _parse_status({"rpo_max": text, "rto_max": text}, fail).rto_max.total_seconds() == seconds
    assert _parse_status({"rpo_max": "off"}, fail).rpo_max is None
    assert _parse_status({}, fail).rto_max is None
