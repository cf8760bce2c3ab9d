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


class ValueRangeError(InputError):
    """The values are not Sentinel-2 DN (reflectance x 10000): reflectance 0..1, 8-bit RGB."""


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
    "ValueRangeError",
    "ModelError",
    "UnknownModelError",
    "WeightsError",
    "PredictInputError",
    "OptionError",
]


# --- Sentinel-2 loading -----------------------------------------------------------------


class CatalogError(XJointSegError, OSError):
    """A STAC catalog or API cannot be reached or read, or is not STAC."""


class NoItemsError(XJointSegError, LookupError):
    """No Sentinel-2 item matches a period, the area and the filters."""


class BBoxError(XJointSegError, ValueError):
    """The area of interest is malformed, not in longitude/latitude, or out of range."""


class InvalidPeriodError(OptionError):
    """A period cannot be understood (bad year or date, end before start, duplicate)."""


class MissingBandError(BandError):
    """A STAC item has no asset for a requested band."""


class ProjectionError(XJointSegError, ValueError):
    """An item lacks the projection metadata (CRS, shape, transform) needed to place it."""


class MixedCRSError(CRSError):
    """The items come in several CRSs and no target CRS was given."""


class StagingStoreExistsError(XJointSegError, FileExistsError):
    """The Zarr store for staged composites already exists."""


__all__ += [
    "CatalogError",
    "NoItemsError",
    "BBoxError",
    "InvalidPeriodError",
    "MissingBandError",
    "ProjectionError",
    "MixedCRSError",
    "StagingStoreExistsError",
]


# --- cubes and change -------------------------------------------------------------------


class CubeError(XJointSegError):
    """A multi-period ISA cube cannot be written, opened or analysed as asked."""


class CubeInputError(CubeError, ValueError):
    """What was handed to ``to_zarr`` or an analysis is not an ISA map (dtype, dims, CRS)."""


class NotACubeError(CubeError, FileNotFoundError):
    """The store does not exist, or is not a cube written by xjointseg."""


class CubeMismatchError(CubeError, FileExistsError):
    """The store exists for another grid, CRS, block layout, variables or model."""


class PeriodConflictError(CubeError, FileExistsError):
    """A period in the store was written (or is being written) by a different computation."""


class FingerprintError(CubeError, ValueError):
    """The computation cannot be fingerprinted deterministically (pass ``fingerprint=``)."""


class NotEnoughPeriodsError(CubeError, ValueError):
    """A change analysis needs at least two periods."""


class RegionError(XJointSegError, ValueError):
    """Regions for an analysis are malformed (not polygons, empty, label raster off-grid)."""


class RegionCRSError(RegionError):
    """The regions have no CRS, so they cannot be placed on the cube's grid."""


class RegionOutsideError(RegionError):
    """No region (or no part of a reference raster) overlaps the cube."""


class ReferenceRasterError(XJointSegError, OSError):
    """A reference raster (e.g. a WorldCover tile) cannot be read."""


class ChangeInputError(XJointSegError, ValueError):
    """Two maps cannot be compared as given (grids, models, images of other dates)."""


class PeriodOrderError(ChangeInputError):
    """``before`` is not earlier than ``after``."""


class MetricInputError(XJointSegError, ValueError):
    """Arrays or counts a score cannot be computed from (see :mod:`xjointseg.metrics`)."""


class FactorError(OptionError):
    """A coarsening factor that does not divide the grid (or is not a positive integer)."""


__all__ += [
    "CubeError",
    "CubeInputError",
    "NotACubeError",
    "CubeMismatchError",
    "PeriodConflictError",
    "FingerprintError",
    "NotEnoughPeriodsError",
    "RegionError",
    "RegionCRSError",
    "RegionOutsideError",
    "ReferenceRasterError",
    "FactorError",
    "ChangeInputError",
    "MetricInputError",
    "PeriodOrderError",
]


# --- files --------------------------------------------------------------------------------


class OutputExistsError(XJointSegError, FileExistsError):
    """A file or folder that xjointseg did not create is where it would write."""


class StorePathError(XJointSegError, OSError):
    """A store or output path cannot be used: it is a file, or cannot be written."""


__all__ += ["OutputExistsError", "StorePathError"]
