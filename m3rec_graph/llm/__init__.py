"""The provider layer: the model registry (prices, lifecycle, capabilities)."""
