"""The Feast feature store: SDK wrapper, online key/value layout, batched writer, direct reader, materialization planning."""
