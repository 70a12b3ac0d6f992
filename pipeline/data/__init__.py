"""Raw data in: loaders and landing manifest, the synthetic generator, signals → confidence, the GX suite."""
