"""Pathology-aware extraction from messy (OCR'd) report text.

Pulls the fields a pathologist reads first — histologic type, grade, receptor status, tumour size,
lymph-node status, margins, lymphovascular invasion, stage — and writes them as one short line.
Rules are deliberately conservative: a field that is not clearly stated is left out, never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

FIELD_ORDER = ("type", "grade", "receptors", "size", "nodes", "margins", "lvi", "stage")

_HEADS = (r"adenocarcinoma|carcinoma|sarcoma|melanoma|lymphoma|glioblastoma|astrocytoma|oligodendroglioma|"
          r"mesothelioma|seminoma|blastoma|thymoma|paraganglioma|pheochromocytoma|cholangiocarcinoma|adenoma")
_MODIFIERS = {
    "invasive", "infiltrating", "infiltrative", "ductal", "duct", "lobular", "mucinous", "papillary", "serous",
    "clear", "cell", "squamous", "urothelial", "endometrioid", "hepatocellular", "renal", "medullary", "metaplastic",
    "micropapillary", "tubular", "cribriform", "apocrine", "signet", "ring", "basal", "small", "large", "neuroendocrine",
    "poorly", "moderately", "well", "differentiated", "undifferentiated", "high-grade", "low-grade", "high", "low",
    "grade", "multifocal", "keratinizing", "non-keratinizing", "nonkeratinizing", "follicular", "anaplastic",
    "chromophobe", "transitional", "spindle", "pleomorphic", "mixed", "epithelioid", "sarcomatoid", "acinar",
    "intramucosal", "in-situ", "breast", "colorectal", "colonic", "pulmonary", "gastric", "prostatic", "thyroid", "mammary", "metastatic",
}
_DIFF = {"well": "1", "moderately": "2", "poorly": "3"}
_ROMAN = {"i": "1", "ii": "2", "iii": "3", "iv": "4"}


@dataclass
class ReportFields:
    values: dict[str, str] = field(default_factory=dict)

    def ordered(self) -> list[tuple[str, str]]:
        return [(k, self.values[k]) for k in FIELD_ORDER if k in self.values]


def clean_text(text: str) -> str:
    """Undo common OCR damage: line-break periods inside sentences, hyphenated breaks, odd spacing."""
    t = text.replace("\r", " ").replace("\n", " ")
    t = re.sub(r"(\w)-\s+(\w)", r"\1\2", t) if re.search(r"\w-\s+[a-z]", t) else t
    t = re.sub(r"\.\s+(?=[a-z(])", " ", t)  # "ductal breast. carcinoma" -> "ductal breast carcinoma"
    t = re.sub(r"\s+", " ", t)
    return t.strip()


def _first(patterns: list[str], text: str, flags=re.I) -> re.Match | None:
    hits = [m for p in patterns for m in [re.search(p, text, flags)] if m]
    return min(hits, key=lambda m: m.start()) if hits else None


def histologic_type(t: str) -> str | None:
    """The first diagnosis head noun with its run of known modifiers ("invasive ductal carcinoma")."""
    candidates = []
    for m in re.finditer(rf"\b({_HEADS})\b(\s+in\s+situ)?", t, re.I):
        words = re.findall(r"[A-Za-z-]+", t[max(0, m.start() - 80) : m.start()])
        mods = []
        for w in reversed(words):
            if w.lower() not in _MODIFIERS:
                break
            mods.insert(0, w.lower())
        while mods and mods[0] in {"grade", "high", "low", "cell", "breast"}:
            mods.pop(0)
        mods = [w for w in mods if w not in {"poorly", "moderately", "well", "differentiated"}]
        name = " ".join(mods + [m.group(1).lower()]) + (" in situ" if m.group(2) else "")
        benign_context = re.search(r"\b(no|negative for|free of|without)\s+([\w-]+\s+){0,4}$", t[max(0, m.start() - 40) : m.start()], re.I)
        if not benign_context:
            candidates.append((m.group(2) is not None, m.group(1).lower() == "adenoma", m.start(), name))
    if not candidates:
        return None
    # invasive disease before in situ, carcinomas before adenomas, then the first mentioned
    candidates.sort()
    return candidates[0][3].replace("duct carcinoma", "ductal carcinoma")


def grade(t: str) -> str | None:
    g = _first([r"gleason\s+(?:score\s*)?[:=]?\s*(\d\s*\+\s*\d\s*(?:=\s*\d+)?)"], t)
    if g:
        return "Gleason " + re.sub(r"\s+", "", g.group(1))
    g = _first([r"nottingham\s+(?:histologic\s+)?(?:score|grade)\s*[:=]?\s*(\d)\s*(?:/|of)\s*9", r"nottingham\s+score\s*[:=]?\s*(\d)\b"], t)
    if g:
        score = int(g.group(1))
        return f"Nottingham grade {1 if score <= 5 else 2 if score <= 7 else 3}"
    g = _first([
        r"\b(?:SBR|nottingham|histologic|histological|combined|elston|WHO|overall|composite)\s+(?:\(?modified\s+SBR\)?\s+)?(?:histologic\s+)?grade\s*[:=]?\s*(I{1,3}V?|IV|[1-4])\b",
        r"\bgrade\s*[:=]?\s*(I{1,3}V?|IV|[1-4])(?:\s*(?:of|/)\s*(?:3|4|III|IV))?\b",
        r"\bG\s?(I{1,3}V?|IV|[1-4])\b",
    ], t)
    if g:
        v = g.group(1).lower()
        return f"grade {_ROMAN.get(v, v)}"
    d = _first([r"\b(well|moderately|poorly)[\s-]+differentiated\b"], t)
    if d:
        return f"{d.group(1).lower()} differentiated"
    return None


def _receptor(t: str, names: str) -> str | None:
    pos = r"(positive|negative|pos\b|neg\b|\+(?!\d)|-(?!\d)|equivocal|3\+|2\+|1\+|0\b)"
    m = re.search(rf"\b(?:{names})\b[^.;:]{{0,40}}?[:\s(]*{pos}", t, re.I)
    if not m:
        return None
    v = m.group(1).lower()
    if v in ("positive", "pos", "+", "3+"):
        return "+"
    if v in ("negative", "neg", "-", "0", "1+"):
        return "-"
    return " equivocal"


def receptors(t: str) -> str | None:
    parts = []
    for label, names in (("ER", r"ER|estrogen\s+receptors?|oestrogen\s+receptors?"), ("PR", r"PR|PgR|progesterone\s+receptors?"),
                         ("HER2", r"HER[-\s]?2(?:/neu)?|c-?erbB-?2")):
        v = _receptor(t, names)
        if v:
            parts.append(f"{label}{v}")
    return ", ".join(parts) or None


def tumour_size(t: str) -> str | None:
    num = r"(\d{1,2}(?:\.\d+)?)(?:\s*x\s*\d{1,2}(?:\.\d+)?){0,2}\s*(cm|mm)\b"
    keyed = _first([
        rf"(?:tumou?r\s+size|size\s+of\s+(?:the\s+)?(?:invasive\s+)?(?:tumou?r|carcinoma)|greatest\s+dimension|microscopic\s+measurement|tumou?r\s+diameter|largest\s+(?:tumou?r\s+)?(?:focus|dimension))[^.;]{{0,40}}?{num}",
        rf"(?:carcinoma|tumou?r)[^.;]{{0,60}}?(?:measuring|measures|diameter[:\s]*|size[:\s]*)\s*(?:up\s+to\s+|approximately\s+|a\s+good\s+)?{num}",
        rf"(?:carcinoma|tumou?r)(?:,\s*[\w\s()-]{{0,40}}?)?,\s*{num}",
    ], t)
    if not keyed:
        return None
    value, unit = float(keyed.group(1)), keyed.group(2).lower()
    cm = value / 10 if unit == "mm" else value
    return f"{cm:.1f} cm" if cm < 100 else None


def lymph_nodes(t: str) -> str | None:
    pn = re.search(r"\bp?N\s?([0-3][a-c]?|x)\b(?:\s*\(?\s*(\d+)\s*/\s*(\d+)\s*\)?)?", t)
    counts = re.findall(r"(?:lymph\s+nodes?|nodes?|LN)[^.;]{0,60}?\(?\b(\d{1,2})\s*(?:/|of)\s*(\d{1,2})\)?", t, re.I)
    counts = [(int(a), int(b)) for a, b in counts if int(a) <= int(b) and int(b) > 0]
    if counts:
        pos, tot = sum(a for a, _ in counts), sum(b for _, b in counts)
        return f"lymph nodes {pos}/{tot} positive" if pos else f"lymph nodes negative (0/{tot})"
    if pn and pn.group(2):
        return f"lymph nodes {pn.group(2)}/{pn.group(3)} positive"
    neg = re.search(r"lymph\s+nodes?[^.;]{0,40}?negative|negative\s+for\s+(?:metastatic\s+)?(?:carcinoma|tumou?r)[^.;]{0,30}lymph", t, re.I)
    if neg:
        return "lymph nodes negative"
    return None


def margins(t: str) -> str | None:
    m = _first([
        r"margins?\s+(?:of\s+(?:excision|resection)\s+)?(?:are\s+|is\s+)?(?:all\s+)?(negative|free|uninvolved|clear|positive|involved|close)",
        r"(tumou?r[-\s]free|free)\s+(?:\w+\s+)?(?:resection\s+)?margins?",
        r"margins?\s*[:]\s*(negative|free|uninvolved|clear|positive|involved|close)",
        r"(extension\s+to|infiltration\s+of)\s+the\s+(?:\w+\s+)?(?:resection\s+)?margin",
        r"\b(R0|R1|R2)\b",
    ], t)
    if not m:
        return None
    v = m.group(1).lower()
    if v in ("negative", "free", "uninvolved", "clear", "r0") or "free" in v:
        return "margins negative"
    if v == "close":
        return "margins close"
    return "margins positive"


def lymphovascular(t: str) -> str | None:
    neg = re.search(r"(?:no|without|negative\s+for)\s+(?:\w+\s+){0,2}(?:lympho-?vascular|angiolymphatic|vascular|lymphatic)\s+(?:space\s+)?invasion", t, re.I)
    m = re.search(r"(?:lympho-?vascular|angiolymphatic|lymphatic|vascular)\s+(?:space\s+)?invasion\s*[:\-]?\s*(present|absent|not\s+identified|identified|seen|not\s+seen|negative|positive)", t, re.I)
    if neg or (m and m.group(1).lower() in ("absent", "not identified", "not seen", "negative")):
        return "LVI absent"
    if m or re.search(r"\b(angioinvasion|invasion\s+of\s+the\s+lymph(?:atic)?\s+vessels)\b", t, re.I) or re.search(r"\bL1\b", t):
        return "LVI present"
    if re.search(r"\bL0\b", t):
        return "LVI absent"
    return None


def stage(t: str) -> str | None:
    tnm = re.search(r"\b(y?p?T(?:[0-4][a-d]?|is|x))\s*(?:\(\w+\)\s*)?,?\s*(p?N(?:[0-3][a-c]?|x)(?:\s*\(\w+\))?)?\s*,?\s*(p?M[01x])?", t)
    if tnm and (tnm.group(2) or tnm.group(1).lower().startswith(("pt", "ypt"))):
        return " ".join(g.replace(" ", "") for g in tnm.groups() if g)
    tsn = re.search(r"T\s+stage\s*:?\s*(\w+)\s+N\s+stage\s*:?\s*(\w+)(?:\s+M\s+stage\s*:?\s*(\w+))?", t, re.I)
    if tsn:
        return " ".join(f"{p}{v}" for p, v in zip("TNM", tsn.groups()) if v)
    ajcc = re.search(r"\bstage\s*:?\s*(IV|I{1,3})\s?([ABC])?\b", t)
    if ajcc:
        return f"stage {ajcc.group(1)}{ajcc.group(2) or ''}"
    return None


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "type": histologic_type, "grade": grade, "receptors": receptors, "size": tumour_size, "nodes": lymph_nodes,
    "margins": margins, "lvi": lymphovascular, "stage": stage,
}


def extract_fields(text: str) -> ReportFields:
    t = clean_text(text)
    out = ReportFields()
    for name, fn in EXTRACTORS.items():
        v = fn(t)
        if v:
            out.values[name] = v
    return out


def compose(fields: ReportFields, count_tokens: Callable[[str], int] | None = None, max_tokens: int | None = None) -> tuple[str, list[str]]:
    """Join fields by priority; drop the least important ones until the line fits ``max_tokens``.

    Returns the summary and the names of the fields kept.
    """
    items = fields.ordered()
    while items:
        s = "; ".join(v for _, v in items)
        if count_tokens is None or max_tokens is None or count_tokens(s) <= max_tokens:
            return s, [k for k, _ in items]
        items = items[:-1]
    return "", []
