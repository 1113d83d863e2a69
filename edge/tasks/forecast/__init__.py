"""Forecasting sensor series: ETT protocol, baselines, replay view and evaluation."""
