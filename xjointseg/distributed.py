"""Dask distributed: load a model once per worker, before any task needs it.

Tasks already load models through the per-process cache (:class:`~xjointseg.models.ModelRef`),
so nothing here is required for correctness. Registering :class:`ModelPlugin` moves the load
to worker start-up — including workers that join or restart later — so the first tasks do not
all wait on it, and a model that cannot be loaded fails at registration, not mid-job.

Examples
--------
>>> from distributed import Client, LocalCluster                      # doctest: +SKIP
>>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))  # doctest: +SKIP
>>> xjointseg.distributed.register_model(client, "jointseg")          # doctest: +SKIP
>>> isa = ds.isa.segment(model="jointseg").compute()                  # doctest: +SKIP
"""

from __future__ import annotations

import os

from distributed import Client, WorkerPlugin

from .models.model import Model, cached_models, load_model


class ModelPlugin(WorkerPlugin):
    """Loads one model into each worker's process cache at worker start-up.

    Idempotent: registering the same model (same checksum and device) twice is a no-op, since
    the plugin's name is derived from them.
    """

    idempotent = True

    def __init__(self, source: str, sha256: str, device: str = "auto") -> None:
        self.source = source
        self.sha256 = sha256
        self.device = device
        self.name = f"xjointseg-model-{sha256[:16]}-{device}"

    def setup(self, worker) -> None:
        load_model(self.source, device=self.device, sha256=self.sha256)


def register_model(client: Client, model: str | os.PathLike | Model, device: str = "auto") -> str:
    """Have every worker of ``client`` (present and future) load ``model`` once.

    Parameters
    ----------
    client : distributed.Client
    model : str, path or Model
        A registered name, a weights path or URL, or a model loaded from one. Models built in
        memory cannot travel: save them with :func:`xjointseg.save_model` first.
    device : str
        Resolved on each worker: ``"auto"`` takes the worker's GPU when it has one (with
        dask-cuda, each worker sees exactly one), else the CPU.

    Returns
    -------
    str
        The plugin name.
    """
    if not hasattr(client, "register_plugin"):
        from .errors import OptionError

        raise OptionError(
            f"client must be a dask.distributed Client, not {type(client).__name__}: "
            "client = distributed.Client(...); register_model(client, model)"
        )
    local = load_model(model, device="cpu")
    if local.source is None:
        from .errors import UnknownModelError

        raise UnknownModelError(
            "a model built in memory cannot be sent to workers: save it with "
            "xjointseg.save_model(...) and register the file path"
        )
    plugin = ModelPlugin(local.source, local.sha256, device)
    client.register_plugin(plugin)
    return plugin.name


def loaded_models() -> list[tuple[str, str]]:
    """(sha256, device) of the models in this process's cache — e.g. via ``client.run``."""
    return cached_models()
