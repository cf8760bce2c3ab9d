"""The ``xjointseg`` command line: ``info`` and ``train``.

Errors a user can cause print one line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import XJointSegError

# Held-out places: two whole Dubai tiles (fully labelled, 12 % of the Dubai pixels). The
# Massachusetts tiles label roads only, so they train but cannot score precision.
DEFAULT_VAL_PLACES = ["dubai/tile1", "dubai/tile3"]


def _info(args: argparse.Namespace) -> int:
    import dask
    import torch
    import xarray

    from . import __version__
    from .models.model import registered_models

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
    from .training.datasets import load_dubai, load_massachusetts, split_by_place
    from .training.trainer import TrainConfig, train

    scenes = []
    for spec in args.data:
        kind, _, path = spec.partition("=")
        loader = {"dubai": load_dubai, "massachusetts": load_massachusetts}.get(kind)
        if loader is None or not path:
            raise XJointSegError(f"--data takes dubai=PATH or massachusetts=PATH, not {spec!r}")
        scenes += loader(path)
    train_scenes, val_scenes = split_by_place(scenes, args.val_places)
    cfg = TrainConfig(
        arch=args.arch,
        size=args.size,
        steps=args.steps,
        batch_size=args.batch_size,
        crop=args.crop,
        threads=args.threads,
        amp=not args.no_amp,
        lr=args.lr,
        sr_warmup=args.sr_warmup,
        adv_weight=args.adv_weight,
        eval_every=args.eval_every,
        seed=args.seed,
        device=args.device,
        val_places=list(args.val_places),
    )
    result = train(train_scenes, val_scenes, cfg, args.out, progress=not args.quiet)
    print(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xjointseg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("info", help="versions, devices and bundled models").set_defaults(func=_info)

    t = sub.add_parser("train", help="train jointseg or the bilinear baseline")
    t.add_argument(
        "--data",
        action="append",
        required=True,
        help="dubai=PATH or massachusetts=PATH (repeatable)",
    )
    t.add_argument("--arch", default="jointseg", choices=["jointseg", "bilinear"])
    t.add_argument("--size", default="lite")
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--crop", type=int, default=16, help="crop side in 10 m pixels")
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--sr-warmup", type=int, default=300)
    t.add_argument("--adv-weight", type=float, default=0.0)
    t.add_argument("--eval-every", type=int, default=200)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--no-amp", action="store_true", help="train in fp32 (no bf16 autocast)")
    t.add_argument("--val-places", nargs="+", default=DEFAULT_VAL_PLACES)
    t.add_argument("--out", type=Path, required=True, help="folder for checkpoints and weights")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except XJointSegError as exc:
        print(f"xjointseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "xjointseg: interrupted; a training run resumes from its last checkpoint",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
