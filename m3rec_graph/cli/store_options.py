"""The one storage setting on the command line: `--store URL` (or `$M3REC_STORE_URL`)."""

import argparse
import os
import sys
from pathlib import Path

from m3rec_graph.errors import ConfigurationError
from m3rec_graph.stages.mope import DEFAULT_PROFILE_TTL_DAYS
from m3rec_graph.storage.store import STORE_URL_ENV, default_store_url, store_kind


def add_store_options(
    parser: argparse.ArgumentParser,
    *,
    memory_help: str | None = None,
    store_help: str | None = None,
    aliases: bool = True,
) -> None:
    """Add `--store`, the deprecated `--cache FILE` alias, and `--no-cache` (`--store memory:`).

    Args:
        parser: The command's parser.
        memory_help: `--no-cache`'s help, when the default does not fit the command.
        store_help: `--store`'s help, when the default does not fit the command.
        aliases: Also add `--cache` and `--no-cache` (a command new to `--store` has
            no old spelling to keep).
    """
    parser.add_argument(
        "--store",
        metavar="URL",
        help=store_help
        or f"where traits and shopper profiles persist: sqlite:///PATH, postgresql://..., or memory:"
        f" (default: ${STORE_URL_ENV}, else a SQLite file in ~/.cache/m3rec)",
    )
    if not aliases:
        return
    parser.add_argument(
        "--cache", metavar="FILE", help="deprecated: the same as --store sqlite:///FILE"
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help=memory_help or "keep traits and profiles in memory only (--store memory:)",
    )


def add_profile_ttl_option(parser: argparse.ArgumentParser) -> None:
    """Add `--profile-ttl-days` (how long a stored shopper profile is served)."""
    parser.add_argument(
        "--profile-ttl-days",
        type=float,
        default=DEFAULT_PROFILE_TTL_DAYS,
        metavar="DAYS",
        help=f"serve a stored shopper profile for this long (default: {DEFAULT_PROFILE_TTL_DAYS:g})",
    )


def store_url(args: argparse.Namespace, *, default: str | None = None) -> str:
    """Return the store URL the flags (or `$M3REC_STORE_URL`) name; `StoreURLError` if malformed.

    Args:
        args: The parsed flags.
        default: The URL when neither the flags nor `$M3REC_STORE_URL` name one
            (None: a SQLite file in the per-user cache directory).
    """
    given = [name for name in ("store", "cache", "no_cache") if getattr(args, name, None)]
    if len(given) > 1:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ConfigurationError(f"give one of --store, --cache and --no-cache, not {flags}")
    if getattr(args, "no_cache", False):
        return "memory:"
    if getattr(args, "cache", None):
        alias = f"sqlite:///{Path(args.cache)}"
        print(
            f"m3rec: note: --cache FILE is deprecated and will be removed in the next release;"
            f" use --store {alias} (traits written by earlier releases' cache are not read)",
            file=sys.stderr,
        )
        return alias
    url: str = args.store or os.environ.get(STORE_URL_ENV) or default or default_store_url()
    store_kind(url)  # a malformed URL fails here, before any server starts
    return url
