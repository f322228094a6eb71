"""Generate the rule reference (``docs/rules/``) from the rule files, so the two cannot drift.

Regenerate with ``python -m migrate_guard.analysis.ruledocs docs/rules``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from .rules import CATEGORIES, Rule, load_rules

GENERATED = (
    "<!-- Generated from rules/{source} by `python -m migrate_guard.analysis.ruledocs docs/rules`; do not edit. -->"
)


def _dialects(rule: Rule) -> str:
    return "all" if "*" in rule.dialects else ", ".join(rule.dialects)


def _severity(rule: Rule) -> str:
    if rule.protected_severity:
        return f"{rule.severity} ({rule.protected_severity} on protected tables)"
    return rule.severity


def _match_text(rule: Rule) -> str:
    parts = []
    for key, want in rule.match.items():
        shown = " or ".join(f"`{_toml_value(w)}`" for w in (want if isinstance(want, list) else [want]))
        verb = "matches" if key == "sql" else "is"
        parts.append(f"`{key}` {verb} {shown}")
    return ", ".join(parts)


def _toml_value(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _target(rule: Rule) -> str:
    return "<table>.<column>" if "{column}" in rule.message else "<table>"


def render_rule_page(rule: Rule) -> str:
    """The Markdown reference page for one rule."""
    target = _target(rule)
    lines = [
        GENERATED.format(source=f"{rule.id}.toml"),
        "",
        f"# {rule.id}",
        "",
        f"**Category:** {rule.category} · **Default severity:** {_severity(rule)} · **Dialects:** {_dialects(rule)}",
        "",
        "## What it flags",
        "",
        f"{rule.summary.rstrip('.')}. It matches operations where {_match_text(rule)}, and reports:",
        "",
        "```text",
        f"{rule.id}: {rule.message}",
        "```",
        "",
        "## Why it is dangerous",
        "",
        rule.why,
        "",
        "## What to do instead",
        "",
        rule.instead,
        "",
        "## Example",
        "",
        "Flagged:",
        "",
        "```python",
        rule.example_bad,
        "```",
        "",
        "Safer:",
        "",
        "```python",
        rule.example_good,
        "```",
        "",
        "## Allowing it after review",
        "",
        "If you have reviewed the operation and accept the risk, acknowledge it with a comment in the "
        "revision file; the reason after `--` is required:",
        "",
        "```python",
        f"# migrate-guard: allow {rule.id} {target} -- <reason>",
        "```",
        "",
        f"or for a single run on the command line: `--allow {rule.id}:{target}`.",
        "",
        "To change how seriously the rule is taken everywhere, set its severity in `migrate-guard.toml` "
        '(`"info"`, `"warning"`, `"error"`, or `"off"` to disable it):',
        "",
        "```toml",
        "[severity]",
        f'{rule.id} = "error"',
        "```",
    ]
    if rule.protected_severity:
        lines += [
            "",
            f"On a protected table the finding is reported as `{rule.protected_severity}` whatever the "
            "default severity.",
        ]
    return "\n".join(lines) + "\n"


def _order(rule: Rule) -> tuple[int, str]:
    return CATEGORIES.index(rule.category), rule.id


def render_index(rules: Iterable[Rule]) -> str:
    """``docs/rules/README.md``: one table row per rule, linking to its page."""
    lines = [
        GENERATED.format(source="*.toml"),
        "",
        "# Rules",
        "",
        "Each rule is defined in `rules/<id>.toml`. Destructive rules are raised to their protected "
        "severity on protected tables. See each page for why the operation is risky, the safe "
        "alternative, and how to acknowledge a reviewed finding.",
        "",
        "| Rule | Category | Severity | Dialects | Summary |",
        "| --- | --- | --- | --- | --- |",
    ]
    for rule in sorted(rules, key=_order):
        cells = [f"[{rule.id}]({rule.id}.md)", rule.category, _severity(rule), _dialects(rule), rule.summary]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    return "\n".join(lines)


def write_docs(out_dir: Path, rules: Iterable[Rule]) -> list[Path]:
    """Write one page per rule plus README.md into ``out_dir``; remove generated pages of deleted rules."""
    rules = list(rules)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for rule in rules:
        written.append(out_dir / f"{rule.id}.md")
        written[-1].write_text(render_rule_page(rule), encoding="utf-8")
    written.append(out_dir / "README.md")
    written[-1].write_text(render_index(rules), encoding="utf-8")
    # Only pages carrying our marker are removed, so hand-written files in out_dir survive.
    marker = GENERATED.split("{source}")[0]
    for page in out_dir.glob("*.md"):
        if page not in written and page.read_text(encoding="utf-8").startswith(marker):
            page.unlink()
    return written


def main(argv: list[str]) -> int:
    out_dir = Path(argv[0]) if argv else Path("docs/rules")
    paths = write_docs(out_dir, load_rules().values())
    print(f"wrote {len(paths)} files to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
