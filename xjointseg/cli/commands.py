"""The ``xjointseg`` command line: ``demo``, ``map``, ``info`` and ``train``.

Errors a user can cause print one line and exit with status 2, without a traceback.
``demo`` and ``map`` are resumable: run the same command again after an interruption and it
continues from the blocks already written.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from ..errors import BBoxError, CRSError, OptionError, UnknownModelError, XJointSegError
from ..paths import is_url

# Validation (checkpoint selection) places: a whole Dubai tile; tiles 1 and 3 are the test
# places (xjointseg.training.splits), never trained on nor used for selection. The
# Massachusetts tiles label roads only, so they train but cannot score precision.
DEFAULT_VAL_PLACES = ["dubai/tile2"]


def _info(args: argparse.Namespace) -> int:
    import dask
    import torch
    import xarray

    from .._version import __version__
    from ..models.model import registered_models

    print(f"xjointseg {__version__}")
    print(f"torch {torch.__version__}, xarray {xarray.__version__}, dask {dask.__version__}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            print(f"device cuda:{i}: {torch.cuda.get_device_name(i)}")
    print(f"device cpu: {torch.get_num_threads()} threads")
    models = registered_models()
    print("bundled models:", ", ".join(f"{k} ({v['arch']})" for k, v in models.items()) or "none")
    return 0


def _train(args: argparse.Namespace) -> int:
    from ..paths import check_writable
    from ..training.datasets import load_oscd, split_by_place
    from ..training.splits import DUBAI_SPLITS, OSCD_SPLITS
    from ..training.trainer import TrainConfig, train

    shares = args.source_shares or []
    if len({name for name, _ in shares}) < len(shares):
        raise OptionError(f"--source-share names a source twice: {shares}")
    args.source_shares = dict(shares)
    check_writable(args.out, folder=True)  # a file or a read-only folder: refused before loading
    # test places are never seen: neither in training nor in checkpoint selection
    scenes = [
        s
        for s in _training_scenes(args.data, args.vegetation_negatives)
        if s.place not in DUBAI_SPLITS["test"]
    ]
    train_scenes, val_scenes = split_by_place(scenes, args.val_places)
    real_train = real_val = None
    if args.oscd is not None:
        if not Path(args.oscd).is_dir():
            raise OptionError(f"--oscd {args.oscd} is not a folder: give the OSCD folder")
        real_train = load_oscd(args.oscd, OSCD_SPLITS["train"], args.not_built_max)
        real_val = load_oscd(args.oscd, OSCD_SPLITS["val"])
    # each training option's dest is the name of its TrainConfig field
    options = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    cfg = TrainConfig(
        **options,
        real_places=list(OSCD_SPLITS["train"]) if real_train else [],
        real_val_places=list(OSCD_SPLITS["val"]) if real_val else [],
    )
    result = train(
        train_scenes,
        val_scenes,
        cfg,
        args.out,
        real_train=real_train,
        real_val=real_val,
        progress=not args.quiet,
    )
    print(json.dumps(result, indent=2))
    return 0


def _training_scenes(specs: list[str], vegetation_negatives: float | None = None) -> list:
    """The scenes of every ``--data KIND=PATH``, each folder checked before it is loaded;
    ``vegetation_negatives`` goes to :func:`~xjointseg.training.load_massachusetts`."""
    from ..training.datasets import Scene, load_dubai, load_massachusetts

    def massachusetts(path: str) -> list[Scene]:
        return load_massachusetts(path, vegetation_negatives=vegetation_negatives)

    loaders: dict[str, Callable[[str], list[Scene]]] = {
        "dubai": load_dubai,
        "massachusetts": massachusetts,
    }
    scenes = []
    for spec in specs:
        kind, _, path = spec.partition("=")
        loader = loaders.get(kind)
        if loader is None or not path:
            raise OptionError(f"--data takes dubai=PATH or massachusetts=PATH, not {spec!r}")
        if not Path(path).expanduser().is_dir():
            raise OptionError(f"--data {spec}: {path} is not a folder: give the dataset's folder")
        if kind == "dubai" and not (Path(path).expanduser() / "classes.json").is_file():
            raise OptionError(
                f"--data {spec}: {path} has no classes.json: give the Dubai set's folder (the "
                "one holding classes.json and tile1 ... tile7)"
            )
        scenes += loader(path)
    return scenes


# --- demo and map -------------------------------------------------------------------------


def _model_source(name: str) -> str:
    """``name`` if it can name a model, else an error that lists the registered names."""
    from ..models.model import registered_models

    registry = registered_models()
    if name in registry or is_url(name) or Path(name).expanduser().is_file():
        return name
    if name in ("jointseg", "bilinear"):
        raise UnknownModelError(
            f"no trained '{name}' weights are bundled with this install yet: pass --model "
            f"PATH/TO/weights.safetensors (e.g. from `xjointseg train --arch {name} --out DIR`: "
            "DIR/best.safetensors)"
        )
    known = ", ".join(sorted(registry)) or "none in this install yet"
    raise UnknownModelError(
        f"unknown model {name!r}: not a registered name (registered: {known}) nor an existing "
        "weights file; pass --model NAME or --model PATH/TO/weights.safetensors"
    )


def _say_warnings(caught: list[warnings.WarningMessage]) -> None:
    # one line each: a CLI user needs the message, not the source line that raised it
    for w in caught:
        print(f"xjointseg: warning: {w.message}", file=sys.stderr)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    res = run_demo(
        args.out,
        model=_model_source(args.model),
        device=args.device,
        progress=not args.quiet,
    )
    rate = f"{res.pixels_per_second / 1e6:.2f} Mpx/s" if res.pixels_per_second else "n/a"
    done = (
        f"{res.pixels / 1e6:.1f} Mpx segmented in {res.seconds:.1f} s ({rate})"
        if res.pixels
        else "nothing left to compute: the cube was complete (delete it to recompute)"
    )
    print()
    share = f"{res.isa_share:.1%}"
    print(f"ISA        {res.isa_km2:.3f} km2 of {res.valid_km2:.3f} km2 valid ({share})")
    print(f"model      {res.model} (sha256 {res.model_sha256[:12]}) on {res.device}")
    print(f"speed      {done}")
    print(f"cube       {res.cube}  (xjointseg.open_cube)")
    print(f"COG        {res.cog}")
    for path in res.figures.values():
        print(f"figure     {path}")
    print(f"summary    {res.summary}")
    return 0


def _read_regions(path: Path):
    """Polygons from a vector file (GeoJSON, GeoPackage, Shapefile...), with their CRS."""
    import geopandas as gpd

    if not path.exists():
        raise OptionError(f"--geometry {path}: no such file")
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # pyogrio/fiona raise their own types for unreadable files
        raise OptionError(f"cannot read {path} as a vector file: {exc}") from None
    if len(gdf) == 0 or gdf.geometry.isna().all():
        raise OptionError(f"{path} holds no geometry")
    if gdf.crs is None:
        raise OptionError(f"{path} has no CRS: save it with one (GeoJSON is lon/lat)")
    kinds = set(gdf.geom_type.dropna())
    if not kinds <= {"Polygon", "MultiPolygon"}:
        raise OptionError(
            f"{path} holds {sorted(kinds)}: the area to map must be polygons (buffer points "
            "and lines first)"
        )
    return gdf


def _area_of_interest(args: argparse.Namespace):
    """(bbox in lon/lat, or a geometry in its own CRS, and the regions for the tables)."""
    from odc.geo.crs import CRS
    from odc.geo.geom import Geometry, box

    if args.geometry is not None:
        gdf = _read_regions(args.geometry)
        return None, Geometry(gdf.geometry.union_all(), crs=str(gdf.crs)), gdf
    try:
        crs = CRS(args.bbox_crs)
    except Exception as exc:
        raise OptionError(f"--bbox-crs {args.bbox_crs!r} is not a CRS: {exc}") from None
    minx, miny, maxx, maxy = args.bbox
    if crs.epsg == 4326:
        return tuple(args.bbox), None, None  # load_sentinel2 checks lon/lat ranges
    if not (minx < maxx and miny < maxy):
        raise BBoxError(
            f"--bbox {tuple(args.bbox)} is empty or its corners are swapped: give "
            "MINX MINY MAXX MAXY"
        )
    return None, box(minx, miny, maxx, maxy, crs=crs), None


def _check_output_crs(crs: str | None) -> None:
    """``--crs``: "utm" or a projected CRS in metres, refused before any work."""
    from ..sentinel2._options import check_output_crs

    try:
        check_output_crs(crs)
    except CRSError as err:
        raise OptionError(f"--crs: {err}") from None


def _connect(address: str):
    try:
        from distributed import Client
    except ImportError:
        raise OptionError(
            "--scheduler needs dask.distributed: pip install 'xjointseg[distributed]'"
        ) from None
    try:
        return Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise OptionError(
            f"cannot connect to the Dask scheduler at {address!r}: {exc}. Start one (e.g. "
            "`dask scheduler` and `dask worker ADDRESS`) and pass its address, "
            "e.g. tcp://127.0.0.1:8786"
        ) from None


def _cog_name(label: str) -> str:
    return f"isa_{label.replace('/', '_')}.tif"


def _check_map_outputs(args: argparse.Namespace) -> None:
    """Refuse unusable --out / --cog-dir paths and foreign COGs before any work is done."""
    from ..errors import OutputExistsError, StorePathError
    from ..export import is_own_cog
    from ..paths import check_writable
    from ..sentinel2 import parse_periods

    if not is_url(args.out):
        out = Path(args.out).expanduser().absolute()
        if out.exists() and not out.is_dir():
            raise StorePathError(f"--out {args.out} is a file: give a folder path for the cube")
        check_writable(out)
    if args.cog_dir is None:
        return
    cog_dir = args.cog_dir.expanduser().absolute()
    if cog_dir.exists() and not cog_dir.is_dir():
        raise StorePathError(f"--cog-dir {args.cog_dir} is a file: give a folder")
    check_writable(cog_dir / "isa.tif")
    names = [_cog_name(p.label) for p in parse_periods(list(args.periods))]
    foreign = [n for n in names if (cog_dir / n).exists() and not is_own_cog(cog_dir / n)]
    if foreign:
        raise OutputExistsError(
            f"--cog-dir {args.cog_dir} holds {', '.join(foreign)}, not written by xjointseg: "
            "they are never replaced. Pick another --cog-dir, or move them away"
        )


def _map(args: argparse.Namespace) -> int:
    from ..models.model import load_model
    from ..sentinel2 import load_sentinel2
    from .pipeline import write_cube

    _check_output_crs(args.crs)
    model = load_model(_model_source(args.model), device=args.device)
    bbox, geopolygon, regions = _area_of_interest(args)
    _check_map_outputs(args)
    client = _connect(args.scheduler) if args.scheduler else None
    try:
        if client is not None:
            from ..distributed import register_model

            register_model(client, model.source or args.model, device=args.device)
            print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr)
        with warnings.catch_warnings(record=True) as caught:
            ds = load_sentinel2(
                args.catalog,
                bbox=bbox,
                geopolygon=geopolygon,
                crs=args.crs,
                periods=list(args.periods),
                collection=args.collection,
                max_cloud_cover=args.max_cloud_cover,
                chunks=args.chunks,
            )
        _say_warnings(caught)
        isa = ds.isa.segment(model=model, device=args.device)
        gbox = isa.odc.geobox
        print(
            f"map        {len(ds.time)} period(s) {list(map(str, ds.period.values))}, "
            f"{gbox.shape[0]} x {gbox.shape[1]} px at 1 m in EPSG:{gbox.crs.epsg}, "
            f"model {model.name} (sha256 {model.sha256[:12]}) on {model.device}"
        )
        run = write_cube(
            isa,
            args.out,
            overwrite=args.overwrite,
            flag="--overwrite",  # the library names its keyword; here it is a flag
            client=client,
            progress=not args.quiet,
            zarr_format=args.zarr_format,
        )
        cube, pixels, seconds = run.cube, run.pixels, run.seconds
        if pixels:
            rate = pixels / seconds if seconds > 0 else float("nan")
            print(
                f"cube       {args.out}: {pixels / 1e6:.2f} Mpx segmented in {seconds:.1f} s "
                f"({rate / 1e6:.2f} Mpx/s)"
            )
        else:
            print(f"cube       {args.out}: complete already, nothing left to compute")
        table = cube.isa.area(regions)
        pdim = cube.dims[0]
        labels = [str(v) for v in cube["period" if "period" in cube.coords else pdim].values]
        table["period"] = [p for p in labels for _ in table.region.unique()]
        cols = ["period", "region", "isa_km2", "valid_km2", "isa_share"]
        print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        if cube.sizes[cube.dims[0]] > 1:
            grown = cube.isa.growth(regions)
            cols = ["region", "period_from", "period_to", "change_km2", "annual_rate", "expansion"]
            print(grown[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        if args.cog_dir is not None:
            for i, label in enumerate(labels):
                # replaces only COGs xjointseg wrote (a re-run); to_cog refuses any other file
                path = cube.isa.to_cog(
                    args.cog_dir / _cog_name(label),
                    period=i,
                    overwrite=True,
                    progress=not args.quiet,
                )
                print(f"COG        {path}")
    finally:
        if client is not None:
            client.close()
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, not {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, not {text}")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1], not {text}")
    return value


def _percent(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be a percentage in [0, 100], not {text}")
    return value


def _source_share(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    try:
        fraction = float(value)
    except ValueError:
        fraction = float("nan")
    if not name or not 0 < fraction <= 1:
        raise argparse.ArgumentTypeError(
            f"must be NAME=FRACTION, a --data name and a fraction in (0, 1], not {text!r}"
        )
    return name, fraction


def _path(text: str) -> Path:
    """A path option; an empty one (an unset shell variable) is refused, not read as '.'."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a path, not an empty string")
    return Path(text)


def _text(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a path or URL, not an empty string")
    return text


def _path_text(text: str) -> str:
    """A path option as the training config records it (a str: the config is saved as JSON)."""
    return str(Path(text))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xjointseg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, devices and bundled models").set_defaults(func=_info)
    _add_demo_parser(sub)
    _add_map_parser(sub)
    _add_train_parser(sub)
    return parser


def _add_demo_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser(
        "demo",
        help="the whole pipeline on the bundled real Sentinel-2 scene",
        description="Load the bundled Sentinel-2 scene (odc-stac), segment it at 1 m, write a "
        "Zarr cube, a COG and PNG figures, and print a summary. Re-running into the same "
        "--out resumes the cube and rewrites the other outputs; a cube made by another model "
        "is replaced.",
    )
    d.add_argument("--out", type=_path, default=Path("xjointseg-demo"), help="output folder")
    d.add_argument("--model", default="jointseg", help="registered name or weights path")
    d.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1...")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=_demo)


def _add_map_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``map``: where (--bbox or --geometry), when (--periods), from which catalog, with which
    model, and where the cube and its COGs go."""
    m = sub.add_parser(
        "map",
        help="map a region over periods into a resumable Zarr cube",
        description="Search a Sentinel-2 catalog, composite each period, segment at 1 m and "
        "write a Zarr cube. Running the same command again resumes: blocks already written "
        "are skipped.",
    )
    where = m.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--bbox",
        type=_finite_float,
        nargs=4,
        metavar=("MINX", "MINY", "MAXX", "MAXY"),
        help="area in --bbox-crs (default lon/lat degrees)",
    )
    where.add_argument(
        "--geometry", type=_path, help="vector file of polygons (area, and regions of the tables)"
    )
    m.add_argument("--bbox-crs", default="EPSG:4326", help="CRS of --bbox (default EPSG:4326)")
    m.add_argument(
        "--periods",
        nargs="+",
        required=True,
        help="years (2019 2021), windows (2016/2017) or date ranges (2021-04-01/2021-09-30)",
    )
    m.add_argument(
        "--catalog",
        default="earth-search-c1",
        help="earth-search, earth-search-c1 (default), planetary-computer, a STAC API URL "
        "(with --collection), or a path/URL to a static catalog or item JSON",
    )
    m.add_argument("--collection", default=None, help="collection of a custom STAC API")
    m.add_argument(
        "--out", type=_text, required=True, help="Zarr store of the cube (path or fsspec URL)"
    )
    m.add_argument("--overwrite", action="store_true", help="replace a conflicting cube")
    m.add_argument(
        "--zarr-format",
        type=int,
        choices=(2, 3),
        default=None,
        help="Zarr format of a new cube: 3 (sharded, default) or 2 (GDAL/QGIS read it)",
    )
    m.add_argument("--model", default="jointseg", help="registered name or weights path")
    m.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1...")
    m.add_argument("--scheduler", default=None, help="Dask scheduler address (tcp://host:8786)")
    m.add_argument("--crs", default=None, help="output CRS, e.g. utm or EPSG:32633")
    m.add_argument("--max-cloud-cover", type=float, default=None, help="percent, per item")
    m.add_argument("--chunks", type=int, default=None, help="10 m pixels per block side")
    m.add_argument("--cog-dir", type=_path, default=None, help="also write one COG per period")
    m.add_argument("--quiet", action="store_true", help="no progress bars")
    m.set_defaults(func=_map)


def _add_train_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``train``: each option but --data, --oscd, --out and --quiet stores into the
    :class:`~xjointseg.training.TrainConfig` field named by its dest."""
    t = sub.add_parser("train", help="train jointseg or the bilinear baseline")
    _add_run_options(t)
    _add_real_data_options(t)
    _add_loss_options(t)
    t.add_argument("--out", type=_path, required=True, help="folder for checkpoints and weights")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_train)


def _add_run_options(t: argparse.ArgumentParser) -> None:
    """What to train on, which network, for how long, and where."""
    t.add_argument(
        "--data",
        action="append",
        required=True,
        help="dubai=PATH or massachusetts=PATH (repeatable)",
    )
    t.add_argument(
        "--source-share",
        dest="source_shares",
        type=_source_share,
        action="append",
        default=None,
        metavar="NAME=FRACTION",
        help="part of the aerial crops drawn from one --data source (e.g. massachusetts=0.5; "
        "repeatable); unnamed sources share the rest by how much they label",
    )
    t.add_argument(
        "--vegetation-negatives",
        type=float,
        default=None,
        metavar="EXG",
        help="Massachusetts tiles: unlabelled pixels whose excess green index is above EXG "
        "(e.g. 0.12: trees, lawns) are clean negatives, not weak ones",
    )
    t.add_argument("--arch", default="jointseg", choices=["jointseg", "bilinear"])
    t.add_argument("--size", default="lite")
    t.add_argument("--steps", type=_positive_int, default=2000)
    t.add_argument("--batch-size", type=_positive_int, default=8)
    t.add_argument("--crop", type=_positive_int, default=16, help="crop side in 10 m pixels")
    t.add_argument("--lr", type=_positive_float, default=2e-3)
    t.add_argument("--sr-warmup", type=_non_negative_int, default=300)
    t.add_argument("--sr-weight", type=float, default=1.0, help="weight of the SR L1 loss")
    t.add_argument("--adv-weight", type=float, default=0.0)
    t.add_argument(
        "--no-radiometry-augment",
        dest="radiometry_augment",
        action="store_false",
        help="simulate every crop with the default gain, no haze, MTF 0.25",
    )
    t.add_argument("--eval-every", type=_positive_int, default=200)
    t.add_argument("--seed", type=_non_negative_int, default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    t.add_argument(
        "--no-amp", dest="amp", action="store_false", help="train in fp32 (no bf16 autocast)"
    )
    t.add_argument("--val-places", nargs="+", default=DEFAULT_VAL_PLACES)


def _add_real_data_options(t: argparse.ArgumentParser) -> None:
    """Real Sentinel-2 with weak labels (OSCD), and the weights to start from."""
    t.add_argument(
        "--oscd",
        type=Path,
        default=None,
        help="OSCD folder (real Sentinel-2 + Dynamic World): weak batches on its training "
        "cities, ROC AUC on its validation cities (xjointseg.training.splits)",
    )
    t.add_argument(
        "--real-batch-size", type=_non_negative_int, default=8, help="real crops per step"
    )
    t.add_argument("--real-weight", type=float, default=2.0, help="weight of the weak loss")
    t.add_argument(
        "--prior-batch-size",
        type=_non_negative_int,
        default=8,
        help="real 48 x 48 px crops per step that train the 10 m prior alone (jointseg)",
    )
    t.add_argument(
        "--init-from",
        type=_path_text,
        default=None,
        help="weights to start from (e.g. a bundled file); layers they lack start fresh",
    )


def _add_loss_options(t: argparse.ArgumentParser) -> None:
    """The loss terms and their weights, the layers trained, and the mask rule."""
    t.add_argument(
        "--built-floor", type=float, default=0.4, help="ISA share of a built-up 10 m pixel"
    )
    t.add_argument(
        "--not-built-max",
        type=_percent,
        default=15.0,
        metavar="PERCENT",
        help="--oscd training labels: a not built-up pixel has at most this Dynamic World "
        "built probability",
    )
    t.add_argument(
        "--hard-negatives",
        type=_fraction,
        default=0.0,
        metavar="Q",
        help="weak loss: add the mean loss of the hardest fraction Q of not built-up pixels",
    )
    t.add_argument(
        "--mask-sharpness",
        type=float,
        default=1.0,
        help="weak loss on sigmoid(k x 1 m logit): k > 1 holds the 0/1 mask, not the mean "
        "probability, to the weak labels",
    )
    t.add_argument(
        "--consistency-weight",
        type=float,
        default=0.0,
        help="real crops: hold the 1 m map's share of each 10 m pixel to the 10 m prior",
    )
    t.add_argument(
        "--placement-weight",
        type=float,
        default=0.0,
        help="ranking loss inside mixed 10 m pixels: where the ISA of a pixel lies",
    )
    t.add_argument(
        "--skeleton-weight",
        type=float,
        default=0.0,
        help="recall along the labelled ISA's centrelines: thin roads count per metre",
    )
    t.add_argument(
        "--date-weight",
        type=float,
        default=0.0,
        help="real crops (--oscd): the two dates of a city agree where the land is stable",
    )
    t.add_argument(
        "--wald-weight",
        type=float,
        default=0.0,
        help="real crops (--oscd) degraded 10x as SR targets (Wald's protocol)",
    )
    t.add_argument(
        "--anchor-sources",
        nargs="+",
        default=[],
        metavar="SOURCE",
        help="--data sources (e.g. dubai) whose crops hold the network to its --init-from "
        "weights instead of training on their labels",
    )
    t.add_argument(
        "--anchor-weight",
        type=float,
        default=0.0,
        help="weight of that hold (distillation towards the --init-from weights)",
    )
    t.add_argument(
        "--anchor-batch-size", type=_positive_int, default=8, help="anchor crops per step"
    )
    t.add_argument(
        "--train-only",
        nargs="+",
        default=[],
        metavar="PREFIX",
        help="train only the layers whose names start so (e.g. fusion.); the rest is frozen",
    )
    t.add_argument(
        "--mask-rule",
        default="fraction",
        choices=["fraction", "threshold"],
        help="how the weights' 1 m mask is made (selection scores it): sub-pixel allocation of "
        "each 10 m pixel's expected ISA, or the probability at 0.5",
    )
    t.add_argument(
        "--fraction-weight", type=float, default=1.0, help="10 m prior vs ISA fraction loss"
    )
    t.add_argument(
        "--pos-weight", type=float, default=2.0, help="BCE weight of ISA pixels in the 1 m loss"
    )
    t.add_argument(
        "--dice-weight", type=float, default=1.0, help="weight of soft Dice in the 1 m loss"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except XJointSegError as exc:
        print(f"xjointseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "xjointseg: interrupted; run the same command again to resume (training from its "
            "last checkpoint, demo and map from the blocks already written)",
            file=sys.stderr,
        )
        return 130
