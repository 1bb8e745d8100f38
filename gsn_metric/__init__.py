"""gsn-metric: the Gradient Siamese Network (GSN) full-reference image-quality metric for PyTorch.

>>> import gsn_metric
>>> metric = gsn_metric.GSNScore(weights="path/to/gsn.safetensors")
>>> scores = metric(ref, dist)          # N×3×H×W in [0, 1] → N scores, higher = better
"""

from ._version import __version__
from .loss import GSNLoss
from .metric import GSNScore, gsn
from .weights import list_weights

__all__ = ["GSNLoss", "GSNMetric", "GSNScore", "__version__", "gsn", "list_weights"]


def __getattr__(name: str):
    # GSNMetric needs the optional torchmetrics: imported when asked for, so `import gsn_metric` never does.
    if name == "GSNMetric":
        try:
            from .torchmetrics_adapter import GSNMetric
        except ModuleNotFoundError as err:
            if err.name != "torchmetrics":
                raise
            raise ImportError('gsn_metric.GSNMetric needs torchmetrics: pip install "gsn-metric[torchmetrics]"') \
                from None
        return GSNMetric
    raise AttributeError(f"module 'gsn_metric' has no attribute {name!r}")
