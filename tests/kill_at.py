"""``python tests/kill_at.py POINT nbtools-train-args...``: run ``nbtools train`` and die at a named moment.

The process ends with ``os._exit(137)`` — no ``finally``, no handler, the state ``kill -9`` leaves —
exactly when the named write starts, so the test is decided by the moment, not by timing:

* ``final-adapter``: the final adapter is saved under its temporary name, just before it is swapped in.
"""

from __future__ import annotations

import os
import sys

from nbtools import atomic


def _die_when(predicate):
    real = atomic.swap_in

    def swap_in(staging, path):
        if predicate(path):
            os._exit(137)
        return real(staging, path)

    atomic.swap_in = swap_in


POINTS = {"final-adapter": lambda: _die_when(lambda path: path.name == "adapter")}

if __name__ == "__main__":
    POINTS[sys.argv[1]]()
    from nbtools.__main__ import main

    sys.exit(main(["train", *sys.argv[2:]]))
