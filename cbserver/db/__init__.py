"""PostgreSQL: the txpostgres pool service, migrations and the local cluster helper."""
