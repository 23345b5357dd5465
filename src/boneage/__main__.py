"""``python -m boneage``: the command line, where the ``boneage`` script is not installed (e.g. a
GPU box that runs the source tree)."""

import sys

from boneage.cli.main import main

sys.exit(main())
