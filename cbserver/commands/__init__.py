"""Sub-commands of the ``cbserver`` command, one module each."""
