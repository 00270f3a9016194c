"""The one base class of errors that carry a complete message for the user.

Such an error names the file, line or setting and the fix in its message, so the command
line prints it as one line and exits 2 instead of showing a traceback. Each module keeps its
own specific class (``ConfigError``, ``DataError``, …) and inherits from this one.
"""


class UserError(Exception):
    """Bad input or an unusable environment, explained in the message; not a bug in nbtools."""
