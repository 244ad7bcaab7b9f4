"""structlog set-up: JSON lines off a TTY (or when asked), readable console lines on one.

Logs go to stderr so that `--json` output on stdout stays machine-readable. A processor
redacts secrets (tokens, client secret, authorization headers) wherever they appear.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# A key names a secret when one of its words does ("access_token", "client_secret",
# "Authorization"), not when a word merely starts so ("tokens_per_second" is a figure).
_SECRET_KEYS = re.compile(
    r"(?:^|[_\W])(secret|token|authorization|password|code_verifier|verifier|refresh|api_key|cookie)(?:$|[_\W])",
    re.I,
)
_BEARER = re.compile(r"(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+")
_REDACTED = "[redacted]"
_extra_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """A literal value (client secret, token) to redact wherever it shows up in a log line."""
    if value and len(value) >= 6:
        _extra_secrets.add(value)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        value = _BEARER.sub(r"\1 " + _REDACTED, value)
        for secret in _extra_secrets:
            if secret in value:
                value = value.replace(secret, _REDACTED)
        return value
    if isinstance(value, dict):
        return {k: (_REDACTED if _SECRET_KEYS.search(str(k)) else _scrub(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    return value


def redact_secrets(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if _SECRET_KEYS.search(key):
            event_dict[key] = _REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is at write time, not at configuration time.

    Test runners (and daemons that redirect stderr) swap the stream; a logger bound to the
    old one would write to a closed file.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure_logging(fmt: str = "auto", level: str = "info", stream: Any = None) -> None:
    stream = stream or _CurrentStderr()
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
