"""The one base of the errors a user can fix.

A stage that raises a :class:`FtcotError` (a bad parameter, a malformed input file, an
unreachable server, a missing model) ends with its message alone and exit status 2, since the
message says what to change. Anything else is a programming error: the stage runner lets it show
its traceback, so a bug is never disguised as a user's mistake.
"""


class FtcotError(Exception):
    """An error whose message tells the user what to fix."""
