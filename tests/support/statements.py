"""What a database engine's connections send while a block runs, as they send it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK")


def first_word(statement: str) -> str:
    return statement.split(maxsplit=1)[0].rstrip(";").upper()


@contextmanager
def _listening(engine: AsyncEngine, hooks: dict[str, Callable[..., Any]]) -> Iterator[None]:
    target = engine.sync_engine
    for name, hook in hooks.items():
        event.listen(target, name, hook)
    try:
        yield
    finally:
        for name, hook in hooks.items():
            event.remove(target, name, hook)


@contextmanager
def statements_on(engine: AsyncEngine, *, transaction_control: bool = True) -> Iterator[list[str]]:
    """The statements SQLAlchemy executes on the engine's connections (with asyncpg, a
    transaction's BEGIN and COMMIT are not among them: see :func:`round_trips_on`); without
    ``transaction_control``, leaving out those that begin or end a transaction."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if transaction_control or first_word(statement) not in TRANSACTION_CONTROL:
            seen.append(statement)

    with _listening(engine, {"before_cursor_execute": record}):
        yield seen


@contextmanager
def round_trips_on(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every statement the engine's PostgreSQL connections send, a transaction's BEGIN and
    COMMIT included: asyncpg sends those as simple queries, which SQLAlchemy's events do not
    see, so they are taken from asyncpg's query logger (which it calls soon, not at once:
    let the event loop run once before reading them)."""

    def logged(query: Any) -> None:
        if first_word(query.query) in TRANSACTION_CONTROL:
            sent.append(query.query)

    def checkout(dbapi_connection: Any, *_args: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(logged)

    def checkin(dbapi_connection: Any, *_args: Any) -> None:
        dbapi_connection.driver_connection.remove_query_logger(logged)

    with (
        statements_on(engine) as sent,
        _listening(engine, {"checkout": checkout, "checkin": checkin}),
    ):
        yield sent
