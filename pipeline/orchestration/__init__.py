"""Front doors that run the stages: the in-process DVC runner, the Airflow adapter and local Airflow."""
