import pandas as pd
import pytest

from histosynth.config import default_config
from histosynth.errors import InputError
from histosynth.models.clip_tokenizer import build_clip_tokenizer
from histosynth.text.extract import clean_text, compose, extract_fields
from histosynth.text.prompts import number_words, token_counter
from histosynth.text.summarize import read_reports, summarize_reports


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_clip_tokenizer(tmp_path_factory.mktemp("tok"))


def test_clip_tokenizer_matches_open_clip(tokenizer):
    from open_clip.tokenizer import SimpleTokenizer

    st = SimpleTokenizer()
    for text in [
        "a histopathological image of an area with colorectal adenocarcinoma epithelium",
        "ER+, PR- (HER2 2+); Nottingham grade 3 — café",
    ]:
        assert tokenizer(text)["input_ids"] == [49406, *st.encode(text), 49407]
    assert tokenizer.model_max_length == 77


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "FINAL DIAGNOSIS: Infiltrating duct carcinoma, Nottingham score 6/9. ER positive, PR negative, HER-2/neu negative (score 1+).",
            {"type": "invasive ductal carcinoma (NST)", "grade": "Nottingham grade 2", "receptors": "ER+, PR-, HER2-"},
        ),
        (
            "Invasive lobular carcinoma, SBR grade II, two foci (1.9cm and 2.2 cm). Margins are negative.",
            {
                "type": "invasive lobular carcinoma",
                "grade": "Nottingham grade 2",
                "size": "tumor 2.2 cm",
                "margins": "margins negative",
            },
        ),
        (
            "poorly differentiated invasive ductal breast. carcinoma measuring a good 55 mm with invasion of the lymph vessels. G3, pT4b, pN1a (1/11), pMx, stage III B. R1.",
            {
                "type": "invasive ductal carcinoma (NST)",
                "grade": "Nottingham grade 3",
                "size": "tumor 5.5 cm",
                "lvi": "LVI present",
                "margins": "margins positive",
            },
        ),
        (
            "Prostate, radical prostatectomy: adenocarcinoma, Gleason score 3 + 4 = 7. Lymph nodes: 0/8.",
            {"type": "adenocarcinoma", "grade": "Gleason 3+4=7", "nodes": "lymph nodes negative (0/8)"},
        ),
        (
            "Right temporal tumor: glioblastoma multiforme, grade IV of IV (WHO scale).",
            {"type": "glioblastoma multiforme", "grade": "grade 4"},
        ),
        ("Grade: 2. T Stage: 2 N Stage: 0 M Stage: 0", {"grade": "grade 2", "stage": "T2 N0 M0"}),
        ("Tubular adenoma. Negative for high-grade dysplasia and carcinoma.", {"type": "tubular adenoma"}),
        (
            "No lymphovascular invasion identified. Tumor is estrogen receptor positive.",
            {"lvi": "LVI absent", "receptors": "ER+"},
        ),
    ],
)
def test_extraction_on_report_snippets(text, expected):
    got = extract_fields(text).values
    for key, value in expected.items():
        assert got.get(key) == value, (key, got)


def test_nothing_is_invented_from_empty_or_irrelevant_text():
    assert extract_fields("").values == {}
    assert extract_fields("Specimen received fresh, labelled with the patient's name. Gross only.").values == {}


def test_ocr_line_break_periods_are_undone():
    assert clean_text("ductal breast. carcinoma with. invasion") == "ductal breast carcinoma with invasion"


def test_compose_drops_least_important_fields_to_fit(tokenizer):
    fields = extract_fields(
        "Invasive ductal carcinoma, grade 3, ER positive, PR positive, HER2 negative, 2.0 cm. Margins negative. pT2 pN0."
    )
    count = token_counter(tokenizer)
    full, kept = compose(fields, count, 77)
    assert kept[0] == "type" and "margins" in kept
    short, kept_short = compose(fields, count, 14)
    assert count(short) <= 14 and kept_short == kept[: len(kept_short)] and len(kept_short) < len(kept)


def test_real_breast_reports_give_fitting_summaries(shared_data, tokenizer):
    reports = pd.read_csv(shared_data / "reports" / "pathrepbench_test.csv")
    breast = reports[reports["type_name"] == "Breast invasive carcinoma"]
    assert len(breast) == 98
    count = token_counter(tokenizer)
    found = 0
    for text in breast["text"]:
        fields = extract_fields(text)
        summary, _ = compose(fields, count, 60)
        assert count(summary) <= 60
        found += "type" in fields.values and "carcinoma" in fields.values["type"]
    assert found >= 90  # histologic type found in nearly every breast report


def test_report_reading_errors(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("case_id,text\nA,one\nA,two\n")
    with pytest.raises(InputError, match=r"duplicate ids \['A'\]"):
        read_reports(f, "case_id", "text")
    f.write_text("id,body\nA,one\n")
    with pytest.raises(InputError, match="lacks column"):
        read_reports(f, "case_id", "text")
    f.write_bytes(b"case_id,text\nA,caf\xe9 carcinoma\n,orphan\n")
    with pytest.raises(InputError, match="rows without 'case_id'"):
        read_reports(f, "case_id", "text")
    f.write_bytes(b"case_id,text\nA,caf\xe9 carcinoma\nB,\n")
    reps = read_reports(f, "case_id", "text")
    assert reps[0].text == "caf\ufffd carcinoma" and reps[1].text == ""
    d = tmp_path / "txt"
    d.mkdir()
    (d / "P1.txt").write_bytes(b"Invasive ductal carcinoma \xff")
    assert read_reports(d, "case_id", "text")[0].case_id == "P1"


def test_extractive_summaries_tsv_counts_empty_reports(tmp_path, tokenizer):
    f = tmp_path / "r.csv"
    f.write_text("case_id,text\nA,Invasive ductal carcinoma grade 2\nB,\n")
    cfg = default_config()["pathology_reports"]
    df = summarize_reports(f, tmp_path / "s.tsv", cfg, token_counter(tokenizer), progress=False)
    assert df.set_index("case_id")["status"].to_dict() == {"A": "extracted", "B": "empty"}
    assert pd.read_csv(tmp_path / "s.tsv", sep="\t").shape == (2, 5)


def test_number_words():
    assert [number_words(n) for n in (0, 7, 13, 20, 32, 99, 105)] == [
        "zero",
        "seven",
        "thirteen",
        "twenty",
        "thirty-two",
        "ninety-nine",
        "one hundred five",
    ]
