"""Features in DuckDB SQL: as-of snapshots of users and items, and the push of fresh events."""
