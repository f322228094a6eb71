"""The chained journal (docs/repository-format.md, "State and journal"): concurrent appenders lose
nothing, and every kind of damage to the file is named. Real files, real processes, no mocks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from migrate_guard.backup import crypto
from migrate_guard.backup.crypto import IntegrityError, decode_key, generate_key, seal_bytes
from migrate_guard.backup.repository import KeySource, Repository, RepositoryLocked

JOURNAL = "state/journal.jsonl"
HEAD = "state/journal-head.json"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("MIGRATE_GUARD_KEY", "MIGRATE_GUARD_PASSPHRASE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def key() -> bytes:
    return decode_key(generate_key())


@pytest.fixture(params=["encrypted", "plain"])
def keys(request, key) -> KeySource:
    return KeySource(key=key) if request.param == "encrypted" else KeySource()


@pytest.fixture
def repo(tmp_path, keys) -> Repository:
    return Repository.init(str(tmp_path / "repo"), keys)


@pytest.fixture
def plain(tmp_path) -> Repository:
    return Repository.init(str(tmp_path / "plain"), KeySource())


def journal_file(repo: Repository) -> Path:
    return Path(repo.location) / JOURNAL


def lines(repo: Repository) -> list[bytes]:
    return journal_file(repo).read_bytes().splitlines()


def rewrite(repo: Repository, new_lines: list[bytes]) -> None:
    journal_file(repo).write_bytes(b"".join(line + b"\n" for line in new_lines))


def fill(repo: Repository, count: int) -> list[dict]:
    return [repo.append_journal({"n": n}) for n in range(1, count + 1)]


def expected_hash(repo: Repository, line: bytes) -> str:
    """The doc's chain hash, computed here from the doc: HMAC-SHA256 under the id key, or SHA-256."""
    if repo.encrypted:
        return hmac.new(crypto.id_key(repo._key, repo.id), line, hashlib.sha256).hexdigest()
    return hashlib.sha256(line).hexdigest()


def legacy_line(repo: Repository, record: dict) -> bytes:
    """A line as migrate-guard wrote it before the chain: the record's JSON, sealed when encrypted."""
    text = json.dumps(record, separators=(",", ":")).encode()
    return base64.b64encode(seal_bytes(text, repo._key, compress=False)) if repo.encrypted else text


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(repo: Repository, **holder) -> Path:
    lock = Path(repo.location) / "locks" / "journal.json"
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    lock.write_text(
        json.dumps({"pid": 1, "host": "elsewhere", "user": "x", "created_at": now, "command": "x"} | holder)
    )
    return lock


# --- writing --------------------------------------------------------------------------------------------------


def test_records_are_chained_as_written(repo):
    given = {"run": "r1", "seq": 99, "prev": "forged", "repository": "another"}
    first = repo.append_journal(given)
    assert given == {"run": "r1", "seq": 99, "prev": "forged", "repository": "another"}  # the caller's dict as it was
    assert first == {"seq": 1, "prev": "", "repository": repo.id, "run": "r1"}
    second = repo.append_journal({"run": "r1", "state": "done"})
    assert second["seq"] == 2 and second["prev"] == expected_hash(repo, lines(repo)[0])
    assert repo.journal() == [first, second]
    assert repo.read_state("journal-head") == {
        "seq": 2,
        "hash": expected_hash(repo, lines(repo)[1]),
        "repository": repo.id,
    }
    if repo.encrypted:
        assert b"journal-head" not in (Path(repo.location) / HEAD).read_bytes()
        assert (Path(repo.location) / HEAD).read_bytes()[:4] == b"MGE1"
    assert repo.journal_checked()[:3] == ([first, second], [], None)
    assert not (Path(repo.location) / "locks" / "journal.json").exists()


CHILD = r"""
import sys, time
from pathlib import Path
from migrate_guard.backup.repository import KeySource, Repository
location, key, worker, count, go = sys.argv[1:]
repo = Repository.open(location, KeySource(key=bytes.fromhex(key)) if key else KeySource())
while not Path(go).exists():
    time.sleep(0.002)
for n in range(int(count)):
    repo.append_journal({"worker": int(worker), "n": n})
"""


def test_concurrent_appenders_lose_nothing(repo, tmp_path):
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, repo.location, repo._key.hex() if repo._key else "", str(w), "50", str(go)]
        )
        for w in range(4)
    ]
    time.sleep(1.0)  # let them import and open the repository, then start them together
    go.touch()
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    records = repo.journal()
    assert len(records) == 200
    assert [r["seq"] for r in records] == list(range(1, 201))
    assert sorted((r["worker"], r["n"]) for r in records) == [(w, n) for w in range(4) for n in range(50)]
    for w in range(4):  # each process's records in the order it wrote them
        assert [r["n"] for r in records if r["worker"] == w] == list(range(50))
    assert repo.journal_checked()[:3] == (records, [], None)
    assert repo.read_state("journal-head")["seq"] == 200


def test_append_does_not_need_the_exclusive_lock(repo, keys):
    backup = Repository.open(repo.location, keys)
    with backup.lock("backup"):
        assert repo.append_journal({"run": "x"})["seq"] == 1
    assert repo.journal_problems() == []


# --- the journal lock ---------------------------------------------------------------------------------------------


def test_stale_journal_lock_of_a_dead_pid_taken_over(plain):
    lock = write_lock(plain, pid=dead_pid(), host=socket.gethostname())
    started = time.monotonic()
    assert plain.append_journal({"n": 1})["seq"] == 1
    assert time.monotonic() - started < 5
    assert any(w.startswith("took over a stale journal lock: the lock of pid") for w in plain.warnings)
    assert not lock.exists()


def test_held_journal_lock_waits_then_names_the_holder(plain):
    lock = write_lock(plain, pid=os.getpid(), host=socket.gethostname(), command="journal append")
    started = time.monotonic()
    with pytest.raises(RepositoryLocked) as info:
        plain.append_journal({"n": 1}, wait=0.3)
    assert time.monotonic() - started >= 0.3
    assert f"the journal of repository {plain.location} is locked by pid {os.getpid()}" in info.value.message
    assert "locks/journal.json" in info.value.message
    # another host's fresh lock is held too; one older than a minute is stale
    write_lock(plain)
    with pytest.raises(RepositoryLocked, match="elsewhere"):
        plain.append_journal({"n": 1}, wait=0.1)
    assert plain.journal() == []
    write_lock(plain, created_at="2020-01-01T00:00:00Z")
    assert plain.append_journal({"n": 1})["seq"] == 1
    assert any("a lock of host elsewhere older than 1 minute" in w for w in plain.warnings)
    assert not lock.exists()


def test_the_exclusive_lock_still_works_as_before(plain):
    lock = Path(plain.location) / "locks" / "exclusive.json"
    lock.write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(), "created_at": "2026-01-01T00:00:00Z"}))
    with plain.lock("prune"):
        assert json.loads(lock.read_text())["command"] == "prune"
    assert any(w.startswith("took over a stale repository lock: the lock of pid") for w in plain.warnings)
    lock.write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "created_at": "2020-01-01T00:00:00Z"})
    )
    # a live process here holds it however old
    with (
        pytest.raises(RepositoryLocked, match=f"repository {plain.location} is locked by pid {os.getpid()}"),
        plain.lock("prune"),
    ):
        pass


# --- damage -------------------------------------------------------------------------------------------------------


def test_deleted_middle_line(repo):
    records = fill(repo, 5)
    kept = lines(repo)
    del kept[2]
    rewrite(repo, kept)
    assert repo.journal_checked()[:3] == (
        records[:2] + records[3:],
        [f"{JOURNAL} line 3: sequence 4 follows 2 (records missing)"],
        2,
    )
    assert repo.journal() == records[:2] + records[3:]  # reading does not raise on a broken chain


def test_deleted_first_line(repo):
    fill(repo, 3)
    rewrite(repo, lines(repo)[1:])
    assert repo.journal_problems() == [f"{JOURNAL} line 1: sequence 2 at the start (records missing)"]


def test_swapped_lines(repo):
    records = fill(repo, 5)
    order = lines(repo)
    order[1], order[2] = order[2], order[1]
    rewrite(repo, order)
    check = repo.journal_checked()
    assert check.problems == [
        f"{JOURNAL} line 2: sequence 3 follows 1 (out of order)",
        f"{JOURNAL} line 3: sequence 2 follows 3 (out of order)",
    ]
    assert check.untrusted_from == 1 and check.records[:1] == records[:1]


def test_repeated_line(repo):
    fill(repo, 3)
    rewrite(repo, [*lines(repo), lines(repo)[1]])
    assert repo.journal_checked().problems == [
        f"{JOURNAL} line 4: repeats sequence 2 of line 2 (a line was copied)",
    ]


def test_truncated_last_line(repo):
    records = fill(repo, 5)
    rewrite(repo, lines(repo)[:-1])
    assert repo.journal_checked()[:3] == (records[:4], ["the journal ends at record 4, its head says 5 (truncated)"], 4)
    # the next record numbers on from the head: the cut stays visible, later records are vouched for again
    assert repo.append_journal({"n": 6})["seq"] == 6
    check = repo.journal_checked()
    assert check.problems == [f"{JOURNAL} line 5: sequence 6 follows 4 (records missing)"]
    assert check.sound_from == 5


def test_file_cut_inside_the_last_line(repo):
    records = fill(repo, 3)
    raw = journal_file(repo).read_bytes()
    journal_file(repo).write_bytes(raw[: len(raw) - 10])
    check = repo.journal_checked()
    assert check.records == records[:2] and check.untrusted_from == 2
    assert len(check.problems) == 1 and check.problems[0].startswith(f"{JOURNAL} line 3: ")
    with pytest.raises(IntegrityError, match="line 3"):
        repo.journal()
    # appending after the damage continues the numbering: the damaged line keeps its number
    assert repo.append_journal({"n": 4})["seq"] == 4
    assert len(repo.journal_problems()) == 1


def test_journal_file_removed(repo):
    fill(repo, 2)
    journal_file(repo).unlink()
    assert repo.journal_checked()[:3] == ([], ["the journal holds no record, its head says 2 (truncated)"], 0)


def test_edited_line_in_a_plain_repository(plain):
    records = fill(plain, 4)
    edited = lines(plain)
    edited[1] = edited[1].replace(b'"n":2', b'"n":7')
    rewrite(plain, edited)
    check = plain.journal_checked()
    assert check.problems == [f"{JOURNAL} line 3: chained to another record (a line was removed, changed or reordered)"]
    assert check.untrusted_from == 1  # the record before the broken link is in doubt too: it may be the edited one
    assert check.records[1]["n"] == 7 and check.records[0] == records[0]


def test_edited_last_line_in_a_plain_repository(plain):
    fill(plain, 3)
    edited = lines(plain)
    edited[2] = edited[2].replace(b'"n":3', b'"n":9')
    rewrite(plain, edited)
    assert plain.journal_checked()[1:3] == (
        ["the journal's head does not match record 3 on line 3 (changed or replaced)"],
        0,
    )


def test_tampered_encrypted_line(key, tmp_path):
    repo = Repository.init(str(tmp_path / "repo"), KeySource(key=key))
    fill(repo, 3)
    damaged = lines(repo)
    sealed = bytearray(base64.b64decode(damaged[1]))
    sealed[-1] ^= 1
    damaged[1] = base64.b64encode(bytes(sealed))
    rewrite(repo, damaged)
    check = repo.journal_checked()
    assert check.problems == [
        f"{JOURNAL} line 2: tag mismatch in segment 0 (the final segment: tampered or cut short)",
    ]
    assert check.untrusted_from == 1 and len(check.records) == 2
    with pytest.raises(IntegrityError, match="line 2: tag mismatch"):
        repo.journal()
    damaged[1] = b"not base64!"
    rewrite(repo, damaged)
    assert repo.journal_problems() == [f"{JOURNAL} line 2: not a journal record (not base64)"]


def test_journal_copied_from_another_repository_with_the_same_key(key, tmp_path):
    ours = Repository.init(str(tmp_path / "ours"), KeySource(key=key))
    theirs = Repository.init(str(tmp_path / "theirs"), KeySource(key=key))
    fill(theirs, 3)
    for name in (JOURNAL, HEAD):
        (Path(ours.location) / name).write_bytes((Path(theirs.location) / name).read_bytes())
    check = ours.journal_checked()
    assert check.problems == [
        f"{JOURNAL} lines 1-3: belong to repository {theirs.id}, not this one {ours.id}",
        f"{HEAD}: belongs to repository {theirs.id}, not this one {ours.id}",
    ]
    assert check.untrusted_from == 0 and len(check.records) == 3


def test_one_foreign_line_among_ours(key, tmp_path):
    ours = Repository.init(str(tmp_path / "ours"), KeySource(key=key))
    theirs = Repository.init(str(tmp_path / "theirs"), KeySource(key=key))
    fill(ours, 3)
    fill(theirs, 3)
    mixed = lines(ours)
    mixed[1] = lines(theirs)[1]
    rewrite(ours, mixed)
    assert ours.journal_checked()[1:3] == (
        [f"{JOURNAL} line 2: belongs to repository {theirs.id}, not this one {ours.id}"],
        1,
    )


def test_bad_chain_fields(plain):
    fill(plain, 2)
    edited = lines(plain)
    edited[1] = edited[1].replace(b'"seq":2', b'"seq":"2"')
    rewrite(plain, edited)
    assert plain.journal_problems()[0] == f"{JOURNAL} line 2: bad chain fields (seq, prev, repository)"


# --- the head -----------------------------------------------------------------------------------------------------


def test_head_missing(repo):
    fill(repo, 2)
    (Path(repo.location) / HEAD).unlink()
    assert repo.journal_checked()[1:3] == (
        [f"{HEAD} missing: the end of the journal cannot be checked (head missing)"],
        2,
    )


def test_head_lagging_behind_sound_records_is_fine(repo):
    fill(repo, 2)
    older_head = (Path(repo.location) / HEAD).read_bytes()
    fill(repo, 1)
    (Path(repo.location) / HEAD).write_bytes(older_head)  # as after a crash between the two writes
    assert repo.journal_checked().problems == []
    assert repo.append_journal({"n": 4})["seq"] == 4 and repo.journal_problems() == []


def test_head_of_a_rewritten_journal(plain):
    """A whole journal rewritten consistently, chain and all, still fails against the head."""
    fill(plain, 2)
    head = (Path(plain.location) / HEAD).read_bytes()
    journal_file(plain).unlink()
    (Path(plain.location) / HEAD).unlink()
    fill(plain, 1)
    plain.append_journal({"n": "forged"})
    (Path(plain.location) / HEAD).write_bytes(head)
    assert plain.journal_problems() == ["the journal's head does not match record 2 on line 2 (changed or replaced)"]


def test_unreadable_head(repo):
    fill(repo, 1)
    (Path(repo.location) / HEAD).write_bytes(b"garbage")
    (problem,) = repo.journal_problems()
    assert problem.startswith(f"{HEAD}: ") and problem.endswith("(head unreadable)")
    repo.write_state("journal-head", {"seq": 1})
    assert repo.journal_problems() == [f"{HEAD}: not a journal head (head unreadable)"]


def test_empty_journal_is_sound(repo):
    assert repo.journal_checked()[:3] == ([], [], None)
    assert repo.journal() == []


# --- records written before the chain -------------------------------------------------------------------------------


def test_legacy_records_then_chained_ones(repo):
    old = [{"run": "a", "state": "started"}, {"run": "a", "state": "succeeded"}]
    rewrite(repo, [legacy_line(repo, r) for r in old])
    assert repo.journal_checked()[:3] == (old, [], None)  # a journal from before the chain, no head: fine
    new = repo.append_journal({"run": "b", "state": "started"})
    assert new["seq"] == 3 and new["prev"] == expected_hash(repo, lines(repo)[1])
    assert repo.append_journal({"run": "b", "state": "succeeded"})["seq"] == 4
    assert repo.journal_checked()[:3] == ([*old, new, repo.journal()[3]], [], None)


def test_legacy_record_after_chained_ones(repo):
    fill(repo, 2)
    rewrite(repo, [*lines(repo), legacy_line(repo, {"run": "late"})])
    assert repo.journal_checked()[1:3] == (
        [f"{JOURNAL} line 3: has no sequence number, after chained records (written without the chain)"],
        2,
    )


def test_legacy_line_removed_before_the_chain(repo):
    rewrite(repo, [legacy_line(repo, {"n": n}) for n in range(2)])
    fill(repo, 2)
    rewrite(repo, lines(repo)[1:])
    assert repo.journal_problems() == [f"{JOURNAL} line 2: sequence 3 follows 1 (records missing)"]
