"""Library behind the report: residual graph, EAP, metrics, organisms, evaluation, pipeline."""

__version__ = "0.1.0"

import warnings

# tqdm.auto in a Jupyter kernel without ipywidgets falls back to text bars, and says so on stderr
# as the first output of every page; the text bars are what the pages want.
warnings.filterwarnings("ignore", message="IProgress not found")
