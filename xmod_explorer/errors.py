"""The one error type the engine raises for anything a user can fix."""


class ExplorerError(ValueError):
    """Bad input or an unusable model; the message says what to do instead."""
