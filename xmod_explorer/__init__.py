"""X-MOD Explorer: see what language adapters do inside a multilingual X-MOD model."""

from xmod_explorer.engine import Explorer, ModelInfo
from xmod_explorer.errors import ExplorerError

__all__ = ["Explorer", "ExplorerError", "ModelInfo"]
__version__ = "0.1.0"
