"""LightGCN training package (run as `cd code && python3 main.py`)."""
