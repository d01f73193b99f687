"""The sipp carrier for tests: the same one the demo runs (``cbserver.devtools.democarrier``)."""

from cbserver.devtools.democarrier import Carrier, render, scenario

__all__ = ["Carrier", "render", "scenario"]
