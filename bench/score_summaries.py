"""Score report summaries against facts read by hand from the full reports.

The fact table (``tests/data/tcga_brca_facts.tsv``) holds, for each of the 98 TCGA-BRCA reports
of ``pathrepbench_test.csv``, what a pathologist read in the whole report: histologic type, grade,
ER, PR, HER2, lymph-node status, lymphovascular invasion and the largest invasive tumour's size
(``unknown`` where the report does not say). This script reads the same facts back from any
summaries file — ours (``case_id``/``summary`` or ``row``/``summary`` columns) or the GPT-4o-mini
references (``slno``/``preds``, ``slno`` = row of the reports CSV) — and counts, per field and
overall, the known facts a summary states rightly, states wrongly, or does not state.

The reader of summary text below is deliberately its own: it never imports the extractor it
measures (``histosynth.text.extract``), and reads prose ("ER-positive", "2 of 14 lymph nodes
involved", "poorly differentiated") as well as field lists ("ER+, PR-, HER2-; grade 3").
A summary that states two different values for one field counts as wrong: a reader cannot tell
which one holds.

    python bench/score_summaries.py SUMMARIES [SUMMARIES ...] [--facts tests/data/tcga_brca_facts.tsv]
        [--details out.tsv] [--json out.json] [--rows 0:49]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd

FIELDS = ("histologic_type", "grade", "er", "pr", "her2", "lymph_nodes", "lvi", "tumor_size_cm")
FACTS = Path(__file__).resolve().parents[1] / "tests" / "data" / "tcga_brca_facts.tsv"
SIZE_TOLERANCE_CM = 0.1  # a summary rounding 2.25 cm to 2.3 (or 22 mm to 2.2 cm) is still right
CONFLICT = "conflict"

# --------------------------------------------------------------------------------------------
# the reader: summary text -> facts (None = not stated)
# --------------------------------------------------------------------------------------------

_NEG_BEFORE = re.compile(
    r"\b(no|not|without|negative for|free of|absence of|nor|neither)\b(?:(?!\bwith\b|\bbut\b|\bwhile\b|\bwhereas\b|\bhowever\b)[^;.]){0,50}$"
)
_HEDGE_BEFORE = re.compile(
    r"\b(suspicious|suspect|possible|possibly|potential|probable|cannot be (?:ruled out|excluded)|equivocal for|questionable|\?)\b[^;.]{0,25}$"
)


def _norm(text: str) -> str:
    t = " " + str(text).lower().replace("\u2013", "-").replace("\u2014", "-").replace("\u00d7", "x") + " "
    t = re.sub(r"\s+", " ", t)
    t = re.sub(r"\b(?:o?estrogen)(?:[- ]receptors?)?\b", "er", t)
    t = re.sub(r"\bprogesterone(?:[- ]receptors?)?\b|\bpgr\b", "pr", t)
    t = re.sub(r"\b(er|pr) \(\1\)", r"\1", t)
    for n, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    ):
        t = re.sub(rf"\b{w}\b(?![- ]grade)", str(n), t)
    for w, n in (("thirty", 30), ("forty", 40), ("fifty", 50)):
        t = re.sub(rf"\b{w}\b", str(n), t)
    t = re.sub(r"\b([2-5]0)[- ]([1-9])\b", lambda m: str(int(m.group(1)) + int(m.group(2))), t)
    t = re.sub(r"\b(?:her[- ]?2(?:[- /]?neu)?|c-?erb-?b-?2|erbb2)\b", "her2", t)
    t = re.sub(r"\bher2 ?\(her2\)", "her2", t)
    return t


def _clauses(t: str, extra: str = "") -> list[str]:
    return [c for c in re.split(r";|\.(?!\d)" + extra, t) if c.strip()]


_SPECIAL = r"medullary|metaplastic|papillary|micropapillary|tubular|apocrine|secretory|neuroendocrine|adenoid cystic|squamous(?: cell)?|cribriform|signet[- ]ring(?: cell)?|spindle cell|sarcomatoid|tubulolobular"


def read_type(t: str) -> str | None:
    t = re.sub(
        r"\b(?:ductal|duct|lobular)(?: and (?:ductal|duct|lobular))? carcinomas?,? in[- ]situ\b(?: \((?:dcis|lcis)\))?"
        r"(?:,? (?:of )?(?:the )?(?:[\w-]+ )?(?:and [\w-]+ )?(?:sub)?types?\b)?|\b(?:dcis|lcis)\b(?:,? (?:of )?(?:the )?(?:[\w-]+ )?(?:sub)?type\b)?|"
        r"\bin[- ]situ (?:ductal|lobular) carcinoma\b",
        " ",
        t,
    )
    t = re.sub(
        r"\b(?:atypical )?(?:ductal|lobular) (?:hyperplasia|neoplasia|extension|cancerization)\b|\bintraductal\b",
        " ",
        t,
    )
    if re.search(r"\b(?:mucinous|colloid)(?: \w+)? (?:carcinoma|adenocarcinoma|type)\b", t):
        return "mucinous"
    if re.search(
        rf"\b(?:{_SPECIAL})(?: (?:type|carcinoma|adenocarcinoma))\b|carcinoma,? (?:of )?(?:the )?(?:{_SPECIAL}) type\b",
        t,
    ):
        return "other"
    ductal = re.search(r"\bductal\b|\bduct (?:cell )?carcinoma|\bidc\b|\bno special type\b|\bnst\b|\bnos type\b", t)
    lobular = re.search(r"\blobular\b|\bilc\b", t)
    if ductal and lobular:
        return "mixed_ductal_lobular"
    if lobular:
        return "lobular"
    if ductal:
        return "ductal"
    return None


_GRADE_WORD = {"1": "1", "2": "2", "3": "3", "i": "1", "ii": "2", "iii": "3", "one": "1", "two": "2", "three": "3"}


def _score_to_grade(score: int) -> str | None:
    return "1" if 3 <= score <= 5 else "2" if score <= 7 else "3" if score <= 9 else None


def read_grade(t: str) -> str | None:
    found = set()
    insitu = r"in[- ]situ|\bdcis\b|\blcis\b"
    for clause in _clauses(t):
        c = re.sub(
            r"\bnuclear (?:grade|pleomorphism)\s*(?:score\s*)?(?:of\s*)?[:=]?\s*(?:[1-3]|i{1,3})\b(?:\s*(?:/|of)\s*(?:3|iii))?",
            " ",
            clause,
        )
        c = re.sub(
            r"\b(?:low|intermediate|high)(?:[- ]to[- ](?:low|intermediate|high))?[- ]nuclear grades?\b|\bnuclear grade (?:low|intermediate|high)\b",
            " ",
            c,
        )
        if re.search(
            r"\b(?:low|intermediate|high|[1-3]|i{1,3})\s*(?:to|-|/)\s*(?:low|intermediate|high|[1-3]|i{1,3})[- ](?:nuclear )?grade\b",
            c,
        ):
            continue  # a range is no grade

        def bare(m) -> bool:
            """A bare grade word counts unless it belongs to an in-situ component next to it."""
            nxt = re.match(rf"([^,;]{{0,35}}?)(?:{insitu})", c[m.end() :])
            if nxt and not re.search(r"\b(?:invasive|infiltrating)\b", nxt.group(1)):
                return False
            head = c[: m.start()]
            last_is = max((x.end() for x in re.finditer(insitu, head)), default=-1)
            last_inv = max(
                (
                    x.end()
                    for x in re.finditer(r"\b(?:invasive|infiltrating|carcinoma(?! in situ)|tumou?r|idc|ilc)\b", head)
                ),
                default=-1,
            )
            return not (last_is > last_inv and re.search(r"^[^,;]*$", head[last_is:]))

        for m in re.finditer(
            r"\b(?:nottingham|sbr|scarff[- ]bloom[- ]richardson|bloom[- ]richardson|elston|histologic|histological|combined|overall)"
            r"(?: \w+){0,3}? grade\s*(?:of\s*)?[:=]?\s*(1|2|3|iii|ii|i)\b(?!\s*(?:-|to)\s*(?:[1-3]|i{1,3})\b)",
            c,
        ):
            found.add(_GRADE_WORD[m.group(1)])
        for m in re.finditer(
            r"(?<!nuclear )\bgrade\s*(?:of\s*)?[:=]?\s*(1|2|3|iii|ii|i)\b(?!\s*\+)(?!\s*(?:-|to)\s*(?:[1-3]|i{1,3})\b)",
            c,
        ):
            if bare(m):
                found.add(_GRADE_WORD[m.group(1)])
        for m in re.finditer(
            r"\b(?:nottingham|sbr|bloom[- ]richardson|elston|histologic|combined|total)\s+(?:histologic\s+)?(?:grade\s+|grading\s+)?score\s*(?:of\s*)?[:=]?\s*(\d)\b(?!\s*\+)",
            c,
        ):
            g = _score_to_grade(int(m.group(1)))
            if g:
                found.add(g)
        for m in re.finditer(r"\b(?:g|nhg)\s?([1-3])\b", c):
            found.add(m.group(1))
        for m in re.finditer(r"\b(well|highly|moderately|poorly)[- ]differentiated\b", c):
            if bare(m):
                found.add({"well": "1", "highly": "1", "moderately": "2", "poorly": "3"}[m.group(1)])
        for m in re.finditer(
            r"\b(low|intermediate|high)(?:[- ]grade\b| (?:combined |overall |nottingham )?histologic grade\b)", c
        ):
            if bare(m):
                found.add({"low": "1", "intermediate": "2", "high": "3"}[m.group(1)])
    return _one(found)


def _one(values: set) -> str | None:
    return None if not values else next(iter(values)) if len(values) == 1 else CONFLICT


_POS = (
    r"(?:strongly |weakly |focally |moderately )?positiv\w*|\bpos\b|overexpress\w*|(?:strong|weak|moderate|diffuse|focal) expression of|"
    r"\bexpressed(?= (?:the )?(?:er|pr|her2)\b)"
)
_NEG = r"negativ\w*|\bneg\b|\babsent\b|not expressed|no (?:staining|expression|immunoreactivity)|non-?reactive"
_OTHER_MARKER = r"ki-?67|mib-?1|e-?cadherin|p53|p63|cytokeratin|keratin|ck\s?\d*|androgen|\bar\b|gcdfp|mammaglobin|synaptophysin|chromogranin|cd\d+"
_SEP = r"^(?:\s|,|/|&|\band\b|\bor\b|\bas well as\b|\bboth\b|\breceptors?\b|\(|\)|\bstatus\b)*$"


def _tokens(clause: str) -> list[tuple[int, int, str, str]]:
    """(start, end, kind, value): R = a receptor name, P = a status, X = another marker (ends a run)."""
    out = []
    for m in re.finditer(r"\b(er|pr|her2|hormone receptors?)\b", clause):
        out.append((m.start(), m.end(), "R", "hr" if m.group(1).startswith("hormone") else m.group(1)))
    for m in re.finditer(
        rf"(?:{_POS})|(?:{_NEG})|(?<![\d.])(<\s*)?(\d+(?:\.\d+)?)\s*(?:-\s*(\d+)\s*)?%|allred(?: score)?\s*(?:of\s*)?[:=]?\s*(\d)",
        clause,
    ):
        v = m.group(0)
        if m.group(4):
            val = "positive" if int(m.group(4)) >= 3 else "negative"
        elif m.group(2):
            hi = float(m.group(3) or m.group(2))
            val = "negative" if m.group(1) or hi < 1 else "positive"
        else:
            val = "negative" if re.match(_NEG, v) else "positive"
        out.append((m.start(), m.end(), "P", val))
    for m in re.finditer(_OTHER_MARKER, clause):
        out.append((m.start(), m.end(), "X", m.group(0)))
    return sorted(out)


def read_receptors(t: str) -> dict[str, str | None]:
    """ER / PR / HER2 status words as a reader pairs them: 'ER positive', 'positive for ER and PR',
    'ER, PR and HER2 were negative', 'negative PR', 'ER 95%', 'Allred 7'."""
    t = re.sub(r"\b(er|pr|her2)\s?\(?\+\)?(?![\w+])", r"\1 positive ", t)
    t = re.sub(r"\b(er|pr|her2)\s?\(?-\)?(?![\w])", r"\1 negative ", t)
    found: dict[str, set] = {"er": set(), "pr": set(), "her2": set()}

    def give(r: str, v: str):
        if r == "hr":
            if v == "negative":  # "hormone receptor negative" = ER and PR negative; "positive" says neither
                found["er"].add(v)
                found["pr"].add(v)
        else:
            found[r].add(v)

    if re.search(r"\btriple[- ]negative\b", t):
        for r in found:
            found[r].add("negative")
    for clause in re.split(r";|\.(?!\d)|\bwhile\b|\bwhereas\b|\bbut\b|\bwith the exception\b", t):
        toks = _tokens(clause)
        pending, for_p, prev_end = [], None, 0
        for start, end, kind, val in toks:
            gap = clause[prev_end:start]
            if kind == "R":
                if for_p is not None and re.match(_SEP, re.sub(r"\b(?:for|to|in|of|the)\b", " ", gap)):
                    give(val, for_p)
                elif pending and not re.match(_SEP, gap) and len(gap) > 60:
                    pending = [val]
                    for_p = None
                else:
                    pending.append(val)
                    for_p = None
            elif kind == "P":
                if pending and len(gap) <= 60 and not (pending == ["hr"] and re.match(r"\s+(?:er|pr)\b", clause[end:])):
                    for r in pending:
                        give(r, val)
                    pending, for_p = [], None
                else:
                    pending = []
                    # "positive for ER", "negative PR", "strong expression of ER"
                    nxt = clause[end : end + 12]
                    for_p = (
                        val
                        if re.match(r"\s*(?:for|to|in)?\s*(?:both\s+)?(?:the\s+)?(?:er|pr|her2|hormone)\b", nxt)
                        or re.match(r".*(?:for|to|of)$", clause[start:end])
                        else None
                    )
            else:
                pending, for_p = [], None
            prev_end = end
    return {r: _one(v) for r, v in found.items()}


def read_her2(t: str) -> str | None:
    """The final HER2 call: an ISH result over the stated status over the IHC score."""
    fish, score = set(), set()
    for m in re.finditer(r"\bher2\b", t):
        window = re.split(r";|\.(?!\d)|\b(?:er|pr)\b", t[m.end() : m.end() + 90])[0]
        if re.search(
            r"\b(?:not|non-?|no)[- ]?amplifi|\bno (?:gene )?amplification|\bnegative by (?:fish|cish|ish|sish)\b",
            window,
        ):
            fish.add("negative")
        elif re.search(
            r"\b(?:is |was )?amplified\b|\bamplification (?:is |was )?(?:present|detected|identified|confirmed|seen)|"
            r"\bpositive by (?:fish|cish|ish|sish)\b|\bpositivity confirmed by (?:fish|cish|ish)",
            window,
        ):
            fish.add("positive")
        s = (
            re.match(
                r"\s*(?:\(|:)?\s*(?:ihc\s*)?(?:score\s*)?(?:of\s*)?(?:[:(]\s*)?([0-3])\s*\+?(?!\d|\.\d|\s*%)", window
            )
            or re.search(r"\b(?:ihc|score)\s*(?:score\s*)?(?:of\s*)?[:=(]?\s*([0-3])\+?(?!\d)", window[:40])
            or re.search(r"\(([0-3])\+\)", window[:30])
        )
        if s:
            score.add({"0": "negative", "1": "negative", "2": "equivocal", "3": "positive"}[s.group(1)])
    word = set()
    for m in re.finditer(
        r"\bher2\b[^;.]{0,25}?\b(equivocal|borderline|indeterminate)\b|\b(equivocal|borderline)\b[^;.]{0,15}\bher2\b", t
    ):
        word.add("equivocal")
    stated = read_receptors(t)["her2"]
    if stated:
        word.add(stated)
    if re.search(
        r"\bher2\b[^;.]{0,60}\b(?:pending|ordered|inconclusive|failed|unsuccessful|not (?:performed|done|available))", t
    ) and not (fish or word or score):
        return None
    for group in (fish, word, score):
        if group:
            return _one(group) if CONFLICT not in group else CONFLICT
    return None


def read_nodes(t: str) -> str | None:
    """Node status: any involved node (macro- or micrometastasis) makes it positive; isolated tumour cells do not."""
    pos, neg = False, False
    node = r"(?:lymph[- ]?nodes?|nodes?|lns?|sentinel)"
    t = re.sub(r"\s*\b(?:isolated tumou?r cells?(?: clusters?)?|itcs?)\b\s*", " itc ", t)
    t = re.sub(r"\b(?:keratin|cytokeratin|ck)[- ]positive\b", "keratin-stained", t)
    for m in re.finditer(rf"\b(\d+|no|none)\s*(?:/|of|out of)\s*(?:the\s+)?(\d+)\b[^;.]{{0,45}}?\b{node}", t):
        n = 0 if m.group(1) in ("no", "none") else int(m.group(1))
        if n <= int(m.group(2)):
            if (
                n
                and re.search(r"\bitc\b", t[m.end() : m.end() + 60])
                and not re.search(r"metasta", t[m.end() : m.end() + 60])
            ):
                neg = True  # "1 of 3 nodes with isolated tumour cells"
            else:
                pos |= n > 0
                neg |= n == 0
    for m in re.finditer(rf"\b{node}\b[^;.]{{0,25}}?\b(\d+)\s*(?:/|of|out of)\s*(\d+)\b", t):
        n = int(m.group(1))
        if n <= int(m.group(2)):
            pos |= n > 0
            neg |= n == 0
    for m in re.finditer(rf"\bout of (\d+)(?: \w+){{0,2}} {node}[^;.]{{0,10}}?,? (\d+|none|no)\b", t):
        n = 0 if m.group(2) in ("none", "no") else int(m.group(2))
        pos |= n > 0
        neg |= n == 0
    for m in re.finditer(
        r"(?<![a-z])(?:p|yp)?n\s?([0-3]|x)(mi|[abc])?(?:\s?\((?:i|mol)?[+-]\)|\s?\(sn\))*(?=[^a-z\d]|[lvrm][\dx]|$)", t
    ):
        if m.group(1) == "x":
            continue
        if m.group(1) == "0":
            neg = True
        else:
            pos = True
    for m in re.finditer(r"\bmicrometasta\w*", t):
        if not _NEG_BEFORE.search(t[max(0, m.start() - 60) : m.start()]):
            pos = True
    for m in re.finditer(rf"\b{node}\b", t):
        before, after = t[max(0, m.start() - 70) : m.start()], re.split(r";|\.(?!\d)", t[m.end() : m.end() + 70])[0]
        if re.match(
            r"[^;]{0,45}?\b(?:were |was |are |is |all |both |being )*(?:negative|uninvolved|free of|benign|without|"
            r"(?:show\w*|reveal\w*|had|have|has|with) (?:no|none)\b|no (?:evidence of )?(?:metasta|tumou?r|carcinoma|malignan))",
            after,
        ):
            neg = True
        elif re.match(
            r"[^,;]{0,35}?(?<![-\w])(?:positive|involved|(?:show\w*|contain\w*|demonstrat\w*|reveal\w*|with|had|has|have|harbou?r\w*)(?: \w+){0,2} (?:micro)?metasta)",
            after,
        ) and not re.match(r"[^,;]{0,30}?\bnot\b", after):
            pos = True
        if re.search(r"\b(?:node|nodal)[- ]negative\b", t[m.start() : m.end() + 10]) or re.search(
            r"(?<![-\w])negative (?:\w+ ){0,3}$|\bno (?:\w+ ){0,3}$", before
        ):
            neg = True
        elif re.search(r"\b(?:node|nodal)[- ]positive\b", t[m.start() : m.end() + 10]) or (
            re.search(r"(?<![-\w])(?:positive|metastatic) (?:(?!in |of |the |for )\w+ ){0,3}$", before)
            and not _NEG_BEFORE.search(before)
        ):
            pos = True
        cause = re.search(
            r"\b(?:metasta\w*|carcinoma|tumou?r|cancer|malignancy|involvement|itc)\b(?: \w+){0,4} (?:in|to|within|involving|of) (?:[\w#-]+ ){0,6}$",
            before,
        )
        if cause:
            lead = t[max(0, m.start() - len(before) + cause.start() - 50) : m.start() - len(before) + cause.start() + 1]
            if cause.group(0).startswith("itc"):
                neg = True
            elif _NEG_BEFORE.search(lead) or _HEDGE_BEFORE.search(lead):
                neg = True
            else:
                pos = True
    if re.search(r"\bitc\b", t) and not pos:
        neg = True  # isolated tumour cells only: pN0(i+)
    if pos:
        return "positive"  # any involved node makes the status positive; a negative sentinel node does not undo it
    return "negative" if neg else None


def read_lvi(t: str) -> str | None:
    present, absent = False, False
    t = re.sub(r"\blymphatic[- ]vascular\b", "lymphovascular", t)
    pat = (
        r"\b(?:lvi|lvsi|(?:lympho-?vascular|angio-?lymphatic|lymphatic|vascular|vessel|venous|blood vessel)(?: (?:space|channel|vessel))?"
        r" (?:invasion|involvement|permeation|emboli|extension|spaces?)|tumou?r emboli|carcinomatous lymphangitis)\b"
    )
    for m in re.finditer(pat, t):
        before, after = t[max(0, m.start() - 60) : m.start()], t[m.end() : m.end() + 30]
        if _HEDGE_BEFORE.search(before):
            continue
        if re.match(
            r"\s*(?:is |was |are |were )?(?:\(|:)?\s*(?:absent|not identified|not seen|not present|negative|none|no\b|not detected|not evident)",
            after,
        ) or _NEG_BEFORE.search(before):
            absent = True
        elif re.match(
            r"\s*(?:is |was )?(?:\(|:)?\s*(?:suspicious|indeterminate|equivocal|cannot|possibl|questionabl)", after
        ):
            continue
        else:
            present = True
    if re.search(r"(?<![a-z\d])l1(?![a-z\d])|(?<![a-z\d])v1(?![a-z\d])|(?<=\d)l1|(?<=\d)v1", t):
        present = True
    if re.search(r"(?<![a-z\d])l0(?![a-z\d])|(?<=[\d)])l0", t):
        absent = True
    if present and absent:
        return "present" if re.search(r"\b(?:lvi|lymphovascular invasion)(?: is)? present\b", t) else CONFLICT
    return "present" if present else "absent" if absent else None


_TUMOUR = r"tumou?rs?|carcinomas?|cancer|mass(?:es)?|focus|foci|lesions?|nodules?|idc|ilc|invasive|sizes?|greatest dimension|largest|neoplasm"
_OTHER = (
    r"specimens?|mastectomy|skin|ellipse|lymph nodes?|nodes?|margins?|dcis|in situ|biopsy|fragments?|core|excision|lumpectomy|"
    r"resection|metasta\w*|deposits?|extranodal|extension|cyst|fibroadenoma|ki-?67|distance"
)


def read_size(t: str) -> float | None:
    """The largest size the summary gives the invasive tumour (not the specimen, a node, a margin distance or DCIS)."""
    sizes = []
    num = r"(\d+(?:\.\d+)?)"
    t = re.sub(r"\bmetastatic (?:focus|foci|deposits?|tumou?rs?|carcinomas?|lesions?)\b", "metastasis", t)
    for m in re.finditer(rf"{num}(?:\s*(?:x|by)\s*{num})?(?:\s*(?:x|by)\s*{num})?\s*(cm|mm)\b", t):
        dims = [float(g) for g in m.groups()[:3] if g]
        cm = max(dims) / (10 if m.group(4) == "mm" else 1)
        after = t[m.end() : m.end() + 40]
        if re.match(r"\s*(?:\w+ ){0,3}(?:from|to|of the|away)\b", after) or re.match(
            r"\s*(?:of |in )?(?:dcis|ductal carcinoma in situ|in situ|the margin)", after
        ):
            continue
        if re.match(rf"\s*(?:[\w-]+ ){{0,3}}(?:{_TUMOUR})\b", after) and not re.match(
            rf"\s*(?:[\w-]+ ){{0,3}}(?:{_OTHER})\b", after
        ):
            sizes.append(cm)
            continue
        starts = [t.rfind(x, 0, m.start()) for x in (";", ". ", "\n")]
        before = t[max(starts) + 1 if max(starts) >= 0 else 0 : m.start()]
        words = [(w.start(), "t") for w in re.finditer(rf"\b(?:{_TUMOUR})\b", before)] + [
            (w.start(), "o") for w in re.finditer(rf"\b(?:{_OTHER})\b", before)
        ]
        if words and max(words)[1] == "t":
            sizes.append(cm)
    return round(max(sizes), 2) if sizes else None


READERS = {
    "histologic_type": read_type,
    "grade": read_grade,
    "er": lambda t: read_receptors(t)["er"],
    "pr": lambda t: read_receptors(t)["pr"],
    "her2": read_her2,
    "lymph_nodes": read_nodes,
    "lvi": read_lvi,
    "tumor_size_cm": read_size,
}


def read_summary(text: str) -> dict[str, object]:
    """Facts stated by one summary: field -> value, None (not stated) or ``conflict``."""
    t = _norm(text)
    return {f: fn(t) for f, fn in READERS.items()}


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------


def judge(field: str, truth: str, stated) -> str:
    """right / wrong / not stated for a known fact; 'unsupported' / 'silent' where the report does not say."""
    if truth == "unknown":
        return "silent" if stated is None else "unsupported"
    if stated is None:
        return "not stated"
    if stated == CONFLICT:
        return "wrong"
    if field == "tumor_size_cm":
        return "right" if abs(float(stated) - float(truth)) <= SIZE_TOLERANCE_CM + 1e-9 else "wrong"
    return "right" if stated == truth else "wrong"


def load_summaries(
    path: str | Path, facts: pd.DataFrame, id_column: str | None = None, text_column: str | None = None
) -> pd.Series:
    """Summary text per fact-table row, from a TSV/CSV keyed by row number (``slno``/``row``) or barcode."""
    p = Path(path)
    df = pd.read_csv(p, sep="\t" if p.suffix.lower() in (".tsv", ".tab") else ",", dtype=str, keep_default_na=False)
    text_column = text_column or next((c for c in ("summary", "preds", "text") if c in df.columns), None)
    id_column = id_column or next(
        (c for c in ("row", "slno", "bcr_patient_barcode", "case_id") if c in df.columns), None
    )
    if text_column not in df.columns or id_column not in df.columns:
        raise SystemExit(
            f"{p}: need an id column (row, slno, bcr_patient_barcode or case_id) and a summary column "
            f"(summary, preds or text); has {list(df.columns)}"
        )
    by_id = dict(zip(df[id_column].str.strip(), df[text_column]))
    if any(str(r) in by_id for r in facts["row"]):
        key = facts["row"].astype(str)
    elif any(b in by_id for b in facts["bcr_patient_barcode"]):
        key = facts["bcr_patient_barcode"]
    else:
        raise SystemExit(f"{p}: no {id_column!r} value matches a fact-table row number or barcode")
    missing = [k for k in key if k not in by_id]
    if missing:
        print(
            f"warning: {p}: {len(missing)} of {len(key)} reports have no summary (e.g. {missing[:3]}); counted as not stated",
            file=sys.stderr,
        )
    return pd.Series([by_id.get(k, "") for k in key], index=facts.index)


def score(summaries: pd.Series, facts: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-field table, per-report details)."""
    details = []
    for i, text in summaries.items():
        read = read_summary(text)
        for f in FIELDS:
            details.append(
                {
                    "row": facts.at[i, "row"],
                    "bcr_patient_barcode": facts.at[i, "bcr_patient_barcode"],
                    "field": f,
                    "truth": facts.at[i, f],
                    "stated": read[f],
                    "verdict": judge(f, facts.at[i, f], read[f]),
                }
            )
    d = pd.DataFrame(details)
    table = d.groupby("field", sort=False)["verdict"].value_counts().unstack(fill_value=0)
    for c in ("right", "wrong", "not stated", "unsupported", "silent"):
        if c not in table:
            table[c] = 0
    table = table.loc[list(FIELDS)]
    table.loc["overall"] = table.sum()
    table["known"] = table[["right", "wrong", "not stated"]].sum(axis=1)
    for c in ("right", "wrong", "not stated"):
        table[f"{c} %"] = 100 * table[c] / table["known"].where(table["known"] > 0)
    return table, d


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("summaries", nargs="+", help="summaries TSV/CSV files (one column block per file in the output)")
    ap.add_argument("--facts", default=str(FACTS))
    ap.add_argument("--id-column")
    ap.add_argument("--text-column")
    ap.add_argument("--rows", help="score only fact-table entries start:stop (e.g. a held-out part: 49:98)")
    ap.add_argument(
        "--details",
        help="write every (report, field) verdict here (TSV; with several inputs, one file per input suffixed .N)",
    )
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    facts = pd.read_csv(a.facts, sep="\t", dtype=str, keep_default_na=False)
    if a.rows:
        start, stop = (int(x) if x else None for x in a.rows.split(":"))
        facts = facts.iloc[start:stop]
    results = {}
    for n, path in enumerate(a.summaries):
        table, details = score(load_summaries(path, facts, a.id_column, a.text_column), facts)
        results[path] = table
        if a.details:
            out = a.details if len(a.summaries) == 1 else f"{a.details}.{n}"
            details.to_csv(out, sep="\t", index=False)
    print(
        f"{len(facts)} reports; known facts stated right / wrong / not stated (%), and statements where the report is silent"
    )
    head = f"{'field':16s}{'known':>6s}" + "".join(f" | {Path(p).name[:28]:>28s}" for p in results)
    print(head)
    print(f"{'':22s}" + "".join(f" | {'right':>6s} {'wrong':>6s} {'n/s':>6s} {'unsup':>6s}" for _ in results))
    for f in [*FIELDS, "overall"]:
        first = next(iter(results.values()))
        line = f"{f:16s}{int(first.at[f, 'known']):6d}"
        for t in results.values():
            line += f" | {t.at[f, 'right %']:6.1f} {t.at[f, 'wrong %']:6.1f} {t.at[f, 'not stated %']:6.1f} {int(t.at[f, 'unsupported']):6d}"
        print(line)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(
            json.dumps(
                {p: t.reset_index().to_dict(orient="records") for p, t in results.items()}, indent=2, default=float
            )
        )
    return results


if __name__ == "__main__":
    main()
