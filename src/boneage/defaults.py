"""Defaults that the library and the command line share, in a module light enough for ``--help``."""

# Images per model call (the batch size measured in docs/benchmarks.md).
BATCH_SIZE = 16

# The most images per model call (memory grows with it: the CLI's --batch-size, the API's batch_size,
# the training config's batch_size), as threads are bounded to 1-256.
MAX_BATCH_SIZE = 4096
