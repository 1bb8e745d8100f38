"""gsn-metric (being assembled: the public API lands with images.py)."""

from ._version import __version__
