"""`key add`: turn an unencrypted repository into an encrypted one, so that a kill at any moment leaves
either the unencrypted repository, whole, or an encrypted one that the next `key add` finishes.

Encrypted, a blob is named by its keyed hash (``HMAC-SHA256(id key, plaintext)``), so every blob gets a
new id and every manifest names new blobs. In order:

1. **Stage**, under the repository lock, nothing of the unencrypted repository changed: the encrypted
   repository's ``config.json`` goes to ``rekey/config.json`` (first, so a rerun with the same key reuses
   what was written); every blob a snapshot names is read (its SHA-256 id checked), sealed and written
   under its new id beside the old ones (an unencrypted reader never looks at a blob no manifest names);
   each manifest, rewritten to the new ids, goes to ``rekey/snapshots/``; the state files, sealed, to
   ``rekey/state/``; the old blob ids to ``rekey/plan.json``.
2. **Switch**, also holding the journal lock (so no record is appended meanwhile): the journal, sealed
   and chained again under the key, is staged, then ``config.json`` is replaced by the staged one. From
   here the repository is the encrypted one.
3. **Finish**: each staged file replaces its unencrypted original (the journal and the state files
   first, then the manifests; one whose live file is already sealed was finished before), the old
   blobs are deleted, and ``rekey/`` last. A rerun after a kill in 2 or 3 (``config.json`` encrypted,
   ``rekey/plan.json`` present) does only this.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import Project
from ..errors import EXIT_USAGE, GuardError, UsageError
from .crypto import (
    MAGIC_PLAIN,
    IntegrityError,
    blob_id,
    id_key,
    key_matches,
    passphrase_key,
    seal_whole,
)
from .manifest import manifest_blobs, with_blobs_renamed
from .repository import (
    _JOURNAL_LOCK,
    CONFIG,
    JOURNAL,
    JOURNAL_LOCK_WAIT,
    KeySource,
    Repository,
    _chain_seq,
    _kdf_params,
    _parse_config,
    key_config,
)
from .storage import Storage, open_storage

STAGE = "rekey"
STAGED_CONFIG = f"{STAGE}/config.json"
PLAN = f"{STAGE}/plan.json"
STAGED_SNAPSHOTS = f"{STAGE}/snapshots"
STAGED_STATE = f"{STAGE}/state"
STAGED_JOURNAL = f"{STAGED_STATE}/journal.jsonl"

Say = Callable[[str], None]


@dataclass
class KeyAdded:
    location: str
    blobs: int = 0  # blobs the snapshots name, now sealed under the key
    written: int = 0  # of them, written by this run (a rerun reuses what a killed one wrote)
    snapshots: int = 0
    state_files: int = 0
    journal_records: int = 0
    removed: int = 0  # unencrypted blobs deleted after the switch
    resumed: bool = False  # this run finished a switch a killed run had made


def add_key(project: Project, key_file: str | None = None, say: Say | None = None) -> KeyAdded:
    """Encrypt the project's repository with the key configured as every command takes it
    (``MIGRATE_GUARD_KEY``, else ``key_file`` or ``backup.key_file``, else ``MIGRATE_GUARD_PASSPHRASE``)."""
    from .service import repository_location

    keys = KeySource.from_environment(key_file or project.settings.backup.key_file)
    if not keys.configured:
        raise UsageError(
            "key add needs the key to encrypt with: set MIGRATE_GUARD_KEY (`migrate-guard key generate` makes "
            "one), pass --key-file (or set backup.key_file), or set MIGRATE_GUARD_PASSPHRASE"
        )
    return add_key_at(repository_location(project), keys, project.settings.backup.compression_level, say)


def add_key_at(
    location: str, keys: KeySource, compression_level: int | None = None, say: Say | None = None
) -> KeyAdded:
    tell: Say = say or (lambda _line: None)
    storage = open_storage(location)
    try:
        raw = storage.read_bytes(CONFIG)
    except FileNotFoundError:
        raise GuardError(
            f"no backup repository at {location}: `migrate-guard backup` with the key set creates an encrypted one",
            EXIT_USAGE,
        ) from None
    config = _parse_config(raw, location)
    if config["encrypted"]:
        if not storage.exists(PLAN):
            raise GuardError(f"the repository at {location} is encrypted already", EXIT_USAGE)
        repo = Repository.open(location, keys)  # says "wrong key" for another key than the switch used
        with repo.lock("key add"):
            tell(f"finishing the encryption of {location} that an interrupted `key add` began")
            result = KeyAdded(location, resumed=True)
            _finish(repo, result)
        return result
    plain = Repository.open(location, KeySource())
    if plain.read_only:
        raise GuardError(f"{location} is read-only: the repository cannot be encrypted there", EXIT_USAGE)
    with plain.lock("key add"):
        for warning in plain.warnings:
            tell(f"warning: {warning}")
        target = _target(plain, keys, compression_level)
        result = KeyAdded(location)
        _stage(plain, target, result, tell)
        _switch(plain, target, result)
        tell("switched: the repository is encrypted; replacing the unencrypted files")
        _finish(target, result)
    return result


# --- 1. stage -------------------------------------------------------------------------------------------


def _target(plain: Repository, keys: KeySource, compression_level: int | None) -> Repository:
    """The encrypted repository to be: the staged config when a killed run wrote one for this same key
    (its blobs are then reused), else a new one. Same id, chunk size and compression as ``plain``."""
    storage = plain.storage
    staged: dict[str, Any] | None = None
    try:
        staged = _parse_config(storage.read_bytes(STAGED_CONFIG), plain.location)
    except (FileNotFoundError, GuardError):
        staged = None
    if staged is not None and staged.get("id") == plain.id and staged["encrypted"]:
        master = _master(staged, keys, plain.location)
        check = base64.b64decode(staged["key_check"])
        if master is not None and key_matches(check, master):
            return Repository(storage, staged, master, compression_level)
    config = {k: v for k, v in plain.config.items() if k not in ("kdf", "key_check", "id_check")}
    config["encrypted"] = True
    master = key_config(keys, config)
    for path in storage.list(STAGE):  # a run with another key, or before the config: start again
        storage.delete(path)
    storage.write_atomic(STAGED_CONFIG, [_config_bytes(config)])
    return Repository(storage, config, master, compression_level)


def _master(config: dict[str, Any], keys: KeySource, location: str) -> bytes | None:
    if keys.key is not None:
        return keys.key
    if config.get("kdf") and keys.passphrase:
        return passphrase_key(keys.passphrase, *_kdf_params(config["kdf"], location))
    return None


def _config_bytes(config: dict[str, Any]) -> bytes:
    return json.dumps(config, indent=2).encode("utf-8") + b"\n"


def _stage(plain: Repository, target: Repository, result: KeyAdded, tell: Say) -> None:
    """Step 1: new blobs beside the old ones, manifests under ``rekey/``, the old blob ids in the plan."""
    storage = plain.storage
    manifests = plain.manifests()
    skipped = [w.removeprefix("skipped ") for w in plain.warnings if w.startswith("skipped ")]
    if skipped:
        raise IntegrityError(
            f"not encrypted: {skipped[0]} (repair that manifest from a copy, or delete it once its snapshot "
            "is given up; key add re-seals only what it can read)"
        )
    journal = plain.journal_checked()
    if journal.problems:
        raise IntegrityError(
            f"not encrypted: the journal is damaged ({journal.problems[0]}); re-chaining it under the key would "
            "hide that"
        )
    for path in storage.list(STAGE):
        if path != STAGED_CONFIG:
            storage.delete(path)  # what a killed run staged: staged again from what is here now
    key = target._key
    assert key is not None
    ids = id_key(key, target.id)
    old = sorted(plain.blob_ids())
    named = list(dict.fromkeys(b for m in manifests for b in _blobs(m)))
    tell(f"re-sealing {len(named)} blobs of {len(manifests)} snapshots under the key")
    new: dict[str, str] = {}
    for bid in named:
        try:
            data = plain._read_blob(bid)  # its SHA-256 id checked
        except IntegrityError as exc:
            raise IntegrityError(
                f"not encrypted: {exc.message} (`migrate-guard repair` removes it and names the snapshots that "
                "lost data; forget those, then run key add again)"
            ) from None
        nid = blob_id(data, ids)
        new[bid] = nid
        path = Repository._blob_path(nid)
        if not storage.exists(path):  # a file is whole once it exists (temp file, fsync, rename)
            storage.write_atomic(path, seal_whole(data, key, compress=True, level=target.compression_level))
            result.written += 1
    result.blobs = len(named)
    for manifest in manifests:
        body = with_blobs_renamed({k: v for k, v in manifest.items() if k != "sha256"}, new.__getitem__)
        body["encrypted"] = True
        target._write_json(f"{STAGED_SNAPSHOTS}/{manifest['id']}.json", body)
    result.snapshots = len(manifests)
    renamed = set(new.values())
    storage.write_atomic(PLAN, [json.dumps({"old_blobs": [b for b in old if b not in renamed]}).encode()])


def _state_names(storage: Storage) -> list[str]:
    names = []
    for path in storage.list("state"):
        parts = path.split("/")
        if len(parts) == 2 and parts[1].endswith(".json"):
            names.append(parts[1][: -len(".json")])
        elif path != JOURNAL:
            raise GuardError(f"not encrypted: {path} is no file of a repository (move it away first)", EXIT_USAGE)
    return names


# --- 2. switch ------------------------------------------------------------------------------------------


def _switch(plain: Repository, target: Repository, result: KeyAdded) -> None:
    """Step 2, under the journal lock: stage the state files and the journal re-chained, then the config."""
    storage = plain.storage
    with plain._holding(_JOURNAL_LOCK, "key add", JOURNAL_LOCK_WAIT):
        check = plain.journal_checked()  # again: a record may have been appended since step 1
        if check.problems:
            raise IntegrityError(f"not encrypted: the journal is damaged ({check.problems[0]})")
        head: dict[str, Any] | None = None
        lines: list[bytes] = []
        for record in check.records:
            if _chain_seq(record) is not None:
                record = {**record, "prev": target._line_hash(lines[-1]) if lines else ""}
            lines.append(target._journal_line(record)[:-1])
            if _chain_seq(record) is not None:
                head = {"seq": record["seq"], "hash": target._line_hash(lines[-1]), "repository": target.id}
        for name in _state_names(storage):
            if name == "journal-head":
                continue  # made anew from the journal
            try:
                state = plain.read_state(name)
            except IntegrityError:
                continue  # damaged (a verify record): dropped, as its readers drop it
            if state is None:
                continue
            if name == "damaged-blobs":
                state = {"blobs": {}}  # every blob a snapshot names was just read whole: none is damaged
            target._write_json(f"{STAGED_STATE}/{name}.json", state)
            result.state_files += 1
        if head is not None:
            target._write_json(f"{STAGED_STATE}/journal-head.json", head)
        storage.write_atomic(STAGED_JOURNAL, [b"".join(line + b"\n" for line in lines)])
        result.journal_records = len(lines)
        storage.write_atomic(CONFIG, [_config_bytes(target.config)])  # the switch
        _finish_journal(storage)


# --- 3. finish ------------------------------------------------------------------------------------------


def _plain_file(storage: Storage, path: str) -> bool | None:
    """Whether the live file is still unencrypted (None: it does not exist)."""
    try:
        head = next(iter(storage.open_read(path)), b"")
    except FileNotFoundError:
        return None
    return head.startswith(MAGIC_PLAIN) or head.lstrip().startswith(b"{")


def _finish_journal(storage: Storage) -> None:
    """The staged journal and head replace the live ones, unless those are sealed already (a rerun after
    the switch: records may have been appended since)."""
    for staged, live in ((STAGED_JOURNAL, JOURNAL), (f"{STAGED_STATE}/journal-head.json", "state/journal-head.json")):
        if not storage.exists(staged):
            continue
        if _plain_file(storage, live) is not False:
            storage.write_atomic(live, [storage.read_bytes(staged)])
        storage.delete(staged)


def _finish(repo: Repository, result: KeyAdded) -> None:
    """Step 3 on the (now encrypted) repository: staged files in place, old blobs deleted, ``rekey/`` gone."""
    storage = repo.storage
    _finish_journal(storage)
    for staged in storage.list(STAGE):
        if staged in (STAGED_CONFIG, PLAN):
            continue
        live = staged.removeprefix(f"{STAGE}/")
        state = staged.startswith(f"{STAGED_STATE}/")
        plain = _plain_file(storage, live)
        # a manifest whose live file is gone was removed: not brought back; a sealed one is finished
        if plain or (plain is None and state):
            storage.write_atomic(live, [storage.read_bytes(staged)])
        storage.delete(staged)
    try:
        plan = json.loads(storage.read_bytes(PLAN))
    except FileNotFoundError:
        plan = {"old_blobs": []}
    for bid in plan.get("old_blobs", []):
        if storage.exists(Repository._blob_path(bid)):
            repo.delete_blob(bid)
            result.removed += 1
    storage.delete(STAGED_CONFIG)
    storage.delete(PLAN)  # last: from here nothing is left to finish
    # what the repository looks like now is what every reader will see: check that it reads whole
    repo.warnings.clear()
    manifests = repo.manifests()
    unreadable = [w for w in repo.warnings if w.startswith("skipped ")]
    if unreadable:
        raise IntegrityError(f"encrypted, but {unreadable[0].removeprefix('skipped ')}")
    problems = repo.journal_checked().problems
    if problems:
        raise IntegrityError(f"encrypted, but the journal does not check: {problems[0]}")
    result.snapshots = result.snapshots or len(manifests)


def _blobs(manifest: dict[str, Any]) -> list[str]:
    return list(manifest_blobs(manifest))


__all__ = ["KeyAdded", "add_key", "add_key_at"]
