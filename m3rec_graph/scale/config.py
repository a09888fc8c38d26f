"""What a worker is built from: one picklable value, sent to every worker as it starts."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from m3rec_graph.context import M3RecContext
from m3rec_graph.contracts.schemas import Item
from m3rec_graph.errors import ConfigurationError
from m3rec_graph.llm.factory import ChatModelFactory
from m3rec_graph.llm.worker_share import ProviderLimits
from m3rec_graph.stages.mope import DEFAULT_PROFILE_TTL_DAYS
from m3rec_graph.text.similarity import TfidfSimilarity


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """Where the workers send their model calls (`None` fields: routing's and the environment's)."""

    base_url: str | None = None
    """An OpenAI-compatible base URL for every stage; `None`: what routing resolves
    (OpenAI, `OPENAI_BASE_URL` in the worker's environment, or the local server)."""
    api_key: str | None = field(default=None, repr=False)
    """`None`: `OPENAI_API_KEY` in the worker's environment. Kept out of the repr."""
    timeout_s: float | None = None
    max_retries: int | None = None
    tokenizer_model: str | None = None


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """Everything a `GraphWorker` needs to build its graph, clients and store.

    It is pickled to every Ray actor, so it holds values only: the context, a store
    URL, the endpoint and the limits, never a client, a store or a compiled graph.
    """

    context: M3RecContext = field(default_factory=M3RecContext)
    """Routing, efforts and settings (the seed of the candidate order among them)."""
    store_url: str = "memory:"
    """Where traits and profiles persist; workers on several processes must share one
    store (PostgreSQL on a cluster), else each remembers only its own."""
    profile_ttl_days: float | None = DEFAULT_PROFILE_TTL_DAYS
    concurrency: int = 4
    """Requests in flight per worker."""
    endpoint: Endpoint = field(default_factory=Endpoint)
    limits: ProviderLimits = field(default_factory=ProviderLimits)
    """The provider's limits in total, across all workers: each worker takes its share
    (`m3rec_graph.llm.worker_share`)."""
    chat_models: Callable[[], ChatModelFactory] | None = None
    """Builds the chat model factory in the worker (a module-level function or class, so
    that it pickles by reference), e.g. scripted fakes in tests and benchmarks; `None`:
    `ChatOpenAI` on `endpoint`, with the worker's share of `limits`."""
    text_corpus: Callable[[], Iterable[Item] | TfidfSimilarity] | None = None
    """Builds the fusion `text` signal's corpus in the worker (`build_graph(text_corpus=...)`),
    e.g. a `functools.partial` of a module-level function over a dataset path, so that the
    catalogue is read where the worker runs instead of being pickled; `None`: idf from each
    request's own items."""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigurationError(f"concurrency must be >= 1, got {self.concurrency!r}")
