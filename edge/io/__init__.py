"""Readers and writers of recordings, the resampler and the one atomic write: the runtime's I/O."""
