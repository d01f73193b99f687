"""The sipp carrier for tests: the same one the demo runs (``cbserver.democarrier``)."""

from cbserver.democarrier import Carrier, render, scenario

__all__ = ["Carrier", "render", "scenario"]
