"""The store's one error type, raised for requests the database cannot carry out."""


class StoreError(Exception):
    """The message says what was wrong and where; nothing was written."""
