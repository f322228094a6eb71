"""`report --html FILE`: one self-contained HTML page (inline CSS, script and SVG; a Content-Security-Policy
that forbids every fetch) with the status, the recovery objectives (RPO, RTO), the snapshots over time,
verify results, the guarded runs and the current findings. The figures are those `status --format json`
gives, verbatim."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from .. import __version__
from ..backup import service
from ..config import Project
from ..errors import GuardError
from ..progress import human_bytes
from ..times import parse_iso
from .status import CRITICAL, WARNING, Status, current_database, evaluate, format_span


@dataclass
class Built:
    html: str
    status: Status
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)


def build(project: Project) -> Built:
    from .. import safe
    from ..backup.crypto import IntegrityError

    repo = service.open_repository(project)  # a missing repository is a one-line error, not an empty page
    status = evaluate(project)
    database = current_database(project)
    manifests = service.of_database(repo.manifests(), database)
    try:
        verified = repo.read_state("verify") or {}
    except IntegrityError:
        verified = {}
    runs = safe.runs(repo, database)  # a damaged journal is a check of the status above; its runs still show
    findings, findings_note = _findings(project)
    body = "\n".join(
        [
            _header(project, status),
            _figures(status),
            _recovery(status),
            _checks(status),
            _snapshots(manifests, verified, {m["id"] for m in manifests if repo.lost_data(m)}),
            _verify(manifests, verified),
            _runs(runs),
            _findings_section(findings, findings_note),
        ]
    )
    return Built(_page(f"migrate-guard status: {project.root.name}", body, status), status, manifests, runs)


def _findings(project: Project) -> tuple[list[dict[str, Any]], str]:
    from ..analysis.check import CheckOptions, run_check

    try:
        report = run_check(project, CheckOptions())
    except GuardError as exc:
        return [], f"the revisions could not be checked: {exc.message}"
    note = f"{len(report.revisions)} revision{'s' if len(report.revisions) != 1 else ''} checked ({report.selection})"
    if report.notes:
        note += "; " + "; ".join(report.notes)
    return [f.to_dict() for f in report.findings], note


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _time(text: Any) -> str:
    return f'<time datetime="{e(text)}">{e(str(text)[:19].replace("T", " "))}</time>' if text else "-"


def _table(headers: list[str], rows: list[list[str]], empty: str, cls: str = "") -> str:
    if not rows:
        return f'<p class="empty">{e(empty)}</p>'
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _header(project: Project, status: Status) -> str:
    badge = "healthy" if status.healthy else "unhealthy"
    return (
        f'<header><h1>migrate-guard <span class="badge {badge}" id="health">{badge.upper()}</span></h1>'
        f"<p>project <code>{e(project.root)}</code> &middot; repository <code>{e(status.repository)}</code> "
        f"&middot; checked {_time(status.checked_at)} UTC &middot; migrate-guard {e(__version__)}</p></header>"
    )


def _figure_text(name: str, value: Any) -> str:
    if value is None:
        return '<span class="unknown">unknown</span>'
    raw = json.dumps(value) if isinstance(value, (list, bool)) else e(value)
    if name.endswith("_bytes") and isinstance(value, int):
        return f"{raw} <small>({e(human_bytes(value))})</small>"
    return raw


def _figures(status: Status) -> str:
    rows = [
        [f"<code>{e(k)}</code>", f'<span data-figure="{e(k)}">{_figure_text(k, v)}</span>']
        for k, v in status.figures.items()
    ]
    return "<section><h2>Figures</h2>" + _table(["figure", "value"], rows, "no figures", "figures") + "</section>"


def _recovery(status: Status) -> str:
    """RPO and RTO as measured, each beside its threshold (when set) and coloured by its check."""
    rec = status.recovery
    levels = {c.name: c.level for c in status.checks}
    rows = []
    for key, name, what, about in (
        (
            "rpo",
            "RPO (recovery point)",
            "age of the newest snapshot a verify --read-data restored",
            f"<code>{e(rec['verified_snapshot'])}</code>, taken {_time(rec['verified_snapshot_at'])}"
            if rec["verified_snapshot"]
            else "-",
        ),
        (
            "rto",
            "RTO (recovery time)",
            "how long the last successful verify --read-data restore took",
            f"<code>{e(rec['last_restore_snapshot'])}</code>, restored {_time(rec['last_restore_at'])}"
            if rec["last_restore_snapshot"]
            else "-",
        ),
    ):
        value, limit = rec[f"{key}_seconds"], rec[f"{key}_max_seconds"]
        shown = '<span class="unknown">unknown</span>' if value is None else e(format_span(value))
        level = levels.get(key, "ok")
        rows.append(
            [
                f"{e(name)} <small>({e(what)})</small>",
                f'<span class="level {e(level)}" data-recovery="{key}">{shown}</span>',
                f'<span data-recovery="{key}_max">{e(format_span(limit)) if limit is not None else "not set"}</span>',
                about,
            ]
        )
    return (
        "<section><h2>Recovery objectives</h2>"
        + _table(["objective", "measured", "threshold (rpo_max / rto_max)", "from"], rows, "", "figures")
        + "</section>"
    )


def _checks(status: Status) -> str:
    rows = [
        [f'<span class="level {e(c.level)}">{e(c.level)}</span>', f"<code>{e(c.name)}</code>", e(c.message)]
        for c in status.checks
    ]
    return "<section><h2>Checks</h2>" + _table(["level", "check", "detail"], rows, "no checks") + "</section>"


def _snapshots(manifests: list[dict[str, Any]], verified: dict[str, Any], lost: set[str]) -> str:
    rows = []
    for m in reversed(manifests):
        v = verified.get(m["id"]) if isinstance(verified.get(m["id"]), dict) else None
        state = "-" if v is None else ("ok" if v.get("ok") else "FAILED")
        if m["id"] in lost:  # damaged blobs recorded since (see backup/repair.py)
            state = "LOST DATA"
        rows.append(
            [
                f"<code>{e(m['id'])}</code>",
                _time(m.get("created_at")),
                e(m.get("kind")),
                e(m.get("label") or ""),
                e(",".join(m.get("revision") or []) or "base"),
                e(len(m.get("tables", []))),
                e(m.get("rows", 0)),
                f"{e(m.get('bytes', 0))} <small>({e(human_bytes(int(m.get('bytes', 0))))})</small>",
                e(human_bytes(int(m.get("stored_bytes", 0)))),
                e(state),
            ]
        )
    table = _table(
        ["id", "created (UTC)", "kind", "label", "revision", "tables", "rows", "data bytes", "added", "verify"],
        rows,
        "no snapshots yet",
    )
    return f"<section><h2>Snapshots</h2>{_plot(manifests)}{table}</section>"


def _plot(manifests: list[dict[str, Any]]) -> str:
    """Data size and bytes added per snapshot over time, as inline SVG (drawn here: no script needed)."""
    points: list[tuple[float, int, int, dict[str, Any]]] = []
    for m in manifests:
        when = parse_iso(m.get("created_at"))
        if when is None:
            continue
        points.append((when.timestamp(), int(m.get("bytes", 0)), int(m.get("stored_bytes", 0)), m))
    if not points:
        return ""
    width, height, left, right, top, bottom = 760, 260, 90, 20, 20, 40
    t0, t1 = points[0][0], points[-1][0]
    top_value = max(max(p[1], p[2]) for p in points) or 1

    def x(t: float) -> float:
        return left + (width - left - right) * ((t - t0) / (t1 - t0) if t1 > t0 else 0.5)

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1 - v / top_value)

    parts = [
        f'<svg id="size-plot" role="img" aria-label="snapshot sizes over time" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for frac in (0, 0.5, 1):
        ty = y(top_value * frac)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{ty:.1f}" y2="{ty:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{ty + 4:.1f}" text-anchor="end">{e(human_bytes(int(top_value * frac)))}</text>'
        )
    for t, anchor in ((t0, "start"), (t1, "end")) if t1 > t0 else ((t0, "middle"),):
        label = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")
        parts.append(f'<text x="{x(t):.1f}" y="{height - 12}" text-anchor="{anchor}">{e(label)}</text>')
    series: tuple[tuple[Literal[1, 2], str], ...] = ((1, "data"), (2, "added"))  # the point's field, the class
    for index, cls in series:
        line = " ".join(f"{x(p[0]):.1f},{y(p[index]):.1f}" for p in points)
        parts.append(f'<polyline class="{cls}" points="{line}"/>')
        for p in points:
            parts.append(
                f'<circle class="{cls}" cx="{x(p[0]):.1f}" cy="{y(p[index]):.1f}" r="3.5">'
                f"<title>{e(p[3]['id'])} {e(p[3]['created_at'])}: {e(human_bytes(p[index]))} "
                f"{'of data' if index == 1 else 'added'}</title></circle>"
            )
    parts.append("</svg>")
    legend = (
        '<p class="legend"><span class="key data"></span> data size of the snapshot '
        '<span class="key added"></span> bytes it added to the repository</p>'
    )
    return "".join(parts) + legend


def _verify(manifests: list[dict[str, Any]], verified: dict[str, Any]) -> str:
    known = {m["id"] for m in manifests}
    records = sorted(
        ((sid, r) for sid, r in verified.items() if isinstance(r, dict)),
        key=lambda item: str(item[1].get("verified_at", "")),
        reverse=True,
    )
    rows = [
        [
            f"<code>{e(sid)}</code>" + ("" if sid in known else " <small>(removed)</small>"),
            _time(r.get("verified_at")),
            f'<span class="level {"ok" if r.get("ok") else "critical"}">{"ok" if r.get("ok") else "FAILED"}</span>',
            "yes" if r.get("read_data") else "no",
            e(r.get("seconds")),
            e("; ".join(r.get("problems") or [])),
        ]
        for sid, r in records
    ]
    return (
        "<section><h2>Verify results</h2>"
        + _table(
            ["snapshot", "verified (UTC)", "result", "data restored", "seconds", "problems"],
            rows,
            "no verify has run yet",
        )
        + "</section>"
    )


def _runs(runs: list[dict[str, Any]]) -> str:
    rows = []
    for r in reversed(runs):
        state = r.get("state")
        level = (
            "ok"
            if state in ("succeeded", "recovered")
            else CRITICAL
            if state in ("not-restored", "started")
            else WARNING
        )
        to = r.get("to")
        rows.append(
            [
                f"<code>{e(r.get('run'))}</code>",
                _time(r.get("started_at")),
                e(f"{r.get('user')}@{r.get('host')}"),
                e(r.get("direction", "upgrade")),
                e(
                    f"{','.join(r.get('from') or []) or 'base'} -> "
                    f"{to if isinstance(to, str) else ','.join(to or []) or 'base'}"
                ),
                f'<span class="level {level}">{e(state)}</span>',
                e(r.get("snapshot") or "-"),
                e(r.get("seconds", "")),
                e(r.get("error") or ""),
            ]
        )
    return (
        "<section><h2>Guarded runs (migrate-safe)</h2>"
        + _table(
            ["run", "started (UTC)", "by", "direction", "from -> to", "outcome", "snapshot", "seconds", "error"],
            rows,
            "no migrate-safe run yet",
        )
        + "</section>"
    )


def _findings_section(findings: list[dict[str, Any]], note: str) -> str:
    rows = [
        [
            f'<span class="level '
            f'{"critical" if f["severity"] == "error" else "warning" if f["severity"] == "warning" else "ok"}">'
            f"{e(f['severity'])}</span>" + (" <small>(allowed)</small>" if f["allowed"] else ""),
            f"<code>{e(f['rule'])}</code>",
            e(f.get("revision")),
            e(".".join(x for x in (f.get("table"), f.get("column")) if x)),
            e(f["message"]),
        ]
        for f in findings
    ]
    return (
        f'<section><h2>Current findings</h2><p class="note">{e(note)}</p>'
        + _table(["severity", "rule", "revision", "target", "message"], rows, "no findings in the pending revisions")
        + "</section>"
    )


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1em 2em;color:#1d232a;\
background:#fbfbfc}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.15em;margin:1.6em 0 .5em;border-bottom:1px solid #d5dae0}
table{border-collapse:collapse;width:100%;font-size:13px}\
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #e6e9ed;vertical-align:top}
th{background:#eef1f4}code{font:12px ui-monospace,monospace}small,.note,.empty{color:#5b6570}
.badge{font-size:.6em;padding:.2em .6em;border-radius:4px;color:#fff;vertical-align:middle}
.badge.healthy{background:#2e7d32}.badge.unhealthy{background:#c62828}
.level{font-weight:600}.level.ok{color:#2e7d32}.level.warning{color:#b26a00}.level.critical{color:#c62828}.level.unknown,.unknown{color:#6b7580}
table.figures{width:auto}svg text{font-size:11px;fill:#5b6570}svg .grid{stroke:#e1e5ea}
polyline{fill:none;stroke-width:2}polyline.data,circle.data,.key.data{stroke:#1565c0;fill:#1565c0;background:#1565c0}
polyline.added{stroke:#ef6c00}circle.added,.key.added{fill:#ef6c00;stroke:#ef6c00;background:#ef6c00}polyline.data,polyline.added{fill:none}
.key{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
"""

# Records a script error in the page itself (a headless test reads it back), then marks the page ready.
_SCRIPT = """
window.onerror = function (message) { document.documentElement.setAttribute("data-error", String(message)); };
document.addEventListener("DOMContentLoaded", function () {
  var now = Date.now();
  document.querySelectorAll("time[datetime]").forEach(function (el) {
    var t = Date.parse(el.getAttribute("datetime"));
    if (!isNaN(t)) { el.title = new Date(t).toString() + " (" + Math.round((now - t) / 3600000) + " h ago)"; }
  });
  document.documentElement.setAttribute("data-ready", "1");
});
"""


def _page(title: str, body: str, status: Status) -> str:
    csp = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
    figures = json.dumps(status.to_dict()).replace("<", "\\u003c")  # no "</script>" can end it early
    return (
        f'<!DOCTYPE html>\n<html lang="en" data-healthy="{str(status.healthy).lower()}"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{e(title)}</title>'
        f"<style>{_CSS}</style><script>{_SCRIPT}</script></head>\n<body>\n{body}\n"
        f'<script type="application/json" id="status-json">{figures}</script>\n</body></html>\n'
    )
