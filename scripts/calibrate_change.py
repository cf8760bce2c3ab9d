"""Choose new_isa's rule on the validation cities: the thresholds, windows and surface tests
with the best pooled change F1 against OSCD's labels, under a cap on false change.

    python scripts/calibrate_change.py [--model jointseg] [--data ../shared/data] \
        [--split val] [--max-side 0] [--top 10] [--max-false 0.01] \
        [--rule M,C,SIGMA,WINDOW,NDWI,NDVI[,MNDWI[,NORMALISE]]] [--cache DIR]

Each city's two dates are segmented as a user would (xjointseg.training.evaluation.
segment_city); for every window triple (radiometric normalisation window, Gaussian sigma,
context window) the evidence is computed once (``--cache``: stored per city, so a rerun
segments nothing) and every threshold pair and surface test (NDWI, NDVI, MNDWI; as in
new_isa) scored on it. Every city of the
split counts for the false change on stable open land (Dynamic World confidently not built at
both dates, same class); the F1 pools the cities with change labels. ``--max-false``: only
rules whose false change is at most this fraction in every city are ranked. Printed: the
best rules, their pooled F1 and their false change per city (ties go to less false change,
then the stricter context gate, the wider window and the stricter surface tests: the rule
that flags less), the best rule without the cap, and where the default rule stands.
``--rule``: score that one rule only (no search), e.g. on the test cities. ``--gates``: also
try further evidence as one more gate at the default rule's windows (the sign of the
change, the loss of vegetation, the short-wave infrared, the maps' own share and its rise;
:data:`GATES`) and the near and short-wave infrared inside the change vector, each with its
best thresholds under the cap. OSCD's change
labels are used here only to choose thresholds on validation cities, and to evaluate; never
to train.
"""

import argparse
import itertools
from pathlib import Path

import numpy as np

import xjointseg
from xjointseg.change import DEFAULT_RULE, ChangeRule, change_evidence
from xjointseg.change.evidence import relative_change
from xjointseg.training.datasets import WEAK_NOT_BUILT, dynamic_world_weak_labels
from xjointseg.training.evaluation import segment_city
from xjointseg.training.splits import OSCD_SPLITS

NORMALISE_WINDOWS = (101, 201, 401)
SIGMAS = (1.5, 2.0, 3.0)
CONTEXT_WINDOWS = (11, 21, 41)
MAGNITUDES = tuple(np.round(np.arange(0.40, 0.776, 0.025), 3))
CONTEXTS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4)
WATER_NDWI = (0.0, -0.05, -0.1, -0.15)
VEGETATION_NDVI = (0.5, 0.4, 0.3)
WATER_MNDWI = (None, 0.0)  # without the test, or at the index's zero crossing (Xu 2006)
#: Further evidence for ``--gates``: a pixel stays new only where its layer reaches the
#: threshold (layers at the default rule's Gaussian; shares as 9 x 9 means)
GATES = {
    "brightening": (-0.1, -0.05, 0.0, 0.05, 0.1),  # mean signed relative RGB change
    "ndvi_loss": (-0.1, -0.05, 0.0, 0.05, 0.1),  # NDVI before minus NDVI after
    "swir_change": (-0.2, -0.1, 0.0, 0.1),  # signed relative B11 change
    "ndbi_after": (-0.4, -0.3, -0.2, -0.1, 0.0),  # NDBI (B11, B08) after
    "share_after": (0.05, 0.1, 0.2, 0.3),  # the later map's ISA share
    "share_rise": (-0.1, -0.05, 0.0, 0.05),  # its rise from the earlier map
}
NIR_SWIR_WEIGHT = 0.5  # the vector with them: magnitude^2 + w (nir^2 + swir^2)
BANDS = ("red", "green", "blue", "nir", "swir16")


def city_layers(model, city: Path, max_side: int | None, windows, cache: Path | None) -> dict:
    """One city's evidence for every (normalisation, Gaussian, context) window triple of
    ``windows``, its surface indices, labels and stable open land; read from ``cache`` where
    it holds them all."""
    # keyed by the weights' digest: other weights under the same name never read this cache
    digest = getattr(model, "sha256", None) or getattr(model, "name", "model")
    name = f"{city.name}_{digest[:12]}_{max_side or 0}.npz"
    stored = {}
    if cache is not None and (cache / name).exists():
        with np.load(cache / name) as f:
            stored = dict(f)
    missing = [t for t in windows if layer_key("magnitude", t) not in stored]
    if "mndwi" not in stored or "gate_share_rise" not in stored:  # an older version's cache
        missing = list(windows)
    if missing:
        pair = segment_city(model, city, max_side)
        images = tuple(pair["images"])
        for triple in missing:
            norm, sigma, window = triple
            rule = ChangeRule(normalise_px=norm, smooth_sigma=sigma, context_px=window)
            ev = change_evidence(*pair["maps"], images=images, rule=rule).compute()
            stored[layer_key("magnitude", triple)] = ev["magnitude"].values
            stored[layer_key("context", triple)] = ev["context"].values
        # ndwi, mndwi: the lower of the two dates' (water on both dates), ndvi: after
        for key in ("ndwi", "ndvi_after", "mndwi"):
            stored[key] = ev[key].values
        stored.update(gate_layers(pair))
        s1, s2 = (x.values for x in pair["shares"])
        dw1, dw2 = pair["dw"]
        weak = [dynamic_world_weak_labels(*dw) for dw in (dw1, dw2)]
        stored["valid"] = ~np.isnan(s1) & ~np.isnan(s2)
        stable = (weak[0] == WEAK_NOT_BUILT) & (weak[1] == WEAK_NOT_BUILT)
        stored["stable"] = stable & (dw1[1] == dw2[1])
        if pair["change"] is not None:
            stored["y"] = pair["change"]
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            np.savez(cache / name, **stored)
    return stored


def _normalised(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(a + b > 0, (a - b) / (a + b), np.nan)


def _mean9(x: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """9 x 9 mean over the pixels where ``ok`` (NaN where none is)."""
    pad = [(4, 4), (4, 4)]
    win = np.lib.stride_tricks.sliding_window_view
    total = win(np.pad(np.where(ok, x, 0.0), pad), (9, 9)).sum(axis=(-2, -1))
    count = win(np.pad(ok.astype(np.float64), pad), (9, 9)).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def gate_layers(pair: dict) -> dict[str, np.ndarray]:
    """The layers of ``--gates`` for one city (see :data:`GATES`), and the near and
    short-wave infrared's squared change for the wider change vector."""
    img = [{b: i[b].values.astype(np.float64) for b in BANDS} for i in pair["images"]]
    change = {b: relative_change(img[0][b], img[1][b], DEFAULT_RULE) for b in BANDS}
    ndvi = [_normalised(i["nir"], i["red"]) for i in img]
    s1, s2 = (x.values.astype(np.float64) for x in pair["shares"])
    ok = np.isfinite(s1) & np.isfinite(s2)
    after, before = _mean9(s2, ok), _mean9(s1, ok)
    return {
        "gate_brightening": (change["red"] + change["green"] + change["blue"]) / 3,
        "gate_ndvi_loss": ndvi[0] - ndvi[1],
        "gate_swir_change": change["swir16"],
        "gate_ndbi_after": _normalised(img[1]["swir16"], img[1]["nir"]),
        "gate_share_after": after,
        "gate_share_rise": after - before,
        "nir_swir2": change["nir"] ** 2 + change["swir16"] ** 2,
    }


def layer_key(layer: str, windows: tuple[int, float, int]) -> str:
    """Where a city's cache stores one evidence layer of a window triple."""
    norm, sigma, window = windows
    return f"{layer}_{norm}_{sigma}_{window}"


def windows_of(rule: ChangeRule) -> tuple[int, float, int]:
    """A rule's (normalisation, Gaussian, context) windows: the key of its evidence."""
    return rule.normalise_px, rule.smooth_sigma, rule.context_px


def view(c: dict, windows: tuple[int, float, int], floor: float, wide: bool = False) -> dict:
    """The pixels of one city that a rule of these windows with a magnitude threshold of
    at least ``floor`` can flag, with the counts of its labelled change and stable open
    land (valid: both shares and the magnitude, as new_isa's nodata)."""
    mag = c[layer_key("magnitude", windows)]
    valid = c["valid"] & ~np.isnan(mag)
    if wide:  # NIR and B11 in the change vector; valid stays that of the RGB magnitude
        mag = np.sqrt(mag**2 + NIR_SWIR_WEIGHT * c["nir_swir2"])
    y = c["y"] & valid if "y" in c else None
    stable = c["stable"] & valid
    keep = valid & (mag >= floor)
    return {
        "magnitude": mag[keep],
        "context": c[layer_key("context", windows)][keep],
        "ndwi": c["ndwi"][keep],
        "ndvi_after": c["ndvi_after"][keep],
        "mndwi": c["mndwi"][keep],
        "y": None if y is None else y[keep],
        "stable": stable[keep],
        **{k: v[keep] for k, v in c.items() if k.startswith("gate_")},
        "npos": 0 if y is None else int(y.sum()),
        "nstable": int(stable.sum()),
    }


def score(
    views: dict[str, dict], rule: ChangeRule, gate: tuple[str, float] | None = None
) -> tuple[float, dict[str, float]]:
    """Pooled F1 over the cities with labels and the false change on stable open land per
    city; ``gate``: (name, threshold) of :data:`GATES`, one more condition."""
    tp = npred = npos = 0
    false = {}
    for city, v in views.items():
        new = (v["magnitude"] >= rule.magnitude) & (v["context"] >= rule.context)
        if rule.water_ndwi is not None:
            new &= ~(v["ndwi"] > rule.water_ndwi)
        if rule.vegetation_ndvi is not None:
            new &= ~(v["ndvi_after"] > rule.vegetation_ndvi)
        if rule.water_mndwi is not None:
            new &= ~(v["mndwi"] > rule.water_mndwi)
        if gate is not None:
            new &= v[f"gate_{gate[0]}"] >= gate[1]
        if v["y"] is not None:
            tp, npred, npos = tp + (new & v["y"]).sum(), npred + new.sum(), npos + v["npos"]
        nstable = v["nstable"]
        false[city] = (new & v["stable"]).sum() / nstable if nstable else float("nan")
    return 2 * tp / max(npred + npos, 1), false


def worst(false: dict[str, float]) -> float:
    """The largest false change over the cities (those with stable open land)."""
    values = [v for v in false.values() if not np.isnan(v)]
    return max(values) if values else float("nan")


def row(f1: float, r: ChangeRule, false: dict[str, float], cities: list[str]) -> str:
    return (
        f"| {f1:.4f} | {r.magnitude} | {r.context} | {r.normalise_px} | {r.smooth_sigma} | "
        f"{r.context_px} | "
        f"{r.water_ndwi} | {r.vegetation_ndvi} | {r.water_mndwi} | "
        + " | ".join(f"{false[c]:.3%}" for c in cities)
        + f" | {worst(false):.3%} |"
    )


def parse_rule(text: str) -> ChangeRule:
    m, c, sigma, window, ndwi, ndvi, *rest = text.split(",")
    mndwi = rest[0] if rest else "none"
    norm = int(rest[1]) if len(rest) > 1 else DEFAULT_RULE.normalise_px
    return ChangeRule(
        float(m),
        float(c),
        smooth_sigma=float(sigma),
        context_px=int(window),
        normalise_px=norm,
        water_ndwi=float(ndwi),
        vegetation_ndvi=float(ndvi),
        water_mndwi=None if mndwi.lower() == "none" else float(mndwi),
    )


def search(views, windows: list[tuple[int, float, int]]) -> list[tuple]:
    """Every rule of the grids, scored, best first: ties go to less false change, then the
    stricter context gate, the wider window, the stricter water and vegetation tests."""
    rows = []
    for norm, sigma, window in windows:
        v = views((norm, sigma, window), min(MAGNITUDES))
        for magnitude, context, ndwi, ndvi, mndwi in itertools.product(
            MAGNITUDES, CONTEXTS, WATER_NDWI, VEGETATION_NDVI, WATER_MNDWI
        ):
            rule = ChangeRule(
                float(magnitude),
                context,
                smooth_sigma=sigma,
                context_px=window,
                normalise_px=norm,
                water_ndwi=ndwi,
                vegetation_ndvi=ndvi,
                water_mndwi=mndwi,
            )
            f1, false = score(v, rule)
            strict = (context, window, -ndwi, -ndvi, mndwi is not None)
            rows.append((f1, -worst(false), *strict, rule, false))
    rows.sort(key=lambda r: r[:7], reverse=True)
    return rows


def search_gates(layers: dict[str, dict], cap: float, cities: list[str]) -> None:
    """At the default rule's windows and surface tests: the best magnitude, context gate and
    vegetation test under ``cap``, with no further evidence, with each gate of :data:`GATES`
    at each of its thresholds, and with the near and short-wave infrared in the vector."""
    norm, sigma, window = windows_of(DEFAULT_RULE)
    families: list[tuple[str, bool, tuple[str, float] | None]] = [("none", False, None)]
    families += [(f"{name} >= {t}", False, (name, t)) for name, ts in GATES.items() for t in ts]
    families.append((f"NIR and B11 in the vector (weight {NIR_SWIR_WEIGHT})", True, None))
    print(f"\nfurther evidence at sigma {sigma}, context window {window} (cap {cap:.2%}):")
    print("| evidence | F1 | magnitude | context | NDVI | worst false change |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, wide, gate in families:
        views = {c: view(layers[c], (norm, sigma, window), min(MAGNITUDES), wide) for c in cities}
        best = None
        for magnitude, context, ndvi in itertools.product(MAGNITUDES, CONTEXTS, VEGETATION_NDVI):
            rule = ChangeRule(
                float(magnitude),
                context,
                smooth_sigma=sigma,
                context_px=window,
                normalise_px=norm,
                vegetation_ndvi=ndvi,
            )
            f1, false = score(views, rule, gate)
            if worst(false) <= cap and (best is None or f1 > best[0]):
                best = (f1, rule, worst(false))
        if best is None:
            print(f"| {label} | no rule under the cap | | | | |")
            continue
        f1, r, w = best
        print(f"| {label} | {f1:.4f} | {r.magnitude} | {r.context} | {r.vegetation_ndvi} ", end="")
        print(f"| {w:.3%} |")


def print_ranked(rows: list[tuple], cap: float | None, top: int, cities: list[str]) -> None:
    """The best ``top`` rules (under the false-change cap, if any)."""
    ranked = rows if cap is None else [r for r in rows if -r[1] <= cap]
    if cap is not None:
        print(f"{len(ranked)} of {len(rows)} rules have false change <= {cap:.2%} in every city")
    for f1, *_, r, false in ranked[:top]:
        print(row(f1, r, false, cities))
    if cap is None:
        return
    print("best rule without the cap:")
    print(row(rows[0][0], rows[0][-2], rows[0][-1], cities))
    if not ranked:
        least = max(r[1] for r in rows)
        best = next(r for r in rows if r[1] == least)
        print("lowest worst-city false change (best F1 there):")
        print(row(best[0], best[-2], best[-1], cities))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="jointseg")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--max-side", type=int, default=0, help="10 m px per city; 0: whole")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--max-false", type=float, default=None, help="cap in every city")
    parser.add_argument(
        "--rule", type=parse_rule, default=None, help="M,C,SIGMA,WINDOW,NDWI,NDVI[,MNDWI|none]"
    )
    parser.add_argument("--cache", type=Path, default=None, help="folder of per-city layers")
    parser.add_argument("--gates", action="store_true", help="also try further evidence")
    args = parser.parse_args()
    model = xjointseg.load_model(args.model, device="cpu")
    root = args.data / "s2" / "oscd"
    cities = list(OSCD_SPLITS[args.split])
    labelled = [c for c in cities if (root / c / "change.tif").exists()]
    windows = list(itertools.product(NORMALISE_WINDOWS, SIGMAS, CONTEXT_WINDOWS))
    grid = len(windows)
    for r in (args.rule, DEFAULT_RULE):
        if r is not None and windows_of(r) not in windows:
            windows.append(windows_of(r))
    layers = {
        c: city_layers(model, root / c, args.max_side or None, windows, args.cache) for c in cities
    }

    def views(triple: tuple[int, float, int], floor: float) -> dict[str, dict]:
        return {c: view(layers[c], triple, floor) for c in cities}

    print(
        f"{args.split} cities {cities} (change labels: {labelled}); pooled change F1 and "
        "false change on stable open land"
    )
    print(
        "| F1 | magnitude | context | normalise px | sigma | context px | NDWI | NDVI | MNDWI | "
        + " | ".join(cities)
        + " | worst |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * (len(cities) + 1))
    default_f1, default_false = score(
        views(windows_of(DEFAULT_RULE), DEFAULT_RULE.magnitude),
        DEFAULT_RULE,
    )
    if args.rule is not None:
        r = args.rule
        f1, false = score(views(windows_of(r), r.magnitude), r)
        print(row(f1, r, false, cities))
        print("default rule:")
        print(row(default_f1, DEFAULT_RULE, default_false, cities))
        return
    rows = search(views, windows[:grid])
    print_ranked(rows, args.max_false, args.top, cities)
    print("default rule:")
    print(row(default_f1, DEFAULT_RULE, default_false, cities))
    if args.gates:
        search_gates(layers, 0.01 if args.max_false is None else args.max_false, cities)


if __name__ == "__main__":
    main()
