"""A ``Klein`` whose requests leave no reference cycle behind.

``KleinResource.render`` builds, for every request, an errback that calls itself by name
(its error-handler recursion): the function and its closure cell form a cycle, and the cell
holds the twisted.web request, so every request, its headers, arguments, adapters and URL
mapper (about 36 tracked objects) were freed only by a garbage collection. Under a steady load
the requests answered after about a second reached the old generation and piled up there
until a full collection: 7,716 requests and 279,000 objects found by one after 170 s at 60
callbacks/s, 640 ms of CPU (docs/bench-callbacks.md, "Steady state").

``CycleFreeKlein`` returns each endpoint's result through a ``Deferred`` that remembers the
errbacks Klein chains on it; once the request has finished and that chain has run, it empties
the closure cell by which such an errback refers to itself. Klein's errback only recurses
while the request is unfinished, so nothing calls through the emptied cell.
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.internet.defer import Deferred, maybeDeferred


def forget_self_references(function) -> None:
    """Empty each closure cell of ``function`` that holds ``function`` itself."""
    for cell in getattr(function, "__closure__", None) or ():
        try:
            if cell.cell_contents is function:
                cell.cell_contents = None
        except ValueError:      # an empty cell
            continue


class _Chained(Deferred):
    """A ``Deferred`` that remembers the errbacks added to it, to forget their self-loops."""

    def __init__(self, canceller=None):
        super().__init__(canceller)
        self.errbacks: list = []

    def addErrback(self, errback, *args: Any, **kwargs: Any):  # noqa: N802 - Twisted API
        """As ``Deferred.addErrback``; the errback is remembered."""
        self.errbacks.append(errback)
        return super().addErrback(errback, *args, **kwargs)

    def forget(self, result):
        """Last in the chain: break the remembered errbacks' self-reference cycles."""
        errbacks, self.errbacks = self.errbacks, []
        for errback in errbacks:
            forget_self_references(errback)
        return result

    def forget_at_end(self, _finished) -> None:
        """The request finished: forget the loops once the rest of the chain has run.

        Returns None, not this Deferred, so the request's ``notifyFinish`` chain does not
        wait on (and take the result of) Klein's chain.
        """
        self.addBoth(self.forget)


class CycleFreeKlein(Klein):
    """``Klein`` whose endpoints' results go through ``_Chained`` (see the module docstring)."""

    def execute_endpoint(self, endpoint: str, request, *args: Any, **kwargs: Any):
        """Run the endpoint as Klein does; break the render's cycles once the request is done."""
        result = maybeDeferred(super().execute_endpoint, endpoint, request, *args, **kwargs)
        out = _Chained(lambda _: result.cancel())
        result.chainDeferred(out)
        # When the request finishes, the rest of Klein's chain is still to run (the callback
        # that finished it is on it): forget the loops after that, at the chain's end.
        request.notifyFinish().addBoth(out.forget_at_end)
        return out
