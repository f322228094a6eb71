"""The ``check`` use case: select revisions, capture what they do offline, apply the rules."""

from __future__ import annotations

import ast
import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alembic.script import ScriptDirectory

from .. import alembic_bridge as bridge
from ..config import DIALECTS, Project, dialect_family
from ..errors import ConfigError, RevisionError, UsageError
from . import cache as check_cache
from .acks import Acknowledgement, parse_cli_allow, read_file_acks
from .engine import Evaluator, Finding, RevisionOps, exit_code_for
from .operations import Operation
from .rules import BUILTIN_RULES_DIR, Rule, load_rules
from .sqltext import mark_transaction_blocks
from .static import read_upgrade


@dataclass
class CheckOptions:
    range: str | None = None
    revisions: Sequence[str] = ()
    since: str | None = None
    dialect: str | None = None
    allow: Sequence[str] = ()
    fail_on: str | None = None
    cache: bool = False  # read and keep .migrate-guard/cache/check/ (see analysis/cache.py); the `check` command does


# options that choose revisions or the exit code, not what a revision's findings are
_NOT_IN_CONTEXT = {"range", "revisions", "since", "fail_on", "cache"}


@dataclass
class CheckReport:
    findings: list[Finding]
    revisions: list[str]
    selection: str
    dialect: str
    fail_on: str
    rules: dict[str, Rule]
    notes: list[str] = field(default_factory=list)
    operations: list[RevisionOps] = field(default_factory=list)  # what each revision does, in order
    inputs: check_cache.RunInputs | None = None  # what the run read, when a later run may replay it
    cache_notes: list[str] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, int]:
        live = [f for f in self.findings if not f.allowed]
        return {
            "revisions": len(self.revisions),
            "errors": sum(f.severity == "error" for f in live),
            "warnings": sum(f.severity == "warning" for f in live),
            "infos": sum(f.severity == "info" for f in live),
            "allowed": sum(f.allowed for f in self.findings),
        }

    @property
    def exit_code(self) -> int:
        return exit_code_for(self.findings, self.fail_on)


def rules_for(project: Project) -> dict[str, Rule]:
    rules = load_rules(project.settings.rule_dirs)
    source = project.settings.source.name if project.settings.source else "settings"
    for rule_id in project.settings.severity:
        if rule_id not in rules:
            raise ConfigError(f"{source}: severity.{rule_id}: unknown rule")
    return rules


def run_check(project: Project, options: CheckOptions) -> CheckReport:
    rules = rules_for(project)
    cli_acks = [parse_cli_allow(spec, frozenset(rules)) for spec in options.allow]
    if options.dialect and options.dialect not in DIALECTS:
        raise UsageError(f"--dialect {options.dialect!r}: choose {', '.join(DIALECTS)}")
    notes = []
    dialect = options.dialect or project.settings.dialect
    render_url = f"{dialect}://" if dialect else None
    if not dialect:
        dialect = project.dialect_from_url or "sqlite"
        if not project.dialect_from_url:
            render_url = "sqlite://"
            notes.append("no sqlalchemy.url and no --dialect: checking as sqlite")
    cache = _revision_cache(project, options, dialect, render_url) if options.cache else None
    script = bridge.open_scripts(project, read_unimportable=True, cached=cache.graph_in if cache else None)
    selection = _select(project, script, options)
    if cache is not None and not all(
        cache.operations(bridge.script_file(project, s)) for s in selection.scripts if bridge.from_cache(s.module)
    ):  # a record that does not read back: nothing of this run from the cache
        cache = None
        script = bridge.open_scripts(project, read_unimportable=True)
        selection = _select(project, script, options)
    if selection.note:
        notes.insert(0, selection.note)
    if cache is not None:
        _record_inputs(cache.inputs, project, script, options)
    return analyse(
        project,
        script,
        selection,
        dialect,
        rules=rules,
        cli_acks=cli_acks,
        fail_on=options.fail_on or project.settings.fail_on,
        notes=notes,
        render_url=render_url,
        cache=cache,
    )


def _revision_cache(
    project: Project, options: CheckOptions, dialect: str, render_url: str | None
) -> check_cache.RevisionCache:
    extra = {k: v for k, v in dataclasses.asdict(options).items() if k not in _NOT_IN_CONTEXT}
    rule_files = check_cache.rule_files([BUILTIN_RULES_DIR, *project.settings.rule_dirs])

    def context(env_py: str) -> str:
        return check_cache.digest(
            "context",
            check_cache.code_digest(),
            str(project.config_path),
            check_cache.file_digest(project.config_path),
            check_cache.file_digest(project.root / "pyproject.toml"),
            project.url,
            render_url,
            dialect,
            check_cache.file_digest(env_py),
            repr(project.settings),
            [(str(f), check_cache.file_digest(f)) for f in rule_files],
            extra,  # --allow, --server-version, ...
        )

    store = check_cache.Store.beside(project.config_path)
    return check_cache.RevisionCache(store, project.root, context, check_cache.RunInputs())


def _record_inputs(
    inputs: check_cache.RunInputs, project: Project, script: ScriptDirectory, options: CheckOptions
) -> None:
    """The files and directories a replay of this run depends on, beyond the revision files."""
    # --since asks git, the default selection the database (unless none is configured)
    inputs.replayable = bool(options.range or options.revisions or (not options.since and not project.url))
    for path in (project.config_path, project.root / "pyproject.toml", project.root / "migrate-guard.toml"):
        inputs.add_file(path)
    if project.settings.source:
        inputs.add_file(project.settings.source)
    inputs.add_file(script.env_py_location)
    rule_dirs = [BUILTIN_RULES_DIR, *project.settings.rule_dirs]
    for directory in rule_dirs:
        inputs.add_listing(directory, recursive=True, suffix=".toml")
    for f in check_cache.rule_files(rule_dirs):
        inputs.add_file(f)
    locations = getattr(script, "_version_locations", None)  # Alembic's own list of where it reads revisions
    if not isinstance(locations, list):
        inputs.replayable = False
        return
    for location in locations:
        if os.path.isdir(location):
            inputs.add_listing(location, recursive=bool(script.recursive_version_locations))
        else:
            inputs.add_file(Path(location) / "__absent__")  # stays absent ("-") while the directory is


def analyse(
    project: Project,
    script: ScriptDirectory,
    selection: bridge.Selection,
    dialect: str,
    *,
    rules: dict[str, Rule],
    cli_acks: Sequence[Acknowledgement] = (),
    fail_on: str = "error",
    notes: Sequence[str] = (),
    render_url: str | None = None,
    direction: str = "upgrade",
    cache: check_cache.RevisionCache | None = None,
    acknowledge: bool = True,
) -> CheckReport:
    """Capture the selected revisions offline in ``dialect`` and apply the rules: the engine of
    both ``check`` and ``migrate-safe``. With ``cache``, a revision it remembers is not rendered."""
    notes = list(notes)
    remembered: dict[str, RevisionOps] = {}
    if cache is not None:
        for s in selection.scripts:
            if bridge.from_cache(s.module):
                remembered[s.revision] = cache.operations(bridge.script_file(project, s))
    fresh = [s for s in selection.scripts if s.revision not in remembered]
    captured = bridge.capture(project, script, fresh, dialect, render_url=render_url, direction=direction)
    if cache is not None and cache.env is not None and not fresh and remembered:
        # env.py did not run: what it emitted when it last did
        env_ops: list[Operation] = check_cache.decode(cache.env["env_operations"])
        used_dialect, env_notes = str(cache.env["dialect"]), list(cache.env["notes"])
    else:
        env_ops, used_dialect, env_notes = captured.env_operations, captured.dialect, captured.notes
    notes.extend(env_notes)
    evaluator = Evaluator(rules, project.settings, used_dialect, script_dir=script.dir)
    rendered = {cap.revision: _revision_ops(cap, used_dialect, direction) for cap in captured.revisions}
    if cache is not None:
        kept = [
            (
                cap.path,
                rendered[cap.revision],
                bridge.graph_of(cap.script.module),
                bridge.missing_module(cap.script.module),
            )
            for cap in captured.revisions
        ]
        env = {"env_operations": env_ops, "dialect": used_dialect, "notes": env_notes}
        cache.finish(kept, env if fresh else None, exclude=[script.env_py_location])
    revisions = [remembered.get(s.revision) or rendered[s.revision] for s in selection.scripts]

    findings: list[Finding] = []
    heads = script.get_heads()
    if len(heads) > 1:
        head_file = bridge.script_file(project, script.get_revision(heads[0]))
        op = Operation("multiple_heads", file=head_file, details={"detail": ", ".join(sorted(heads))})
        f = evaluator.synthetic("multiple-heads", op)
        if f:
            findings.append(f)
    for rev in revisions:
        findings.extend(evaluator.revision_findings(rev, captured.env_operations))
    if acknowledge:  # else the caller does, with findings of its own (trace)
        findings = evaluator.acknowledge(findings, revisions, cli_acks, report_stale=direction == "upgrade")
    order = {rev.revision: i for i, rev in enumerate(revisions)}
    findings.sort(key=lambda f: (order.get(f.revision or "", -1), f.line or 0))
    return CheckReport(
        findings=findings,
        revisions=[r.revision for r in revisions],
        selection=selection.description,
        dialect=used_dialect,
        fail_on=fail_on,
        rules=rules,
        notes=notes,
        operations=revisions,
        inputs=cache.inputs if cache and cache.inputs.replayable else None,
        cache_notes=cache.store.notes if cache else [],
    )


def _select(project: Project, script, options: CheckOptions) -> bridge.Selection:  # type: ignore[no-untyped-def]
    chosen = [
        name
        for name, value in (("--range", options.range), ("--revision", options.revisions), ("--since", options.since))
        if value
    ]
    if len(chosen) > 1:
        raise UsageError(f"{' and '.join(chosen)} cannot be combined; pick one")
    if options.range:
        return bridge.select_by_range(script, options.range)
    if options.revisions:
        return bridge.select_by_revisions(project, script, options.revisions)
    if options.since:
        return bridge.select_since(project, script, options.since)
    return bridge.select_pending(project, script)


def _python_statements(source: str) -> Callable[[int], str | None]:
    """line -> the innermost whole Python statement on that line, whitespace collapsed."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return lambda line: None
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.stmt)]  # outer before inner

    def statement(line: int) -> str | None:
        best, best_span = None, 0
        for node in nodes:
            span = (node.end_lineno or node.lineno) - node.lineno
            if node.lineno <= line <= node.lineno + span and (best is None or span <= best_span):
                best, best_span = node, span
        if best is None:
            return None
        if isinstance(best, (ast.With, ast.AsyncWith, ast.If, ast.For, ast.AsyncFor, ast.While, ast.Try)):
            return None  # a block header spans its body: not one statement
        segment = ast.get_source_segment(source, best)
        return " ".join(segment.split()) if segment else None

    return statement


def _revision_ops(cap: bridge.RevisionCapture, dialect: str, direction: str = "upgrade") -> RevisionOps:
    """A captured revision, completed by a static reading where rendering failed, with its acknowledgements."""
    try:
        with open(cap.path, encoding="utf-8") as fh:
            source = fh.read()
    except OSError as exc:
        raise RevisionError(f"{cap.path}: cannot be read: {exc.strerror}") from None
    operations = cap.operations
    if cap.failure:
        seen = {o.line for o in operations}
        # a revision that imported failed offline, so only an online run can complete it; of one that
        # did not import nothing ran, and either mode may be how it is run
        offline = False if cap.imported else None
        try:
            static = read_upgrade(source, dialect, function=direction, offline=offline)
        except SyntaxError as exc:
            raise RevisionError(f"{cap.path}:{exc.lineno}: syntax error: {exc.msg}") from None
        for o in static:
            if o.line not in seen:
                o.revision, o.file = cap.revision, cap.path
                operations.append(o)
        operations.sort(key=lambda o: o.line or 0)
        if dialect_family(dialect) == "postgresql":  # autocommit_block()s read from the source
            mark_transaction_blocks(operations, start="inside")
    unrendered = [o for o in operations if o.statement is None and o.line]
    if unrendered:  # e.g. a batch op whose table is recreated renders no SQL of its own: its Python statement
        statements = _python_statements(source)
        for o in unrendered:
            o.statement = statements(o.line or 0)
    acks, bad = read_file_acks(cap.path, source)
    return RevisionOps(cap.revision, cap.path, operations, cap.failure, cap.failure_line, acks, bad)
