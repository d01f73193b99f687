"""The xDR store turns driver errors into the project's own (issue 12: only db/ knows psycopg2)."""

import psycopg2
import psycopg2.errors
import pytest
from twisted.internet import defer
from twisted.python.failure import Failure
from txpostgres.txpostgres import RollbackFailed

from cbserver.db.stores import PostgresXdrStore
from cbserver.errors import ConcurrentWrite, DatabaseUnavailable, TransactionAborted


class FailingPool:
    ready = True

    def __init__(self, error):
        self.error = error

    def runInteraction(self, fn, *args):
        return defer.fail(self.error)


def outcome(error):
    failures = []
    PostgresXdrStore(FailingPool(error)).write_batch([]).addErrback(failures.append)
    return failures[0].value


@pytest.mark.parametrize(("error", "expected"), [
    (psycopg2.errors.DeadlockDetected("deadlock detected"), TransactionAborted),
    (psycopg2.errors.SerializationFailure("could not serialize"), TransactionAborted),
    (psycopg2.errors.UniqueViolation("duplicate key"), ConcurrentWrite),
    (psycopg2.OperationalError("server closed the connection"), DatabaseUnavailable),
    (psycopg2.InterfaceError("connection already closed"), DatabaseUnavailable),
    (RollbackFailed(None, Failure(psycopg2.OperationalError("gone"))), DatabaseUnavailable),
])
def test_driver_errors_become_project_errors_with_the_driver_error_as_cause(error, expected):
    got = outcome(error)
    assert type(got) is expected
    assert got.__cause__ is error


def test_a_deadlock_is_a_lost_race_not_an_outage():
    assert isinstance(outcome(psycopg2.errors.DeadlockDetected("x")), ConcurrentWrite)


def test_data_the_database_refuses_goes_up_unchanged():
    error = psycopg2.errors.CheckViolation("amount out of range")
    assert outcome(error) is error
