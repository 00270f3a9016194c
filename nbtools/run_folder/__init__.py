"""One run folder: its lifecycle (``lifecycle``: check, lock, begin, finish or fail) and its record
(``record``: run.json, the heartbeat, provenance), written by rank 0 of one training run.

Listing many runs for the notebooks and the CLI is a read-only report over folders, and lives in
``nbtools.runs``; this package is the writer side of one folder.
"""
