"""Typed shortcuts over apsw: rows come back as plain tuples of Any for the caller to unpack."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, cast

import apsw

Row = tuple[Any, ...]


def fetch_all(conn: apsw.Connection, sql: str, args: tuple[object, ...] = ()) -> list[Row]:
    return cast(list[Row], conn.execute(sql, args).fetchall())


def fetch_one(conn: apsw.Connection, sql: str, args: tuple[object, ...] = ()) -> Row | None:
    return cast(Row | None, conn.execute(sql, args).fetchone())


def scalar(conn: apsw.Connection, sql: str, args: tuple[object, ...] = ()) -> Any:
    row = conn.execute(sql, args).fetchone()
    return row[0] if row else None


def integer(conn: apsw.Connection, sql: str, args: tuple[object, ...] = ()) -> int:
    """A single integer (counts, pragmas, numbers kept as text in meta); 0 when there is no row."""
    value = scalar(conn, sql, args)
    return int(value) if value is not None else 0


def time_range(column: str, since: float | None, until: float | None) -> tuple[list[str], list[object]]:
    """WHERE clauses bounding ``column`` (a constant name) by optional since/until parameters."""
    clauses, params = [], list[object]()
    if since is not None:
        clauses.append(f"{column} >= ?")
        params.append(since)
    if until is not None:
        clauses.append(f"{column} <= ?")
        params.append(until)
    return clauses, params


def ids_json(ids: Iterable[int]) -> str:
    """Ids as one JSON parameter, expanded in SQL by ``IN (SELECT value FROM json_each(?))``."""
    return json.dumps([int(i) for i in ids])
