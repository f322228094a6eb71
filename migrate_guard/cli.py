"""Command-line interface: parse, call one use case, print. Nothing else lives here."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import click

from . import __version__
from .allocator import keep_freed_memory
from .config import DIALECTS, FAIL_ON_CHOICES, Project, load_project
from .errors import EXIT_FAILED, EXIT_USAGE, GuardError, one_line
from .progress import for_output, human_bytes

PROG = "migrate-guard"


class GuardGroup(click.Group):
    """Turns every user-caused error into one line on stderr and its documented exit code."""

    def main(self, args: Any = None, prog_name: str | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        keep_freed_memory()
        try:
            rv = super().main(args=args, prog_name=prog_name, standalone_mode=False, **kwargs)
        except GuardError as exc:
            _fail(exc.message, exc.exit_code)
        except click.exceptions.Abort:
            _fail("aborted", 1)
        except click.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see {ctx.command_path} --help)" if ctx else ""
            _fail(" ".join(exc.format_message().split()) + hint, EXIT_USAGE)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as exc:  # a bug: still one line, with the way to see more
            if os.environ.get("MIGRATE_GUARD_DEBUG"):
                raise
            from sqlalchemy.exc import DBAPIError

            from .backup.storage import describe_os_error, refused

            if refused(exc):  # a full disk, a read-only filesystem, no permission: the path and why
                _fail(describe_os_error(cast(OSError, exc)), EXIT_FAILED)
            if isinstance(exc, DBAPIError):  # the database refused: unreachable, unknown database, no rights
                _fail(f"database error: {one_line(exc.orig or exc).split(': ', 1)[-1]}", EXIT_USAGE)
            _fail(f"internal error: {one_line(exc)} (set MIGRATE_GUARD_DEBUG=1 for the traceback)", EXIT_USAGE)
        sys.exit(rv if isinstance(rv, int) else 0)


def _fail(message: str, code: int) -> None:
    click.echo(f"{PROG}: error: {message}", err=True)
    sys.exit(code)


_CHECK_OPTIONS = [
    click.option(
        "--dialect", type=click.Choice(DIALECTS), help="SQL dialect to render in (default: from the URL, else sqlite)."
    ),
    click.option(
        "--format",
        "fmt",
        type=click.Choice(["text", "json", "sarif", "github", "gitlab"]),
        default="text",
        show_default=True,
    ),
    click.option(
        "--fail-on",
        type=click.Choice(FAIL_ON_CHOICES),
        default=None,
        help="Lowest severity that fails the run [default: error].",
    ),
    click.option(
        "--allow",
        multiple=True,
        metavar="RULE[:TABLE[.COLUMN]]",
        help="Acknowledge findings of RULE (on TABLE); repeatable.",
    ),
]


def _project_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``-c`` and ``--url`` on every command too, so ``migrate-safe -c x.ini`` works as well."""
    fn = click.option("--url", "url", default=None, help="Database URL; overrides sqlalchemy.url.")(fn)
    fn = click.option(
        "-c",
        "--config",
        "config",
        default=None,
        type=click.Path(dir_okay=False),
        help="alembic.ini or pyproject.toml ([tool.alembic]); default ./alembic.ini or $ALEMBIC_CONFIG.",
    )(fn)
    return fn


def _check_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options ``check`` and ``check-files`` share: dialect, format, --fail-on, --allow."""
    for option in reversed(_CHECK_OPTIONS):
        command = option(command)
    return command


def _project(ctx: click.Context, config: str | None, url: str | None) -> Project:
    root = ctx.find_root().params
    chosen = url if url is not None else root.get("url")
    if chosen is not None and not chosen.strip():
        from .errors import UsageError

        raise UsageError("--url is empty: give a database URL, or leave --url out to use sqlalchemy.url")
    return load_project(config or root.get("config"), chosen)


def _say(line: str) -> None:
    """Progress to stderr (the use cases keep going when it is closed: see safe.undo.never_fails)."""
    click.echo(line, err=True)


_ALL_DATABASES = click.option(
    "--all-databases", is_flag=True, help="Every database the repository holds, not only the current one."
)
_NO_LOCK = click.option(
    "--no-lock",
    is_flag=True,
    help="Read the repository without taking its lock (a copy on read-only media is detected by itself).",
)


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
@click.option(
    "--revision", "revisions", multiple=True, metavar="REV", help="Only this revision (id or file path); repeatable."
)
@click.option("--since", metavar="GIT_REF", help="Only revisions whose files changed since GIT_REF (the PR gate).")
@_check_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the report to a file instead of stdout.",
)
@click.option(
    "--server-version",
    metavar="[DIALECT=]VERSION",
    help="The server's version (11, 10.11, 8.0.36) for version-dependent rules; DIALECT=VERSION sets one dialect's.",
)
@click.option(
    "--no-cache", is_flag=True, help="Neither read nor keep .migrate-guard/cache/check/: render every revision."
)
@click.pass_context
def check(
    ctx: click.Context,
    config: str | None,
    url: str | None,
    range_: str | None,
    revisions: tuple[str, ...],
    since: str | None,
    dialect: str | None,
    fmt: str,
    fail_on: str | None,
    allow: tuple[str, ...],
    output: str | None,
    server_version: str | None,
    no_cache: bool,
) -> int:
    """Find destructive and breaking operations in revisions, without a database.

    By default checks the revisions the database has not run yet (all of them when it does not
    answer). Exits 3 when a finding at or above --fail-on is not acknowledged.
    """
    from .analysis.cache import check_command

    def load() -> Project:
        from .config import with_server_version

        project = _project(ctx, config, url)
        project.settings = with_server_version(project.settings, server_version)
        return project

    root = ctx.find_root().params
    result = check_command(
        load,
        dict(range=range_, revisions=revisions, since=since, dialect=dialect, allow=allow, fail_on=fail_on),
        fmt,
        # every option (and -c/--url given before the command) keys a replay, -o and --no-cache apart
        keyed={**root, **{k: v for k, v in ctx.params.items() if k not in ("output", "no_cache")}},
        config=config or root.get("config"),
        use_cache=not no_cache,
    )
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    if output:
        Path(output).write_text(result.text + "\n", encoding="utf-8")
    else:
        click.echo(result.text)
    return result.exit_code


@cli.command()
@_project_options
@click.option("--range", "range_", metavar="FROM:TO", help="Trace these revisions (FROM is one the database ran).")
@click.option("--revision", "revisions", multiple=True, metavar="REV", help="Trace only this revision; repeatable.")
@click.option(
    "--scratch-url",
    metavar="URL",
    help="Server to build the scratch database on (default: the target's own server).",
)
@click.option(
    "--in-place",
    is_flag=True,
    help="Trace in the database itself, in a transaction that is rolled back ([trace] in_place_ok must name it).",
)
@click.option("--sample-rows", type=int, default=0, show_default=True, metavar="N", help="Copy N rows of every table.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "sarif", "github", "gitlab"]),
    default="text",
    show_default=True,
)
@click.option("--fail-on", type=click.Choice(FAIL_ON_CHOICES), default=None, help="Lowest severity that fails the run.")
@click.option(
    "--allow", multiple=True, metavar="RULE[:TABLE[.COLUMN]]", help="Acknowledge findings of RULE; repeatable."
)
@click.option("--lock-timeout", metavar="DURATION", help="lock_timeout for the revisions, as migrate-safe sets it.")
@click.option("--statement-timeout", metavar="DURATION", help="statement_timeout for the revisions.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write the report to a file.")
@click.pass_context
def trace(
    ctx: click.Context,
    config: str | None,
    url: str | None,
    range_: str | None,
    revisions: tuple[str, ...],
    scratch_url: str | None,
    in_place: bool,
    sample_rows: int,
    fmt: str,
    fail_on: str | None,
    allow: tuple[str, ...],
    lock_timeout: str | None,
    statement_timeout: str | None,
    output: str | None,
) -> int:
    """Run the pending revisions on a scratch copy of the database's schema and report what the
    server did: locks per relation, rewrites, scans, failures (and check's findings).

    The scratch database is built on the same server (or --scratch-url) and dropped afterwards; the
    database itself is only read. Exits 3 when a finding at or above --fail-on is not acknowledged.
    """
    from .trace.report import render_trace
    from .trace.run import TraceOptions, run_trace

    project = _project(ctx, config, url)
    options = TraceOptions(
        range=range_,
        revisions=revisions,
        scratch_url=scratch_url,
        in_place=in_place,
        sample_rows=sample_rows,
        allow=allow,
        fail_on=fail_on,
        lock_timeout=lock_timeout,
        statement_timeout=statement_timeout,
    )
    report = run_trace(project, options, say=_say)
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    text = render_trace(report, fmt, config_path=project.config_path)
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
    from .analysis.check import rules_for
    from .analysis.rules import load_rules
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
    from .analysis.report import rule_text

    click.echo(rule_text(rules[rule_id]))


@cli.command("migrate-safe")
@_project_options
@click.argument("target", default="heads")
@click.option("--down", metavar="REV", help="Downgrade to REV instead, guarded the same way.")
@click.option(
    "--dry-run", is_flag=True, help="Print the plan, the findings, the snapshot scope and the SQL; touch nothing."
)
@click.option(
    "--backup-scope",
    type=click.Choice(["affected", "full", "none"]),
    default="affected",
    show_default=True,
    help="Tables in the safety snapshot: those the pending revisions touch (and tables referencing them), "
    "all, or none (needs --yes).",
)
@click.option(
    "--lock-wait",
    type=float,
    default=0,
    show_default=True,
    metavar="SECONDS",
    help="Wait this long for another run's migration lock.",
)
@click.option(
    "--lock-timeout",
    metavar="DURATION",
    help="lock_timeout (PostgreSQL) / lock_wait_timeout (MariaDB) for the migration, e.g. 5s.",
)
@click.option(
    "--statement-timeout",
    metavar="DURATION",
    help="statement_timeout (PostgreSQL) / max_statement_time (MariaDB), e.g. 10m.",
)
@click.option(
    "--allow",
    multiple=True,
    metavar="RULE[:TABLE[.COLUMN]]",
    help="Acknowledge findings of RULE (on TABLE); repeatable.",
)
@click.option("--yes", is_flag=True, help="Answer every question with yes.")
@click.option("--trace", "trace_too", is_flag=True, help="With --dry-run: also trace the revisions on a scratch copy.")
@click.pass_context
def migrate_safe(
    ctx: click.Context,
    config: str | None,
    url: str | None,
    target: str,
    down: str | None,
    dry_run: bool,
    backup_scope: str,
    lock_wait: float,
    lock_timeout: str | None,
    statement_timeout: str | None,
    allow: tuple[str, ...],
    yes: bool,
    trace_too: bool,
) -> int:
    """Upgrade to TARGET (default: heads) the guarded way: lock, check, back up, migrate, verify,
    and on any failure roll back or restore. Exit 0 ok, 1 failed and restored, 2 usage error,
    3 blocked by the guard, 4 failed and NOT restored."""
    from . import safe
    from .analysis.report import render

    project = _project(ctx, config, url)
    if trace_too and (not dry_run or down):
        from .errors import UsageError

        raise UsageError("--trace shows what an upgrade would do: use it with --dry-run (and without --down)")
    options = safe.SafeOptions(
        target=target,
        down=down,
        dry_run=dry_run,
        yes=yes,
        backup_scope=backup_scope,
        lock_wait=lock_wait,
        lock_timeout=lock_timeout,
        statement_timeout=statement_timeout,
        allow=allow,
    )
    with _waiting(DEFAULT_LOCK_WAIT):  # a running backup (an hourly cron) is waited for, not a failure
        result = safe.run(project, options, say=_say)
    if result.report is not None and result.report.findings:
        click.echo(render(result.report, "text", config_path=project.config_path))
    for line in result.lines:
        click.echo(line)
    colour = {0: "green", 3: "yellow"}.get(result.exit_code, "red")
    click.echo(click.style(result.message, fg=colour, bold=result.exit_code != 0), err=result.exit_code != 0)
    if trace_too and result.exit_code in (0, 3):
        from .trace.report import render_trace
        from .trace.run import TraceOptions, run_trace

        traced = run_trace(project, TraceOptions(target=target, allow=allow), say=_say)
        click.echo(render_trace(traced, "text", config_path=project.config_path))
        return result.exit_code or traced.exit_code
    if result.exit_code in (1, 4):
        from .monitor import alerts

        alerts.migrate_safe_failed(project, result.exit_code, result.message, result.snapshot_id, warn=_warn)
    return result.exit_code


@cli.command()
@_project_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--all", "all_", is_flag=True, help="Also the snapshots taken and the verify results, as one timeline.")
@_ALL_DATABASES
@click.pass_context
def history(ctx: click.Context, config: str | None, url: str | None, fmt: str, all_: bool, all_databases: bool) -> None:
    """The journal of migrate-safe runs: who, when, from -> to, snapshot, outcome."""
    import json

    from . import safe

    if all_:
        from .monitor.timeline import events

        timeline = events(_project(ctx, config, url), all_databases=all_databases)
        click.echo(
            json.dumps(timeline, indent=2)
            if fmt == "json"
            else "\n".join(
                f"{e['time'][:19].replace('T', ' ')}  {e['type']:12}  {e['id']:16}  {e['outcome']:12}  {e['detail']}"
                for e in timeline
            )
            or "nothing yet"
        )
        return
    records, problems = safe.history(_project(ctx, config, url), all_databases=all_databases)
    for problem in problems:
        click.echo(f"warning: the journal is damaged: {problem}", err=True)
    if fmt == "json":
        click.echo(json.dumps(records, indent=2))
        return
    if not records:
        click.echo("no migrate-safe runs")
        return
    for r in records:
        errors = sum(f["severity"] == "error" and not f["allowed"] for f in r.get("findings", []))
        click.echo(
            f"{r['started_at'][:19].replace('T', ' ')}  {r['run']}  {r.get('user')}@{r.get('host')}  "
            + (f"{_database_text(r)}  " if all_databases else "")
            + f"{r.get('direction', 'upgrade')} "
            f"{','.join(r.get('from') or []) or 'base'} -> "
            f"{r['to'] if isinstance(r['to'], str) else ','.join(r['to']) or 'base'}  "
            f"{r['state']}  snapshot {r.get('snapshot') or '-'}  {r.get('seconds', '?')}s"
            + (f"  {errors} unreviewed errors" if errors else "")
            + (f"  ({r['error']})" if r.get("error") else "")
        )


@cli.command()
@_project_options
@click.option("--dry-run", is_flag=True, help="Only show what the run left behind and what would be restored.")
@click.option(
    "--abandon", is_flag=True, help="Record the unfinished run as given up, changing nothing (after checking by hand)."
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def recover(ctx: click.Context, config: str | None, url: str | None, dry_run: bool, abandon: bool, yes: bool) -> int:
    """Undo what an interrupted migrate-safe run did to this database: compare it with its state before
    the run; restore nothing when the run left nothing behind, else (after a snapshot of the current
    state) only the tables that differ."""
    from . import safe

    confirm = (lambda q: click.confirm(q, default=False)) if sys.stdin.isatty() else None
    result = safe.recover(
        _project(ctx, config, url), say=_say, yes=yes, dry_run=dry_run, abandon=abandon, confirm=confirm
    )
    click.echo(result.message, err=result.exit_code != 0)
    return result.exit_code


def _database_text(item: dict[str, Any]) -> str:
    from .backup import service

    d = service.database_of(item)
    where = f"{d['host']}/{d['name']}" if d.get("host") else str(d.get("name") or "?")
    return f"{d.get('dialect') or '?'}:{where}"


# --- backups ------------------------------------------------------------------------------------


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


DEFAULT_LOCK_WAIT = "10m"


def _lock_wait_seconds(text: str) -> float:
    """``--lock-wait``: seconds (``600``, ``30s``) or a duration (``10m``, ``1h``); 0 fails at once."""
    import re

    from .errors import UsageError

    value = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?s?", value):
        return float(value.rstrip("s"))
    from .backup.retention import parse_duration

    try:
        return parse_duration(value).total_seconds()
    except GuardError:
        raise UsageError(
            f"--lock-wait {text!r}: expected seconds (600, 30s) or a duration (10m, 1h); 0 fails at once"
        ) from None


_LOCK_WAIT = click.option(
    "--lock-wait",
    "lock_wait",
    default=DEFAULT_LOCK_WAIT,
    show_default=True,
    metavar="DURATION",
    help="Wait this long for another command's repository lock (600, 30s, 10m; 0: fail at once).",
)


def _waiting(lock_wait: str) -> Any:
    """The block waits ``--lock-wait`` for the repository lock, saying once on stderr for whom."""
    from .backup.repository import Repository

    return Repository.waiting_for_lock(_lock_wait_seconds(lock_wait), _say)


@cli.command()
@_project_options
@click.option("--tables", metavar="T,..", help="Only these tables.")
@click.option("--exclude-tables", metavar="T,..", help="All tables but these.")
@click.option("--label", metavar="TEXT", help="A label shown by `list`.")
@click.option("--pin", is_flag=True, help="Never remove this snapshot by retention.")
@click.option("--only-db", is_flag=True, help="Only the database, not the files of [backup] paths.")
@click.option("--only-files", is_flag=True, help="Only the files of [backup] paths (or --paths), not the database.")
@click.option("--paths", "paths", metavar="P,..", help="These files and directories instead of [backup] paths.")
@click.option(
    "--if-older-than",
    metavar="DURATION",
    help="Only when the newest snapshot (with this --label) is older (1h, 1d): for cron.",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_LOCK_WAIT
@click.pass_context
def backup(
    ctx: click.Context,
    config: str | None,
    url: str | None,
    tables: str | None,
    exclude_tables: str | None,
    label: str | None,
    pin: bool,
    only_db: bool,
    only_files: bool,
    paths: str | None,
    if_older_than: str | None,
    fmt: str,
    lock_wait: str,
) -> None:
    """Take a snapshot of the database and of the files in [backup] paths into the backup repository
    (compressed, encrypted when a key is configured, deduplicated against earlier snapshots)."""
    import json

    from .errors import UsageError
    from .monitor import schedule

    project = _project(ctx, config, url)
    if tables and exclude_tables:
        raise UsageError("--tables and --exclude-tables cannot be combined")
    if only_db and (only_files or paths):
        raise UsageError("--only-db leaves the files out: it cannot be combined with --only-files or --paths")
    if only_files and (tables or exclude_tables):
        raise UsageError("--only-files leaves the database out: --tables/--exclude-tables do not apply")
    from .config import backup_path

    try:
        chosen = tuple(backup_path(p) for p in _csv(paths) or []) if paths else None
    except ValueError as exc:
        raise UsageError(f"--paths: {exc}") from None
    settings = project.settings.backup
    files = not only_db and bool(chosen or settings.paths or settings.secret_paths)
    notes: list[str] = []
    with _waiting(lock_wait), for_output(fmt == "json") as progress:
        manifest = schedule.backup(
            project,
            if_older_than=if_older_than,
            warn=_warn,
            url=url,
            tables=_csv(tables),
            exclude=_csv(exclude_tables) or (),
            label=label,
            pin=pin,
            progress=progress,
            database=not only_files,
            files=files or only_files,
            paths=chosen,
            warnings=notes,
        )
    for note in notes:
        click.echo(f"{PROG}: warning: {note}", err=True)
    if isinstance(manifest, schedule.Skipped):
        click.echo(json.dumps({"skipped": True, "reason": manifest.reason}) if fmt == "json" else manifest.reason)
        return
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    k: manifest[k]
                    for k in (
                        "id",
                        "created_at",
                        "label",
                        "revision",
                        "dialect",
                        "rows",
                        "bytes",
                        "stored_bytes",
                        "encrypted",
                        "pinned",
                        "contents",
                    )
                }
                | _files_summary(manifest)
            )
        )
        return
    held = manifest.get("files")
    parts = [f"{len(manifest['tables'])} tables, {manifest['rows']} rows"] if "database" in manifest["contents"] else []
    if held:
        parts.append(f"{held['count']} files ({human_bytes(held['bytes'])})")
    click.echo(
        f"snapshot {manifest['id']}: {', '.join(parts)}, "
        f"{human_bytes(manifest['bytes'])} of data, {human_bytes(manifest['stored_bytes'])} added to the repository"
        + (", encrypted" if manifest["encrypted"] else "")
    )


def _files_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    held = manifest.get("files")
    if not held:
        return {}
    return {"files": {k: held[k] for k in ("count", "bytes", "paths", "changed", "missing")}}


@cli.command("list")
@_project_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_ALL_DATABASES
@click.pass_context
def list_cmd(ctx: click.Context, config: str | None, url: str | None, fmt: str, all_databases: bool) -> None:
    """List the current database's snapshots in the backup repository, oldest first."""
    import json

    from .backup import service

    snapshots, warnings = service.list_snapshots(_project(ctx, config, url), all_databases=all_databases)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if fmt == "json":
        click.echo(json.dumps(snapshots, indent=2))
        return
    if not snapshots:
        click.echo("no snapshots")
        return
    where = [_database_text(s) for s in snapshots]
    width = max(len("DATABASE"), *(len(w) for w in where))
    click.echo(
        f"{'ID':16}  {'CREATED (UTC)':20}  {'DATABASE':{width}}  {'REVISION':12}  {'TABLES':>6}  {'ROWS':>10}  "
        f"{'FILES':>6}  {'SIZE':>10}  FLAGS  LABEL"
    )
    for s, w in zip(snapshots, where, strict=True):
        flags = (
            ("P" if s["pinned"] else "-")
            + ("E" if s["encrypted"] else "-")
            + ("V" if s["verified_at"] else "-")
            + ("L" if s["lost_data"] else "-")
        )
        click.echo(
            f"{s['id']:16}  {s['created_at'][:19].replace('T', ' '):20}  {w:{width}}  "
            f"{','.join(s['revision']) or 'base':12}  "
            f"{len(s['tables']) if 'database' in s['contents'] else '-':>6}  "
            f"{s['rows'] if 'database' in s['contents'] else '-':>10}  "
            f"{'-' if s['files'] is None else s['files']:>6}  "
            f"{human_bytes(s['bytes']):>10}  {flags:5}  {s['label'] or ''}"
        )


@cli.command()
@_project_options
@click.argument("snapshot_id", required=False)
@click.option("--all", "all_", is_flag=True, help="Verify every snapshot.")
@click.option("--read-data", is_flag=True, help="Also restore into a scratch database and compare row counts.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_NO_LOCK
@click.pass_context
def verify(
    ctx: click.Context,
    config: str | None,
    url: str | None,
    snapshot_id: str | None,
    all_: bool,
    read_data: bool,
    fmt: str,
    no_lock: bool,
) -> int:
    """Check a snapshot's blobs (checksums and authentication tags); exit 1 when any is damaged."""
    import json

    from .backup import service
    from .errors import UsageError

    if bool(snapshot_id) == all_:
        raise UsageError("name a snapshot ID or pass --all")
    project = _project(ctx, config, url)
    notes: list[str] = []
    with for_output(fmt == "json") as progress:
        wanted = None if all_ or snapshot_id is None else [snapshot_id]
        results = service.verify(
            project, wanted, read_data=read_data, progress=progress, warnings=notes, no_lock=no_lock
        )
    for note in notes:
        click.echo(f"warning: {note}", err=True)
    if fmt == "json":
        click.echo(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        for r in results:
            click.echo(
                f"snapshot {r.snapshot}: {'ok' if r.ok else 'DAMAGED'}"
                + (" (data restored and counted)" if r.read_data and r.ok else "")
            )
            for problem in r.problems:
                click.echo(f"  {problem}")
    damaged = {r.snapshot: r.problems for r in results if not r.ok}
    if damaged:
        from .monitor import alerts

        alerts.verify_failed(project, damaged, warn=_warn)
    return 1 if damaged else 0


@cli.command()
@_project_options
@click.option("--dry-run", is_flag=True, help="Only report: remove nothing.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def repair(ctx: click.Context, config: str | None, url: str | None, dry_run: bool, fmt: str) -> int:
    """Read every blob; remove the damaged ones so the next backup stores them again; name the snapshots
    that lost data. Exit 1 when anything was damaged or missing."""
    import json

    from .backup.repair import repair as run_repair

    with for_output(fmt == "json") as progress:
        result = run_repair(_project(ctx, config, url), dry_run=dry_run, progress=progress)
    if fmt == "json":
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        verb = "would remove" if dry_run else "removed"
        click.echo(f"read {result.checked} blobs: {len(result.damaged)} damaged or missing, {verb} {result.removed}")
        for blob, problem in sorted(result.damaged.items()):
            click.echo(f"  {problem}" if blob in problem else f"  blob {blob}: {problem}")
        for sid, blobs in result.lost.items():
            click.echo(f"snapshot {sid} lost data ({len(blobs)} blobs): `prune` or `forget {sid}` removes it")
        for note in result.unreadable_manifests:
            click.echo(f"manifest unreadable: {note}")
        for sid, at in result.missing_manifests:
            click.echo(f"snapshot {sid} (taken {at}): its manifest was deleted outside migrate-guard")
        if result.damaged:
            click.echo("the next backup stores again every damaged blob whose data the database still holds")
    bad = result.damaged or result.unreadable_manifests or result.missing_manifests
    return 1 if bad else 0


@cli.command()
@_project_options
@click.argument("snapshot_id", required=False)
@click.option(
    "--before", metavar="TIME", help="The newest snapshot taken before TIME (ISO 8601, or a duration ago: 2h)."
)
@click.option("--at-revision", metavar="REV", help="The newest snapshot taken at Alembic revision REV.")
@click.option("--tables", metavar="T,..", help="Restore only these tables; the others are left alone.")
@click.option("--to-url", metavar="URL", help="Restore into this database instead.")
@click.option("--db", "only_db", is_flag=True, help="Only the database (default: the database and the files).")
@click.option("--files", "only_files", is_flag=True, help="Only the files (default: the database and the files).")
@click.option("--to", "to_dir", metavar="DIR", help="Restore the files beneath DIR instead of in place.")
@click.option("--path", "file_paths", metavar="P", multiple=True, help="Only this file or directory (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print the plan and touch nothing.")
@click.option("--no-pre-snapshot", is_flag=True, help="Do not snapshot the current state first.")
@click.option(
    "--into-other-database", is_flag=True, help="Allow restoring a snapshot into a database it was not taken from."
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def restore(
    ctx: click.Context,
    config: str | None,
    url: str | None,
    snapshot_id: str | None,
    before: str | None,
    at_revision: str | None,
    tables: str | None,
    to_url: str | None,
    only_db: bool,
    only_files: bool,
    to_dir: str | None,
    file_paths: tuple[str, ...],
    dry_run: bool,
    no_pre_snapshot: bool,
    into_other_database: bool,
    yes: bool,
) -> None:
    """Restore a snapshot into the database (all of it, or --tables) and its files in place (or --to DIR)."""
    import sys as _sys

    from .backup import service
    from .backup.files import configured_paths
    from .backup.manifest import holds_database, holds_files
    from .errors import UsageError

    if only_db and only_files:
        raise UsageError("--db and --files: pass neither to restore both")
    project = _project(ctx, config, url)
    repo = service.open_repository(project)
    files_asked = bool(to_dir or file_paths)
    target = service.current_database(project, to_url) if not only_files else None
    snapshot = service.select_snapshot(repo, snapshot_id, before, at_revision, target, only_files or files_asked)
    has_db, has_files = holds_database(snapshot), holds_files(snapshot)
    if only_db and not has_db:
        raise UsageError(f"snapshot {snapshot['id']} holds no database (a backup --only-files)")
    if only_files and not has_files:
        raise UsageError(f"snapshot {snapshot['id']} holds no files")
    db_asked = bool(tables or to_url)
    want_db = has_db and not only_files and (only_db or not files_asked or db_asked)
    want_files = has_files and not only_db and (only_files or not db_asked or files_asked)
    if want_files and not (only_files or files_asked) and not configured_paths(project.settings.backup):
        click.echo("files: not restored (no [backup] paths here); --files --to DIR restores them elsewhere")
        want_files = False
    if files_asked and not want_files:
        raise UsageError(f"snapshot {snapshot['id']} holds no files" if not has_files else "--to/--path are for files")
    plan = files_plan = None
    if want_db:
        plan = service.plan_restore(
            project,
            snapshot,
            _csv(tables),
            to_url,
            pre_snapshot=not no_pre_snapshot,
            into_other_database=into_other_database,
        )
        for line in plan.describe():
            click.echo(line)
    if want_files:
        files_plan = service.plan_files_restore(project, snapshot, to_dir, file_paths)
        for line in files_plan.describe():
            click.echo(line)
        if files_plan.replaces and not no_pre_snapshot and to_dir is None:
            click.echo("the files it replaces are kept in a snapshot first")
    interrupted = service.unfinished_restores(repo, target) if want_db else []
    for r in interrupted:
        click.echo(f"an earlier restore of snapshot {r['snapshot']} into it, started {r['started_at']}, did not finish")
    if dry_run:
        click.echo("dry run: nothing changed")
        return
    if not yes:
        if not _sys.stdin.isatty():
            raise UsageError("restore replaces data: pass --yes to confirm (no terminal to ask on)")
        click.confirm("go ahead?", abort=True)
    befores = []
    if plan is not None:
        with for_output(False) as progress:
            pre = service.restore(project, plan, to_url=to_url, progress=progress)
        if pre:
            befores.append(f"the state before is snapshot {pre['id']}")
    if files_plan is not None:
        written, files_pre = service.restore_files_of(
            project, snapshot, files_plan, pre_snapshot=not no_pre_snapshot, to_dir=to_dir, paths=file_paths
        )
        click.echo(f"{written} file entries written {files_plan.into}")
        if files_pre:
            befores.append(f"the files before are snapshot {files_pre['id']}")
    click.echo(f"restored snapshot {snapshot['id']}" + (f"; {'; '.join(befores)}" if befores else ""))
    if plan is not None:
        left = service.unfinished_restores(repo, target)
        for r in interrupted:
            if r not in left:
                click.echo(
                    f"the interrupted restore of snapshot {r['snapshot']} (started {r['started_at']}) is completed"
                )


@cli.command()
@_project_options
@click.option("--keep-last", type=int)
@click.option("--keep-hourly", type=int)
@click.option("--keep-daily", type=int)
@click.option("--keep-weekly", type=int)
@click.option("--keep-monthly", type=int)
@click.option("--keep-yearly", type=int)
@click.option("--keep-within", metavar="DURATION", help="Keep everything newer than this (7d, 36h).")
@click.option("--max-size", metavar="SIZE", help="Then remove the oldest until the repository fits (10GB).")
@click.option("--dry-run", is_flag=True, help="List what would be removed, and why each kept snapshot is kept.")
@_ALL_DATABASES
@_LOCK_WAIT
@click.pass_context
def prune(
    ctx: click.Context,
    /,
    config: str | None,
    url: str | None,
    dry_run: bool,
    all_databases: bool,
    lock_wait: str,
    **policy: Any,
) -> None:
    """Remove the current database's snapshots the retention policy does not keep, then every blob no
    snapshot names (also those an interrupted backup left, when no snapshot goes).

    Per database, never removes the newest snapshot, a pinned one, the last one taken before the current
    revision, or the safety snapshot of a run that did not finish or was not restored.
    """
    from .backup import service

    with _waiting(lock_wait):
        result = service.prune(_project(ctx, config, url), policy, dry_run=dry_run, all_databases=all_databases)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    for snapshot_id, reasons in result.keep.items():
        click.echo(f"keep   {snapshot_id}  {', '.join(reasons)}")
    for snapshot_id in result.remove:
        click.echo(f"{'would remove' if dry_run else 'remove'} {snapshot_id}")
    click.echo(
        f"{'would remove' if dry_run else 'removed'} {len(result.remove)} snapshots, "
        f"{result.freed_blobs} blobs, {human_bytes(result.freed_bytes)}"
    )


@cli.command()
@_project_options
@click.argument("snapshot_id")
@_LOCK_WAIT
@click.pass_context
def forget(ctx: click.Context, config: str | None, url: str | None, snapshot_id: str, lock_wait: str) -> None:
    """Remove one snapshot and the blobs only it used (what it freed is reported; `prune` reclaims the rest)."""
    from .backup import service

    with _waiting(lock_wait):
        removed, blobs, freed = service.forget(_project(ctx, config, url), snapshot_id)
    click.echo(f"removed snapshot {removed}, {blobs} blobs, {human_bytes(freed)}")


def _pin(ctx: click.Context, config: str | None, url: str | None, snapshot_id: str, lock_wait: str, on: bool) -> None:
    from .backup import service

    with _waiting(lock_wait):
        sid, changed = service.set_pinned(_project(ctx, config, url), snapshot_id, on)
    state = "pinned" if on else "unpinned"
    click.echo(f"snapshot {sid} {state}" if changed else f"snapshot {sid} was {state} already")


@cli.command()
@_project_options
@click.argument("snapshot_id")
@_LOCK_WAIT
@click.pass_context
def pin(ctx: click.Context, config: str | None, url: str | None, snapshot_id: str, lock_wait: str) -> None:
    """Pin a snapshot: retention (`prune`) never removes it, and `forget` refuses it."""
    _pin(ctx, config, url, snapshot_id, lock_wait, True)


@cli.command()
@_project_options
@click.argument("snapshot_id")
@_LOCK_WAIT
@click.pass_context
def unpin(ctx: click.Context, config: str | None, url: str | None, snapshot_id: str, lock_wait: str) -> None:
    """Unpin a snapshot: retention may remove it again."""
    _pin(ctx, config, url, snapshot_id, lock_wait, False)


@cli.group()
def key() -> None:
    """Encryption keys for the backup repository."""


@key.command("generate")
def key_generate() -> None:
    """Print a new random key (base64, 32 bytes) for MIGRATE_GUARD_KEY or a key file."""
    from .backup.crypto import generate_key

    click.echo(generate_key())


@key.command("add")
@_project_options
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False),
    help="Read the key from this file (base64, one line) instead of backup.key_file.",
)
@_LOCK_WAIT
@click.pass_context
def key_add(ctx: click.Context, config: str | None, url: str | None, key_file: str | None, lock_wait: str) -> None:
    """Encrypt an unencrypted repository with the key (MIGRATE_GUARD_KEY, else --key-file or
    backup.key_file, else MIGRATE_GUARD_PASSPHRASE): every blob, manifest, state file and the journal is
    sealed under it. Safe to interrupt: run it again to finish."""
    from .backup.rekey import add_key

    with _waiting(lock_wait):
        done = add_key(_project(ctx, config, url), key_file, say=_say)
    click.echo(
        f"encrypted the repository at {done.location}: {done.snapshots} snapshots, {done.blobs} blobs "
        f"({done.written} written now), {done.journal_records} journal records, {done.state_files} state files; "
        f"{done.removed} unencrypted blobs removed"
        if not done.resumed
        else f"finished encrypting the repository at {done.location}: {done.removed} unencrypted blobs removed"
    )
    click.echo("keep the key safe: without it nothing in this repository can be restored", err=True)


# --- integrations -------------------------------------------------------------------------------


@cli.command("check-files")
@_project_options
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@_check_options
@click.pass_context
def check_files(
    ctx: click.Context,
    config: str | None,
    url: str | None,
    files: tuple[str, ...],
    dialect: str | None,
    fmt: str,
    fail_on: str | None,
    allow: tuple[str, ...],
) -> int:
    """`check --revision FILE` for each revision FILE, against the Alembic project it lies in (the nearest
    alembic.ini above it, unless -c or $ALEMBIC_CONFIG says). Other files are skipped. For pre-commit
    and Alembic's post_write_hooks; exits 3 on findings at or above --fail-on."""
    from .analysis.check import CheckOptions
    from .analysis.report import render
    from .errors import UsageError
    from .integrations.hooks import check_files as run_files

    root = ctx.find_root().params
    result = run_files(
        files,
        CheckOptions(dialect=dialect, allow=allow, fail_on=fail_on),
        config=config or root.get("config"),
        url=url or root.get("url"),
    )
    if len(result.reports) > 1 and fmt in ("json", "sarif", "gitlab"):
        raise UsageError(
            f"--format {fmt} takes the files of one project; these span {len(result.reports)} "
            "(run once per project with -c)"
        )
    if not result.reports:
        click.echo(f"note: none of {len(files)} files is an Alembic revision; nothing to check", err=True)
    for project, report in result.reports:
        for note in report.notes:
            click.echo(f"note: {note}", err=True)
        click.echo(render(report, fmt, config_path=project.config_path))
    return result.exit_code


# --- operations: status, alerts, the HTML page ----------------------------------------------------


def _warn(problem: str) -> None:
    """An alert that could not be sent is a warning: it never changes the command's own outcome."""
    click.echo(f"{PROG}: warning: {problem}", err=True)


@cli.command("status")
@_project_options
@click.option("--format", "fmt", type=click.Choice(["text", "json", "prometheus"]), default="text", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write to this file atomically (for the node-exporter textfile collector).",
)
@click.option(
    "--alert", is_flag=True, help="Alert through [alerts] when unhealthy (once per window), and when healthy again."
)
@click.pass_context
def status_cmd(
    ctx: click.Context, config: str | None, url: str | None, fmt: str, output: str | None, alert: bool
) -> int:
    """Is the guard healthy? Snapshot age, repository size, free space, verify results, migrate-safe
    outcomes, unfinished runs, the database, pending revisions. Exit 0 healthy, 1 unhealthy."""
    import json

    from .monitor import alerts
    from .monitor import status as monitor

    project = _project(ctx, config, url)
    result = monitor.evaluate(project)
    if fmt == "json":
        text = json.dumps(result.to_dict(), indent=2)
    elif fmt == "prometheus":
        text = monitor.render_prometheus(result).rstrip("\n")
    else:
        text = monitor.render_text(result)
    if output:
        monitor.write_atomically(output, text + "\n")
    else:
        click.echo(text)
    if alert:
        alerts.status_alert(project, result, warn=_warn)
    return result.exit_code


@cli.command("serve")
@_project_options
@click.option(
    "--listen",
    default="127.0.0.1:9466",
    show_default=True,
    metavar="HOST:PORT",
    help="Address to listen on; [::1]:9466 for IPv6, port 0 picks a free one.",
)
@click.option(
    "--interval",
    type=float,
    default=30.0,
    show_default=True,
    help="Evaluate the status at most once every this many seconds; requests in between get the cached result.",
)
@click.pass_context
def serve_cmd(ctx: click.Context, config: str | None, url: str | None, listen: str, interval: float) -> int:
    """Read-only HTTP for uptime monitors: GET /health (200 healthy, 503 unhealthy; the JSON of `status
    --format json`) and GET /metrics (`status --format prometheus`). Ctrl-C or SIGTERM stops it (exit 0)."""
    from .monitor import serve

    address = serve.parse_listen(listen)
    serve.check_interval(interval)
    return serve.serve(_project(ctx, config, url), address, interval, say=_say, warn=_warn)


@cli.group("alert")
def alert_group() -> None:
    """Alerts by webhook and e-mail ([alerts] in migrate-guard.toml)."""


@alert_group.command("test")
@_project_options
@click.pass_context
def alert_test(ctx: click.Context, config: str | None, url: str | None) -> int:
    """Send a test alert to every configured channel; exit 1 when one cannot be reached."""
    from .monitor import alerts

    outcome = alerts.send_test(_project(ctx, config, url))
    for channel in outcome.sent:
        click.echo(f"sent to {channel}")
    for problem in outcome.problems:
        click.echo(f"{PROG}: error: {problem}", err=True)
    return 1 if outcome.problems else 0


@cli.command("report")
@_project_options
@click.option(
    "--html",
    "html_file",
    required=True,
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Write a self-contained HTML status page here.",
)
@click.pass_context
def report_cmd(ctx: click.Context, config: str | None, url: str | None, html_file: str) -> None:
    """A single self-contained HTML page: status, snapshots over time, verify results, guarded runs, findings."""
    from .monitor import page
    from .monitor.status import write_atomically

    built = page.build(_project(ctx, config, url))
    write_atomically(html_file, built.html)
    click.echo(
        f"wrote {html_file}: {'healthy' if built.status.healthy else 'UNHEALTHY'}, "
        f"{built.status.figures['snapshots'] or 0} snapshots, {len(built.runs)} migrate-safe runs"
    )


# --- schema guard: constraints, protect, integrity ------------------------------------------------------


_FORMAT = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)


@cli.group("constraints")
def constraints_group() -> None:
    """CHECK constraints from the definitions beside the migrations (constraints.toml)."""


@constraints_group.command("check")
@_project_options
@_FORMAT
@click.pass_context
def constraints_check(ctx: click.Context, config: str | None, url: str | None, fmt: str) -> int:
    """Count the rows violating each constraint and show a few; change nothing. Exit 3 when an
    error-level constraint is violated."""
    import json

    from .schema import guard

    report = guard.check_constraints(_project(ctx, config, url))
    click.echo(json.dumps(report.to_dict(), indent=2) if fmt == "json" else "\n".join(report.text_lines()))
    return report.exit_code


@constraints_group.command("apply")
@_project_options
@_FORMAT
@click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="Give up on a table another session holds locked after this long (PostgreSQL, MariaDB); 0 waits forever.",
)
@click.pass_context
def constraints_apply(ctx: click.Context, config: str | None, url: str | None, fmt: str, lock_timeout: float) -> int:
    """Validate, then enforce the constraints in the database (idempotent). Exit 3, changing nothing,
    when rows violate one: the report shows them."""
    import json

    from .schema import guard
    from .schema.constraints import ConstraintsBlocked

    try:
        plan = guard.apply_constraints(_project(ctx, config, url), lock_timeout or None)
    except ConstraintsBlocked as exc:
        click.echo(json.dumps(exc.report.to_dict(), indent=2) if fmt == "json" else "\n".join(exc.report.text_lines()))
        raise GuardError(f"blocked: {exc.message}; nothing was changed", exc.exit_code) from None
    if fmt == "json":
        click.echo(json.dumps({**plan.report.to_dict(), "actions": [a.to_dict() for a in plan.actions]}, indent=2))
    else:
        click.echo("\n".join([a.line() for a in plan.actions] + [plan.summary()]))
    return 0


@cli.group("protect")
def protect_group() -> None:
    """Protection of protected tables inside the database (event triggers on PostgreSQL,
    delete guards on MariaDB/MySQL and SQLite)."""


@protect_group.command("install")
@_project_options
@click.pass_context
def protect_install(ctx: click.Context, config: str | None, url: str | None) -> None:
    """Install or refresh the protection for the settings' protected_tables (idempotent)."""
    from .schema import guard

    project = _project(ctx, config, url)
    tables = guard.protect_install(project)
    click.echo(f"protection installed: {', '.join(tables) or 'no protected table exists yet'}")


@protect_group.command("uninstall")
@_project_options
@click.pass_context
def protect_uninstall(ctx: click.Context, config: str | None, url: str | None) -> None:
    """Remove the protection from the database."""
    from .schema import guard

    guard.protect_uninstall(_project(ctx, config, url))
    click.echo("protection removed")


@protect_group.command("status")
@_project_options
@_FORMAT
@click.pass_context
def protect_status(ctx: click.Context, config: str | None, url: str | None, fmt: str) -> int:
    """What is protected in this database, what is not, and what differs from the settings (exit 3)."""
    import json

    from .schema import guard

    status = guard.protect_status(_project(ctx, config, url))
    click.echo(json.dumps(status.to_dict(), indent=2) if fmt == "json" else "\n".join(status.text_lines()))
    return 3 if status.problems else 0


@cli.command("integrity")
@_project_options
@_FORMAT
@click.pass_context
def integrity_cmd(ctx: click.Context, config: str | None, url: str | None, fmt: str) -> int:
    """Orphaned rows along every foreign key, duplicates where values must be unique, and the rules'
    checks. Read-only. Exit 3 when an error-level check fails."""
    import json

    from .schema import guard

    report = guard.check_integrity(_project(ctx, config, url))
    click.echo(json.dumps(report.to_dict(), indent=2) if fmt == "json" else "\n".join(report.text_lines()))
    return report.exit_code


def main() -> None:
    cli(prog_name=PROG)


def migrate_safe_main() -> None:
    """The ``migrate-safe`` console script: the same program, its ``migrate-safe`` command."""
    cli(args=["migrate-safe", *sys.argv[1:]], prog_name="migrate-safe")
