"""The offline tokenizer reads ordinary English: a 180-word narrative report fits in ~260 tokens, the grounding
tokens are single ids, building is deterministic and takes seconds."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medrg.tokenizer import BOX_TOKEN, IMAGE_TOKEN, train_tiny_tokenizer

REPORTS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chestxray8" / "reports"

# written for this test (not taken from any data set): a long narrative report in a writer's own words
NARRATIVE_180 = (
    "Frontal and lateral views of the chest were obtained in the upright position and compared with the "
    "examination performed three months earlier. There is a moderate left pleural effusion layering along the "
    "lateral chest wall with associated compressive atelectasis of the adjacent left lower lobe. The effusion "
    "has increased in size since the previous study. A rounded nodule measuring approximately two centimeters "
    "is seen in the right upper lobe; its margins are slightly irregular, which raises concern for a primary "
    "lung malignancy. The cardiac silhouette is mildly enlarged, although this may be partly accentuated by the "
    "portable technique. There is no pneumothorax. The pulmonary vasculature is within normal limits and there "
    "is no evidence of interstitial edema. The visualized bones show mild degenerative changes of the thoracic "
    "spine without acute fracture. The trachea is midline. Impression: increasing left pleural effusion with "
    "adjacent atelectasis, and "
    "a new right upper lobe nodule. Recommend a contrast-enhanced CT scan of the chest for further "
    "characterization, and correlation with the patient's symptoms and any prior imaging. Diagnostic "
    "thoracentesis could be considered if clinically indicated."
)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tiny_tokenizer()


def test_hand_written_180_word_report_fits(tokenizer):
    words = len(NARRATIVE_180.split())
    assert 178 <= words <= 185
    n = len(tokenizer(NARRATIVE_180)["input_ids"])
    assert n <= 260, f"{words} words -> {n} tokens"
    # it decodes back to the same text (byte-level: nothing is lost)
    assert tokenizer.decode(tokenizer(NARRATIVE_180)["input_ids"]) == NARRATIVE_180


def test_grounding_tokens_are_single_special_ids(tokenizer):
    for token in (IMAGE_TOKEN, BOX_TOKEN):
        ids = tokenizer(f"left effusion{token}; x", add_special_tokens=False)["input_ids"]
        token_id = tokenizer.convert_tokens_to_ids(token)
        assert ids.count(token_id) == 1
        assert token in tokenizer.all_special_tokens
    assert tokenizer.pad_token is not None and tokenizer.eos_token == "</s>"
    assert len(tokenizer) < 5000  # small embedding tables for tiny models


def test_build_is_deterministic_and_fast():
    """Two fresh processes build byte-identical tokenizers, each in a few seconds."""
    code = (
        "import time, hashlib; from medrg.tokenizer import _trained_json; t = time.perf_counter(); "
        "h = hashlib.sha256(_trained_json(4096).encode()).hexdigest(); "
        "print(h, time.perf_counter() - t)"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    (h1, s1), (h2, s2) = (r.stdout.split() for r in runs)
    assert h1 == h2
    assert float(s1) < 10 and float(s2) < 10, (s1, s2)
    # within a process the trained model is cached and every call gives an independent object
    started = time.perf_counter()
    a, b = train_tiny_tokenizer(), train_tiny_tokenizer()
    assert time.perf_counter() - started < 2.0
    a.add_tokens(["<only-in-a>"])
    assert len(b) == len(a) - 1


def test_bad_vocab_size():
    with pytest.raises(ValueError, match="vocab_size must be >= 300"):
        train_tiny_tokenizer(100)


@pytest.mark.skipif(not REPORTS.is_dir(), reason="shared ChestX-ray8 narrative reports absent")
def test_real_narrative_reports_fit(tokenizer):
    rows = []
    for name in ("train_gpt", "train_llama", "val_gpt", "val_llama"):
        with open(REPORTS / f"{name}.jsonl") as f:
            rows += [json.loads(line)["report"] for line in f]
    tokens = [len(tokenizer(r)["input_ids"]) for r in rows]
    words = [len(r.split()) for r in rows]
    per_word = sum(tokens) / sum(words)
    print(
        f"{len(rows)} reports: mean {statistics.mean(tokens):.1f} tokens, max {max(tokens)}, {per_word:.3f}/word"
    )
    assert 180 * per_word <= 260
    assert max(tokens) <= 300  # the longest (~180 words) fits a 384-token prompt with the image tokens
