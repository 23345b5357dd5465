"""Defaults that the library and the command line share, in a module light enough for ``--help``."""

# Images per model call (the batch size measured in docs/benchmarks.md).
BATCH_SIZE = 16
