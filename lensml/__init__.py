"""lensml: multilingual enhancement of LLMs via language subspaces (LENS)."""

from lensml.errors import LensError

__version__ = "0.1.0"
__all__ = ["LensError", "__version__"]
