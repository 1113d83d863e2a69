import os

from hypothesis import settings

# Examples are drawn from a fixed seed so that CI and a developer see the same cases.
settings.register_profile("edge", derandomize=True, deadline=None, print_blob=True, max_examples=20)
# More examples on demand: HYPOTHESIS_PROFILE=thorough pytest ...
settings.register_profile("thorough", deadline=None, print_blob=True, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "edge"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains a model for seconds to a minute (tests/test_learning.py)")

try:  # torch's intra-op threads only contend on per-sample-sized ops (65 ms vs 3.5 ms a step seen here)
    import torch
    torch.set_num_threads(1)
except ImportError:
    pass
