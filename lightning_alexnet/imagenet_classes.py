"""Human-readable names of the 1000 ILSVRC-2012 classes, keyed by WordNet id.

``imagenet_synsets.txt`` holds the challenge's ``synset_words`` table, one class a line:
``n01440764 tench, Tinca tinca`` (WordNet id, then the synset's words, comma-separated). Two
pairs of classes share their first word (``crane``: the bird n02012849 and the machine
n03126707; ``maillot`` n03710637 and n03710721), so labels keep the id beside the name.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

SYNSETS_FILE = Path(__file__).with_name("imagenet_synsets.txt")


@cache
def synset_words() -> dict[str, str]:
    """WordNet id -> the synset's words (``"tench, Tinca tinca"``), for the 1000 classes."""
    table = {}
    for line in SYNSETS_FILE.read_text(encoding="utf-8").splitlines():
        wnid, _, words = line.partition(" ")
        table[wnid] = words
    return table


def readable(name: str) -> str:
    """``n01440764`` -> ``tench (n01440764)``; any other class name is returned as it is."""
    words = synset_words().get(name)
    return f"{words.split(',')[0]} ({name})" if words else name
