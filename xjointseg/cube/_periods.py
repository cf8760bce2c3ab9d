"""Periods in a store: claiming them for a write (append, refuse or replace), their records,
and growing the arrays in an order a kill cannot leave unreadable."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import CubeMismatchError, OptionError, PeriodConflictError
from ..schema import key_value, period_key, time_key
from ._store import BOOK, FORMAT, _read_json, _records, _Target, _write_record
from ._template import _coord_values, _describe_grid, _period_encoding, _root_attrs, _same_grid


def _sources(sources, isa: xr.DataArray, keys: list[str], kind: str) -> list[list[str]]:
    """Source item ids per period: given, or from attrs (``stac_items`` of load_sentinel2)."""
    if sources is None:
        sources = _attr_sources(isa)
    if sources is None:
        return [[] for _ in keys]
    if isinstance(sources, str):
        sources = [sources]
    if not isinstance(sources, Mapping | Sequence):
        raise OptionError(
            "sources must be STAC item ids: a list of str, or a mapping period -> list of "
            f"str, not {sources!r}"
        )
    if isinstance(sources, Mapping):
        return _sources_by_period(sources, isa, keys, kind)
    return [[str(s) for s in sources] for _ in keys]


def _attr_sources(isa: xr.DataArray) -> Any:
    """The source items the map's attrs name: ids, or JSON of ids or of period -> ids."""
    sources = isa.attrs.get("source_items", isa.attrs.get("stac_items"))
    if isinstance(sources, str) and sources.lstrip().startswith(("{", "[")):
        sources = json.loads(sources)
    return sources


def _sources_by_period(
    sources: Mapping, isa: xr.DataArray, keys: list[str], kind: str
) -> list[list[str]]:
    """Each period's entry of a mapping keyed by period coordinate values or by the labels
    of a "period" coordinate (those first)."""
    labels = [str(v) for v in isa["period"].values] if "period" in isa.coords else keys
    out = []
    for key, label in zip(keys, labels, strict=True):
        found = [v for k, v in sources.items() if str(k) == label]
        found = found or [v for k, v in sources.items() if _safe_key(k, kind) == key]
        out.append([str(s) for s in found[0]] if found else [])
    return out


def _safe_key(value: Any, kind: str) -> str | None:
    try:
        return period_key(value, kind)
    except (TypeError, ValueError):
        return None


def _record(key: str, fp: str, meta: dict, info: dict) -> dict:
    return {
        "period": key,
        "fingerprint": fp,
        "model": meta["model"],
        "model_sha256": meta["model_sha256"],
        "sources": info["sources"],
        "coords": info["coords"],
    }


def _compatible(existing: dict, meta: dict) -> bool:
    return (
        existing.get("format") == FORMAT
        and existing.get("zarr_format", 3) == meta["zarr_format"]  # a book without it: v3
        and existing["dim"] == meta["dim"]
        and existing["period_kind"] == meta["period_kind"]
        and existing["variables"] == meta["variables"]
        and existing.get("model_sha256") == meta["model_sha256"]
        and _same_grid(existing["grid"], meta["grid"])
    )


def _mismatch_message(existing: dict, meta: dict, url: str) -> str:
    what = []
    if not _same_grid(existing["grid"], meta["grid"]):
        what.append(
            f"its grid is {_describe_grid(existing['grid'])}, this map's is "
            f"{_describe_grid(meta['grid'])}"
        )
    if existing.get("model_sha256") != meta["model_sha256"]:
        what.append(
            f"it was made with model {existing.get('model')!r} (sha256 "
            f"{str(existing.get('model_sha256'))[:12]}...), this map with {meta['model']!r} "
            f"(sha256 {str(meta['model_sha256'])[:12]}...)"
        )
    if existing["variables"] != meta["variables"]:
        what.append(f"it holds {existing['variables']}, this write {meta['variables']}")
    if existing["dim"] != meta["dim"] or existing["period_kind"] != meta["period_kind"]:
        what.append(
            f"its periods are {existing['dim']!r} ({existing['period_kind']}), this map's "
            f"{meta['dim']!r} ({meta['period_kind']})"
        )
    if existing.get("zarr_format", 3) != meta["zarr_format"]:
        what.append(
            f"it is Zarr v{existing.get('zarr_format', 3)}, this write asks for "
            f"zarr_format={meta['zarr_format']}"
        )
    return (
        f"the cube at {url} cannot take this map: {'; '.join(what) or 'another format'}. "
        "Write to a new store, or pass overwrite=True to delete it and start again."
    )


def _claim_periods(
    target: _Target,
    meta: dict,
    keys: list[str],
    fps: list[str],
    info: list[dict],
    overwrite: bool,
) -> list[int]:
    """Store index of each input period; append new ones, refuse or replace conflicting ones."""
    fs, root = target.fs()
    records = _records(fs, root)
    _sync_periods(target, meta, records)  # finish an append a kill interrupted
    stored = [r["period"] for r in records]
    indices = []
    new = []
    for j, key in enumerate(keys):
        if key not in stored:
            new.append(j)
            indices.append(len(stored) + len(new) - 1)
            continue
        i = stored.index(key)
        indices.append(i)
        if records[i]["fingerprint"] == fps[j]:
            continue
        if not overwrite:
            raise PeriodConflictError(
                f"period {key} in {target.url} was written by a different computation "
                "(other inputs, model, weights or settings). Pass overwrite=True to replace it, "
                "write to a new store, or select only new periods, e.g. "
                f"isa.sel({meta['dim']}=[...])."
            )
        rec = _record(key, fps[j], meta, info[j])
        _write_record(fs, root, i, rec)
        records[i] = rec
        # markers of the replaced computation no longer count; its blocks get rewritten
        if fs.exists(f"{root}/{BOOK}/done/{i:04d}"):
            fs.rm(f"{root}/{BOOK}/done/{i:04d}", recursive=True)
    if new:
        kind = meta["period_kind"]
        # names that read as dates ("2017", "2018-06") are kept in time order too
        found = {k: _when(k, kind) for k in [*stored, *(keys[j] for j in new)]}
        when = {k: v for k, v in found.items() if v is not None}
        if stored and len(when) == len(found):
            last = max(when[k] for k in stored)
            early = [keys[j] for j in new if when[keys[j]] <= last]
            if early:
                raise CubeMismatchError(
                    f"periods can only be added after the last one in the cube ({stored[-1]}); "
                    f"{early} would come before it: write them to a new cube"
                )
        for j in new:
            rec = _record(keys[j], fps[j], meta, info[j])
            _write_record(fs, root, len(records), rec)
            records.append(rec)
        _sync_periods(target, meta, records)
    return indices


def _when(key: str, kind: str) -> float | None:
    """A period key's place in time (None: a name that does not read as a date)."""
    if kind == "datetime":
        return float(np.datetime64(key, "ns").astype(np.int64))
    if kind != "str":
        return float(key_value(key, kind))
    found = time_key(key)
    return found[1] if found is not None and found[0] == "t" else None


def _sync_periods(target: _Target, meta: dict, records: list[dict]) -> None:
    """Make the arrays and the period coordinate as long as the records say (appends)."""
    pdim, kind = meta["dim"], meta["period_kind"]
    coord = target.open_array(pdim)
    n = len(records)
    if coord.shape[0] >= n:  # never shrink: records can only be missing if torn by a kill
        return
    if target.local:  # metadata rewrites a kill cut short left temporary files behind
        _, root = target.fs()
        for name in [*meta["variables"], *meta["coords"], pdim, ""]:
            for p in Path(root, name).glob("zarr.*.partial"):
                p.unlink(missing_ok=True)
    for var in meta["variables"]:
        arr = target.open_array(var)
        if arr.shape[0] != n:
            arr.resize((n, *arr.shape[1:]))
    # the period coordinate last: its length is what readers take as the periods
    for name, ck in [*meta["coords"].items(), (pdim, kind)]:
        var = xr.Variable((pdim,), _coord_values(records, name, ck, pdim))
        var.encoding = _period_encoding(ck)
        encoded = xr.conventions.encode_cf_variable(var, name=name)
        arr = coord if name == pdim else target.open_array(name)
        arr.resize((n,))
        arr[:] = np.asarray(encoded.values, dtype=arr.dtype)
    group = target.open_group()
    group.attrs.update({"source_items": _root_attrs(meta, records)["source_items"]})
    _refresh_consolidated(target)


def _refresh_consolidated(target: _Target) -> None:
    """Rewrite consolidated metadata a user added (zarr.consolidate_metadata, as xarray's
    warning suggests): left stale, plain xarray would show the periods before the append."""
    fs, root = target.fs()
    node = _read_json(fs, f"{root}/zarr.json") or {}
    if node.get("consolidated_metadata") is None and not fs.exists(f"{root}/.zmetadata"):
        return
    import warnings

    import zarr

    with warnings.catch_warnings():  # zarr warns that v3 consolidation is not in the spec yet
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(target.open_group().store)
