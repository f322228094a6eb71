"""``repair`` (restic's ``repair`` is the model): read every blob, remove the damaged ones, say which
snapshots lost data.

A damaged blob is worse than a missing one: its file exists, so a backup would take it for stored and
name it again. Removing it (and recording it in ``state/damaged-blobs.json``, which every check does)
makes the next backup store the chunk again from the database; blobs are named by their content, so
every older snapshot that names it is whole again from then on. Until then those snapshots have lost
data: ``list`` flags them, ``status`` and the report count them, ``prune`` removes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import Project
from ..errors import UsageError
from ..progress import Progress
from .manifest import manifest_blobs
from .service import _damaged_manifests, open_repository


@dataclass
class RepairResult:
    checked: int  # blobs read
    damaged: dict[str, str] = field(default_factory=dict)  # blob id -> problem (removed when present)
    removed: int = 0  # damaged blob files removed (with dry_run: to be removed)
    lost: dict[str, list[str]] = field(default_factory=dict)  # snapshot id -> its damaged or missing blobs
    unreadable_manifests: list[str] = field(default_factory=list)
    missing_manifests: list[tuple[str, str]] = field(default_factory=list)  # (id, taken at)
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "damaged": self.damaged,
            "removed": self.removed,
            "lost": self.lost,
            "unreadable_manifests": self.unreadable_manifests,
            "missing_manifests": [{"id": sid, "taken_at": at} for sid, at in self.missing_manifests],
            "dry_run": self.dry_run,
        }


def repair(project: Project, dry_run: bool = False, progress: Progress | None = None) -> RepairResult:
    """Check every blob (tag and id); remove the damaged ones (not with ``dry_run``) and record them and the
    missing ones, so the next backup stores them again. Returns what was found."""
    repo = open_repository(project)
    if repo.read_only and not dry_run:
        raise UsageError(f"{repo.location} is read-only: repair removes damaged blobs (--dry-run only reports)")
    progress = progress or Progress()
    with repo.lock("repair"):
        manifests = repo.manifests()
        present = repo.blob_ids()
        referenced = {b for m in manifests for b in manifest_blobs(m)}
        progress.step(f"reading {len(present)} blobs")
        result = RepairResult(checked=len(present), dry_run=dry_run)
        for blob, problem in repo.check_blobs(sorted(present)):
            if problem:
                result.damaged[blob] = problem
        for blob in sorted(referenced - present):
            result.damaged[blob] = repo.check_blob(blob) or f"blob {blob} missing"
        for blob in sorted(set(result.damaged) & present):
            if not dry_run:
                repo.delete_blob(blob)
            result.removed += 1  # or, with dry_run, would be
        result.lost = {m["id"]: lost for m in manifests if (lost := repo.lost_data(m))}
        result.unreadable_manifests = _damaged_manifests(repo)
        result.missing_manifests = repo.missing_manifests()
    return result
