"""Model registry: immutable versions, the champion pointer, the evaluation gate and lineage."""
