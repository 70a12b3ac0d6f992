"""One thin module per dvc.yaml stage (read inputs, call the libraries, write outputs) and their ordered registry."""
