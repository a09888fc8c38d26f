"""m3rec-graph: motivation-aware LLM recommendation (MOPE -> MOTE -> MAR) as a LangGraph graph.

Importing the package is cheap: every public name loads its module on first access
(PEP 562), so `import m3rec_graph`, or any submodule such as `m3rec_graph.errors`,
pays for langchain, openai and langsmith only once a name that needs them is used;
`build_graph` and the module-level `graph` compile on first access, and nothing here
imports the evaluation stack (torch, matplotlib). `python -m benchmarks.import_time`
measures it.
"""

import importlib
import sys
import types
import warnings
from typing import TYPE_CHECKING, Any

from m3rec_graph.errors import (
    ConfigurationError,
    InvalidRequestError,
    LocalServerError,
    M3RecError,
    ProviderAuthError,
)

if TYPE_CHECKING:
    from m3rec_graph.context import M3RecContext, ModelSpec
    from m3rec_graph.contracts.request import Candidate, RecommendationRequest, parse_request
    from m3rec_graph.contracts.schemas import (
        AlignmentScore,
        Dimension,
        Item,
        ItemTraits,
        MotivationProfile,
        RankedItem,
    )
    from m3rec_graph.graph import build_graph, graph
    from m3rec_graph.integrations.embed import as_node, as_tool, astream_progress
    from m3rec_graph.integrations.shopper import as_shopper_tool
    from m3rec_graph.llm.factory import ChatModelFactory, openai_chat_model
    from m3rec_graph.llm.routing import PRESETS, context_for, default_preset
    from m3rec_graph.local.server import local_server
    from m3rec_graph.state import MemoryReport, RecInput, RecOutput
    from m3rec_graph.storage.catalog import (
        Catalog,
        InMemoryCatalog,
        JsonlCatalog,
        SqliteCatalog,
        UnknownItemError,
    )
    from m3rec_graph.storage.memory import aforget, forget
    from m3rec_graph.storage.store import open_store
    from m3rec_graph.storage.traits import InMemoryTraitCache, SqliteTraitCache, TraitCache

    RemoteContext = M3RecContext
    """Deprecated alias: `M3RecContext` is the one run context."""


_LAZY_EXPORTS: dict[str, str] = {
    "AlignmentScore": "m3rec_graph.contracts.schemas",
    "Candidate": "m3rec_graph.contracts.request",
    "Catalog": "m3rec_graph.storage.catalog",
    "ChatModelFactory": "m3rec_graph.llm.factory",
    "Dimension": "m3rec_graph.contracts.schemas",
    "InMemoryCatalog": "m3rec_graph.storage.catalog",
    "InMemoryTraitCache": "m3rec_graph.storage.traits",
    "Item": "m3rec_graph.contracts.schemas",
    "ItemTraits": "m3rec_graph.contracts.schemas",
    "JsonlCatalog": "m3rec_graph.storage.catalog",
    "M3RecContext": "m3rec_graph.context",
    "MemoryReport": "m3rec_graph.state",
    "ModelSpec": "m3rec_graph.context",
    "MotivationProfile": "m3rec_graph.contracts.schemas",
    "PRESETS": "m3rec_graph.llm.routing",
    "RankedItem": "m3rec_graph.contracts.schemas",
    "RecInput": "m3rec_graph.state",
    "RecOutput": "m3rec_graph.state",
    "RecommendationRequest": "m3rec_graph.contracts.request",
    "SqliteCatalog": "m3rec_graph.storage.catalog",
    "SqliteTraitCache": "m3rec_graph.storage.traits",
    "TraitCache": "m3rec_graph.storage.traits",
    "UnknownItemError": "m3rec_graph.storage.catalog",
    "aforget": "m3rec_graph.storage.memory",
    "as_node": "m3rec_graph.integrations.embed",
    "as_shopper_tool": "m3rec_graph.integrations.shopper",
    "as_tool": "m3rec_graph.integrations.embed",
    "astream_progress": "m3rec_graph.integrations.embed",
    "context_for": "m3rec_graph.llm.routing",
    "default_preset": "m3rec_graph.llm.routing",
    "forget": "m3rec_graph.storage.memory",
    "local_server": "m3rec_graph.local.server",
    "open_store": "m3rec_graph.storage.store",
    "openai_chat_model": "m3rec_graph.llm.factory",
    "parse_request": "m3rec_graph.contracts.request",
}
"""Public name -> the module that defines it, imported on first access."""


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # Importing `m3rec_graph.graph` makes the import system bind the submodule as
        # the package attribute `graph`; the public name stays the compiled graph.
        if name == "graph" and isinstance(value, types.ModuleType):
            value = value.graph
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    # `m3rec_graph.graph` compiles the default graph when imported: defer it to first use.
    if name in ("build_graph", "graph"):
        module = importlib.import_module("m3rec_graph.graph")
        return module.build_graph if name == "build_graph" else globals()["graph"]
    if name in _LAZY_EXPORTS:
        value = getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
        globals()[name] = value  # later accesses are plain attribute lookups
        return value
    if name == "RemoteContext":  # deprecated: the JSON context is M3RecContext itself
        warnings.warn(
            "m3rec_graph.RemoteContext is deprecated: use M3RecContext, the one run context (same JSON fields)",
            DeprecationWarning,
            stacklevel=2,
        )
        return __getattr__("M3RecContext")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PRESETS",
    "AlignmentScore",
    "Candidate",
    "Catalog",
    "ChatModelFactory",
    "ConfigurationError",
    "Dimension",
    "InMemoryCatalog",
    "InMemoryTraitCache",
    "InvalidRequestError",
    "Item",
    "ItemTraits",
    "JsonlCatalog",
    "LocalServerError",
    "M3RecContext",
    "M3RecError",
    "MemoryReport",
    "ModelSpec",
    "MotivationProfile",
    "ProviderAuthError",
    "RankedItem",
    "RecInput",
    "RecOutput",
    "RecommendationRequest",
    "SqliteCatalog",
    "SqliteTraitCache",
    "TraitCache",
    "UnknownItemError",
    "aforget",
    "as_node",
    "as_shopper_tool",
    "as_tool",
    "astream_progress",
    "build_graph",
    "context_for",
    "default_preset",
    "forget",
    "graph",
    "local_server",
    "open_store",
    "openai_chat_model",
    "parse_request",
]
