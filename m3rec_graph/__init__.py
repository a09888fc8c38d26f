"""m3rec-graph: motivation-aware LLM recommendation (MOPE -> MOTE -> MAR) as a LangGraph graph."""

from m3rec_graph.cache import InMemoryTraitCache, SqliteTraitCache, TraitCache
from m3rec_graph.context import M3RecContext, ModelSpec
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
from m3rec_graph.routing import PRESETS, context_for, default_preset
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
    "ChatModelFactory",
    "ConfigurationError",
    "Dimension",
    "InMemoryTraitCache",
    "InvalidRequestError",
    "Item",
    "ItemTraits",
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
    "SqliteTraitCache",
    "TraitCache",
    "build_graph",
    "context_for",
    "default_preset",
    "graph",
    "local_server",
    "openai_chat_model",
    "parse_request",
]
