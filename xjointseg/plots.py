"""Plots of ISA cubes and change tables, returned as matplotlib figures to compose further.

Maps are reduced lazily to at most ``max_pixels`` a side before anything is drawn: a 1 m
scene is never computed whole for a picture. matplotlib is imported only when plotting.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from .change import first_period
from .change.maps import coarse_share
from .errors import OptionError
from .schema import NEVER, NODATA, isa_map_of, period_labels, select_period

__all__ = ["plot_first_period", "plot_growth", "plot_growth_classes", "plot_map"]

#: Colours of the expansion classes of :func:`xjointseg.change.growth`.
CLASS_COLOURS = {
    "rapid": "#b2182b",
    "moderate": "#ef8a62",
    "saturated": "#999999",
    "declining": "#2166ac",
    "new": "#762a83",
    "none": "#f7f7f7",
    "uncertain": "#ffffff",
}


def _axes(ax):
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes

    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 6))
        return fig, ax
    if not isinstance(ax, Axes):
        raise OptionError(f"ax must be matplotlib Axes (e.g. plt.subplots()[1]), not {ax!r:.60}")
    return ax.figure, ax


def _check_style(cmap: Any, ax: Any) -> None:
    """The drawing options, checked before a map is read."""
    _colormap(cmap)
    if ax is not None:
        _axes(ax)


def _colormap(cmap: Any):
    import matplotlib as mpl

    if not isinstance(cmap, str) or cmap not in mpl.colormaps:
        raise OptionError(
            f"cmap must be the name of a matplotlib colormap (e.g. 'viridis'), not {cmap!r}"
        )
    return mpl.colormaps[cmap]


def extent(da: xr.DataArray) -> list[float]:
    """``[left, right, bottom, top]`` of a georeferenced array, for ``imshow(extent=...)``."""
    box = da.odc.geobox.extent.boundingbox
    return [box.left, box.right, box.bottom, box.top]


def _fmt(label: Any) -> str:
    return str(label)[:10] if isinstance(label, pd.Timestamp) else str(label)


def _step(shape: tuple[int, ...], max_pixels: int) -> int:
    if (
        isinstance(max_pixels, bool | np.bool_)
        or not isinstance(max_pixels, int | np.integer)
        or max_pixels < 1
    ):
        raise OptionError(f"max_pixels must be a whole number >= 1, got {max_pixels!r}")
    return max(1, math.ceil(max(shape) / max_pixels))


def plot_map(
    cube: xr.DataArray | xr.Dataset,
    period: int | Any = -1,
    *,
    ax=None,
    max_pixels: int = 1200,
    cmap: str = "magma_r",
):
    """Map the ISA of one period (as the ISA fraction of display pixels).

    Parameters
    ----------
    cube : xarray.DataArray or Dataset
        uint8 ``(period, y, x)`` ISA cube.
    period : int or label
        Position (``-1``: the last) or label of the period.
    ax : matplotlib Axes, optional
        Where to draw; a new figure by default.
    max_pixels : int
        At most this many display pixels a side; each shows the ISA share of the 1 m pixels
        it covers (grey where all are nodata).
    cmap : str
        Colour map of the ISA share.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> from xjointseg.plots import plot_map
    >>> grid = GeoBox.from_bbox((0, 0, 200, 200), "EPSG:32633", resolution=1)
    >>> cube = xr_zeros(grid, "uint8", time=["2017-01-01"])
    >>> fig = plot_map(cube)
    """
    cube = isa_map_of(cube)
    one = select_period(cube, period)
    step = _step(one.shape, max_pixels)
    _check_style(cmap, ax)
    # whole display pixels only: the last (step - 1) rows/columns at most are not drawn
    ydim, xdim = one.dims
    one = one.isel({ydim: slice(0, one.shape[0] // step * step)})
    one = one.isel({xdim: slice(0, one.shape[1] // step * step)})
    data = one.data if isinstance(one.data, da.Array) else da.from_array(one.values)
    share = coarse_share(data, step).compute()
    fig, ax = _axes(ax)

    colours = _colormap(cmap).with_extremes(bad="#cccccc")
    im = ax.imshow(
        np.ma.masked_invalid(share),
        extent=extent(one),
        cmap=colours,
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )
    fig.colorbar(im, ax=ax, label="ISA share" if step > 1 else "ISA", shrink=0.8)
    by_position = isinstance(period, int | np.integer)
    label = _fmt(period_labels(cube)[int(period)] if by_position else period)
    ax.set_title(f"Impervious surface {label}" + (f" ({step} m display pixels)" * (step > 1)))
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    return fig


def plot_first_period(
    cube: xr.DataArray | xr.Dataset,
    *,
    ax=None,
    max_pixels: int = 1200,
    gaps: Literal["nodata", "ignore"] = "nodata",
    cmap: str = "viridis",
):
    """Map the period in which each pixel first became ISA (a change map).

    Parameters
    ----------
    cube : xarray.DataArray or Dataset
        uint8 ``(period, y, x)`` ISA cube.
    ax : matplotlib Axes, optional
        Where to draw; a new figure by default.
    max_pixels : int
        At most this many display pixels a side (every n-th 1 m pixel is shown: classes are
        not averaged).
    gaps : {"nodata", "ignore"}
        As in :func:`xjointseg.change.first_period`.
    cmap : str
        Colour map for the periods (never ISA: white, nodata: grey).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> from xjointseg.plots import plot_first_period
    >>> grid = GeoBox.from_bbox((0, 0, 200, 200), "EPSG:32633", resolution=1)
    >>> cube = xr_zeros(grid, "uint8", time=["2017-01-01", "2019-01-01"])
    >>> fig = plot_first_period(cube)
    """
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    fp = first_period(cube, gaps=gaps)
    step = _step(fp.shape, max_pixels)
    _check_style(cmap, ax)
    codes = fp[::step, ::step].values
    labels = fp.attrs["periods"]
    n = len(labels)
    base = _colormap(cmap).resampled(max(n, 2))
    colours = [base(i) for i in range(n)] + ["#ffffff", "#bbbbbb"]
    shown = np.where(codes == NEVER, n, np.where(codes == NODATA, n + 1, codes))
    fig, ax = _axes(ax)
    ax.imshow(
        shown,
        extent=extent(fp),
        cmap=ListedColormap(colours),
        norm=BoundaryNorm(np.arange(n + 3) - 0.5, n + 2),
        interpolation="nearest",
    )
    names = [f"ISA by {labels[0]}", *(f"new in {lb}" for lb in labels[1:]), "never", "nodata"]
    patches = [
        Patch(facecolor=c, edgecolor="k", label=t) for c, t in zip(colours, names, strict=True)
    ]
    ax.legend(
        handles=patches,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        frameon=False,
    )
    ax.set_title("First period as impervious surface")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    fig.tight_layout()
    return fig


def _check_table(table: Any, maker: str, keys: tuple[str, ...] = ()) -> None:
    if not isinstance(table, pd.DataFrame):
        raise OptionError(
            f"table must be the pandas DataFrame that {maker} returns, not {type(table).__name__}"
        )
    if keys and set(keys) <= set(table.columns) and table.duplicated(list(keys)).any():
        twice = table.loc[table.duplicated(list(keys)), "region"].unique().tolist()
        raise OptionError(
            f"regions {twice[:5]} appear more than once (polygons that share a name): a "
            "figure needs one line or colour per region; name each region once (another "
            "name_column), or sum the table by region first"
        )


def plot_growth(table: pd.DataFrame, *, ax=None, value: str = "isa_km2"):
    """Growth curves: ISA area per period, one line per region (from :func:`area`).

    Parameters
    ----------
    table : pandas.DataFrame
        The table of :func:`xjointseg.change.area`.
    ax : matplotlib Axes, optional
        Where to draw; a new figure by default.
    value : str
        The column to draw (``"isa_km2"`` or ``"isa_share"``).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import pandas as pd
    >>> from xjointseg.plots import plot_growth
    >>> t = pd.DataFrame({"period": [2017, 2019], "region": ["a", "a"], "isa_km2": [1.0, 1.2]})
    >>> fig = plot_growth(t)
    """
    _check_table(table, "area()", ("region", "period"))
    missing = {"period", "region", value} - set(table.columns)
    if missing:
        raise OptionError(f"the table lacks {sorted(missing)}: pass the result of area()")
    fig, ax = _axes(ax)
    for region, rows in table.groupby("region", sort=False):
        ax.plot(rows["period"], rows[value], marker="o", label=str(region))
    ax.set_xlabel("period")
    ax.set_ylabel(
        {"isa_km2": "ISA (km²)", "isa_share": "ISA share of valid area"}.get(value, value)
    )
    ax.set_title("Impervious surface per region")
    if table["region"].nunique() > 1:
        ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return fig


def plot_growth_classes(
    table: pd.DataFrame,
    regions=None,
    *,
    pair: int = -1,
    name_column: str | None = None,
    ax=None,
):
    """Expansion classes per region: a map when polygons are given, else a bar chart.

    Parameters
    ----------
    table : pandas.DataFrame
        The table of :func:`xjointseg.change.growth`.
    regions : GeoDataFrame, optional
        The polygons the table was computed for: draws them coloured by class.
    pair : int
        Which consecutive pair of periods (``-1``: the last).
    name_column : str, optional
        The polygons' name column (as given to ``growth``).
    ax : matplotlib Axes, optional
        Where to draw; a new figure by default.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import pandas as pd
    >>> from xjointseg.plots import plot_growth_classes
    >>> t = pd.DataFrame({"region": ["a", "b"], "period_from": [2017] * 2,
    ...                   "period_to": [2019] * 2, "annual_rate": [0.05, 0.0],
    ...                   "expansion": ["rapid", "saturated"]})
    >>> fig = plot_growth_classes(t)
    """
    from matplotlib.patches import Patch

    _check_table(table, "growth()", ("region", "period_from", "period_to"))
    missing = {"region", "period_from", "period_to", "annual_rate", "expansion"} - set(
        table.columns
    )
    if missing:
        raise OptionError(f"the table lacks {sorted(missing)}: pass the result of growth()")
    pairs = list(table[["period_from", "period_to"]].drop_duplicates().itertuples(index=False))
    if not pairs:
        raise OptionError("the table has no rows: pass the result of growth()")
    if (
        isinstance(pair, bool | np.bool_)
        or not isinstance(pair, int | np.integer)
        or not -len(pairs) <= pair < len(pairs)
    ):
        raise OptionError(
            f"pair must be the position of a period pair, -{len(pairs)}..{len(pairs) - 1} "
            f"(the table has {len(pairs)}), not {pair!r}"
        )
    start, end = pairs[pair]
    rows = table[(table.period_from == start) & (table.period_to == end)]
    colour = [CLASS_COLOURS.get(c, "#000000") for c in rows["expansion"]]
    if regions is not None:
        import geopandas as gpd

        from .change._zonal import region_names

        if not isinstance(regions, gpd.GeoDataFrame):
            raise OptionError(
                f"regions must be the GeoDataFrame given to growth(), not {type(regions).__name__}"
            )
        names = region_names(regions, name_column)  # named as growth() named them
    fig, ax = _axes(ax)
    if regions is not None:
        by_name = dict(zip(rows["region"], colour, strict=True))
        regions.plot(color=[by_name.get(n, "#ffffff") for n in names], edgecolor="k", ax=ax)
    else:
        ax.barh([str(r) for r in rows["region"]], rows["annual_rate"] * 100, color=colour)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel("annual ISA growth (%/year)")
    present = list(dict.fromkeys(rows["expansion"]))
    ax.legend(
        handles=[
            Patch(facecolor=CLASS_COLOURS.get(c, "#000000"), edgecolor="k", label=c)
            for c in present
        ],
        frameon=False,
        loc="best",
    )
    ax.set_title(f"Urban expansion {_fmt(start)} - {_fmt(end)}")
    return fig
