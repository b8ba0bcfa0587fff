"""Multiple-choice options: how they are written into a prompt, and which letter an answer chose.

Models answer multiple-choice questions in many shapes ("B", "(B)", "B. a red circle",
"The answer is B.", "**B**", or only the option's text). :func:`extract_letter` reads all of them
and returns ``None`` rather than guessing when the text names no option or several.
"""

from __future__ import annotations

import re
from typing import Sequence

LETTERS = "ABCDEFGHIJ"
INSTRUCTION = "Answer with the option's letter from the given choices directly."
_ARTICLE = r"A\s+(?!or\b|and\b)[a-z]"  # "A man ...": the article, not option A
_PREFIX = re.compile(r"^\s*\(?([A-J])\s*[.):]\s*")
# Right after a chosen letter: "or B", "and B", ", B", "/B", "& B" mean several options, not one.
_NOT_ALONE = r"(?!\s*(?:,|/|&|\bor\b|\band\b)\s*\(?[A-J]\b)"


def split_option(option: str, index: int) -> tuple[str, str]:
    """``("B", "a red circle")`` from ``"B. a red circle"``, ``"(B) a red circle"`` or, at
    position 1, ``"a red circle"``. A written letter must match the position."""
    text = str(option).strip()
    expected = LETTERS[index]
    m = _PREFIX.match(text)
    if m:
        if m.group(1) != expected:
            raise ValueError(f"option {index + 1} is labelled {m.group(1)!r}, expected {expected!r}: {text!r}")
        text = text[m.end():].strip()
    if not text:
        raise ValueError(f"option {expected} is empty")
    return expected, text


def normalize_options(options: Sequence[str]) -> list[tuple[str, str]]:
    """``[(letter, text), ...]`` for 2 to 10 options, with or without letter prefixes."""
    if isinstance(options, str):
        raise TypeError("options must be a sequence of strings, not one string")
    options = list(options)
    if not 2 <= len(options) <= len(LETTERS):
        raise ValueError(f"need 2 to {len(LETTERS)} options, got {len(options)}")
    return [split_option(o, i) for i, o in enumerate(options)]


def format_options(options: Sequence[str]) -> str:
    """One ``"A. text"`` line per option."""
    return "\n".join(f"{letter}. {text}" for letter, text in normalize_options(options))


def multiple_choice_prompt(question: str, options: Sequence[str]) -> str:
    """The Video-MME style prompt: question, options, then the instruction to answer by letter."""
    return f"{question.strip()}\n{format_options(options)}\n{INSTRUCTION}"


def _clean(text: str) -> str:
    return re.sub(r"[*_`#\"']", "", text).strip()


def extract_letter(text: str, options: Sequence[str] | int = 4) -> str | None:
    """The option letter an answer picks, or ``None`` when it picks none or several.

    ``options`` is the option list (its texts then also count as answers) or just their number.
    Tried in order: a leading letter ("B", "(B)", "B.", "B: ..."); "answer/option/choice is B";
    a parenthesised "(B)"; the option's text appearing alone; a single standalone capital letter
    in range (the article "A" before a lowercase word does not count). A letter joined to
    another by "or", "and", a comma, "/" or "&" ("The answer is B or C") picks several: ``None``.
    """
    if isinstance(options, int):
        n, texts = options, []
    else:
        pairs = normalize_options(options)
        n, texts = len(pairs), [t for _, t in pairs]
    valid = LETTERS[:n]
    s = _clean(text or "")
    if not s:
        return None

    m = re.match(r"^\(?([A-J])(?:\)|(?!\)))(?=$|[\s.,:;)!])(?!\s+or\b)" + _NOT_ALONE, s)
    if m and m.group(1) in valid and not re.match(_ARTICLE, s):
        return m.group(1)
    m = re.search(r"\b(?:answer|option|choice)\b\s*(?:is|would be|:)?\s*(?:option\s*)?\(?([A-J])\b(?:\)|(?!\)))"
                  + _NOT_ALONE, s, re.I)
    if m and m.group(1).upper() in valid:
        return m.group(1).upper()
    found = set(re.findall(r"\(([A-J])\)", s)) & set(valid)
    if len(found) == 1:
        return found.pop()
    low = s.lower()
    hits = [LETTERS[i] for i, t in enumerate(texts) if re.search(r"\b" + re.escape(t.lower()) + r"\b", low)]
    if len(hits) == 1:
        return hits[0]
    standalone = {c for c in re.findall(r"(?<![\w-])([A-J])(?![\w-])", s) if c in valid}
    standalone -= {"A"} if re.search(r"(?<![\w-])" + _ARTICLE, s) else set()
    if len(standalone) == 1:
        return standalone.pop()
    return None
