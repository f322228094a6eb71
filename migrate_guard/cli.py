"""Command-line interface: parse, call one use case, print. Nothing else lives here."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import __version__
from .config import DIALECTS, FAIL_ON_CHOICES, Project, load_project
from .errors import EXIT_USAGE, GuardError

PROG = "migrate-guard"


class GuardGroup(click.Group):
    """Turns every user-caused error into one line on stderr and its documented exit code."""

    def main(self, args: Any = None, prog_name: str | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        try:
            rv = super().main(args=args, prog_name=prog_name, standalone_mode=False, **kwargs)
        except GuardError as exc:
            _fail(exc.message, exc.exit_code)
        except click.exceptions.Abort:
            _fail("aborted", 1)
        except click.ClickException as exc:
            hint = f" (see {exc.ctx.command_path} --help)" if getattr(exc, "ctx", None) else ""
            _fail(" ".join(exc.format_message().split()) + hint, EXIT_USAGE)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as exc:  # a bug: still one line, with the way to see more
            if os.environ.get("MIGRATE_GUARD_DEBUG"):
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} (set MIGRATE_GUARD_DEBUG=1 for the traceback)", EXIT_USAGE)
        sys.exit(rv if isinstance(rv, int) else 0)


def _fail(message: str, code: int) -> None:
    click.echo(f"{PROG}: error: {message}", err=True)
    sys.exit(code)


def _project_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``-c`` and ``--url`` on every command too, so ``migrate-safe -c x.ini`` works as well."""
    fn = click.option("--url", "url", default=None, help="Database URL; overrides sqlalchemy.url.")(fn)
    fn = click.option(
        "-c", "--config", "config", default=None, type=click.Path(dir_okay=False),
        help="alembic.ini or pyproject.toml ([tool.alembic]); default ./alembic.ini or $ALEMBIC_CONFIG.",
    )(fn)
    return fn


def _project(ctx: click.Context, config: str | None, url: str | None) -> Project:
    root = ctx.find_root().params
    return load_project(config or root.get("config"), url or root.get("url"))


@click.group(cls=GuardGroup, context_settings={"help_option_names": ["-h", "--help"]})
@_project_options
@click.version_option(__version__, "-V", "--version", prog_name=PROG)
def cli(config: str | None, url: str | None) -> None:
    """Make Alembic migrations safe to run against data you cannot afford to lose.

    Exit codes: 0 ok, 1 failed (and restored), 2 usage or configuration error,
    3 blocked by the guard, 4 failed and NOT restored.
    """


@cli.command()
@_project_options
@click.option("--range", "range_", metavar="FROM:TO", help="Revisions in this range, e.g. base:heads or abc123:heads.")
@click.option("--revision", "revisions", multiple=True, metavar="REV", help="Only this revision (id or file path); repeatable.")
@click.option("--since", metavar="GIT_REF", help="Only revisions whose files changed since GIT_REF (the PR gate).")
@click.option("--dialect", type=click.Choice(DIALECTS), help="SQL dialect to render in (default: from the URL, else sqlite).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif", "github"]), default="text", show_default=True)
@click.option("--fail-on", type=click.Choice(FAIL_ON_CHOICES), default=None, help="Lowest severity that fails the run [default: error].")
@click.option("--allow", multiple=True, metavar="RULE[:TABLE[.COLUMN]]", help="Acknowledge findings of RULE (on TABLE); repeatable.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write the report to a file instead of stdout.")
@click.pass_context
def check(
    ctx: click.Context, config: str | None, url: str | None, range_: str | None, revisions: tuple[str, ...],
    since: str | None, dialect: str | None, fmt: str, fail_on: str | None, allow: tuple[str, ...], output: str | None,
) -> int:
    """Find destructive and breaking operations in revisions, without a database.

    By default checks the revisions the database has not run yet (all of them when it does not
    answer). Exits 3 when a finding at or above --fail-on is not acknowledged.
    """
    from .check import CheckOptions, run_check
    from .report import render

    project = _project(ctx, config, url)
    report = run_check(
        project, CheckOptions(range=range_, revisions=revisions, since=since, dialect=dialect, allow=allow, fail_on=fail_on)
    )
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    text = render(report, fmt, config_path=project.config_path)
    if output:
        Path(output).write_text(text + "\n", encoding="utf-8")
    else:
        click.echo(text)
    return report.exit_code


@cli.command("rules")
@_project_options
@click.argument("rule_id", required=False)
@click.pass_context
def rules_cmd(ctx: click.Context, config: str | None, url: str | None, rule_id: str | None) -> None:
    """List the rules, or show one rule's explanation."""
    from .analysis.rules import load_rules
    from .check import rules_for
    from .errors import UsageError

    try:
        rules = rules_for(_project(ctx, config, url))
    except GuardError:
        rules = load_rules()  # outside a project: the built-in catalogue
    if rule_id is None:
        for rule in sorted(rules.values(), key=lambda r: (r.category, r.id)):
            click.echo(f"{rule.id:38} {rule.category:12} {rule.severity:8} {rule.summary}")
        return
    if rule_id not in rules:
        raise UsageError(f"unknown rule {rule_id!r}")
    from .analysis.ruledocs import render_rule_page

    click.echo(render_rule_page(rules[rule_id]))


@cli.command("migrate-safe")
@_project_options
@click.argument("target", default="heads")
@click.pass_context
def migrate_safe(ctx: click.Context, config: str | None, url: str | None, target: str) -> None:
    """Upgrade to TARGET the guarded way: lock, check, back up, migrate, verify, roll back or restore."""
    from .errors import UsageError

    raise UsageError("migrate-safe is not available in this version yet; run `migrate-guard check` before `alembic upgrade`")


def main() -> None:
    cli(prog_name=PROG)


def migrate_safe_main() -> None:
    """The ``migrate-safe`` console script: the same program, its ``migrate-safe`` command."""
    cli(args=["migrate-safe", *sys.argv[1:]], prog_name="migrate-safe")
