"""Prompts to the UNet's cross-attention input: the one place where prompts are tokenized and encoded,
for the latent cache, training (when the text encoder trains), validation grids, sampling and the
filter's regeneration, so that all of them read a prompt the same way.

``train.text_chunks`` = 1 is Stable Diffusion's own encoding: 77 tokens through CLIP's text model.
With ``chunks`` > 1 a prompt is tokenized to ``chunks`` x 77 tokens (one BOS, one EOS, padding) and
read as PathLDM does (``FrozenCLIPEmbedder`` / ``clip_transformer_forward``): every 77-token chunk
gets CLIP's token and position embeddings (positions 0-76 in each chunk), the chunks are concatenated
and one pass of the transformer runs over the whole sequence under one causal mask, with the padding
after the EOS masked. The UNet's cross-attention reads a sequence of any length, so it takes the
``chunks`` x 77 states as they are; the trained model records ``text_chunks`` in its metadata
(``trained.py``), so sampling always encodes as training did.
"""

from __future__ import annotations

import numpy as np


def chunk_length(text_encoder) -> int:
    """Tokens one chunk holds: the text encoder's position embeddings (77 for CLIP)."""
    return int(text_encoder.config.max_position_embeddings)


def tokenize(tokenizer, prompts: list[str], chunks: int):
    """Token ids (N, chunks x 77): BOS, the prompt, EOS, padding; longer prompts are truncated
    (``build_prompts`` counts and logs those beforehand)."""
    return tokenizer(
        list(prompts),
        padding="max_length",
        max_length=tokenizer.model_max_length * chunks,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def encode(text_encoder, ids, eos_token_id: int):
    """Hidden states (N, T, D) of token ids (N, T) from :func:`tokenize`."""
    import torch
    from transformers.masking_utils import create_causal_mask

    length = chunk_length(text_encoder)
    ids = ids.to(text_encoder.device)
    if ids.shape[1] == length:
        return text_encoder(ids)[0]
    if ids.shape[1] % length:
        raise ValueError(f"{ids.shape[1]} tokens are not whole chunks of {length}")
    # as CLIPTextModel.forward, but the embeddings are per chunk and the mask spans all chunks
    model = getattr(text_encoder, "text_model", text_encoder)
    hidden = torch.cat([model.embeddings(input_ids=c) for c in ids.split(length, dim=1)], dim=1)
    is_eos = (ids == eos_token_id).int()
    padding = (torch.cumsum(is_eos, 1) - is_eos) == 0  # up to and including the first EOS
    mask = create_causal_mask(
        config=model.config, inputs_embeds=hidden, attention_mask=padding.long(), past_key_values=None
    )
    out = model.encoder(inputs_embeds=hidden, attention_mask=mask, is_causal=True).last_hidden_state
    return model.final_layer_norm(out)


def encode_prompts(
    tokenizer, text_encoder, prompts: list[str], chunks: int, batch: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and float32 hidden states of ``prompts``, in batches (the latent cache)."""
    import torch

    ids = tokenize(tokenizer, prompts, chunks)
    out = []
    with torch.inference_mode():
        for s in range(0, len(ids), batch):
            out.append(encode(text_encoder, ids[s : s + batch], tokenizer.eos_token_id).float().cpu())
    return ids.numpy(), torch.cat(out).numpy()


def pipeline_embeds(pipe, prompts: list[str], negative: list[str] | None, chunks: int) -> dict:
    """``prompt_embeds`` / ``negative_prompt_embeds`` keyword arguments of a diffusers pipeline call,
    so that sampling reads prompts exactly as training did."""
    import torch

    def embed(texts):
        with torch.inference_mode():
            return encode(pipe.text_encoder, tokenize(pipe.tokenizer, texts, chunks), pipe.tokenizer.eos_token_id)

    # the empty prompt is the unconditional one, as in training's prompt dropout
    return {"prompt_embeds": embed(prompts), "negative_prompt_embeds": embed(negative or [""] * len(prompts))}
