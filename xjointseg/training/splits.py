"""The places each split holds: train (fit), validation (checkpoint selection, early stop)
and test (reported only). Splits are by place, never by crops of one place; neighbouring
places (Saclay east and west; Brasília and Águas Claras; Paris and Bercy) share a split.
"""

OSCD_SPLITS: dict[str, list[str]] = {
    "train": [
        "bercy",
        "dubai",
        "milano",
        "montpellier",
        "norcia",
        "paris",
        "rennes",
        "rio",
        "saclay_e",
        "saclay_w",
    ],
    "val": ["aguasclaras", "brasilia", "nantes", "valencia"],
    # four of them have OSCD change labels (beihai, beirut, bordeaux, pisa)
    "test": ["beihai", "beirut", "bordeaux", "lasvegas", "pisa"],
}

#: Dubai aerial tiles (places) per split; every Massachusetts tile trains.
DUBAI_SPLITS: dict[str, list[str]] = {
    "train": ["dubai/tile4", "dubai/tile5", "dubai/tile6", "dubai/tile7"],
    "val": ["dubai/tile2"],
    "test": ["dubai/tile1", "dubai/tile3"],
}
