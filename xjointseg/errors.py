"""Every failure a user can cause raises a subclass of :class:`XJointSegError`.

Each subclass also derives from the built-in exception a Python user would expect
(``ValueError``, ``KeyError``...), so ``except ValueError`` keeps working. Messages say
what was wrong and what to do about it.
"""

from __future__ import annotations


class XJointSegError(Exception):
    """Base class of every error a user of xjointseg can cause."""


# --- input data -------------------------------------------------------------------------


class InputError(XJointSegError, ValueError):
    """The input imagery cannot be segmented as given."""


class BandError(InputError):
    """A band the model needs is missing, or the band dimension is malformed."""


class DimensionError(InputError):
    """The input has dimensions other than ``(y, x)`` or ``(time, y, x)`` (+ ``band``)."""


class CRSError(InputError):
    """The input has no CRS, or a geographic (degree) CRS where metres are needed."""


class GridError(InputError):
    """The input grid is not a regular, north-up, axis-aligned raster of the expected size."""


class DTypeError(InputError, TypeError):
    """The input has a dtype that cannot hold reflectance values (bool, complex, strings...)."""


class ChunkError(InputError):
    """The dask chunking cannot be used (band axis chunked, chunks that cannot hold the halo)."""


class EmptyInputError(InputError):
    """The input has no pixels."""


# --- models and weights -----------------------------------------------------------------


class ModelError(XJointSegError):
    """A model cannot be found, loaded or used."""


class UnknownModelError(ModelError, KeyError):
    """The model name is neither a registered model nor an existing weights file."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class WeightsError(ModelError):
    """A weights file is corrupt, fails its checksum, or does not match the architecture."""


class PredictInputError(ModelError, ValueError):
    """A batch handed to ``Model.predict`` has the wrong shape, band count or dtype."""


# --- options ----------------------------------------------------------------------------


class OptionError(XJointSegError, ValueError):
    """An option has a value outside what it accepts (e.g. an unknown output kind)."""


__all__ = [
    "XJointSegError",
    "InputError",
    "BandError",
    "DimensionError",
    "CRSError",
    "GridError",
    "DTypeError",
    "ChunkError",
    "EmptyInputError",
    "ModelError",
    "UnknownModelError",
    "WeightsError",
    "PredictInputError",
    "OptionError",
]
