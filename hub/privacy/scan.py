"""Personal data in clear in raw bytes: identity codes, names, e-mail addresses, phone numbers.

The proof behind field-level encryption: after a run, every byte the hub keeps (topic records,
archive files, receipt stores) is searched for what a person's data looks like in clear. This
module is the pure part (bytes in, matches out); :mod:`hub.privacy.scan_cli` reads the topics and
the files and prints where something was found, never what.

What counts, on bytes (UTF-8 text inside Avro, JSON, SQLite pages all read the same):

* **identity code** (henkilötunnus): the rules of :func:`hub.identity.identity_code_spans` (a
  code-shaped token of its own with any century sign, the 2023 signs included, valid or not; a
  code glued to other characters when upper case and valid);
* **e-mail** and **phone** (Finnish numbers): :mod:`hub.identity.contact`, the definition the
  report's redaction and receivers' problem texts use too, on bytes; a phone inside an identity
  code or a UUID written as text is none;
* **name**: each name of a list (``hub privacy scan --names FILE``; none without it), as a word of
  its own (no letter before it, no lower-case letter after it), as written, in capitals and as
  JSON escapes it; a name shorter than 4 characters only when quoted or behind its Avro length.

**Sealed values are skipped.** A value in the sealed format (:mod:`hub.privacy.sealing`: ``A5 01``
after its Avro length) is AES-GCM ciphertext: it holds no plaintext by construction, but its
random bytes would, once in some megabytes, spell a short name or something e-mail shaped. Its
bytes are blanked before matching (everything else is searched, the sealed value's Avro length
included), when it names a data key the person-keys topic knows (``known_keys``): plaintext
behind a forged header is searched. A key whose record compaction removed (a person forgotten
long ago) is unknown, so their ciphertext is searched too: a random match there is possible,
if rare.

**Avro container files** (the archive): :func:`avro_blocks` gives each block's data
decompressed (null, deflate, zstandard, snappy, bzip2, xz), because a compressed block would hide
plaintext from a byte scan; a caller scans the raw file bytes too.
"""

from __future__ import annotations

import bz2
import json
import lzma
import re
import zlib
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, Set
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from hub.identity import contact
from hub.identity.contact import email_spans, phone_spans
from hub.identity.hetu import identity_code_spans
from hub.privacy.sealing import HEADER_SIZE, KEY_ID_SIZE, SEALED_PREFIX, TAG_SIZE


class Kind(StrEnum):
    IDENTITY_CODE = "identity-code"
    NAME = "name"
    EMAIL = contact.EMAIL
    PHONE = contact.PHONE


KINDS: Final = tuple(Kind)
MASK_CHAR: Final = "•"
SHORT_NAME: Final = 4
"""Names shorter than this are matched only quoted or behind their Avro length byte."""


@dataclass(frozen=True, slots=True)
class Match:
    kind: Kind
    start: int
    end: int
    mask: str
    """The value with every letter and digit as ``•`` (an identity code wholly): its shape."""


def mask(value: bytes, kind: Kind) -> str:
    """The shape of a found value without the value: letters and digits (and any non-ASCII
    byte) become ``•``; separators such as ``@ . - +`` and spaces stay. An identity code is
    masked whole (its century sign would tell the century of birth)."""
    if kind is Kind.IDENTITY_CODE:
        return MASK_CHAR * len(value)
    text = value.decode("utf-8", errors="replace")
    return "".join(MASK_CHAR if (c.isalnum() or not c.isascii()) else c for c in text)


# -- names ---------------------------------------------------------------------------------------


def _name_variants(name: str) -> set[bytes]:
    """A name as bytes may stand: UTF-8 as written and in capitals, and JSON's ASCII escape."""
    found = set()
    for text in (name, name.upper()):
        found.add(text.encode())
        found.add(json.dumps(text)[1:-1].encode())
    return found


def _avro_length_byte(length: int) -> bytes:
    return bytes([length << 1]) if length < 64 else b""


def names_pattern(names: Iterable[str]) -> re.Pattern[bytes] | None:
    """One pattern for every name of ``names`` (None when there is none); what it finds is a
    name when :func:`_name_bounded` agrees. (Boundaries are checked after matching: a pattern
    starting with a lookbehind is tried at every byte, ten times slower.)"""
    variants: set[bytes] = set()
    for raw in names:
        name = raw.strip()
        if not name or name.startswith("#"):
            continue
        for variant in _name_variants(name):
            if len(name) >= SHORT_NAME:
                variants.add(re.escape(variant))
            else:
                variants.add(re.escape(b'"' + variant + b'"'))
                prefix = _avro_length_byte(len(variant))
                if prefix:
                    variants.add(re.escape(prefix + variant))
    if not variants:
        return None
    return re.compile(_trie(sorted(variants)))


def _trie(words: list[bytes]) -> bytes:
    """An alternation of ``words`` (regex-escaped) as a trie: ``Ma(?:ria|tti)``, so the
    matcher tries one branch per byte instead of every word at every position."""
    tree: dict[int, Any] = {}
    for word in words:
        node = tree
        for b in _escaped_units(word):
            node = node.setdefault(b, {})
        node[-1] = {}
    return _trie_text(tree)


def _escaped_units(word: bytes) -> list[int]:
    units: list[int] = []
    escaped = False
    for b in word:
        if escaped:
            units.append(b | 0x100)  # an escaped byte: backslash + b
            escaped = False
        elif b == 0x5C:
            escaped = True
        else:
            units.append(b)
    return units


def _trie_text(node: dict[int, Any]) -> bytes:
    ends = -1 in node
    branches = [
        (b"\\" + bytes([u & 0xFF]) if u & 0x100 else bytes([u])) + _trie_text(child)
        for u, child in sorted((u, c) for u, c in node.items() if u != -1)
    ]
    if not branches:
        return b""
    body = branches[0] if len(branches) == 1 else b"(?:" + b"|".join(branches) + b")"
    return b"(?:" + body + b")?" if ends else body


_LETTER_BEFORE: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" + bytes(range(0x80, 0x100))
)
_LETTER_AFTER: Final = frozenset(b"abcdefghijklmnopqrstuvwxyz" + bytes(range(0x80, 0x100)))


def _name_bounded(data: bytes, start: int, end: int) -> tuple[int, int] | None:
    """The span of the name in a match of :func:`names_pattern`, or None when it is part of a
    word: a letter (or a UTF-8 letter's byte) before it, a lower-case letter after it."""
    first = data[start]
    if first == 0x22:  # a quoted short name
        return start + 1, end - 1
    if first < 0x41:  # a short name behind its Avro length byte
        start += 1
    elif start > 0 and data[start - 1] in _LETTER_BEFORE:
        return None
    if end < len(data) and data[end] in _LETTER_AFTER:
        return None
    return start, end


# -- sealed values -------------------------------------------------------------------------------

_SEALED_MIN: Final = HEADER_SIZE + TAG_SIZE


def _length_before(data: bytes | bytearray, at: int) -> int | None:
    """The Avro ``bytes`` length whose zig-zag varint ends just before ``at``, if one fits."""
    for width in (1, 2, 3):
        start = at - width
        if start < 0:
            return None
        raw = data[start:at]
        if raw[-1] & 0x80 or any(not b & 0x80 for b in raw[:-1]):
            continue
        value = 0
        for shift, b in enumerate(raw):
            value |= (b & 0x7F) << (7 * shift)
        length = (value >> 1) ^ -(value & 1)
        if length >= _SEALED_MIN and at + length <= len(data):
            return length
    return None


def blank_sealed(data: bytes, known_keys: Set[bytes] | None = None) -> tuple[bytes, int]:
    """``data`` with the bytes of every sealed value (``A5 01`` header, key id, nonce,
    ciphertext, tag, as long as its Avro length says) set to zero; how many were blanked.

    With ``known_keys`` (16-byte data key ids: what the person-keys topic names), a value is
    blanked only when sealed with one of them: plaintext behind a forged ``A5 01`` header and
    a made-up key id is searched like any other bytes."""
    at = data.find(SEALED_PREFIX)
    if at < 0:
        return data, 0
    out = bytearray(data)
    count = 0
    while at >= 0:
        length = _length_before(data, at)
        known = known_keys is None or bytes(data[at + 2 : at + 2 + KEY_ID_SIZE]) in known_keys
        if length is None or not known:
            at = data.find(SEALED_PREFIX, at + 1)
            continue
        out[at : at + length] = bytes(length)
        count += 1
        at = data.find(SEALED_PREFIX, at + length)
    return bytes(out), count


# -- the scanner ---------------------------------------------------------------------------------


def _byte_classes(classes: dict[str, str]) -> bytes:
    table = bytearray(b"x" * 256)
    for chars, cls in classes.items():
        for c in chars:
            table[ord(c)] = ord(cls)
    return bytes(table)


_CODE_SHAPES: Final = _byte_classes(
    {
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ": "a",
        "0123456789": "9",
        "-+ABCDEFUVWXY": "S",
        "abcdefuvwxy": "s",
    }
)
"""A byte's class for finding identity codes: digit, century sign (upper case or ``-+``), a
lower-case letter that is a sign in upper case, another letter, anything else (``x``)."""
_CODE_CANDIDATES: Final = (b"999999S999", b"x999999s999")
"""Where a code can start: a sign of either case after six digits, glued to others only with
an upper-case sign (:func:`hub.identity.identity_code_spans` decides)."""


def _code_candidates(data: bytes) -> list[int]:
    """Starts of stretches shaped like an identity code (a superset of what is one)."""
    shape = b"x" + data.translate(_CODE_SHAPES)
    starts = set()
    for needle in _CODE_CANDIDATES:
        skip = len(needle) - 10  # the boundary byte before a lower-case candidate
        at = shape.find(needle)
        while at >= 0:
            starts.add(at + skip - 1)
            at = shape.find(needle, at + 1)
    return sorted(starts)


_UUID: Final = re.compile(
    rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def _in_uuid(data: bytes, start: int, end: int) -> bool:
    """Whether ``data[start:end]`` overlaps a UUID written as text (a random one holds a valid
    identity code or a phone-shaped run now and then)."""
    for m in _UUID.finditer(data, max(0, start - 36), min(len(data), end + 36)):
        if m.start() < end and start < m.end():
            return True
    return False


class Scanner:
    """Finds personal data in clear in bytes; thread-safe (compiled patterns only)."""

    def __init__(
        self,
        names: Iterable[str] = (),
        *,
        skip_sealed: bool = True,
        known_keys: Set[bytes] | None = None,
    ) -> None:
        listed = [n.strip() for n in names if n.strip() and not n.strip().startswith("#")]
        self._names = names_pattern(listed)
        self.name_count = len(set(listed))
        self.skip_sealed = skip_sealed
        self.known_keys = known_keys
        """Data key ids whose sealed values are skipped (None: every well-formed one)."""

    def scan(self, data: bytes) -> list[Match]:
        """Every match in ``data``, by position; overlapping matches of two kinds both count."""
        return self.scan_counting(data)[0]

    def scan_counting(self, data: bytes) -> tuple[list[Match], int]:
        """:meth:`scan` and how many sealed values were skipped."""
        sealed = 0
        if self.skip_sealed:
            data, sealed = blank_sealed(data, self.known_keys)
        return self._matches(data), sealed

    def scan_blanked(self, data: bytes) -> list[Match]:
        """:meth:`scan` of bytes whose sealed values are blanked already (or to be searched)."""
        return self._matches(data)

    def _matches(self, data: bytes) -> list[Match]:
        if not data:
            return []
        found: list[Match] = []
        codes: dict[tuple[int, int], None] = {}
        for at in _code_candidates(data):
            lo = max(0, at - 1)
            for start, end in identity_code_spans(data[lo : at + 12].decode("latin-1")):
                start, end = lo + start, lo + end
                if not _in_uuid(data, start, end):
                    codes[(start, end)] = None
        for start, end in codes:
            code = data[start:end]
            found.append(Match(Kind.IDENTITY_CODE, start, end, mask(code, Kind.IDENTITY_CODE)))
        found += self._phones(data, list(codes))
        found += self._emails(data)
        if self._names is not None:
            for m in self._names.finditer(data):
                span = _name_bounded(data, *m.span())
                if span is not None:
                    found.append(Match(Kind.NAME, *span, mask(data[span[0] : span[1]], Kind.NAME)))
        found.sort(key=lambda m: (m.start, m.kind))
        return found

    @staticmethod
    def _emails(data: bytes) -> Iterator[Match]:
        for start, end in email_spans(data):
            yield Match(Kind.EMAIL, start, end, mask(data[start:end], Kind.EMAIL))

    @staticmethod
    def _phones(data: bytes, codes: list[tuple[int, int]]) -> Iterator[Match]:
        for start, end in phone_spans(data):
            if any(s < end and start < e for s, e in codes):
                continue  # the digits of an identity code
            if _in_uuid(data, start, end):
                continue
            yield Match(Kind.PHONE, start, end, mask(data[start:end], Kind.PHONE))


SEPARATOR: Final = b"\n"
"""Between segments scanned as one buffer: no pattern crosses it (none matches a newline)."""


def scan_segments(
    scanner: Scanner, segments: list[bytes]
) -> tuple[list[tuple[int, Match]], int, int]:
    """Scan many small values (Kafka keys, values, headers) as one buffer, which is many times
    faster than one by one: ``[(segment index, match at its offset in the segment)]``, the bytes
    scanned and the sealed values skipped. Sealed values are blanked per segment, so a damaged
    length can never blank the next one."""
    sealed = 0
    parts: list[bytes] = []
    starts: list[int] = []
    position = 0
    for segment in segments:
        if scanner.skip_sealed and SEALED_PREFIX in segment:
            segment, count = blank_sealed(segment, scanner.known_keys)
            sealed += count
        starts.append(position)
        parts.append(segment)
        position += len(segment) + len(SEPARATOR)
    found = []
    for m in scanner.scan_blanked(SEPARATOR.join(parts)):
        index = bisect_right(starts, m.start) - 1
        at = starts[index]
        found.append((index, Match(m.kind, m.start - at, m.end - at, m.mask)))
    return found, position - len(SEPARATOR) if segments else 0, sealed


# -- what was scanned where --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One match, as it may be printed: where and what kind, the value masked."""

    place: str
    where: str
    kind: Kind
    mask: str


@dataclass
class Tally:
    """What one place (a topic, the archive folder, a receipt store, a file) gave."""

    place: str
    what: str
    """``topic``, ``archive``, ``receipts``, ``file``."""
    unit: str = "records"
    units: int = 0
    blocks: int = 0
    """Avro blocks decompressed (archive files)."""
    scanned_bytes: int = 0
    sealed: int = 0
    hits: Counter[Kind] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    note: str | None = None
    max_findings: int = 1000
    record_keys: list[bytes] | None = None
    """Kafka record keys kept while scanning (the person-keys topic's: the key ids)."""

    @property
    def total(self) -> int:
        return sum(self.hits.values())

    def add(self, where: str, matches: Iterable[Match]) -> None:
        for m in matches:
            self.hits[m.kind] += 1
            if len(self.findings) < self.max_findings:
                self.findings.append(Finding(self.place, where, m.kind, m.mask))


CHUNK: Final = 16 * 1024 * 1024
"""Bytes scanned at once: a large file (or memory map) is scanned in chunks of this size."""
OVERLAP: Final = 1024
"""Bytes of a chunk scanned again with the next one, so a match across the cut is found (the
longest match, an e-mail address, has at most 64 + 1 + 253 + 1 + 24 characters)."""


def scan_into(scanner: Scanner, tally: Tally, where: str, data: Any) -> None:
    """Scan ``data`` (bytes, or a memory map of a file) and count it in ``tally``; ``where``
    names it (``@ byte N`` is added). Large data is scanned in overlapping chunks, each match
    counted once."""
    size = len(data)
    tally.scanned_bytes += size
    start = 0
    while True:
        end = min(size, start + CHUNK)
        last = end >= size
        matches, sealed = scanner.scan_counting(bytes(data[start:end]))
        tally.sealed += sealed
        for m in matches:
            if last or m.start < end - start - OVERLAP:  # the rest: the next chunk's
                tally.add(f"{where} @ byte {start + m.start}", [m])
        if last:
            return
        start = end - OVERLAP


# -- Avro object container files -----------------------------------------------------------------

AVRO_MAGIC: Final = b"Obj\x01"


class AvroFileError(ValueError):
    """Not an Avro object container file, or damaged; the text quotes no content."""


def _read_long(data: Any, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise AvroFileError("cut short inside a number")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7
        if shift > 63:
            raise AvroFileError("a number longer than 64 bits")


def _decompress(codec: str, block: bytes) -> bytes:
    if codec == "null":
        return block
    if codec == "deflate":
        return zlib.decompress(block, -15)
    if codec == "zstandard":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(block)
    if codec == "bzip2":
        return bz2.decompress(block)
    if codec == "xz":
        return lzma.decompress(block)
    if codec == "snappy":
        try:
            import snappy  # type: ignore[import-not-found]
        except ImportError:
            raise AvroFileError("snappy blocks need python-snappy") from None
        return bytes(snappy.decompress(block[:-4]))  # 4 bytes CRC-32 follow the data
    raise AvroFileError(f"unknown codec {codec[:40]!r}")


@dataclass(frozen=True, slots=True)
class AvroBlock:
    index: int
    offset: int
    """Where the block's data starts in the file."""
    records: int
    data: bytes
    """Decompressed."""


def avro_codec(data: Any) -> tuple[str, int, bytes]:
    """``(codec, end of header, sync marker)`` of an Avro container file's bytes."""
    if data[: len(AVRO_MAGIC)] != AVRO_MAGIC:
        raise AvroFileError("not an Avro object container file")
    pos = len(AVRO_MAGIC)
    meta: dict[str, bytes] = {}
    while True:
        count, pos = _read_long(data, pos)
        if count == 0:
            break
        if count < 0:
            _, pos = _read_long(data, pos)  # block size in bytes
            count = -count
        for _ in range(count):
            size, pos = _read_long(data, pos)
            key = data[pos : pos + size].decode("utf-8", errors="replace")
            pos += size
            size, pos = _read_long(data, pos)
            meta[key] = data[pos : pos + size]
            pos += size
    sync = data[pos : pos + 16]
    if len(sync) != 16:
        raise AvroFileError("cut short in the header")
    return meta.get("avro.codec", b"null").decode(errors="replace") or "null", pos + 16, sync


def avro_blocks(data: Any) -> Iterator[AvroBlock]:
    """The blocks of an Avro container file, decompressed; AvroFileError at a damaged one
    (the blocks before it have been yielded)."""
    codec, pos, sync = avro_codec(data)
    index = 0
    while pos < len(data):
        records, pos = _read_long(data, pos)
        size, pos = _read_long(data, pos)
        if size < 0 or pos + size + 16 > len(data):
            raise AvroFileError(f"block {index} is cut short")
        try:
            block = _decompress(codec, data[pos : pos + size])
        except AvroFileError:
            raise
        except Exception as error:
            raise AvroFileError(
                f"block {index} does not decompress ({type(error).__name__})"
            ) from None
        yield AvroBlock(index, pos, records, block)
        pos += size
        if data[pos : pos + 16] != sync:
            raise AvroFileError(f"block {index} is not followed by the file's sync marker")
        pos += 16
        index += 1
