"""A real CLIP BPE tokenizer, offline: OpenAI's vocabulary as shipped inside ``open_clip_torch``.

``open_clip/bpe_simple_vocab_16e6.txt.gz`` holds the 48,894 BPE merges of OpenAI CLIP. The HF
vocabulary is derived exactly as CLIP's own ``SimpleTokenizer`` does it (byte-level alphabet, the
same alphabet with ``</w>``, one token per merge, then the two special tokens), so token ids equal
those of ``openai/clip-vit-large-patch14`` and the SD text encoders.
"""

from __future__ import annotations

import gzip
import json
import os
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

CLIP_MAX_LENGTH = 77
N_MERGES = 49152 - 256 - 2  # the slice CLIP's SimpleTokenizer uses


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode map (as in CLIP's simple_tokenizer.py)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_clip_vocab(out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` built from open_clip's shipped BPE file."""
    import open_clip

    src = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(src).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : N_MERGES + 1]]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return out / "vocab.json", out / "merges.txt"


def build_clip_tokenizer(out_dir: str | os.PathLike) -> CLIPTokenizer:
    """Build the tokenizer, save it with ``save_pretrained`` into ``out_dir``, and return it."""
    vocab, merges = write_clip_vocab(out_dir)
    tok = CLIPTokenizer(vocab=str(vocab), merges=str(merges), model_max_length=CLIP_MAX_LENGTH)
    tok.save_pretrained(out_dir)
    return tok


@lru_cache(maxsize=4)
def load_tokenizer(path: str) -> CLIPTokenizer:
    """A saved tokenizer folder (e.g. ``results/models/base/tokenizer``) or a hub id."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)
