"""The ``boneage`` command line. Sub-command modules are imported only when they run."""
