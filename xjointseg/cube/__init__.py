"""Multi-period ISA cubes in Zarr v3 (or v2, for GDAL: ``zarr_format=2``): a template written
once, then one region write per period and block. Writing is resumable after a kill, refuses
a different computation, and lets disjoint blocks be written by several workers or jobs at
once.

Store layout (a local path or any fsspec URL)::

    cube.zarr/
      zarr.json               root group; attrs model, model_sha256, xjointseg_version, source_items
                              (Zarr v2: .zgroup and .zattrs; arrays .zarray, chunks 0.2.5)
      isa/                    uint8 (period, y, x): 0 not ISA, 1 ISA, 255 nodata (also the fill
                              value, so a block never written reads as nodata, never as "not ISA")
      probability/            optional uint8, probability = value * 0.004, 255 nodata (CF-scaled)
      time/ y/ x/ spatial_ref coordinates; the CRS as a CF grid mapping (rioxarray, odc-geo)
      _xjointseg/             bookkeeping group; attrs: grid, block layout, variables, model
        periods/0003.json     one record per period: label, fingerprint, model, source items
        done/0003/<fp>/2.5    one marker per completed block (period 3, block row 2, column 5),
                              written after the block's data; its content is the fingerprint

Each dask block of the (rechunked) input is one Zarr shard (or one chunk when blocks are
small, and always in Zarr v2), so one task writes one object and concurrent tasks never
touch the same object.
xarray writes the template (``Dataset.to_zarr(compute=False)``) and each block
(``to_zarr(region=...)``, encoded as the store's attributes say); the bookkeeping group, the
period records and the block markers are small JSON objects of their own. Appending periods
resizes the arrays with zarr directly, in an order a kill cannot leave unreadable (see
_sync_periods): the data arrays first, the period coordinate, whose length readers take as
the number of periods, last. xarray's ``to_zarr(append_dim=...)`` grows each array in turn,
coordinate included, in no order this module controls, so a kill between two arrays could
leave a store whose periods disagree in length; and it writes the new periods' data in the
same call, where here they are written block by block, resumably.
"""

from ._read import open_cube, status
from ._write import WritePlan, plan_write, to_zarr

__all__ = ["WritePlan", "open_cube", "plan_write", "status", "to_zarr"]
