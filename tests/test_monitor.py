"""Operations: `status` tells healthy from unhealthy in every way it checks, alerts reach a real local
webhook and a real local SMTP server (and never hide the failure they report), `backup --if-older-than`
is idempotent, and the HTML page renders the figures `status --format json` gives, in headless Chromium."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import REQUIRE_DATABASES, migrate_example, use_repository

from migrate_guard.backup.identity import database_identity

CLOSED_PORT_URL = "postgresql+psycopg://postgres@127.0.0.1:9/nothing"  # the discard port: nothing listens


# --- a guarded project ---------------------------------------------------------------------------


@dataclass
class Guarded:
    root: Path
    url: str

    @property
    def args(self) -> tuple[str, ...]:
        return ("-c", str(self.root / "alembic.ini"), "--url", self.url)

    def settings(self, toml: str) -> None:
        path = self.root / "migrate-guard.toml"
        path.write_text(path.read_text() + "\n" + toml + "\n")

    def repository(self):
        from migrate_guard.backup.service import open_repository
        from migrate_guard.config import load_project

        return open_repository(load_project(self.root / "alembic.ini", self.url))


@pytest.fixture
def guarded(example: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, run_cli) -> Guarded:
    """The example at 0004 on SQLite (0005 and 0006 pending), one backup, verified: a healthy setup."""
    migrate_example(example, sqlite_url, revision="0004", customers=None)
    use_repository(example, example / "repo", monkeypatch)
    g = Guarded(example, sqlite_url)
    assert run_cli(*g.args, "backup").exit_code == 0
    assert run_cli(*g.args, "verify", "--all").exit_code == 0
    return g


def status_json(run_cli, g: Guarded) -> tuple[int, dict]:
    result = run_cli(*g.args, "status", "--format", "json")
    return result.exit_code, json.loads(result.stdout)


def level_of(report: dict, check: str) -> str:
    return next(c["level"] for c in report["checks"] if c["name"] == check)


def shift_clock(monkeypatch: pytest.MonkeyPatch, delta: dt.timedelta) -> None:
    from migrate_guard.backup import service

    real = service.utcnow
    monkeypatch.setattr(service, "utcnow", lambda: real() + delta)


# --- status -----------------------------------------------------------------------------------------


def test_status_of_a_healthy_setup(run_cli, guarded):
    code, report = status_json(run_cli, guarded)
    assert code == 0 and report["healthy"] is True, report
    f = report["figures"]
    assert f["snapshots"] == 1 and f["last_snapshot_age_seconds"] < 60 and f["repository_bytes"] > 0
    assert f["last_verify_ok"] is True and f["verify_failed_snapshots"] == [] and f["unfinished_runs"] == 0
    assert f["database_up"] is True and f["database_revision"] == ["0004"] and f["pending_revisions"] == 2
    assert 0 < f["disk_used_percent"] < 100 and f["disk_free_bytes"] > 0
    assert level_of(report, "pending_revisions") == "warning"  # reported, not unhealthy without max_pending
    text = run_cli(*guarded.args, "status")
    assert text.exit_code == 0 and text.stdout.startswith("healthy") and "2 pending: 0005, 0006" in text.stdout


def _damage_a_blob(g: Guarded, run_cli) -> None:
    blob = next(p for p in (g.root / "repo" / "blobs").rglob("*") if p.is_file())
    data = bytearray(blob.read_bytes())
    data[-5] ^= 0xFF
    blob.write_bytes(bytes(data))
    assert run_cli(*g.args, "verify", "--all").exit_code == 1


def _journal(state: str):
    def add(g: Guarded, run_cli) -> None:
        g.repository().append_journal(
            {
                "run": "r1",
                "user": "ops",
                "host": socket.gethostname(),
                "started_at": "2026-01-01T00:00:00Z",
                "from": ["0003"],
                "to": "heads",
                "state": state,
                "snapshot": None,
                "error": "boom" if state != "started" else None,
                "database": database_identity(g.url).to_dict(),
            }
        )

    return add


UNHEALTHY = {  # condition: (settings, action, check, level, words in its message)
    "old snapshot": ('[status]\nmax_age = "26h"', "+30h", "snapshot_age", "critical", "max_age 1d2h"),
    "no recent verify": ('[status]\nverify_max_age = "1h"', "+2h", "verify", "critical", "verify_max_age 1h"),
    "failed verify": ("", _damage_a_blob, "verify", "critical", "failed their latest verify"),
    "over max size": ('[status]\nmax_size = "1KB"', None, "repository_size", "critical", "over max_size"),
    "disk nearly full": (
        "[status]\ndisk_warning = 0\ndisk_critical = 0.01",
        None,
        "disk",
        "critical",
        "critical at 0.01%",
    ),
    "unfinished run": ("", _journal("started"), "unfinished_runs", "critical", "migrate-guard recover"),
    "run not restored": ("", _journal("not-restored"), "migrate_safe", "critical", "not-restored"),
    "database down": ("", CLOSED_PORT_URL, "database", "critical", "does not answer"),
    "pending revisions": ("[status]\nmax_pending = 0", None, "pending_revisions", "critical", "max_pending 0"),
    "no repository": ('[backup]\nrepository = "nowhere"', None, "repository", "critical", "no backup repository"),
}
REPORTED = {  # reported, but still healthy
    "disk filling": ("[status]\ndisk_warning = 0.01\ndisk_critical = 100", None, "disk", "warning", "warning at 0.01%"),
    "run restored": ("", _journal("rolled-back"), "migrate_safe", "warning", "rolled-back"),
}


@pytest.mark.parametrize("condition", [*UNHEALTHY, *REPORTED])
def test_status_tells_each_condition(run_cli, guarded, monkeypatch, condition):
    toml, action, check, level, words = (UNHEALTHY | REPORTED)[condition]
    if toml.startswith("[backup]"):  # a second [backup] table would be a TOML error: replace the repository
        path = guarded.root / "migrate-guard.toml"
        path.write_text(path.read_text().replace(f'repository = "{guarded.root / "repo"}"', 'repository = "nowhere"'))
    elif toml:
        guarded.settings(toml)
    if isinstance(action, str) and action.startswith("+"):
        shift_clock(monkeypatch, dt.timedelta(hours=int(action[1:-1])))
    elif isinstance(action, str):
        guarded.url = action
    elif action:
        action(guarded, run_cli)
    code, report = status_json(run_cli, guarded)
    found = next(c for c in report["checks"] if c["name"] == check)
    assert (found["level"], code, report["healthy"]) == (
        level,
        0 if condition in REPORTED else 1,
        condition in REPORTED,
    ), report
    assert words in found["message"]
    text = run_cli(*guarded.args, "status")
    assert text.exit_code == code and (text.stdout.startswith("UNHEALTHY") == (code == 1))


def test_a_run_in_progress_is_not_an_unfinished_one(run_cli, guarded):
    from migrate_guard.safe.lock import migration_lock

    _journal("started")(guarded, run_cli)
    with migration_lock(guarded.url):  # as a migrate-safe run holds it while it works
        code, report = status_json(run_cli, guarded)
    assert code == 0 and level_of(report, "unfinished_runs") == "warning"
    message = next(c["message"] for c in report["checks"] if c["name"] == "unfinished_runs")
    assert "run r1 is running (started 2026-01-01T00:00:00Z by ops@" in message
    assert "is held by migrate-safe pid" in message  # the holder, as the lock names it
    code, report = status_json(run_cli, guarded)
    assert code == 1 and level_of(report, "unfinished_runs") == "critical"


def test_free_space_of_a_remote_repository_is_unknown_not_unhealthy(
    run_cli, example, sqlite_url, monkeypatch, tmp_path
):
    pytest.importorskip("fsspec")
    migrate_example(example, sqlite_url, customers=None)
    use_repository(example, f"memory://{tmp_path.name}/repo", monkeypatch)  # fsspec's in-process filesystem
    g = Guarded(example, sqlite_url)
    assert run_cli(*g.args, "backup").exit_code == 0 and run_cli(*g.args, "verify", "--all").exit_code == 0
    code, report = status_json(run_cli, g)
    assert code == 0 and level_of(report, "disk") == "unknown" and report["figures"]["disk_used_percent"] is None
    prom = run_cli(*g.args, "status", "--format", "prometheus").stdout
    assert "migrate_guard_disk_used_ratio" not in prom and 'migrate_guard_check_status{check="disk"} 3' in prom


def test_prometheus_exposition_matches_json_and_is_written_atomically(run_cli, guarded, tmp_path):
    _, report = status_json(run_cli, guarded)
    out = tmp_path / "textfile" / "migrate_guard.prom"
    out.parent.mkdir()
    result = run_cli(*guarded.args, "status", "--format", "prometheus", "--output", str(out))
    assert result.exit_code == 0 and result.stdout == ""
    assert [p.name for p in out.parent.iterdir()] == ["migrate_guard.prom"]  # no temp file left behind
    samples: dict[str, float] = {}
    typed: set[str] = set()
    for line in out.read_text().splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind == "gauge" and name.startswith("migrate_guard_")
            typed.add(name)
            continue
        if line.startswith("# HELP "):
            continue
        m = re.fullmatch(r'(migrate_guard_[a-z_]+)(\{check="[a-z_]+"\})? (-?[0-9.e+]+)', line)
        assert m, line
        assert m[1] in typed, f"{m[1]} has no # TYPE line before it"
        samples[m[1] + (m[2] or "")] = float(m[3])
    f = report["figures"]
    assert samples["migrate_guard_healthy"] == 1
    assert samples["migrate_guard_snapshots"] == f["snapshots"]
    assert samples["migrate_guard_repository_size_bytes"] == f["repository_bytes"]
    assert samples["migrate_guard_pending_revisions"] == 2 and samples["migrate_guard_database_up"] == 1
    assert samples["migrate_guard_last_verify_success"] == 1 and samples["migrate_guard_unfinished_runs"] == 0
    assert samples['migrate_guard_check_status{check="pending_revisions"}'] == 1
    assert "migrate_guard_last_migrate_safe_success" not in samples  # unknown is left out, not reported as 0


def test_bad_settings_and_missing_repository_are_one_line_errors(run_cli, guarded, tmp_path):
    guarded.settings('[alerts.webhook]\nurl = "ftp://example.org/hook"')
    result = run_cli(*guarded.args, "status")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "alerts.webhook.url: must be an http:// or https:// URL" in result.stderr
    path = guarded.root / "migrate-guard.toml"
    base = path.read_text().replace('[alerts.webhook]\nurl = "ftp://example.org/hook"', "")
    for toml, key in [
        ("[status]\nmax_age = 26", "status.max_age: must be a duration"),
        ("[status]\ndisk_warning = 95", "status.disk_warning: must not be above status.disk_critical"),
        ('[alerts]\nwindow = "1x"', "alerts.window: bad duration"),
        (
            '[alerts.email]\nhost = "h"\nfrom = "g@x.org"\nto = ["ops"]',
            "alerts.email.to: must be a list of e-mail addresses",
        ),
        (
            '[alerts.email]\nhost = "h"\nfrom = "g@x.org"\nto = "o@x.org"\nsecurity = "tls"',
            "alerts.email.security: bad value 'tls'",
        ),
        (
            '[alerts.email]\nhost = "h"\nfrom = "g@x.org"\nto = "o@x.org"\npassword = "x"',
            "alerts.email.password: unknown key",
        ),
    ]:
        path.write_text(base + "\n" + toml + "\n")
        result = run_cli(*guarded.args, "status")
        assert (
            result.exit_code == 2 and result.stderr.count("\n") == 1 and f"migrate-guard.toml: {key}" in result.stderr
        ), result.stderr
    path.write_text(base + '\n[alerts.webhook]\nurl = "ftp://example.org/hook"\n')
    elsewhere = tmp_path / "nowhere.html"
    path = guarded.root / "migrate-guard.toml"
    path.write_text(
        path.read_text()
        .replace("ftp://example.org/hook", "http://127.0.0.1:9/")
        .replace(str(guarded.root / "repo"), "gone")
    )
    result = run_cli(*guarded.args, "report", "--html", str(elsewhere))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "no backup repository at" in result.stderr
    assert not elsewhere.exists()


# --- alert servers ----------------------------------------------------------------------------------


@dataclass
class Webhook:
    url: str
    received: list[dict] = field(default_factory=list)
    answer: int = 200


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            hook.received.append({"path": self.path, "type": self.headers["Content-Type"], "body": json.loads(body)})
            self.send_response(hook.answer)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/T000/secret-token"
    yield hook
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and its key): the SMTP server's, and the CA the client trusts."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "smtp.pem", tmp_path / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@dataclass
class Mailbox:
    port: int
    ca_file: Path
    messages: list = field(default_factory=list)
    logins: list = field(default_factory=list)


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[Mailbox]:
    """A real SMTP server on 127.0.0.1 that requires STARTTLS and a login (user ops, password s3cret)."""
    import ssl
    from email import message_from_bytes, policy

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    cert, key = self_signed(tmp_path)
    box = Mailbox(free_port(), cert)

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's naming
            box.messages.append(
                (
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    message_from_bytes(envelope.content, policy=policy.default),
                )
            )
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        box.logins.append(auth_data.login)
        return AuthResult(success=(auth_data.login, auth_data.password) == (b"ops", b"s3cret"), handled=False)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=box.port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    controller.start()
    yield box
    controller.stop()


def alert_settings(g: Guarded, hook_url: str, smtp_port: int, ca_file: Path | None, fmt: str = "json") -> None:
    g.settings(
        f'[alerts]\nwindow = "1h"\n\n[alerts.webhook]\nurl = "{hook_url}"\nformat = "{fmt}"\ntimeout = 5\n\n'
        f'[alerts.email]\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "starttls"\nfrom = "guard@example.org"\n'
        f'to = ["ops@example.org", "dba@example.org"]\n'
        f'username_env = "MG_SMTP_USER"\npassword_env = "MG_SMTP_PASSWORD"\n'
        f"timeout = 5\n" + (f'ca_file = "{ca_file}"\n' if ca_file else "")
    )


# --- alerts ---------------------------------------------------------------------------------------------


def test_failed_backup_alerts_by_webhook_and_email(run_cli, guarded, webhook, smtp, monkeypatch, sqlite_url):
    monkeypatch.setenv("MG_SMTP_USER", "ops")
    monkeypatch.setenv("MG_SMTP_PASSWORD", "s3cret")
    alert_settings(guarded, webhook.url, smtp.port, smtp.ca_file)
    guarded.url = CLOSED_PORT_URL
    result = run_cli(*guarded.args, "backup")
    assert result.exit_code == 2 and "error:" in result.stderr and "warning" not in result.stderr, result.stderr
    [post] = webhook.received
    assert post["path"] == "/hooks/T000/secret-token" and post["type"] == "application/json"
    body = post["body"]
    assert body["event"] == "backup-failed" and body["severity"] == "critical" and body["source"] == "migrate-guard"
    assert body["message"] and body["message"] in result.stderr  # the same error the command reported
    [(sender, recipients, message)] = smtp.messages
    assert sender == "guard@example.org" and recipients == ["ops@example.org", "dba@example.org"]
    assert message["Subject"] == "[migrate-guard] backup failed" and body["message"] in message.get_content()
    assert smtp.logins == [b"ops"]  # over STARTTLS, with the credentials from the environment

    # the same condition again within the window: not re-sent; after a good backup it may alert again
    assert run_cli(*guarded.args, "backup").exit_code == 2
    assert len(webhook.received) == 1 and len(smtp.messages) == 1
    assert run_cli(*Guarded(guarded.root, sqlite_url).args, "backup").exit_code == 0
    assert run_cli(*guarded.args, "backup").exit_code == 2
    assert len(webhook.received) == 2 and len(smtp.messages) == 2


def test_damage_found_by_verify_alerts(run_cli, guarded, webhook):
    guarded.settings(f'[alerts.webhook]\nurl = "{webhook.url}"\n')
    blob = max((guarded.root / "repo" / "blobs").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else -1)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    result = run_cli(*guarded.args, "verify", "--all")
    assert result.exit_code == 1 and "DAMAGED" in result.stdout and "warning" not in result.stderr, result.output
    [post] = webhook.received
    body = post["body"]
    assert body["event"] == "verify-failed" and body["severity"] == "critical"
    assert blob.name in body["message"]  # the damaged blob, named as verify named it


def test_unhealthy_status_alerts_once_then_when_healthy_again_slack_format(run_cli, guarded, webhook, monkeypatch):
    guarded.settings(
        f'[status]\nmax_size = "1KB"\n\n[alerts]\nwindow = "1h"\n\n'
        f'[alerts.webhook]\nurl = "{webhook.url}"\nformat = "slack"'
    )
    assert run_cli(*guarded.args, "status").exit_code == 1
    assert webhook.received == []  # plain `status` never alerts: only `status --alert`
    assert run_cli(*guarded.args, "status", "--alert").exit_code == 1
    assert run_cli(*guarded.args, "status", "--alert").exit_code == 1
    [post] = webhook.received
    assert list(post["body"]) == ["text"] and "unhealthy: repository_size" in post["body"]["text"]
    assert "over max_size" in post["body"]["text"]
    shift_clock(monkeypatch, dt.timedelta(minutes=61))  # the window is over: alerted again
    assert run_cli(*guarded.args, "status", "--alert").exit_code == 1
    assert len(webhook.received) == 2
    path = guarded.root / "migrate-guard.toml"
    path.write_text(path.read_text().replace('max_size = "1KB"', 'max_size = "1GB"'))
    assert run_cli(*guarded.args, "status", "--alert").exit_code == 0
    assert len(webhook.received) == 3 and "healthy again" in webhook.received[-1]["body"]["text"]
    assert run_cli(*guarded.args, "status", "--alert").exit_code == 0
    assert len(webhook.received) == 3


def test_failed_migrate_safe_alerts_and_alert_failures_never_hide_it(run_cli, guarded, webhook):
    (guarded.root / "migrations/versions/0007_broken.py").write_text(
        'from alembic import op\nimport sqlalchemy as sa\nrevision = "0007"\ndown_revision = "0006"\n'
        "def upgrade():\n    op.add_column('customers', sa.Column('tier', sa.String(10)))\n"
        "    op.execute('SELECT * FROM no_such_table')\n\ndef downgrade():\n    pass\n"
    )
    guarded.settings(f'[alerts.webhook]\nurl = "{webhook.url}"')
    result = run_cli(*guarded.args, "migrate-safe")
    assert result.exit_code == 1, result.output
    [post] = webhook.received
    assert post["body"]["event"] == "migrate-safe-failed" and post["body"]["severity"] == "warning"
    assert "no_such_table" in post["body"]["message"] and post["body"]["details"]["exit_code"] == 1

    # now every channel is broken: the webhook refuses, the SMTP port is closed
    path = guarded.root / "migrate-guard.toml"
    path.write_text(
        path.read_text().replace(webhook.url, "http://127.0.0.1:9/hook")
        + (
            f'\n[alerts.email]\nhost = "127.0.0.1"\nport = {free_port()}\nsecurity = "none"\n'
            'from = "g@example.org"\nto = ["o@example.org"]\n'
        )
    )
    result = run_cli(*guarded.args, "migrate-safe")
    assert result.exit_code == 1 and "rolled back" in result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 2 and "webhook alert not sent: cannot reach http://127.0.0.1:9" in warnings[0]
    assert "email alert not sent: cannot connect to SMTP server 127.0.0.1" in warnings[1]
    assert "/hook" not in result.stderr.replace("hooks", "")  # the URL's path (a secret for Slack) is never shown

    result = run_cli(*guarded.args, "alert", "test")
    assert result.exit_code == 1 and result.stdout == ""
    assert [line.split(": ")[2] for line in result.stderr.splitlines()] == [
        "webhook alert not sent",
        "email alert not sent",
    ]


def test_alert_test_reaches_both_channels_and_http_errors_are_one_line(run_cli, guarded, webhook, smtp, monkeypatch):
    monkeypatch.setenv("MG_SMTP_USER", "ops")
    monkeypatch.setenv("MG_SMTP_PASSWORD", "wrong")
    alert_settings(guarded, webhook.url, smtp.port, smtp.ca_file)
    result = run_cli(*guarded.args, "alert", "test")
    assert result.exit_code == 1 and result.stdout.startswith("sent to webhook http://127.0.0.1:")
    assert (
        "email alert not sent: SMTP server 127.0.0.1:" in result.stderr and "refused the credentials" in result.stderr
    )
    monkeypatch.setenv("MG_SMTP_PASSWORD", "s3cret")
    result = run_cli(*guarded.args, "alert", "test")
    assert result.exit_code == 0 and "sent to email ops@example.org, dba@example.org" in result.stdout
    assert len(smtp.messages) == 1 and smtp.messages[0][2]["Subject"] == "[migrate-guard] test alert"
    webhook.answer = 500
    result = run_cli(*guarded.args, "alert", "test")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "webhook alert not sent: http://127.0.0.1:" in result.stderr and "answered HTTP 500" in result.stderr
    assert "secret-token" not in result.stderr


def test_email_over_implicit_tls(run_cli, guarded, tmp_path):
    import ssl
    from email import message_from_bytes, policy

    from aiosmtpd.controller import Controller

    received = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's naming
            received.append(message_from_bytes(envelope.content, policy=policy.default))
            return "250 OK"

    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port, ssl_context=context)
    controller.start()
    try:
        guarded.settings(
            f'[alerts.email]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "ssl"\nfrom = "g@example.org"\n'
            f'to = "ops@example.org"\nca_file = "{cert}"\ntimeout = 5'
        )
        result = run_cli(*guarded.args, "alert", "test")
        assert result.exit_code == 0 and result.stdout == "sent to email ops@example.org\n", result.output
        assert [m["To"] for m in received] == ["ops@example.org"] and received[0]["Date"] and received[0]["Message-ID"]
        path = guarded.root / "migrate-guard.toml"
        path.write_text(path.read_text().replace(f'ca_file = "{cert}"\n', ""))  # the system CAs do not know this one
        result = run_cli(*guarded.args, "alert", "test")
        assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "CERTIFICATE_VERIFY_FAILED" in result.stderr
    finally:
        controller.stop()


# --- scheduling --------------------------------------------------------------------------------------


def test_backup_if_older_than_is_idempotent(run_cli, guarded, monkeypatch):
    def count() -> int:
        return len(json.loads(run_cli(*guarded.args, "list", "--format", "json").stdout))

    assert count() == 1
    result = run_cli(*guarded.args, "backup", "--if-older-than", "1h")
    assert result.exit_code == 0 and result.stdout.startswith("skipped: snapshot") and count() == 1
    result = run_cli(*guarded.args, "backup", "--if-older-than", "1h", "--label", "daily", "--format", "json")
    assert result.exit_code == 0 and json.loads(result.stdout)["label"] == "daily" and count() == 2
    assert run_cli(*guarded.args, "backup", "--if-older-than", "1d", "--label", "daily").stdout.startswith("skipped")
    shift_clock(monkeypatch, dt.timedelta(minutes=61))
    assert run_cli(*guarded.args, "backup", "--if-older-than", "1h").exit_code == 0 and count() == 3
    assert run_cli(*guarded.args, "backup", "--if-older-than", "1h").stdout.startswith("skipped") and count() == 3
    shift_clock(monkeypatch, dt.timedelta(hours=2))
    with guarded.repository().lock("backup from another cron line"):  # that one is taking the snapshot
        result = run_cli(*guarded.args, "backup", "--if-older-than", "1h")
    assert result.exit_code == 0 and "skipped: another command holds the repository" in result.stdout and count() == 3
    result = run_cli(*guarded.args, "backup", "--if-older-than", "soon")
    assert result.exit_code == 2 and "bad duration 'soon'" in result.stderr


# --- the HTML page -------------------------------------------------------------------------------------


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found:
        return found
    message = "headless Chromium not installed: apt-get install -y chromium"
    if REQUIRE_DATABASES:
        pytest.fail(message + " (MIGRATE_GUARD_REQUIRE_DATABASES is set, so this is a failure)")
    pytest.skip(message)


def test_html_report_renders_the_status_figures_in_chromium(run_cli, guarded, tmp_path):
    browser = chromium()
    assert run_cli(*guarded.args, "migrate-safe", "0005").exit_code == 0
    assert run_cli(*guarded.args, "backup", "--label", "nightly").exit_code == 0
    _, report = status_json(run_cli, guarded)
    page = tmp_path / "status.html"
    result = run_cli(*guarded.args, "report", "--html", str(page))
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # nothing to fetch
    proc = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    root = re.search(r"<html[^>]*>", dom)[0]
    assert 'data-ready="1"' in root and "data-error" not in root, (root, proc.stderr[-2000:])
    assert "Uncaught" not in proc.stderr and "Refused to" not in proc.stderr
    shown = dict(re.findall(r'<span data-figure="([a-z_]+)">(.*?)</span>', dom))
    f = report["figures"]
    for name in (
        "snapshots",
        "last_snapshot_id",
        "last_snapshot_at",
        "repository_bytes",
        "disk_total_bytes",
        "last_verify_at",
        "unfinished_runs",
        "pending_revisions",
        "last_run",
        "last_run_state",
    ):
        assert shown[name].split(" ")[0] == str(f[name]), (name, shown[name], f[name])
    assert shown["last_verify_ok"] == "true" and shown["database_up"] == "true"
    assert f["snapshots"] == 3 and f["last_run_state"] == "succeeded" and f["pending_revisions"] == 1
    assert 'id="health">HEALTHY' in dom and '<svg id="size-plot"' in dom and dom.count("<circle") == 2 * f["snapshots"]
    assert f["last_run"] in dom and "Current findings" in dom
    timeline = json.loads(run_cli(*guarded.args, "history", "--all", "--format", "json").stdout)
    assert [e["type"] for e in timeline].count("snapshot") == f["snapshots"]
    assert {"verify", "migrate-safe"} <= {e["type"] for e in timeline}


# --- PostgreSQL -------------------------------------------------------------------------------------------


@pytest.mark.postgresql
def test_status_on_postgresql(run_cli, example, postgresql_url, monkeypatch):
    migrate_example(example, postgresql_url, revision="0005", customers=5)
    use_repository(example, example / "repo", monkeypatch)
    g = Guarded(example, postgresql_url)
    assert run_cli(*g.args, "backup").exit_code == 0
    code, report = status_json(run_cli, g)
    assert level_of(report, "verify") == "critical" and code == 1  # a snapshot nobody ever verified
    assert run_cli(*g.args, "verify", "--all").exit_code == 0
    code, report = status_json(run_cli, g)
    assert code == 0, report
    assert report["figures"]["database_revision"] == ["0005"] and report["figures"]["pending_revisions"] == 1
