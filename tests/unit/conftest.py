"""Fixtures shared by several unit test modules."""

import pytest

from _diffusion_setup import setup, trained  # noqa: F401  (fixtures)
from _embedding_setup import patches, embedder  # noqa: F401  (fixtures)
from _paper_setup import pathldm  # noqa: F401  (fixtures)


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    """OpenAI's CLIP BPE tokenizer, built offline from open_clip's vocabulary."""
    from histosynth.models.clip_tokenizer import build_clip_tokenizer

    return build_clip_tokenizer(tmp_path_factory.mktemp("tok"))
