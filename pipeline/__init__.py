"""recflow: an orchestrated recommender pipeline for implicit feedback."""
