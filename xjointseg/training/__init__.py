"""Training on cross-resolution triples: simulate the 10 m input, load labelled places, train.

The public entry points; the modules hold the details (``simulate``, ``datasets``,
``losses``, ``trainer``).
"""

from .datasets import (
    Scene,
    TrainingDataError,
    load_dubai,
    load_geotiff_scene,
    load_massachusetts,
    split_by_place,
)
from .simulate import simulate_sentinel2
from .trainer import CheckpointError, TrainConfig, evaluate, train

__all__ = [
    "CheckpointError",
    "Scene",
    "TrainConfig",
    "TrainingDataError",
    "evaluate",
    "load_dubai",
    "load_geotiff_scene",
    "load_massachusetts",
    "simulate_sentinel2",
    "split_by_place",
    "train",
]
