"""Classifying streams (human activity from a watch IMU): data, replay view and evaluation."""
