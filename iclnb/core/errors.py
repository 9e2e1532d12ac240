"""The one exception type iclnb raises for bad input.

Notebooks and the command line show an ``IclnbError`` as its message alone (no traceback): the message
must say what was wrong and what to do instead.
"""


class IclnbError(Exception):
    """Bad input or an unusable environment, explained in one message for the user."""


class UsageError(IclnbError):
    """A mistake on the command line or in a parameter grid: the command line shows one line on stderr and exits
    with status 2."""
