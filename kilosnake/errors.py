"""Errors that name the problem and the fix."""


class KilosnakeError(Exception):
    """Base class of the errors kilosnake raises on purpose."""


class InputError(KilosnakeError, ValueError):
    """A bad recording, probe or config: the message names the problem and the fix."""

    def __init__(self, problem: str, fix: str):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}\n  fix: {fix}")


class DeviceError(KilosnakeError, RuntimeError):
    """The requested compute device is not usable."""
