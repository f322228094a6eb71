"""Render a check report: text for people, JSON for programs, SARIF for code scanning,
GitHub workflow commands for pull-request annotations, GitLab Code Quality (Code Climate JSON)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import click

from .. import __version__
from .check import CheckReport
from .engine import Finding
from .rules import Rule

FORMATS = ("text", "json", "sarif", "github", "gitlab")
_SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}
_COLOUR = {"error": "red", "warning": "yellow", "info": "cyan"}


def display_path(path: str | None) -> str | None:
    """A path relative to the working directory when it lies below it, else as it is."""
    if path is None:
        return None
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def first_sentence(text: str) -> str:
    text = " ".join(text.split())
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    return match.group(1) if match else text


def render(report: CheckReport, fmt: str, *, config_path: Path | None = None) -> str:
    renderers: dict[str, Callable[[CheckReport, Path | None], str]] = {
        "text": _text,
        "json": _json,
        "sarif": _sarif,
        "github": _github,
        "gitlab": _gitlab,
    }
    return renderers[fmt](report, config_path)


def _target(f: Finding) -> str:
    if f.table is None:
        return ""
    name = f"{f.schema}.{f.table}" if f.schema else f.table
    return f"{name}.{f.column}" if f.column else name


def _text(report: CheckReport, _config: Path | None) -> str:
    lines: list[str] = []
    for f in report.findings:
        where = display_path(f.file) or "(project)"
        if f.line:
            where += f":{f.line}"
        if f.revision:
            where += f"  [{f.revision}]"
        status = "allowed" if f.allowed else f.severity
        colour = "green" if f.allowed else _COLOUR[f.severity]
        lines.append(f"{where}")
        lines.append(f"  {click.style(status.ljust(7), fg=colour, bold=not f.allowed)}  {f.rule}  {f.message}")
        if f.statement:
            statement = " ".join(f.statement.split())
            lines.append(f"           {statement[:117] + '...' if len(statement) > 120 else statement}")
        if f.allowed:
            lines.append(f"           reviewed: {f.allowed_reason}")
        elif f.category != "hygiene":
            wrapped = textwrap.fill(f"instead: {f.suggestion} (docs/rules/{f.rule}.md)", 100, subsequent_indent="  ")
            lines.extend(textwrap.indent(wrapped, " " * 11).splitlines())
    s = report.summary
    verdict = report.exit_code
    lines.append(
        f"checked {s['revisions']} revision{'s' if s['revisions'] != 1 else ''} "
        f"({report.selection}, {report.dialect}): "
        f"{s['errors']} error{'s' if s['errors'] != 1 else ''}, "
        f"{s['warnings']} warning{'s' if s['warnings'] != 1 else ''}, "
        f"{s['infos']} info, {s['allowed']} allowed"
    )
    if verdict:
        lines.append(click.style(f"failed: findings at or above --fail-on={report.fail_on}", fg="red", bold=True))
    return "\n".join(lines)


def _json(report: CheckReport, _config: Path | None) -> str:
    findings = [{**f.to_dict(), "file": display_path(f.file)} for f in report.findings]
    return json.dumps({"findings": findings, "summary": report.summary}, indent=2)


def _location_of(f: Finding, config: Path | None) -> tuple[str, int]:
    path = f.file or (str(config) if config else "alembic.ini")
    shown = display_path(path) or path
    return Path(shown).as_posix(), f.line or 1


def _sarif(report: CheckReport, config: Path | None) -> str:
    rule_ids = sorted(report.rules)
    index = {rule_id: i for i, rule_id in enumerate(rule_ids)}
    rules = []
    for rule_id in rule_ids:
        rule = report.rules[rule_id]
        help_text = f"{' '.join(rule.why.split())}\n\nInstead: {' '.join(rule.instead.split())}"
        rules.append(
            {
                "id": rule.id,
                "name": "".join(part.capitalize() for part in rule.id.split("-")),
                "shortDescription": {"text": rule.summary},
                "fullDescription": {"text": " ".join(rule.why.split())},
                "help": {"text": help_text, "markdown": help_text},
                "defaultConfiguration": {"level": _SARIF_LEVEL[rule.severity]},
                "properties": {"category": rule.category, "tags": [rule.category, "migration"]},
            }
        )
    results = []
    for f in report.findings:
        uri, line = _location_of(f, config)
        fingerprint = hashlib.sha256(f"{f.rule}|{uri}|{f.revision}|{_target(f)}|{f.message}".encode()).hexdigest()
        result = {
            "ruleId": f.rule,
            "ruleIndex": index[f.rule],
            "level": _SARIF_LEVEL[f.severity],
            "message": {
                "text": f"{f.message}. Instead: {first_sentence(f.suggestion)}"
                if f.category != "hygiene"
                else f.message
            },
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": uri, "uriBaseId": "%SRCROOT%"},
                        "region": {"startLine": line},
                    }
                }
            ],
            "partialFingerprints": {"migrateGuard/v1": fingerprint},
            "properties": {
                "revision": f.revision,
                "schema": f.schema,
                "table": f.table,
                "column": f.column,
                "category": f.category,
            },
        }
        if f.allowed:
            result["suppressions"] = [{"kind": "inSource", "justification": f.allowed_reason or "acknowledged"}]
        results.append(result)
    sarif = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "migrate-guard",
                        "version": __version__,
                        "semanticVersion": __version__,
                        "rules": rules,
                    }
                },
                "results": results,
                "columnKind": "utf16CodeUnits",
            }
        ],
    }
    return json.dumps(sarif, indent=2)


def _escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(value: str) -> str:
    return _escape_data(value).replace(":", "%3A").replace(",", "%2C")


def _github(report: CheckReport, config: Path | None) -> str:
    """GitHub Actions workflow commands: one annotation per finding."""
    lines = []
    for f in report.findings:
        uri, line = _location_of(f, config)
        command = "notice" if f.allowed or f.severity == "info" else f.severity
        title = f"migrate-guard {f.rule}" + (" (allowed)" if f.allowed else "")
        message = f.message
        if f.allowed:
            message += f" -- reviewed: {f.allowed_reason}"
        elif f.category != "hygiene":
            message += f"\nInstead: {first_sentence(f.suggestion)}"
        lines.append(
            f"::{command} file={_escape_property(uri)},line={line},title={_escape_property(title)}"
            f"::{_escape_data(message)}"
        )
    s = report.summary
    lines.append(
        f"migrate-guard: {s['revisions']} revisions, {s['errors']} errors, {s['warnings']} warnings, "
        f"{s['infos']} info, {s['allowed']} allowed"
    )
    return "\n".join(lines)


# GitLab shows these five levels; an allowed (reviewed) finding stays visible as info
_CODE_CLIMATE_SEVERITY = {"error": "critical", "warning": "major", "info": "minor"}


def _gitlab(report: CheckReport, config: Path | None) -> str:
    """The Code Climate JSON subset GitLab reads as a Code Quality report (``artifacts:reports:codequality``)."""
    issues = []
    seen: dict[str, int] = {}
    for f in report.findings:
        path, line = _location_of(f, config)
        # no line or message in the identity: the same finding keeps its fingerprint when code above it moves
        identity = f"{f.rule}|{path}|{f.schema or ''}|{f.table or ''}|{f.column or ''}"
        occurrence = seen.get(identity, 0)
        seen[identity] = occurrence + 1
        description = (
            f"{f.message} -- reviewed: {f.allowed_reason}"
            if f.allowed
            else (f"{f.message}. Instead: {first_sentence(f.suggestion)}" if f.category != "hygiene" else f.message)
        )
        issues.append(
            {
                "description": description,
                "check_name": f.rule,
                "fingerprint": hashlib.sha256(f"{identity}|{occurrence}".encode()).hexdigest(),
                "severity": "info" if f.allowed else _CODE_CLIMATE_SEVERITY[f.severity],
                "location": {"path": path, "lines": {"begin": line}},
            }
        )
    return json.dumps(issues, indent=2)


# --- one rule, explained in plain text (``migrate-guard rules ID``) ----------------------------------


def _plain(text: str) -> str:
    """Prose from a rule file without its Markdown: inline code marks and emphasis go, the words stay."""
    text = re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r"\1 (\2)", text)  # [text](link)
    return re.sub(r"`+|\*\*|__", "", text)


def _paragraphs(text: str, indent: str = "  ") -> list[str]:
    out: list[str] = []
    for paragraph in re.split(r"\n\s*\n", _plain(text).strip()):
        out.extend(textwrap.wrap(" ".join(paragraph.split()), 100, initial_indent=indent, subsequent_indent=indent))
        out.append("")
    return out[:-1]


def rule_text(rule: Rule) -> str:
    """What ``migrate-guard rules ID`` prints: the rule's documentation as plain text for a terminal."""
    severity = rule.severity + (f" ({rule.protected_severity} on protected tables)" if rule.protected_severity else "")
    dialects = "all" if "*" in rule.dialects else ", ".join(rule.dialects)
    target = "<table>.<column>" if "{column}" in rule.message else "<table>"
    matches = ", ".join(
        f"{key} {'matches' if key == 'sql' else 'is'} "
        + " or ".join(
            str(v).lower() if isinstance(v, bool) else str(v) for v in (want if isinstance(want, list) else [want])
        )
        for key, want in rule.match.items()
    )
    lines = [
        f"{rule.id}: {_plain(rule.summary).rstrip('.')}",
        f"category {rule.category}, default severity {severity}, dialects {dialects}",
        "",
        "What it flags",
        *_paragraphs(f"Operations where {matches}. Reported as: {rule.id}: {rule.message}"),
        "",
        "Why it is dangerous",
        *_paragraphs(rule.why),
        "",
        "What to do instead",
        *_paragraphs(rule.instead),
        "",
        "Flagged:",
        *textwrap.indent(textwrap.dedent(rule.example_bad).strip("\n"), "    ").splitlines(),
        "",
        "Safer:",
        *textwrap.indent(textwrap.dedent(rule.example_good).strip("\n"), "    ").splitlines(),
        "",
        "Allowing it after review (the reason after -- is required), in the revision file:",
        f"    # migrate-guard: allow {rule.id} {target} -- <reason>",
        f"or for one run: --allow {rule.id}:{target}",
        f'Severity everywhere, in migrate-guard.toml under [severity]: {rule.id} = "error" (or "off")',
    ]
    return "\n".join(lines)
