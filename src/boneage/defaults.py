"""Defaults that the library and the command line share, in a module light enough for ``--help``."""

# Images per model call (the batch size measured in docs/benchmarks.md).
BATCH_SIZE = 16

# The most images per model call (memory grows with it: the CLI's --batch-size, the API's batch_size,
# the training config's batch_size), as threads are bounded to 1-256.
MAX_BATCH_SIZE = 4096

# The most inputs in one model call, however batch_size x views comes to: DenseNet121 at 100 px holds
# about 1.3 MB of activations an input in ONNX Runtime, so 4096 a call (batch 1024 x 8 views) peaked at
# 11.7 GB; 512 x 8 took 5.6 GB in calls of 4096 and 1.1 GB in calls of 256, at the same images/s
# (benchmarks/views_memory.py, docs/benchmarks.md).
MAX_MODEL_INPUTS = 256

# The most threads anything may be given: inference (--threads, ONNX Runtime), decoding
# (``predict_many(workers=...)``), training data (``workers``). 100,000 never finished starting.
MAX_THREADS = 256

# The most sampling grids an estimate is averaged over (``views``, ``--views``).
MAX_VIEWS = 8

# A training config, a run's config.json and state.json, a models folder's registry: a few KB each.
MAX_CONFIG_BYTES = 1 << 20

# A run's data.json (its validation ids: 100 KB for 12,000), as evaluate --ids and export read it.
MAX_IDS_BYTES = 64 * 2**20

# A labels file (train, evaluate: id,boneage,male), read whole: 250 KB for the 12,611 RSNA radiographs.
MAX_LABELS_BYTES = 64 * 2**20
