"""The .tiktoken files are parsed exactly as tiktoken parses them (engine/encodings.py
swaps base64.b64decode for binascii's decoder, the same bytes at half the cost)."""

from __future__ import annotations

import base64

import pytest

from engine import encodings


def _tiktoken_parse(contents: bytes) -> dict[bytes, int]:
    # tiktoken.load.load_tiktoken_bpe's own loop, on the same bytes.
    out = {}
    for line in contents.splitlines():
        if line:
            token, rank = line.split()
            out[base64.b64decode(token)] = int(rank)
    return out


@pytest.mark.parametrize(("name", "basename"), [("cl100k_base", "cl100k_base.tiktoken"),
                                                ("o200k_base", "o200k_base.tiktoken")])
def test_ranks_equal_tiktokens_parse(name: str, basename: str) -> None:
    path = encodings.shipped_path(basename)
    assert path is not None, f"{basename} ships with a dependency"
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = encodings._gunzip(raw)
    ranks = encodings.local_definition(name, None)["mergeable_ranks"]
    assert ranks == _tiktoken_parse(raw)
    assert len(ranks) > 100_000


def test_a_bad_line_gets_tiktokens_own_error() -> None:
    url = encodings._required_files("cl100k_base")[0].url
    good = base64.b64encode(b"ab") + b" 0\n"
    with pytest.raises(ValueError, match=r"Error parsing line b'not-a-line' in .*cl100k_base"):
        encodings._construct("cl100k_base", {url: good + b"not-a-line\n"})
