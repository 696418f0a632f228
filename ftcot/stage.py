"""What every stage script shares: logging, and clean exits on bad input."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable

from ftcot.errors import FtcotError
from ftcot.lifecycle import end_with_parent
from ftcot.numerics import NumericsError, pin_cpu_numerics, pin_environment
from ftcot.redaction import install_log_redaction, redact

# As early as a stage script's imports allow: the math libraries read these at their first use.
try:
    pin_environment()
except NumericsError:
    pass  # a bad FTCOT_NUM* variable: run_stage reports it as the user's error

log = logging.getLogger("ftcot")


def run_stage(main: Callable[[], None]) -> None:
    """Runs a stage's ``main``: an error the user can fix (:class:`FtcotError`) ends it with its
    message alone and exit 2; any other exception is a bug and shows its traceback (exit 1)."""
    end_with_parent()  # no orphans: a stage ends when dvc (or whoever launched it) dies
    # Our lines at INFO; the libraries' only from WARNING (no line per HTTP request from the
    # OpenAI client, no notices a user cannot act on).
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    install_log_redaction()  # an API key never reaches a log line, even where a server echoes it
    sys.excepthook = _redacting_excepthook
    try:
        log.debug("numerics: %s", pin_cpu_numerics())
        main()
    except FtcotError as err:
        print(redact(f"error: {err}"), file=sys.stderr)
        sys.exit(2)


def _redacting_excepthook(kind, value, tb) -> None:
    """A programming error still shows its traceback, without any secret in it."""
    sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))
