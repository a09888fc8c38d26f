"""Deterministic results used when an LLM stage cannot produce a valid answer.

- MOPE: a profile inferred from the history's text with a small keyword lexicon.
- MOTE: the neutral trait set (0.5 on every dimension: "unknown", not "absent").
- MAR: weighted dimension overlap between the profile and each item's traits.

None of these needs a model, so the graph always returns a complete ranking.
"""

from m3rec_graph.contracts.schemas import (
    AlignmentScore,
    Dimension,
    DimensionStrengths,
    Item,
    ItemTraits,
    MotivationProfile,
    ProfileDimension,
)
from m3rec_graph.text.item_text import item_text

NEUTRAL_STRENGTH = 0.5

# Generic retail vocabulary (not tied to any one dataset): a word in an item's
# title or categories signals the dimension it is listed under.
LEXICON: dict[Dimension, tuple[str, ...]] = {
    Dimension.FUNCTIONAL: (
        "treatment",
        "repair",
        "remover",
        "cleanser",
        "tool",
        "protect",
        "care",
        "fix",
        "relief",
        "kit",
        "gear",
        "equipment",
        "accessor",
        "replacement",
        "shampoo",
        "filter",
    ),
    Dimension.QUALITY: (
        "professional",
        "pro ",
        "premium",
        "salon",
        "performance",
        "advanced",
        "clinical",
        "certified",
        "durable",
        "heavy duty",
        "original",
    ),
    Dimension.AESTHETIC: (
        "makeup",
        "color",
        "colour",
        "polish",
        "fragrance",
        "perfume",
        "lipstick",
        "style",
        "design",
        "shimmer",
        "glitter",
        "scent",
        "eyeshadow",
        "nail art",
        "decor",
    ),
    Dimension.SELF_CARE: (
        "spa",
        "bath",
        "relax",
        "massage",
        "aromatherapy",
        "soothing",
        "moistur",
        "lotion",
        "wellness",
        "comfort",
        "calm",
    ),
    Dimension.SOCIAL: ("gift", "set", "collection", "limited", "edition", "team", "fan", "party"),
    Dimension.VALUE: ("pack", "value", "bulk", "refill", "count", "multi", "economy", "bundle"),
    Dimension.CONVENIENCE: (
        "travel",
        "portable",
        "mini",
        "wipes",
        "easy",
        "quick",
        "instant",
        "spray",
        "compact",
        "on-the-go",
        "disposable",
    ),
}


def lexicon_strengths(text: str) -> dict[Dimension, float]:
    """Score each dimension in [0, 1] by how many of its lexicon words occur in `text`."""
    lowered = f" {text.lower()} "
    return {
        dim: min(1.0, sum(word in lowered for word in words) / 2.0)
        for dim, words in LEXICON.items()
    }


def fallback_profile(
    history: list[Item], reason: str = "no valid LLM profile"
) -> MotivationProfile:
    """Infer a profile from the history's text alone (MOPE's budget was spent, or MOPE is off).

    `reason` goes into the summary, so a reader tells a failure from a configuration.
    """
    per_item = [(item.item_id, lexicon_strengths(item_text(item))) for item in history]
    dims: dict[str, ProfileDimension] = {}
    for dim in Dimension:
        hits = [(item_id, s[dim]) for item_id, s in per_item if s[dim] > 0]
        strength = sum(s for _, s in hits) / len(per_item) if per_item else 0.0
        dims[dim.value] = ProfileDimension(
            strength=round(strength, 3), evidence=[item_id for item_id, _ in hits][:5]
        )
    top = sorted(Dimension, key=lambda d: -dims[d.value].strength)[:3]
    summary = (
        "Keyword profile inferred from the history's titles and categories "
        f"({reason}); strongest signals: {', '.join(d.value for d in top)}."
    )
    return MotivationProfile(summary=summary, **dims)


def neutral_traits(reason: str) -> ItemTraits:
    """Return the neutral traits used for items with no text or a failed MOTE call."""
    return ItemTraits(
        strengths=DimensionStrengths.uniform(NEUTRAL_STRENGTH),
        traits=["traits unknown", reason[:60] or "no usable answer"],
    )


def overlap_score(profile: MotivationProfile, traits: ItemTraits) -> float:
    """Return the profile-weighted mean of the item's strengths, in [0, 1]."""
    weights = profile.strengths()
    item = traits.strengths.as_dict()
    total = sum(weights.values())
    if total == 0:
        return sum(item.values()) / len(item)
    return sum(weights[d] * item[d] for d in Dimension) / total


def overlap_alignment(
    item_id: str, profile: MotivationProfile, traits: ItemTraits
) -> AlignmentScore:
    """Score one candidate by weighted overlap, with a rationale naming the shared motivations."""
    weights = profile.strengths()
    item = traits.strengths.as_dict()
    shared = sorted(Dimension, key=lambda d: -(weights[d] * item[d]))
    matched = [d for d in shared if weights[d] * item[d] > 0.1][:3]
    named = ", ".join(d.value for d in matched) or "none strongly"
    return AlignmentScore(
        item_id=item_id,
        score=round(overlap_score(profile, traits), 4),
        matched_motivations=matched,
        rationale=f"Deterministic overlap of profile and traits; shared motivations: {named}.",
        source="fallback",
    )
