"""How the ledger fails, told apart: a database that is away (retry, answer 503) from a
row it refuses for its content (never retried as it is: refused at the edge, split out
of a batch, or sent down the ping tree)."""

from __future__ import annotations

import asyncpg

# What a database that is away (restarting, unreachable, refusing) raises.
DATABASE_DOWN: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    # Raised when a connection breaks mid-query (e.g. a fast shutdown of the server).
    asyncpg.InternalClientError,
    asyncpg.InvalidCatalogNameError,  # the database is not (yet) there
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidPasswordError,
    # "database ... is not currently accepting connections" (ALLOW_CONNECTIONS false, a
    # database being dropped or restored); its subclass LockNotAvailableError (a lock
    # timeout) is as transient.
    asyncpg.ObjectNotInPrerequisiteStateError,
)

# What PostgreSQL (or asyncpg, encoding a parameter) raises for a row it will not take
# for its content (a data exception, a broken constraint, a value over a limit), as
# against a database that is away (exchange.api.errors.DATABASE_DOWN).
# asyncpg's own DataError (a parameter it cannot encode) subclasses InterfaceError, which
# otherwise means a broken connection: test for ROW_REFUSED first.
ROW_REFUSED: tuple[type[Exception], ...] = (
    asyncpg.DataError,
    asyncpg.exceptions._base.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
)


# A held connection that broke under a write (the server restarted, the backend was
# terminated): the batch writer sends the batch once more on a fresh one.
BROKEN_CONNECTION = (
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

# The SQLSTATE classes of ROW_REFUSED: data exceptions (22), integrity constraint
# violations (23), program limits exceeded (54, e.g. a batch too big for one jsonb value).
DATA_ERROR_CLASSES = ("22", "23", "54")


def is_row_error(exc: BaseException) -> bool:
    """A failure caused by the rows written, not by the database (ROW_REFUSED, or a
    server error of the same classes that asyncpg has no class for): a batch failing so
    is split to find the rows at fault."""
    if isinstance(exc, ROW_REFUSED):
        return True
    sqlstate = getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None
    return isinstance(sqlstate, str) and sqlstate[:2] in DATA_ERROR_CLASSES
