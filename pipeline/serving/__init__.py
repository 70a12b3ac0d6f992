"""Online serving: champion model + Feast online features → top-k."""
