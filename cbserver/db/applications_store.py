"""Where a node reads the voice applications (sql/043) and the catalog change counter (sql/012)."""

from __future__ import annotations

from cbserver.db import catalog_store
from cbserver.db.tariff_loader import CHANGE_COUNTER


class PostgresApplicationSource:
    """The applications and the change counter over the pool ``db``."""

    def __init__(self, db):
        self.db = db

    def counter(self):
        """Fire with the catalog change counter (it moves with every application change)."""
        return self.db.runQuery(CHANGE_COUNTER).addCallback(lambda rows: rows[0][0] if rows else None)

    def load(self):
        """Fire with every application row, oldest first."""
        return catalog_store.transaction(self.db, catalog_store.applications)
