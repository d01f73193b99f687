"""The cluster's staleness rule has one value: crash recovery's constant, the setting's
default and the console's agree (docs/deploy.md "Which processes are alive")."""

from __future__ import annotations

from cbserver.callback import console, recovery
from cbserver.config import NODE_STALE_AFTER, RecoveryConfig
from cbserver.web.admin_nodes import node_expiry


def test_every_default_of_the_staleness_rule_is_the_same_number():
    # recovery.STALE_AFTER is owned by the recovery module; this catches a drift.
    assert recovery.STALE_AFTER == NODE_STALE_AFTER
    assert RecoveryConfig().stale_after == NODE_STALE_AFTER
    assert console.NODE_EXPIRY == NODE_STALE_AFTER == node_expiry(None)
