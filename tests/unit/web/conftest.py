"""Fixtures shared by the web unit tests."""

from __future__ import annotations

import pytest
from twisted.logger import globalLogPublisher


@pytest.fixture
def logged():
    """Every log event emitted while the test runs, in order."""
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)
