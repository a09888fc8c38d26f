"""Where item traits persist and where item ids resolve to items (catalogues, item files)."""
