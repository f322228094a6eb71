"""Classify raw SQL text (``op.execute("...")``, ``text(...)``) into :class:`Operation` objects.

Pipeline, each step linear in the input:

1. Lex once with sqlparse's lexer, which understands string literals, quoted identifiers,
   comments and PostgreSQL dollar-quoted bodies (``$$ ... $$``, ``$fn$ ... $fn$``).  The
   ``dialect`` only picks the lexer variant: ``#`` comments exist in MySQL alone, and
   PostgreSQL / SQLite strings have no backslash escapes (``'C:\\'`` ends the literal).
2. Split on ``;`` ourselves.  sqlparse's statement splitter is *not* used: its BEGIN...END
   heuristic merges every following statement into one after ``begin`` used as a column name
   or after ``BEGIN ISOLATION LEVEL ...;``, which would hide a ``DROP TABLE``.  Only routine
   bodies (CREATE FUNCTION/PROCEDURE/TRIGGER/EVENT/RULE ... BEGIN ... END) keep their ``;``.
3. Classify each statement with one small recursive-descent function per statement family
   over a flat token list (``_Tok``) that records the parenthesis depth of every token.

Identifiers are returned unquoted and lower case; anything not understood becomes one
``unparsed`` operation, and no input makes :func:`classify_sql` raise.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from typing import Any, NamedTuple

from sqlparse import keywords
from sqlparse import tokens as T
from sqlparse.lexer import Lexer

from migrate_guard.analysis.alembic_ops import column_rewrites_table
from migrate_guard.analysis.operations import Operation

__all__ = ["classify_sql", "mark_transaction_blocks"]

Ref = tuple[str | None, str | None]  # (schema, name)


class _Tok(NamedTuple):
    kind: str  # "w" word, "q" quoted identifier, "s" string, "o" operator, "x" unterminated quote
    val: str  # source text; unquoted for "q"
    up: str  # upper-case text of "w"/"o"; "" for "q"/"s" so a quoted word never matches a keyword
    start: int  # offsets into the original sql
    end: int
    depth: int = 0  # parenthesis depth; "(" and ")" carry the depth outside them


# ---------------------------------------------------------------- lexing

_PIECES = re.compile(r"(\w[\w$#]*)|('(?:''|[^'])*')|(\S)")  # words as sqlparse's lexer sees them
# Text without these characters lexes to the same tokens with _PIECES alone (the fast path);
# a digit run glued to letters ("1e5x") is split differently by sqlparse's number rules.
_NEEDS_LEXER = re.compile(r"['\"`´\[;$#]|--|/\*|\b\d+(?:\.\d*)?[^\W\d]")
_QUOTES = frozenset("'\"`´$")
_CLOSERS = {'"': '"', "`": "`", "´": "´", "[": "]"}

_SQLPARSE_COMMENT = r"(--|# ).*?(\r\n|\r|\n|$)"
_SQLPARSE_HINT = r"(--|# )\+.*?(\r\n|\r|\n|$)"
_SQLPARSE_STRING = r"'(''|\\'|[^'])*'"
_DIALECT_RULES = {
    "standard": {  # PostgreSQL, SQLite: no "#" comments, no backslash escapes except E'...'
        _SQLPARSE_COMMENT: r"--.*?(\r\n|\r|\n|$)",
        _SQLPARSE_HINT: r"--\+.*?(\r\n|\r|\n|$)",
        _SQLPARSE_STRING: r"'(''|[^'])*'",
    },
    "mysql": {  # "#" starts a comment even without a following space
        _SQLPARSE_COMMENT: r"(--|#).*?(\r\n|\r|\n|$)",
        _SQLPARSE_HINT: r"(--|#)\+.*?(\r\n|\r|\n|$)",
    },
}
_E_STRING = (r"(?<![\w$])[Ee]'(?:''|\\.|[^'\\])*'", T.String.Single)  # PostgreSQL E'it\'s'
_FAMILIES = {"postgresql": "standard", "sqlite": "standard", "mysql": "mysql", "mariadb": "mysql"}


@cache
def _lexer(dialect: str | None) -> Lexer:
    """sqlparse's lexer with the comment and string rules of ``dialect`` (default: sqlparse's own)."""
    name = (dialect or "").lower().split("+")[0]  # tolerate "postgresql+psycopg"
    family = _FAMILIES.get(name)
    if family is None:
        default: Lexer = Lexer.get_default_instance()
        return default
    lexer = Lexer()
    lexer.default_initialization()
    rules = [(_DIALECT_RULES[family].get(rx, rx), tt) for rx, tt in keywords.SQL_REGEX]
    lexer.set_SQL_REGEX([_E_STRING, *rules] if family == "standard" else rules)
    return lexer


def _pieces(text: str, offset: int) -> Iterator[_Tok]:
    for m in _PIECES.finditer(text):
        s, e = m.start() + offset, m.end() + offset
        if m.group(1):
            yield _Tok("w", m.group(), m.group().upper(), s, e)
        elif m.group(2):
            yield _Tok("s", m.group(), "", s, e)
        else:
            yield _Tok("o", m.group(), m.group(), s, e)


def _unquote(text: str) -> str:
    close = _CLOSERS.get(text[0])
    if close is None or len(text) < 2 or text[-1] != close:
        return text
    inner = text[1:-1]
    return inner if close == "]" else inner.replace(close * 2, close)


def _lex(sql: str, dialect: str | None) -> list[_Tok]:
    if not _NEEDS_LEXER.search(sql):
        return list(_pieces(sql, 0))
    out: list[_Tok] = []
    pos = 0
    for ttype, value in _lexer(dialect).get_tokens(sql):
        end = pos + len(value)
        if ttype in T.Whitespace or ttype in T.Comment:
            pass
        elif ttype in T.String.Symbol or (ttype in T.Name and value[0] in "`´["):
            out.append(_Tok("q", _unquote(value), "", pos, end))
        elif ttype is T.Literal or ttype in T.String:  # T.Literal alone is a dollar-quoted body
            out.append(_Tok("s", value, "", pos, end))
        elif ttype is T.Error and value in _QUOTES:
            out.append(_Tok("x", value, "", pos, end))
        else:  # keywords ("IF NOT EXISTS" is one token), names, numbers, operators
            out.extend(_pieces(value, pos))
        pos = end
    return out


# ---------------------------------------------------------------- splitting

_ROUTINES = frozenset({"FUNCTION", "PROCEDURE", "TRIGGER", "EVENT", "RULE"})
_DECIDERS = _ROUTINES | {"TABLE", "INDEX", "VIEW", "SCHEMA", "DATABASE", "SEQUENCE", "TYPE", "DOMAIN"}
_END_OF = frozenset({"IF", "LOOP", "WHILE", "REPEAT", "FOR"})  # END IF etc. close no BEGIN/CASE


def _is_routine(stmt: list[_Tok]) -> bool:
    """CREATE/ALTER of an object whose body may hold ';' (the first object word decides)."""
    if not stmt or stmt[0].up not in ("CREATE", "ALTER"):
        return False
    word = next((t.up for t in stmt[1:16] if t.up in _DECIDERS), "")
    return word in _ROUTINES


def _split(toks: list[_Tok]) -> Iterator[tuple[list[_Tok], bool]]:
    """Yield (tokens, broken) per statement; broken = unterminated quote, paren or block."""
    stmt: list[_Tok] = []
    depth = block = 0
    bad = skip = False
    for i, t in enumerate(toks):
        up = t.up
        if skip:
            skip = False
        elif up == ";" and block == 0 and (depth == 0 or not _is_routine(stmt)):
            if stmt:
                yield stmt, bad or depth != 0
            stmt, depth, bad = [], 0, False
            continue
        elif up == ")":
            depth = max(depth - 1, 0)
        elif t.kind == "x":
            bad = True
        elif up == "BEGIN" and (not stmt or stmt[-1].up != ".") and _is_routine(stmt) or block and up == "CASE":
            block += 1
        elif block and up == "END":
            nxt = toks[i + 1].up if i + 1 < len(toks) else ""
            block -= nxt not in _END_OF
            skip = nxt in _END_OF or nxt == "CASE"  # "END CASE" closes its CASE once
        stmt.append(t._replace(depth=depth))
        depth += up == "("
    if stmt:
        yield stmt, bad or depth != 0 or block != 0


# ---------------------------------------------------------------- cursor


class _Cur:
    """A position in the token slice [i, n); tokens at depth ``base`` are top level."""

    __slots__ = ("t", "src", "i", "n", "base")

    def __init__(self, toks: list[_Tok], src: str, i: int = 0, n: int | None = None, base: int = 0):
        self.t, self.src, self.i, self.n, self.base = toks, src, i, len(toks) if n is None else n, base

    @property
    def done(self) -> bool:
        return self.i >= self.n

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.t[j].up if j < self.n else ""

    def at(self, *words: str) -> bool:
        return all(self.peek(k) == w for k, w in enumerate(words))

    def take(self, *words: str) -> bool:
        if self.at(*words):
            self.i += len(words)
            return True
        return False

    def take_any(self, *words: str) -> str | None:
        word = self.peek()
        if word and word in words:
            self.i += 1
            return word
        return None

    def skip(self, *words: str) -> None:
        while self.take_any(*words):
            pass

    def ident(self) -> str | None:
        if self.done or self.t[self.i].kind not in "wq":
            return None
        self.i += 1
        return self.t[self.i - 1].val.lower()

    def name(self) -> Ref | None:
        """A dotted name: ``t``, ``s.t``, ``"My Schema"."T"``; the last two parts count."""
        parts = []
        while (part := self.ident()) is not None:
            parts.append(part)
            if not self.take("."):
                break
        if not parts:
            return None
        return (parts[-2] if len(parts) > 1 else None), parts[-1]

    def top(self) -> list[str]:
        return [t.up for t in self.t[self.i : self.n] if t.depth == self.base]

    def has(self, *words: str) -> bool:
        """Whether the words occur consecutively at top level from here on."""
        ups, k = self.top(), len(words)
        return any(ups[j : j + k] == list(words) for j in range(len(ups) - k + 1))

    def seek(self, word: str) -> bool:
        """Move past the next top-level ``word``."""
        for j in range(self.i, self.n):
            if self.t[j].up == word and self.t[j].depth == self.base:
                self.i = j + 1
                return True
        return False

    def group(self) -> _Cur | None:
        """The inside of the parenthesis at the cursor; the cursor moves past it."""
        if self.peek() != "(":
            return None
        start, depth = self.i + 1, self.t[self.i].depth
        self.i = next((j for j in range(start, self.n) if self.t[j].depth == depth), self.n)
        inner = _Cur(self.t, self.src, start, self.i, depth + 1)
        self.i += 1
        return inner

    def split(self, sep: str = ",") -> list[_Cur]:
        """Cut the rest at top-level ``sep`` (commas inside parentheses stay)."""
        parts, start = [], self.i
        for j in range(self.i, self.n + 1):
            if j == self.n or (self.t[j].up == sep and self.t[j].depth == self.base):
                parts.append(_Cur(self.t, self.src, start, j, self.base))
                start = j + 1
        self.i = self.n
        return [p for p in parts if not p.done]

    def text(self, start: int | None = None, end: int | None = None) -> str:
        """Source text of tokens [start, end), whitespace collapsed."""
        start, end = self.i if start is None else start, self.n if end is None else end
        if start >= end:
            return ""
        return " ".join(self.src[self.t[start].start : self.t[end - 1].end].split())

    def literal(self) -> str:
        """The rest as a value: a lone string literal unquoted, anything else as written."""
        if self.n - self.i == 1 and self.t[self.i].kind == "s":
            val = self.t[self.i].val
            if val.startswith("$"):
                return val[val.index("$", 1) + 1 : val.rindex("$", 0, -1)]
            return val[val.index("'") + 1 : -1].replace("''", "'")
        return self.text()


class _Ctx:
    """The statement being classified; builds its operations."""

    __slots__ = ("text", "dialect")

    def __init__(self, text: str, dialect: str | None = None):
        self.text, self.dialect = text, dialect  # the dialect only where the server's behaviour matters

    def op(self, kind: str, ref: Ref | None = None, column: str | None = None, **details: Any) -> Operation:
        schema, table = ref or (None, None)
        return Operation(
            kind=kind,
            table=table,
            column=column,
            schema=schema,
            statement=self.text,
            details=details,
            source="sql",
        )


Handler = Callable[[_Cur, _Ctx], list[Operation]]

# ---------------------------------------------------------------- shared pieces

_OBJECT_TYPES = sorted(  # longest first, so MATERIALIZED VIEW wins over VIEW
    (
        tuple(s.split())
        for s in (
            "MATERIALIZED VIEW",
            "EVENT TRIGGER",
            "CONSTRAINT TRIGGER",
            "FOREIGN TABLE",
            "FOREIGN DATA WRAPPER",
            "TEXT SEARCH CONFIGURATION",
            "TEXT SEARCH DICTIONARY",
            "ACCESS METHOD",
            "OPERATOR CLASS",
            "OPERATOR FAMILY",
            "VIEW",
            "FUNCTION",
            "PROCEDURE",
            "TRIGGER",
            "EXTENSION",
            "TYPE",
            "SEQUENCE",
            "DOMAIN",
            "RULE",
            "POLICY",
            "AGGREGATE",
            "COLLATION",
            "CONVERSION",
            "LANGUAGE",
            "OPERATOR",
            "CAST",
            "SERVER",
            "PUBLICATION",
            "SUBSCRIPTION",
            "STATISTICS",
            "EVENT",
            "ROLE",
            "USER",
            "TABLESPACE",
            "INDEX",
            "SCHEMA",
            "DATABASE",
        )
    ),
    key=len,
    reverse=True,
)


def _object_type(c: _Cur) -> str | None:
    for words in _OBJECT_TYPES:
        if c.take(*words):
            return "trigger" if words == ("CONSTRAINT", "TRIGGER") else " ".join(words).lower()
    return None


def _names(c: _Cur) -> list[Ref]:
    """``a, s.b, f(int)``: a comma list of names, skipping ``*`` and signatures."""
    refs = []
    while (ref := c.name()) is not None:
        refs.append(ref)
        c.skip("*")
        c.group()
        if not c.take(","):
            break
    return refs


def _other_object(c: _Cur, x: _Ctx, kind: str) -> list[Operation]:
    """CREATE/DROP/ALTER of views, functions, triggers, types... -> *_other."""
    otype = _object_type(c)
    if otype is None:
        return []
    if_exists = c.take("IF", "EXISTS")
    if_not_exists = c.take("IF", "NOT", "EXISTS")
    refs = _names(c) if kind == "drop_other" else [c.name() or (None, None)]
    cascade = c.has("CASCADE")
    table = None  # triggers, policies and rules hang on a table: ON t (CREATE RULE ... TO t)
    if otype in ("trigger", "policy", "rule"):
        keyword = "TO" if (otype, kind) == ("rule", "create_other") else "ON"
        table = c.name() if c.seek(keyword) else None
    out = []
    for schema, name in refs:
        extra: dict[str, Any] = {"if_exists": if_exists, "cascade": cascade} if kind == "drop_other" else {}
        if kind == "create_other":
            extra["if_not_exists"] = if_not_exists
        if otype == "domain" and kind != "drop_other":
            extra["with_check"] = _domain_check(c, kind)
        elif (otype, kind) == ("type", "alter_other") and c.take("ADD", "VALUE"):
            c.take("IF", "NOT", "EXISTS")
            value = _Cur(c.t, c.src, c.i, c.i + 1).literal() if not c.done and c.t[c.i].kind == "s" else None
            extra.update(action="add_value", value=value, transaction="unknown")
        ref = (table[0] or schema, table[1]) if table else (schema, None)
        out.append(x.op(kind, ref, object_type=otype, name=name, **extra))
    return out


def _domain_check(c: _Cur, kind: str) -> bool:
    """CREATE DOMAIN ... CHECK (...), or ALTER DOMAIN ... ADD [CONSTRAINT c] CHECK (...) without NOT VALID:
    a CHECK that every column of the domain is (or, once the domain is used, will be) validated against."""
    if kind == "create_other":
        return c.has("CHECK")
    return c.take("ADD") and c.has("CHECK") and not c.has("NOT", "VALID")


_TYPE_STOP = frozenset(
    {  # words that end a column type and start its constraints
        "NOT",
        "NULL",
        "DEFAULT",
        "PRIMARY",
        "UNIQUE",
        "REFERENCES",
        "CHECK",
        "CONSTRAINT",
        "COLLATE",
        "GENERATED",
        "AUTO_INCREMENT",
        "AUTOINCREMENT",
        "IDENTITY",
        "COMMENT",
        "ON",
        "AS",
        "FIRST",
        "AFTER",
        "CHARSET",
        "VISIBLE",
        "INVISIBLE",
        "COMPRESSION",
        "STORAGE",
        "KEY",
        "USING",
    }
)
_SERIAL = frozenset({"serial", "bigserial", "smallserial", "serial2", "serial4", "serial8"})
# the database fills these in; AS (expr) is a MySQL generated column
_GENERATED = frozenset({"DEFAULT", "GENERATED", "IDENTITY", "AUTO_INCREMENT", "AUTOINCREMENT", "AS"})


def _type_text(c: _Cur, stops: frozenset[str] = _TYPE_STOP) -> str | None:
    """Consume a column type (``numeric(10, 2)``, ``double precision``) up to a constraint word."""
    start = c.i
    while not c.done:
        if c.t[c.i].depth == c.base and (c.peek() in stops or c.at("CHARACTER", "SET")):
            break
        c.i += 1
    return c.text(start, c.i).lower() or None


class _ColDef(NamedTuple):
    name: str | None
    type: str | None
    not_null: bool  # NOT NULL written
    nullable: bool
    server_default: bool


def _column_def(c: _Cur) -> _ColDef:
    """``c <type> [NOT NULL] [DEFAULT ...] ...``; constraints inside parentheses are ignored."""
    name, ctype = c.ident(), _type_text(c)
    words = set(c.top())
    serial = (ctype or "").split(" ")[0] in _SERIAL  # serial implies NOT NULL and a sequence default
    not_null = c.has("NOT", "NULL")
    nullable = not (not_null or c.has("PRIMARY", "KEY") or "IDENTITY" in words or serial)
    server_default = serial or not words.isdisjoint(_GENERATED)
    return _ColDef(name, ctype, not_null, nullable, server_default)


# ---------------------------------------------------------------- DROP / CREATE


def _drop(c: _Cur, x: _Ctx) -> list[Operation]:
    c.take("DROP")
    temporary = bool(c.take_any("TEMPORARY", "TEMP"))
    if c.take("TABLE"):
        if_exists = c.take("IF", "EXISTS")
        refs, cascade = _names(c), c.has("CASCADE")
        flags: dict[str, Any] = {"if_exists": if_exists, "cascade": cascade, "temporary": temporary}
        return [x.op("drop_table", r, **flags) for r in refs]
    if otype := c.take_any("SCHEMA", "DATABASE"):
        if_exists = c.take("IF", "EXISTS")
        refs, cascade = _names(c), c.has("CASCADE")
        flags = {"if_exists": if_exists, "cascade": cascade, "object_type": otype.lower()}
        return [x.op("drop_schema", (n, None), **flags) for _, n in refs]
    if c.take("INDEX"):
        return _drop_index(c, x)
    return _other_object(c, x, "drop_other")


def _drop_index(c: _Cur, x: _Ctx) -> list[Operation]:
    """DROP INDEX [CONCURRENTLY] [IF EXISTS] a, b [CASCADE] [ON t] (MySQL names its table)."""
    concurrently = c.take("CONCURRENTLY")
    if_exists = c.take("IF", "EXISTS")
    refs = _names(c)
    table = c.name() if c.seek("ON") else None
    extra: dict[str, Any] = {"transaction": "unknown"} if concurrently else {}
    return [
        x.op(
            "drop_index",
            (table[0] or s, table[1]) if table else (s, None),
            name=n,
            concurrently=concurrently,
            if_exists=if_exists,
            **extra,
        )
        for s, n in refs
    ]


_CREATE_MODIFIERS = frozenset(
    {
        "OR",
        "REPLACE",
        "TEMPORARY",
        "TEMP",
        "GLOBAL",
        "LOCAL",
        "UNLOGGED",
        "RECURSIVE",
        "UNIQUE",
        "FULLTEXT",
        "SPATIAL",
        "ONLINE",
        "OFFLINE",
        "TRUSTED",
        "PROCEDURAL",
    }
)


def _create(c: _Cur, x: _Ctx) -> list[Operation]:
    c.take("CREATE")
    mods = set()
    while True:
        if word := c.take_any(*_CREATE_MODIFIERS):
            mods.add(word)
        elif c.take_any("DEFINER", "ALGORITHM"):  # MySQL: DEFINER = user@host, ALGORITHM = MERGE
            c.take("=")
            c.i += 1
            c.group()  # CURRENT_USER()
            if c.take("@"):
                c.i += 1
        elif c.take("SQL", "SECURITY"):
            c.i += 1
        else:
            break
    if c.take("TABLE"):
        if_not_exists = c.take("IF", "NOT", "EXISTS")
        ref = c.name()
        temporary = bool(mods & {"TEMPORARY", "TEMP"})
        if ref is None:
            return []
        table = x.op("create_table", ref, if_not_exists=if_not_exists, temporary=temporary)
        columns = c.group()
        return [table, *(_declared_types(columns, x, ref) if columns else [])]
    if c.take("INDEX"):
        return _create_index(c, x, unique="UNIQUE" in mods)
    if otype := c.take_any("SCHEMA", "DATABASE"):
        if_not_exists = c.take("IF", "NOT", "EXISTS")
        ref = c.name()  # CREATE SCHEMA AUTHORIZATION role names the schema after the role
        if ref and ref[1] == "authorization" and not c.done:
            ref = c.name()
        if ref is None:
            return []
        flags: dict[str, Any] = {"if_not_exists": if_not_exists, "object_type": otype.lower()}
        return [x.op("create_schema", (ref[1], None), **flags)]
    created = _other_object(c, x, "create_other")
    for o in created:
        o.details["or_replace"] = "REPLACE" in mods
    return created


def _create_index(c: _Cur, x: _Ctx, unique: bool) -> list[Operation]:
    """CREATE [UNIQUE] INDEX [CONCURRENTLY] [IF NOT EXISTS] [name] ON [ONLY] t ..."""
    concurrently = c.take("CONCURRENTLY")
    c.take("IF", "NOT", "EXISTS")
    index = None if c.at("ON") else c.name()
    if not c.seek("ON"):
        return []
    c.take("ONLY")
    schema, table = c.name() or (None, None)
    if table is None:
        return []
    schema = schema or (index[0] if index else None)  # SQLite qualifies the index name instead
    name = index[1] if index else None
    extra: dict[str, Any] = {"transaction": "unknown"} if concurrently else {}
    return [x.op("create_index", (schema, table), name=name, concurrently=concurrently, unique=unique, **extra)]


_TABLE_ITEMS = frozenset({"CONSTRAINT", "PRIMARY", "UNIQUE", "FOREIGN", "CHECK", "EXCLUDE", "LIKE", "INDEX", "KEY"})
_TABLE_ITEMS_MYSQL = frozenset({"FULLTEXT", "SPATIAL", "PERIOD"})


def _declared_types(columns: _Cur, x: _Ctx, ref: Ref) -> list[Operation]:
    """CREATE TABLE t (<columns and constraints>): each column's declared type (``column_type``)."""
    defs: list[tuple[_ColDef, bool, bool]] = []  # (column, PRIMARY KEY written on it, REFERENCES)
    keys: list[str] = []
    foreign: set[str] = set()
    for part in columns.split():
        if part.peek() in _TABLE_ITEMS or part.peek() in _TABLE_ITEMS_MYSQL:
            primary, referencing = part.has("PRIMARY", "KEY"), part.has("FOREIGN", "KEY")
            if (primary or referencing) and part.seek("KEY"):
                if part.peek() != "(":
                    part.ident()  # MySQL: FOREIGN KEY fk_name (a)
                group = part.group()
                named = [n[1] for g in (group.split() if group else []) if (n := g.name()) and n[1]]
                keys, foreign = (named, foreign) if primary else (keys, foreign | set(named))
            continue
        words = part.top()
        defs.append((_column_def(part), "PRIMARY" in words and "KEY" in words, "REFERENCES" in words))
    inline = [d.name for d, pk, _ in defs if pk and d.name]
    keys = inline or keys
    return [
        x.op(
            "column_type",
            ref,
            d.name,
            type_family=_type_family(d.type, x.dialect),
            new_table=True,
            primary_key=keys == [d.name] and not refs and d.name not in foreign,
        )
        for d, _, refs in defs
        if d.name
    ]


_FAMILY_WORDS = {
    "char": "char", "character": "char", "nchar": "char", "bpchar": "char",
    "varchar": "varchar", "nvarchar": "varchar", "varchar2": "varchar", "text": "text",
    "timestamp": "timestamp", "datetime": "timestamp", "timestamptz": "timestamptz",
    "int": "integer", "integer": "integer", "int4": "integer", "mediumint": "integer", "serial": "integer",
    "serial4": "integer", "smallint": "smallint", "int2": "smallint", "tinyint": "smallint",
    "smallserial": "smallint", "serial2": "smallint", "bigint": "bigint", "int8": "bigint",
    "bigserial": "bigint", "serial8": "bigint",
}  # fmt: skip


def _type_family(type_text: str | None, dialect: str | None) -> str | None:
    """A column type as written (``character varying(20)``) -> its family, as alembic_ops.type_family names them."""
    if not type_text:
        return None
    text = " ".join(type_text.replace("(", " (").split())
    first = text.split(" ")[0]
    if first == "character" and text.startswith("character varying"):
        return "varchar"
    if first == "timestamp" and "with time zone" in text and "without" not in text:
        return "timestamptz"
    if first == "serial" and _FAMILIES.get((dialect or "").split("+")[0]) == "mysql":
        return "bigint"  # MySQL's SERIAL is BIGINT UNSIGNED AUTO_INCREMENT
    return _FAMILY_WORDS.get(first, first)


# ---------------------------------------------------------------- ALTER TABLE


def _alter(c: _Cur, x: _Ctx) -> list[Operation]:
    c.take("ALTER")
    c.skip("ONLINE", "OFFLINE", "IGNORE")
    if not c.take("TABLE"):
        return _other_object(c, x, "alter_other")
    c.take("IF", "EXISTS")
    c.take("ONLY")
    ref = c.name()
    c.skip("*")
    if ref is None:
        return []
    ops = []
    for action in c.split(","):
        text = action.text()
        ops += _alter_action(action, x, ref) or [x.op("alter_other", ref, action=text)]
    return ops or [x.op("alter_other", ref, action="")]


def _alter_action(a: _Cur, x: _Ctx, ref: Ref) -> list[Operation]:
    word = a.peek()
    if word == "ADD":
        return _alter_add(a, x, ref)
    if word == "DROP":
        return _alter_drop(a, x, ref)
    if word == "ALTER":
        return _alter_column(a, x, ref)
    if word in ("MODIFY", "CHANGE"):
        return _redefine_column(a, x, ref)
    if word == "RENAME":
        return _alter_rename(a, x, ref)
    if a.take("CONVERT", "TO"):  # MySQL: CONVERT TO CHARACTER SET cs
        note = "converting the table's character set copies every row"
        return [x.op("alter_other", ref, action=a.text(a.i - 2).lower(), rebuilds_table=True, note=note)]
    if a.at("ALGORITHM", "=", "COPY") or a.at("ALGORITHM", "COPY"):  # asks for the copy
        return [x.op("alter_other", ref, action=a.text(), rebuilds_table=True, note="ALGORITHM=COPY")]
    if a.take("VALIDATE", "CONSTRAINT"):
        return [x.op("validate_constraint", ref, name=a.ident())]
    if a.take("DETACH", "PARTITION"):  # PostgreSQL: DETACH PARTITION p [CONCURRENTLY | FINALIZE]
        partition = a.name()
        concurrently, finalize = a.take("CONCURRENTLY"), a.take("FINALIZE")
        extra: dict[str, Any] = {"transaction": "unknown"} if concurrently else {}
        return [
            x.op(
                "detach_partition",
                ref,
                partition=partition[1] if partition else None,
                concurrently=concurrently,
                finalize=finalize,
                **extra,
            )
        ]
    return []


_CONSTRAINTS = (
    (("UNIQUE",), "unique"),
    (("PRIMARY", "KEY"), "primary_key"),
    (("FOREIGN", "KEY"), "foreign_key"),
    (("CHECK",), "check"),
    (("EXCLUDE",), "exclude"),
)


def _constraint_type(a: _Cur) -> str | None:
    for words, ctype in _CONSTRAINTS:
        if a.take(*words):
            return ctype
    return None


def _alter_add(a: _Cur, x: _Ctx, ref: Ref) -> list[Operation]:
    a.take("ADD")
    name = None
    if a.take("CONSTRAINT") and not any(a.at(*words) for words, _ in _CONSTRAINTS):
        name = a.ident()  # MySQL allows a bare CONSTRAINT before the type
    if ctype := _constraint_type(a):
        a.take_any("INDEX", "KEY")  # MySQL: ADD UNIQUE KEY uq (a), ADD FOREIGN KEY fk (a)
        if name is None and a.peek() not in ("(", "USING", "NULLS"):
            name = a.ident()
        using_index = a.has("USING", "INDEX") and not a.has("USING", "INDEX", "TABLESPACE")
        not_valid = a.has("NOT", "VALID")
        return [
            x.op("add_constraint", ref, constraint_type=ctype, not_valid=not_valid, name=name, using_index=using_index)
        ]
    if a.take_any("INDEX", "KEY", "FULLTEXT", "SPATIAL"):  # MySQL: ADD INDEX ix (a)
        a.skip("INDEX", "KEY")
        index = a.ident() if a.peek() not in ("(", "USING") else None
        return [x.op("create_index", ref, name=index, concurrently=False, unique=False)]
    if a.at("PARTITION"):
        return []
    a.take("COLUMN")
    a.take("IF", "NOT", "EXISTS")
    group = a.group()  # MySQL: ADD (c1 INT, c2 INT)
    ops = []
    for part in group.split() if group else [a]:
        text, words = part.text(), part.top()
        d = _column_def(part)
        if not d.name:
            continue
        rewrite = column_rewrites_table(text, x.dialect) if x.dialect else None
        extra: dict[str, Any] = {"rewrites_table": None if x.dialect is None else rewrite is not None}
        if rewrite:
            extra["note"] = rewrite
        extra["position"] = "first" if "FIRST" in words else "after" if "AFTER" in words else "end"
        extra["type_family"] = _type_family(d.type, x.dialect)
        ops.append(
            x.op("add_column", ref, d.name, nullable=d.nullable, server_default=d.server_default, type=d.type, **extra)
        )
    return ops


def _alter_drop(a: _Cur, x: _Ctx, ref: Ref) -> list[Operation]:
    a.take("DROP")
    if a.take("CONSTRAINT"):
        if_exists = a.take("IF", "EXISTS")
        name = a.ident()
        return [
            x.op("drop_constraint", ref, name=name, constraint_type=None, if_exists=if_exists, cascade=a.has("CASCADE"))
        ]
    for words, ctype in _CONSTRAINTS[1:4]:  # MySQL: DROP PRIMARY KEY / FOREIGN KEY fk / CHECK ck
        if a.take(*words):
            return [x.op("drop_constraint", ref, name=a.ident(), constraint_type=ctype, if_exists=False, cascade=False)]
    if a.take_any("INDEX", "KEY"):
        return [x.op("drop_index", ref, name=a.ident(), concurrently=False, if_exists=False)]
    if a.peek() in ("PARTITION", "SYSTEM", "PERIOD"):  # not columns; reported as alter_other
        return []
    a.take("COLUMN")
    if_exists = a.take("IF", "EXISTS")
    column = a.ident()
    cascade = a.has("CASCADE")
    return [x.op("drop_column", ref, column, if_exists=if_exists, cascade=cascade)] if column else []


def _alter_column(a: _Cur, x: _Ctx, ref: Ref) -> list[Operation]:
    """ALTER [COLUMN] c TYPE t | SET/DROP NOT NULL | SET DEFAULT ... (not CONSTRAINT/INDEX/CHECK)."""
    a.take("ALTER")
    if a.peek() in ("CONSTRAINT", "INDEX", "CHECK"):
        return []
    a.take("COLUMN")
    column = a.ident()
    if column is None:
        return []
    if a.take("SET", "DATA", "TYPE") or a.take("TYPE"):
        new_type = _type_text(a, frozenset({"USING", "COLLATE"}))
        return [
            x.op(
                "alter_column_type",
                ref,
                column,
                type_change="changed",
                old_type=None,
                new_type=new_type,
                using=a.has("USING"),
            )
        ]
    if a.take("SET", "NOT", "NULL"):
        return [x.op("set_not_null", ref, column)]
    if a.take("DROP", "NOT", "NULL"):
        return [x.op("drop_not_null", ref, column)]
    return [x.op("alter_column", ref, column, action=a.text().lower())]


def _redefine_column(a: _Cur, x: _Ctx, ref: Ref) -> list[Operation]:
    """MySQL MODIFY [COLUMN] c <def> / CHANGE [COLUMN] old new <def>."""
    change = a.take_any("MODIFY", "CHANGE") == "CHANGE"
    a.take("COLUMN")
    old = a.ident() if change else None
    new = _column_def(a)
    old = old or new.name
    if old is None:
        return []
    ops = []
    if new.name and new.name != old:
        ops.append(x.op("rename_column", ref, old, new_name=new.name))
    charset = a.has("CHARACTER", "SET") or a.has("CHARSET")
    ops.append(
        x.op(
            "alter_column_type",
            ref,
            old,
            type_change="changed",
            old_type=None,
            new_type=new.type,
            charset_change=charset,
        )
    )
    if new.not_null:
        ops.append(x.op("set_not_null", ref, old))
    return ops


def _alter_rename(a: _Cur, x: _Ctx, ref: Ref) -> list[Operation]:
    a.take("RENAME")
    if a.take_any("TO", "AS"):
        new = a.name()
        return [x.op("rename_table", ref, new_name=new[1])] if new else []
    if a.at("CONSTRAINT") or a.at("INDEX") or a.at("KEY"):
        return []
    a.take("COLUMN")
    old = a.name()
    if old and a.take("TO"):
        return [x.op("rename_column", ref, old[1], new_name=a.ident())]
    return [x.op("rename_table", ref, new_name=old[1])] if old and a.done else []  # MySQL: RENAME new


def _rename(c: _Cur, x: _Ctx) -> list[Operation]:
    """MySQL RENAME TABLE a TO b[, c TO d]."""
    c.take("RENAME")
    if not c.take_any("TABLE", "TABLES"):
        return []
    ops = []
    for pair in c.split():
        old = pair.name()
        new = pair.name() if pair.take("TO") else None
        if old and new:
            ops.append(x.op("rename_table", old, new_name=new[1]))
    return ops


# ---------------------------------------------------------------- data statements


def _truncate(c: _Cur, x: _Ctx) -> list[Operation]:
    """TRUNCATE [TABLE] [ONLY] a [*], b [RESTART IDENTITY] [CASCADE]."""
    cascade = c.has("CASCADE")
    c.take("TRUNCATE")
    c.take("TABLE")
    refs = []
    while True:
        c.take("ONLY")
        if (ref := c.name()) is None:
            break
        refs.append(ref)
        c.skip("*")
        if not c.take(","):
            break
    return [x.op("truncate", r, cascade=cascade) for r in refs]


_CLAUSES = frozenset(
    {  # words after a DELETE target that are not its alias
        "WHERE",
        "USING",
        "FROM",
        "SET",
        "RETURNING",
        "ORDER",
        "LIMIT",
        "JOIN",
        "INNER",
        "LEFT",
        "RIGHT",
        "CROSS",
        "FULL",
        "NATURAL",
        "STRAIGHT_JOIN",
        "ON",
        "PARTITION",
        "WITH",
        "OUTPUT",
    }
)


def _targets(c: _Cur) -> list[Ref]:
    """``[ONLY] t [*] [[AS] alias][, ...]``: the tables a DELETE writes to."""
    refs = []
    while True:
        c.take("ONLY")
        ref = c.name()
        if ref is None:
            break
        refs.append(ref)
        c.skip("*", ".")
        if c.take("AS") or (c.peek() not in _CLAUSES and c.peek() != ","):
            c.ident()
        if not c.take(","):
            break
    return refs


# ---------------------------------------------------------------- WHERE clauses that are always true

_WHERE_END = frozenset({"RETURNING", "ORDER", "LIMIT", "GROUP", "HAVING", "WINDOW", "OFFSET", "FETCH", "FOR"})
_COMPARE = frozenset("<>=!")
_UNKNOWN = object()  # an operand that is not a literal: a column, a function call, a subquery


def _where_limits(c: _Cur) -> bool:
    """Whether the statement has a top-level WHERE whose condition is not a constant that is always true.

    ``WHERE 1=1``, ``WHERE true``, ``WHERE 1``, ``WHERE 'a' = 'a'``, ``WHERE x > 0 OR 1 = 1`` select every
    row; a WHERE inside a subquery or CTE does not limit the outer statement."""
    where = next((j for j in range(c.i, c.n) if c.t[j].depth == c.base and c.t[j].up == "WHERE"), None)
    if where is None:
        return False
    end = next((j for j in range(where + 1, c.n) if c.t[j].depth == c.base and c.t[j].up in _WHERE_END), c.n)
    return _Condition(c.t[where + 1 : end]).always_true() is not True


class _Condition:
    """Evaluates a condition made of literals only (numbers, '...' strings, TRUE/FALSE/NULL), with
    comparisons, AND, OR, NOT and parentheses, in SQL's three-valued logic; any other operand is
    unknown (None), so ``x = 1 OR 1 = 1`` is still true and ``x = 1 AND 1 = 1`` is not."""

    __slots__ = ("t", "i", "level")

    def __init__(self, toks: list[_Tok]):
        self.t, self.i = toks, 0
        self.level = toks[0].depth if toks else 0  # the parenthesis depth being evaluated

    def always_true(self) -> bool | None:
        if not self.t:
            return None
        value = self._truth(self._or())
        return value if self.i >= len(self.t) else None

    def _peek(self) -> str:
        return self.t[self.i].up if self.i < len(self.t) else ""

    @staticmethod
    def _truth(value: Any) -> bool | None:
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, float):
            return value != 0  # MySQL: WHERE 1
        return None  # a string or an unknown operand

    def _or(self) -> Any:
        return self._connective("OR", self._and)

    def _and(self) -> Any:
        return self._connective("AND", self._not)

    def _connective(self, word: str, operand: Callable[[], Any]) -> Any:
        value = operand()
        while self._peek() == word:
            self.i += 1
            value = three_valued([self._truth(value), self._truth(operand())], word == "OR")
        return value

    def _not(self) -> Any:
        if self._peek() == "NOT":
            self.i += 1
            value = self._truth(self._not())
            return None if value is None else not value
        return self._compare()

    def _compare(self) -> Any:
        left = self._operand()
        op = ""
        while self._peek() in _COMPARE and self._peek():
            op += self._peek()
            self.i += 1
        if not op:
            if self._peek() not in ("", "AND", "OR", ")"):
                left = _UNKNOWN  # IS NULL, BETWEEN, IN, LIKE, ::cast, ...
            return self._settle(left)
        right = self._operand()
        if self._peek() not in ("", "AND", "OR", ")"):
            return self._settle(_UNKNOWN)
        if _UNKNOWN in (left, right) or left is None or right is None or type(left) is not type(right):
            return self._settle(_UNKNOWN if _UNKNOWN in (left, right) else None)
        if op in ("=", "=="):
            return bool(left == right)
        if op in ("<>", "!="):
            return bool(left != right)
        if isinstance(left, str) or op not in ("<", ">", "<=", ">="):
            return None  # string order depends on the collation
        return bool({"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op])

    def _settle(self, value: Any) -> Any:
        """Skip the rest of a non-literal operand up to the next AND/OR/")" at this level."""
        if value is not _UNKNOWN:
            return value
        while self.i < len(self.t):
            tok = self.t[self.i]
            if tok.depth < self.level or (tok.depth == self.level and tok.up in ("AND", "OR")):
                break  # the ")" closing this level carries the depth outside it
            self.i += 1
        return None

    def _operand(self) -> Any:
        """A literal (float, str, bool, None for NULL), a parenthesised condition, or _UNKNOWN."""
        tok = self.t[self.i] if self.i < len(self.t) else None
        if tok is None:
            return _UNKNOWN
        self.i += 1
        if tok.up == "(":
            self.level += 1
            value = self._or()
            self.level -= 1
            if self._peek() != ")":
                return _UNKNOWN
            self.i += 1
            return value
        if tok.up in ("TRUE", "FALSE"):
            return tok.up == "TRUE"
        if tok.up == "NULL":
            return None
        if tok.kind == "s" and tok.val.startswith("'"):
            return tok.val[1:-1].replace("''", "'")
        sign = 1.0
        if tok.up in ("-", "+") and self.i < len(self.t):
            sign = -1.0 if tok.up == "-" else 1.0
            tok = self.t[self.i]
            self.i += 1
        if tok.kind == "w" and tok.val.isdigit():
            digits = tok.val
            if self._peek() == "." and self.i + 1 < len(self.t) and self.t[self.i + 1].val.isdigit():
                digits += "." + self.t[self.i + 1].val
                self.i += 2
            return sign * float(digits)
        return _UNKNOWN


def _delete(c: _Cur, x: _Ctx) -> list[Operation]:
    """DELETE FROM t [alias] [USING ...] [WHERE ...] or MySQL DELETE t1, t2 FROM ...

    ``has_where`` counts a top-level WHERE only, not one inside a subquery, and not one that is
    always true (``WHERE 1=1``)."""
    has_where = _where_limits(c)
    c.take("DELETE")
    c.skip("LOW_PRIORITY", "QUICK", "IGNORE")
    c.take("FROM")
    return [x.op("delete", r, has_where=has_where) for r in _targets(c)]


def _update(c: _Cur, x: _Ctx) -> list[Operation]:
    """UPDATE [ONLY] t [alias] SET ... [FROM ...] [WHERE ...]; has_where as for DELETE."""
    has_where = _where_limits(c)
    c.take("UPDATE")
    c.skip("LOW_PRIORITY", "IGNORE")
    c.take("ONLY")
    ref = c.name()
    return [x.op("update", ref, has_where=has_where, set_columns=_set_columns(c))] if ref else []


_END_OF_SET = frozenset({"FROM", "WHERE", "RETURNING", "ORDER", "LIMIT"})


def _set_columns(c: _Cur) -> list[str]:
    """The columns an UPDATE assigns (``SET a = .., t.b = .., (c, d) = (..)``), so a backfill of a
    column added in the same revision can be told from an overwrite."""
    if not c.seek("SET"):
        return []
    end = next((j for j in range(c.i, c.n) if c.t[j].depth == c.base and c.t[j].up in _END_OF_SET), c.n)
    columns: list[str] = []
    for part in _Cur(c.t, c.src, c.i, end, c.base).split(","):
        inner = part.group()
        for target in inner.split(",") if inner else [part]:
            ref = target.name()
            if ref and ref[1] is not None:  # name() always gives a name: the check is for the type
                columns.append(ref[1])
    return columns


def _insert(c: _Cur, x: _Ctx) -> list[Operation]:
    """INSERT [INTO] t ...; MySQL REPLACE INTO t; SQLite INSERT OR REPLACE INTO t."""
    c.take_any("INSERT", "REPLACE")
    c.skip("LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE")
    if c.take("OR"):
        c.i += 1
    c.take("INTO")
    ref = c.name()
    return [x.op("insert", ref)] if ref else []


_LOCK_VARS = frozenset({"lock_timeout", "lock_wait_timeout"})


def _select(c: _Cur, x: _Ctx) -> list[Operation]:
    """SELECT ...; SELECT set_config('lock_timeout', '5s', false) sets the lock timeout."""
    for j in range(c.i, c.n - 1):
        if c.t[j].up == "SET_CONFIG" and c.t[j + 1].up == "(":
            c.i = j + 1
            inner = c.group()
            assert inner is not None  # the cursor is at the "(" checked above
            args = inner.split()
            name = args[0].literal().lower() if args else ""
            if name in _LOCK_VARS and len(args) >= 2:
                return [x.op("set_lock_timeout", name=name, value=args[1].literal(), scope=None)]
    return [x.op("select")]


_WITH_MAIN = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE", "VALUES"})


def _with(c: _Cur, x: _Ctx) -> list[Operation]:
    """WITH ... (DELETE|UPDATE|INSERT|SELECT); data-modifying CTE bodies count as well."""
    c.take("WITH")
    c.take("RECURSIVE")
    ops = []
    while not c.done and c.peek() not in _WITH_MAIN:
        body = c.group()
        if body is None:
            c.i += 1
        elif body.peek() in ("DELETE", "UPDATE", "INSERT"):
            ops += _dispatch(body, x)
    return ops + (_dispatch(c, x) or [_unrecognised(x)])


# ---------------------------------------------------------------- session, transactions, other

_SCOPES = ("SESSION", "LOCAL", "GLOBAL", "PERSIST", "PERSIST_ONLY")


def _assignment(c: _Cur) -> tuple[str, str | None, str | None]:
    """``[SESSION|LOCAL] [@@session.]name {=|:=|TO} value`` -> (name, value, scope)."""
    scope = c.take_any(*_SCOPES)
    c.skip("@")
    if c.peek() in _SCOPES and c.peek(1) == ".":
        scope = c.peek()
        c.i += 2
    parts = []
    while (part := c.ident()) is not None:
        parts.append(part)
        if not c.take("."):
            break
    c.take(":")
    if [p.lower() for p in parts] == ["time"] and c.take("ZONE"):  # SET [LOCAL] TIME ZONE 'UTC'
        return "timezone", c.literal(), scope.lower() if scope else None
    value = c.literal() if c.take_any("=", "TO") else None
    return ".".join(parts), value, scope.lower() if scope else None


def _set(c: _Cur, x: _Ctx) -> list[Operation]:
    """SET [SESSION|LOCAL] var {=|TO} value[, ...]; lock_timeout / lock_wait_timeout are singled out."""
    if c.take("RESET"):
        return [x.op("set", name=c.text().lower(), value=None, scope=None)]
    if c.take("PRAGMA"):  # SQLite: PRAGMA foreign_keys = OFF
        name = (c.name() or (None, None))[1]
        value = group.literal() if (group := c.group()) else (c.literal() if c.take("=") else None)
        return [x.op("set", name=name, value=value, scope=None)]
    c.take("SET")
    ops: list[Operation] = []
    if c.take("STATEMENT"):  # MariaDB: SET STATEMENT var=val[, ...] FOR <statement>
        start = c.i
        if not c.seek("FOR"):
            return []
        ops = _dispatch(_Cur(c.t, c.src, c.i, c.n, c.base), x) or [_unrecognised(x)]
        c = _Cur(c.t, c.src, start, c.i - 1, c.base)
    first = None
    for part in c.split():
        name, value, scope = _assignment(part)
        if name in _LOCK_VARS:
            return [x.op("set_lock_timeout", name=name, value=value, scope=scope), *ops]
        first = first or (name, value, scope)
    if first is None:
        return ops
    name, value, scope = first
    return [x.op("set", name=name or None, value=value, scope=scope), *ops]


_TRANSACTION = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "START", "SAVEPOINT", "RELEASE", "END", "ABORT"})


def _transaction(c: _Cur, x: _Ctx) -> list[Operation]:
    word = c.take_any(*_TRANSACTION) or ""
    if word == "START" and not c.at("TRANSACTION"):
        return []
    ops = [x.op("transaction", action=word.lower(), savepoint=word in ("ROLLBACK", "RELEASE") and c.has("TO"))]
    if word == "BEGIN" and c.peek() in _HANDLERS:  # an anonymous BEGIN <statement>; END block
        ops += _dispatch(c, x)
    return ops


_OTHER = frozenset(
    {
        "GRANT",
        "REVOKE",
        "COMMENT",
        "ANALYZE",
        "ANALYSE",
        "UNLOCK",
        "NOTIFY",
        "LISTEN",
        "UNLISTEN",
        "REFRESH",
        "DISCARD",
        "CHECKPOINT",
        "SHOW",
        "USE",
        "OPTIMIZE",
        "FLUSH",
        "SECURITY",
        "DEALLOCATE",
    }
)


def _other(c: _Cur, x: _Ctx) -> list[Operation]:
    """Understood and harmless: GRANT, COMMENT ON, ANALYZE, NOTIFY..."""
    return [x.op("other", command=c.peek().lower())]


# ---------------------------------------------------------------- maintenance and explicit locks


def _options(c: _Cur) -> dict[str, bool]:
    """``(FULL, VERBOSE false, CONCURRENTLY)``: PostgreSQL's parenthesised options, each on or off."""
    group = c.group()
    out = {}
    for part in group.split() if group else []:
        word = part.peek()
        part.i += 1
        out[word] = part.peek() not in ("FALSE", "OFF", "0")
    return out


def _reindex(c: _Cur, x: _Ctx) -> list[Operation]:
    """REINDEX [(options)] {INDEX | TABLE | SCHEMA | DATABASE | SYSTEM} [CONCURRENTLY] name."""
    c.take("REINDEX")
    concurrently = _options(c).get("CONCURRENTLY", False)
    target = c.take_any("INDEX", "TABLE", "SCHEMA", "DATABASE", "SYSTEM")
    concurrently = c.take("CONCURRENTLY") or concurrently
    schema, name = c.name() or (None, None)
    ref = (schema, name) if target == "TABLE" else (schema if target == "INDEX" else None, None)
    extra: dict[str, Any] = {"transaction": "unknown"} if concurrently else {}
    target_name = (target or "").lower() or None  # SQLite: REINDEX name (a table, index or collation)
    return [x.op("reindex", ref, target=target_name, name=name, concurrently=concurrently, **extra)]


def _vacuum(c: _Cur, x: _Ctx) -> list[Operation]:
    """VACUUM [(options)] [FULL] [FREEZE] [VERBOSE] [ANALYZE] [t [(cols)], ...]; SQLite VACUUM [schema]."""
    c.take("VACUUM")
    full = _options(c).get("FULL", False)
    while word := c.take_any("FULL", "FREEZE", "VERBOSE", "ANALYZE", "ANALYSE"):
        full = full or word == "FULL"
    command = "VACUUM FULL" if full else "VACUUM"
    refs = [ref for part in c.split() if (ref := part.name())] if not c.at("INTO") else []
    if not refs:
        return [x.op("vacuum", full=full, rewrites=full, command=command, target="every table")]
    return [x.op("vacuum", r, full=full, rewrites=full, command=command, target=r[1]) for r in refs]


def _cluster(c: _Cur, x: _Ctx) -> list[Operation]:
    """CLUSTER [VERBOSE] [(options)] [t [USING ix]], or the old CLUSTER ix ON t."""
    c.take("CLUSTER")
    c.take("VERBOSE")
    _options(c)
    first = c.name()
    if c.take("ON"):
        index, ref = first, c.name()
    else:
        ref, index = first, (c.name() if c.take("USING") else None)
    target = ref[1] if ref else "every clustered table"
    return [x.op("cluster", ref, rewrites=True, command="CLUSTER", index=index[1] if index else None, target=target)]


# lock modes that conflict with ROW EXCLUSIVE (INSERT/UPDATE/DELETE), and MySQL's READ/WRITE
_WRITE_BLOCKING = frozenset({"SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE", "READ", "WRITE"})


def _lock(c: _Cur, x: _Ctx) -> list[Operation]:
    """PostgreSQL LOCK [TABLE] [ONLY] t [*][, ...] [IN mode MODE] [NOWAIT];
    MySQL LOCK TABLES t [[AS] alias] {READ [LOCAL] | [LOW_PRIORITY] WRITE}[, ...]."""
    c.take("LOCK")
    if not c.take_any("TABLE", "TABLES") and c.peek() in ("INSTANCE", "BINLOG"):
        return [x.op("other", command="lock")]  # MySQL LOCK INSTANCE FOR BACKUP
    mode = "ACCESS EXCLUSIVE"  # PostgreSQL's default
    ups = c.top()
    if "IN" in ups and "MODE" in ups[ups.index("IN") :]:
        start = ups.index("IN")
        mode = " ".join(ups[start + 1 : start + ups[start:].index("MODE")])
    ops = []
    for part in c.split():
        part.take("ONLY")
        ref = part.name()
        if ref is None:
            continue
        part.skip("*")
        part.take("AS")
        if part.peek() not in ("READ", "WRITE", "LOW_PRIORITY", "IN", "NOWAIT", ""):
            part.ident()  # a MySQL alias
        part.take("LOW_PRIORITY")
        table_mode = part.take_any("READ", "WRITE") or mode
        ops.append(x.op("lock_table", ref, mode=table_mode, blocks_writes=table_mode in _WRITE_BLOCKING))
    return ops


_HANDLERS: dict[str, Handler] = {
    "DROP": _drop,
    "CREATE": _create,
    "ALTER": _alter,
    "RENAME": _rename,
    "TRUNCATE": _truncate,
    "DELETE": _delete,
    "UPDATE": _update,
    "INSERT": _insert,
    "REPLACE": _insert,
    "SELECT": _select,
    "WITH": _with,
    "SET": _set,
    "RESET": _set,
    "PRAGMA": _set,
    **dict.fromkeys(_TRANSACTION, _transaction),
    **dict.fromkeys(_OTHER, _other),
    "REINDEX": _reindex,
    "VACUUM": _vacuum,
    "CLUSTER": _cluster,
    "LOCK": _lock,
    "DO": lambda c, x: [x.op("unparsed", reason="DO block: procedural code is not analysed")],
}


def _dispatch(c: _Cur, x: _Ctx) -> list[Operation]:
    handler = _HANDLERS.get(c.peek())
    return handler(c, x) if handler else []


def _unrecognised(x: _Ctx) -> Operation:
    return x.op("unparsed", reason="not recognised")


# ---------------------------------------------------------------- entry point


def classify_sql(sql: str, dialect: str | None = None) -> list[Operation]:
    """One :class:`Operation` per action of each statement in ``sql`` (``source="sql"``).

    ``dialect`` is a SQLAlchemy dialect name; it only changes how comments and string
    escapes are lexed.  Empty or comment-only input gives ``[]``; never raises.
    """
    if isinstance(sql, bytes):
        sql = sql.decode("utf-8", "replace")
    elif not isinstance(sql, str):  # e.g. a TextClause; str() gives its SQL
        sql = "" if sql is None else str(sql)
    try:
        statements = list(_split(_lex(sql, dialect)))
    except Exception:  # noqa: BLE001 - a lexer failure must not crash the guard; report the text instead
        text = sql.strip().rstrip(";").strip()
        return [_Ctx(text).op("unparsed", reason="lexer error")] if text else []
    ops: list[Operation] = []
    for stmt, broken in statements:
        x = _Ctx(sql[stmt[0].start : stmt[-1].end], dialect)
        if broken:
            ops.append(x.op("unparsed", reason="unterminated quote, bracket or block"))
            continue
        try:
            found = _dispatch(_Cur(stmt, sql), x)
        except Exception:  # noqa: BLE001 - unexpected shapes of SQL fall back to "unparsed", never an error
            found = []
        ops += found or [_unrecognised(x)]
    if len(statements) > 1:
        # PostgreSQL runs a multi-statement query string as one implicit transaction block, so
        # CREATE INDEX CONCURRENTLY and the like fail there even between an explicit COMMIT and BEGIN
        for op in ops:
            if op.details.get("transaction") == "unknown":
                op.details["transaction"] = "inside"
    return ops


_ENDS_TRANSACTION = frozenset({"commit", "rollback", "end", "abort"})


def three_valued(values: list[bool | None], is_or: bool) -> bool | None:
    """``or`` (``is_or``) / ``and`` of truth values where None is unknown: one True (or, for ``and``,
    one False) decides, whatever the unknown ones are."""
    if is_or in values:
        return is_or
    return None if None in values else not is_or


def mark_transaction_blocks(operations: Iterable[Operation], start: str = "inside") -> None:
    """Decide, for one revision's operations in the order they ran, which statements that cannot run
    in a transaction block (``details["transaction"] == "unknown"``, or a CONCURRENTLY index from an
    ``op.*`` call) do run in one.

    ``start`` is the state when ``upgrade()`` begins: "inside" on PostgreSQL, where Alembic wraps
    migrations in a transaction. The COMMIT and BEGIN that Alembic emits around
    ``autocommit_block()`` offline (with transactional DDL), or that the revision writes itself,
    switch the state."""
    state = start
    for op in operations:
        d = op.details
        if op.kind == "transaction":
            if d.get("action") in _ENDS_TRANSACTION and not d.get("savepoint"):
                state = "outside"
            elif d.get("action") in ("begin", "start"):
                state = "inside"
        elif d.get("transaction") == "unknown" or (
            op.kind in ("create_index", "drop_index") and d.get("concurrently") is True and "transaction" not in d
        ):
            d["transaction"] = state
