"""The segmentation engine, one level per module, each calling only the one below it:

* :mod:`.segment` — xarray: the options and the input checked, the tile and the blocks
  chosen (:func:`plan_segment`), the lazy 1 m map on the input grid zoomed 10x;
* :mod:`._dask` — dask: chunks moved onto the global tile grid, the halo exchanged between
  blocks, one task per block;
* :mod:`._blocks` — numpy: one block cut into tiles of the global grid, nodata kept out of
  the model, batches through the model.

The halo is the model's receptive field, so a block's output does not depend on where the
block boundaries fall: the result is bit-identical whatever the chunking.
"""

from .segment import SegmentPlan, default_tile, plan_segment, segment

__all__ = ["SegmentPlan", "default_tile", "plan_segment", "segment"]
