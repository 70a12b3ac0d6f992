"""Recommenders behind one contract: LightFM hybrid, ALS, popularity; feature tokens and top-k ranking."""
