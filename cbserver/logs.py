"""Log observers: JSON lines for log shippers.

Use with twistd's own option: ``twistd --logger cbserver.logs.json_stdout -n cbserver ...``.
"""

import sys

from twisted.logger import jsonFileLogObserver


def json_stdout():
    """A log observer writing one JSON object per event to standard output."""
    return jsonFileLogObserver(sys.stdout, recordSeparator="")
