"""Retraining GSN on human-rated data (optional: ``pip install "gsn-metric[train]"``).

Nothing in the scoring path imports this package.
"""
