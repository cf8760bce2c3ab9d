"""Copy trained weights into the package and register them under a name.

Usage: ``python scripts/register_weights.py runs/jointseg-s0/best.safetensors jointseg``

Measurements stored beside an entry by other scripts (``placement``, written by
``scripts/measure_placement.py --register``) stay when the weights are the same file again;
new weights drop them, and the script says which to measure again.
"""

import json
import shutil
import sys
from pathlib import Path

from xjointseg.models.weights import read_weights

WEIGHTS = Path(__file__).parents[1] / "xjointseg" / "models" / "weights"
TRAINED_ON = (
    "Dubai aerial (Humans in the Loop / MBRSC, CC0) + Massachusetts roads (Mnih 2013; MassGIS "
    "imagery, OSM labels, no dataset licence stated), simulated to Sentinel-2; real Sentinel-2 "
    "L1C of 10 OSCD cities (Copernicus Sentinel data 2015-2018) with Dynamic World weak labels "
    "(Brown et al. 2022, Apache-2.0). No OSCD change label was used."
)


def main(path: str, name: str) -> None:
    weights = read_weights(path)
    meta = weights.metadata
    target = WEIGHTS / f"{name}-{meta['config'].get('size', 'lite')}.safetensors"
    shutil.copyfile(path, target)
    registry_path = WEIGHTS / "registry.json"
    registry = json.loads(registry_path.read_text())
    old = registry.get(name, {})
    entry = {
        "file": target.name,
        "sha256": weights.sha256,
        "arch": meta["arch"],
        "trained_on": TRAINED_ON,
        "validation": meta.get("metrics", {}),
    }
    measured = sorted(set(old) - set(entry))  # written by the measuring scripts
    if old.get("sha256") == weights.sha256:
        entry.update({key: old[key] for key in measured})
    elif measured:
        print(
            f"new weights: dropped {', '.join(measured)}, measured on the old ones; measure "
            "again (placement: scripts/measure_placement.py NAME --register)"
        )
    registry[name] = entry
    registry_path.write_text(json.dumps(registry, indent=1, sort_keys=True) + "\n")
    print(f"registered {name}: {target.name} sha256 {weights.sha256}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
