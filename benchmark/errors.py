"""The one exception type a user sees: the CLI prints its message on one line, with no traceback unless --debug."""


class BenchmarkError(Exception):
    """A problem with the user's input or environment, stated as one clear line (file, key, what was expected)."""


class BenchmarkWarning(UserWarning):
    """Something the user's data lost on the way that a researcher must see (questions or a relation dropped by
    preprocessing): shown even where library warnings are silenced (``runtime.quiet_libraries``), as one line."""
