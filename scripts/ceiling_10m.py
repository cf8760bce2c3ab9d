"""What the held-out places allow at 10 m: an oracle bound and a plain 10 m network.

Usage: ``python scripts/ceiling_10m.py [DUBAI_DIR] [--steps 1500] [--uncalibrated]``

* *oracle*: the true ISA fraction of each 10 m pixel (from the 1 m labels), up-sampled to 1 m
  (nearest and bilinear) and thresholded at 0.5 — the best any map that is right at 10 m can
  score at 1 m;
* *10 m network*: six 3 x 3 conv layers on the simulated 10 m input, trained to predict each
  10 m pixel's ISA fraction on the training places, its probabilities up-sampled bilinearly
  and thresholded at 0.5. It shows how well ISA is recognised from 10 m RGB on unseen places.

Both are scored on the held-out Dubai places of the model card (tile1, tile3).
"""

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xjointseg.metrics import confusion, scores_from_counts
from xjointseg.training import load_dubai, simulate_sentinel2, split_by_place
from xjointseg.training.datasets import IGNORE, WEAK_NEGATIVE
from xjointseg.training.simulate import UNCALIBRATED

VAL_PLACES = ["dubai/tile1", "dubai/tile3"]
CROP = 24  # 10 m pixels per training crop


def isa_fraction_10m(label: np.ndarray) -> np.ndarray:
    """Share of ISA among the clean 1 m labels of each 10 m pixel (NaN where none is clean)."""
    h, w = label.shape
    blocks = label.reshape(h // 10, 10, w // 10, 10).transpose(0, 2, 1, 3).reshape(-1, 100)
    clean = (blocks <= 1).sum(1)
    isa = (blocks == 1).sum(1)
    frac = np.where(clean > 0, isa / np.maximum(clean, 1), np.nan)
    return frac.reshape(h // 10, w // 10).astype(np.float32)


def score(pairs) -> str:
    counts = [confusion(pred, label, ignore=(WEAK_NEGATIVE, IGNORE)) for pred, label in pairs]
    s = scores_from_counts({k: sum(c[k] for c in counts) for k in counts[0]})
    return f"ISA F1 {s['f1']:.3f}, precision {s['precision']:.3f}, recall {s['recall']:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dubai", nargs="?", default="../shared/data/hr/dubai")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument(
        "--uncalibrated",
        action="store_true",
        help="simulate with the radiometry before calibration (equal gains, no offset)",
    )
    args = parser.parse_args()
    radiometry = UNCALIBRATED if args.uncalibrated else {}
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train, val = split_by_place(load_dubai(args.dubai), VAL_PLACES)
    val_lr = [torch.from_numpy(simulate_sentinel2(s.hr, rng=rng, **radiometry)) for s in val]
    train_lr = [torch.from_numpy(simulate_sentinel2(s.hr, rng=rng, **radiometry)) for s in train]
    train_frac = [torch.from_numpy(isa_fraction_10m(s.label)) for s in train]

    for mode in ("nearest", "bilinear"):
        pairs = []
        for s in val:
            frac = torch.from_numpy(np.nan_to_num(isa_fraction_10m(s.label)))[None, None]
            up = F.interpolate(frac, scale_factor=10, mode=mode)[0, 0].numpy()
            pairs.append(((up >= 0.5).astype(np.uint8), s.label))
        print(f"oracle, true 10 m fraction up-sampled ({mode}): {score(pairs)}")

    stacked = torch.cat([x.reshape(3, -1) for x in train_lr], 1)
    mean, std = stacked.mean(1).view(3, 1, 1), stacked.std(1).view(3, 1, 1)
    layers = [nn.Conv2d(3, 48, 3, padding=1), nn.GELU()]
    for _ in range(5):
        layers += [nn.Conv2d(48, 48, 3, padding=1), nn.GELU()]
    net = nn.Sequential(*layers, nn.Conv2d(48, 1, 1))
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    for _ in range(args.steps):
        xs, ys = [], []
        for _ in range(16):
            i = int(rng.integers(len(train)))
            x, y = train_lr[i], train_frac[i]
            y0 = int(rng.integers(y.shape[0] - CROP + 1))
            x0 = int(rng.integers(y.shape[1] - CROP + 1))
            k = int(rng.integers(4))
            xs.append(torch.rot90(x[:, y0 : y0 + CROP, x0 : x0 + CROP], k, (1, 2)))
            ys.append(torch.rot90(y[y0 : y0 + CROP, x0 : x0 + CROP], k, (0, 1)))
        logits = net((torch.stack(xs) - mean) / std)[:, 0]
        y = torch.stack(ys)
        known = ~torch.isnan(y)
        loss = F.binary_cross_entropy_with_logits(logits[known], y[known])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pairs = []
        for s, x in zip(val, val_lr, strict=True):
            logits = F.interpolate(net(((x - mean) / std)[None]), scale_factor=10, mode="bilinear")
            pairs.append(((logits[0, 0] >= 0).numpy().astype(np.uint8), s.label))
    print(f"10 m network, {args.steps} steps, probabilities up-sampled: {score(pairs)}")


if __name__ == "__main__":
    main()
