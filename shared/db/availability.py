"""Whether an error means the database cannot be reached now (rather than a bug or bad data)."""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

# SQLSTATE classes and codes that mean "cannot reach or use the database now": connection
# exceptions (08), insufficient resources (53), operator intervention (57P: shutdown, dropped
# database), no such database (3D000), refused role or password (28), no CONNECT privilege.
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57P", "3D000", "28")
_NO_CONNECT_PRIVILEGE = "permission denied for database"


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached (rather than a bug or bad data)."""
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True  # pool exhausted, or a connection lost
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        sqlstate = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
        if sqlstate.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES):
            return True
        if _NO_CONNECT_PRIVILEGE in str(orig):
            return True
        # SQLite: the file cannot be opened, or stays locked past busy_timeout.
        text = str(orig).lower()
        return isinstance(exc, sa_exc.OperationalError) and (
            "unable to open database" in text or "database is locked" in text
        )
    # asyncpg raises socket errors (refused, reset, unknown host) as they are.
    return isinstance(exc, OSError) and _raised_in_database_driver(exc)


def _raised_in_database_driver(exc: BaseException) -> bool:
    trace = exc.__traceback__
    while trace is not None:
        module = trace.tb_frame.f_globals.get("__name__", "")
        if module.startswith(("asyncpg.", "sqlalchemy.pool", "sqlalchemy.engine")):
            return True
        trace = trace.tb_next
    return False
