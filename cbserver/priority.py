"""Whose database work goes first when every pooled connection is busy (issue 17, item 4).

A node past its capacity used to queue the statements of callbacks it had already accepted
(legB's re-authorization, status rows, recovery rows, xDRs) behind those of new requests
being admitted, on the same few connections: legA's caller waited in silence and hung up,
and an accepted callback failed. The pool (``cbserver.db.pool.Database``) therefore keeps one
queue per class and hands a free connection to the first class with a waiter: ``URGENT``
(legB's re-authorization, while legA's caller listens to silence: ``urgent(fn)``), then
``RUNNING`` (the rest of accepted callbacks' work: status and recovery rows, xDRs, which can
wait a little without anybody hearing it), then ``ADMISSION``.

The class of a statement is carried by the code path that issues it, not by each call site:
a ``contextvars`` variable, which Twisted's ``inlineCallbacks`` (and coroutines run as
Deferreds) copy into every generator they start and restore at every resumption. Admission
marks its own work with ``admission()``; everything else — timers, SIP and RTP events, the
status writer's batches, xDRs — runs in the reactor's context and is ``RUNNING`` by default,
so work that escapes the mark errs on the side of going first, as before this change. A
callback started from inside admission must not inherit the mark for its whole life:
``running(fn)`` calls ``fn`` with the mark removed.
"""

from __future__ import annotations

import contextvars

__all__ = ["ADMISSION", "CLASSES", "RUNNING", "URGENT", "admission", "current", "restore",
           "running", "urgent"]

URGENT = 0  # a caller of an accepted callback waits on it (legB's re-authorization): first
RUNNING = 1  # the rest of callbacks already accepted (and anything unmarked)
ADMISSION = 2  # a new request's admission work: only when no other work waits
CLASSES = (URGENT, RUNNING, ADMISSION)  # in the order the pool serves them

_current: contextvars.ContextVar[int] = contextvars.ContextVar("cbserver_db_priority",
                                                               default=RUNNING)


def current() -> int:
    """The class of database work issued from the running code now."""
    return _current.get()


def admission() -> contextvars.Token:
    """Mark the rest of the current context (an ``inlineCallbacks`` generator's own copy)
    as admission work; returns a token for ``restore``."""
    return _current.set(ADMISSION)


def restore(token: contextvars.Token) -> None:
    """Undo ``admission()``.

    A generator closed by the garbage collector (its Deferred never fired) runs its
    ``finally`` outside the context it set the mark in; that context is gone with it, so
    there is nothing to undo.
    """
    try:
        _current.reset(token)
    except ValueError:
        pass


def _call_as(klass: int, fn, args, kwargs):
    ctx = contextvars.copy_context()

    def call():
        _current.set(klass)
        return fn(*args, **kwargs)

    return ctx.run(call)


def running(fn, *args, **kwargs):
    """Call ``fn(*args, **kwargs)`` in a copy of the current context marked ``RUNNING``: what
    it starts (a callback's session, with every generator it spawns) goes before admissions."""
    return _call_as(RUNNING, fn, args, kwargs)


def urgent(fn, *args, **kwargs):
    """Call ``fn(*args, **kwargs)`` marked ``URGENT``: its statements (those issued before it
    returns and those of the generators it starts) get the next free connection."""
    return _call_as(URGENT, fn, args, kwargs)
