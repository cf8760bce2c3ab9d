"""The example notebooks run top to bottom, and are stored without outputs.

Each is executed with nbclient in a kernel of this interpreter (the ``python3`` kernel that
ipykernel installs into the environment, started with ``sys.executable``), with the working
folder set to ``examples/`` as Jupyter would. ``XJOINTSEG_EXAMPLE_MODEL`` points the notebooks
to an untrained toy model so that they take seconds whatever weights are registered.
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("[0-9][0-9]_*.ipynb"))
TIMEOUT = 240  # seconds per cell: generous for a loaded CI machine, far above what they take


def test_the_four_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == [
        "01_quickstart",
        "02_multi_period_change",
        "03_scale_out",
        "04_train_your_own",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


@pytest.fixture(scope="module")
def toy_model_path(tmp_path_factory) -> str:
    from xjointseg.testing import toy_weights

    # depth 3 gives a mixed ISA / not-ISA map on the demo scene (depth 2 calls it all ISA),
    # so the change notebook has non-ISA pixels to grow into
    return str(toy_weights(tmp_path_factory.mktemp("nb") / "toy3.safetensors", depth=3))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, toy_model_path, monkeypatch):
    monkeypatch.setenv("XJOINTSEG_EXAMPLE_MODEL", toy_model_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # small work; no thread oversubscription
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=TIMEOUT,
        resources={"metadata": {"path": str(EXAMPLES)}},
    )
    client.execute()  # raises CellExecutionError with the failing cell and its traceback
    text = "\n".join(
        str(out.get("text", "")) + str(out.get("data", {}).get("text/markdown", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )
    if path.stem != "04_train_your_own":  # 04 trains its own model
        assert "Model used: an untrained toy network" in text
    assert "Traceback" not in text
