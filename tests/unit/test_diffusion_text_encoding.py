"""``histosynth.diffusion.text_encoding``: PathLDM's 154-token prompts as two 77-token chunks of the CLIP text
encoder, the same in training and sampling."""

import pytest


@pytest.mark.slow  # the tiny PathLDM set-up trains and samples
def test_two_chunk_encoding_reads_154_tokens_and_matches_one_chunk_on_short_prompts(pathldm):
    import torch
    from transformers import AutoTokenizer, CLIPTextModel

    from histosynth.diffusion.text_encoding import encode, tokenize

    tok = AutoTokenizer.from_pretrained(pathldm["base"], subfolder="tokenizer")
    te = CLIPTextModel.from_pretrained(pathldm["base"], subfolder="text_encoder").eval()
    short = ["high tumor; low til; invasive ductal carcinoma"]
    with torch.inference_mode():
        one = encode(te, tokenize(tok, short, 1), tok.eos_token_id)
        two = encode(te, tokenize(tok, short, 2), tok.eos_token_id)
        n_real = int(tokenize(tok, short, 1).ne(tok.eos_token_id).sum()) + 1  # BOS .. first EOS
        assert two.shape[1] == 154 and one.shape[1] == 77
        # causal: up to the EOS the two-chunk states are CLIP's own
        assert torch.allclose(one[:, :n_real], two[:, :n_real], atol=1e-5)
        long = " ".join(["carcinoma"] * 90)
        a, b = (encode(te, tokenize(tok, [long + tail], 2), tok.eos_token_id) for tail in (" lobular", " ductal"))
        a1, b1 = (encode(te, tokenize(tok, [long + tail], 1), tok.eos_token_id) for tail in (" lobular", " ductal"))
        assert not torch.allclose(a, b) and torch.allclose(a1, b1)  # words past token 77 count only with two chunks
