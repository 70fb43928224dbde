"""One error hierarchy for the whole project.

Every error carries a message that says what failed *and what to do about it*;
``str(err)`` is what the user sees (in ``pulumi preview``/``up`` output or on the
command line), so messages never contain secrets.
"""

from __future__ import annotations


class DbosError(Exception):
    """Base class of every error pulumi-dbos raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message}\n  hint: {hint}")


class ValidationError(DbosError):
    """Bad user input; raised (or collected) before anything is created.

    ``problems`` is a list of ``(field path, message)``.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        text = "; ".join(f"{path}: {msg}" for path, msg in problems)
        super().__init__(f"invalid input: {text}")


class EngineError(DbosError):
    """Something went wrong while talking to Postgres or managing a cluster."""


class NotFoundError(EngineError):
    """The named instance does not exist in the engine's catalog."""


class AlreadyExistsError(EngineError):
    """An instance of that name already exists."""


class CommandError(EngineError):
    """An external command failed (its output is attached, secrets masked)."""

    def __init__(self, argv: list[str], returncode: int | None, output: str, *, hint: str | None = None):
        self.argv = argv
        self.returncode = returncode
        self.output = output
        what = "timed out" if returncode is None else f"exited with code {returncode}"
        tail = output.strip()[-4000:]
        super().__init__(f"command `{' '.join(argv[:3])}{' ...' if len(argv) > 3 else ''}` {what}"
                         + (f":\n{tail}" if tail else ""), hint=hint)


class TimeoutExpired(EngineError):
    """A wait exceeded its deadline."""
