"""Loaded at start-up by a Python whose PYTHONPATH names this folder: installs
``bench/reactor_steps.py``'s probe when ``CBS_REACTOR_STEPS`` names an output file."""

import os
import sys

if os.environ.get("CBS_REACTOR_STEPS"):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import reactor_steps

    reactor_steps.install(os.environ["CBS_REACTOR_STEPS"])
