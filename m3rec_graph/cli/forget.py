"""`m3rec forget USER_ID`: delete a shopper's stored profiles (see docs/privacy.md for what it does not reach)."""

import argparse

from m3rec_graph.cli.store_options import add_store_options, store_url
from m3rec_graph.storage.memory import forget
from m3rec_graph.storage.store import open_store


def add_forget_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register the `forget` command."""
    parser = sub.add_parser(
        "forget",
        help="delete a shopper's stored profiles (item traits are not per shopper and stay)",
    )
    parser.add_argument("user_id", help="the shopper's user id, as sent in requests")
    add_store_options(parser)
    parser.set_defaults(func=cmd_forget)


def cmd_forget(args: argparse.Namespace) -> None:
    """Delete every stored profile of one shopper and say how many there were."""
    url = store_url(args)
    with open_store(url) as store:
        deleted = forget(store, args.user_id)
    print(f"forgot {deleted} stored profile(s) of {args.user_id!r} in {url}")
