"""Streaming anomaly detection: the detector, fault injection, tuning, replay view and evaluation."""
