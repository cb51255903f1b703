"""Errors a user can cause.

Every exception here carries a one-line message that says what is wrong and what to do. The CLI prints the
message without a traceback and exits with code 2; the Python API raises them as ordinary exceptions (they are
also ``ValueError`` subclasses where that is the natural type, so ``except ValueError`` keeps working).
Internal bugs never use these classes: they should still raise with a traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Base class of errors caused by user input (ids, arguments, files, actions)."""


class InvalidArgumentError(UserError, ValueError):
    """A constructor argument, keyword or option has a bad value or type."""


class InvalidActionError(UserError, ValueError):
    """An action is outside the action space (wrong shape, out of bounds, NaN or inf)."""


class UnknownEnvError(UserError, KeyError):
    """An environment id is not registered."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class DataError(UserError, ValueError):
    """A dataset on disk is missing, corrupt, from another env, or does not fit the request (e.g. the window)."""


class TrainingInterrupted(Exception):
    """A training run stopped on Ctrl-C (SIGINT) after saving its checkpoint; the message says how to resume.

    Not a :class:`UserError` (nothing was wrong): the CLI prints the message and exits with code 130, the shell
    convention for SIGINT.
    """
