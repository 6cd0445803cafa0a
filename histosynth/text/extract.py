"""Pathology-aware extraction from messy (OCR'd) report text.

Pulls the fields a pathologist reads first — histologic type, grade, ER / PR / HER2, the largest
invasive tumour's size, lymph-node status, lymphovascular invasion, margins, stage — and writes them
as one short line. How it reads a report:

- **Sections.** The report is cut at its headings; the final diagnosis and the synoptic (CAP)
  summary outrank free text, which outranks the gross description; the clinical history and
  pre-operative diagnosis are never read (they describe an earlier biopsy or a clinician's guess).
  An addendum that reports receptors or HER2 outranks the body for those fields.
- **Negation and hedging.** "No lymphovascular invasion", "negative for metastatic carcinoma",
  "suspicious for", "cannot be excluded", "pending" are read as such; hedged statements are dropped.
- **Leave it out.** Where the best sections disagree (grade II in the diagnosis, III in the synoptic;
  ER positive in one line, negative in another) the field is left out: a wrong receptor status in a
  conditioning prompt is worse than none.

Rules are general pathology language (CAP synoptic wording, Nottingham/SBR grading, ASCO/CAP HER2
scoring, TNM), not tuned to single reports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

FIELD_ORDER = ("type", "grade", "receptors", "size", "nodes", "lvi", "margins", "stage")

# --------------------------------------------------------------------------------------------
# text clean-up and sections
# --------------------------------------------------------------------------------------------


def clean_text(text: str) -> str:
    """Undo common OCR damage: line-break periods inside sentences, hyphenated breaks, odd spacing."""
    t = str(text).replace("\r", " ").replace("\n", " ")
    t = re.sub(r"(\w)-\s+(\w)", r"\1\2", t) if re.search(r"\w-\s+[a-z]", t) else t
    t = re.sub(r"\.\s+(?=[a-z(])", " ", t)  # "ductal breast. carcinoma" -> "ductal breast carcinoma"
    t = re.sub(r"\b(in)[\s-]+(situ)\b", r"\1 \2", t, flags=re.I)
    # a sentence does not end on a function word: "IS. INTERPRETED AS. NEGATIVE" is one OCR'd line
    t = re.sub(r"\b(is|are|was|were|as|the|of|for|and|with|to|by|in|an|or|be|at|than|from)\.\s+", r"\1 ", t, flags=re.I)
    t = re.sub(r"\.\s+(?=(?:for|of|and|or|than)\s)", " ", t, flags=re.I)
    t = re.sub(r"\s+", " ", t)
    return t.strip()


# Headings, most specific first. Kinds: dx (final diagnosis, synoptic summary), add (addendum),
# text (microscopic, comment, unlabelled), gross, skip (history, pre-op diagnosis, methodology).
_HEADINGS = [
    (
        "skip",
        r"(?:clinical|pertinent)\s+(?:history|information|data|notes?|diagnosis(?:\s*(?:and|&)\s*history)?)|history|"
        r"pre-?\s?operative\s+diagnosis|post-?\s?operative\s+diagnosis|indications?(?:\s+for\s+(?:procedure|surgery))?|"
        r"reason\s+for\s+(?:referral|submission|consultation)|clinical\s+impression|"
        r"methodology|antibody\s+and\s+assay\s+methodology|references?|disclaimer|interpretation\s+criteria",
    ),
    (
        "add",
        r"addend(?:um|a)(?:\s+(?:report|diagnosis|comment))?|amended\s+(?:report|diagnosis)|revised\s+(?:report|diagnosis)|"
        r"supplement(?:al|ary)\s+report",
    ),
    (
        "dx",
        r"(?:final\s+)?(?:surgical\s+)?(?:pathologic(?:al)?\s+)?diagnos[ie]s|final\s+report|"
        r"synoptic(?:\s+report)?|summary(?:\s+of\s+findings)?|(?:cap\s+)?(?:cancer\s+)?(?:case\s+)?summary|"
        r"(?:breast\s+)?pathologic(?:al)?\s+(?:parameters|findings|staging)|tumou?r\s+(?:summary|characteristics)|"
        r"conclusions?|(?:pathologic(?:al)?\s+)?interpretation|(?:final\s+|diagnostic\s+)?impression",
    ),
    (
        "gross",
        r"gross\s+(?:description|examination|pathology|findings)?|macroscopic(?:\s+description)?|"
        r"specimens?\s+received|intra-?\s?operative\s+(?:consultation|diagnosis)(?:\s+diagnosis)?|frozen\s+section(?:\s+diagnosis)?|"
        r"block\s+summary|summary\s+of\s+sections|cassette\s+key",
    ),
    (
        "spec",
        r"specimens?(?:\s*/\s*procedure|\s+submitted|\s+type)?|material\s+submitted|procedure|source\s+of\s+specimen",
    ),
    (
        "text",
        r"microscopic(?:\s+(?:description|examination|findings))?|light\s+microscopy|comments?|notes?|"
        r"special\s+stains|immunohistochemistry(?:\s+results)?|results?\s+of\s+special\s+investigations",
    ),
]
_HEAD_RE = re.compile(
    r"(?:^|(?<=[.:;]\s)|(?<=\)\s))("
    + "|".join(f"(?P<{k}{i}>{p})" for i, (k, p) in enumerate(_HEADINGS))
    + r")\s*(?:\(continued\)\s*)?(?P<end>:|\.|-\s|(?=\s+[a-z]))",
    re.I,
)
RANK = {"add": 3, "dx": 3, "text": 2, "body": 2, "gross": 1, "skip": -1}


@dataclass
class Section:
    kind: str
    text: str


def sections(text: str) -> list[Section]:
    """The report cut at its headings; text before the first heading is 'body'."""
    out, kind, pos = [], "body", 0
    for m in _HEAD_RE.finditer(text):
        new = next(k.rstrip("0123456789") for k, v in m.groupdict().items() if v and k != "end")
        heading = m.group(1)
        # a heading is upper case or ends with ':'; "the diagnosis." inside a sentence is none; an
        # upper-case heading may have lost its period to OCR clean-up ("CLINICAL HISTORY with ...")
        if not (heading.isupper() or m.group("end") == ":" or (heading[0].isupper() and m.group("end"))):
            continue
        if new == "spec":  # a specimen label ends a clinical history, but does not cut a diagnosis in two
            if kind not in ("skip", "body"):
                continue
            new = "text"
        if m.start() > pos:
            out.append(Section(kind, text[pos : m.start()]))
        kind, pos = new, m.end()
    out.append(Section(kind, text[pos:]))
    return [s for s in out if s.text.strip()]


def _sentences(text: str) -> list[str]:
    return [
        s for s in re.split(r"(?<=[.;])\s+(?=[A-Z0-9(-])|(?<=[.;:])\s+-\s+|(?<=\.)\s*(?=\d\.\s)", text) if s.strip()
    ]


_NEG = re.compile(
    r"\b(?:no|not|without|negative\s+for|free\s+of|absence\s+of|absent|nor|neither|rule\s+out)\b"
    r"(?:(?!\bwith\b|\bbut\b|\bwhile\b|\bwhereas\b|\bhowever\b|\bshowing\b)[^;.]){0,45}$",
    re.I,
)
_HEDGE = re.compile(
    r"\b(?:unclear|uncertain|whether|suspicious|suspect(?:ed)?|possibl[ey]|probabl[ey]|equivocal\s+for|questionable|cannot\s+be\s+(?:ruled\s+out|excluded)|"
    r"indeterminate|favou?r(?:ed|s)?|consider|may\s+represent|rule\s+out|r/o|vs\.?|versus)\b[^;.]{0,45}$",
    re.I,
)
_BOILERPLATE = re.compile(
    r"defined\s+as|(?:>|≥|greater\s+than)\s*\d+\s*%\s+of\s+(?:tumou?r\s+)?cells\s+(?:with|show)|is\s+calculated|scoring\s+range|interpret(?:ed|ation)\s+(?:as|guidelines?)\s+(?:follows|positive\s+if)|"
    r"reference\s+range|cut-?off|guideline|recommend|proportion\s+score\s*\(|(?:positive|negative)\s+(?:and\s+negative\s+)?controls?\b|"
    r"(?:>|<|≥|≤)\s*\d+(?:\.\d+)?\s*(?:ratio\s+)?(?:is|are)\s+(?:considered|defined)|"
    r"(?:0|1|2|3)\s*=\s*(?:no|weak|<)",
    re.I,
)


@dataclass
class Hit:
    value: object
    rank: int
    order: int


def _collect(secs: list[Section], finder: Callable[[str], list], rank_of=None) -> list[Hit]:
    hits = []
    for i, s in enumerate(secs):
        rank = (rank_of or RANK).get(s.kind, 2)
        if rank < 0:
            continue
        for v in finder(s.text):
            hits.append(Hit(v, rank, i))
    return hits


def _best(hits: list[Hit]) -> list:
    if not hits:
        return []
    top = max(h.rank for h in hits)
    return [h.value for h in hits if h.rank == top]


def _agreed(values: list):
    """The one value all the best statements agree on; None where they disagree (leave it out)."""
    return values[0] if values and all(v == values[0] for v in values) else None


# --------------------------------------------------------------------------------------------
# histologic type
# --------------------------------------------------------------------------------------------

_BREAST = re.compile(
    r"\bbreast\b|\bmammary\b|\bmastectomy\b|\blumpectomy\b|\bduct(?:al)?\s+carcinoma\b|\blobular\s+carcinoma\b|\bnipple\b|"
    r"\bnottingham\b|\bestrogen\b|\bbloom[- ]richardson\b",
    re.I,
)
_INSITU = r"(?:ductal|duct|lobular|intraductal)(?:\s+and\s+(?:ductal|lobular))?\s+carcinomas?,?\s+in[- ]?situ|\b(?:dcis|lcis)\b|in[- ]?situ\s+(?:ductal|lobular\s+)?carcinoma|intraductal\s+carcinoma"
_SPECIAL = [  # breast special types: name a pathologist writes, pattern
    ("invasive medullary carcinoma", r"medullary"),
    ("metaplastic carcinoma", r"metaplastic|spindle\s+cell|sarcomatoid|squamous\s+cell"),
    ("invasive micropapillary carcinoma", r"micropapillary"),
    ("invasive papillary carcinoma", r"(?<!micro)papillary"),
    ("invasive tubular carcinoma", r"tubular"),
    ("invasive cribriform carcinoma", r"cribriform"),
    ("invasive apocrine carcinoma", r"apocrine"),
    ("secretory carcinoma", r"secretory"),
    ("neuroendocrine carcinoma", r"neuroendocrine|small\s+cell"),
    ("adenoid cystic carcinoma", r"adenoid\s+cystic"),
]
_TYPE_NAMES = {
    "ductal": "invasive ductal carcinoma (NST)",
    "lobular": "invasive lobular carcinoma",
    "mixed": "invasive mixed ductal and lobular carcinoma",
    "mucinous": "invasive mucinous carcinoma",
}


def _breast_type_phrases(text: str) -> list[str]:
    """Canonical breast type of each invasive-carcinoma phrase in ``text`` (in-situ disease removed)."""
    t = re.sub(
        _INSITU + r"(?:\s*\((?:dcis|lcis)\))?(?:,?\s+(?:of\s+)?(?:the\s+)?(?:[\w-]+\s+){0,2}(?:sub)?types?\b)?",
        " ",
        text,
        flags=re.I,
    )
    t = re.sub(
        r"\b(?:atypical\s+)?(?:ductal|lobular)\s+(?:hyperplasia|neoplasia|extension|cancerization|involvement)\b|"
        r"\blobular\s+(?:carcinoma\s+)?in\s+situ\b|\bductules?\b",
        " ",
        t,
        flags=re.I,
    )
    out = []
    carcinoma = r"(?:carcinoma|adenocarcinoma|ca\b|cancer)"
    for m in re.finditer(
        rf"\b(?:invasive|infiltrating|infiltrative|invasion)\b[^.;:]{{0,80}}?\b{carcinoma}[^.;:]{{0,50}}|"
        rf"\b(?:ductal|duct|lobular|mucinous|colloid|medullary|metaplastic|papillary|micropapillary|tubular|apocrine|"
        rf"secretory|neuroendocrine|cribriform|mixed)\b[^.;:]{{0,40}}?\b{carcinoma}(?:[^.;:]{{0,60}})|"
        r"histologic\s+(?:tumou?r\s+)?type(?:/subtype)?\s*[:=]?\s*[^.;]{0,60}|\bwho\s+classification\b[^.;]{0,60}|"
        r"\b(?:idc|ilc)\b",
        t,
        re.I,
    ):
        s = m.group(0).lower()
        if _NEG.search(t[max(0, m.start() - 50) : m.start()]) or re.search(
            r"\bno\s+(?:residual\s+)?(?:invasive|infiltrating)\b", s
        ):
            continue
        if re.search(r"\bin\s+situ\b|\bmetasta", s) and not re.search(r"\b(?:invasive|infiltrating)\b", s):
            continue
        if _HEDGE.search(t[max(0, m.start() - 40) : m.start()]):
            continue
        special = next(
            (
                name
                for name, p in _SPECIAL
                if re.search(
                    rf"\b(?:{p})\b(?:\s+(?:type|carcinoma|adenocarcinoma|features?\s+predominant))|"
                    rf"\b(?:carcinoma|type)\b,?\s+(?:of\s+)?(?:the\s+)?(?:{p})\s+type|"
                    rf"\b(?:{p})\s+(?:variant|subtype)",
                    s,
                )
            ),
            None,
        )
        ductal = re.search(r"\bduct(?:al)?\b|\bidc\b|no\s+special\s+type|\bnst\b|\bnos\b", s)
        lobular = re.search(r"\blobular\b|\bilc\b", s)
        if re.search(r"\b(?:mucinous|colloid)\s+(?:\w+\s+)?(?:carcinoma|adenocarcinoma|type)\b", s) and not re.search(
            r"with\s+(?:focal\s+)?mucinous", s
        ):
            out.append("mucinous")
        elif special and not re.search(
            r"(?:with|focal|areas\s+of)\s+(?:\w+\s+)?(?:"
            + next(p for n, p in _SPECIAL if n == special)
            + r")\s+(?:features|differentiation)",
            s,
        ):
            out.append(special)
        elif (ductal and lobular) or re.search(
            r"\bmixed\s+(?:type|ductal|carcinoma)|ductal\s+and\s+lobular|lobular\s+and\s+ductal", s
        ):
            out.append("mixed")
        elif lobular:
            out.append("lobular")
        elif ductal:
            out.append("ductal")
    return out


_HEADS = (
    r"adenocarcinoma|(?:micro)?carcinoma|sarcoma|melanoma|lymphoma|glioblastoma|astrocytoma|oligodendroglioma|oligoastrocytoma|"
    r"mesothelioma|seminoma|blastoma|thymoma|paraganglioma|pheochromocytoma|cholangiocarcinoma|carcinosarcoma|"
    r"leiomyosarcoma|liposarcoma|germ\s+cell\s+tumou?r|teratoma|gist|gastrointestinal\s+stromal\s+tumou?r|adenoma|"
    r"ca(?=[\s,.;]|$)(?!\s*[-\d])"
)
_MODIFIERS = {
    "invasive",
    "infiltrating",
    "ductal",
    "duct",
    "lobular",
    "mucinous",
    "papillary",
    "serous",
    "clear",
    "cell",
    "squamous",
    "urothelial",
    "endometrioid",
    "hepatocellular",
    "renal",
    "medullary",
    "metaplastic",
    "micropapillary",
    "tubular",
    "signet",
    "ring",
    "basal",
    "small",
    "large",
    "neuroendocrine",
    "keratinizing",
    "non-keratinizing",
    "nonkeratinizing",
    "follicular",
    "anaplastic",
    "chromophobe",
    "transitional",
    "spindle",
    "pleomorphic",
    "mixed",
    "epithelioid",
    "sarcomatoid",
    "acinar",
    "diffuse",
    "intestinal",
    "undifferentiated",
    "dedifferentiated",
    "myxoid",
    "embryonal",
    "adrenocortical",
    "high-grade",
    "low-grade",
    "cystic",
    "mucin-producing",
    "colloid",
    "anaplastic",
    "multiforme",
    "classic",
    "conventional",
    "b-cell",
    "intramucosal",
    "villous",
    "tubulovillous",
    "sessile",
    "serrated",
    "hepatoid",
}


def _generic_types(text: str) -> list[tuple[int, str]]:
    """(priority, name) per diagnosis head noun with its run of known modifiers ("clear cell renal cell carcinoma");
    priority 0 for a named malignancy, 1 for a bare 'carcinoma', 2 for an adenoma."""
    out = []
    for m in re.finditer(rf"\b({_HEADS})\b(\s+multiforme)?(\s+in\s+situ)?", text, re.I):
        if m.group(3):
            continue
        before = text[max(0, m.start() - 80) : m.start()]
        if (
            _NEG.search(before[-50:])
            or _HEDGE.search(before[-40:])
            or re.search(r"\bmetastatic\s+(?:\w+\s+)?$|\bhistory\s+of\s+(?:\w+\s+)?$", before, re.I)
        ):
            continue
        words = re.findall(r"[A-Za-z-]+", before)
        mods = []
        for w in reversed(words):
            if w.lower() not in _MODIFIERS:
                break
            mods.insert(0, w.lower())
        while mods and mods[0] in {"cell", "ring"}:
            mods.pop(0)
        head = re.sub(r"^ca$", "carcinoma", m.group(1).lower()) + (" multiforme" if m.group(2) else "")
        name = " ".join(mods + [head]).replace("duct carcinoma", "ductal carcinoma").replace("infiltrating", "invasive")
        bare = name in ("carcinoma", "adenocarcinoma", "invasive carcinoma", "invasive adenocarcinoma")
        out.append((2 if head == "adenoma" else 1 if bare else 0, name))
    return out


def histologic_type(secs: list[Section], breast: bool) -> str | None:
    if breast:
        best = _best(_collect(secs, _breast_type_phrases))
        kinds = set(best)
        if not kinds:
            return None
        if kinds <= {"ductal", "lobular", "mixed"} and "mixed" in kinds:
            return _TYPE_NAMES["mixed"]
        if len(kinds) == 1:
            k = next(iter(kinds))
            return _TYPE_NAMES.get(k, k)
        # several named types: the one the diagnosis names most, when it clearly dominates
        counts = sorted(((best.count(k), k) for k in kinds), reverse=True)
        if counts[0][0] >= 2 * counts[1][0] and counts[0][0] >= 2:
            return _TYPE_NAMES.get(counts[0][1], counts[0][1])
        return None
    best = _best(_collect(secs, _generic_types))
    if not best:
        return None
    # a named malignancy first, then the most specific bare head ("adenocarcinoma" over "carcinoma"), adenomas last
    top = min(p for p, _ in best)
    pool = [n for p, n in best if p == top]
    return max(pool, key=len) if top == 1 else pool[0]


# --------------------------------------------------------------------------------------------
# grade
# --------------------------------------------------------------------------------------------

_ROMAN = {"i": "1", "ii": "2", "iii": "3", "iv": "4", "1": "1", "2": "2", "3": "3", "4": "4"}


def _score_grade(score: int) -> str | None:
    return "1" if 3 <= score <= 5 else "2" if 6 <= score <= 7 else "3" if 8 <= score <= 9 else None


def _breast_grades(text: str) -> list[str]:
    """Overall Nottingham / SBR / histologic grade of the invasive carcinoma; nuclear grade and DCIS grade do not count."""
    out = []
    for s in _sentences(text):
        low = s.lower()
        low = re.sub(
            r"\bnuclear\s+(?:grade|pleomorphism|score)\s*(?:score\s*)?[:=-]?\s*(?:[1-3]|i{1,3})\b(?:\s*(?:/|of)\s*(?:3|iii))?|"
            r"\b(?:low|intermediate|high)\s+nuclear\s+grade|\bnuclear\s+grade\s+(?:low|intermediate|high)|"
            r"\b(?:architectural|mitotic|tubul\w*)\s+(?:grade|score|formation)\s*[:=-]?\s*\d",
            " ",
            low,
        )
        if re.search(_INSITU, low) and not re.search(
            r"\b(?:invasive|infiltrating|nottingham|sbr|bloom|elston|overall|combined)\b", low
        ):
            continue
        for m in re.finditer(
            r"\b(?:nottingham|sbr|scarff[- ]bloom[- ]richardson|bloom[- ]richardson|elston(?:[- ]ellis)?|histologic(?:al)?|combined|"
            r"overall|composite|modified\s+(?:sbr|bloom[- ]richardson))(?:\s+\(?[\w-]+\)?){0,3}?\s+grad(?:e|ing)\s*(?:score\s*)?[:=-]?\s*"
            r"(iii|ii|i|[1-3])\b(?!\s*(?:-|to)\s*(?:[1-3]|i{1,3})\b)(?!\s*\+)",
            low,
        ):
            if not re.match(r"\s*/\s*(?:9|ix)", low[m.end() :]):
                out.append(_ROMAN[m.group(1)])
        for m in re.finditer(r"\b(?:grade|nhg|g)\s*[:=]?\s*(iii|ii|i|[1-3])\s*(?:/|of)\s*(?:3|iii)\b", low):
            out.append(_ROMAN[m.group(1)])
        for m in re.finditer(r"\b(nhg|sbr|g)\s?(iii|ii|i|[1-3])\b(?!\s*[-–,/]\s*g?\d)", low):
            # "G3" only beside a TNM string or a tumour name, never a block or section code ("G1-G6")
            if m.group(1) != "g" or (
                re.search(r"\bp?t[0-4is]|carcinoma|differentiat", low)
                and not re.search(r"\b(?:sections?|blocks?|cassettes?|slides?)\b", low)
            ):
                out.append(_ROMAN[m.group(2)])
        for m in re.finditer(
            r"\b(?:nottingham|sbr|bloom[- ]richardson|elston|histologic|combined|total|overall)\s+(?:histologic\s+)?(?:grade\s+|grading\s+)?"
            r"(?:score|points?)\s*(?:of\s*)?[:=]?\s*([3-9])\b(?!\s*\+)|\b([3-9])\s*/\s*9\b|=\s*([3-9])\s*(?:/9|points)",
            low,
        ):
            g = _score_grade(int(next(x for x in m.groups() if x)))
            if g:
                out.append(g)
        for m in re.finditer(
            r"\b(?:histologic(?:al)?\s+)?grade\s*[:=-]?\s*(iii|ii|i|[1-3])\b(?!\s*(?:-|to|/|and|or)\s*(?:[1-3]|i{1,3})\b)(?!\s*nuclei)",
            low,
        ):
            if not re.search(r"(?:nuclear|dcis|in\s+situ)[^.;]{0,25}$", low[: m.start()]):
                out.append(_ROMAN[m.group(1)])
        for m in re.finditer(
            r"\b(well|poor|moderate|low|intermediate|high)\s+histologic(?:al)?\s+(?:and\s+nuclear\s+)?grade\b", low
        ):
            out.append(
                {"well": "1", "low": "1", "moderate": "2", "intermediate": "2", "poor": "3", "high": "3"}[m.group(1)]
            )
        for m in re.finditer(r"\b(well|moderately|poorly)[\s-]+differentiated\b", low):
            if re.search(r"\bnuclear|in\s+situ|dcis", low[max(0, m.start() - 30) : m.end() + 30]):
                continue
            out.append({"well": "1", "moderately": "2", "poorly": "3"}[m.group(1)])
    return out


def _generic_grades(text: str) -> list[str]:
    out = []
    for s in _sentences(text):
        m = re.search(r"gleason\s+(?:score\s*|grade\s*)?[:=]?\s*(\d\s*\+\s*\d\s*(?:=\s*\d+)?)", s, re.I)
        if m:
            out.append("Gleason " + re.sub(r"\s+", "", m.group(1)))
            continue
        if re.search(r"nuclear|fuhrmann?|in\s+situ|dysplasia", s, re.I) and not re.search(
            r"\b(?:histologic|who|figo|overall)\s+grade", s, re.I
        ):
            m = re.search(r"fuhrmann?\s+(?:nuclear\s+)?grade\s*[:=]?\s*(IV|I{1,3}|[1-4])\b", s, re.I)
            if m:
                out.append(f"Fuhrman grade {_ROMAN[m.group(1).lower()]}")
            continue
        m = re.search(r"\bG([1-4])\b(?!\s*[-–,/]\s*G?\d)", s)
        if (
            m
            and re.search(r"\bp?T[0-4is]|carcinoma|differentiat", s)
            and not re.search(r"\b(?:sections?|blocks?|cassettes?|slides?)\b", s, re.I)
        ):
            out.append(f"grade {m.group(1)}")
            continue
        m = re.search(r"\b(high|low|intermediate)[\s-]grade\b", s, re.I)
        if (
            m
            and re.search(_HEADS, s[m.end() : m.end() + 40], re.I)
            and not re.search(r"dysplasia|in\s+situ|\bpin\b|intraepithelial", s[m.start() : m.end() + 40], re.I)
        ):
            out.append(f"{m.group(1).lower()} grade")
            continue
        m = re.search(
            r"\b(?:WHO|FIGO|histologic(?:al)?|overall|tumou?r)?\s*grade\s*[:=]?\s*(IV|I{1,3}|[1-4])\b(?:\s*(?:/|of)\s*(?:3|4|III|IV))?(?!\s*(?:-|to)\s*(?:[1-4]|I{1,3}V?)\b)",
            s,
            re.I,
        )
        if m:
            out.append(f"grade {_ROMAN[m.group(1).lower()]}")
            continue
        m = re.search(r"\b(well|moderately|poorly)[\s-]+(?:to\s+\w+\s+)?differentiated\b", s, re.I)
        if m and not re.search(r"\bto\b", m.group(0)):
            out.append(f"{m.group(1).lower()} differentiated")
            continue
        m = re.search(r"\b(?:un|de)differentiated\b", s, re.I)
        if m:
            out.append("undifferentiated")
    return out


def grade(secs: list[Section], breast: bool) -> str | None:
    if breast:
        g = _agreed(_best(_collect(secs, _breast_grades)))
        return f"Nottingham grade {g}" if g else None
    return _agreed(_best(_collect(secs, _generic_grades)))


# --------------------------------------------------------------------------------------------
# ER / PR / HER2
# --------------------------------------------------------------------------------------------

_ER = r"\b(?:ER|estrogen\s+recept\w*|oestrogen\s+recept\w*|ER-?alpha)(?![\w-])"
_PR = r"\b(?:PR|PgR|progesterone\s+recept\w*)(?![\w-])"
_HER2 = r"\b(?:HER[-\s]?2(?:[-\s/]?neu)?|c-?erb-?B-?2|erbB-?2|her2neu)\b"
_STATUS = (
    r"(?P<neg>no\s+immunoreactive\s+tumou?r\s+cells(?:\s+(?:are\s+)?present)?|negative|neg\b|non-?reactive|not\s+(?:expressed|detected)|no\s+(?:staining|expression|immunoreactivity)|absent|(?<!\d)0\s*%|<\s*1\s*%|"
    r"allred(?:\s+score)?\s*[:=]?\s*[0-2]\b)|(?P<pos>(?:strongly|weakly|focally|moderately|diffusely)?\s*positive|pos\b|\breactive|"
    r"(?:strong|weak|moderate|intermediate)(?:\s+(?:to\s+\w+\s+)?(?:nuclear\s+)?(?:staining|expression|intensity))?\s+(?:in\s+)?\d|"
    r"immunoreactive\s+tumou?r\s+cells\s+present|"
    r"\d+(?:\.\d+)?\s*(?:-\s*\d+\s*)?%|allred(?:\s+score)?\s*[:=]?\s*[3-8]\b|h-?score\s*[:=]?\s*[1-9]\d*)|(?P<pend>pending|to\s+follow|ordered|will\s+be\s+reported|requested|not\s+performed|in\s+progress)"
)


def _marker_lines(text: str) -> list[str]:
    """Sentences, with a table cell or a CAP 'Results:' line joined to the marker label before it
    ("Estrogen Receptor. Low Positive (1-9%).", "Estrogen Receptor: performed on another specimen. Results: ... (21%)")."""
    out: list[str] = []
    for s in _sentences(re.sub(r"\.\s*\)", ")", text)):
        label_only = out and re.search(
            r"(?:"
            + _ER
            + "|"
            + _PR
            + "|"
            + _HER2
            + r")(?:\s*\([^)]*\))?(?:\s+(?:immunoperoxidase|immunohistochemi\w*|ihc|studies|study|status|results?|protein|assay|testing|test))*\s*[:.\-]*\s*$",
            out[-1],
            re.I,
        )
        # "HER2 protein stained with HercepTest. Negative reaction in invasive cells (score 0)."
        status_line = (
            out
            and re.match(
                r"\W*(?:negative|positive|equivocal)\b[^.;]{0,40}\b(?:reaction|staining|score|cells)\b", s, re.I
            )
            and re.search(_ER + "|" + _PR + "|" + _HER2, out[-1], re.I)
            and not re.search(r"\b(?:negative|positive|equivocal|[0-3]\s*\+)", out[-1], re.I)
        )
        if out and (re.match(r"\W*(?:\w{1,2}\s+)?results?\s*:", s, re.I) or label_only or status_line):
            out[-1] = out[-1].rstrip(" .;") + " : " + s.strip(" ;").rstrip(".")
        else:
            out.append(s)
    return out


def _hormone_status(text: str, name_re: str, other_re: str) -> list[str]:
    """positive / negative for ER or PR from each statement naming it."""
    out = []
    for s in _marker_lines(text):
        if _BOILERPLATE.search(s):
            continue
        for m in re.finditer(name_re + r"(?:\s*(?:and|/|&|,)\s*(?:" + other_re + r"))?", s, re.I):
            if _HEDGE.search(s[max(0, m.start() - 30) : m.start()]):
                continue
            before = s[max(0, m.start() - 40) : m.start()]
            bt = re.search(
                r"\b(positive|negative)\s+(?:for\s+|to\s+)?(?:both\s+)?(?:the\s+)?(?:"
                + other_re
                + r")?\s*(?:and|,|/)?\s*(?:the\s+)?$",
                before,
                re.I,
            )
            if bt:
                out.append(bt.group(1).lower())
                continue
            after = s[m.end() : m.end() + 140]
            after = re.split(
                r"(?i)"
                + r"(?:"
                + other_re
                + r"|"
                + _HER2
                + r"|ki-?67|mib-?1|e-?cadherin|p53|ck\s?\d|cytokeratin|\bAR\b|androgen)",
                after,
            )[0]
            # "ER (by IHC): positive (95%)", "ER: 0%", "ER positive", "ER Allred 7/8"
            st = re.search(r"^[^.;]{0,90}?(?:" + _STATUS + ")", after, re.I)
            conj = re.search(r"\b(?:and|or|but|while)\s+(?:\w+\s+)?(?:positive|negative)\s+for\b", after, re.I)
            if st and not st.group("pend") and not (conj and conj.start() < st.end()):
                out.append("negative" if st.group("neg") else "positive")
                continue
            # "percentage of nuclei staining positive (PR): 25", "Intensity of staining, PR: 3+ (strong)"
            num = re.match(r"\)?\s*[:=]?\s*(\d+)\s*(\+)?", after)
            if num and re.search(r"(?:percent(?:age)?|%|proportion)\b[^.;]{0,50}$", before, re.I) and not num.group(2):
                out.append("positive" if int(num.group(1)) >= 1 else "negative")
            elif num and num.group(2) and re.search(r"intensity[^.;]{0,30}$", before, re.I):
                out.append("positive" if int(num.group(1)) >= 1 else "negative")
    return out


def _her2_status(text: str) -> list[tuple[str, str]]:
    """(kind, value) per HER2 statement; kind 'ish' (FISH/CISH/SISH result) or 'ihc' (score or stated status)."""
    out = []
    for s in _marker_lines(text):
        ratio = re.search(r"ratio[^;]{0,80}?(?<![\d.<>≥≤]\s)(?<![\d.<>≥≤])(\d{1,2}\.\d+)", s, re.I)
        if _BOILERPLATE.search(s) and not ratio:  # a measured ratio beside its threshold is still a result
            continue
        if not re.search(_HER2 + r"|\b(?:fish|cish|sish|in\s+situ\s+hybridi[sz]ation)\b", s, re.I):
            continue
        if _HEDGE.search(s[:60]) and not re.search(r"ratio", s, re.I):
            continue
        ish = re.search(
            r"\b(?:fish|cish|sish|ish|in\s+situ\s+hybridi[sz]ation|gene\s+amplification|dual\s+probe)\b", s, re.I
        )
        if ratio and ish or ratio and re.search(r"cep-?17", s, re.I):
            r = float(ratio.group(1))
            if 0 < r < 20:
                out.append(("ish", "positive" if r >= 2.0 else "negative"))
                continue
        if re.search(
            r"\b(?:not|non-?|no)[\s-]?amplifi|\bno\s+(?:gene\s+)?amplification|\bnegative\s+for\s+(?:her-?2\s+)?(?:gene\s+)?amplification",
            s,
            re.I,
        ):
            out.append(("ish", "negative"))
            continue
        if re.search(
            r"\bamplified\b|\bamplification\s+(?:is\s+|was\s+)?(?:present|detected|identified|seen|observed)|positive\s+for\s+(?:her-?2\s+)?(?:gene\s+)?amplification",
            s,
            re.I,
        ) and not re.search(
            r"(?:pending|ordered|failed|unsuccessful|inconclusive|will\s+be|to\s+follow|not\s+performed|equivocal)",
            s,
            re.I,
        ):
            out.append(("ish", "positive"))
            continue
        if ish and re.search(r"equivocal", s, re.I) and not re.search(r"\b[0-3]\s*\+", s):
            out.append(("ish", "equivocal"))
            continue
        for m in re.finditer(_HER2, s, re.I):
            after = s[m.end() : m.end() + 80]
            if re.match(
                r"[^.;]{0,40}?(?:pending|to\s+follow|ordered|will\s+be\s+reported|requested|in\s+progress|not\s+performed|failed|unsuccessful|inconclusive)",
                after,
                re.I,
            ):
                continue
            sc = re.match(
                r"[^.;]{0,90}?(?:score\s*(?:of\s*)?[:=]?\s*([0-3])\b\+?|\b([0-3])\s*\+)(?!\s*%|\.\d|\d)", after, re.I
            )
            word = re.match(
                r"[^.;]{0,90}?\b(negative|positive|equivocal|borderline|overexpress(?:ed|ion))\b", after, re.I
            )
            if sc and (not word or sc.start() < word.start(1) or sc.group(2)):
                out.append(
                    (
                        "ihc",
                        {"0": "negative", "1": "negative", "2": "equivocal", "3": "positive"}[
                            sc.group(1) or sc.group(2)
                        ],
                    )
                )
            elif word:
                w = word.group(1).lower()
                if w.startswith("overexpress"):
                    w = (
                        "negative"
                        if re.search(r"\bno\s+overexpress|not\s+overexpress", after[: word.end()], re.I)
                        else "positive"
                    )
                out.append(("ihc", "equivocal" if w == "borderline" else w))
            else:
                bt = re.search(
                    r"\b(positive|negative)\s+(?:for\s+)?(?:er\s*,?\s*(?:and\s+)?)?(?:pr\s*,?\s*(?:and\s+)?)?$",
                    s[max(0, m.start() - 40) : m.start()],
                    re.I,
                )
                if bt:
                    out.append(("ihc", bt.group(1).lower()))
        if re.search(r"\btriple[- ]negative\b", s, re.I):
            out.append(("ihc", "negative"))
    return out


_RECEPTOR_RANK = {**RANK, "add": 4}  # an addendum with receptor results revises the body


def receptors(secs: list[Section]) -> str | None:
    parts = []
    for label, own, other in (("ER", _ER, _PR), ("PR", _PR, _ER)):
        hits = _collect(secs, lambda t, o=own, x=other: _hormone_status(t, o, x), _RECEPTOR_RANK)
        v = _agreed(_best(hits))
        if v:
            parts.append(f"{label}{'+' if v == 'positive' else '-'}")
    her2 = _collect(secs, _her2_status, _RECEPTOR_RANK)
    ish = [h for h in her2 if h.value[0] == "ish" and h.value[1] != "equivocal"]
    pool = ish or [h for h in her2 if h.value[0] == "ihc"]  # the ISH result is the final call over the IHC score
    v = _agreed([val for _, val in _best(pool)])
    if v:
        parts.append({"positive": "HER2+", "negative": "HER2-", "equivocal": "HER2 equivocal"}[v])
    return ", ".join(parts) or None


# --------------------------------------------------------------------------------------------
# tumour size
# --------------------------------------------------------------------------------------------

_SIZE_NUM = r"(\d{1,2}(?:\.\d+)?)\s*(cm|mm)?(?:\s*[xX×]\s*(\d{1,2}(?:\.\d+)?)\s*(cm|mm)?)?(?:\s*[xX×]\s*(\d{1,2}(?:\.\d+)?))?\s*(cm|mm)\b"


def _cm(m: re.Match) -> float:
    unit = m.group(6).lower()
    dims = [float(m.group(i)) for i in (1, 3, 5) if m.group(i)]
    return max(dims) / 10 if unit == "mm" else max(dims)


_NOT_TUMOUR = (
    r"specimen|mastectomy|lumpectomy|excision|resection|skin|ellipse|nipple|areola|fragment|core|node|metasta|deposit|margin|"
    r"cavity|biopsy\s+site|ha?emorrhage|necrosis|fibrosis|area\s+of|hematoma|seroma|scar|fat\s+necrosis|cyst|implant|fibroadenoma|papilloma|dcis|in\s+situ|intraductal(?:\s+carcinoma)?|carcinoma\s+in\s+situ|"
    r"ductal\s+carcinoma\s+in|calcification|tissue|portion|piece|axillary|muscle|fascia|tail|clip"
)
_TUMOUR_WORD = (
    r"tumou?r|carcinoma|adenocarcinoma|mass|lesion|focus|foci|nodule|neoplasm|induration|invasive|cancer|\w*sarcoma|melanoma|"
    r"lymphoma|\w*blastoma|glioma|mesothelioma|seminoma|thymoma|paraganglioma|pheochromocytoma"
)


_INVASIVE_SIZE = (
    r"(?:size\s+of\s+(?:the\s+)?(?:largest\s+)?invasive\s+(?:component|carcinoma|tumou?r|focus|foci)|invasive\s+(?:tumou?r|carcinoma|component)\s+size|"
    r"size\s+of\s+(?:the\s+)?largest\s+invasive|largest\s+focus\s+of\s+invasion|largest\s+invasive\s+(?:focus|carcinoma|tumou?r)|microscopic\s+(?:measurement|size|extent)|"
    r"greatest\s+dimension\s+of\s+(?:the\s+)?(?:largest\s+)?invasive)"
)
_SIZE_KEY = (
    r"(?:(?:greatest|largest|maximum|max\.?)\s+(?:\w+\s+)?(?:dimension|diameter|extent|size)(?:\s+of\s+(?:the\s+)?(?:largest\s+)?(?:invasive\s+)?(?:tumou?r|carcinoma|focus))?|"
    r"tumou?r\s+size|size\s+of\s+(?:the\s+)?(?:tumou?r|carcinoma|invasive\s+focus|mass)|tumou?r\s+(?:diameter|dimension)|\bsize\b|"
    r"(?:gross|microscopic)\s+measurement)"
)


def _nearest(before: str) -> str | None:
    """'t' when the last thing named before a size is the tumour, 'o' when it is something else."""
    words = [(x.end(), 0) for x in re.finditer(rf"\b(?:{_TUMOUR_WORD})\b", before)] + [
        (x.end(), 1) for x in re.finditer(rf"\b(?:{_NOT_TUMOUR})", before)
    ]
    return None if not words else "o" if max(words)[1] else "t"


def _sizes(text: str) -> list[tuple[float, int]]:
    """(cm, strength) for sizes stated for the invasive tumour: 'size of invasive component: 2 cm' (2),
    'tumor size: 2.5 cm', 'invasive carcinoma, 2.2 cm', 'a 2.5 cm mass' (1). Not the specimen, a node,
    a margin distance, the in-situ component, a TNM definition ('pT2: tumor > 20 mm') or 'up to' sizes."""
    out = []
    context = None  # the last thing named in an earlier sentence, for label-only lines ("Greatest dimension: 2 cm")
    for s in _sentences(text):
        low_s = s.lower()
        if re.search(r"\bp?t\s?\d\w*\s*:\s*tumou?r\s*(?:>|<|more|greater|less|not\s+more)", low_s):
            continue
        for m in re.finditer(_SIZE_NUM, s, re.I):
            cm = _cm(m)
            if re.search(r"\d[,.]$", low_s[max(0, m.start() - 2) : m.start()]):
                continue  # "0,4 cm": an OCR-broken decimal, not a size of 4 cm
            listed = re.search(r"(\d{1,2}(?:\.\d+)?)\s*(?:and|&)\s*$", low_s[max(0, m.start() - 12) : m.start()])
            if listed and not m.group(3):  # "diameters: 2.8 and 0.8 cm": the unit covers both
                cm = max(cm, float(listed.group(1)) / (10 if m.group(6).lower() == "mm" else 1))
            if not 0 < cm < 30:
                continue
            before = re.sub(
                r"(?<=\d)\.(?=\d)", ",", low_s[max(0, m.start() - 90) : m.start()]
            )  # decimals are no sentence ends
            after = low_s[m.end() : m.end() + 40]
            if re.search(r"\b(?:sum|aggregate|combined|total)\b[^.;]{0,50}$", before):
                continue
            if re.search(
                r"(?:>|<|≥|≤|more\s+than|less\s+than|greater\s+than|\bover|exceeding|up\s+to|ranging\s+(?:in\s+size\s+)?from|\bto|-)\s*$",
                before,
            ):
                continue
            if re.search(
                r"\b(?:field|area\s+diameter|hpf|mitos\w*|isolated\s+tumou?r\s+cells?|cells\b)[^.;]{0,40}$", before
            ) or re.match(
                r"\s*(?:\w+\s+)?(?:inferior|superior|medial|lateral|anterior|posterior|deep|distal|proximal|away)\s+(?:to|from)\b",
                after,
            ):
                continue
            if re.match(
                r"\s*(?:\w+\s+){0,2}(?:from|to\s+the|away|beyond|past|outside|of\s+the\s+(?:\w+\s+)?margin|deep\s+to|beneath)",
                after,
            ) or re.search(
                r"(?:within|distance|closest|clearance|margin\s+(?:of|is)|from\s+(?:the\s+)?\w*\s*margin|\bby)[^.;]{0,20}$",
                before,
            ):
                continue
            if re.match(
                r"\s*\(?(?:of\s+)?(?:dcis|ductal\s+carcinoma\s+in\s+situ|in\s+situ|intraductal)", after
            ) or re.match(
                r"\s*(?:[\w-]+\s+){0,2}(?:pieces?|fragments?|portions?|aggregates?|segments?|strips?)\b", after
            ):
                continue
            own = _nearest(before)
            nearest = own or context
            if re.search(r"\b(?:dcis|in\s+situ|intraductal)\b[^.;]{0,40}$", before) and not re.search(
                r"invasive[^.;]{0,40}$", before
            ):
                continue
            if (
                re.search(_INVASIVE_SIZE + r"[^.;]{0,40}$", before)
                and nearest != "o"
                and not re.search(r"(?:dcis|in\s+situ|specimen|node|metasta)[^.;]*$", before)
            ):
                out.append((cm, 2))
                continue
            key = re.search(_SIZE_KEY + r"(?:\s*\([^)]{0,30}\))?\s*[:=-]?\s*(?:[\w:]+\s+){0,3}$", before)
            # a key with nothing named before it counts only as a label ("Greatest dimension: 2.5 cm"), not mid-sentence
            if (
                key
                and (own == "t" or (own is None and key.start() <= 30 and len(low_s[: m.start()]) <= 90))
                and nearest != "o"
                and not re.search(r"(?:dcis|in\s+situ|specimen|node|metasta)[^.;]*$", before)
            ):
                out.append((cm, 1))
                continue
            # "(invasive) ... carcinoma ... measuring 2.5 cm", "a 2.5 cm mass", "carcinoma (2.2 cm)"
            after_noun = re.match(rf"\s*(?:[\w,-]+\s+){{0,4}}(?:{_TUMOUR_WORD})\b", after) and not re.match(
                rf"\s*(?:[\w,-]+\s+){{0,4}}(?:{_NOT_TUMOUR})", after
            )
            invasive_ctx = re.search(
                r"\b(?:invasive|infiltrating|\w*carcinoma|tumou?r|mass|neoplasm|cancer|\w*sarcoma|melanoma|lymphoma|\w*blastoma|"
                r"glioma|mesothelioma|seminoma|thymoma|paraganglioma|pheochromocytoma)\b",
                before + after,
            ) and not re.search(
                r"\b(?:skin|keratosis|nevus|naevus|pigmented|fibroadenoma|cyst|lymph\s+node)\b", before[-40:] + after
            )
            if (
                (own == "t" or (after_noun and own != "o"))
                and invasive_ctx
                and not re.search(r"\b(?:metasta\w*|lymph\s+node)\b[^.;]{0,40}$", before)
            ):
                if _NEG.search(before[-30:]) or re.search(
                    r"\bno\s+(?:residual\s+)?(?:tumou?r|mass|lesion)", before[-40:]
                ):
                    continue
                out.append((cm, 1))
        if re.search(r"\b(?:dcis|in\s+situ|intraductal)\b", low_s) and not re.search(r"\binvasive\b", low_s):
            context = "o"
        else:
            context = _nearest(low_s) or context
    return out


def tumour_size(secs: list[Section]) -> str | None:
    """The largest invasive size among the strongest statements: an explicit invasive size in the
    diagnosis / synoptic beats a generic tumour size there, which beats the gross description."""
    hits = []
    for i, s in enumerate(secs):
        if RANK.get(s.kind, 2) < 0:
            continue
        for cm, strength in _sizes(s.text):
            hits.append(Hit(cm, 0 if s.kind == "gross" else strength, i))
    best = _best(hits)
    if not best:
        return None
    if max(h.rank for h in hits) == 0 and len(set(best)) > 1:
        return None  # a gross description naming several sized lesions: which one is invasive is not certain
    return f"tumor {max(best):.1f} cm"


# --------------------------------------------------------------------------------------------
# lymph nodes
# --------------------------------------------------------------------------------------------

_NODE = r"(?:lymph[\s-]*nodes?|l\.?\s?n\.?s?\b|nodes?|sentinel\s+(?:lymph\s+)?nodes?)"
_WORDNUM = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
}


def _num(x: str) -> int | None:
    x = x.lower().strip()
    if x.isdigit():
        return int(x)
    if x in ("no", "none"):
        return 0
    if x in _WORDNUM:
        return _WORDNUM[x]
    m = re.match(r"(twenty|thirty|forty|fifty)[\s-]?(\w+)?", x)
    if m:
        base = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50}[m.group(1)]
        return base + (_WORDNUM.get(m.group(2) or "zero", 0) if (m.group(2) or "zero") in _WORDNUM else 0)
    return None


_WN = r"(\d{1,2}|no|none|zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|(?:twenty|thirty|forty|fifty)(?:[\s-](?:one|two|three|four|five|six|seven|eight|nine))?)"


def _ocr_tnm(t: str) -> str:
    """OCR in stage strings: 'pNla' -> 'pN1a', 'pT2 NO' -> 'pT2 N0', 'pTlc' -> 'pT1c' (only in TNM context: 'No' stays a word)."""
    t = re.sub(r"\b(y?p[TN])[Il](?=[a-c]|mi|\b|\(|[NMLVR])", r"\g<1>1", t)
    t = re.sub(r"\b(y?p[NM])[Oo](?=\b|\(|[LVRM]\w?)", r"\g<1>0", t)
    tnm = r"(\b(?:y?p)?T(?:[0-4][a-d]?|is|x)(?:\s*\([^)]{0,8}\))?\s*,?\s*)"
    t = re.sub(tnm + r"N[Oo](?=\b|\(|[LVRM])", r"\g<1>N0", t)
    t = re.sub(tnm + r"N[Il](?=[a-c]|mi|\b|\(|[LVRM])", r"\g<1>N1", t)
    t = re.sub(r"(?<=[0-9a-c)])([LVRM])[Oo](?=\b|[LVRM])", r"\g<1>0", t)
    return t


def _node_statements(text: str) -> list[tuple[str, int | None, int | None]]:
    """(status, positive, examined) per statement about the nodes of this specimen."""
    out = []
    for s in _sentences(_ocr_tnm(text)):
        low = s.lower()
        if re.search(r"\b(?:previous(?:ly)?|prior|earlier|history\s+of)\b", low) and not re.search(
            r"\bthis\s+specimen\b", low
        ):
            continue
        itc_only = re.search(r"isolated\s+tumou?r\s+cells?|\bitcs?\b|pn0\s*\(i\+\)", low) and not re.search(
            r"micrometasta|macrometasta|metastatic\s+carcinoma\s+(?:in|to|involving)\s+(?:\w+\s+){0,3}" + _WN, low
        )
        found = False
        # "2 of 14 lymph nodes", "(2/14)", "lymph nodes: 2/14 positive", "metastatic carcinoma in two of fourteen nodes"
        for m in re.finditer(
            rf"\b{_WN}\s*(?:/|of|out\s+of)\s*{_WN}\b(?:\s+\w+){{0,4}}?\s+{_NODE}|{_NODE}[^.;]{{0,60}}?\(?\b(\d{{1,2}})\s*/\s*(\d{{1,2}})\b\)?|"
            rf"\b(?:positive|involved|metastatic)[^.;/]{{0,20}}?\b(\d{{1,2}})\s*/\s*(\d{{1,2}})\b",
            low,
        ):
            g = [x for x in m.groups() if x is not None]
            pos, tot = _num(g[0]), _num(g[1])
            if pos is None or tot is None or pos > tot or tot == 0 or tot > 80:
                continue
            ctx = low[max(0, m.start() - 60) : m.end() + 60]
            if (
                re.search(
                    r"\b(?:negative|benign|free\s+of|no\s+(?:evidence\s+of\s+)?(?:metasta|tumou?r|carcinoma|malignancy))\b",
                    ctx,
                )
                and pos
                and not re.search(r"metasta\w*\s+(?:\w+\s+){0,2}(?:in|to)\s", ctx)
            ):
                continue
            if pos and itc_only:
                out.append(("negative", None, None))
            else:
                out.append(("positive" if pos else "negative", pos, tot))
            found = True
        # synoptic: "Number of lymph nodes examined: 14 ... number of lymph nodes involved: 2"
        ex = re.search(
            rf"(?:number\s+of\s+)?(?:lymph\s+)?nodes?\s+(?:examined|identified|retrieved|submitted|recovered)\s*[:=]?\s*{_WN}\b",
            low,
        )
        inv = re.search(
            rf"(?:number\s+of\s+)?(?:lymph\s+)?nodes?\s+(?:involved|positive|with\s+(?:macro|micro)?metasta\w*)\s*(?:\([^)]{{0,60}}\))?\s*[:=]?\s*"
            rf"(?:{_WN}|(o))\b",
            low,
        )
        if inv and not found:
            pos = 0 if inv.group(2) else _num(inv.group(1))
            tot = _num(ex.group(1)) if ex else None
            if pos is not None:
                out.append(("positive" if pos else "negative", pos, tot))
                found = True
        if not found:
            for m in re.finditer(rf"{_NODE}", low):
                before, after = low[max(0, m.start() - 70) : m.start()], low[m.end() : m.end() + 80]
                if (
                    re.match(
                        r"[^.;]{0,50}?\b(?:negative|benign|free\s+of|uninvolved|no\s+(?:evidence\s+of\s+)?(?:metasta|tumou?r|carcinoma|malignancy|neoplasm))",
                        after,
                    )
                    or re.search(r"\b(?:negative|benign|no|uninvolved)\s+(?:\w+\s+){0,3}$", before)
                    or re.search(r"\bnode[\s-]negative\b", low)
                ):
                    if not re.match(
                        r"[^.;]{0,30}?(?:positive|metastatic\s+carcinoma\s+(?:is\s+)?(?:present|identified))", after
                    ):
                        out.append(("negative", None, None))
                        found = True
                        break
                pos_after = re.match(
                    r"[^.;]{0,50}?\b(?:positive\s+for\s+(?:metasta|carcinoma|tumou?r|malignan)|with\s+(?:micro|macro)?metasta|"
                    r"(?:shows?|showing|contains?|containing|involved\s+by)\s+(?:\w+\s+){0,2}(?:micro|macro)?metasta|"
                    r"(?:is|are)\s+(?:positive|involved))",
                    after,
                )
                cause = re.search(
                    r"\b(?:metasta\w*|micrometasta\w*|carcinoma|tumou?r)\b(?:\s+\w+){0,4}\s+(?:in|to|involving|within)\s+(?:[\w#-]+\s+){0,6}$",
                    before,
                )
                negated = cause and _NEG.search(
                    low[max(0, m.start() - 120) : m.start() - len(before) + cause.start() + 1]
                )
                if negated and not pos_after:  # "no tumor is seen in four lymph nodes"
                    out.append(("negative", None, None))
                    found = True
                    break
                if (pos_after or cause) and not negated and not _HEDGE.search(before) and not itc_only:
                    out.append(("positive", None, None))
                    found = True
                    break
        if not found:
            pn = re.search(r"\b(?:y?p)?N([0-3x])(mi|[abc])?(?:\s*\((?:i|mol|sn)[+-]?\))*(?=[^a-z0-9]|[lvrm][\dx]|$)", s)
            if pn and re.search(r"\b(?:y?p)?T(?:[0-4]|is|x)|\bpN|\bN\s?stage|regional\s+lymph|nodes?", s, re.I):
                if pn.group(1) == "0":
                    out.append(("negative", None, None))
                elif pn.group(1) in "123":
                    out.append(("positive", None, None))
        if re.search(r"\bN\s+stage\s*:?\s*([0-3])\b", s):
            n = re.search(r"\bN\s+stage\s*:?\s*([0-3])\b", s).group(1)
            out.append(("negative" if n == "0" else "positive", None, None))
    return out


def lymph_nodes(secs: list[Section]) -> str | None:
    """Status of this specimen's nodes; counts only where they are unambiguous.

    Any involved node makes the status positive (a negative sentinel node beside an involved axillary
    node does not undo it). The same count stated twice (diagnosis and synoptic summary) is one
    statement, never added up; counts from several specimens give the status without a total."""
    best = _best(_collect(secs, _node_statements, {**RANK, "gross": -1}))
    if not best:
        return None
    counted = {(p, t) for _, p, t in best if p is not None and t is not None}
    if {b[0] for b in best} == {"negative"}:
        totals = {t for _, t in counted}
        return f"lymph nodes negative (0/{totals.pop()})" if len(totals) == 1 else "lymph nodes negative"
    if len(counted) == 1 and next(iter(counted))[0]:
        p, t = counted.pop()
        return f"lymph nodes {p}/{t} positive"
    return "lymph nodes positive"


# --------------------------------------------------------------------------------------------
# lymphovascular invasion, margins, stage
# --------------------------------------------------------------------------------------------

_LVI = (
    r"\b(?:lympho-?vascular|angio-?lymphatic|lymphatic|vascular|blood\s+vessel|venous|vessel|lymph\s+vessel|endolymphatic|"
    r"lymphatic[\s/-]+(?:and\s+)?(?:blood\s+)?vascular|vascular[\s/-]+(?:and\s+)?lymphatic|lymphatic\s+and\s+(?:blood\s+)?vessel)"
    r"(?:\s+(?:space|channel|vessel)s?)?\s+(?:invasion|involvement|permeation|emboli|tumou?r\s+emboli|infiltration)|\bLVI\b|\bLVSI\b|"
    r"\b(?:invasion|infiltration)\s+of\s+(?:the\s+)?(?:lymph(?:atic)?|blood)\s+vessels|\binvasio\s+carcinomatosa\s+vasorum|"
    r"\btumou?r\s+emboli|\bintralymphatic|\bvascular\s+permeation|\bcarcinomatous\s+lymphangitis|"
    r"\binvasion\s*:\s*(?=lymphatics?|blood\s+vessels?)"
)


def _lvi_statements(text: str) -> list[str]:
    out = []
    for s in _sentences(_ocr_tnm(text)):
        for m in re.finditer(_LVI, s, re.I):
            before, after = s[max(0, m.start() - 60) : m.start()], s[m.end() : m.end() + 50]
            if re.search(r"perineural", m.group(0), re.I):
                continue
            if _HEDGE.search(before) or re.match(
                r"[^.;]{0,25}?\b(?:suspicious|indeterminate|equivocal|cannot\s+be|possibl|questionabl|not\s+(?:definitively|definitely)|"
                r"focally\s+suspicious|may\s+represent|versus|vs\b)",
                after,
                re.I,
            ):
                out.append("unsure")
                continue
            if re.match(
                r"\s*(?:lymphatics?|blood\s+vessels?)?\s*(?:is\s+|are\s+|was\s+|were\s+)?[:\-(]*\s*(?:absent|not\s+(?:identified|seen|present|detected|evident|noted|appreciated)|"
                r"negative|none(?:\s+identified)?|no\b|unlikely)",
                after,
                re.I,
            ) or _NEG.search(before):
                out.append("absent")
            elif (
                re.match(
                    r"\s*(?:is\s+|are\s+|was\s+)?[:\-(]*\s*(?:present|identified|seen|positive|noted|extensive|focal|yes)",
                    after,
                    re.I,
                )
                or re.search(
                    r"\b(?:with|shows?|showing|presence\s+of|positive\s+for|evidence\s+of|extensive|focal|identified)\s+(?:\w+\s+){0,2}$",
                    before,
                    re.I,
                )
                or re.match(
                    r"(?i)invasion\s+of|invasio|tumou?r\s+emboli|intralymphatic|carcinomatous|vascular\s+permeation",
                    m.group(0),
                )
            ):
                out.append("present")
        # TNM additions: "pT2 N1a L1 V0", "pT4b(mult)N3aL1V0R0": L1 or V1 present; L0 / V0 without a 1 absent
        for m in re.finditer(
            r"(?:p?T(?:[0-4][a-d]?|is|x)|N[0-3x][a-c]?)[^.;]{0,20}?((?:\s*,?\s*[LVR][01x](?![\d]))+)", s
        ):
            codes = re.findall(r"([LV])([01])", m.group(1))
            if codes:
                out.append("present" if any(v == "1" for _, v in codes) else "absent")
    return out


def lymphovascular(secs: list[Section]) -> str | None:
    best = _best(_collect(secs, _lvi_statements, {**RANK, "gross": -1}))
    if not best or "unsure" in best:
        return None
    if set(best) == {"absent"}:
        return "LVI absent"
    if set(best) == {"present"}:
        return "LVI present"
    return None  # present and absent at the same level: leave it out


def _margin_statements(text: str) -> list[str]:
    out = []
    for s in _sentences(text):
        if _HEDGE.search(s):
            continue
        m = re.search(
            r"margins?\s+(?:of\s+(?:excision|resection)\s+)?(?:are\s+|is\s+)?(?:all\s+)?[:\-]?\s*(negative|free|uninvolved|clear|positive|involved|close)|"
            r"(tumou?r[-\s]free|free)\s+(?:\w+\s+)?(?:resection\s+)?margins?|(extension\s+to|infiltration\s+of)\s+the\s+(?:\w+\s+)?(?:resection\s+)?margin|"
            r"\b(R0|R1|R2)\b",
            s,
            re.I,
        )
        if not m:
            continue
        v = next(g for g in m.groups() if g).lower()
        out.append(
            "margins negative"
            if v in ("negative", "free", "uninvolved", "clear", "r0") or "free" in v
            else "margins close"
            if v == "close"
            else "margins positive"
        )
    return out


def margins(secs: list[Section]) -> str | None:
    return _agreed(_best(_collect(secs, _margin_statements, {**RANK, "gross": -1})))


def _stage_statements(text: str) -> list[str]:
    t = _ocr_tnm(text)
    out = []
    for m in re.finditer(
        r"\b(y?p?T(?:[0-4][a-d]?|is|x))\s*(?:\(\w+\)\s*)?,?\s*(p?N(?:[0-3][a-c]?|x)(?:mi)?(?:\s*\((?:i|sn|mol)[+-]?\))?)?\s*,?\s*(p?M[01x])?",
        t,
    ):
        if m.group(2) or m.group(1).lower().startswith(("pt", "ypt")):
            out.append(" ".join(g.replace(" ", "") for g in m.groups() if g))
    tsn = re.search(r"T\s+stage\s*:?\s*(\w+)\s+N\s+stage\s*:?\s*(\w+)(?:\s+M\s+stage\s*:?\s*(\w+))?", t, re.I)
    if tsn:
        out.append(" ".join(f"{p}{v}" for p, v in zip("TNM", tsn.groups()) if v))
    if not out:
        ajcc = re.search(
            r"\b(?:AJCC\s+|pathologic\s+|anatomic\s+)?stage\s*(?:group(?:ing)?)?\s*:?\s*(IV|I{1,3})\s?([ABC])?\b", t
        )
        if ajcc:
            out.append(f"stage {ajcc.group(1)}{ajcc.group(2) or ''}")
    return out


def stage(secs: list[Section]) -> str | None:
    best = _best(_collect(secs, _stage_statements, {**RANK, "gross": -1}))
    if not best:
        return None
    # a longer TNM string that contains a shorter one ("pT2" and "pT2 N1a") is the same statement
    best = sorted(set(best), key=len, reverse=True)
    if all(best[0].lower().startswith(b.lower().split()[0]) for b in best):
        return best[0]
    return None


# --------------------------------------------------------------------------------------------
# the summary
# --------------------------------------------------------------------------------------------


@dataclass
class ReportFields:
    values: dict[str, str] = field(default_factory=dict)

    def ordered(self) -> list[tuple[str, str]]:
        return [(k, self.values[k]) for k in FIELD_ORDER if k in self.values]


def extract_fields(text: str) -> ReportFields:
    """The fields a report states with certainty; a field it does not state, or states in conflict, is absent."""
    t = clean_text(text)
    out = ReportFields()
    if not t:
        return out
    secs = sections(t)
    readable = [s for s in secs if RANK.get(s.kind, 2) >= 0]
    breast = bool(_BREAST.search(" ".join(s.text for s in readable)))
    for name, fn in (
        ("type", lambda: histologic_type(secs, breast)),
        ("grade", lambda: grade(secs, breast)),
        ("receptors", lambda: receptors(secs) if breast or re.search(_ER + "|" + _HER2, t) else None),
        ("size", lambda: tumour_size(secs)),
        ("nodes", lambda: lymph_nodes(secs)),
        ("lvi", lambda: lymphovascular(secs)),
        ("margins", lambda: margins(secs)),
        ("stage", lambda: stage(secs)),
    ):
        v = fn()
        if v:
            out.values[name] = v
    return out


def compose(
    fields: ReportFields, count_tokens: Callable[[str], int] | None = None, max_tokens: int | None = None
) -> tuple[str, list[str]]:
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
