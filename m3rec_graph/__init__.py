"""m3rec-graph: motivation-aware LLM recommendation (MOPE -> MOTE -> MAR) as a LangGraph graph."""

from m3rec_graph.cache import InMemoryTraitCache, SqliteTraitCache, TraitCache
from m3rec_graph.catalog import (
    Catalog,
    InMemoryCatalog,
    JsonlCatalog,
    SqliteCatalog,
    UnknownItemError,
)
from m3rec_graph.context import M3RecContext, ModelSpec
from m3rec_graph.embed import as_node, as_tool, astream_progress
from m3rec_graph.errors import (
    ConfigurationError,
    InvalidRequestError,
    LocalServerError,
    M3RecError,
    ProviderAuthError,
)
from m3rec_graph.graph import build_graph, graph
from m3rec_graph.local.server import local_server
from m3rec_graph.models import ChatModelFactory, openai_chat_model
from m3rec_graph.request import RecommendationRequest, parse_request
from m3rec_graph.routing import PRESETS, RemoteContext, context_for, default_preset
from m3rec_graph.schemas import (
    AlignmentScore,
    Dimension,
    Item,
    ItemTraits,
    MotivationProfile,
    RankedItem,
)
from m3rec_graph.state import RecInput, RecOutput

__all__ = [
    "PRESETS",
    "AlignmentScore",
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
    "ModelSpec",
    "MotivationProfile",
    "ProviderAuthError",
    "RankedItem",
    "RecInput",
    "RecOutput",
    "RecommendationRequest",
    "RemoteContext",
    "SqliteCatalog",
    "SqliteTraitCache",
    "TraitCache",
    "UnknownItemError",
    "as_node",
    "as_tool",
    "astream_progress",
    "build_graph",
    "context_for",
    "default_preset",
    "graph",
    "local_server",
    "openai_chat_model",
    "parse_request",
]
