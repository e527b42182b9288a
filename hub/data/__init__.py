"""Data preparation (``python -m hub.data prepare``) and training datasets."""
