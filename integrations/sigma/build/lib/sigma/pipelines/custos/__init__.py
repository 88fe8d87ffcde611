"""Sigma's Linux log sources mapped onto Custos events (canonical JSON, flattened)."""
from .custos import CUSTOS_FIELDS, custos_pipeline

# Found by pySigma's plugin discovery, so `sigma convert -p custos` knows it.
pipelines = {
    "custos": custos_pipeline,
}

__all__ = ["custos_pipeline", "CUSTOS_FIELDS", "pipelines"]
