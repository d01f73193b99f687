"""``ApplicationDirectory``: seeding once, polling the change counter, telling listeners only
of real changes, and riding out a database that is away (logic on a ``task.Clock``)."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock

from cbserver.billing.applications import as_row
from cbserver.callback.app_directory import ApplicationDirectory
from cbserver.errors import DatabaseUnavailable
from tests.unit.web.harness import app_config


class Source:
    """Rows and a counter, as sql/043 and sql/012 keep them."""

    def __init__(self, apps=()):
        self.rows = [as_row(a) for a in apps]
        self.count = 1
        self.loads = 0
        self.down = False

    def set(self, apps):
        self.rows = [as_row(a) for a in apps]
        self.count += 1

    def counter(self):
        if self.down:
            return defer.fail(DatabaseUnavailable("connection refused"))
        return defer.succeed(self.count)

    def load(self):
        self.loads += 1
        return defer.succeed(list(self.rows))


def test_follows_the_catalog_and_tells_listeners_only_of_changes():
    clock, alpha, beta = Clock(), app_config("Alpha", path="/a"), app_config("Beta", path="/b")
    source = Source([alpha])
    seeded = []
    directory = ApplicationDirectory(source, clock, (alpha,), interval=1.0,
                                     seed=lambda: seeded.append(True) or ["Alpha"])
    heard = []
    directory.listeners.append(heard.append)
    directory.startService()
    assert seeded == [True] and source.loads == 1 and heard == []  # same as the config's
    clock.advance(1)
    clock.advance(1)
    assert source.loads == 1  # the counter did not move: nothing reloaded
    source.set([alpha, beta])
    clock.advance(1)
    assert heard == [(alpha, beta)] and directory.current == (alpha, beta)
    # The database goes away: the node keeps what it had, and catches up when it is back.
    source.down = True
    source.set([beta])
    clock.advance(1)
    assert directory.current == (alpha, beta)
    source.down = False
    clock.advance(1)
    assert heard[-1] == (beta,)
    directory.stopService()
    source.set([])
    clock.advance(5)
    assert heard[-1] == (beta,)  # stopped: no more polling


def test_a_listener_failing_does_not_hide_the_change_from_the_others():
    clock, alpha = Clock(), app_config("Alpha", path="/a")
    source = Source([])
    directory = ApplicationDirectory(source, clock, (), interval=1.0)
    heard = []

    def broken(apps):
        raise RuntimeError("boom")

    directory.listeners += [broken, heard.append]
    directory.startService()
    source.set([alpha])
    clock.advance(1)
    assert heard == [(alpha,)]
    directory.stopService()
