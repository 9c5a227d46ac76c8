"""The store's one error type, raised for requests the database cannot carry out."""


class StoreError(Exception):
    """The message says what was wrong and where; nothing was written."""


class Missing(StoreError):
    """The request names something that does not exist (a user, a token, a task)."""


class Conflict(StoreError):
    """The request clashes with what exists (a name taken, a state that does not allow it)."""
