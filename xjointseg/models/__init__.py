"""Networks, weights and model loading."""

from .model import Model, ModelRef, load_model, registered_models
from .weights import save_model

__all__ = ["Model", "ModelRef", "load_model", "registered_models", "save_model"]
