"""Whose database work goes first when every pooled connection is busy (issue 17, item 4).

A node past its capacity used to queue the statements of callbacks it had already accepted
(legB's re-authorization, status rows, recovery rows, xDRs) behind those of new requests
being admitted, on the same few connections: legA's caller waited in silence and hung up,
and an accepted callback failed. The pool (``cbserver.db.pool.Database``) therefore keeps two
queues: ``RUNNING`` work is handed the next free connection before any ``ADMISSION`` work.

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

__all__ = ["ADMISSION", "RUNNING", "admission", "current", "restore", "running"]

RUNNING = 0  # work of callbacks already accepted (and anything unmarked): first
ADMISSION = 1  # a new request's admission work: only when no running work waits

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


def running(fn, *args, **kwargs):
    """Call ``fn(*args, **kwargs)`` in a copy of the current context marked ``RUNNING``: what
    it starts (a callback's session, with every generator it spawns) goes first."""
    ctx = contextvars.copy_context()

    def call():
        _current.set(RUNNING)
        return fn(*args, **kwargs)

    return ctx.run(call)
