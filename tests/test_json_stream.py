"""The streaming JSON reader behind the COCO parser agrees with json.loads, chunk boundaries
anywhere (tiny chunks put them inside numbers, strings, multi-byte characters and keys)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from litedet.components.example_gen import json_stream


def _read_all(data: bytes, chunk: int, monkeypatch) -> dict:
    monkeypatch.setattr(json_stream, "CHUNK_BYTES", chunk)
    result = {}
    for key, value in json_stream.top_level(io.BytesIO(data).read):
        result[key] = list(value) if isinstance(value, Iterator) else value
    return result


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
documents = st.dictionaries(st.text(max_size=6), values, max_size=5)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(document=documents, indent=st.sampled_from([None, 0, 2]), chunk=st.integers(1, 9))
def test_every_document_reads_as_json_loads_reads_it(document, indent, chunk):
    data = json.dumps(document, indent=indent, ensure_ascii=False).encode("utf-8")
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert _read_all(data, chunk, monkeypatch) == json.loads(data)


def test_arrays_come_element_by_element_and_unread_elements_are_skipped(monkeypatch):
    data = b'{"a": [1, {"x": [2, 3]}, 4], "b": {"k": [5]}, "c": [], "d": [6]}'
    monkeypatch.setattr(json_stream, "CHUNK_BYTES", 4)
    seen = []
    for key, value in json_stream.top_level(io.BytesIO(data).read):
        if key == "a":
            seen.append(next(value))  # one element, the rest left unread
        elif key == "d":
            seen.append(list(value))
        else:
            seen.append(value if not isinstance(value, Iterator) else list(value))
    assert seen == [1, {"k": [5]}, [], [6]]


def test_numbers_and_characters_cut_by_a_chunk_are_read_whole(monkeypatch):
    data = '{"n": [12345678901234567890, 1.5e-300], "s": "é€😀"}'.encode()
    for chunk in range(1, 12):
        assert _read_all(data, chunk, monkeypatch) == json.loads(data)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"[1, 2]", "expected one of '{' at byte 0, found '\\['"),
        (b'{"a": [1, 2', "expected one of ',\\]' at byte 11, found the end of the file"),
        (b'{"a": 1} x', "extra data after the object"),
        (b'{"a": 1, "a": 2}', "the key 'a' appears twice"),
        (b'{"a": [1, }', "Expecting value at byte 10"),
        (b"{1: 2}", "expected a key string"),
        (b'{"a": "\xff"}', "not UTF-8 text near byte 7"),
        (b"", "found the end of the file"),
        # Inside an array, at any depth: the offset is in bytes ("é" is two).
        ('{"é": [1, {"x": [2, }]}'.encode(), "Expecting value at byte 21"),
        (b'{"a": [1, ' + b"[" * 100_000 + b"]" * 100_000 + b"]}", "starting at byte 10 is nested"),
        (b'{"a": [{"n": ' + b"7" * 5000 + b"}]}", "starting at byte 7 cannot be read: Exceeds"),
        (
            b'{"a": [{"n": 1}, {"m": [1, 2',
            "the file ends at byte 28, inside the value starting at byte 17",
        ),
    ],
)
def test_broken_json_says_what_and_where(data, message, monkeypatch):
    with pytest.raises(json_stream.JSONStreamError, match=message):
        _read_all(data, 3, monkeypatch)
