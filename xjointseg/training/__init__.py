"""Training on cross-resolution triples and on real Sentinel-2 with weak 10 m labels:
simulate the 10 m input, load labelled places, train, evaluate on held-out places.

The public entry points; the modules hold the details (``simulate``, ``datasets``,
``losses``, ``trainer``, ``splits``, ``evaluation``).
"""

from .datasets import (
    Scene,
    TrainingDataError,
    WeakScene,
    load_dubai,
    load_dynamic_world_scene,
    load_geotiff_scene,
    load_massachusetts,
    load_oscd,
    split_by_place,
)
from .simulate import simulate_sentinel2
from .trainer import CheckpointError, TrainConfig, train
from .validation import evaluate

__all__ = [
    "CheckpointError",
    "Scene",
    "TrainConfig",
    "TrainingDataError",
    "WeakScene",
    "evaluate",
    "load_dubai",
    "load_dynamic_world_scene",
    "load_geotiff_scene",
    "load_massachusetts",
    "load_oscd",
    "simulate_sentinel2",
    "split_by_place",
    "train",
]
