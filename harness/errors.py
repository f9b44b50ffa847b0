"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class HarnessError(Exception):
    """Bad input (unknown name, missing file, malformed data). The message names the problem and the fix."""

    exit_code = 2


class UnknownNameError(HarnessError, KeyError):
    """A name that no registry entry, suite or choice carries."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class NotAvailableOffline(HarnessError):
    """A resource that only the Hugging Face hub provides, asked for while the hub is unreachable."""
