"""The web side: the callback page, the JSON API, the admin API, health and metrics."""
