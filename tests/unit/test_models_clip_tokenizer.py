"""``histosynth.models.clip_tokenizer``: OpenAI's CLIP BPE tokenizer, built offline (the ``tokenizer`` fixture,
tests/unit/conftest.py)."""


def test_clip_tokenizer_matches_open_clip(tokenizer):
    from open_clip.tokenizer import SimpleTokenizer

    st = SimpleTokenizer()
    for text in [
        "a histopathological image of an area with colorectal adenocarcinoma epithelium",
        "ER+, PR- (HER2 2+); Nottingham grade 3 — café",
    ]:
        assert tokenizer(text)["input_ids"] == [49406, *st.encode(text), 49407]
    assert tokenizer.model_max_length == 77
