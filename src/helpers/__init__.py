"""Library behind the report: residual graph, EAP, metrics, organisms, evaluation, pipeline."""

__version__ = "0.1.0"
