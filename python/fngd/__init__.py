"""fngd: PyTorch drop-in for libfngd, Fast Natural Gradient Descent (arXiv 2403.03473).

The package holds no math of its own: libfngd (loaded with ctypes, see fngd._lib) forms the
per-sample Gram matrices, solves for the coefficients, stores them by sample id and writes the
direction; this package captures layer inputs and output gradients and passes pointers.
"""

from ._lib import FNGDError, LibraryNotFoundError
from .data import IndexedDataset
from .layers import UnsupportedLayerError
from .preconditioner import FNGDPreconditioner

__all__ = ["FNGDPreconditioner", "IndexedDataset", "FNGDError", "LibraryNotFoundError",
           "UnsupportedLayerError", "library_version"]


def library_version() -> tuple[int, int, int]:
    """(major, minor, patch) of the loaded libfngd."""
    from ._handle import library_version as version
    return version()
