"""Library behind the report: residual graph, EAP, metrics, organisms, evaluation, pipeline."""

__version__ = "0.1.0"

# The organisms register their task, prompt format, grader and `organism:` model references with
# the generic layers (which import nothing from them): importing `helpers` makes them known.
from helpers.organisms import task as _organisms_task  # noqa: E402, F401
