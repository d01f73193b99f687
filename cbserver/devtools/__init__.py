"""Developer tooling: a private PostgreSQL cluster and the demo's sipp carrier.

Not part of the product's import graph: only the CLI's development commands (``cbserver
pg``, ``cbserver demo``), the tests and the benchmarks use it (issue 12).
"""
