"""gsn-metric: the Gradient Siamese Network (GSN) full-reference image-quality metric for PyTorch.

>>> import gsn_metric
>>> metric = gsn_metric.GSNScore(weights="path/to/gsn.safetensors")
>>> scores = metric(ref, dist)          # N×3×H×W in [0, 1] → N scores, higher = better
"""

from ._version import __version__
from .loss import GSNLoss
from .metric import GSNScore, gsn
from .weights import list_weights

__all__ = ["GSNLoss", "GSNScore", "__version__", "gsn", "list_weights"]
