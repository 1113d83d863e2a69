"""Training commands and data generators, one module per task (they need torch: extra `train`)."""
