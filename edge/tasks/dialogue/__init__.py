"""Dialogue memory (SirLLM and StreamingLLM) over an on-device decoder LM."""
