"""The restore: pg_restore turns the schema archive into SQL, COPY loads the rows, in one transaction.

Everything runs in ONE transaction on one connection, so a failure changes nothing: pg_restore
does not touch the database, it turns the archive into SQL (``--file=-``) that we execute entry
by entry. The entries to restore are chosen from the archive's own dependency graph
(``pg_restore --verbose`` prints each TOC entry's id, catalog id and dependencies): the tables
being restored, and everything that depends on them (sequences they own, defaults, indexes,
constraints, triggers, rules, policies, comments, grants, views), which is what
``DROP TABLE ... CASCADE`` removes. Foreign keys belong to the table that owns them: the
restored tables' own foreign keys come from the archive; foreign keys OTHER tables hold on
them are read live (``pg_get_constraintdef``) before the drop and re-added afterwards.

Steps: stop the writers (below); remember those foreign keys; ``DROP TABLE ... CASCADE``;
pre-data; ``COPY ... FROM STDIN`` per table (no constraints or triggers exist yet, so the order
does not matter); set the sequences; post-data (indexes, constraints, triggers); re-add the
remembered foreign keys (validated, so a restore that would leave a dangling reference fails and
rolls back); refresh the materialized views it created that were populated in the snapshot (a
``--schema-only`` archive creates them ``WITH NO DATA``), in archive order, which is dependency
order (a view over another comes after it).

Stopping the writers: the transaction first takes ``LOCK TABLE ... IN EXCLUSIVE MODE`` (in one
statement, in name order) on every existing table it restores and on every table whose foreign
keys point at one (the restore drops and re-adds those keys: locking them later, after the
writers queued behind us, could deadlock). EXCLUSIVE waits for the transactions writing there to
end and makes new writers wait, while readers go on. That wait is the point, but it is bounded:
a writer that keeps its transaction open for ``WRITERS_WAIT_MS`` fails the restore (nothing
changed, writers resume); a deadlock with a writer that locks tables in another order is retried
a few times. Then, when the caller wants a pre-restore snapshot, the transaction exports its
snapshot (taken after the locks were granted, so it holds every committed write) and the
callback dumps it (``SnapshotView``: pg_dump's and COPY's ACCESS SHARE locks do not conflict with
EXCLUSIVE). Only then is anything changed; the writers stay stopped until the commit, so every
write lands either in the pre-snapshot or after the restore. The ACCESS EXCLUSIVE locks the drop
takes afterwards wait for the readers, which new readers then queue behind.

A full restore (``tables=None``) also restores the objects that belong to no table (schemas,
types, functions, standalone sequences, ...): pg_restore's ``--clean --if-exists`` drops go
first (each in a savepoint; one that fails because something outside the restore still uses
the object is skipped, and so is the matching "already exists" on create; schemas,
extensions and publications are never dropped). A partial restore creates such objects only
when a restored table needs them and they are missing. The objects of migrate-guard's own
protection are left out either way (``_is_protection``).

A table that a restored table's foreign key points at but that is not restored (a partial
snapshot holds only some tables; its archive holds the whole schema) is created, EMPTY, only when
the target lacks it (a snapshot restored into a new database, as ``verify --read-data`` does): its
columns, defaults, sequences, indexes and constraints, and what they need, but none of its own
foreign keys (it holds no row to check). The foreign keys pointing at such a table are added
``NOT VALID``: the rows they would be checked against were never in the snapshot. A table that
exists is never touched. Row counts are the snapshot's own tables' only.

Partitioned tables restore as a tree: a partition cannot be restored without its partitioned
table, nor an inheritance parent without its children.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Generator, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ....errors import GuardError
from ....private import private_dir, private_tempdir
from ..base import DumpResult, StreamReader, StreamRef, TableDump, ToolMissing
from .connection import (
    FORMAT,
    MAGIC,
    PACKAGE,
    ConnectionSettings,
    Tools,
    error_message,
    one_row,
    psycopg_module,
    qualified_name,
    resolve_tables,
    stderr_tail,
    tool_major,
)

if TYPE_CHECKING:
    from .connection import Conn

DUPLICATE = {"42710", "42P07", "42723", "42P06"}  # duplicate object/table/function/schema
IN_USE = "2BP01"  # dependent_objects_still_exist
NOT_OWNER = "42501"  # insufficient_privilege: e.g. COMMENT ON EXTENSION as a non-superuser
DECORATION = {"COMMENT", "ACL", "SECURITY LABEL"}  # skipped when not ours to change (as pg_restore would)
NEVER_DROP = (b"DROP SCHEMA ", b"DROP EXTENSION ", b"DROP PUBLICATION ")

TOC_LINE = re.compile(rb"^-- TOC entry (\d+) \(class (\d+) OID (\d+)\)")
WRITERS_WAIT_MS = 300_000  # the longest the restore waits for writers to the restored tables to finish
LOCK_ATTEMPTS = 3  # a deadlock while stopping the writers is retried this often in all


@dataclass
class _Entry:
    id: int
    classid: int
    objid: int
    deps: list[int] = field(default_factory=list)
    desc: str = ""
    name: str = ""
    schema: str = ""

    @property
    def label(self) -> str:
        where = f"{self.schema}." if self.schema and self.schema != "-" else ""
        return f"{self.desc} {where}{self.name}".strip()


@dataclass
class _Plan:
    order: list[int]  # entry ids in archive order (pg_restore -L restores in list order)
    strict: set[int]  # must be created
    tolerant: set[int]  # created unless it already exists
    entries: dict[int, _Entry]
    referenced: dict[int, tuple[str, str]] = field(default_factory=dict)  # tables FKs need, not restored
    not_valid: set[int] = field(default_factory=set)  # FK entries added NOT VALID (to an empty table)


def _is_protection(entry: _Entry) -> bool:
    """An object of migrate-guard's protection (schema/protect.py). It belongs to a database, not to
    its data: a restore neither drops nor recreates it, so the target keeps the protection it has
    (a protected table recreated there gets its TRUNCATE trigger from the protection's event trigger)
    and a restore into another database needs no superuser for event triggers."""
    from ....schema.protect import EVENT_TRIGGERS, PG_SCHEMA, TRUNCATE_TRIGGER

    return (
        (entry.desc == "SCHEMA" and entry.name == PG_SCHEMA)
        or entry.schema == PG_SCHEMA
        or (entry.desc == "EVENT TRIGGER" and entry.name in EVENT_TRIGGERS)
        or (entry.desc == "TRIGGER" and entry.name.rsplit(" ", 1)[-1] == TRUNCATE_TRIGGER)
    )


def restore_dump(
    settings: ConnectionSettings,
    tools: Callable[[], Tools],
    dump: DumpResult,
    read: StreamReader,
    tables: Sequence[str] | None = None,
    before_commit: Callable[[], None] | None = None,
    pre_snapshot: Callable[[str], None] | None = None,
) -> None:
    """``Engine.restore`` for PostgreSQL; ``tools`` gives pg_restore (checked once, by the engine).

    ``pre_snapshot`` gets the id of the snapshot exported once the writers are stopped (see the
    module doc), to dump before anything changes."""
    fmt = dump.engine.get("format")
    if fmt != FORMAT:
        raise GuardError(f"this PostgreSQL snapshot has format {fmt!r}; this version restores {FORMAT!r}")
    _pg_dump, pg_restore, _version, restore_version = tools()
    if tool_major(restore_version) < tool_major(str(dump.engine.get("version", "0"))):
        raise ToolMissing(
            f"pg_restore is older than the pg_dump {dump.engine.get('version')} that took this snapshot: "
            f"install a newer client (Debian/Ubuntu: apt-get install {PACKAGE})"
        )
    full = tables is None
    if tables is None:
        chosen = list(dump.tables)
    else:
        listed = [(t.schema or "public", t.name) for t in dump.tables]
        picked = resolve_tables(tables, listed, strict=True, where="this snapshot")
        chosen = [t for t in dump.tables if (t.schema or "public", t.name) in picked]

    meta = _read_header(read, dump.schema)
    with settings.tool_env() as env, private_tempdir("pg-restore-") as tmp:
        toc = _toc(pg_restore, env, read, dump.schema)
        _plan(toc, meta, chosen, full)  # refuses an impossible restore before connecting
        _apply(
            settings, pg_restore, env, read, dump, meta, chosen, toc, tmp / "restore.list", full, before_commit,
            pre_snapshot,
        )  # fmt: skip


def _open_schema(read: StreamReader, ref: StreamRef) -> tuple[bytes, Generator[bytes, None, None]]:
    """Split the schema stream into its JSON header and the pg_dump archive that follows."""
    pieces = iter(read(ref))
    buf = b""
    while b"\n" not in buf and len(buf) < 64:
        piece = next(pieces, None)
        if piece is None:
            break
        buf += piece
    first, newline, rest = buf.partition(b"\n")
    if not first.startswith(MAGIC) or not newline or not first[len(MAGIC) :].isdigit():
        raise GuardError("the PostgreSQL schema stream is damaged (no header)")
    length = int(first[len(MAGIC) :])
    while len(rest) < length:
        piece = next(pieces, None)
        if piece is None:
            raise GuardError("the PostgreSQL schema stream is damaged (short header)")
        rest += piece

    def archive() -> Generator[bytes, None, None]:
        if len(rest) > length:
            yield rest[length:]
        yield from pieces

    return rest[:length], archive()


def _read_header(read: StreamReader, ref: StreamRef) -> dict[str, Any]:
    header, archive = _open_schema(read, ref)
    archive.close()
    try:
        meta = json.loads(header)
    except ValueError:
        raise GuardError("the PostgreSQL schema stream is damaged (bad header)") from None
    if (
        not isinstance(meta, dict)
        or meta.get("format") != "migrate-guard/postgresql-schema"
        or meta.get("version") != 1
    ):
        raise GuardError("the PostgreSQL schema stream has an unknown header version")
    return meta


def _pg_restore(
    pg_restore: str, env: dict[str, str], args: list[str], read: StreamReader, ref: StreamRef
) -> Iterator[bytes]:
    """Run pg_restore on the archive (fed to its stdin from the repository) and yield the
    lines of SQL it writes. Nothing is written to disk and nothing touches the database."""
    err = tempfile.TemporaryFile(dir=private_dir())  # noqa: SIM115 - closed below, also when the caller stops early
    proc = subprocess.Popen(
        [pg_restore, *args, "--file=-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env
    )
    stdin, stdout = proc.stdin, proc.stdout
    assert stdin is not None and stdout is not None  # both PIPE
    failure: list[BaseException] = []

    def feed() -> None:
        try:
            for piece in _open_schema(read, ref)[1]:
                stdin.write(piece)
        except BrokenPipeError:
            pass  # pg_restore stopped reading; its exit status tells why
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            if not (isinstance(exc, ValueError) and stdin.closed):  # closed after a kill
                failure.append(exc)
        finally:
            with suppress(OSError):
                stdin.close()

    feeder = threading.Thread(target=feed, name="pg_restore-stdin", daemon=True)
    feeder.start()
    rc = None
    try:
        for line in stdout:  # noqa: UP028 - ``yield from`` would close stdout before the kill below
            yield line
        rc = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        feeder.join()
        stdout.close()
        if rc is None:
            err.close()
    with err:
        if failure:
            raise failure[0]
        if rc != 0:
            raise GuardError(f"pg_restore failed (exit {rc}): {stderr_tail(err)}")


def _toc(pg_restore: str, env: dict[str, str], read: StreamReader, ref: StreamRef) -> list[_Entry]:
    """Every TOC entry of the archive, in restore order, with its dependencies."""
    entries: list[_Entry] = []
    current: _Entry | None = None
    previous = b""
    for line in _pg_restore(pg_restore, env, ["--verbose"], read, ref):
        if previous == b"--\n" and (m := TOC_LINE.match(line)):
            current = _Entry(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            entries.append(current)
        elif current is not None and line.startswith(b"-- Dependencies:"):
            current.deps = [int(x) for x in line.split(b":", 1)[1].split()]
        elif current is not None and (line.startswith(b"-- Name: ") or line.startswith(b"-- Data for Name: ")):
            text = line.decode("utf-8", "replace").rstrip("\n").split("Name: ", 1)[1]
            left, _, _owner = text.rpartition("; Owner: ")
            left, _, current.schema = left.rpartition("; Schema: ")
            current.name, _, current.desc = left.rpartition("; Type: ")
            current = None
        previous = line
    return entries


def _plan(
    toc: list[_Entry],
    meta: dict[str, Any],
    chosen: Sequence[TableDump],
    full: bool,
    missing: Collection[int] = (),
) -> _Plan:
    """Which TOC entries to restore, and which of them may already exist (see the module doc).

    ``missing``: TOC ids of tables in ``referenced`` (of a plan made without it) that the target
    lacks; they are created empty, and the foreign keys pointing at them added NOT VALID."""
    entries = {e.id: e for e in toc}
    table_entry = {e.objid: e.id for e in toc if e.desc == "TABLE" and e.classid == 1259}
    want = {}
    for t in chosen:
        info = meta["tables"].get(t.qualified)
        if info is None or info["oid"] not in table_entry:
            raise GuardError(f"the snapshot's schema archive has no table {t.qualified}")
        want[info["oid"]] = t.qualified
    t_set = {table_entry[oid] for oid in want}
    t_other = set(table_entry.values()) - t_set
    dependents: dict[int, set[int]] = defaultdict(set)
    for e in toc:
        for d in e.deps:
            dependents[d].add(e.id)

    def closure(seeds: set[int]) -> set[int]:
        seen, todo = set(seeds), deque(seeds)
        while todo:
            for nxt in dependents.get(todo.popleft(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    c_set, c_other = closure(t_set), closure(t_other)
    for e in toc:
        if e.desc == "TABLE ATTACH" and set(e.deps) & t_set and set(e.deps) & t_other:
            raise GuardError(
                f"{e.schema}.{e.name} is a partition: restore its partitioned table together with all its partitions"
            )
    fk_owner = meta.get("fk_owner", {})
    strict: set[int] = set()
    tolerant: set[int] = set()
    guard = closure({e.id for e in toc if _is_protection(e)})  # with their comments, grants, triggers
    for e in toc:
        if e.id in guard:
            continue
        if e.desc == "FK CONSTRAINT":
            if fk_owner.get(str(e.objid)) in want:  # a restored table's own foreign key
                strict.add(e.id)
        elif e.id in t_set:
            strict.add(e.id)
        elif e.id in t_other:
            if e.id in c_set:
                raise GuardError(
                    f"{e.schema}.{e.name} depends on a table being restored (inheritance, partitioning or "
                    "its row type): restore them together"
                )
        elif e.id in c_set:
            strict.add(e.id)
        elif e.id in c_other:
            pass  # belongs to a table that stays as it is
        elif full:
            tolerant.add(e.id)
    # Tables the restored tables' foreign keys point at (an FK entry depends on both tables).
    referenced = {
        d: (entries[d].schema, entries[d].name)
        for i in strict
        if entries[i].desc == "FK CONSTRAINT"
        for d in entries[i].deps
        if d in t_other
    }
    stubs = set(missing) & set(referenced)
    not_valid: set[int] = set()
    if stubs:
        elsewhere = closure(t_other - stubs)  # what also belongs to a table that is not there
        for i in closure(stubs):
            if i not in guard and i not in c_set and i not in elsewhere and entries[i].desc != "FK CONSTRAINT":
                strict.add(i)
                tolerant.discard(i)
        not_valid = {i for i in strict if entries[i].desc == "FK CONSTRAINT" and set(entries[i].deps) & stubs}
    if not full or stubs:
        # Objects the restored tables need (types, functions, schemas): create them if missing.
        todo = deque(d for i in strict for d in entries[i].deps)
        while todo:
            d = todo.popleft()
            if (
                d in entries
                and d not in strict
                and d not in tolerant
                and d not in c_set
                and d not in c_other
                and d not in guard
            ):
                tolerant.add(d)
                todo.extend(entries[d].deps)
    order = [e.id for e in toc if e.id in strict or e.id in tolerant]
    return _Plan(order, strict, tolerant, entries, referenced, not_valid)


def _apply(
    settings: ConnectionSettings,
    pg_restore: str,
    env: dict[str, str],
    read: StreamReader,
    dump: DumpResult,
    meta: dict[str, Any],
    chosen: Sequence[TableDump],
    toc: list[_Entry],
    listing: Path,
    full: bool,
    before_commit: Callable[[], None] | None,
    pre_snapshot: Callable[[str], None] | None,
) -> None:
    """Plan and carry out the restore in one transaction (the steps in the module doc)."""
    from psycopg import sql

    psycopg = psycopg_module()
    conn = settings.connect()
    stage = "starting"
    created: set[int] = set()
    try:
        with conn.transaction():
            conn.execute("SELECT pg_catalog.set_config('search_path', '', false)")  # all names qualified
            stage = "waiting for the transactions writing to the restored tables to finish"
            _stop_writers(conn, chosen)
            plan = _plan(toc, meta, chosen, full)
            missing = _missing_tables(conn, plan.referenced)
            if missing:
                plan = _plan(toc, meta, chosen, full, missing)
            listing.write_text("".join(f"{i};\n" for i in plan.order))
            if pre_snapshot is not None:
                stage = "taking the pre-restore snapshot"
                pre_snapshot(one_row(conn.execute("SELECT pg_catalog.pg_export_snapshot()"))[0])
            stage = "reading foreign keys that point at the restored tables"
            remembered = _referencing_fks(conn, chosen)
            stage = "dropping the tables to restore"
            targets = sql.SQL(", ").join(qualified_name(t.schema or "public", t.name) for t in chosen)
            if chosen:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(targets))

            pre = ["--verbose", "--section=pre-data", f"--use-list={listing}"]
            if full:
                pre += ["--clean", "--if-exists"]
            stage = "restoring the schema (pre-data)"
            _execute(conn, _pg_restore(pg_restore, env, pre, read, dump.schema), plan, created)

            conn.execute("SET client_encoding = 'UTF8'")  # what the COPY streams were written in
            # Tables this transaction itself created (not in a savepoint) take their rows frozen:
            # later reads (the index builds just below, and every reader after) set no hint bits.
            ours = {
                plan.entries[i].objid for i in created if plan.entries[i].desc == "TABLE" and i not in plan.tolerant
            }
            for t in chosen:
                stage = f"loading the rows of {t.qualified}"
                info = meta["tables"][t.qualified]
                if info.get("partitioned"):
                    continue  # its rows are in its partitions
                loaded = _copy_in(conn, t, info["columns"], read, freeze=info["oid"] in ours)
                if loaded != t.rows:
                    raise GuardError(f"{t.qualified}: loaded {loaded} rows but the snapshot lists {t.rows}")

            stage = "setting sequences"
            for entry_id in plan.order:
                entry = plan.entries[entry_id]
                seq = meta["sequences"].get(str(entry.objid)) if entry.desc == "SEQUENCE" else None
                if seq and (entry_id in plan.strict or entry_id in created):
                    seq_name = qualified_name(seq["schema"], seq["name"])
                    conn.execute(
                        sql.SQL("SELECT pg_catalog.setval({}::pg_catalog.regclass, %s, %s)").format(
                            sql.Literal(seq_name.as_string(conn))
                        ),
                        (seq["last_value"], seq["is_called"]),
                    )

            stage = "restoring indexes, constraints and triggers (post-data)"
            post = ["--verbose", "--section=post-data", f"--use-list={listing}"]
            _execute(conn, _pg_restore(pg_restore, env, post, read, dump.schema), plan, created)

            for schema, table, name, definition in remembered:
                stage = f"re-adding foreign key {name} of {schema}.{table}"
                conn.execute(
                    sql.SQL("ALTER TABLE {}.{} ADD CONSTRAINT {} ").format(
                        sql.Identifier(schema), sql.Identifier(table), sql.Identifier(name)
                    )
                    + sql.SQL(definition)
                )
            populated = meta.get("matviews", {})  # older snapshots do not say: refresh them all
            for entry_id in plan.order:
                entry = plan.entries[entry_id]
                if entry.desc == "MATERIALIZED VIEW" and entry_id in created and populated.get(str(entry.objid), True):
                    stage = f"refreshing materialized view {entry.schema}.{entry.name}"
                    view = qualified_name(entry.schema, entry.name)
                    conn.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(view))
            if before_commit is not None:
                stage = "checking the snapshot before committing"
                before_commit()
    except (psycopg.Error, GuardError) as exc:
        reason = exc.message if isinstance(exc, GuardError) else error_message(exc)
        raise GuardError(f"PostgreSQL restore failed while {stage} (nothing was changed): {reason}") from None
    finally:
        conn.close()


def _stop_writers(conn: Conn, chosen: Sequence[TableDump]) -> None:
    """EXCLUSIVE locks on the restored tables that exist and on the tables whose foreign keys point
    at them: writers wait from here to the commit, readers do not (see the module doc). Waits at
    most ``WRITERS_WAIT_MS``; a deadlock is retried (in a savepoint, which gives its locks back)."""
    from psycopg import errors, sql

    targets = [
        (r[0], r[1])
        for r in conn.execute(
            "WITH restored AS ("
            "  SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            "  JOIN unnest(%s::text[], %s::text[]) AS r(nspname, relname)"
            "  ON r.nspname = n.nspname AND r.relname = c.relname) "
            "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid IN (SELECT oid FROM restored) OR c.oid IN ("
            "  SELECT con.conrelid FROM pg_catalog.pg_constraint con"
            "  WHERE con.contype = 'f' AND con.confrelid IN (SELECT oid FROM restored)) "
            "ORDER BY 1, 2",
            ([t.schema or "public" for t in chosen], [t.name for t in chosen]),
        )
    ]
    if not targets:
        return
    names = sql.SQL(", ").join(qualified_name(schema, name) for schema, name in targets)
    previous = one_row(conn.execute("SELECT pg_catalog.current_setting('lock_timeout')"))[0]
    conn.execute("SELECT pg_catalog.set_config('lock_timeout', %s, true)", (f"{WRITERS_WAIT_MS}ms",))
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        try:
            with conn.transaction():
                conn.execute(sql.SQL("LOCK TABLE ONLY {} IN EXCLUSIVE MODE").format(names))
            break
        except errors.DeadlockDetected:
            if attempt == LOCK_ATTEMPTS:
                raise
        except errors.LockNotAvailable:
            raise GuardError(
                f"a transaction kept writing to {', '.join(f'{s}.{n}' for s, n in targets)} for more than "
                f"{WRITERS_WAIT_MS // 1000} s (one left open? see pg_stat_activity)"
            ) from None
    conn.execute("SELECT pg_catalog.set_config('lock_timeout', %s, true)", (previous,))


def _missing_tables(conn: Conn, tables: dict[int, tuple[str, str]]) -> set[int]:
    """The keys of ``tables`` ((schema, name) by TOC id) that the target database has no table of."""
    if not tables:
        return set()
    ids = list(tables)
    present = {
        r[0]
        for r in conn.execute(
            "SELECT r.id FROM unnest(%s::int8[], %s::text[], %s::text[]) AS r(id, nspname, relname) "
            "JOIN pg_catalog.pg_namespace n ON n.nspname = r.nspname "
            "JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = r.relname "
            "AND c.relkind IN ('r', 'p')",
            (ids, [tables[i][0] for i in ids], [tables[i][1] for i in ids]),
        )
    }
    return set(ids) - present


def _referencing_fks(conn: Conn, chosen: Sequence[TableDump]) -> list[tuple[str, str, str, str]]:
    """(schema, table, name, definition) of the foreign keys other tables hold on ``chosen``."""
    schemas = [t.schema or "public" for t in chosen]
    names = [t.name for t in chosen]
    return [
        (r[0], r[1], r[2], r[3])
        for r in conn.execute(
            """
            WITH restored AS (
                SELECT c.oid FROM pg_catalog.pg_class c
                JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                JOIN unnest(%s::text[], %s::text[]) AS r(nspname, relname)
                  ON r.nspname = n.nspname AND r.relname = c.relname
            )
            SELECT n.nspname, c.relname, con.conname, pg_catalog.pg_get_constraintdef(con.oid)
            FROM pg_catalog.pg_constraint con
            JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
            JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE con.contype = 'f' AND con.conparentid = 0
              AND con.confrelid IN (SELECT oid FROM restored)
              AND con.conrelid NOT IN (SELECT oid FROM restored)
            ORDER BY 1, 2, 3
            """,
            (schemas, names),
        )
    ]


def _copy_in(conn: Conn, t: TableDump, columns: list[str], read: StreamReader, freeze: bool = False) -> int:
    """Load a table's stream with ``COPY ... FROM STDIN``; returns the rows loaded."""
    from psycopg import sql

    target = qualified_name(t.schema or "public", t.name)
    cols = sql.SQL(" ({})").format(sql.SQL(", ").join(map(sql.Identifier, columns))) if columns else sql.SQL("")
    query = sql.SQL("COPY {}{} FROM STDIN{}").format(target, cols, sql.SQL(" WITH (FREEZE)" if freeze else ""))
    with conn.cursor() as cur:
        with cur.copy(query) as copy:
            for piece in read(t.stream):
                copy.write(piece)
        return cur.rowcount


def _execute(conn: Conn, lines: Iterator[bytes], plan: _Plan, created: set[int]) -> None:
    """Run pg_restore's SQL one TOC entry at a time (bounded by the largest entry)."""
    psycopg = psycopg_module()

    def statements(buf: list[bytes]) -> Iterator[bytes]:
        current: list[bytes] = []
        for line in buf:
            if not current and (not line.strip() or line.startswith(b"--")):
                continue
            current.append(line)
            if line.rstrip().endswith(b";"):
                yield b"".join(current)
                current = []
        if current:
            yield b"".join(current)

    def preamble(buf: list[bytes]) -> None:
        # SET statements, then (with --clean) one DROP ... IF EXISTS per line, newest first.
        for statement in statements(buf):
            if statement.startswith(NEVER_DROP):
                continue
            if statement.startswith(b"DROP ") or statement.startswith(b"ALTER TABLE IF EXISTS "):
                try:
                    with conn.transaction():
                        conn.execute(statement)
                except psycopg.Error as exc:
                    if exc.sqlstate not in (IN_USE, NOT_OWNER):
                        raise
                    # still used by something outside the restore, or not ours: it stays as it
                    # is, and its CREATE below fails as a duplicate, which is skipped
            else:
                conn.execute(statement)

    def entry(entry_id: int, buf: list[bytes]) -> None:
        text = b"".join(buf)
        if not any(line.strip() and not line.startswith(b"--") for line in buf):
            return
        if entry_id in plan.tolerant:
            try:
                with conn.transaction():
                    conn.execute(text)
                created.add(entry_id)
            except psycopg.Error as exc:
                not_ours = exc.sqlstate == NOT_OWNER and plan.entries[entry_id].desc in DECORATION
                if exc.sqlstate not in DUPLICATE and not not_ours:
                    raise GuardError(f"{plan.entries[entry_id].label}: {error_message(exc)}") from None
            return
        if entry_id in plan.not_valid:  # one ALTER TABLE ... ADD CONSTRAINT ... FOREIGN KEY ...; (comments may follow)
            end = text.rindex(b";")
            text = text[:end] + b" NOT VALID" + text[end:]
        try:
            conn.execute(text)
        except psycopg.Error as exc:
            label = plan.entries[entry_id].label if entry_id in plan.entries else f"TOC entry {entry_id}"
            raise GuardError(f"{label}: {error_message(exc)}") from None
        created.add(entry_id)

    buf: list[bytes] = []
    current: int | None = None
    for line in lines:
        if line.startswith((b"\\restrict ", b"\\unrestrict ")):
            continue  # psql meta-commands guarding plain-text scripts; not SQL
        if buf and buf[-1] == b"--\n" and (m := TOC_LINE.match(line)):
            buf.pop()
            if current is None:
                preamble(buf)
            else:
                entry(current, buf)
            current, buf = int(m.group(1)), [b"--\n", line]
            continue
        buf.append(line)
    if current is None:
        preamble(buf)
    else:
        entry(current, buf)
