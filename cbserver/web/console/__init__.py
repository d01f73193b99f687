"""The operator's console: the admin web UI served at ``/ui/`` on the admin endpoint."""
