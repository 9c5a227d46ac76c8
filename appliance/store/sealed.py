"""Where sealed values live, and the associated data each one is sealed under, spelled once.

A sealed value is bound to its row: the context ``memory:42`` is the associated data of the
memory with id 42, so a ciphertext copied onto another row does not open (crypto.py). The
context is needed in Python (sealing and opening one value) and in SQL (re-sealing a whole
table at key rotation); both spellings come from the one `SealedColumn` below, and
tests/store/test_sealed.py checks that they agree on real rows.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SealedColumn:
    table: str
    key_columns: tuple[str, ...]  # the row's key, in the order the context names it
    prefix: str

    def context(self, *key: object) -> str:
        """The associated data of the row with this key, e.g. ``ring:door-1:7``."""
        if len(key) != len(self.key_columns):
            raise ValueError(f"{self.table}: a context takes {self.key_columns}, got {key!r}")
        return ":".join([self.prefix, *(str(k) for k in key)])

    @property
    def context_sql(self) -> str:
        """The same context as an SQL expression over the row (constant names only)."""
        return " || ':' || ".join([f"'{self.prefix}'", *self.key_columns])


MEMORY = SealedColumn("memories", ("id",), "memory")
RING = SealedColumn("ring", ("conversation", "seq"), "ring")
DICTIONARY = SealedColumn("zstd_dicts", ("id",), "dict")
SEGMENT = SealedColumn("archive_segments", ("id",), "segment")
SEALED_COLUMNS = (MEMORY, RING, DICTIONARY, SEGMENT)
