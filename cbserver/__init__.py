"""cbserver: a WEB callback server for VoIP operators, built on Twisted."""

__version__ = "0.1.0"
