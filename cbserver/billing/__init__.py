"""Billing: catalog, accounts, rating arithmetic, authorization and the xDR writer."""
