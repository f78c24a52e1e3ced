"""The tokenizer on literal strings, both implementations."""

import pytest

from rnngen.text import TokenizerConfig, tokenize, tokenize_many

CASES = [
    ("Hello, World!", ["hello", "world"]),
    ("Great<br />movie<br /><br />really.", ["great", "movie", "really"]),
    ("Don't STOP believin'", ["don't", "stop", "believin'"]),  # apostrophes kept
    ('well-known (1999) #1: a.k.a. "x"', ["wellknown", "1999", "1", "aka", "x"]),
    ("tab\there\nnew\r\nline", ["tab", "here", "new", "line"]),
    ("Café ÜBER naïve — ok", ["café", "über", "naïve", "—", "ok"]),
    ("", []),
    ("   \t\n ", []),
    ("!!!...", []),
    ("[a]{b}|c~d^e_f`g\\h@i", ["abcdefghi"]),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_reference_tokenizer(text, expected):
    assert tokenize(text) == expected


def test_vectorized_matches_reference_on_literals():
    texts = [t for t, _ in CASES]
    assert tokenize_many(texts).to_pylist() == [e for _, e in CASES]


def test_punctuation_as_space_config():
    cfg = TokenizerConfig(punctuation_replacement=" ")
    assert tokenize("well-known a.k.a.", cfg) == ["well", "known", "a", "k", "a"]
    expected = [["well", "known", "a", "k", "a"]]
    assert tokenize_many(["well-known a.k.a."], cfg).to_pylist() == expected


def test_keep_case_config():
    cfg = TokenizerConfig(lowercase=False)
    assert tokenize_many(["The END"], cfg).to_pylist() == [["The", "END"]]
    assert tokenize("The END", cfg) == ["The", "END"]
