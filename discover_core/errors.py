"""Errors a user can fix (a bad config, a missing extra, a corrupted run directory).

The CLI prints their message, one paragraph, without a traceback. Plugins
raise subclasses of ``UserError`` for the same treatment.
"""


class UserError(Exception):
    """An error whose message tells the user what was wrong and what to do."""
