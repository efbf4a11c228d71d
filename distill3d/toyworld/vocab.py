"""The toy world's language: vocabulary, caption grammar and prompt parsing.

Grammar:  "a" [COLOUR] [PATTERN] SHAPE ["with a face"] [", " VIEW " view"]
e.g. "a red cube", "a blue striped sphere with a face", "a green cone, back view".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SHAPES = ("sphere", "cube", "cylinder", "cone", "torus")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "green": (0.10, 0.65, 0.20),
    "blue": (0.10, 0.25, 0.85),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.55, 0.15, 0.70),
    "orange": (0.95, 0.50, 0.05),
    "white": (0.92, 0.92, 0.92),
}
PATTERNS = ("plain", "striped")
VIEWS = ("front", "side", "back", "overhead")
FACE_PHRASE = "with a face"
STRIPE_COLOUR = (0.97, 0.97, 0.97)
FACE_COLOUR = (0.05, 0.05, 0.05)

# Words that appear in captions, in a fixed order (the tokenizer's vocabulary is built from it).
GRAMMAR_WORDS = ("a", "an", "with", "face", "view", ",")
VOCABULARY: tuple[str, ...] = GRAMMAR_WORDS + tuple(COLOURS) + PATTERNS + SHAPES + VIEWS


class PromptError(ValueError):
    """A prompt the toy world cannot read; the message names the problem and the words it knows."""


@dataclass(frozen=True)
class ObjectSpec:
    """One toy-world object, fully determined by its caption."""

    shape: str
    colour: str = "white"
    pattern: str = "plain"
    face: bool = False

    @property
    def rgb(self) -> tuple[float, float, float]:
        return COLOURS[self.colour]

    def caption(self, view: str | None = None, with_colour: bool = True) -> str:
        words = ["a"]
        if with_colour:
            words.append(self.colour)
        if self.pattern != "plain":
            words.append(self.pattern)
        words.append(self.shape)
        text = " ".join(words)
        if self.face:
            text += " " + FACE_PHRASE
        if view is not None:
            text += f", {view} view"
        return text


def tokenize_words(prompt: str) -> list[str]:
    """Lower-case words, with the comma as its own token."""
    return re.findall(r"[a-z]+|,", prompt.lower())


def known_words_hint() -> str:
    return "known words: " + ", ".join(sorted(set(VOCABULARY) - {","}))


def check_prompt(prompt: str) -> None:
    """Raise PromptError for an empty prompt or one with words outside the vocabulary."""
    if not prompt or not prompt.strip():
        raise PromptError("empty prompt: give a caption such as 'a red cube' (" + known_words_hint() + ")")
    unknown = [w for w in tokenize_words(prompt) if w not in VOCABULARY]
    stray = re.sub(r"[a-zA-Z,\s]", "", prompt)
    if stray:
        unknown.append(stray)
    if unknown:
        raise PromptError(
            f"prompt {prompt!r} has words the toy prior does not know: {', '.join(unknown)}; " + known_words_hint()
        )


def parse_prompt(prompt: str) -> ObjectSpec:
    """Caption -> ObjectSpec. View phrases are accepted and ignored. Raises PromptError with the fix."""
    check_prompt(prompt)
    words = tokenize_words(prompt)
    shapes = [w for w in words if w in SHAPES]
    if len(shapes) != 1:
        raise PromptError(
            f"prompt {prompt!r} must name exactly one shape ({', '.join(SHAPES)}), found {len(shapes)}"
        )
    colours = [w for w in words if w in COLOURS]
    if len(colours) > 1:
        raise PromptError(f"prompt {prompt!r} names {len(colours)} colours; name at most one of {', '.join(COLOURS)}")
    return ObjectSpec(
        shape=shapes[0],
        colour=colours[0] if colours else "white",
        pattern="striped" if "striped" in words else "plain",
        face="face" in words,
    )


def all_specs() -> list[ObjectSpec]:
    """Every object the grammar can describe (5 x 7 x 2 x 2 = 140)."""
    return [
        ObjectSpec(s, c, p, f) for s in SHAPES for c in COLOURS for p in PATTERNS for f in (False, True)
    ]
