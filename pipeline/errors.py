"""The one exception type a user sees as a one-line message instead of a traceback."""


class UserError(Exception):
    """Bad input or a refused operation: the message names the file or value and what to do."""


def short_reason(e: BaseException) -> str:
    """A short cause for a one-line message: the exception's type (``zlib.error``, not ``error``)
    and the first line of its text."""
    kind = type(e).__qualname__
    kind = kind if type(e).__module__ == "builtins" else f"{type(e).__module__}.{kind}"
    text = str(e).splitlines()[0][:100] if str(e) else ""
    return f"{kind}: {text}" if text else kind
