"""Reads a JSON document whose top level is an object, one array element at a time.

A COCO annotation file is such a document: `{"images": [...], "annotations": [...],
"categories": [...]}`, up to half a gigabyte for COCO 2017, most of it polygon segmentations the
detector never uses. `json.load` would hold the whole text and every one of its objects at once
(several gigabytes); here the file is read in chunks and each top-level array's elements are
decoded one by one (by the standard library's own decoder) and handed on, so only what the
caller keeps stays in memory.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any, Callable, Iterator, Tuple

CHUNK_BYTES = 1 << 20
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class JSONStreamError(ValueError):
    """Not a JSON object, or broken JSON, at any depth (a truncated file, nesting too deep for
    the decoder, a number Python will not convert); the message says where: the byte offset in
    the file."""


class _Text:
    """The file's text, decoded as it is read; `pos` is the next character to look at."""

    def __init__(self, read: Callable[[int], bytes]):
        self._read = read
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        # `offset`: the byte offset in the file of `text[0]` (text before it was consumed).
        self.text, self.pos, self.offset, self.eof = "", 0, 0, False

    def byte(self, pos: int) -> int:
        """The byte offset in the file of the character at `pos` in `text` (decoded UTF-8
        encodes back to the same bytes)."""
        return self.offset + len(self.text[:pos].encode("utf-8", "surrogatepass"))

    def more(self, min_bytes: int = CHUNK_BYTES) -> bool:
        """Reads at least `min_bytes` more (or to the end); False at the end of the file."""
        if self.eof:
            return False
        if self.pos > CHUNK_BYTES:  # drop what was consumed: memory stays about one chunk
            self.text, self.offset, self.pos = self.text[self.pos :], self.byte(self.pos), 0
        chunk = self._read(max(min_bytes, CHUNK_BYTES))
        try:
            self.text += self._utf8.decode(chunk, final=not chunk)
        except UnicodeDecodeError as e:
            raise JSONStreamError(
                f"not UTF-8 text near byte {self.byte(len(self.text)) + e.start}"
            ) from e
        self.eof = not chunk
        return True

    def peek(self) -> str:
        """The next non-whitespace character ("" at the end), not consumed."""
        while True:
            self.pos = _WHITESPACE.match(self.text, self.pos).end()
            if self.pos < len(self.text) or not self.more():
                return self.text[self.pos : self.pos + 1]

    def expect(self, allowed: str) -> str:
        char = self.peek()
        if not char or char not in allowed:
            found = repr(char) if char else "the end of the file"
            raise JSONStreamError(
                f"expected one of {allowed!r} at byte {self.byte(self.pos)}, found {found}"
            )
        self.pos += 1
        return char

    def value(self) -> Any:
        """Decodes the next JSON value, reading on while it is incomplete."""
        self.peek()
        wanted = CHUNK_BYTES
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as e:
                if self.more(wanted):  # maybe cut off by the chunk's end
                    wanted *= 2  # a huge value is re-tried a few times, not once per chunk
                    continue
                if not self.text[e.pos :].strip():  # nothing left to read: cut off
                    raise JSONStreamError(
                        f"the file ends at byte {self.byte(e.pos)}, inside the value starting "
                        f"at byte {self.byte(self.pos)} (truncated?)"
                    ) from e
                raise JSONStreamError(f"{e.msg} at byte {self.byte(e.pos)}") from e
            except RecursionError as e:  # the C decoder's own depth limit: refused, not a crash
                raise JSONStreamError(
                    f"the value starting at byte {self.byte(self.pos)} is nested too deeply"
                ) from e
            except ValueError as e:  # an integer of more digits than Python converts (4300)
                raise JSONStreamError(
                    f"the value starting at byte {self.byte(self.pos)} cannot be read: {e}"
                ) from e
            # A number at the end of the text may go on in the next chunk ("12" of "125").
            if end == len(self.text) and self.more(wanted):
                continue
            self.pos = end
            return value


def _array_items(text: _Text) -> Iterator[Any]:
    if text.peek() == "]":
        text.pos += 1
        return
    while True:
        yield text.value()
        if text.expect(",]") == "]":
            return


def top_level(read: Callable[[int], bytes]) -> Iterator[Tuple[str, Any]]:
    """(key, value) for each member of the top-level object, in file order. An array's value is
    an iterator over its elements, to be consumed before the next member is read (whatever is
    left of it is skipped); any other value is decoded whole. A key that appears twice is an
    error (json.load would silently keep the last)."""
    text = _Text(read)
    text.expect("{")
    if text.peek() == "}":
        text.pos += 1
    else:
        seen = set()
        while True:
            key = text.value()
            if not isinstance(key, str):
                raise JSONStreamError(f"expected a key string at byte {text.byte(text.pos)}")
            if key in seen:
                raise JSONStreamError(f"the key {key!r} appears twice")
            seen.add(key)
            text.expect(":")
            if text.peek() == "[":
                text.pos += 1
                items = _array_items(text)
                yield key, items
                for _ in items:  # whatever the caller did not read
                    pass
            else:
                yield key, text.value()
            if text.expect(",}") == "}":
                break
    if text.peek():
        raise JSONStreamError(f"extra data after the object at byte {text.byte(text.pos)}")
