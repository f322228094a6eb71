"""Which database a snapshot or a run belongs to (pgBackRest's stanza check): every snapshot and journal
record carries the identity of the database it was taken from, and everything that selects snapshots
or runs compares it.

- PostgreSQL: the cluster's system identifier and the database's oid (a database dropped and created
  again under the same name is another database), with its name.
- MySQL/MariaDB: ``@@server_uuid`` (MySQL); MariaDB has none, so a digest of the server's host name,
  port, data directory and server id stands in for it; with the schema name.
- SQLite: the resolved path of the file. The file's own identity (device and inode) is recorded beside
  it: a restore into a missing file must still count as the same database, so it is shown, not compared.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from ..config import dialect_family
from ..errors import ConfigError


@dataclass(frozen=True)
class DatabaseIdentity:
    dialect: str  # sqlite | postgresql | mysql (the family: MariaDB is mysql)
    host: str | None  # host:port, None for SQLite
    name: str  # database / schema name, or the SQLite file's path
    id: str  # what two identities are compared by
    file: str | None = None  # SQLite: device:inode of the file when it was read

    def to_dict(self) -> dict[str, Any]:
        return {
            "dialect": self.dialect,
            "host": self.host,
            "name": self.name,
            "id": self.id,
            **({"file": self.file} if self.file else {}),
        }

    @classmethod
    def from_dict(cls, data: Any) -> DatabaseIdentity | None:
        """The identity a manifest or journal record carries; None for records written before identities."""
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            return None
        return cls(str(data.get("dialect")), data.get("host"), str(data.get("name")), data["id"], data.get("file"))

    def describe(self) -> str:
        """``postgresql 127.0.0.1:5432/shop``, ``sqlite /srv/app.db``: how commands name the database they change."""
        where = f"{self.host}/{self.name}" if self.host else self.name
        return f"{self.dialect} {where}"

    def same_database(self, other: DatabaseIdentity | None) -> bool:
        return other is not None and other.id == self.id


def _host(url: sa.URL, default_port: int) -> str:
    return f"{url.host or 'localhost'}:{url.port or default_port}"


def sqlite_identity(url: str | sa.URL) -> DatabaseIdentity:
    parsed = make_url(url)
    database = parsed.database or ""
    if not database or database == ":memory:" or parsed.query.get("mode") == "memory":
        raise ConfigError("an in-memory SQLite database has no identity: give the URL of a database file")
    path = os.path.realpath(database)
    try:
        st = os.stat(path)
        file = f"{st.st_dev}:{st.st_ino}"
    except OSError:
        file = None
    return DatabaseIdentity("sqlite", None, path, f"sqlite:{path}", file)


def read_identity(connection: sa.Connection) -> DatabaseIdentity:
    """The identity of the database ``connection`` is connected to (catalogue reads only)."""
    url = connection.engine.url
    family = dialect_family(connection.dialect.name)
    if family == "sqlite":
        return sqlite_identity(url)
    if family == "postgresql":
        row = connection.execute(
            sa.text(
                "SELECT (SELECT system_identifier FROM pg_control_system()), d.oid, d.datname "
                "FROM pg_database d WHERE d.datname = current_database()"
            )
        ).one()
        return DatabaseIdentity("postgresql", _host(url, 5432), str(row[2]), f"postgresql:{row[0]}:{row[1]}")
    if family == "mysql":
        schema = connection.execute(sa.text("SELECT DATABASE()")).scalar()
        server = _mysql_server(connection)
        return DatabaseIdentity("mysql", _host(url, 3306), str(schema), f"mysql:{server}:{schema}")
    raise ConfigError(f"no database identity for {connection.dialect.name!r} databases")


def _mysql_server(connection: sa.Connection) -> str:
    rows = {
        name: value
        for name, value in connection.execute(
            sa.text(
                "SELECT variable_name, variable_value FROM information_schema.global_variables "
                "WHERE variable_name IN ('SERVER_UUID', 'HOSTNAME', 'PORT', 'DATADIR', 'SERVER_ID')"
            )
        ).all()
    }
    values = {str(k).lower(): str(v) for k, v in rows.items()}
    if values.get("server_uuid"):
        return values["server_uuid"]
    basis = "\0".join(values.get(k, "") for k in ("hostname", "port", "datadir", "server_id"))
    return "h" + hashlib.sha256(basis.encode()).hexdigest()[:32]


def named_identity(url: str) -> DatabaseIdentity:
    """The database at ``url`` known by name only (it does not answer): matched by dialect, host and name."""
    parsed = make_url(url)
    family = dialect_family(parsed.get_backend_name())
    if family == "sqlite":
        return sqlite_identity(url)
    host = _host(parsed, 5432 if family == "postgresql" else 3306)
    return DatabaseIdentity(family, host, parsed.database or "", "")


def database_identity(url: str) -> DatabaseIdentity:
    """The identity of the database at ``url`` (SQLite: without opening the file)."""
    if dialect_family(make_url(url).get_backend_name()) == "sqlite":
        return sqlite_identity(url)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return read_identity(connection)
    finally:
        engine.dispose()


def recorded_identity(data: Any) -> DatabaseIdentity | None:
    """The identity a manifest's or journal record's ``database`` field holds (None when it predates identities)."""
    return DatabaseIdentity.from_dict(data)


def belongs_to(data: Any, dialect: str | None, current: DatabaseIdentity) -> bool:
    """Whether a manifest or journal record (its ``database`` field and dialect) is of the database ``current``.
    Records written before identities hold only the database's name (or a URL): they are matched by dialect
    and name (for SQLite the file's name), the best they allow."""
    recorded = recorded_identity(data)
    if recorded is not None and not current.id:  # known by name only (see named_identity)
        return (recorded.dialect, recorded.host, recorded.name) == (current.dialect, current.host, current.name)
    if recorded is not None:
        return recorded.id == current.id
    if not isinstance(data, str) or not data:
        return False
    name = data
    if "://" in data:  # a journal record's URL (password hidden)
        try:
            parsed = make_url(data)
        except Exception:  # noqa: BLE001 - a damaged legacy field matches nothing
            return False
        name, dialect = parsed.database or "", parsed.get_backend_name()
    if dialect_family(dialect or "") != current.dialect:
        return False
    if current.dialect == "sqlite":
        return os.path.basename(name) == os.path.basename(current.name)
    return name == current.name
