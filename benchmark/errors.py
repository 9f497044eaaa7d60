"""The one exception type a user sees: the CLI prints its message on one line, with no traceback unless --debug."""


class BenchmarkError(Exception):
    """A problem with the user's input or environment, stated as one clear line (file, key, what was expected)."""
