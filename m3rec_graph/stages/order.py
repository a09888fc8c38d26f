"""The order candidates are shown in: seeded per user, the same for every model and the dry run."""

import random


def shown_order(item_ids: list[str], user_id: str, seed: int) -> list[str]:
    """Return the seeded shuffle of `item_ids` every model sees (it also breaks score ties)."""
    order = list(item_ids)
    random.Random(f"{seed}:{user_id}").shuffle(order)
    return order
