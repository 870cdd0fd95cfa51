"""One base class for every error the bot reports to a user."""

from __future__ import annotations


class BotError(Exception):
    """An error with a message fit for one line, and an optional hint."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ConfigError(BotError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} configuration problem(s)", "run: polymarket-bot validate-config")
        self.problems = problems
