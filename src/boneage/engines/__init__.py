"""Where a batch of radiographs is scored when one machine is not enough.

The local engine is :meth:`boneage.BoneAgeEstimator.predict_many`; :mod:`boneage.engines.ray` runs
the same job on Ray Data (extra: ray). Each engine is imported only when it is asked for, so
``import boneage`` never pulls in a cluster framework.
"""
