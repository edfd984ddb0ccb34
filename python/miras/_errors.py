"""The exceptions of the miras package."""

from __future__ import annotations


class MirasError(RuntimeError):
    """A runtime call failed: `status` is the runtime's status name ("shape error",
    "dtype error", ...), the message is the runtime's own (miras_last_error)."""

    def __init__(self, message: str, status: str = "error"):
        super().__init__(message)
        self.status = status


class CompileError(MirasError):
    """mirasc rejected a module: the message is its located diagnostic
    (`file:line:col: error: ...` with the source line and a caret)."""

    def __init__(self, message: str, diagnostic: str = "", returncode: int | None = None):
        super().__init__(message, "compile error")
        self.diagnostic = diagnostic or message
        self.returncode = returncode


def translate(err) -> MirasError:
    """miras._core.RuntimeCallError(status, message) -> MirasError."""
    status, message = err.args if len(err.args) == 2 else ("error", str(err))
    return MirasError(message, status)
