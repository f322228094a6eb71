"""`history --all`: snapshots taken, verify results and migrate-safe runs as one timeline, oldest first."""

from __future__ import annotations

from typing import Any

from ..backup import service
from ..config import Project
from ..progress import human_bytes


def events(project: Project, all_databases: bool = False) -> list[dict[str, Any]]:
    from .. import safe
    from ..backup.crypto import IntegrityError

    repo = service.open_repository(project)
    database = None if all_databases else service.current_database(project)
    manifests = service.of_database(repo.manifests(), database)
    out: list[dict[str, Any]] = []
    for m in manifests:
        out.append(
            {
                "time": m["created_at"],
                "type": "snapshot",
                "id": m["id"],
                "outcome": m.get("kind", "manual"),
                "detail": f"{m.get('label') or '-'}, {len(m.get('tables', []))} tables, {m.get('rows', 0)} rows, "
                f"{human_bytes(int(m.get('bytes', 0)))}, {human_bytes(int(m.get('stored_bytes', 0)))} added",
            }
        )
    try:
        verified = repo.read_state("verify") or {}
    except IntegrityError:  # damaged verify results: `status` reports them; the timeline goes on without
        verified = {}
    shown = {m["id"] for m in manifests}
    for sid, r in verified.items():
        if isinstance(r, dict) and r.get("verified_at") and sid in shown:
            out.append(
                {
                    "time": r["verified_at"],
                    "type": "verify",
                    "id": sid,
                    "outcome": "ok" if r.get("ok") else "failed",
                    "detail": ("data restored and counted" if r.get("read_data") else "blobs checked")
                    + (f": {r['problems'][0]}" if r.get("problems") else ""),
                }
            )
    for r in safe.runs(repo, database):
        to = r.get("to")
        out.append(
            {
                "time": r.get("finished_at") or r.get("started_at"),
                "type": "migrate-safe",
                "id": r.get("run"),
                "outcome": r.get("state"),
                "detail": f"{','.join(r.get('from') or []) or 'base'} -> "
                f"{to if isinstance(to, str) else ','.join(to or []) or 'base'}"
                f" by {r.get('user')}@{r.get('host')}" + (f": {r['error']}" if r.get("error") else ""),
            }
        )
    return sorted(out, key=lambda e: service.parse_time(e["time"]) if e["time"] else service.utcnow())
