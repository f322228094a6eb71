"""Ask MariaDB/MySQL which algorithm and lock an ALTER takes, by running it with the strictest clause it accepts.

``execute_probed(cursor, statement)`` runs ``ALTER TABLE``, ``CREATE INDEX`` and ``DROP INDEX`` with
``ALGORITHM=INSTANT``, then ``ALGORITHM=INPLACE, LOCK=NONE``, and so on down :data:`ATTEMPTS`. The
server checks a clause before it touches the table, so each refusal leaves nothing done, and the first
clause it accepts is the execution: the statement runs once. The weakest lock that is accepted is the
one the server would have taken by itself, which picks the least locking algorithm and lock it can.

Measured on MariaDB 10.11.19 (InnoDB, utf8mb4, 100 rows; ``t`` has ``id INT PRIMARY KEY, a INT,
b VARCHAR(10), c INT, KEY ka (a)``) - the statements as Alembic writes them:

=================================================================  =========  =========
statement                                                          algorithm  lock
=================================================================  =========  =========
ALTER TABLE t ADD COLUMN d INTEGER                                 instant    -
ALTER TABLE t ADD COLUMN d INTEGER NOT NULL DEFAULT 0 AFTER id     instant    -
ALTER TABLE t DROP COLUMN c                                        instant    -
ALTER TABLE t DROP COLUMN a  (a is indexed)                        inplace    none
ALTER TABLE t CHANGE c c2 INTEGER NULL / RENAME COLUMN c TO c2     instant    -
ALTER TABLE t ALTER COLUMN c SET DEFAULT '3'                       instant    -
ALTER TABLE t MODIFY b VARCHAR(20) NULL  (longer)                  instant    -
ALTER TABLE t MODIFY b VARCHAR(5) NULL  (shorter)                  copy       shared
ALTER TABLE t MODIFY c INTEGER NOT NULL                            inplace    none
ALTER TABLE t MODIFY c VARCHAR(20) NULL / MODIFY c BIGINT NULL     copy       shared
CREATE INDEX ix_b ON t (b) / CREATE UNIQUE INDEX ux_c ON t (c)     inplace    none
CREATE FULLTEXT INDEX ft_b ON t (b)                                inplace    shared
DROP INDEX ka ON t                                                 inplace    none
ALTER TABLE t ADD CONSTRAINT uq_c UNIQUE (c)                       inplace    none
ALTER TABLE t RENAME INDEX ka TO kz                                instant    -
ALTER TABLE t DROP PRIMARY KEY                                     copy       shared
ALTER TABLE t DROP PRIMARY KEY, ADD PRIMARY KEY (id, a)            inplace    none
ALTER TABLE nopk ADD CONSTRAINT pk PRIMARY KEY (id)                inplace    none
ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY(a) REFERENCES p (id)   copy       shared
  the same with foreign_key_checks=0                               instant    -
ALTER TABLE t ADD CONSTRAINT ck CHECK (a > 0)                      copy       shared
ALTER TABLE t ADD COLUMN e INT AUTO_INCREMENT UNIQUE               inplace    shared
ALTER TABLE t ADD COLUMN g INT AS (a + 1) STORED                   copy       shared
ALTER TABLE t COMMENT 'orders' / RENAME t2                         instant    -
ALTER TABLE t ENGINE=InnoDB / FORCE / ROW_FORMAT=COMPRESSED        inplace    none
ALTER TABLE t ENGINE=Aria / ORDER BY a / PARTITION BY HASH(id) ..  copy       shared
ALTER TABLE t CONVERT TO CHARACTER SET latin1                      copy       shared
ALTER IGNORE TABLE t ADD UNIQUE (c)                                copy       shared
MyISAM, Aria, MEMORY: ADD/DROP COLUMN, ADD INDEX, MODIFY ...       copy       shared
MyISAM, Aria, MEMORY: RENAME, COMMENT, SET DEFAULT, RENAME INDEX   instant    -
ALTER TABLE p TRUNCATE PARTITION p0 (and other partition upkeep)   None (no clause allowed)
=================================================================  =========  =========

An instant change is reported with lock "none": it only rewrites metadata. No statement measured
needed ``ALGORITHM=INPLACE, LOCK=EXCLUSIVE`` (a bare ``RENAME`` refuses LOCK=NONE/SHARED in place,
but is instant first, and MyISAM, Aria and MEMORY do nothing in place); it stays in the order for
servers and engines that have such operations, at the cost of one refusal before each copy.

What waits (:func:`blocks_for`), measured with a 1.5 million row table and a second session with
``lock_wait_timeout=1`` while the ALTER ran: INPLACE with LOCK=NONE let SELECT, INSERT and UPDATE run
but not another ALTER or CREATE INDEX on the table (the ALTER holds an upgradable metadata lock
throughout), so it blocks ["DDL"], like PostgreSQL's SHARE UPDATE EXCLUSIVE; LOCK=SHARED (INPLACE or
COPY, and COPY by default) let SELECT run and blocked writes and DDL; LOCK=EXCLUSIVE blocked all
three. Every algorithm, instant too, takes an exclusive metadata lock for a moment at the start and
the end: behind an open transaction that has read the table it waits, and every statement on the
table waits behind it (measured: a SELECT timed out behind an instant ADD COLUMN that was waiting) -
on the scratch copy the trace runs on there is no such transaction, so this is not reported.

Where the clause goes (all measured; a wrong place is a syntax error, 1064):

* ALTER TABLE: right after the table name (and MariaDB's ``WAIT n``/``NOWAIT``), before the specs,
  with a comma: ``ALTER TABLE t ALGORITHM=INSTANT, ADD ...``. At the end it would land inside a
  trailing ``-- comment`` and is a syntax error after ``ORDER BY``, ``PARTITION BY`` and ``REMOVE
  PARTITIONING``; in front it works before all of them, without the comma before ``PARTITION BY`` /
  ``REMOVE PARTITIONING`` alone or when there are no specs. Partition upkeep (ADD/DROP/TRUNCATE/
  REORGANIZE/EXCHANGE/CONVERT/ANALYZE/REBUILD PARTITION, COALESCE) and DISCARD TABLESPACE take the
  clause nowhere on MariaDB: the syntax error sends the statement through as written, with algorithm
  None.
* CREATE INDEX: at the end, no comma: ``CREATE INDEX i ON t (b) ALGORITHM=INPLACE LOCK=NONE``.
* DROP INDEX: MariaDB 10.11 takes no clause after ``DROP INDEX i ON t`` at all (MySQL does), so it is
  asked as ``ALTER TABLE t ALGORITHM=..., DROP INDEX i``, which is what it is short for.

What the server says but does not do (measured): told ``ALGORITHM=INSTANT``, MariaDB 10.11 accepts an
ENGINE change, ORDER BY, PARTITION BY and REMOVE PARTITIONING and copies every row (it reports them as
affected); it does refuse INPLACE for them. Those statements are not asked for INSTANT, and an
attempt other than COPY that reports rows affected (only a copy does, for an ALTER) is reported as a
copy with an unknown lock.

Decisions:

* A statement that names ``ALGORITHM`` or ``LOCK`` itself runs as written, and the probe reports what
  it named; a lock it does not name is None (taken as exclusive, as the report does), except that
  instant means "none" and ``ALTER ONLINE`` means LOCK=NONE. ``DEFAULT`` counts as named: the last
  clause of a kind wins (measured: ``ALGORITHM=INSTANT, ..., ALGORITHM=DEFAULT`` copies), so a probe
  in front of it would be overridden and report a lie.
* ``ALTER ONLINE TABLE``: an explicit LOCK overrides ONLINE (measured: ``ALTER ONLINE TABLE t MODIFY
  c VARCHAR(20), ALGORITHM=COPY, LOCK=SHARED`` runs), so only the clauses with LOCK=NONE are asked;
  when all are refused the statement as written raises its own refusal.
* An error that is not a refusal (a duplicate column, a missing table, data truncated by the copy)
  makes the statement run again as written, so that its own error is the one raised - at the cost of
  doing the failing work twice. Not again: lock and statement timeouts, deadlocks, a killed query, a
  lost connection (client errors 2000-2999), which are raised from the first attempt.
* Not asked (run as written, algorithm None): other statements, more than one statement, an
  unterminated quote, and executable comments (``/*! ... */``), which the server runs or not by
  version.
* MySQL 8 (not tested here, no server): the same grammar, refusals 1845/1846 and the INSTANT-only
  errors in ``_MYSQL_INSTANT_REFUSED``; MySQL has no ``ALTER ONLINE``, ``WAIT``, ``NOCOPY``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["ATTEMPTS", "Probe", "blocks_for", "execute_probed"]

SELECT, WRITES, DDL = "SELECT", "INSERT/UPDATE/DELETE", "DDL"


@dataclass
class Probe:
    """What the server said about one statement, which :func:`execute_probed` has run once."""

    algorithm: str | None  # "instant" | "inplace" | "copy"; None: not a statement the server could be asked about
    lock: str | None  # "none" | "shared" | "exclusive": the weakest the server accepted; None: not known
    blocks: list[str]  # of [SELECT, WRITES, DDL], in that order: what waits for the table while it runs
    table: str | None  # the bare lower-case name of the table it alters
    tried: list[str] = field(default_factory=list)  # "ALGORITHM=INSTANT: <the server's refusal>", in order


class _Attempt(NamedTuple):
    clause: str
    algorithm: str
    lock: str


# The order of attempts, strictest first. LOCK=NONE with COPY is refused by MariaDB 10.11 and MySQL 8
# ("COPY algorithm requires a lock") but accepted by MariaDB 11.2+, whose table copy applies
# concurrent writes at the end; asking costs one refusal elsewhere.
ATTEMPTS = (
    _Attempt("ALGORITHM=INSTANT", "instant", "none"),
    _Attempt("ALGORITHM=INPLACE, LOCK=NONE", "inplace", "none"),
    _Attempt("ALGORITHM=INPLACE, LOCK=SHARED", "inplace", "shared"),
    _Attempt("ALGORITHM=INPLACE, LOCK=EXCLUSIVE", "inplace", "exclusive"),
    _Attempt("ALGORITHM=COPY, LOCK=NONE", "copy", "none"),
    _Attempt("ALGORITHM=COPY, LOCK=SHARED", "copy", "shared"),
    _Attempt("ALGORITHM=COPY, LOCK=EXCLUSIVE", "copy", "exclusive"),
)

# Refusals: the clause asked for something the server will not do for this statement; it checks
# before it changes anything, so the next attempt starts from the same table.
#   1845 ER_ALTER_OPERATION_NOT_SUPPORTED, 1846 ER_ALTER_OPERATION_NOT_SUPPORTED_REASON: both servers,
#        for ALGORITHM and for LOCK alike (MariaDB has no separate code for an impossible LOCK);
#   1800 ER_UNKNOWN_ALTER_ALGORITHM, 1801 ER_UNKNOWN_ALTER_LOCK: a server older than the name
#        (ALGORITHM=INSTANT on MySQL 5.7 or MariaDB < 10.3).
_REFUSED = frozenset({1845, 1846, 1800, 1801})
# MySQL 8 only, and only when ALGORITHM=INSTANT was asked for (without it the server silently does
# the work in place): 4092 ER_INNODB_MAX_ROW_VERSION (64 instant column changes, 255 from 9.1),
# 4093 ER_INNODB_INSTANT_ADD_NOT_SUPPORTED_MAX_SIZE, 4157 ER_INNODB_INSTANT_ADD_DROP_NOT_SUPPORTED_MAX_SIZE,
# 4158 ER_INNODB_INSTANT_ADD_NOT_SUPPORTED_MAX_FIELDS. MariaDB numbers these differently (4158 is
# ER_PERIOD_CONSTRAINT_DROP there), so they count only on a server that does not call itself MariaDB.
# Not measured here (no MySQL server): taken from MySQL's handler0alter.cc and its error list.
_MYSQL_INSTANT_REFUSED = frozenset({4092, 4093, 4157, 4158})
# Errors that are about the moment, not the statement: running it again would wait or fail again
# for the same reason, so they are raised as they are.
_NOT_AGAIN = frozenset(
    {
        1053,  # ER_SERVER_SHUTDOWN
        1205,  # ER_LOCK_WAIT_TIMEOUT (also a metadata lock: lock_wait_timeout)
        1213,  # ER_LOCK_DEADLOCK
        1317,  # ER_QUERY_INTERRUPTED
        1927,  # ER_CONNECTION_KILLED (MariaDB)
        1969,  # ER_STATEMENT_TIMEOUT (MariaDB max_statement_time)
        3024,  # ER_QUERY_TIMEOUT (MySQL max_execution_time)
    }
)

_ALGORITHMS = {"INSTANT": "instant", "INPLACE": "inplace", "NOCOPY": "inplace", "COPY": "copy", "DEFAULT": None}
_LOCKS = {"NONE": "none", "SHARED": "shared", "EXCLUSIVE": "exclusive", "DEFAULT": None}


def blocks_for(algorithm: str | None, lock: str | None) -> list[str]:
    """Which application statements on the table wait while the statement runs (measured, see above).

    With a known algorithm an unknown lock (None) is taken as exclusive, as the report does; with
    neither known, nothing is known to wait."""
    if algorithm == "instant":
        return []
    if lock == "none":
        return [DDL]
    if lock == "shared":
        return [WRITES, DDL]
    if lock == "exclusive" or algorithm is not None:
        return [SELECT, WRITES, DDL]
    return []


def execute_probed(cursor: Any, statement: str, parameters: Any = None) -> Probe:
    """Run ``statement`` once on ``cursor`` (a DBAPI cursor of MariaDB or MySQL), with the strictest
    ALGORITHM/LOCK clause the server accepts, and say which that was.

    Each attempt the server refuses (see ``_REFUSED``) has changed nothing; the first it accepts is the
    execution. On any other error the statement is run again as written, so the error raised is the
    statement's own (a clause the syntax has no room for - partition maintenance, DISCARD TABLESPACE -
    is such an error, after which the statement simply runs, with algorithm None). A statement that
    names ALGORITHM or LOCK itself, or that cannot be asked about, runs as written.
    """
    plan = _plan(statement)
    if plan.render is None or plan.named is not None:
        _execute(cursor, statement, parameters)
        if plan.named is None:
            return Probe(None, None, [], plan.table, [])
        algorithm, lock = plan.named
        tried: list[str] = []
        if algorithm in ("instant", "inplace") and _copied(cursor):
            tried.append(f"as written: accepted, but the server copied {cursor.rowcount} rows")
            algorithm, lock = "copy", None
        if algorithm == "instant" and lock is None:
            lock = "none"
        return Probe(algorithm, lock, blocks_for(algorithm, lock), plan.table, tried)

    tried = []
    render, error = plan.render, _error_class(cursor)
    for attempt in plan.attempts:
        try:
            _execute(cursor, render(attempt.clause), parameters)
        except error as exc:
            code = _errno(exc)
            if code is None:
                raise
            if code in _REFUSED or (
                code in _MYSQL_INSTANT_REFUSED and attempt.algorithm == "instant" and _is_mysql(cursor)
            ):
                tried.append(f"{attempt.clause}: {_message(exc)}")
                continue
            if code in _NOT_AGAIN or not _from_server(code):
                raise
            tried.append(f"{attempt.clause}: {_message(exc)}")
            _execute(cursor, statement, parameters)  # its own error, if it has one, is raised from here
            return Probe(None, None, [], plan.table, tried)
        algorithm, lock = attempt.algorithm, attempt.lock
        if algorithm != "copy" and _copied(cursor):
            # the server took the clause and copied the table anyway (a safety net: the cases measured,
            # ENGINE=, ORDER BY and partitioning, skip ALGORITHM=INSTANT; an empty table copies 0 rows)
            tried.append(f"{attempt.clause}: accepted, but the server copied {cursor.rowcount} rows")
            algorithm, lock = "copy", None
        return Probe(algorithm, lock, blocks_for(algorithm, lock), plan.table, tried)
    # every clause refused (ALTER ONLINE that cannot be done without a lock): the statement as written
    # raises its own refusal, or does what it does without our knowing how
    _execute(cursor, statement, parameters)
    return Probe(None, None, [], plan.table, tried)


# ---------------------------------------------------------------- running


def _execute(cursor: Any, sql: str, parameters: Any) -> None:
    if parameters is None:
        cursor.execute(sql)
    else:
        cursor.execute(sql, parameters)


def _copied(cursor: Any) -> bool:
    """Whether the statement just run reported rows affected: only a table copy does for an ALTER."""
    rows = getattr(cursor, "rowcount", None)
    return isinstance(rows, int) and rows > 0


def _error_class(cursor: Any) -> type[BaseException]:
    """The driver's DBAPI ``Error`` (PEP 249's optional ``Connection.Error``), or Exception."""
    error = getattr(getattr(cursor, "connection", None), "Error", None)
    return error if isinstance(error, type) and issubclass(error, BaseException) else Exception


def _errno(exc: BaseException) -> int | None:
    code = getattr(exc, "errno", None)  # mysql-connector; PyMySQL and mysqlclient: args[0]
    if isinstance(code, int):
        return code
    if exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None


def _message(exc: BaseException) -> str:
    message = getattr(exc, "msg", None)
    if isinstance(message, str):
        return message
    if len(exc.args) > 1 and isinstance(exc.args[1], str):
        return exc.args[1]
    return str(exc)


def _from_server(code: int) -> bool:
    """Server errors are 1000-1999 and 3000 up; 2000-2999 are the client library's (CR_*)."""
    return code >= 1000 and not 2000 <= code < 3000


def _is_mysql(cursor: Any) -> bool:
    """Whether the server is MySQL, not MariaDB (which reports e.g. "5.5.5-10.11.19-MariaDB")."""
    connection = getattr(cursor, "connection", None)
    version = getattr(connection, "server_version", None)  # PyMySQL
    info = getattr(connection, "get_server_info", None)  # mysqlclient, mysql-connector
    if not isinstance(version, str) and callable(info):
        version = info()
    if isinstance(version, bytes):
        version = version.decode(errors="replace")
    return isinstance(version, str) and bool(version) and "mariadb" not in version.lower()


# ---------------------------------------------------------------- reading the statement


class _Tok(NamedTuple):
    kind: str  # "w" word, "q" `quoted`, "d" "double-quoted", "s" 'string', "o" any other character
    text: str  # unquoted for q/d/s
    start: int
    end: int
    depth: int  # parenthesis depth ("(" and ")" carry the depth outside them)

    def word(self, *words: str) -> bool:
        return self.kind == "w" and self.text.upper() in words


_WORD = re.compile(r"[\w$]+")


def _lex(sql: str) -> list[_Tok] | None:
    """The tokens of ``sql``, comments skipped; None for what is better left to the server: an
    unterminated quote or comment, or an executable comment (``/*! ... */``, ``/*M! ... */``), whose
    text the server may or may not run."""
    toks: list[_Tok] = []
    i, n, depth = 0, len(sql), 0
    while i < n:
        ch = sql[i]
        if ch.isspace():
            i += 1
        elif ch == "#" or (sql.startswith("--", i) and (i + 2 == n or sql[i + 2].isspace() or ord(sql[i + 2]) < 32)):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            if sql.startswith(("/*!", "/*M!"), i):
                return None
            end = sql.find("*/", i + 2)
            if end < 0:
                return None
            i = end + 2
        elif ch in "'\"`":
            j = i + 1
            while j < n:
                if sql[j] == "\\" and ch != "`":
                    j += 2
                elif sql[j] == ch:
                    if j + 1 < n and sql[j + 1] == ch:
                        j += 2
                    else:
                        break
                else:
                    j += 1
            if j >= n:
                return None
            kind = {"`": "q", '"': "d", "'": "s"}[ch]
            toks.append(_Tok(kind, sql[i + 1 : j].replace(ch * 2, ch), i, j + 1, depth))
            i = j + 1
        elif m := _WORD.match(sql, i):
            toks.append(_Tok("w", m.group(), i, m.end(), depth))
            i = m.end()
        else:
            if ch == ")":
                depth = max(depth - 1, 0)
            toks.append(_Tok("o", ch, i, i + 1, depth))
            if ch == "(":
                depth += 1
            i += 1
    return toks


@dataclass
class _Plan:
    table: str | None = None
    render: Callable[[str], str] | None = None  # the statement with a clause put in; None: run as written
    named: tuple[str | None, str | None] | None = None  # (algorithm, lock) the statement names itself
    attempts: Sequence[_Attempt] = ATTEMPTS


def _plan(statement: str) -> _Plan:
    toks = _lex(statement)
    if not toks:
        return _Plan()
    while toks and toks[-1].kind == "o" and toks[-1].text == ";":
        toks.pop()
    if any(t.kind == "o" and t.text == ";" for t in toks) or not toks:
        return _Plan()  # more than one statement
    if toks[0].word("ALTER"):
        return _alter_table(statement, toks)
    if toks[0].word("CREATE"):
        return _create_index(statement, toks)
    if toks[0].word("DROP"):
        return _drop_index(statement, toks)
    return _Plan()


def _name(toks: list[_Tok], i: int) -> tuple[str, int] | None:
    """The bare lower-case name of ``[schema.]name`` at ``toks[i]``, and the index after it."""
    if i >= len(toks) or toks[i].kind not in ("w", "q", "d"):
        return None
    last, i = toks[i], i + 1
    if i + 1 < len(toks) and toks[i].text == "." and toks[i].kind == "o" and toks[i + 1].kind in ("w", "q", "d"):
        last, i = toks[i + 1], i + 2
    return last.text.lower(), i


def _wait(toks: list[_Tok], i: int) -> int:
    """Past MariaDB's ``WAIT n`` / ``NOWAIT`` at ``toks[i]``, if there."""
    if i < len(toks) and toks[i].word("NOWAIT"):
        return i + 1
    if i + 1 < len(toks) and toks[i].word("WAIT") and toks[i + 1].text.isdigit():
        return i + 2
    return i


def _named(toks: Sequence[_Tok]) -> tuple[str | None, str | None] | None:
    """The ALGORITHM and LOCK the statement names at the top level (the last of each wins, as on the
    server), or None when it names neither. ``ALGORITHM`` is not a reserved word (a column may be
    called that): only ``ALGORITHM [=] <one of its values>`` counts."""
    found, algorithm, lock = False, None, None
    top = [t for t in toks if t.depth == 0]
    for k, tok in enumerate(top):
        if not tok.word("ALGORITHM", "LOCK"):
            continue
        j = k + 1
        if j < len(top) and top[j].kind == "o" and top[j].text == "=":
            j += 1
        if j >= len(top) or top[j].kind != "w":
            continue
        value = top[j].text.upper()
        if tok.word("ALGORITHM") and value in _ALGORITHMS:
            found, algorithm = True, _ALGORITHMS[value]
        elif tok.word("LOCK") and value in _LOCKS:
            found, lock = True, _LOCKS[value]
    return (algorithm, lock) if found else None


def _follows(toks: Sequence[_Tok], k: int, first: str, second: str) -> bool:
    return k + 1 < len(toks) and toks[k].word(first) and toks[k + 1].word(second)


# a word before ENGINE that makes it a column's name, not the table option
_COLUMN_CONTEXT = frozenset({"ADD", "COLUMN", "CHANGE", "MODIFY", "ALTER", "DROP", "AFTER", "TO", "EXISTS", "BY"})


def _copies_regardless(rest: Sequence[_Tok]) -> bool:
    """Whether the spec list holds a change MariaDB 10.11 makes by copying the table even when told
    ALGORITHM=INSTANT (measured: it accepts the clause and reports every row copied): a new ENGINE,
    ORDER BY, PARTITION BY, REMOVE PARTITIONING. ALGORITHM=INPLACE it does refuse for them."""
    top = [t for t in rest if t.depth == 0]
    for k, tok in enumerate(top):
        if _follows(top, k, "ORDER", "BY") or _follows(top, k, "PARTITION", "BY"):
            return True
        if _follows(top, k, "REMOVE", "PARTITIONING"):
            return True
        if tok.word("ENGINE") and k + 1 < len(top) and (top[k + 1].text == "=" or top[k + 1].kind in ("w", "q", "s")):
            before = top[k - 1] if k else None
            if before is not None and before.kind == "w" and before.text.upper() in _COLUMN_CONTEXT:
                continue
            if k >= 2 and top[k - 2].word("CHANGE"):  # CHANGE old engine <type>
                continue
            return True
    return False


def _alter_table(sql: str, toks: list[_Tok]) -> _Plan:
    """``ALTER [ONLINE] [IGNORE] TABLE [IF EXISTS] [db.]t [WAIT n|NOWAIT] <specs>``.

    The clause goes right after the name, before the specs (``ALTER TABLE t ALGORITHM=INSTANT, ADD
    ...``): both servers' grammars allow it there, and unlike a clause at the end it leaves a trailing
    ``ORDER BY``, partition options, comments and ``;`` as they are. Before ``PARTITION BY`` or
    ``REMOVE PARTITIONING`` alone, or no specs at all, it takes no comma."""
    i, online = 1, False
    while i < len(toks) and toks[i].word("ONLINE", "IGNORE"):
        online = online or toks[i].word("ONLINE")
        i += 1
    if i >= len(toks) or not toks[i].word("TABLE"):
        return _Plan()
    i += 1
    if _follows(toks, i, "IF", "EXISTS"):
        i += 2
    name = _name(toks, i)
    if name is None:
        return _Plan()
    table, i = name
    i = _wait(toks, i)
    at, rest = toks[i - 1].end, toks[i:]
    plan = _Plan(table=table, named=_named(rest))
    if online and plan.named is not None and plan.named[1] is None:
        plan.named = (plan.named[0], "none")  # ALTER ONLINE is LOCK=NONE
    bare = not rest or _follows(rest, 0, "PARTITION", "BY") or _follows(rest, 0, "REMOVE", "PARTITIONING")
    comma = "" if bare else ","
    plan.render = lambda clause: f"{sql[:at]} {clause}{comma}{sql[at:]}"
    attempts: Sequence[_Attempt] = ATTEMPTS
    if online:  # an explicit LOCK overrides ONLINE (measured): ask only what ONLINE allows
        attempts = [a for a in attempts if a.lock == "none"]
    if _copies_regardless(rest):
        attempts = [a for a in attempts if a.algorithm != "instant"]
    plan.attempts = attempts
    return plan


def _create_index(sql: str, toks: list[_Tok]) -> _Plan:
    """``CREATE [OR REPLACE] [UNIQUE|FULLTEXT|SPATIAL] INDEX [IF NOT EXISTS] i [USING x] ON [db.]t (...)
    [options]``: the clause goes at the end, without a comma (``... ALGORITHM=INPLACE LOCK=NONE``; with a
    comma it is a syntax error)."""
    i = 1
    if _follows(toks, i, "OR", "REPLACE"):
        i += 2
    if i < len(toks) and toks[i].word("UNIQUE", "FULLTEXT", "SPATIAL"):
        i += 1
    if i >= len(toks) or not toks[i].word("INDEX"):
        return _Plan()
    on = next((k for k in range(i + 1, len(toks)) if toks[k].depth == 0 and toks[k].word("ON")), None)
    name = _name(toks, on + 1) if on is not None else None
    if name is None:
        return _Plan()
    table, i = name
    end = toks[-1].end
    return _Plan(
        table=table,
        named=_named(toks[i:]),
        render=lambda clause: f"{sql[:end]} {clause.replace(',', '')}{sql[end:]}",
    )


def _drop_index(sql: str, toks: list[_Tok]) -> _Plan:
    """``DROP INDEX [IF EXISTS] i ON [db.]t [WAIT n|NOWAIT]``. MariaDB 10.11 takes no ALGORITHM or LOCK
    after DROP INDEX (a syntax error, measured; MySQL does), so it is asked as the ALTER TABLE it is
    short for: ``ALTER TABLE t [WAIT n] <clause>, DROP INDEX [IF EXISTS] i``."""
    if len(toks) < 2 or not toks[1].word("INDEX"):
        return _Plan()
    i = 2
    if _follows(toks, i, "IF", "EXISTS"):
        i += 2
    if i >= len(toks) or toks[i].kind not in ("w", "q", "d"):
        return _Plan()
    index_end, i = toks[i].end, i + 1
    if i >= len(toks) or not toks[i].word("ON"):
        return _Plan()
    name = _name(toks, i + 1)
    if name is None:
        return _Plan()
    table, after = name
    after = _wait(toks, after)
    named = _named(toks[after:])
    if named is not None:
        return _Plan(table=table, named=named)
    if after != len(toks):
        return _Plan(table=table)  # something we do not know: as written
    index = sql[toks[1].end : index_end].strip()
    target = sql[toks[i + 1].start : toks[after - 1].end]
    tail = sql[toks[-1].end :]
    return _Plan(table=table, render=lambda clause: f"ALTER TABLE {target} {clause}, DROP INDEX {index}{tail}")
