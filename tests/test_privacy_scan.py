"""The scanner of personal data in clear (hub.privacy.scan): what it finds in bytes, what it
must not mistake for personal data (UUIDs, digests, base64, dates, business IDs, ciphertext),
sealed values skipped, Avro container blocks decompressed, and the command on files only."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from fastavro import parse_schema, writer

from connectors.simulator.names import FIRST_NAMES, LAST_NAMES
from hub.identity import make_test_identity_code
from hub.identity.hetu import check_character
from hub.privacy.scan import (
    AvroFileError,
    Kind,
    Scanner,
    avro_blocks,
    blank_sealed,
    names_pattern,
    scan_segments,
)
from hub.privacy.sealing import new_data_key, seal_value
from tests.conftest import REPO_ROOT
from tests.test_privacy_scan_contact import EMAILS, FINNISH_PHONES

NAMES = [*FIRST_NAMES, *LAST_NAMES]
SCANNER = Scanner(NAMES)


def kinds(data: bytes, scanner: Scanner = SCANNER) -> list[Kind]:
    return [m.kind for m in scanner.scan(data)]


def avro_string(text: str) -> bytes:
    raw = text.encode()
    assert len(raw) < 64
    return bytes([len(raw) << 1]) + raw


# -- identity codes ------------------------------------------------------------------------


@pytest.mark.parametrize("modern", [False, True])
@pytest.mark.parametrize("year", [1899, 1975, 2004])
def test_identity_codes_of_every_century_sign_are_found(year: int, modern: bool) -> None:
    code = make_test_identity_code(date(year, 3, 14), 917, modern_sign=modern)
    for framing in (avro_string(code), json.dumps({"hetu": code}).encode(), code.encode()):
        found = SCANNER.scan(b"\x00\x02" + framing + b"\x10")
        assert [m.kind for m in found] == [Kind.IDENTITY_CODE], framing
        assert found[0].mask == "•" * 11


@pytest.mark.parametrize("sign", "-YXWVUABCDEF")
def test_each_2023_century_sign(sign: str) -> None:
    digits = "010594" + "921"
    code = f"{digits[:6]}{sign}{digits[6:]}{check_character(digits)}"
    assert kinds(avro_string(code)) == [Kind.IDENTITY_CODE]


def test_an_identity_code_glued_into_other_text_is_found_when_valid_and_upper_case() -> None:
    code = make_test_identity_code(date(1994, 5, 1), 903, modern_sign=True)
    assert kinds(b"abc" + code.encode() + b"def") == [Kind.IDENTITY_CODE]
    # SQLite puts one column's text right after another's.
    assert kinds(b"x" * 20 + code.encode() + str(uuid.uuid4()).encode()) == [Kind.IDENTITY_CODE]


def test_code_shaped_text_that_is_no_code() -> None:
    glued_invalid = b"abc010594Y9033def"  # check character wrong, glued: not a code
    assert kinds(glued_invalid) == []
    assert kinds(b"2026-01-05T10:00:00.000+00:00 1767225600000 0101 091") == []


def test_uuids_never_give_an_identity_code_or_phone() -> None:
    # A UUID whose first two groups read as a valid code: 6 digits, "-", 3 digits, check.
    digits = next(
        d for n in range(902, 999) if check_character(d := f"010594{n}") in "0123456789ABCDEF"
    )
    check = check_character(digits)
    text = f"ab{digits[:6]}-{digits[6:]}{check.lower()}-4abc-8def-0123456789ab"
    shaped = str(uuid.UUID(text)).encode()
    assert kinds(shaped) == []
    assert kinds(shaped.upper()) == []
    many = b" ".join(str(uuid.uuid4()).encode() for _ in range(20_000))
    assert kinds(many) == []


# -- e-mail, phone ------------------------------------------------------------------------------


@pytest.mark.parametrize("email", EMAILS)
def test_emails(email: str) -> None:
    found = SCANNER.scan(b"\x12" + avro_string(email) + b"\x00")
    assert [m.kind for m in found] == [Kind.EMAIL]
    assert "@" in found[0].mask
    assert not any(c.isalnum() for c in found[0].mask)


def test_what_is_no_email() -> None:
    assert kinds(b"user@localhost no-at-sign.fi @example.fi a@b.c") == []


@pytest.mark.parametrize("phone", FINNISH_PHONES)
def test_finnish_phone_numbers(phone: str) -> None:
    assert kinds(avro_string(phone)) == [Kind.PHONE], phone
    assert kinds(json.dumps({"phone": phone}).encode()) == [Kind.PHONE], phone


@pytest.mark.parametrize(
    "text",
    [
        "0201256-6",  # a business ID
        "2026-01-05",
        "05-01-2026",
        "1767225600000",
        "offset 0123",
        "abc0401234567",  # glued to a word
        "12.0401234567",
    ],
)
def test_what_is_no_phone(text: str) -> None:
    assert Kind.PHONE not in kinds(avro_string(text))


# -- names -----------------------------------------------------------------------------------


def test_names_as_words_in_avro_json_and_json_escapes() -> None:
    assert kinds(avro_string("Matti") + avro_string("Virtanen")) == [Kind.NAME, Kind.NAME]
    assert kinds(json.dumps({"last_name": "Mäkinen"}).encode()) == [Kind.NAME]
    assert kinds(json.dumps({"last_name": "Mäkinen"}, ensure_ascii=False).encode()) == [Kind.NAME]
    assert kinds(b"KORHONEN") == [Kind.NAME]


def test_names_inside_other_words_are_not_names() -> None:
    assert kinds(b"Annankatu Salonenkatu Mattila") == [Kind.NAME]  # Mattila is a surname
    assert kinds(b"Salon Timoteus") == []
    assert kinds(b"xAnna") == []


def test_short_names_only_quoted_or_behind_their_avro_length() -> None:
    assert kinds(avro_string("Li")) == [Kind.NAME]
    assert kinds(b'{"first_name": "Li"}') == [Kind.NAME]
    assert kinds(b"Lisa List Li ") == []


def test_a_names_file_replaces_the_default() -> None:
    scanner = Scanner(["# comment", "Ronja", " ", "Öhman"])
    assert scanner.name_count == 2
    assert kinds(avro_string("Ronja") + avro_string("Öhman"), scanner) == [Kind.NAME, Kind.NAME]
    assert kinds(avro_string("Matti"), scanner) == []
    assert names_pattern([]) is None
    assert kinds(avro_string("Matti"), Scanner([])) == []


# -- nothing in random or encoded data ------------------------------------------------------------


def test_nothing_in_hex_base64_and_digests() -> None:
    rng = __import__("random").Random(9)
    raw = bytes(rng.getrandbits(8) for _ in range(300_000))
    assert kinds(raw.hex().encode()) == []
    assert kinds(base64.b64encode(raw)) == []


def test_masks_never_hold_a_letter_or_digit() -> None:
    code = make_test_identity_code(date(1980, 1, 2), 950)
    text = f"{code} Matti matti.virtanen1@example.fi +358 40 7654321".encode()
    found = SCANNER.scan(b" " + text)
    assert sorted(m.kind for m in found) == sorted(
        [Kind.IDENTITY_CODE, Kind.NAME, Kind.EMAIL, Kind.PHONE]
    )
    for m in found:
        assert not any(c.isalnum() for c in m.mask), m.kind


# -- sealed values ---------------------------------------------------------------------------


def sealed(plaintext: bytes) -> bytes:
    key = new_data_key("subject", uuid.uuid4(), datetime.now(UTC))
    return seal_value(key, uuid.uuid4(), "payload.first_name", plaintext)


def test_sealed_values_are_blanked_whole_and_nothing_else() -> None:
    value = sealed(b"Matti")
    assert len(value) < 64
    long_value = sealed(b"matti.virtanen123@example.fi" * 3)  # a 2-byte Avro length
    data = b"Anna" + avro_string("x") + bytes([len(value) << 1]) + value
    data += bytes([(len(long_value) << 1) & 0x7F | 0x80, len(long_value) >> 6]) + long_value
    data += b"\x00Korhonen"
    blanked, count = blank_sealed(data)
    assert count == 2
    assert blanked.startswith(b"Anna")
    assert blanked.endswith(b"\x00Korhonen")
    assert value not in blanked
    assert long_value not in blanked
    assert len(blanked) == len(data)


def test_a_prefix_without_a_fitting_length_is_not_blanked() -> None:
    data = b"\x00\xa5\x01Matti" + b"\x00" * 10
    assert blank_sealed(data) == (data, 0)
    assert kinds(data) == [Kind.NAME]


def test_ciphertext_is_searched_with_include_sealed_only() -> None:
    values = b"".join(bytes([len(v) << 1]) + v for v in (sealed(os.urandom(10)) for _ in range(9)))
    scanner = Scanner(NAMES, skip_sealed=False)
    _, count = Scanner(NAMES).scan_counting(values)
    assert count == 9
    assert scanner.scan_counting(values)[1] == 0


def test_segments_are_scanned_as_one_and_mapped_back() -> None:
    code = make_test_identity_code(date(1990, 2, 3), 977).encode()
    segments = [b"key-1", avro_string("nothing"), b"", b"\x16" + code, b"x" * 5 + b" Matti"]
    found, scanned, _ = scan_segments(SCANNER, segments)
    assert [(i, m.kind, m.start) for i, m in found] == [
        (3, Kind.IDENTITY_CODE, 1),
        (4, Kind.NAME, 6),
    ]
    assert scanned == sum(map(len, segments)) + len(segments) - 1
    # A pattern never reaches across two segments.
    assert scan_segments(SCANNER, [b"matti@exam", b"ple.fi"])[0] == []


# -- Avro container files --------------------------------------------------------------------

SCHEMA = parse_schema(
    {
        "type": "record",
        "name": "T",
        "fields": [{"name": "s", "type": "string"}, {"name": "b", "type": "bytes"}],
    }
)


def container(codec: str, records: list[dict[str, object]]) -> bytes:
    out = io.BytesIO()
    writer(out, SCHEMA, records, codec=codec, sync_interval=200)
    return out.getvalue()


@pytest.mark.parametrize("codec", ["null", "deflate", "zstandard", "bzip2", "xz"])
def test_avro_blocks_are_decompressed(codec: str) -> None:
    records = [{"s": f"Korhonen {i} " * 20, "b": sealed(b"Matti")} for i in range(40)]
    data = container(codec, records)
    blocks = list(avro_blocks(data))
    assert len(blocks) > 1
    assert sum(b.records for b in blocks) == 40
    found = [m for b in blocks for m in SCANNER.scan(b.data)]
    assert len(found) == 40 * 20
    assert {m.kind for m in found} == {Kind.NAME}
    if codec != "null":
        assert b"Korhonen 1 Korhonen" not in data  # compressed: a raw scan would not see them


def test_a_damaged_avro_file_is_an_error_after_its_good_blocks() -> None:
    data = container("deflate", [{"s": "x" * 100, "b": b""} for _ in range(30)])
    blocks = list(avro_blocks(data))
    cut = data[: blocks[2].offset + 5]
    with pytest.raises(AvroFileError):
        list(avro_blocks(cut))
    assert len(list(_good_blocks(cut))) == 2
    with pytest.raises(AvroFileError):
        list(avro_blocks(b"Obj\x01\x02"))
    with pytest.raises(AvroFileError):
        list(avro_blocks(b"not avro"))


def _good_blocks(data: bytes) -> list[object]:
    good = []
    try:
        for block in avro_blocks(data):
            good.append(block)
    except AvroFileError:
        pass
    return good


# -- the command on files (no broker) --------------------------------------------------------


def run_scan(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        HUB_ARCHIVE_DIR=str(tmp_path / "archive"),
        HUB_STATE_DIR=str(tmp_path / "state"),
        HUB_LOG_LEVEL="WARNING",
    )
    return subprocess.run(
        [sys.executable, "-m", "hub", "privacy", "scan", "--no-kafka", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def names_file(tmp_path: Path, names: list[str] = NAMES) -> Path:
    path = tmp_path / "names.txt"
    path.write_text("# the simulator's names\n" + "\n".join(names) + "\n", encoding="utf-8")
    return path


def test_the_command_exits_1_naming_where_and_never_the_value(tmp_path: Path) -> None:
    archive = tmp_path / "archive" / "te.customer-path.v1" / "date=2026-01-05"
    archive.mkdir(parents=True)
    code = make_test_identity_code(date(1971, 8, 9), 931, modern_sign=True)
    email = "laura.salo77@example.fi"
    (archive / "part-0-0.avro").write_bytes(
        container("zstandard", [{"s": f"{code} {email}", "b": sealed(b"Laura")}] * 3)
    )
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "notes.txt").write_text("nothing personal here 2026-01-05\n")
    names = names_file(tmp_path)
    done = run_scan(tmp_path, "--json", f"--names={names}", f"--path={clean}")
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["names"] == len(set(NAMES))
    assert result["names_searched"] is True
    archive_place = next(p for p in result["places"] if p["what"] == "archive")
    assert archive_place["scanned"] == 1
    assert archive_place["blocks"] == 1
    assert archive_place["hits"] == {"identity-code": 3, "name": 0, "e-mail": 3, "phone": 0}
    assert archive_place["sealed_skipped"] == 3
    wheres = {f["where"].split(" @ ")[0] for f in archive_place["findings"]}
    assert wheres == {"te.customer-path.v1/date=2026-01-05/part-0-0.avro block 0"}
    path_place = next(p for p in result["places"] if p["what"] == "path")
    assert path_place["scanned"] == 1
    assert sum(path_place["hits"].values()) == 0
    for output in (done.stdout, done.stderr):
        assert code not in output
        assert email not in output
        assert "Laura" not in output
    table = run_scan(tmp_path, f"--names={names}")
    assert table.returncode == 1
    assert "part-0-0.avro block 0" in table.stdout
    assert "not searched" not in table.stdout
    assert code not in table.stdout + table.stderr
    assert email not in table.stdout


def test_the_command_exits_0_on_clean_files_and_2_on_a_missing_path(tmp_path: Path) -> None:
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "x.avro").write_bytes(container("deflate", [{"s": "Ok", "b": b""}]))
    names = names_file(tmp_path, ["Anna"])
    done = run_scan(tmp_path, f"--names={names}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No identity code, name, e-mail or phone in clear" in done.stdout
    missing = run_scan(tmp_path, f"--path={tmp_path / 'nope'}")
    assert missing.returncode == 2
    names = names_file(tmp_path, ["Ok"])  # a short name, as the record's Avro string holds it
    assert run_scan(tmp_path, f"--names={names}").returncode == 1


def test_without_a_names_file_the_command_says_that_names_were_not_searched(
    tmp_path: Path,
) -> None:
    """The hub has no list of names of its own (the simulator's is a connector's data): with no
    --names, a name in clear is not found, and the output says names were not searched."""
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "x.avro").write_bytes(container("deflate", [{"s": "Anna", "b": b""}]))
    table = run_scan(tmp_path)
    assert table.returncode == 0, table.stdout + table.stderr
    assert "names were not searched (no --names FILE given)" in table.stdout
    assert "No identity code, e-mail or phone in clear" in table.stdout
    assert "name, e-mail" not in table.stdout
    assert "not searched" in table.stdout.split("note:")[0]  # the table's names column
    result = json.loads(run_scan(tmp_path, "--json").stdout)
    assert result["names"] == 0
    assert result["names_searched"] is False
    with_names = run_scan(tmp_path, "--json", f"--names={names_file(tmp_path, ['Anna'])}")
    assert with_names.returncode == 1
    assert json.loads(with_names.stdout)["names_searched"] is True


def test_a_names_file_that_lists_no_name_or_is_no_utf8_is_refused(tmp_path: Path) -> None:
    (tmp_path / "archive").mkdir()
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n   \n", encoding="utf-8")
    done = run_scan(tmp_path, f"--names={empty}")
    assert done.returncode == 2
    assert "lists no name" in done.stderr
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Öhman\n".encode("latin-1"))
    done = run_scan(tmp_path, f"--names={latin}")
    assert done.returncode == 2
    assert "cannot be read as UTF-8" in done.stderr
    assert "hman" not in done.stderr  # no part of the name


def test_the_scan_command_imports_no_connector() -> None:
    """The core never imports a connector: the scan's names come from --names only."""
    code = (
        "import sys, hub.privacy.scan_cli, hub.privacy.scan\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'connectors'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_large_data_is_scanned_in_chunks_each_match_counted_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hub.privacy import scan

    monkeypatch.setattr(scan, "CHUNK", 4096)
    code = make_test_identity_code(date(1960, 6, 7), 966).encode()
    places = [100, 4096 - 5, 4096 - 600, 3 * 4096 - 3000, 5 * 4096 + 17]  # cut, in overlaps
    data = bytearray(b"." * (6 * 4096))
    for at in places:
        data[at - 1 : at + 12] = b" " + code + b" "
    tally = scan.Tally("p", "file")
    scan.scan_into(SCANNER, tally, "f", bytes(data))
    assert tally.hits == {Kind.IDENTITY_CODE: len(places)}
    assert [f.where for f in tally.findings] == [f"f @ byte {at}" for at in sorted(places)]
    assert tally.scanned_bytes == len(data)


def test_plaintext_behind_a_forged_sealed_header_is_found_when_the_key_ids_are_known() -> None:
    key = new_data_key("subject", uuid.uuid4(), datetime.now(UTC))
    real = seal_value(key, uuid.uuid4(), "payload.last_name", b"Virtanen")
    forged_plain = b"\xa5\x01" + uuid.uuid4().bytes + b"\x00" * 12 + b" Matti Korhonen " + bytes(16)
    data = b"".join(bytes([len(v) << 1]) + v for v in (real, forged_plain))
    trusting = Scanner(NAMES)
    assert trusting.scan_counting(data) == ([], 2)  # any well-formed header is skipped
    checking = Scanner(NAMES, known_keys={key.key_id.bytes})
    found, skipped = checking.scan_counting(data)
    assert skipped == 1
    assert [m.kind for m in found] == [Kind.NAME, Kind.NAME]
    assert Scanner(NAMES, known_keys=set()).scan_counting(bytes([len(real) << 1]) + real)[1] == 0
