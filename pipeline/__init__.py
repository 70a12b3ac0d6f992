"""recflow: recommender pipeline for implicit feedback."""
