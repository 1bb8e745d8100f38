"""Released GSN weight files (``*.safetensors``) and their manifest; data only, read by ``gsn_metric.weights``."""
