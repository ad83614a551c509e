"""Library behind the report: residual graph, EAP, metrics, organisms, evaluation, pipeline."""

import warnings

# In a Jupyter kernel without ipywidgets, tqdm.auto warns once and falls back to a text bar (which
# the book drops with the rest of stderr). Filtered before any submodule imports tqdm.auto.
warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")

__version__ = "0.1.0"

import warnings

# tqdm.auto in a Jupyter kernel without ipywidgets falls back to text bars, and says so on stderr
# as the first output of every page; the text bars are what the pages want.
warnings.filterwarnings("ignore", message="IProgress not found")
