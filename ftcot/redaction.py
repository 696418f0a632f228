"""Secrets never reach a file or a log: keys are registered when read from the environment and
replaced in every message a stage prints or logs, text that a server echoes included.

A server's error body may quote the key it refused ("Incorrect API key provided: sk-..."), and an
exception's text travels into failure lists, log lines and tracebacks; redacting at each place a
message is made would miss one. So the stage runner installs :class:`RedactingFilter` on the
logging handlers and redacts what it prints, and the teacher redacts the messages it builds.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

REDACTED = "[redacted]"
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Adds ``value`` to what :func:`redact` removes (values under 4 characters would mask too much)."""
    if value and len(value) >= 4:
        _secrets.add(value)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``[redacted]`` (longest first, so a key
    that contains another is removed whole)."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """A handler filter: the formatted message of every record, with secrets redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            # The traceback text is formatted later from the exception: keep only its redacted text.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def install_log_redaction() -> None:
    """Redacts every record that reaches a root handler (the libraries' records propagate there)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def has_credentials(url: str) -> bool:
    """Whether ``url`` carries a user name or password (``http://user:pass@host/v1``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "@" in url
    return "@" in parts.netloc


def url_without_credentials(url: str | None) -> str | None:
    """``http://user:secret@host/v1`` -> ``http://***@host/v1``: the form safe to print. Other
    URLs, and None (no URL set), unchanged."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()
