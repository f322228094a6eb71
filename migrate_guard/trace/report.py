"""Render a trace: per statement what the server did, then the findings (check's renderers for
SARIF, GitHub and GitLab, which carry findings only)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..analysis.report import display_path, render
from .run import RevisionTrace, StatementTrace, TraceReport

FORMATS = ("text", "json", "sarif", "github", "gitlab")


def render_trace(report: TraceReport, fmt: str, *, config_path: Path | None = None) -> str:
    if fmt == "json":
        return _json(report)
    if fmt == "text":
        return _text(report, config_path)
    return render(report.check, fmt, config_path=config_path)


def _json(report: TraceReport) -> str:
    revisions = []
    for r in report.revisions:
        item = r.to_dict()
        item["file"] = display_path(r.file)
        revisions.append(item)
    findings = [{**f.to_dict(), "file": display_path(f.file)} for f in report.findings]
    return json.dumps(
        {
            "server": report.server,
            "scratch": report.scratch,
            "revisions": revisions,
            "findings": findings,
            "summary": report.check.summary,
        },
        indent=2,
    )


def _text(report: TraceReport, config_path: Path | None) -> str:
    where = report.scratch.get("database")
    how = "in place, rolled back" if report.scratch.get("in_place") else "scratch copy"
    lines = [click.style(f"trace on {report.server} ({how}: {where})", bold=True)]
    for r in report.revisions:
        lines.extend(_revision(r))
    if not report.revisions:
        lines.append("no pending revisions")
    lines.append("")
    lines.append(render(report.check, "text", config_path=config_path))
    return "\n".join(lines)


def _revision(r: RevisionTrace) -> list[str]:
    state = click.style(f"failed: {r.error}", fg="red") if r.error else click.style("ok", fg="green")
    out = [f"{display_path(r.file)}  [{r.revision}]  {state}"]
    for st in r.statements:
        out.append(f"  {st.line or '?':>4}  {st.duration_ms:8.1f} ms  {st.sql[:100]}")
        for detail in _details(st):
            out.append(f"                       {detail}")
    return out


def _details(st: StatementTrace) -> list[str]:
    found = []
    if st.error:
        found.append(click.style(f"error: {st.error}", fg="red"))
    if st.algorithm:
        found.append(f"algorithm: {st.algorithm}")
    for lock in st.locks:
        blocks = ", ".join(lock["blocks"]) or "nothing"
        colour = "red" if "SELECT" in lock["blocks"] else ("yellow" if len(lock["blocks"]) > 1 else None)
        found.append(click.style(f"{lock['mode']} on {lock['kind']} {lock['relation']} (blocks {blocks})", fg=colour))
    if st.rewrites:
        found.append(click.style(f"rewrites {', '.join(st.rewrites)}", fg="red"))
    if st.seq_scans:
        found.append("scans " + ", ".join(f"{t} x{n}" for t, n in st.seq_scans.items()))
    if st.rows_written:
        found.append("writes " + ", ".join(f"{t}: {n} rows" for t, n in st.rows_written.items()))
    return found
