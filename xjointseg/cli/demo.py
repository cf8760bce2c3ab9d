"""The whole pipeline on the bundled real Sentinel-2 scene, as ``xjointseg demo`` runs it.

odc-stac load -> ``segment`` at 1 m -> Zarr cube -> Cloud-Optimized GeoTIFF -> PNG figures ->
a summary. Everything lands in one folder (``--out``)::

    isa.zarr/               the 1 m ISA cube (uint8, 0 / 1 / 255 nodata), resumable
    isa_1m.tif              the same map as a COG with overviews, for GIS tools
    input_rgb.png           the Sentinel-2 input (10 m, true colour)
    isa_1m.png              the 1 m map: whole scene, and a 600 m window at full resolution
    isa_fraction_10m.png    ISA fraction per 10 m pixel (comparable with 10 m products)
    summary.json            the numbers the command prints

Running again into the same folder is safe: the cube resumes (blocks already written are
kept, so an interrupted run finishes where it stopped and a complete one computes nothing),
and the COG, figures and summary are rewritten. If the cube there was made by another model
or settings, it is replaced; a folder named ``isa.zarr`` that is not an xjointseg cube is
never deleted, nor is a summary, COG or figure of those names that xjointseg did not write
(the demo stops with an error instead, before any work).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .._version import __version__
from ..errors import (
    OutputExistsError,
    StorePathError,
)
from ..schema import NODATA

__all__ = ["DemoResult", "run_demo"]

SCENE = "Sentinel-2A L1C, 16 Feb 2017, Havelland west of Potsdam (33UUU), 3.84 x 3.84 km"
ATTRIBUTION = "Contains modified Copernicus Sentinel data 2017"
ZOOM_M = 600  # side of the full-resolution window in the 1 m figure


@dataclass
class DemoResult:
    """What :func:`run_demo` wrote and measured (also saved as ``summary.json``)."""

    out: Path
    cube: Path
    cog: Path
    figures: dict[str, Path]
    summary: Path
    model: str
    model_sha256: str
    device: str
    period: str
    isa_km2: float
    valid_km2: float
    isa_share: float
    pixels: int  # 1 m pixels segmented and written in this run (0: the cube was complete)
    seconds: float  # wall time of segmenting and writing the cube in this run
    pixels_per_second: float | None  # None when nothing was computed
    resumed: bool  # a cube of the same computation was there: its blocks were kept
    replaced: bool  # a cube of another model or settings was there and was replaced
    grid: dict = field(default_factory=dict)  # shape, crs, resolution, bounds of the 1 m map

    def to_json(self) -> dict:
        d = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()} | {
            "figures": {k: str(v) for k, v in self.figures.items()}
        }


SOFTWARE = f"xjointseg {__version__}"  # marks the figures and summary the demo writes
FIGURES = ("input_rgb.png", "isa_1m.png", "isa_fraction_10m.png")


def _own_png(path: Path) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return str(img.info.get("Software", "")).startswith("xjointseg")
    except (OSError, UnidentifiedImageError):
        return False


def _own_summary(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    if not isinstance(data, dict):
        return False
    # summaries from before the "software" key carry these
    return str(data.get("software", "")).startswith("xjointseg") or {
        "cube",
        "cog",
        "figures",
        "model_sha256",
        "summary",
    } <= set(data)


def _check_out(out: Path) -> None:
    """Refuse before any work when --out holds files the demo would replace but did not write."""
    from ..export import is_own_cog
    from ..paths import check_writable

    if out.exists() and not out.is_dir():
        raise StorePathError(f"{out} is a file: --out must be a folder (it is created)")
    check_writable(out / "summary.json")
    owners = {"summary.json": _own_summary, "isa_1m.tif": is_own_cog}
    owners |= {name: _own_png for name in FIGURES}
    foreign = [
        name for name, own in owners.items() if (out / name).exists() and not own(out / name)
    ]
    if foreign:
        raise OutputExistsError(
            f"{out} holds {', '.join(foreign)}, not written by xjointseg: the demo never "
            "replaces files it did not create. Pick another --out, or move them away"
        )


def _rgb(ds) -> np.ndarray:
    """True-colour image of the first period: a fixed stretch of L1C DN, gamma 0.8."""
    bands = [ds[b].isel(time=0).values.astype(np.float32) for b in ("red", "green", "blue")]
    rgb = np.stack(bands, -1)
    valid = np.isfinite(rgb).all(-1) & (rgb > 0).any(-1)
    rgb = np.clip((np.nan_to_num(rgb) - 300.0) / 2200.0, 0, 1) ** 0.8
    return np.where(valid[..., None], rgb, 0.8)


def _zoom_window(frac: np.ndarray, cells: int) -> tuple[int, int]:
    """Top-left 10 m cell of the ``cells`` x ``cells`` window with the most mixed 10 m pixels.

    Mixed pixels (part ISA, part not) are where a 1 m map says more than a 10 m one.
    """
    f = np.nan_to_num(frac.astype(np.float64))
    f = f * (1.0 - f)
    c = np.pad(f.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = c[cells:, cells:] - c[:-cells, cells:] - c[cells:, :-cells] + c[:-cells, :-cells]
    iy, ix = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(iy), int(ix)


def _plain(*axes) -> None:
    for ax in axes:  # full metre coordinates, not "1e6" offsets
        ax.ticklabel_format(useOffset=False, style="plain")


def _figures(ds, cube, frac, out: Path, model_name: str, placement: str) -> dict[str, Path]:
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from ..plots import extent, plot_map

    paths = {}
    scene_extent = extent(cube)

    fig = Figure(figsize=(6.5, 6), layout="constrained")
    ax = fig.add_subplot()
    # matplotlib's stubs want extent as a tuple; imshow takes any 4-sequence
    ax.imshow(_rgb(ds), extent=scene_extent, interpolation="nearest")  # type: ignore[arg-type]
    ax.set_title(f"Sentinel-2 input, 10 m, true colour\n{SCENE.split(',')[1].strip()}")
    ax.set_xlabel("x (m, EPSG:32633)")
    ax.set_ylabel("y (m)")
    ax.text(0.01, 0.01, ATTRIBUTION, transform=ax.transAxes, fontsize=7, color="w")
    _plain(ax)
    paths["input_rgb"] = out / "input_rgb.png"
    fig.savefig(paths["input_rgb"], dpi=110, metadata={"Software": SOFTWARE})

    # the 1 m map: the whole scene (display pixels) and one window at full resolution
    fig = Figure(figsize=(13, 6), layout="constrained")
    left, right = fig.subplots(1, 2)
    plot_map(cube, 0, ax=left)
    left.set_title(f"Impervious surface, whole scene ({model_name})")
    cells = ZOOM_M // 10
    iy, ix = _zoom_window(frac.values[0], cells)
    y0, x0 = iy * 10, ix * 10
    window = cube.isel(time=0, y=slice(y0, y0 + ZOOM_M), x=slice(x0, x0 + ZOOM_M))
    win_extent = extent(window)
    colours = ListedColormap(["#ebebeb", "#c81e2d", "#9a9a9a"])
    codes = window.values
    shown = np.where(codes == NODATA, 2, codes)
    right.imshow(shown, extent=win_extent, cmap=colours, vmin=0, vmax=2, interpolation="nearest")
    right.set_title(
        f"{ZOOM_M} m x {ZOOM_M} m at full 1 m resolution (red: ISA)\n{placement}", fontsize=9
    )
    right.set_xlabel("x (m)")
    right.set_ylabel("y (m)")
    left.add_patch(
        Rectangle(
            (win_extent[0], win_extent[2]),
            ZOOM_M,
            ZOOM_M,
            fill=False,
            edgecolor="#2166ac",
            linewidth=1.5,
        )
    )
    _plain(left, right)
    paths["isa_1m"] = out / "isa_1m.png"
    fig.savefig(paths["isa_1m"], dpi=110, metadata={"Software": SOFTWARE})

    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(
        np.ma.masked_invalid(frac.values[0]),
        extent=extent(frac),  # type: ignore[arg-type]  # matplotlib's stubs: tuple only
        cmap="magma_r",
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )
    fig.colorbar(im, ax=ax, shrink=0.8, label="ISA fraction of the 10 m pixel")
    ax.set_title("ISA fraction at 10 m (from the 1 m map)")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    _plain(ax)
    paths["isa_fraction_10m"] = out / "isa_fraction_10m.png"
    fig.savefig(paths["isa_fraction_10m"], dpi=110, metadata={"Software": SOFTWARE})
    return paths


def run_demo(
    out: str | Path = "xjointseg-demo",
    *,
    model: str = "jointseg",
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> DemoResult:
    """Run the whole pipeline on the bundled real Sentinel-2 scene and write every output.

    Parameters
    ----------
    out : str or path
        Folder for the outputs (created). Re-running into it resumes the cube and rewrites
        the COG, figures and summary; a cube made by another model or settings is replaced.
        Files of those names that xjointseg did not write are never replaced (an error
        says so before any work).
    model : str
        A registered model name (``"jointseg"``, ``"bilinear"``) or a weights file path.
    device : str
        ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``...
    progress : bool
        Progress bars (on stderr) while segmenting and exporting.
    log : callable, optional
        Receives one line per step (``print`` by default; None: silent).

    Returns
    -------
    DemoResult
        Paths of the outputs and the numbers of the summary.

    Raises
    ------
    UnknownModelError, WeightsError, OptionError
        The model or device cannot be used.
    CubeMismatchError
        ``out/isa.zarr`` exists and is not an xjointseg cube.
    OutputExistsError
        ``out`` holds a summary, COG or figure that xjointseg did not write.
    StorePathError
        ``out`` is a file, or cannot be written.

    Examples
    --------
    >>> import tempfile
    >>> from xjointseg.cli.demo import run_demo
    >>> from xjointseg.testing import toy_weights
    >>> res = run_demo(tempfile.mkdtemp(), model=str(toy_weights()), log=None, progress=False)
    >>> res.cog.name, sorted(res.figures), res.grid["shape"]
    ('isa_1m.tif', ['input_rgb', 'isa_1m', 'isa_fraction_10m'], [3840, 3840])
    """

    from ..data import demo_item_path, load_demo_scene
    from ..engine import segment
    from ..models.model import load_model, placement_note
    from .pipeline import write_cube

    say = log or (lambda _: None)
    out = Path(out).expanduser().absolute()
    _check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    store, cog = out / "isa.zarr", out / "isa_1m.tif"

    say(f"1/5 load   {SCENE} (odc-stac, {demo_item_path().name})")
    ds = load_demo_scene()
    m = load_model(model, device=device)
    isa = segment(ds, model=m, device=device)
    say(
        f"2/5 segment {dict(ds.sizes)} at 10 m -> {isa.shape[1]} x {isa.shape[2]} px at 1 m "
        f"with {m.name} (sha256 {m.sha256[:12]}) on {m.device}"
    )
    if m.device.type == "cpu" and m.halo > 10:  # a real network, not a toy
        say("    (on a CPU this takes minutes; on a GPU, --device cuda, seconds)")
    # the demo's own folder: a cube of another model there is replaced, nothing else is
    run = write_cube(
        isa,
        store,
        replace_own=True,
        progress=progress,
        on_replace=lambda: say(f"    {store} was made by another model or settings: replacing it"),
    )
    cube, pixels, seconds = run.cube, run.pixels, run.seconds
    rate = pixels / seconds if pixels and seconds > 0 else None
    say(
        f"3/5 cube   {store} ("
        + (f"{pixels / 1e6:.1f} Mpx written in {seconds:.1f} s" if pixels else "complete already")
        + ")"
    )

    cube.isa.to_cog(cog, overwrite=True, progress=progress)
    say(f"4/5 COG    {cog}")

    frac = cube.isa.fraction(10)
    figures = _figures(ds, cube, frac, out, m.name, placement_note(m))
    say(f"5/5 plots  {', '.join(p.name for p in figures.values())}")

    table = cube.isa.area()
    row = table.iloc[0]
    gbox = cube.odc.geobox
    result = DemoResult(
        out=out,
        cube=store,
        cog=cog,
        figures=figures,
        summary=out / "summary.json",
        model=m.name,
        model_sha256=m.sha256,
        device=str(m.device),
        period=str(np.datetime_as_string(cube.time.values[0], unit="D")),
        isa_km2=float(row["isa_km2"]),
        valid_km2=float(row["valid_km2"]),
        isa_share=float(row["isa_share"]),
        pixels=pixels,
        seconds=round(seconds, 3),
        pixels_per_second=rate,
        resumed=run.resumed,
        replaced=run.replaced,
        grid={
            "shape": list(gbox.shape),
            "crs": f"EPSG:{gbox.crs.epsg}" if gbox.crs.epsg else gbox.crs.to_wkt(),
            "resolution": float(abs(gbox.resolution.x)),
            "bounds": list(gbox.extent.boundingbox),
        },
    )
    summary = result.to_json() | {"software": SOFTWARE}
    result.summary.write_text(json.dumps(summary, indent=1) + "\n")
    return result
