"""The single error hierarchy of the builder.

Every error carries a one-line message and, where one exists, a hint saying
what to do next.  The CLI prints ``error: MESSAGE`` and ``hint: HINT`` and
exits with the error's exit code; ``--debug`` adds the traceback.
"""

from __future__ import annotations


class BuilderError(Exception):
    """Base of every error the builder reports to its user."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InputError(BuilderError):
    """Bad user input: a malformed file, an unknown package, a bad option."""

    exit_code = 2


class ToolMissing(BuilderError):
    """An external program is not installed."""

    exit_code = 3


class CommandFailed(BuilderError):
    """An external program ran and failed."""

    exit_code = 4

    def __init__(self, argv: list[str], returncode: int, stderr_tail: str, hint: str | None = None) -> None:
        cmd = " ".join(argv)
        super().__init__(f"{argv[0]} failed with exit code {returncode}: {cmd}", hint)
        self.argv = argv
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class LintFailed(BuilderError):
    """A linter found errors or warnings."""

    exit_code = 5
