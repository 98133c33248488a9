"""Fine-tuning extends the finding vocabulary: every category of the training data (with its answer phrases) becomes
a groundable category of the processor's vocabulary, which the exported folder saves in `processor_config.json`, so
the fine-tuned model names the new findings under report-guided decoding."""

from __future__ import annotations

from collections import defaultdict

MAX_PHRASES_PER_CATEGORY = 200  # answer phrases read per category (the vocabulary keeps short, distinct ones)
STREAM_SCAN_ROWS = 2000  # rows of a streamed training split whose categories are read


def extend_vocabulary_from_dataset(processor, dataset) -> list[str]:
    """Add the categories of `dataset` (the grounding schema: `findings` = list of {phrase, category, boxes}) to
    `processor`'s vocabulary as categories the model boxes, with their answer phrases as wordings. A finding without
    a category adds its phrase's words as a category of their own. Returns the categories that are new or became
    groundable. Of a streamed split (`datasets.IterableDataset`) the first `STREAM_SCAN_ROWS` rows are read."""
    import datasets

    if dataset is None or "findings" not in getattr(dataset, "column_names", ()):
        return []
    phrases: dict[str, list[str]] = defaultdict(list)
    findings_column = dataset.select_columns(["findings"])
    if isinstance(
        findings_column, datasets.IterableDataset
    ):  # a stream: its first rows, not a pass over it all
        column = (row["findings"] for row in findings_column.take(STREAM_SCAN_ROWS))
    else:
        column = findings_column["findings"]
    for findings in column:
        for finding in findings or []:
            category = (finding.get("category") or finding.get("phrase") or "").strip()
            if category and len(phrases[category]) < MAX_PHRASES_PER_CATEGORY:
                phrases[category].append(finding.get("phrase") or category)
    vocabulary = processor.reader.vocabulary
    changed = []
    for category, category_phrases in phrases.items():
        known = vocabulary.category_of_label(category)
        before = vocabulary.grounded(known) if known else False
        key = processor.extend_vocabulary(category, category_phrases, grounded=True, label=category)
        if not before:
            changed.append(key)
    return changed


__all__ = ["extend_vocabulary_from_dataset"]
