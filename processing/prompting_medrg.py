"""Prompt and answer templates of MedRG.

Prompt: `<image> x N` + "\\n{instruction}\\nReport: " + report + "\\nFindings:"
Answer: " {phrase 1}<BOX>; {phrase 2}<BOX>." + EOS, or " {no_finding_answer}" + EOS when nothing is grounded.
"""

from __future__ import annotations

TASK = "report-grounding"  # the pipeline task name (transformers' `pipeline(TASK)`)

DEFAULT_INSTRUCTION = "Read the chest X-ray report and ground each key finding phrase in the image."
DEFAULT_NO_FINDING_ANSWER = "No finding."
REPORT_PREFIX = "\n{instruction}\nReport: "
ANSWER_PREFIX = "\nFindings:"
PHRASE_SEPARATOR = ";"
ANSWER_END = "."
# characters stripped around a decoded phrase
PHRASE_STRIP = " \t\n;,."


def sanitize_text(text: str, special_tokens: list[str]) -> str:
    """Neutralise literal special tokens in user text (a report saying "<BOX>" must not become the token)."""
    for token in special_tokens:
        if token and token in text:
            text = text.replace(token, token.replace("<", "< ").replace(">", " >"))
    return text


def prompt_pieces(instruction: str) -> tuple[str, str]:
    """The text before and after the report."""
    return REPORT_PREFIX.format(instruction=instruction), ANSWER_PREFIX


def answer_text(phrases: list[str], box_token: str, no_finding_answer: str) -> str:
    """The training answer for a list of finding phrases (one `<BOX>` per phrase)."""
    if not phrases:
        return " " + no_finding_answer
    parts = [f"{phrase.strip(PHRASE_STRIP)}{box_token}" for phrase in phrases]
    return " " + f"{PHRASE_SEPARATOR} ".join(parts) + ANSWER_END


__all__ = [
    "ANSWER_END",
    "ANSWER_PREFIX",
    "DEFAULT_INSTRUCTION",
    "DEFAULT_NO_FINDING_ANSWER",
    "PHRASE_SEPARATOR",
    "PHRASE_STRIP",
    "answer_text",
    "prompt_pieces",
    "sanitize_text",
]
