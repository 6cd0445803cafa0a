"""Fixtures shared by several unit test modules."""

from _diffusion_setup import setup, trained  # noqa: F401  (fixtures)
from _embedding_setup import patches, embedder  # noqa: F401  (fixtures)
