"""Attitude estimation from an IMU: the BROAD inclination metric, replay view, evaluation and peers."""
