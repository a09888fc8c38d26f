"""A provider's limits split across N worker processes, deterministically, so that they hold in total.

The client-side limits (`rate_limits`) are shared per process. A provider's limits
are not: OpenAI applies its RPM and TPM limits to the organization and project
(https://developers.openai.com/api/docs/guides/rate-limits). N processes that each took
the whole budget would send N times the limit and get 429s. So each worker takes
its share, fixed by its index alone (no coordination at run time):

| limit | worker `i` of `n` gets | the shares sum to |
|---|---|---|
| requests per second | `rps / n` | `rps` |
| tokens per minute | `tpm // n`, the first `tpm % n` workers one more | `tpm` |
| requests in flight | `cap // n`, the first `cap % n` workers one more | `cap` |

A share can only be smaller than what a single process would get, so a worker that
idles leaves its share unused: the split errs on the side of the provider.
"""

from dataclasses import dataclass

from m3rec_graph.errors import ConfigurationError


@dataclass(frozen=True)
class ProviderLimits:
    """The client-side limits of one endpoint: the `ModelSpec` fields of the same names."""

    requests_per_second: float | None = None
    tokens_per_minute: int | None = None
    max_inflight_requests: int | None = None

    @property
    def unlimited(self) -> bool:
        """Whether no limit is set."""
        return (
            self.requests_per_second is None
            and self.tokens_per_minute is None
            and self.max_inflight_requests is None
        )


def _int_share(total: int, workers: int, index: int) -> int:
    return total // workers + (1 if index < total % workers else 0)


def worker_share(limits: ProviderLimits, workers: int, index: int) -> ProviderLimits:
    """Return worker `index`'s share of `limits` when `workers` processes run at once.

    Raises:
        ConfigurationError: `index` is not in `range(workers)`, or a limit is too small
            to give every worker at least one request in flight (or one token per minute).
    """
    if workers < 1 or not 0 <= index < workers:
        raise ConfigurationError(f"worker {index} of {workers}: expected 0 <= index < workers")
    rps, tpm, cap = (
        limits.requests_per_second,
        limits.tokens_per_minute,
        limits.max_inflight_requests,
    )
    for name, value in (("max_inflight_requests", cap), ("tokens_per_minute", tpm)):
        if value is not None and value < workers:
            raise ConfigurationError(
                f"{name}={value} cannot be split across {workers} workers (each needs at least 1):"
                " use fewer workers or a higher limit"
            )
    return ProviderLimits(
        requests_per_second=None if rps is None else rps / workers,
        tokens_per_minute=None if tpm is None else _int_share(tpm, workers, index),
        max_inflight_requests=None if cap is None else _int_share(cap, workers, index),
    )
