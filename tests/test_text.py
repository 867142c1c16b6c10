import pytest

from hf_prunable_ctc.data.text import (
    ALPHABET,
    DEFAULT_CHARS_TO_IGNORE,
    clean_sentence,
    is_clean_sentence,
    normalize_transcript,
    out_of_alphabet,
)


def test_alphabet_is_the_default_vocabulary():
    from hf_prunable_ctc.data.vocabulary import DEFAULT_VOCABULARY, build_vocabulary

    assert ALPHABET == "ABCDEFGHIJKLMNOPQRSTUVWXYZ' "
    assert build_vocabulary([ALPHABET]) == DEFAULT_VOCABULARY


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hello, world!", "HELLO WORLD"),
        ("  many   spaces\tand\nlines ", "MANY SPACES AND LINES"),
        ("It’s a well-known fact.", "IT'S A WELL KNOWN FACT"),
        ("don't", "DON'T"),
        ('He said: "go away"; then (quietly) left…', "HE SAID GO AWAY THEN QUIETLY LEFT"),
        ("café naïve Zoë", "CAFE NAIVE ZOE"),
        ("end.Next", "END NEXT"),
        ("", ""),
    ],
)
def test_normalize_transcript(text, expected):
    assert normalize_transcript(text) == expected
    assert not out_of_alphabet(expected)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("the dogs' bowls", "THE DOGS' BOWLS"),
        ("'tis the season, 'em all", "'TIS THE SEASON 'EM ALL"),
        ("THE FATHERS' HOUSE", "THE FATHERS' HOUSE"),
        ("a ' b '' c", "A B C"),
    ],
)
def test_normalize_transcript_keeps_word_apostrophes_as_librispeech_scoring_does(text, expected):
    """References keep every apostrophe of a word (LibriSpeech's "FATHERS'", "'TIS"); only an
    apostrophe touching no letter is punctuation."""
    assert normalize_transcript(text) == expected


def test_normalize_transcript_options():
    assert normalize_transcript("Hello, World", uppercase=False) == "Hello World"
    assert normalize_transcript("a,b", chars_to_ignore="") == "A,B"
    assert normalize_transcript("a,b", chars_to_ignore=None) == normalize_transcript("a,b", DEFAULT_CHARS_TO_IGNORE)
    assert normalize_transcript("a#b", chars_to_ignore="#") == "A B"


def test_normalize_transcript_keeps_what_it_cannot_map():
    # Digits and symbols are not guessed at: the caller sees them and decides.
    assert normalize_transcript("route 66 & more") == "ROUTE 66 & MORE"
    assert out_of_alphabet("ROUTE 66 & MORE") == {"6", "&"}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The quick brown fox jumps over the lazy dog.", "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG"),
        ("And God said, Let there be light:", "AND GOD SAID LET THERE BE LIGHT"),
        ("I think, therefore I am!", "I THINK THEREFORE I AM"),
        ("O ye of little faith", "O YE OF LITTLE FAITH"),
        ("A well-known fact", "A WELL KNOWN FACT"),
        ("We met McDonald and O'Brien", "WE MET MCDONALD AND O'BRIEN"),
        ("It’s not over yet", "IT'S NOT OVER YET"),
        ('She said "never" twice', "SHE SAID NEVER TWICE"),
    ],
)
def test_clean_sentence_accepts(text, expected):
    assert clean_sentence(text) == expected
    assert is_clean_sentence(text)


@pytest.mark.parametrize(
    "text",
    [
        "He was born in 1984.",  # digits
        "Tom & Jerry are here",  # symbols
        "A 50% chance of rain",
        "Send it to me at home @ noon",
        "It costs $ five",
        "Mr. Smith went to Washington",  # abbreviations
        "Ask Dr Jones about it",
        "Bring fruit, e.g. apples",
        "The U.S. army marched on",
        "Apples, pears etc are fruit",
        "NASA launched a rocket",  # acronyms
        "Watch TV all day",
        "She has a PhD in physics",
        "Go with plan B today",  # a lone letter is read as its name
        "'Tis the season to be jolly",  # ' at a word edge: quote or elision?
        "a café in the square",  # non-ASCII letter
        "the end (really)",  # brackets
    ],
)
def test_clean_sentence_rejects(text):
    assert clean_sentence(text) is None
    assert not is_clean_sentence(text)


def test_clean_sentence_word_limits():
    assert clean_sentence("one two three", min_words=3, max_words=3) == "ONE TWO THREE"
    assert clean_sentence("one two", min_words=3) is None
    assert clean_sentence("one two three four", max_words=3) is None
    assert clean_sentence("...") is None  # nothing left to say
