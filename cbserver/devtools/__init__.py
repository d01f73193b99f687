"""Developer tooling: a private PostgreSQL cluster, the demo's sipp carrier and its catalog
with accounts added (``democatalog``).

Not part of the product's import graph: only the CLI's development commands (``cbserver
pg``, ``cbserver demo``), the tests and the benchmarks use it (issue 12).
"""
