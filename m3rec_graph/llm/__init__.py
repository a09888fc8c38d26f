"""The provider layer: model factory, registry (prices, lifecycle, capabilities), routing, tokens, rate limits, usage."""
