"""The cyclic garbage collector held still for a test that asks what a collection would find."""

from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def saving_collector():
    """The collector paused, emptied, and saving everything it finds; restored after.

    Every object alive before the test is held until it ends, so what earlier tests leave
    behind (and release while this one runs) is never counted against it: ``gc.collect()``
    inside puts only the test's own unreachable objects in ``gc.garbage``.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    gc.collect()
    gc.garbage.clear()
    held = gc.get_objects()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield
    finally:
        del held
        gc.set_debug(0)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()
