"""The one exception type a user sees as a one-line message instead of a traceback."""


class UserError(Exception):
    """Bad input or a refused operation: the message names the file or value and what to do."""
