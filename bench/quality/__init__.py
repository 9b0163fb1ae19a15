"""The CoE ablation table on real data: arm specs, the runner, baselines, bootstrap and report.

Pure parts (``stats``, ``baselines``, ``report``) import only numpy/scikit-learn and the runtime's
ground-floor modules; ``run`` drives the local executor.
"""
