"""Transcript normalisation to the model alphabet, and the filter that keeps synthetic-corpus transcripts exact.

The alphabet is upper-case ``A``-``Z``, the apostrophe and the space (`ALPHABET`). Two jobs, two functions:

- `normalize_transcript` maps any transcript towards that alphabet (punctuation out, upper case, plain apostrophes,
  accents stripped, whitespace collapsed). It never drops letters or digits: what stays outside the alphabet
  (digits, symbols) is the caller's to count or filter, see `out_of_alphabet`.
- `clean_sentence` decides whether a written sentence is read aloud *exactly* as its normalised transcript says, and
  returns that transcript or ``None``. Digits ("1984" may be read "nineteen eighty four"), symbols (``& % $ @``),
  abbreviations ("Mr.", "e.g.", "etc"), acronyms ("NASA" or "N A S A"?) and spelt-out letters are rejected, so a
  synthesiser reading the sentence says what the transcript says.

Pure Python, no third-party imports.
"""

from __future__ import annotations

import re
import unicodedata

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ' "

# Punctuation that carries no sound. Each is replaced by a space (then spaces collapse), so "well-known" becomes
# "WELL KNOWN" and "end.Next" does not glue two words. The apostrophe is not here: it is part of the alphabet.
DEFAULT_CHARS_TO_IGNORE = ",?.!-;:\"“”‘«»„()[]{}…–—_/*~`|\ufffd"

# Typographic apostrophes and primes that all mean the plain one.
_APOSTROPHES = "’‘ʼ`´′"

# Words that synthesisers expand or spell, whatever their case ("etc" is read "et cetera", "Dr" "doctor").
ABBREVIATIONS = frozenset(
    "mr mrs ms messrs dr st mt jr sr vs etc ie eg cf viz prof sgt capt lt col gen rev hon inc ltd corp co dept "
    "approx ft lb lbs oz pp ca esq gov sen rep".split()
)

# Single letters that are words; any other lone letter ("plan B", "x marks") is read as a letter name.
SINGLE_LETTER_WORDS = frozenset("AIO")

# Characters a clean sentence may contain: ASCII letters, whitespace and punctuation that is not read aloud.
_ALLOWED_IN_CLEAN = re.compile(r"^[A-Za-z\s'’,.;:!?\"“”\-–—]*$")
_PERIOD_INSIDE_WORD = re.compile(r"[A-Za-z]\.[A-Za-z]")
# Capitals inside a name are fine for Mc/Mac/O' names; anything else with two capitals is treated as an acronym.
_NAME_WITH_INNER_CAPITAL = re.compile(r"^(Mc|Mac|O')[A-Z][a-z]+$")


def normalize_transcript(
    text: str, chars_to_ignore: str | None = DEFAULT_CHARS_TO_IGNORE, uppercase: bool = True
) -> str:
    """Map `text` to the model alphabet as far as it goes without guessing how it is read.

    Steps: accents are stripped ("café" -> "cafe"); typographic apostrophes become ``'``; every character of
    `chars_to_ignore` becomes a space; apostrophes that touch no letter (" ' " on its own) are dropped, while those
    of a word are kept wherever they sit ("don't", "dogs'", "'tis"), as standard LibriSpeech scoring keeps them;
    the text is upper-cased (if `uppercase`); runs of whitespace collapse to one space; the ends are stripped.
    This is the normalisation references are scored with: upper case, no punctuation besides apostrophes.
    A single quote used as a quotation mark ("'yes'") cannot be told apart from a word's apostrophe and is kept.

    Args:
        text: a transcript.
        chars_to_ignore: characters to remove (a plain string, not a regex); ``None`` means
            `DEFAULT_CHARS_TO_IGNORE`, ``""`` removes nothing.
        uppercase: upper-case the result (the model alphabet is upper case).

    Returns:
        The normalised transcript, e.g. ``"Hello, world! It’s well-known."`` -> ``"HELLO WORLD IT'S WELL KNOWN"``.
        Digits and symbols outside `chars_to_ignore` are kept; see `out_of_alphabet`.
    """
    if chars_to_ignore is None:
        chars_to_ignore = DEFAULT_CHARS_TO_IGNORE
    text = _strip_accents(text)
    text = text.translate({ord(mark): "'" for mark in _APOSTROPHES})
    if chars_to_ignore:
        text = text.translate({ord(character): " " for character in chars_to_ignore})
    # Drop only apostrophes with no letter on either side: "dogs'" and "'em" are words of the reference.
    text = re.sub(r"(?<![^\W\d_])'(?![^\W\d_])", " ", text)
    if uppercase:
        text = text.upper()
    return " ".join(text.split())


def out_of_alphabet(text: str, alphabet: str = ALPHABET) -> set[str]:
    """Characters of `text` that are not in `alphabet` (e.g. ``{"1", "&"}``); empty when `text` fits it."""
    return set(text) - set(alphabet)


def clean_sentence(text: str, min_words: int = 1, max_words: int | None = None) -> str | None:
    """The exact transcript of `text` read aloud, or ``None`` when a reader could say something else.

    Rejected (``None``): digits or characters other than ASCII letters, whitespace and silent punctuation
    (``, . ; : ! ? - " '``); a period inside a word ("e.g.", "U.S."); abbreviations in `ABBREVIATIONS` ("Mr",
    "etc"); words with two or more capitals, taken as acronyms ("NASA", "TV", "PhD"; "McDonald" is allowed); lone
    letters other than "A", "I", "O"; apostrophes that are not between two letters (quotes with ``'``, "dogs'");
    fewer than `min_words` or more than `max_words` words.

    Args:
        text: one written sentence, with its original case and punctuation.
        min_words: fewest words of the transcript.
        max_words: most words of the transcript; ``None`` for no limit.

    Returns:
        `normalize_transcript(text)` (only `ALPHABET` characters) or ``None``.
    """
    if not _ALLOWED_IN_CLEAN.match(text) or _PERIOD_INSIDE_WORD.search(text):
        return None
    plain = text.replace("’", "'")
    if re.search(r"(?<![A-Za-z])'|'(?![A-Za-z])", plain):
        return None
    for word in re.findall(r"[A-Za-z']+", plain):
        letters = word.replace("'", "")
        if letters.lower() in ABBREVIATIONS:
            return None
        if len(letters) == 1 and letters.upper() not in SINGLE_LETTER_WORDS:
            return None
        if sum(character.isupper() for character in letters) >= 2 and not _NAME_WITH_INNER_CAPITAL.match(word):
            return None
    transcript = normalize_transcript(text)
    num_words = len(transcript.split())
    if num_words < min_words or (max_words is not None and num_words > max_words) or num_words == 0:
        return None
    if out_of_alphabet(transcript):  # belt and braces: the checks above should make this impossible
        return None
    return transcript


def is_clean_sentence(text: str, min_words: int = 1, max_words: int | None = None) -> bool:
    """Whether `clean_sentence(text, min_words, max_words)` accepts `text`."""
    return clean_sentence(text, min_words, max_words) is not None


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(character for character in decomposed if not unicodedata.combining(character))
