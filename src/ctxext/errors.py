"""The project's own exceptions. Each carries a message a user can act on; the CLI prints it as one line."""

from __future__ import annotations


class CtxextError(Exception):
    """Base class: anything ctxext refuses or cannot do, said in one line."""

    exit_code = 1


class SourceNotFound(CtxextError):
    """A model, adapter or file that was asked for does not exist or is not reachable."""

    exit_code = 2


class UnsupportedArchitecture(CtxextError):
    """The checkpoint's architecture has no mapping for the requested operation."""

    exit_code = 3


class InvalidArgument(CtxextError):
    """An option value that cannot work with this checkpoint."""

    exit_code = 4


class OutputExists(CtxextError):
    """The output folder exists and --force was not given."""

    exit_code = 5


class CorruptCheckpoint(CtxextError):
    """Weights or configs that cannot be read as what they claim to be."""

    exit_code = 6


class CheckFailed(CtxextError):
    """A numeric check or a verification did not pass."""

    exit_code = 7


class WriteFailed(CtxextError):
    """Writing the output failed (disk full, permissions); nothing was left behind."""

    exit_code = 8


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the command; ``kept`` says what was deliberately left on disk."""

    def __init__(self, signal_number: int = 2, kept: str | None = None):
        super().__init__(signal_number)
        self.signal_number = signal_number
        self.kept = kept

    @property
    def exit_code(self) -> int:
        return 128 + self.signal_number


def remote_code_refusal(error: Exception) -> UnsupportedArchitecture | None:
    """transformers' refusal to load a model that needs its own code, said as ctxext says it; None otherwise."""
    if "trust_remote_code" not in str(error):
        return None
    return UnsupportedArchitecture(
        "this model needs its own Python code (trust_remote_code), and ctxext never runs "
        "a model's code unless you pass --trust-remote-code where a command offers it"
    )
