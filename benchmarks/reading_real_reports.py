"""Does MedRG's report reader read what radiologists write?

    python benchmarks/reading_real_reports.py                      # the processor's reader, default vocabulary
    python benchmarks/reading_real_reports.py --name before       # label a run (e.g. before a change)
    python benchmarks/reading_real_reports.py --engine medspacy   # the medspaCy ConText comparison (if installed)

Data: ``../shared/data/iu_reports/indiana_reports_dev.csv``, the even-uid half of the Indiana University chest X-ray
collection (1,927 radiologist reports with the curators' manual MeSH coding of every PRESENT finding; denied findings
are not coded). Each report is read as the pipeline gets it: ``INDICATION: ... COMPARISON: ... FINDINGS: ...
IMPRESSION: ...`` (the sections the row has). Reports with neither findings nor impression are skipped.

The labels of a report are the findings the reader says it states (``MedRGProcessor.read_report`` /
``report_phrases``): report-guided decoding names exactly these, each once and all of them, and the ones the model
cannot box are returned as read but not grounded, so these ARE the pipeline's labels (boxes aside).

Scoring uses tables of this file only, independent of the project's vocabulary (a reader is not graded by its
own keyword list):

- ``CODED``: curators' MeSH heading (+ first qualifier) -> a benchmark category (from ``CODED_HEADINGS``);
- ``LABEL_TERMS``: regular expressions that say which benchmark categories a label names;
- ``FAMILIES``: categories a curator may code for one another (a label "airspace disease" on a report coded
  "Pneumonia" names a coded finding).

Measures: per-category recall (reports coded with the category that get a label naming it); labels naming an
uncoded finding (a label naming categories none of which, nor of their family, is coded), with how many of them the
engine marks hedged (the curators code present findings only, so a finding the report hedges is often uncoded
while the reader names it, marked uncertain); normal reports (coded
``normal``) given a label; abnormal reports (coded with a lung, pleural, cardiac or device finding, ``ABNORMAL``)
with no label; the verbatim-span rate (a label is verbatim when it is a contiguous span of the report, case and
white space aside, or a side word of the same sentence + such a span: the reader's documented side rule); ms per
report. Writes benchmarks/results/reading_real_reports_<name>.json and .md.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
IU_DEV = ROOT.parent / "shared" / "data" / "iu_reports" / "indiana_reports_dev.csv"
TEN = (
    "cardiomegaly",
    "effusion",
    "pneumothorax",
    "nodule",
    "mass",
    "consolidation",
    "atelectasis",
    "infiltrate",
    "pneumonia",
    "edema",
)
# benchmark category -> the curators' MeSH headings that code it; a (heading, first qualifier) entry takes
# precedence over the heading alone.
CODED_HEADINGS = {
    "cardiomegaly": ("cardiomegaly", ("cardiac shadow", "enlarged")),
    "effusion": ("pleural effusion",),
    "pneumothorax": ("pneumothorax", "hydropneumothorax"),
    "nodule": ("nodule",),
    "mass": ("mass",),
    "consolidation": ("consolidation",),
    "atelectasis": ("pulmonary atelectasis", "volume loss"),
    "infiltrate": ("infiltrate",),
    "pneumonia": ("pneumonia",),
    "edema": ("pulmonary edema",),
    "opacity": ("opacity", "density"),
    "airspace disease": ("airspace disease",),
    "granuloma": ("calcified granuloma", "granuloma", "granulomatous disease"),
    "calcification": (("calcinosis", "lung"), ("calcinosis", "lymph nodes"), ("calcinosis", "mediastinum")),
    "scarring": ("cicatrix",),
    "emphysema": ("emphysema", "pulmonary emphysema", "pulmonary disease, chronic obstructive"),
    "hyperinflation": (("lung", "hyperdistention"), "lung, hyperlucent"),
    "low lung volumes": (("lung", "hypoinflation"),),
    "fibrosis": ("pulmonary fibrosis", "lung diseases, interstitial"),
    "pleural thickening": (("thickening", "pleura"),),
    "fracture": ("fractures, bone",),
    "hernia": ("hernia, hiatal",),
    "device": (
        "catheters, indwelling", "surgical instruments", "implanted medical device", "tube, inserted",
        "medical device", "stents",
    ),
    "aorta": (
        "aorta", "aorta, thoracic", "atherosclerosis",
        ("calcinosis", "aorta"), ("calcinosis", "aorta, thoracic"), ("calcinosis", "blood vessels"),
    ),
    "congestion": ("pulmonary congestion", "heart failure"),
    "markings": ("markings",),
    "costophrenic blunting": ("costophrenic angle",),
    "diaphragm": ("diaphragm", "diaphragmatic eventration"),
    "cavity": ("cavitation",),
    "cyst": ("cysts",),
    "bronchiectasis": ("bronchiectasis",),
}  # fmt: skip
CODED = {heading: category for category, headings in CODED_HEADINGS.items() for heading in headings}
# which categories a label names (regular expressions over the lower-case label)
LABEL_TERMS = {
    "cardiomegaly": r"cardiomegal|enlarg\w*.*\b(?:heart|cardiac)|(?:heart|cardiac|cardiomediastinal)\b.*\b(?:enlarg|large)|"
    r"borderline (?:heart|cardiac)|large heart",
    "effusion": r"(?<!pericardial )effusion|pleural fluid|hydrothorax|blunting of the \w* ?costophrenic",
    "pneumothorax": r"pneumothora|pleural air|air[- ]fluid level",
    "nodule": r"nodul",
    "mass": r"\bmass|tumou?r|neoplas",
    "consolidation": r"consolidat",
    "atelectasis": r"atelecta|collapse|volume loss",
    "infiltrate": r"infiltrat",
    "pneumonia": r"pneumoni",
    "edema": r"\bo?edema",
    "opacity": r"opaci|densit",
    "airspace disease": r"air ?space",
    "granuloma": r"granulom",
    "calcification": r"calcif",
    "scarring": r"scar",
    "emphysema": r"emphysem|copd|obstructive",
    "hyperinflation": r"hyperinfla|hyperexpan|hyperaerat|overinfla|hyperlucen|flatten",
    "low lung volumes": r"low (?:lung )?volume|hypoinfla|hypoventil|poor inspir|shallow inspir",
    "fibrosis": r"fibros|fibrotic",
    "pleural thickening": r"thicken",
    "fracture": r"fractur",
    "hernia": r"hernia",
    "device": r"catheter|\bline\b|tube|pacemaker|\bpicc\b|\bport\b|clip|wire|device|stent|sternotomy|suture|"
    r"electrode|\bleads?\b|hardware|valve|defibrillator|pacer|\bicd\b|prosthe|staple|drain|generator",
    "aorta": r"aort",
    "congestion": r"congest|vascular|cephaliz",
    "markings": r"marking|interstitial",
    "costophrenic blunting": r"costophrenic|blunt",
    "diaphragm": r"diaphragm|eventration",
    "cavity": r"cavit",
    "cyst": r"cyst|bulla|bleb",
    "bronchiectasis": r"bronchiecta",
}
LABEL_PATTERNS = {category: re.compile(pattern) for category, pattern in LABEL_TERMS.items()}
# categories a curator may code for one another
FAMILIES = (
    {"opacity", "airspace disease", "consolidation", "infiltrate", "pneumonia", "atelectasis", "markings"},
    {"granuloma", "calcification", "nodule", "scarring"},
    {"emphysema", "hyperinflation", "cyst"},
    {"fibrosis", "scarring", "markings", "pleural thickening"},
    {"effusion", "costophrenic blunting", "pleural thickening"},
    {"edema", "congestion", "markings"},
    {"cardiomegaly"},
    {"mass", "nodule"},
)
# coded categories that make a report abnormal for the "no label" measure: lung, pleural, cardiac, device
ABNORMAL = set(TEN) | {
    "opacity",
    "airspace disease",
    "granuloma",
    "calcification",
    "scarring",
    "emphysema",
    "hyperinflation",
    "fibrosis",
    "pleural thickening",
    "device",
    "congestion",
    "costophrenic blunting",
    "cavity",
    "cyst",
    "bronchiectasis",
}
SIDE_WORDS = ("right", "left", "bilateral", "both")


def coded_categories(mesh: str) -> set[str]:
    """Benchmark categories of a row's MeSH coding ("normal" -> empty)."""
    found = set()
    for entry in (mesh or "").split(";"):
        parts = [p.strip().lower() for p in entry.split("/")]
        if not parts[0] or parts[0] == "normal":
            continue
        qualifier = parts[1] if len(parts) > 1 else ""
        category = CODED.get((parts[0], qualifier)) or CODED.get(parts[0])
        if category:
            found.add(category)
    return found


def label_categories(label: str) -> set[str]:
    low = label.lower()
    return {category for category, pattern in LABEL_PATTERNS.items() if pattern.search(low)}


def family(category: str) -> set[str]:
    out = {category}
    for group in FAMILIES:
        if category in group:
            out |= group
    return out


def compose_report(row: dict) -> str:
    """The row as one sectioned report (empty when it has neither findings nor impression)."""
    parts = []
    for name, key in (
        ("INDICATION", "indication"),
        ("COMPARISON", "comparison"),
        ("FINDINGS", "findings"),
        ("IMPRESSION", "impression"),
    ):
        text = (row.get(key) or "").strip()
        if text:
            parts.append(f"{name}: {text}")
    if not (row.get("findings") or "").strip() and not (row.get("impression") or "").strip():
        return ""
    return "\n".join(parts)


def _normalise(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+(?:[-'][a-z0-9]+)*", text.lower()))


def is_verbatim(label: str, report: str) -> bool:
    """A contiguous span of the report (case, punctuation and white space aside), or a side word written in the
    same sentence of the report followed by such a span (the side rule)."""
    words = _normalise(label)
    text = f" {_normalise(report)} "
    if f" {words} " in text:
        return True
    head, _, rest = words.partition(" ")
    if head in SIDE_WORDS and rest:
        for sentence in re.split(r"[.\n;]", report):
            sentence_words = f" {_normalise(sentence)} "
            if f" {rest} " in sentence_words and f" {head} " in sentence_words:
                return True
    return False


def load_rows(path: Path = IU_DEV) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    out = []
    for row in rows:
        report = compose_report(row)
        if report:
            out.append(
                {
                    "uid": row["uid"],
                    "report": report,
                    "coded": coded_categories(row["MeSH"]),
                    "normal": row["MeSH"].strip().lower() == "normal",
                }
            )
    return out


def default_reader():
    """The labels the processor's reader gives a report (``MedRGProcessor.read_report`` when it exists, else the
    module-level ``report_key_phrases`` of the reader of that time)."""
    try:
        from medrg.processing.reading_medrg import ReportReader

        reader = ReportReader()
        return lambda report: [(f.label, f.uncertain) for f in reader.read(report).stated]
    except ImportError:
        from medrg.processing.reading_medrg import report_key_phrases

        return report_key_phrases


@dataclass
class Tally:
    """The running counts of ``score`` over the reports read so far."""

    per_category: defaultdict = field(
        default_factory=lambda: defaultdict(lambda: [0, 0])
    )  # category -> [coded, hit]
    labels_total: int = 0
    labels_uncoded: int = 0
    labels_uncoded_ten: int = 0
    labels_ten: int = 0
    labels_unknown: int = 0
    verbatim: int = 0
    labels_uncoded_ten_hedged: int = 0
    labels_ten_hedged: int = 0
    normal_lung_labelled: int = 0
    normal: int = 0
    normal_labelled: int = 0
    abnormal: int = 0
    abnormal_silent: int = 0
    abnormal_ten: int = 0
    abnormal_ten_silent: int = 0
    uncoded_by_category: Counter = field(default_factory=Counter)
    silent_examples: list = field(default_factory=list)
    uncoded_examples: list = field(default_factory=list)
    nonverbatim_examples: list = field(default_factory=list)
    times: list = field(default_factory=list)


def read_timed(read, report: str, times: list[float]) -> tuple[list[str], set[str]]:
    """Run the reader on one report, appending its wall seconds to ``times``: (the labels, the labels it marks
    hedged). A reader may give plain labels or ``(label, uncertain)`` pairs."""
    start = time.perf_counter()
    read_labels = list(read(report))
    times.append(time.perf_counter() - start)
    hedged = {item[0] for item in read_labels if not isinstance(item, str) and item[1]}
    labels = [item if isinstance(item, str) else item[0] for item in read_labels]
    return labels, hedged


def tally_labels(tally: Tally, row: dict, labels: list[str], hedged: set[str], examples: int) -> set[str]:
    """Count one report's labels: verbatim spans, labels naming no benchmark category, labels naming an uncoded
    finding (all, and those naming one of the ten, hedged or not); keep the first ``examples`` of the
    non-verbatim and the uncoded ones. Returns the categories the labels name."""
    coded = row["coded"]
    allowed = set().union(*(family(c) for c in coded)) if coded else set()
    named = set()
    for label in labels:
        categories = label_categories(label)
        named |= categories
        tally.labels_total += 1
        verbatim = is_verbatim(label, row["report"])
        tally.verbatim += verbatim
        if len(tally.nonverbatim_examples) < examples and not verbatim:
            tally.nonverbatim_examples.append({"uid": row["uid"], "label": label})
        if not categories:
            tally.labels_unknown += 1
            continue
        if not (categories & allowed):
            tally.labels_uncoded += 1
            tally.uncoded_by_category.update(categories)
            if len(tally.uncoded_examples) < examples:
                tally.uncoded_examples.append({"uid": row["uid"], "label": label, "coded": sorted(coded)})
        if categories & set(TEN):
            tally.labels_ten += 1
            tally.labels_ten_hedged += label in hedged
            if not (categories & allowed):
                tally.labels_uncoded_ten += 1
                tally.labels_uncoded_ten_hedged += label in hedged
    return named


def tally_report(tally: Tally, row: dict, labels: list[str], named: set[str], examples: int) -> None:
    """Count one report: each coded category and whether a label names it; a normal report given a label (any,
    or one naming a lung, pleural or cardiac finding); an abnormal report given none (keeping the first
    ``examples`` of those)."""
    coded = row["coded"]
    for category in coded:
        tally.per_category[category][0] += 1
        tally.per_category[category][1] += bool(family_hit(category, named))
    if row["normal"]:
        tally.normal += 1
        tally.normal_labelled += bool(labels)
        tally.normal_lung_labelled += bool(named & (ABNORMAL - {"device"}))
    if coded & ABNORMAL:
        tally.abnormal += 1
        tally.abnormal_silent += not labels
        if len(tally.silent_examples) < examples and not labels:
            tally.silent_examples.append(
                {"uid": row["uid"], "coded": sorted(coded), "report": row["report"][-300:]}
            )
        if coded & set(TEN):
            tally.abnormal_ten += 1
            tally.abnormal_ten_silent += not labels


def summarise(tally: Tally, reports: int) -> dict:
    """The measures of the module docstring from the counts over ``reports`` reports (rates, counts, ms per
    report, examples)."""
    t = tally
    ten_total = sum(t.per_category[c][0] for c in TEN)
    ten_hit = sum(t.per_category[c][1] for c in TEN)
    return {
        "reports": reports,
        "recall_ten": ten_hit / max(ten_total, 1),
        "recall_ten_counts": [ten_hit, ten_total],
        "recall_per_category": {
            c: {"recall": hit / n, "hit": hit, "coded": n}
            for c, (n, hit) in sorted(t.per_category.items(), key=lambda kv: -kv[1][0])
        },
        "labels": t.labels_total,
        "labels_uncoded_rate": t.labels_uncoded / max(t.labels_total - t.labels_unknown, 1),
        "labels_uncoded": t.labels_uncoded,
        "labels_uncoded_ten_rate": t.labels_uncoded_ten / max(t.labels_ten, 1),
        "labels_uncoded_ten": [t.labels_uncoded_ten, t.labels_ten],
        "labels_uncoded_ten_hedged": t.labels_uncoded_ten_hedged,
        "labels_ten_hedged": t.labels_ten_hedged,
        "labels_naming_no_benchmark_category": t.labels_unknown,
        "uncoded_by_category": dict(t.uncoded_by_category.most_common()),
        "normal_labelled_rate": t.normal_labelled / max(t.normal, 1),
        "normal_labelled": [t.normal_labelled, t.normal],
        "normal_lung_labelled": [t.normal_lung_labelled, t.normal],
        "abnormal_silent_rate": t.abnormal_silent / max(t.abnormal, 1),
        "abnormal_silent": [t.abnormal_silent, t.abnormal],
        "abnormal_ten_silent": [t.abnormal_ten_silent, t.abnormal_ten],
        "abnormal_other_silent": [t.abnormal_silent - t.abnormal_ten_silent, t.abnormal - t.abnormal_ten],
        "verbatim_rate": t.verbatim / max(t.labels_total, 1),
        "ms_per_report_mean": 1000 * statistics.fmean(t.times),
        "ms_per_report_median": 1000 * statistics.median(t.times),
        "ms_per_report_max": 1000 * max(t.times),
        "examples": {
            "abnormal_silent": t.silent_examples,
            "labels_uncoded": t.uncoded_examples,
            "not_verbatim": t.nonverbatim_examples,
        },
    }


def score(rows: list[dict], read, examples: int = 8) -> dict:
    """Every measure of the module docstring for ``read(report) -> list of labels`` (a label may come as
    ``(label, uncertain)`` where the engine says which labels the report hedges)."""
    tally = Tally()
    for row in rows:
        labels, hedged = read_timed(read, row["report"], tally.times)
        named = tally_labels(tally, row, labels, hedged, examples)
        tally_report(tally, row, labels, named, examples)
    return summarise(tally, len(rows))


def family_hit(category: str, named: set[str]) -> bool:
    """A coded category counts as named when a label names it (its own terms only, not its family)."""
    return category in named


def markdown(name: str, result: dict) -> str:
    lines = [
        f"# Reading real radiologist reports: {name}",
        "",
        f"IU chest X-ray collection, dev half ({result['reports']} reports with findings or impression); "
        "`python benchmarks/reading_real_reports.py`.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| recall of coded findings of the ten categories | {result['recall_ten']:.3f} "
        f"({result['recall_ten_counts'][0]}/{result['recall_ten_counts'][1]}) |",
        f"| labels naming an uncoded finding (all labels naming a category) | {100 * result['labels_uncoded_rate']:.1f} % "
        f"({result['labels_uncoded']}) |",
        f"| labels naming an uncoded finding (labels naming one of the ten) | "
        f"{100 * result['labels_uncoded_ten_rate']:.1f} % ({result['labels_uncoded_ten'][0]}/{result['labels_uncoded_ten'][1]}) |",
        f"| - of them hedged in the report (named, marked uncertain) | {result['labels_uncoded_ten_hedged']} "
        f"(of {result['labels_ten_hedged']} hedged labels) |",
        f"| normal reports given a label | {100 * result['normal_labelled_rate']:.1f} % "
        f"({result['normal_labelled'][0]}/{result['normal_labelled'][1]}) |",
        f"| normal reports given a label naming a lung, pleural or cardiac finding | "
        f"{100 * result['normal_lung_labelled'][0] / max(result['normal_lung_labelled'][1], 1):.1f} % "
        f"({result['normal_lung_labelled'][0]}/{result['normal_lung_labelled'][1]}) |",
        f"| abnormal reports (lung, pleural, cardiac, device) with no label | "
        f"{100 * result['abnormal_silent_rate']:.1f} % ({result['abnormal_silent'][0]}/{result['abnormal_silent'][1]}) |",
        f"| - of them coded with one of the ten | {result['abnormal_ten_silent'][0]}/{result['abnormal_ten_silent'][1]} |",
        f"| - of them coded only with other findings | {result['abnormal_other_silent'][0]}/{result['abnormal_other_silent'][1]} |",
        f"| labels that are verbatim report spans (side rule) | {100 * result['verbatim_rate']:.1f} % |",
        f"| ms per report (mean / median / max) | {result['ms_per_report_mean']:.2f} / "
        f"{result['ms_per_report_median']:.2f} / {result['ms_per_report_max']:.1f} |",
        "",
        "| category | recall | reports coded |",
        "|---|---|---|",
    ]
    for category, value in result["recall_per_category"].items():
        lines.append(f"| {category} | {value['recall']:.3f} | {value['coded']} |")
    return "\n".join(lines) + "\n"


def medspacy_reader(lower: bool = False):
    """A medspaCy reader for the comparison: target rules from this benchmark's own LABEL_TERMS are NOT used (that
    would grade the engine with the key); the targets are the project vocabulary's terms, and ConText +
    the sectionizer decide negation, hypothetical, historical and family mentions. Labels are the matched spans."""
    import importlib.util

    import medspacy
    from medspacy.ner import TargetRule

    try:  # PyRuSH logs every sentence boundary at DEBUG level through loguru
        from loguru import logger as loguru_logger

        loguru_logger.remove()
    except ImportError:
        pass

    # the vocabulary module by its path: the comparison runs in its own environment (medspaCy is no dependency)
    spec = importlib.util.spec_from_file_location(
        "vocabulary_medrg", ROOT / "processing" / "vocabulary_medrg.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["vocabulary_medrg"] = module
    spec.loader.exec_module(module)
    default_vocabulary = module.default_vocabulary

    nlp = medspacy.load(
        medspacy_enable=[
            "medspacy_pyrush",
            "medspacy_target_matcher",
            "medspacy_context",
            "medspacy_sectionizer",
        ]
    )
    matcher = nlp.get_pipe("medspacy_target_matcher")
    rules = []
    for category, entry in default_vocabulary()["findings"].items():
        for term in entry["terms"]:
            rules.append(TargetRule(term, category.upper(), pattern=rf"\b(?:{term})\b"))
    matcher.add(rules)
    skip_sections = {
        "indication",
        "history_of_present_illness",
        "past_medical_history",
        "reason_for_examination",
        "comparison",
        "family_history",
        "chief_complaint",
    }

    def read(report: str) -> list[str]:
        doc = nlp(report.lower() if lower else report)
        out = []
        for ent in doc.ents:
            if (
                ent._.is_negated
                or ent._.is_hypothetical
                or ent._.is_historical
                or ent._.is_family
                or ent._.is_uncertain
                and False
            ):
                continue
            section = ent._.section_category
            if section in skip_sections:
                continue
            text = ent.text.lower()
            if text not in out:
                out.append(text)
        return out

    return read


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="default", help="result file suffix")
    parser.add_argument("--engine", default="medrg", choices=["medrg", "medspacy", "medspacy-lower"])
    parser.add_argument("--data", type=Path, default=IU_DEV)
    args = parser.parse_args(argv)
    if not args.data.is_file():
        raise SystemExit(f"IU reports not found at {args.data} (see ../shared/data/iu_reports/README.md)")
    rows = load_rows(args.data)
    read = (
        default_reader() if args.engine == "medrg" else medspacy_reader(lower=args.engine == "medspacy-lower")
    )
    result = {"name": args.name, "engine": args.engine, **score(rows, read)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"reading_real_reports_{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(args.name, result)
    (RESULTS / f"reading_real_reports_{args.name}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
