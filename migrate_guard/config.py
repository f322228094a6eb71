"""Where the project is and how the guard is set: alembic.ini / pyproject.toml and the guard's own settings.

Guard settings live in ``migrate-guard.toml`` beside alembic.ini (top-level keys), or in
``[tool.migrate-guard]`` of the ``pyproject.toml`` there. Every unknown key or bad value is a
one-line ``ConfigError`` naming the file and the key.
"""

from __future__ import annotations

import fnmatch
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, UsageError

if TYPE_CHECKING:  # imported where a project is loaded: a cached `check` never loads Alembic
    from alembic.config import Config as AlembicConfig

SEVERITY_CHOICES = ("off", "info", "warning", "error")
FAIL_ON_CHOICES = ("info", "warning", "error", "never")
DIALECTS = ("postgresql", "mysql", "mariadb", "sqlite")


def dialect_family(name: str) -> str:
    """``postgresql+psycopg`` -> ``postgresql``; MariaDB speaks MySQL (DDL, dumps), so both are ``mysql``."""
    name = name.split("+", 1)[0].strip().lower()
    return "mysql" if name == "mariadb" else name


@dataclass(frozen=True)
class BackupSettings:
    repository: str = ".migrate-guard/backups"  # relative to the project directory, or an fsspec URL
    key_file: Path | None = None
    compression_level: int = 3
    retention: dict[str, Any] = field(default_factory=dict)  # keep_last, keep_daily, ..., max_size: prune defaults
    paths: tuple[str, ...] = ()  # the application's files and directories, relative to the project (or absolute)
    exclude: tuple[str, ...] = ()  # patterns left out of `paths` ("*.tmp", "cache/")
    secret_paths: tuple[str, ...] = ()  # patterns of files stored only in an encrypted repository (".env")

    def location(self, root: Path) -> str:
        if "://" in self.repository and not self.repository.startswith("file://"):
            return self.repository
        path = Path(self.repository.removeprefix("file://")).expanduser()
        return str(path if path.is_absolute() else root / path)


@dataclass(frozen=True)
class GuardSettings:
    protected_tables: tuple[str, ...] = ()
    severity: dict[str, str] = field(default_factory=dict)  # rule id -> off|info|warning|error
    rule_dirs: tuple[Path, ...] = ()
    dialect: str | None = None
    fail_on: str = "error"
    backup: BackupSettings = field(default_factory=BackupSettings)
    status: StatusSettings = field(default_factory=lambda: StatusSettings())
    alerts: AlertSettings = field(default_factory=lambda: AlertSettings())
    constraints: tuple[Path, ...] | None = (
        None  # constraint definition files; None: constraints.toml beside alembic.ini
    )
    # the servers' versions ("11", "10.11", "8.0.36"); None: a current one (the fast behaviour)
    server_versions: dict[str, str] = field(default_factory=dict)  # postgresql | mysql | mariadb -> version
    server_version: str | None = None  # --server-version VERSION: whichever dialect is checked
    lock_timeout: str | None = None  # the lock_timeout migrations run with, set outside the revisions
    trace_in_place_ok: tuple[str, ...] = ()  # [trace] in_place_ok: databases `trace --in-place` may use (globs)
    source: Path | None = None  # the file these came from, for messages

    def version_of(self, dialect: str | None) -> tuple[int, ...] | None:
        """The configured version of the ``dialect`` server (``mariadb`` apart from ``mysql``), or None."""
        name = (dialect or "").split("+", 1)[0].lower()
        text = self.server_version or self.server_versions.get(name)
        return parse_version(text) if text else None

    def is_protected(self, table: str | None, schema: str | None = None) -> bool:
        """True when ``[schema.]table`` matches a protected pattern (names, ``schema.name``, globs)."""
        if table is None:
            return False
        table, qualified = table.lower(), f"{schema}.{table}".lower() if schema else None
        for pattern in self.protected_tables:
            if "." in pattern:
                if qualified and fnmatch.fnmatchcase(qualified, pattern):
                    return True
            elif fnmatch.fnmatchcase(table, pattern):
                return True
        return False

    def schema_is_protected(self, schema: str | None) -> bool:
        """True when dropping ``schema`` would take a protected table with it."""
        if schema is None:
            return False
        return any("." in p and fnmatch.fnmatchcase(schema.lower(), p.split(".", 1)[0]) for p in self.protected_tables)


@dataclass
class Project:
    """An Alembic project as the guard sees it."""

    alembic: AlembicConfig
    config_path: Path  # alembic.ini, or pyproject.toml when that holds [tool.alembic]
    root: Path  # the directory config_path is in
    url: str | None
    settings: GuardSettings

    @property
    def dialect_from_url(self) -> str | None:
        if not self.url:
            return None
        name = self.url.split(":", 1)[0].split("+", 1)[0].lower()
        return name or None


def find_config_path(path: str | os.PathLike[str] | None) -> Path:
    """The alembic config to use: ``-c PATH``, else ``$ALEMBIC_CONFIG``, else ``./alembic.ini``, else
    ``./pyproject.toml``."""
    if path:
        candidate = Path(path)
        if not candidate.is_file():
            raise ConfigError(f"config file not found: {candidate}")
        return candidate.resolve()
    env = os.environ.get("ALEMBIC_CONFIG")
    if env:
        candidate = Path(env)
        if not candidate.is_file():
            raise ConfigError(f"config file not found: {candidate} (from ALEMBIC_CONFIG)")
        return candidate.resolve()
    ini = Path("alembic.ini")
    if ini.is_file():
        return ini.resolve()
    pyproject = Path("pyproject.toml")
    if pyproject.is_file() and "alembic" in _read_toml(pyproject).get("tool", {}):
        return pyproject.resolve()
    raise ConfigError("no alembic.ini in this directory (pass -c PATH or set ALEMBIC_CONFIG)")


def load_project(config_path: str | os.PathLike[str] | None = None, url: str | None = None) -> Project:
    path = find_config_path(config_path)
    root = path.parent
    from alembic.config import Config as AlembicConfig

    if path.suffix == ".toml":
        if "alembic" not in _read_toml(path).get("tool", {}):
            raise ConfigError(f"{path.name}: no [tool.alembic] table")
        alembic_cfg = AlembicConfig(toml_file=str(path))
    else:
        pyproject = root / "pyproject.toml"
        toml_file = pyproject if pyproject.is_file() and "alembic" in _read_toml(pyproject).get("tool", {}) else None
        alembic_cfg = AlembicConfig(str(path), toml_file=str(toml_file) if toml_file else None)
        try:
            alembic_cfg.get_section(alembic_cfg.config_ini_section)
        except Exception as exc:  # noqa: BLE001 - configparser raises several kinds for a broken ini
            raise ConfigError(f"{path.name}: cannot be read: {exc}") from None
    if url:
        alembic_cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    try:
        effective_url = alembic_cfg.get_main_option("sqlalchemy.url") or None
    except Exception as exc:  # noqa: BLE001 - configparser's interpolation raises several kinds
        raise ConfigError(f"{path.name}: bad sqlalchemy.url: {exc}") from None
    return Project(alembic_cfg, path, root, effective_url, load_settings(root))


# --- guard settings -------------------------------------------------------------------------

_KNOWN_KEYS = {
    "protected_tables",
    "severity",
    "rule_dirs",
    "dialect",
    "fail_on",
    "backup",
    "status",
    "alerts",
    "constraints",
    "postgresql_version",
    "mysql_version",
    "mariadb_version",
    "lock_timeout",
    "trace",
}
_TRACE_KEYS = {"in_place_ok"}
_VERSION_KEYS = {"postgresql_version": "postgresql", "mysql_version": "mysql", "mariadb_version": "mariadb"}
_VERSION_RE = re.compile(r"\d+(?:\.\d+){0,2}")
_BACKUP_KEYS = {"repository", "key_file", "compression_level", "retention", "paths", "exclude", "secret_paths"}
RETENTION_KEYS = (
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
    "keep_within",
    "max_size",
)


def load_settings(root: Path) -> GuardSettings:
    """Read guard settings from ``migrate-guard.toml`` beside alembic.ini, else its ``pyproject.toml``."""
    own = root / "migrate-guard.toml"
    if own.is_file():
        return parse_settings(_read_toml(own), own, prefix="")
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        table = _read_toml(pyproject).get("tool", {}).get("migrate-guard")
        if table is not None:
            return parse_settings(table, pyproject, prefix="tool.migrate-guard.")
    return GuardSettings()


def parse_settings(data: dict[str, Any], source: Path, prefix: str = "") -> GuardSettings:
    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{source.name}: {prefix}{key}: {problem}")

    for key in data:
        if key not in _KNOWN_KEYS:
            raise fail(key, f"unknown key (known: {', '.join(sorted(_KNOWN_KEYS))})")

    protected = data.get("protected_tables", [])
    if not isinstance(protected, list) or not all(isinstance(p, str) and p.strip() for p in protected):
        raise fail("protected_tables", "must be a list of table names, schema.name or globs")

    severity = data.get("severity", {})
    if not isinstance(severity, dict):
        raise fail("severity", 'must be a table of rule-id = "off|info|warning|error"')
    for rule_id, level in severity.items():
        if level not in SEVERITY_CHOICES:
            raise fail(f"severity.{rule_id}", f"bad value {level!r} (choose {', '.join(SEVERITY_CHOICES)})")

    rule_dirs = data.get("rule_dirs", [])
    if not isinstance(rule_dirs, list) or not all(isinstance(d, str) for d in rule_dirs):
        raise fail("rule_dirs", "must be a list of directory paths")
    dirs = tuple((source.parent / d).resolve() for d in rule_dirs)
    for d in dirs:
        if not d.is_dir():
            raise fail("rule_dirs", f"not a directory: {d}")

    dialect = data.get("dialect")
    if dialect is not None and dialect not in DIALECTS:
        raise fail("dialect", f"bad value {dialect!r} (choose {', '.join(DIALECTS)})")

    fail_on = data.get("fail_on", "error")
    if fail_on not in FAIL_ON_CHOICES:
        raise fail("fail_on", f"bad value {fail_on!r} (choose {', '.join(FAIL_ON_CHOICES)})")

    versions = {}
    for key, server in _VERSION_KEYS.items():
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not _VERSION_RE.fullmatch(value.strip()):
            raise fail(key, 'must be a version string such as "11", "15.4", "10.11" or "8.0.36"')
        versions[server] = value.strip()
    lock_timeout = data.get("lock_timeout")
    if lock_timeout is not None and (not isinstance(lock_timeout, str) or not lock_timeout.strip()):
        raise fail("lock_timeout", 'must be the lock_timeout env.py or the role sets, such as "5s"')
    if lock_timeout is not None and lock_timeout.strip() in ("0", "0s", "0ms"):
        lock_timeout = None  # no limit: as if unset

    trace = data.get("trace", {})
    if not isinstance(trace, dict):
        raise fail("trace", "must be a table")
    for key in trace:
        if key not in _TRACE_KEYS:
            raise fail(f"trace.{key}", f"unknown key (known: {', '.join(sorted(_TRACE_KEYS))})")
    in_place_ok = trace.get("in_place_ok", [])
    if not isinstance(in_place_ok, list) or not all(isinstance(p, str) and p.strip() for p in in_place_ok):
        raise fail("trace.in_place_ok", 'must be a list of database names or globs, such as ["test_*"]')

    return GuardSettings(
        server_versions=versions,
        trace_in_place_ok=tuple(p.strip() for p in in_place_ok),
        lock_timeout=lock_timeout.strip() if lock_timeout else None,
        backup=_parse_backup(data.get("backup", {}), source, fail),
        status=_parse_status(data.get("status", {}), fail),
        alerts=_parse_alerts(data.get("alerts", {}), source, fail),
        constraints=_parse_constraints(data.get("constraints"), source, fail),
        protected_tables=tuple(p.strip().lower() for p in protected),
        severity=dict(severity),
        rule_dirs=dirs,
        dialect=dialect,
        fail_on=fail_on,
        source=source,
    )


def parse_version(text: str) -> tuple[int, ...]:
    """``"10.11"`` -> ``(10, 11)``; only the numbers of a checked version string."""
    return tuple(int(part) for part in text.split("."))


def with_server_version(settings: GuardSettings, spec: str | None) -> GuardSettings:
    """``--server-version``: ``DIALECT=VERSION`` (postgresql, mysql, mariadb) sets that server's
    version, a bare ``VERSION`` the version of whichever dialect is checked."""
    if not spec:
        return settings
    dialect, _, version = spec.rpartition("=")
    dialect, version = dialect.strip().lower(), version.strip()
    servers = sorted(_VERSION_KEYS.values())
    if not _VERSION_RE.fullmatch(version) or (dialect and dialect not in servers):
        raise UsageError(
            f"--server-version {spec!r}: give VERSION or DIALECT=VERSION ({', '.join(servers)}), e.g. postgresql=11"
        )
    if not dialect:
        return replace(settings, server_version=version)
    return replace(settings, server_versions={**settings.server_versions, dialect: version})


def _parse_constraints(data: Any, source: Path, fail: Any) -> tuple[Path, ...] | None:
    """``constraints = ["constraints.toml", ...]``: definition files, relative to the settings file."""
    if data is None:
        return None
    if not isinstance(data, list) or not all(isinstance(p, str) and p.strip() for p in data):
        raise fail("constraints", "must be a list of TOML file paths")
    files = tuple((source.parent / p).resolve() for p in data)
    for path in files:
        if not path.is_file():
            raise fail("constraints", f"not a file: {path}")
    return files


def _parse_backup(data: Any, source: Path, fail: Any) -> BackupSettings:
    if not isinstance(data, dict):
        raise fail("backup", "must be a table")
    for key in data:
        if key not in _BACKUP_KEYS:
            raise fail(f"backup.{key}", f"unknown key (known: {', '.join(sorted(_BACKUP_KEYS))})")
    repository = data.get("repository", BackupSettings.repository)
    if not isinstance(repository, str) or not repository.strip():
        raise fail("backup.repository", "must be a directory path or URL")
    key_file = data.get("key_file")
    if key_file is not None and not isinstance(key_file, str):
        raise fail("backup.key_file", "must be a path")
    level = data.get("compression_level", 3)
    if not isinstance(level, int) or isinstance(level, bool) or not 1 <= level <= 22:
        raise fail("backup.compression_level", "must be an integer from 1 to 22")
    retention = data.get("retention", {})
    if not isinstance(retention, dict):
        raise fail("backup.retention", "must be a table")
    for key, value in retention.items():
        if key not in RETENTION_KEYS:
            raise fail(f"backup.retention.{key}", f"unknown key (known: {', '.join(RETENTION_KEYS)})")
        if key in ("keep_within", "max_size"):
            if not isinstance(value, str):
                raise fail(f"backup.retention.{key}", "must be a string such as '7d' or '10GB'")
        elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise fail(f"backup.retention.{key}", "must be a non-negative integer")
    return BackupSettings(
        repository=repository.strip(),
        key_file=(source.parent / key_file).resolve() if key_file else None,
        compression_level=level,
        retention=dict(retention),
        paths=_path_list(data, "paths", fail, path=True),
        exclude=_path_list(data, "exclude", fail),
        secret_paths=_path_list(data, "secret_paths", fail),
    )


def _path_list(data: dict[str, Any], key: str, fail: Any, path: bool = False) -> tuple[str, ...]:
    """``[backup] paths`` (file or directory paths) or a list of patterns: strings, no ``..`` component."""
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise fail(f"backup.{key}", "must be a list of non-empty strings")
    try:
        return tuple(backup_path(v) if path else _no_up(v.strip()) for v in value)
    except ValueError as exc:
        raise fail(f"backup.{key}", str(exc)) from None


def _no_up(item: str) -> str:
    if ".." in item.replace("\\", "/").split("/"):
        raise ValueError(f"{item!r}: no '..' component (give an absolute path instead)")
    return item


def backup_path(item: str) -> str:
    """A backup path as entries name it: normalised, '/'-separated (``media/`` -> ``media``); ValueError
    for a ``..`` component or the whole project (``.``)."""
    normal = os.path.normpath(_no_up(item.strip())).replace(os.sep, "/")
    if normal == ".":
        raise ValueError("'.' would back up the whole project (name its directories)")
    return normal


# --- [status] and [alerts] (the monitor) ---------------------------------------------------------

_STATUS_KEYS = {
    "max_age",
    "max_size",
    "verify_max_age",
    "disk_warning",
    "disk_critical",
    "max_pending",
    "rpo_max",
    "rto_max",
}
_ALERT_KEYS = {"window", "state_file", "webhook", "email"}
_WEBHOOK_KEYS = {"url", "url_env", "format", "timeout"}
_EMAIL_KEYS = {"host", "port", "security", "from", "to", "username_env", "password_env", "timeout", "ca_file"}
EMAIL_SECURITY = {"starttls": 587, "ssl": 465, "none": 25}  # and each one's usual port


@dataclass(frozen=True)
class StatusSettings:
    """Thresholds of `migrate-guard status`; a None duration or size is not checked."""

    max_age: timedelta | None = timedelta(hours=26)  # newest backup snapshot older: unhealthy
    max_size: int | None = None  # repository bigger (bytes): unhealthy
    verify_max_age: timedelta | None = timedelta(days=8)  # no verify this recent: unhealthy
    disk_warning: float = 80.0  # percent of the repository's filesystem used
    disk_critical: float = 90.0
    max_pending: int | None = None  # more pending revisions: unhealthy (None: only reported)
    rpo_max: timedelta | None = None  # newest restore-verified snapshot older (or none): unhealthy
    rto_max: timedelta | None = None  # last verify --read-data restore slower (or not timed): unhealthy


@dataclass(frozen=True)
class WebhookSettings:
    url: str | None = None
    url_env: str | None = None  # the URL from this environment variable (Slack URLs are secrets)
    format: str = "json"  # json | slack
    timeout: float = 10.0


@dataclass(frozen=True)
class EmailSettings:
    host: str
    to: tuple[str, ...]
    sender: str
    port: int = 587
    security: str = "starttls"  # starttls | ssl | none
    username_env: str | None = None
    password_env: str | None = None
    timeout: float = 10.0
    ca_file: Path | None = None  # trust this CA instead of the system's (a private mail relay)


@dataclass(frozen=True)
class AlertSettings:
    window: timedelta = timedelta(hours=1)  # the same condition is not alerted again within this
    state_file: Path | None = None  # where sent alerts are remembered; default .migrate-guard/alerts.json
    webhook: WebhookSettings | None = None
    email: EmailSettings | None = None

    @property
    def configured(self) -> bool:
        return self.webhook is not None or self.email is not None


def _table(data: Any, name: str, known: set[str], fail: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise fail(name, "must be a table")
    for key in data:
        if key not in known:
            raise fail(f"{name}.{key}", f"unknown key (known: {', '.join(sorted(known))})")
    return data


def _duration_setting(
    data: dict[str, Any], name: str, key: str, default: timedelta | None, fail: Any
) -> timedelta | None:
    from .backup.retention import parse_duration
    from .errors import GuardError

    value = data.get(key)
    if value is None:
        return default
    if value == "off":
        return None
    if not isinstance(value, str):
        raise fail(f"{name}.{key}", 'must be a duration string such as "26h" or "8d", or "off"')
    try:
        return parse_duration(value)
    except GuardError as exc:
        raise fail(f"{name}.{key}", exc.message) from None


def _number(data: dict[str, Any], name: str, key: str, default: float, low: float, high: float, fail: Any) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise fail(f"{name}.{key}", f"must be a number from {low:g} to {high:g}")
    return float(value)


def _env_name(data: dict[str, Any], name: str, key: str, fail: Any) -> str | None:
    value = data.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip() or "=" in value):
        raise fail(f"{name}.{key}", "must be the name of an environment variable")
    return value.strip() if value else None


def _objective_setting(data: dict[str, Any], key: str, fail: Any) -> timedelta | None:
    """``rpo_max``/``rto_max``: a duration as the other status durations are written, which may also end in
    seconds and milliseconds (``26h``, ``1h30m``, ``45s``, ``2m30s``, ``500ms``); unset or ``"off"``: no check."""
    from .backup.retention import parse_duration
    from .errors import GuardError

    value = data.get(key)
    if value is None or value == "off":
        return None
    if not isinstance(value, str):
        raise fail(f"status.{key}", 'must be a duration string such as "26h", "30m", "45s" or "500ms", or "off"')
    bad = f'bad duration {value!r}: e.g. "26h", "1h30m", "45s", "500ms" (units largest first, each once), or "off"'
    m = re.fullmatch(r"(.*?)(?:(\d+)s)?(?:(\d+)ms)?", value.strip().lower())
    if m is None or not value.strip():
        raise fail(f"status.{key}", bad)
    try:
        total = parse_duration(m[1]) if m[1] else timedelta()
    except GuardError:
        raise fail(f"status.{key}", bad) from None
    total += timedelta(seconds=int(m[2] or 0), milliseconds=int(m[3] or 0))
    if not total:
        raise fail(f"status.{key}", f"bad duration {value!r}: must be more than zero")
    return total


def _parse_status(data: Any, fail: Any) -> StatusSettings:
    from .backup.retention import parse_size
    from .errors import GuardError

    data = _table(data, "status", _STATUS_KEYS, fail)
    max_size = data.get("max_size")
    if max_size is not None:
        if not isinstance(max_size, str):
            raise fail("status.max_size", 'must be a size string such as "50GB"')
        try:
            max_size = parse_size(max_size)
        except GuardError as exc:
            raise fail("status.max_size", exc.message) from None
    warning = _number(data, "status", "disk_warning", 80, 0, 100, fail)
    critical = _number(data, "status", "disk_critical", 90, 0, 100, fail)
    if warning > critical:
        raise fail("status.disk_warning", f"must not be above status.disk_critical ({critical:g})")
    pending = data.get("max_pending")
    if pending is not None and (isinstance(pending, bool) or not isinstance(pending, int) or pending < 0):
        raise fail("status.max_pending", "must be a non-negative integer")
    return StatusSettings(
        max_age=_duration_setting(data, "status", "max_age", StatusSettings.max_age, fail),
        max_size=max_size,
        verify_max_age=_duration_setting(data, "status", "verify_max_age", StatusSettings.verify_max_age, fail),
        disk_warning=warning,
        disk_critical=critical,
        max_pending=pending,
        rpo_max=_objective_setting(data, "rpo_max", fail),
        rto_max=_objective_setting(data, "rto_max", fail),
    )


def _parse_alerts(data: Any, source: Path, fail: Any) -> AlertSettings:
    data = _table(data, "alerts", _ALERT_KEYS, fail)
    state_file = data.get("state_file")
    if state_file is not None and (not isinstance(state_file, str) or not state_file.strip()):
        raise fail("alerts.state_file", "must be a file path")
    webhook = email = None
    if "webhook" in data:
        hook = _table(data["webhook"], "alerts.webhook", _WEBHOOK_KEYS, fail)
        url, url_env = hook.get("url"), _env_name(hook, "alerts.webhook", "url_env", fail)
        if (url is None) == (url_env is None):
            raise fail("alerts.webhook", "set exactly one of url and url_env")
        if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
            raise fail("alerts.webhook.url", "must be an http:// or https:// URL")
        fmt = hook.get("format", "json")
        if fmt not in ("json", "slack"):
            raise fail("alerts.webhook.format", f"bad value {fmt!r} (choose json, slack)")
        webhook = WebhookSettings(url, url_env, fmt, _number(hook, "alerts.webhook", "timeout", 10, 0.1, 600, fail))
    if "email" in data:
        mail = _table(data["email"], "alerts.email", _EMAIL_KEYS, fail)
        for key in ("host", "from"):
            if not isinstance(mail.get(key), str) or not mail[key].strip():
                raise fail(f"alerts.email.{key}", "is required" if key not in mail else "must be a non-empty string")
        to = mail.get("to")
        if isinstance(to, str):
            to = [to]
        if not isinstance(to, list) or not to or not all(isinstance(a, str) and "@" in a for a in to):
            raise fail("alerts.email.to", "must be a list of e-mail addresses")
        security = mail.get("security", "starttls")
        if security not in EMAIL_SECURITY:
            raise fail("alerts.email.security", f"bad value {security!r} (choose {', '.join(EMAIL_SECURITY)})")
        port = mail.get("port", EMAIL_SECURITY[security])
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise fail("alerts.email.port", "must be a port number from 1 to 65535")
        username_env = _env_name(mail, "alerts.email", "username_env", fail)
        password_env = _env_name(mail, "alerts.email", "password_env", fail)
        if (username_env is None) != (password_env is None):
            raise fail("alerts.email", "set both username_env and password_env, or neither")
        ca_file = mail.get("ca_file")
        if ca_file is not None:
            if not isinstance(ca_file, str) or not (source.parent / ca_file).is_file():
                raise fail("alerts.email.ca_file", f"not a file: {ca_file}")
            ca_file = (source.parent / ca_file).resolve()
        email = EmailSettings(
            host=mail["host"].strip(),
            to=tuple(to),
            sender=mail["from"].strip(),
            port=port,
            security=security,
            username_env=username_env,
            password_env=password_env,
            timeout=_number(mail, "alerts.email", "timeout", 10, 0.1, 600, fail),
            ca_file=ca_file,
        )
    return AlertSettings(
        window=_duration_setting(data, "alerts", "window", AlertSettings.window, fail) or timedelta(0),
        state_file=(source.parent / state_file.strip()) if state_file else None,
        webhook=webhook,
        email=email,
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path.name}: cannot be read: {exc.strerror}") from None
