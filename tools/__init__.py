"""Scripts run on purpose: training, calibration, galleries.

Run them from the repository root as modules (``python -m tools.train_style``) or with
the root on ``PYTHONPATH``; tests import them as ``tools.*``.
"""
