"""Alerts: a JSON (or Slack-compatible) webhook POST and an e-mail over SMTP, configured in ``[alerts]``.

The same condition (its ``key``) is not alerted again within ``[alerts] window``; what was sent when
is remembered in a small JSON file beside the project (``.migrate-guard/alerts.json``), not in the
backup repository: the repository may be exactly what is broken. Sending never raises: every
problem comes back as one line, so an alert failure can never hide the failure it reports.
"""

from __future__ import annotations

import json
import os
import smtplib
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import __version__
from ..backup import service
from ..config import AlertSettings, EmailSettings, Project, WebhookSettings
from ..errors import ConfigError
from ..times import parse_iso

DEFAULT_STATE_FILE = ".migrate-guard/alerts.json"
_ICON = {"critical": ":rotating_light:", "warning": ":warning:", "ok": ":white_check_mark:"}


@dataclass
class Alert:
    key: str  # the condition: repeated alerts with the same key are held back within the window
    # backup-failed | verify-failed | unhealthy | resolved | migrate-safe-failed | migrate-safe-not-restored | test
    event: str
    severity: str  # critical | warning | ok
    title: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    sent: list[str] = field(default_factory=list)  # the channels it reached
    problems: list[str] = field(default_factory=list)  # one line each
    held_back: bool = False  # the same condition was alerted within the window


def state_path(project: Project) -> Path:
    return project.settings.alerts.state_file or project.root / DEFAULT_STATE_FILE


def _load_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # no file yet, or a damaged one: at worst an alert is sent once more
    return data if isinstance(data, dict) else {}


def _save_state(path: Path, state: dict[str, Any]) -> str | None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        return f"alert state {path} not saved ({exc.strerror or exc}): the next alert may repeat"
    return None


def send(project: Project, alert: Alert, *, force: bool = False) -> Outcome:
    """Deliver ``alert`` to every configured channel unless its condition was alerted within the window."""
    settings = project.settings.alerts
    outcome = Outcome()
    if not settings.configured:
        return outcome
    path = state_path(project)
    state = _load_state(path)
    now = service.utcnow()
    previous = state.get(alert.key, {})
    sent_at = parse_iso(previous.get("sent_at"))
    if not force and sent_at is not None and (now - sent_at) < settings.window:
        outcome.held_back = True
        return outcome
    outcome = deliver(project, alert)
    if outcome.sent and not force:
        keep = max(settings.window, timedelta(days=7))  # old conditions are forgotten: the file stays small
        state = {k: v for k, v in state.items() if (parse_iso(v.get("sent_at")) or now) > now - keep}
        state[alert.key] = {"sent_at": service.iso(now), "event": alert.event, "title": alert.title}
        problem = _save_state(path, state)
        if problem:
            outcome.problems.append(problem)
    return outcome


def resolve(project: Project, prefix: str) -> list[dict[str, Any]]:
    """Forget the alerted conditions whose key starts with ``prefix`` (they are over); returns them."""
    if not project.settings.alerts.configured:
        return []
    path = state_path(project)
    state = _load_state(path)
    gone = {k: v for k, v in state.items() if k.startswith(prefix)}
    if gone:
        _save_state(path, {k: v for k, v in state.items() if k not in gone})
    return list(gone.values())


def deliver(project: Project, alert: Alert) -> Outcome:
    settings: AlertSettings = project.settings.alerts
    outcome = Outcome()
    payload = _payload(project, alert)
    for name, channel, fn in (("webhook", settings.webhook, _post), ("email", settings.email, _mail)):
        if channel is None:
            continue
        try:
            outcome.sent.append(fn(channel, payload))  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, it is one line and the caller goes on
            outcome.problems.append(f"{name} alert not sent: {_reason(exc)}")
    return outcome


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConfigError):
        return exc.message
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _payload(project: Project, alert: Alert) -> dict[str, Any]:
    return {
        "source": "migrate-guard",
        "version": __version__,
        "event": alert.event,
        "severity": alert.severity,
        "title": alert.title,
        "message": alert.message,
        "project": str(project.root),
        "host": socket.gethostname(),
        "time": service.iso(service.utcnow()),
        "details": alert.details,
    }


# --- webhook -----------------------------------------------------------------------------------------


def _shown(url: str) -> str:
    """scheme://host[:port] only: webhook paths (Slack's) and credentials are secrets."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


def webhook_url(hook: WebhookSettings) -> str:
    if hook.url:
        return hook.url
    value = os.environ.get(hook.url_env or "", "").strip()
    if not value:
        raise ConfigError(f"environment variable {hook.url_env} (alerts.webhook.url_env) is not set")
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"environment variable {hook.url_env} does not hold an http(s) URL")
    return value


def _post(hook: WebhookSettings, payload: dict[str, Any]) -> str:
    url = webhook_url(hook)
    if hook.format == "slack":
        icon = _ICON.get(payload["severity"], "")
        body: dict[str, Any] = {
            "text": (
                f"{icon} *{payload['title']}*\n{payload['message']}\n_{payload['host']}: {payload['project']}_"
            ).strip()
        }
    else:
        body = payload
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode("utf-8"),
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": f"migrate-guard/{__version__}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=hook.timeout) as response:  # noqa: S310 - the operator's own URL
            response.read(1 << 16)
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{_shown(url)} answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
        raise RuntimeError(f"cannot reach {_shown(url)} ({reason})") from None
    except TimeoutError:
        raise RuntimeError(f"{_shown(url)} did not answer within {hook.timeout:g}s") from None
    except OSError as exc:
        raise RuntimeError(f"cannot reach {_shown(url)} ({exc.strerror or exc})") from None
    return f"webhook {_shown(url)}"


# --- e-mail ------------------------------------------------------------------------------------------


def _mail(mail: EmailSettings, payload: dict[str, Any]) -> str:
    message = EmailMessage()
    message["Subject"] = f"[migrate-guard] {payload['title']}"
    message["From"] = mail.sender
    message["To"] = ", ".join(mail.to)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=mail.sender.rpartition("@")[2] or None)
    details = json.dumps(payload["details"], indent=2) if payload["details"] else ""
    message.set_content(
        f"{payload['message']}\n\nseverity: {payload['severity']}\nevent: {payload['event']}\nhost: {payload['host']}\n"
        f"project: {payload['project']}\ntime: {payload['time']}\n" + (f"\n{details}\n" if details else "")
    )
    credentials = None
    if mail.username_env:
        user, password = os.environ.get(mail.username_env), os.environ.get(mail.password_env or "")
        missing = [n for n, v in ((mail.username_env, user), (mail.password_env, password)) if not v]
        if missing:
            raise ConfigError(f"environment variable {missing[0]} (alerts.email) is not set")
        assert user is not None and password is not None  # both checked just above
        credentials = (user, password)
    where = f"{mail.host}:{mail.port}"
    context = ssl.create_default_context(cafile=str(mail.ca_file) if mail.ca_file else None)
    try:
        if mail.security == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(mail.host, mail.port, timeout=mail.timeout, context=context)
        else:
            client = smtplib.SMTP(mail.host, mail.port, timeout=mail.timeout)
        with client:
            if mail.security == "starttls":
                client.starttls(context=context)
            if credentials:
                client.login(*credentials)
            client.send_message(message)
    except smtplib.SMTPAuthenticationError as exc:
        raise RuntimeError(f"SMTP server {where} refused the credentials ({exc.smtp_code})") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise RuntimeError(f"SMTP server {where} refused the recipients {', '.join(exc.recipients)}") from None
    except smtplib.SMTPNotSupportedError as exc:
        raise RuntimeError(f"SMTP server {where}: {exc}") from None
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        raise RuntimeError(f"SMTP server {where} refused: {exc.smtp_code} {' '.join(text.split())}") from None
    except (smtplib.SMTPException, ssl.SSLError) as exc:
        raise RuntimeError(f"SMTP server {where}: {_reason(exc)}") from None
    except TimeoutError:
        raise RuntimeError(f"SMTP server {where} did not answer within {mail.timeout:g}s") from None
    except OSError as exc:
        raise RuntimeError(f"cannot connect to SMTP server {where} ({exc.strerror or exc})") from None
    return f"email {', '.join(mail.to)}"


# --- the conditions the commands alert on ---------------------------------------------------------------


Warn = Callable[[str], None]


def _told(outcome: Outcome, warn: Warn | None) -> Outcome:
    for problem in outcome.problems:
        if warn:
            warn(problem)
    return outcome


def status_alert(project: Project, status: Any, warn: Warn | None = None) -> Outcome:
    """An unhealthy status alerts once per set of critical checks; a healthy one after an alert says so."""
    if not project.settings.alerts.configured:
        return _told(
            Outcome(problems=["--alert: no alert channel is configured ([alerts.webhook] or [alerts.email])"]), warn
        )
    if status.healthy:
        if not resolve(project, "status:"):
            return Outcome()
        return _told(
            deliver(
                project,
                Alert(
                    "status:resolved",
                    "resolved",
                    "ok",
                    "migrate-guard is healthy again",
                    "every status check passes again",
                    {"figures": status.figures},
                ),
            ),
            warn,
        )
    critical = status.critical
    key = "status:" + ",".join(sorted(c.name for c in critical))
    message = "\n".join(f"{c.name}: {c.message}" for c in critical)
    return _told(
        send(
            project,
            Alert(
                key,
                "unhealthy",
                "critical",
                f"migrate-guard is unhealthy: {', '.join(c.name for c in critical)}",
                message,
                {"checks": [c.__dict__ for c in status.checks], "figures": status.figures},
            ),
        ),
        warn,
    )


def backup_failed(project: Project, error: str, warn: Warn | None = None) -> Outcome:
    return _told(
        send(
            project,
            Alert(
                "backup-failed",
                "backup-failed",
                "critical",
                "backup failed",
                error,
                {"repository": service.repository_location(project)},
            ),
        ),
        warn,
    )


def backup_succeeded(project: Project) -> None:
    resolve(project, "backup-failed")


def verify_failed(project: Project, damaged: dict[str, list[str]], warn: Warn | None = None) -> Outcome:
    """``damaged``: snapshot id -> its problems (one line each)."""
    message = "\n".join(
        f"snapshot {sid}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
        for sid, problems in damaged.items()
    )
    return _told(
        send(
            project,
            Alert(
                "verify-failed:" + ",".join(sorted(damaged)),
                "verify-failed",
                "critical",
                f"verify found {len(damaged)} damaged snapshot{'s' if len(damaged) != 1 else ''}",
                message,
                {"snapshots": damaged},
            ),
        ),
        warn,
    )


def migrate_safe_failed(
    project: Project, exit_code: int, message: str, snapshot: str | None, warn: Warn | None = None
) -> Outcome:
    restored = exit_code == 1
    event = "migrate-safe-failed" if restored else "migrate-safe-not-restored"
    title = "migrate-safe failed and was restored" if restored else "migrate-safe failed and was NOT restored"
    return _told(
        send(
            project,
            Alert(
                f"{event}:{message}",
                event,
                "warning" if restored else "critical",
                title,
                message,
                {"exit_code": exit_code, "snapshot": snapshot},
            ),
        ),
        warn,
    )


def send_test(project: Project) -> Outcome:
    if not project.settings.alerts.configured:
        source = project.settings.source.name if project.settings.source else "migrate-guard.toml"
        raise ConfigError(f"{source}: no alert channel configured: add [alerts.webhook] or [alerts.email]")
    return send(
        project,
        Alert(
            "test",
            "test",
            "ok",
            "test alert",
            "migrate-guard can reach you: this is the test `migrate-guard alert test` sends",
        ),
        force=True,
    )
