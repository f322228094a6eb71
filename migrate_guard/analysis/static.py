"""Static reading of a revision's ``upgrade()``: the fallback when a revision cannot be rendered offline.

One walk over the function's syntax tree, in source order, recognises

* ``op.*`` calls -- through any alias of ``alembic.op`` and through ``with op.batch_alter_table(...) as b``
  receivers -- and turns them into the same ``Operation`` records as ``alembic_ops`` gives for the
  captured op objects (see ``_ALEMBIC_OPS``);
* SQL handed to *any* ``.execute()`` / ``.exec_driver_sql()``: literal text (also f-strings,
  ``%``/``.format`` templates, ``text()``, names bound to those) goes to ``sqltext.classify_sql``;
  simple SQLAlchemy constructs (``t.delete().where(...)``, ``sa.update(t)``...) are recognised by shape;
  anything else is one ``unparsed`` operation;
* calls inside nested blocks and helper functions: helpers called by name (defined inside the function
  or at module level) are read at each call site with their parameters bound to the call's arguments;
* ``if``/``elif``/``else`` (and ``x if c else y``) on the dialect or on offline mode: a condition it can
  decide for the dialect being checked (``op.get_bind().dialect.name == "sqlite"``, through names, the
  migration context, ``bind.engine.name``, ``.startswith()``, ``in``, ``not``/``and``/``or``, helpers
  returning the name or a test of it, ``context.is_offline_mode()``) reads only the branch that runs, and
  a decided ``return``/``raise`` ends the reading; any other condition reads both branches.

Names are resolved lazily through a flat scope of the assignments seen so far (module level first),
so ``sql = "..."; op.execute(sql)`` and ``for stmt in STATEMENTS: op.execute(stmt)`` are understood.
"""

from __future__ import annotations

import ast
import functools
import importlib
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic.operations import ops

from .alembic_ops import _type_text, column_changes, from_alembic
from .operations import Operation
from .sqltext import classify_sql, three_valued

__all__ = ["read_upgrade", "sets_lock_timeout"]

_PLACEHOLDER = "__expr__"  # stands for an interpolated value in f-strings and templates
_MAX_STATEMENT = 200
_MAX_HELPER_DEPTH = 3  # helper calls followed below the read function (cycles are never followed)
_DEFAULT_ALIASES = {"op": "alembic.op", "sa": "sqlalchemy"}  # what a revision normally imports
_EXECUTE = frozenset({"execute", "exec_driver_sql"})
_DML = frozenset({"delete", "update", "insert", "select"})
_WHERE = frozenset({"where", "filter", "filter_by"})
_NAME_WRAPPERS = frozenset({"f", "conv"})  # op.f("ix_x"), conv("ix_x"): the name as given
_TEXT_WRAPPERS = frozenset({"text", "DDL"})  # sqlalchemy callables whose first argument is the SQL
_TEXT_METHODS = frozenset({"bindparams", "columns", "execution_options", "strip"})
_MUTATORS = frozenset({"append", "extend", "insert", "add", "update"})  # a list built up is not a literal
_COLLECTIONS = (ast.List, ast.Tuple, ast.Set, ast.Dict)
_SCHEMA_ITEMS = frozenset({"ForeignKey", "Computed", "Identity", "Sequence", "CheckConstraint", "FetchedValue"})
_SQL_TEXT = frozenset({"text", "literal_column", "null", "true", "false"})  # SQL a server default may be
_LINE_BREAKS = re.compile(r"(?<=\n)|(?<=\r)(?!\n)")  # how ast counts lines (not str.splitlines)
_PERCENT = re.compile(r"%%|%(?:\(\w+\))?[sdifr]")
_BRACES = re.compile(r"\{[^{}]*\}")
_DIALECT_NAMES = {"mariadb": ("mariadb", "mysql")}  # MariaDB reached through a mysql:// URL calls itself mysql
# how a revision reaches the dialect: op.get_bind().dialect.name, context.get_context().bind.engine.name, ...
_RUNTIME_CALLS = {
    "op.get_bind": "bind",
    "context.get_bind": "bind",
    "op.get_context": "context",
    "context.get_context": "context",
    "context.is_offline_mode": "offline",
}
_RUNTIME_ATTRIBUTES: dict[tuple[str | None, str], str] = {
    ("bind", "dialect"): "dialect",
    ("bind", "engine"): "engine",
    ("engine", "dialect"): "dialect",
    ("context", "dialect"): "dialect",
    ("context", "bind"): "bind",
    ("context", "as_sql"): "offline",
    ("dialect", "name"): "name",
    ("engine", "name"): "name",
}
_STR_METHODS = frozenset({"startswith", "endswith", "lower", "upper", "casefold", "strip"})
_COMPARISONS: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}


@dataclass(frozen=True)
class _Batch:
    """What ``with op.batch_alter_table(table, schema=...) as name`` binds ``name`` to."""

    table: str | None
    schema: str | None


@dataclass(frozen=True)
class _Each:
    """A loop variable: each element of ``iterable`` in turn."""

    iterable: ast.expr


_Value = ast.expr | _Batch | _Each | None  # None: bound to something we do not follow
_T = TypeVar("_T")
_UNKNOWN: Any = object()  # "not a literal", as opposed to a literal None


# SET lock_timeout = '5s', SET LOCAL lock_timeout TO 5000, -c lock_timeout=5s, set_config('lock_timeout', ...)
_LOCK_TIMEOUT = re.compile(
    r"\block_timeout\b\s*(?:=|\bto\b)\s*'?\s*(?P<value>[\w.]+)|set_config\s*\(\s*'lock_timeout'\s*,\s*'(?P<set>[^']*)'",
    re.IGNORECASE,
)


def sets_lock_timeout(source: str) -> bool:
    """Whether a module (env.py) holds a string that sets a non-zero ``lock_timeout``: a ``SET``
    statement it executes, or connection options (``connect_args={"options": "-c lock_timeout=5s"}``).
    Comments and docstrings about it do not count; a module that does not parse sets nothing."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            for m in _LOCK_TIMEOUT.finditer(node.value):
                value = (m["value"] or m["set"] or "").lower()
                if value.rstrip("ms").strip("0.") not in ("", "default"):
                    return True
    return False


def read_upgrade(
    source: str, dialect: str | None = None, function: str = "upgrade", offline: bool | None = None
) -> list[Operation]:
    """The operations the top-level ``function`` of a revision file performs, read from its source.

    ``dialect`` (the dialect checked) and ``offline`` (what ``context.is_offline_mode()`` returns; None
    when either mode may run it) decide the branches of conditions on them; None decides nothing.

    Every operation has ``source="ast"``, ``line`` = the line of the call (the line of the called name
    for a call chained over several lines, as a traceback shows it) and ``statement`` = the call's source,
    or the SQL for operations classified from SQL text. Raises ``SyntaxError`` if ``source`` does not
    parse; anything it does not understand is skipped.
    """
    tree = ast.parse(source)
    reader = _Reader(source, tree, dialect, offline)
    for node in tree.body:  # module level: imports, constants, helper functions
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            reader.visit(node)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                reader.bind(target, node.value)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            reader.bind(node.target, node.value)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            reader.functions[node.name] = node
    func = reader.functions.get(function)
    if func is not None:
        reader.walk(func)
    for o in reader.out:  # a name built at run time is unknown, not "__expr__"
        o.table, o.column, o.schema = (None if v and "__expr__" in v else v for v in (o.table, o.column, o.schema))
    return reader.out


# --- op.* calls: method -> (positional parameters of the op.* form, converter) ------------------------
# Keyword names are normalised by _KEYWORDS; a batch receiver supplies "table" (and the default schema).


@dataclass
class _Call:
    reader: _Reader
    method: str
    node: ast.Call
    args: dict[str, ast.expr]
    table: str | None
    schema: str | None

    def name(self, key: str) -> str | None:
        return self.reader.name(self.args.get(key))

    def flag(self, key: str) -> bool | None:
        return self.reader.flag(self.args.get(key))

    def op(self, kind: str, column: str | None = None, **details: Any) -> Operation:
        return Operation(kind, self.table, column, self.schema, details=details)


# create_table, add_column and alter_column go through alembic_ops with the SQLAlchemy objects the
# call builds (as far as they are literals), so both readings give the same records.


def _create_table(c: _Call) -> list[Operation]:
    items = [] if any(isinstance(a, ast.Starred) for a in c.node.args) else c.node.args[1:]
    built = [c.reader.schema_item(a) for a in items]
    op = ops.CreateTableOp(c.table or "", [i for i in built if i is not None], schema=c.schema)
    result = from_alembic(op, c.reader.dialect) or []
    for o in result:
        o.table = c.table if o.kind == "create_table" else o.table
    return result


def _drop_table(c: _Call) -> list[Operation]:
    return [c.op("drop_table", if_exists=c.flag("if_exists"))]


def _rename_table(c: _Call) -> list[Operation]:
    return [c.op("rename_table", new_name=c.name("new_name"))]


def _add_column(c: _Call) -> list[Operation]:
    built = c.reader.column(c.args.get("column"))
    if built is None:
        return [c.op("add_column", None, nullable=None, server_default=None, type=None)]
    column, unknown = built
    result = from_alembic(ops.AddColumnOp(c.table or "", column, schema=c.schema), c.reader.dialect) or []
    for o in result:
        o.table = c.table
    result[0].details.update(unknown)  # what the source does not say
    return result


def _drop_column(c: _Call) -> list[Operation]:
    return [c.op("drop_column", c.name("column"))]


def _alter_column(c: _Call) -> list[Operation]:
    r, column, types = c.reader, c.name("column"), None
    if r.literal(c.args.get("type_")) is not None:  # type_=None (or absent) changes nothing
        (old, old_text), (new, new_text) = r.type_of(c.args.get("existing_type")), r.type_of(c.args["type_"])
        types = (old, new, old_text, new_text)
    nullable, existing = r.literal(c.args.get("nullable")), r.literal(c.args.get("existing_nullable"))
    new_name = c.name("new_column_name")
    return column_changes(
        c.table,
        column,
        c.schema,
        r.dialect,
        types=types,
        nullable=None if nullable is _UNKNOWN else nullable,
        existing_nullable=None if existing is _UNKNOWN else existing,
        new_name=new_name,
        renamed=r.literal(c.args.get("new_column_name")) is not None and new_name != column,
    )


def _create_index(c: _Call) -> list[Operation]:
    concurrently = c.flag("postgresql_concurrently")
    return [c.op("create_index", name=c.name("name"), unique=c.flag("unique"), concurrently=concurrently)]


def _drop_index(c: _Call) -> list[Operation]:
    return [c.op("drop_index", name=c.name("name"), concurrently=c.flag("postgresql_concurrently"))]


_CONSTRAINT_TYPES = {
    "create_unique_constraint": "unique",
    "create_foreign_key": "foreign_key",
    "create_check_constraint": "check",
    "create_primary_key": "primary_key",
}


def _add_constraint(c: _Call) -> list[Operation]:
    kind = _CONSTRAINT_TYPES[c.method]
    return [
        c.op(
            "add_constraint",
            constraint_type=kind,
            name=c.name("name"),
            not_valid=c.flag("postgresql_not_valid"),
            using_index=False,
        )
    ]


def _drop_constraint(c: _Call) -> list[Operation]:
    return [c.op("drop_constraint", name=c.name("name"), constraint_type=c.reader.string(c.args.get("type_")))]


def _bulk_insert(c: _Call) -> list[Operation]:
    table, schema = c.reader.table_ref(c.args.get("table")) or (None, None)
    return [Operation("insert", table, schema=schema)]


def _table_comment(c: _Call) -> list[Operation]:
    return [c.op("other")]


_ALEMBIC_OPS: dict[str, tuple[tuple[str, ...], Callable[[_Call], list[Operation]]]] = {
    "create_table": (("table",), _create_table),
    "drop_table": (("table",), _drop_table),
    "rename_table": (("table", "new_name"), _rename_table),
    "add_column": (("table", "column"), _add_column),
    "drop_column": (("table", "column"), _drop_column),
    "alter_column": (("table", "column"), _alter_column),
    "create_index": (("name", "table", "columns"), _create_index),
    "drop_index": (("name", "table"), _drop_index),
    "create_unique_constraint": (("name", "table", "columns"), _add_constraint),
    "create_foreign_key": (("name", "table", "referent_table"), _add_constraint),
    "create_check_constraint": (("name", "table", "condition"), _add_constraint),
    "create_primary_key": (("name", "table", "columns"), _add_constraint),
    "drop_constraint": (("name", "table", "type_"), _drop_constraint),
    "bulk_insert": (("table", "rows"), _bulk_insert),
    "create_table_comment": (("table", "comment"), _table_comment),
    "drop_table_comment": (("table",), _table_comment),
}
_KEYWORDS = {
    "table_name": "table",
    "source_table": "table",
    "old_table_name": "table",
    "new_table_name": "new_name",
    "column_name": "column",
    "index_name": "name",
    "constraint_name": "name",
    "source_schema": "schema",
}


def _bind_args(call: ast.Call, params: tuple[str, ...]) -> dict[str, ast.expr]:
    args = dict(zip(params, call.args, strict=False))
    args.update((_KEYWORDS.get(k.arg, k.arg), k.value) for k in call.keywords if k.arg)
    return args


# --- the walk -------------------------------------------------------------------------------------------


class _Reader(ast.NodeVisitor):
    def __init__(self, source: str, tree: ast.Module, dialect: str | None, offline: bool | None = None) -> None:
        self.tree, self.dialect, self.offline = tree, dialect, offline
        # the names ``dialect.name`` may have when checking ``dialect``; a condition is decided when all agree
        self.dialect_names: tuple[str | None, ...] = _DIALECT_NAMES.get(dialect, (dialect,)) if dialect else (None,)
        self.evaluating: set[str] = set()  # helper functions being evaluated (guards recursion)
        self.lines = _LINE_BREAKS.split(source)
        self.aliases: dict[str, str] = dict(_DEFAULT_ALIASES)  # local name -> dotted import path
        self.scope: dict[str, _Value] = {}
        self.functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        self.stack: list[ast.AST] = []  # functions being read, outermost first
        self.busy: set[str] = set()  # names being resolved (guards x = x + "...")
        self.out: list[Operation] = []

    # --- statements that bind names ------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:  # "import x.y" binds x to itself
                self.aliases.pop(alias.name.split(".")[0], None)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = "." * node.level + (node.module or "")
        for alias in node.names:
            self.aliases[alias.asname or alias.name] = f"{module}.{alias.name}"

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self.bind(target, node.value)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            self.bind(node.target, node.value)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        target = node.target
        old = self.scope.get(target.id) if isinstance(target, ast.Name) else None
        if isinstance(target, ast.Name) and isinstance(old, ast.expr) and isinstance(node.op, ast.Add):
            joined = ast.BinOp(left=old, op=ast.Add(), right=node.value)  # sql += "..."
            self.scope[target.id] = ast.copy_location(joined, node)
        else:
            self.bind(node.target, None)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.bind(node.target, _Each(node.iter))
        self.block(node.body)  # a return in a loop body may never be reached: not the end of the reading
        self.block(node.orelse)

    visit_AsyncFor = visit_For

    def visit_With(self, node: ast.With | ast.AsyncWith) -> bool:
        autocommit = False
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                self.bind(item.optional_vars, self._batch(item.context_expr))
            expr = item.context_expr
            if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute):
                autocommit = autocommit or expr.func.attr == "autocommit_block"
        if not autocommit:
            return self.block(node.body)
        # what Alembic does around the block: COMMIT the migration's transaction, BEGIN a new one after
        self._transaction("commit", node.lineno)
        ended = self.block(node.body)
        self._transaction("begin", node.end_lineno or node.lineno)
        return ended

    def _transaction(self, action: str, line: int) -> None:
        o = Operation("transaction", details={"action": action, "autocommit_block": True})
        o.line, o.source, o.statement = line, "ast", f"{action.upper()} (autocommit_block)"
        self.out.append(o)

    visit_AsyncWith = visit_With

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        """A helper defined inside the function: read where it is called, or here if never called by name."""
        self.functions[node.name] = node
        if node.name not in self._called_names:
            self.walk(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    # --- branches: these visitors return True when the code after them is never reached -----------------

    def block(self, body: list[ast.stmt]) -> bool:
        """Read ``body`` in order up to a statement that certainly ends it; True if one did."""
        return any(self.visit(stmt) is True for stmt in body)  # any() stops at the first True

    def visit_Return(self, node: ast.Return) -> bool:
        self.generic_visit(node)
        return True

    def visit_Raise(self, node: ast.Raise) -> bool:
        self.generic_visit(node)
        return True

    def visit_If(self, node: ast.If) -> bool:
        self.visit(node.test)
        taken = self.decide(node.test)
        if taken is not None:
            return self.block(node.body if taken else node.orelse)
        body_ends = self.block(node.body)
        return self.block(node.orelse) and body_ends

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self.visit(node.test)
        taken = self.decide(node.test)
        if taken is not False:
            self.visit(node.body)
        if taken is not True:
            self.visit(node.orelse)

    def decide(self, test: ast.expr) -> bool | None:
        """Whether ``test`` holds when the checked dialect runs the revision; None when that cannot be told."""
        outcomes = {self._truth(test, name) for name in self.dialect_names}
        return outcomes.pop() if len(outcomes) == 1 else None

    def _truth(self, e: ast.expr, name: str | None) -> bool | None:
        if isinstance(e, ast.BoolOp):  # one decided operand can decide the whole, whatever the others are
            return three_valued([self._truth(v, name) for v in e.values], isinstance(e.op, ast.Or))
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.Not):
            inner = self._truth(e.operand, name)
            return None if inner is None else not inner
        value = self._runtime_value(e, name)
        return None if value is _UNKNOWN else bool(value)

    def _runtime_value(self, e: _Value, name: str | None) -> Any:
        """The value of ``e`` when ``dialect.name`` is ``name``, from literals, the dialect name and
        offline mode only; ``_UNKNOWN`` for anything else."""
        if isinstance(e, ast.Name):
            return self._follow(e, lambda v: self._runtime_value(v, name), _UNKNOWN)
        if not isinstance(e, ast.expr):
            return _UNKNOWN
        kind = self._runtime(e)
        if kind in ("name", "offline"):
            value = name if kind == "name" else self.offline
            return _UNKNOWN if value is None else value
        if isinstance(e, ast.Constant):
            return e.value
        if isinstance(e, (ast.Tuple, ast.List, ast.Set)):
            items = [self._runtime_value(v, name) for v in e.elts]
            return _UNKNOWN if any(v is _UNKNOWN for v in items) else tuple(items)
        if isinstance(e, (ast.BoolOp, ast.UnaryOp)):
            truth = self._truth(e, name) if isinstance(e, ast.BoolOp) or isinstance(e.op, ast.Not) else None
            return _UNKNOWN if truth is None else truth
        if isinstance(e, ast.Compare):
            return self._compare(e, name)
        if isinstance(e, ast.Call):
            f = e.func
            if isinstance(f, ast.Name) and f.id in self.functions:
                return self._helper_value(self.functions[f.id], e, name)
            if isinstance(f, ast.Attribute) and f.attr in _STR_METHODS and not e.keywords:
                receiver = self._runtime_value(f.value, name)
                args = [self._runtime_value(a, name) for a in e.args]
                if isinstance(receiver, str) and all(a is not _UNKNOWN for a in args):
                    try:
                        return getattr(receiver, f.attr)(*args)
                    except (TypeError, ValueError):
                        return _UNKNOWN
        return _UNKNOWN

    def _compare(self, e: ast.Compare, name: str | None) -> Any:
        left = self._runtime_value(e.left, name)
        for op, comparator in zip(e.ops, e.comparators, strict=True):
            right = self._runtime_value(comparator, name)
            compare = _COMPARISONS.get(type(op))
            if left is _UNKNOWN or right is _UNKNOWN or compare is None:
                return _UNKNOWN
            try:
                if not compare(left, right):
                    return False
            except TypeError:
                return _UNKNOWN
            left = right
        return True

    def _helper_value(self, fn: ast.FunctionDef | ast.AsyncFunctionDef, call: ast.Call, name: str | None) -> Any:
        """What a simple helper returns: a body of plain assignments ending in ``return <expression>``."""
        body = fn.body[1:] if ast.get_docstring(fn) is not None else fn.body
        if isinstance(fn, ast.AsyncFunctionDef) or not body or fn.name in self.evaluating:
            return _UNKNOWN
        last = body[-1]
        if not isinstance(last, ast.Return) or last.value is None:
            return _UNKNOWN
        saved = self.scope
        self.scope = {**saved, **self._parameters(fn, call)}
        self.evaluating.add(fn.name)
        try:
            for stmt in body[:-1]:
                if not isinstance(stmt, (ast.Assign, ast.AnnAssign)) or stmt.value is None:
                    return _UNKNOWN
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
                if len(names) != len(targets):
                    return _UNKNOWN
                for target in names:
                    self.scope[target] = stmt.value
            return self._runtime_value(last.value, name)
        finally:
            self.evaluating.discard(fn.name)
            self.scope = saved

    def _runtime(self, e: _Value) -> str | None:
        """Which Alembic runtime object ``e`` is: bind, context, dialect, engine, name (the dialect's) or offline."""
        if isinstance(e, ast.Name):
            return self._follow(e, self._runtime, None)
        if isinstance(e, ast.Call) and not e.args and not e.keywords:
            path = self._qual(e.func) or ""
            return _RUNTIME_CALLS.get(path.removeprefix("alembic."))
        if isinstance(e, ast.Attribute):
            return _RUNTIME_ATTRIBUTES.get((self._runtime(e.value), e.attr))
        return None

    def bind(self, target: ast.expr, value: _Value) -> None:
        if isinstance(target, ast.Name):
            self.scope[target.id] = value
        elif (
            isinstance(target, (ast.Tuple, ast.List))
            and isinstance(value, (ast.Tuple, ast.List))
            and (len(target.elts) == len(value.elts))
        ):  # a, b = "x", "y"
            for t, v in zip(target.elts, value.elts, strict=True):
                self.bind(t, v)
        else:  # unpacking we do not follow: forget what the names held
            for n in ast.walk(target):
                if isinstance(n, ast.Name):
                    self.scope[n.id] = None

    @functools.cached_property
    def _called_names(self) -> frozenset[str]:
        calls = (n for n in ast.walk(self.tree) if isinstance(n, ast.Call))
        return frozenset(n.func.id for n in calls if isinstance(n.func, ast.Name))

    def walk(self, fn: ast.FunctionDef | ast.AsyncFunctionDef, call: ast.Call | None = None) -> None:
        """Read ``fn``'s body, its parameters bound to ``call``'s arguments (unknown without a call)."""
        if fn in self.stack or len(self.stack) > _MAX_HELPER_DEPTH:
            return
        saved = self.scope
        self.scope = {**saved, **self._parameters(fn, call)}
        self.stack.append(fn)
        self.block(fn.body)
        self.stack.pop()
        self.scope = saved

    def _parameters(self, fn: ast.FunctionDef | ast.AsyncFunctionDef, call: ast.Call | None) -> dict[str, _Value]:
        a = fn.args
        positional = [p.arg for p in a.posonlyargs + a.args]
        every = [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]
        bound: dict[str, _Value] = {p.arg: None for p in every if p}
        bound.update(zip(positional[len(positional) - len(a.defaults) :], a.defaults, strict=True))
        bound.update((p.arg, d) for p, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is not None)
        if call is not None:
            for name, arg in zip(positional, call.args, strict=False):
                if isinstance(arg, ast.Starred):
                    break
                bound[name] = arg
            bound.update((k.arg, k.value) for k in call.keywords if k.arg in bound)
        for name, value in bound.items():  # an argument naming a caller's variable means that variable's value
            if isinstance(value, ast.Name) and value.id in self.scope:
                bound[name] = self.scope[value.id]
        return bound

    # --- calls: op.*, .execute(), helpers ------------------------------------------------------------

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        if isinstance(f, ast.Name) and f.id in self.functions:
            self.generic_visit(node)
            self.walk(self.functions[f.id], node)
            return
        found = None
        if isinstance(f, ast.Attribute):
            found = self._execute(node) if f.attr in _EXECUTE else self._alembic_op(node, f)
            receiver = f.value.id if isinstance(f.value, ast.Name) else ""
            if f.attr in _MUTATORS and isinstance(self.scope.get(receiver), _COLLECTIONS):
                self.scope[receiver] = None  # statements.append(...): no longer the literal we saw
        if found is None:
            self.generic_visit(node)
            return
        statement = self.segment(node)
        for o in found:
            o.line, o.source = f.end_lineno, "ast"
            o.statement = o.statement or statement
            self.out.append(o)

    def _alembic_op(self, node: ast.Call, f: ast.Attribute) -> list[Operation] | None:
        spec = _ALEMBIC_OPS.get(f.attr)
        if spec is None:
            return None
        params, convert = spec
        batch = self.scope.get(f.value.id) if isinstance(f.value, ast.Name) else None
        if isinstance(batch, _Batch):
            args = _bind_args(node, tuple(p for p in params if p != "table"))
            table, schema = batch.table, self.name(args["schema"]) if "schema" in args else batch.schema
        elif self._qual(f.value) == "alembic.op":
            args = _bind_args(node, params)
            table, schema = self.name(args.get("table")), self.name(args.get("schema"))
        else:
            return None
        return convert(_Call(self, f.attr, node, args, table, schema))

    def _batch(self, expr: ast.expr) -> _Batch | None:
        if (
            isinstance(expr, ast.Call)
            and isinstance(expr.func, ast.Attribute)
            and expr.func.attr == "batch_alter_table"
            and self._qual(expr.func.value) == "alembic.op"
        ):
            args = _bind_args(expr, ("table", "schema"))
            return _Batch(self.name(args.get("table")), self.name(args.get("schema")))
        return None

    def _execute(self, node: ast.Call) -> list[Operation] | None:
        """``<anything>.execute(X)``: SQL text is classified, a DML construct recognised, else ``unparsed``."""
        keywords = (k.value for k in node.keywords if k.arg in ("sqltext", "statement"))
        arg = node.args[0] if node.args else next(keywords, None)
        if arg is None:
            return None
        texts = self.sql_texts(arg)
        if texts is not None:
            return [o for text in texts for o in classify_sql(text, self.dialect)]
        return [self.construct(arg) or Operation("unparsed")]

    def segment(self, node: ast.expr) -> str:
        """``ast.get_source_segment`` on the pre-split lines, whitespace collapsed, cut to 200 characters."""
        first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
        lines = [line.encode() for line in self.lines[first : last + 1]]  # col offsets count UTF-8 bytes
        if not lines:
            return ""
        lines[-1] = lines[-1][: node.end_col_offset]
        lines[0] = lines[0][node.col_offset :]
        return " ".join(b"".join(lines).decode(errors="replace").split())[:_MAX_STATEMENT]

    # --- resolving expressions; each resolver follows names through the scope with _follow -------------

    def _follow(self, name: ast.Name, resolve: Callable[[Any], _T], default: _T) -> _T:
        value = self.scope.get(name.id)
        if value is None or name.id in self.busy:
            return default
        self.busy.add(name.id)
        try:
            return resolve(value)
        finally:
            self.busy.discard(name.id)

    def _qual(self, e: ast.expr) -> str | None:
        """Dotted path of a name or attribute chain, through imports: ``sa.String`` -> ``sqlalchemy.String``."""
        if isinstance(e, ast.Name):
            return self.aliases.get(e.id, e.id)
        if isinstance(e, ast.Attribute):
            base = self._qual(e.value)
            return base and f"{base}.{e.attr}"
        return None

    def _sa_name(self, e: ast.expr) -> str | None:
        """``Column`` for ``sa.Column``, ``sqlalchemy.schema.Column`` or a bare unimported ``Column``."""
        path = self._qual(e)
        if path and (path.startswith("sqlalchemy.") or "." not in path):
            return path.rsplit(".", 1)[-1]
        return None

    def literal(self, e: _Value) -> Any:
        """The Python literal ``e`` is (None when absent), ``_UNKNOWN`` if it is not one."""
        if e is None:
            return None
        if isinstance(e, ast.Name):
            return self._follow(e, self.literal, _UNKNOWN)
        if not isinstance(e, ast.expr):
            return _UNKNOWN
        try:
            return ast.literal_eval(e)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return _UNKNOWN

    def flag(self, e: ast.expr | None, default: bool = False) -> bool | None:
        """A boolean keyword: ``default`` when absent, None when not a literal."""
        if e is None:
            return default
        value = self.literal(e)
        return None if value is _UNKNOWN else bool(value)

    def string(self, e: _Value) -> str | None:
        """A name argument: a string literal, a name bound to one, ``op.f("x")`` / ``conv("x")``."""
        if isinstance(e, ast.Name):
            return self._follow(e, self.string, None)
        if isinstance(e, ast.Constant):
            return e.value if isinstance(e.value, str) else None
        if isinstance(e, ast.Call) and len(e.args) == 1:
            called = e.func.attr if isinstance(e.func, ast.Attribute) else getattr(e.func, "id", None)
            return self.string(e.args[0]) if called in _NAME_WRAPPERS else None
        return None

    def name(self, e: _Value) -> str | None:
        value = self.string(e)
        return None if value is None else value.lower()

    def sql_texts(self, e: _Value) -> list[str] | None:
        """The SQL ``e`` evaluates to when it is built from literals (several for a loop variable), else None."""
        if isinstance(e, ast.Name):
            return self._follow(e, self.sql_texts, None)
        if isinstance(e, _Each):
            items = self._items(e.iterable)
            groups = [self.sql_texts(item) for item in items or ()]
            return None if items is None or None in groups else [t for group in groups for t in group or ()]
        if isinstance(e, ast.Constant):
            return [e.value] if isinstance(e.value, str) else None
        if isinstance(e, ast.JoinedStr):  # f"...{x}...": x's value if it is a known string, else a placeholder
            return ["".join(self._fstring_part(v) for v in e.values)]
        if isinstance(e, ast.IfExp):  # the branch that runs, else both, as for an if statement
            taken = self.decide(e.test)
            if taken is not None:
                return self.sql_texts(e.body if taken else e.orelse)
            body, orelse = self.sql_texts(e.body), self.sql_texts(e.orelse)
            return None if body is None or orelse is None else body + orelse
        if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Add):  # "..." + name: the name is a placeholder
            left, right = self.sql_texts(e.left), self.sql_texts(e.right)
            if left is None and right is None:
                return None
            return [a + b for a in left or [_PLACEHOLDER] for b in right or [_PLACEHOLDER]]
        if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Mod):  # "... %s" % value
            texts = self.sql_texts(e.left)
            return texts and [_PERCENT.sub(lambda m: "%" if m[0] == "%%" else _PLACEHOLDER, t) for t in texts]
        if isinstance(e, ast.Call):
            f = e.func
            if isinstance(f, ast.Attribute) and f.attr == "format":
                texts = self.sql_texts(f.value)
                return texts and [_BRACES.sub(_PLACEHOLDER, t) for t in texts]
            if isinstance(f, ast.Attribute) and f.attr in _TEXT_METHODS:
                return self.sql_texts(f.value)
            if e.args and (self._sa_name(f) in _TEXT_WRAPPERS or self._qual(f) in ("textwrap.dedent", "dedent")):
                return self.sql_texts(e.args[0])
        return None

    def _fstring_part(self, v: ast.expr) -> str:
        if isinstance(v, ast.Constant):
            return str(v.value)
        if isinstance(v, ast.FormattedValue) and v.conversion == -1 and v.format_spec is None:
            value = self.string(v.value)
            if value is not None:
                return value
        return _PLACEHOLDER

    def _items(self, e: _Value) -> list[ast.expr] | None:
        if isinstance(e, ast.Name):
            return self._follow(e, self._items, None)
        return list(e.elts) if isinstance(e, (ast.List, ast.Tuple, ast.Set)) else None

    def table_ref(self, e: _Value) -> tuple[str | None, str | None] | None:
        """(name, schema) of a ``sa.table("t", ..., schema=...)`` / ``sa.Table(...)`` expression."""
        if isinstance(e, ast.Name):
            return self._follow(e, self.table_ref, None)
        if isinstance(e, ast.Call) and e.args and self._sa_name(e.func) in ("table", "Table"):
            schema = next((k.value for k in e.keywords if k.arg == "schema"), None)
            return self.name(e.args[0]), self.name(schema)
        return None

    def construct(self, e: _Value, has_where: bool = False, set_columns: tuple[str, ...] = ()) -> Operation | None:
        """A SQLAlchemy DML construct: ``t.delete()``, ``sa.update(t).where(...).values(...)``, ..."""
        if isinstance(e, ast.Name):
            return self._follow(e, lambda v: self.construct(v, has_where, set_columns), None)
        if not isinstance(e, ast.Call):
            return None
        f, kind = e.func, self._sa_name(e.func)
        if kind in _DML:  # sa.delete(t)
            target = e.args[0] if e.args else None
        elif isinstance(f, ast.Attribute) and f.attr in _DML:  # t.delete()
            kind, target = f.attr, f.value
        elif isinstance(f, ast.Attribute):  # .where(...), .values(...), ... above the construct
            if f.attr == "values":  # .values(col=...) names the columns an UPDATE assigns
                set_columns += tuple(k.arg.lower() for k in e.keywords if k.arg)
            return self.construct(f.value, has_where or f.attr in _WHERE, set_columns)
        else:
            return None
        table, schema = self.table_ref(target) or (None, None)
        details: dict[str, Any] = {"has_where": has_where} if kind in ("delete", "update") else {}
        if kind == "update":
            details["set_columns"] = list(set_columns)
        return Operation(kind, table, schema=schema, details=details)

    def column(self, e: _Value) -> tuple[sa.Column[Any], dict[str, Any]] | None:
        """The ``sa.Column(...)`` an expression builds, and the add_column details its source leaves
        unknown (a type or ``nullable`` that is no literal); schema items that are not literals are left out."""
        if isinstance(e, ast.Name):
            return self._follow(e, self.column, None)
        if not (isinstance(e, ast.Call) and self._sa_name(e.func) == "Column"):
            return None
        args, kw = list(e.args), {k.arg: k.value for k in e.keywords if k.arg}
        name = self.string(args[0]) if args else None
        if name is not None:
            args.pop(0)
        else:
            name = self.string(kw.pop("name", None))
        type_expr = kw.pop("type_", None) or next(
            (a for a in args if self._sa_name(a.func if isinstance(a, ast.Call) else a) not in _SCHEMA_ITEMS), None
        )
        type_, type_text = self.type_of(type_expr)
        unknown: dict[str, Any] = {} if type_ is not None else {"type": type_text}
        items = [self.schema_item(a) for a in args if a is not type_expr]
        options: dict[str, Any] = {}
        for key, value in kw.items():
            evaluated = self._eval_schema(value)
            if evaluated is not _UNKNOWN:
                options[key] = evaluated
            elif key == "nullable":
                unknown["nullable"] = None
            elif key == "server_default":
                options[key] = sa.FetchedValue()  # a default of some kind
        try:
            column: sa.Column[Any] = sa.Column(name, type_, *[i for i in items if i is not None], **options)
        except Exception:  # noqa: BLE001 - arguments SQLAlchemy refuses: only the name is known
            column = sa.Column(name, sa.types.NullType())
            unknown = {"nullable": None, "server_default": None, "type": type_text}
        return column, unknown

    def schema_item(self, e: ast.expr) -> Any:
        """A column, constraint or index of ``create_table`` / ``Column(...)``, or None when no literal."""
        if isinstance(e, ast.Name):
            return self._follow(e, self.schema_item, None)
        built = self.column(e)
        if built is not None:
            return built[0]
        value = self._eval_schema(e)
        return value if isinstance(value, sa.schema.SchemaItem) else None

    def _eval_schema(self, e: _Value) -> Any:
        """A literal, or what a SQLAlchemy schema construct (``sa.ForeignKey("t.id")``, ``sa.Identity()``,
        ``sa.text("now()")``, ``sa.func.now()``, a type) called with such values builds; else ``_UNKNOWN``."""
        value = self.literal(e)
        if value is not _UNKNOWN or not isinstance(e, ast.expr):
            return value
        if isinstance(e, ast.Name):
            return self._follow(e, self._eval_schema, _UNKNOWN)
        as_type = self._eval_type(e)
        return as_type if as_type is not None else self._construct(e, _is_schema_construct)

    def type_of(self, e: ast.expr | None) -> tuple[Any, str | None]:
        """(SQLAlchemy type instance or None, its text) -- the text falls back to the source, lower-cased."""
        if e is None:
            return None, None
        value = self._eval_type(e)
        if value is not None and not isinstance(value, sa.types.NullType):
            return value, _type_text(value)
        return None, re.sub(r"^(?:\w+\.)+", "", self.segment(e)).lower()

    def _eval_type(self, e: _Value) -> Any:
        """``sa.String(length=50)``, ``postgresql.JSONB()``, ``sa.BigInteger``: a type class on a
        ``sqlalchemy`` path called with literal (or type) arguments; None for anything else."""
        if isinstance(e, ast.Name) and e.id in self.scope:
            return self._follow(e, self._eval_type, None)
        value = self._construct(e, _is_type_class, bare=True) if isinstance(e, ast.expr) else _UNKNOWN
        return None if value is _UNKNOWN else value

    def _construct(self, e: ast.expr, accept: Callable[[str, Any], bool], bare: bool = False) -> Any:
        """Call what a ``sqlalchemy`` path names, if ``accept(path, it)``, with arguments that are
        literals or such constructs themselves (``bare``: also a name without a call); else ``_UNKNOWN``."""
        call = e if isinstance(e, ast.Call) else None
        path = self._qual(call.func if call else e)
        if path is None or not (path.startswith("sqlalchemy.") or "." not in path) or not (call or bare):
            return _UNKNOWN
        path = path if "." in path else f"sqlalchemy.{path}"
        target = _sqlalchemy_attr(path)
        if not accept(path, target) or call and any(k.arg is None for k in call.keywords):  # **kwargs: unknown
            return _UNKNOWN
        args = [self._eval_schema(a) for a in call.args] if call else []  # *args are not literals: unknown
        kwargs = {k.arg: self._eval_schema(k.value) for k in call.keywords if k.arg} if call else {}
        if any(v is _UNKNOWN for v in [*args, *kwargs.values()]):
            return _UNKNOWN
        try:
            return target(*args, **kwargs)
        except Exception:  # noqa: BLE001 - wrong arguments for the construct
            return _UNKNOWN


def _is_type_class(path: str, target: Any) -> bool:
    return isinstance(target, type) and issubclass(target, sa.types.TypeEngine)


def _is_schema_construct(path: str, target: Any) -> bool:
    """Columns, constraints, indexes, sequences, identities, and the SQL a server default may be."""
    schema_class = isinstance(target, type) and issubclass(target, sa.schema.SchemaItem)
    return schema_class or path.rsplit(".", 1)[-1] in _SQL_TEXT or path.startswith("sqlalchemy.func.")


@functools.cache
def _sqlalchemy_attr(path: str) -> Any:
    """The object at a dotted ``sqlalchemy...`` path (importing the longest module prefix), or None."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except Exception:  # noqa: BLE001 - not a module, or one that fails to import: try a shorter prefix
            continue
        for part in parts[i:]:
            obj = getattr(obj, part, None)
        return obj
    return None
