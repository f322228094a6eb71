"""Content-defined chunking (backup/chunker.py): what a stream is cut into, and the dedup it buys."""

from __future__ import annotations

import array
import random
from collections.abc import Iterator

import pytest
from pyfastcdc import FastCDC

from migrate_guard.backup import repository as repository_module
from migrate_guard.backup.chunker import cdc_params, cut
from migrate_guard.backup.crypto import decode_key, generate_key
from migrate_guard.backup.repository import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, KeySource, Repository

KIB, MIB = 1 << 10, 1 << 20


def noise(size: int, seed: int = 0) -> bytes:
    """Incompressible bytes (what zstd cannot shrink, so stored bytes measure new content)."""
    return random.Random(seed).randbytes(size)


def whole_buffer_cuts(data: bytes, chunk_size: int) -> list[bytes]:
    """FastCDC over the whole stream at once, with the parameters docs/repository-format.md gives."""
    low, avg, high = cdc_params(chunk_size)
    cdc = FastCDC(avg, min_size=low, max_size=high, normalized_chunking=1, seed=0)
    return [bytes(chunk.data) for chunk in cdc.cut_buf(data)]


def split(data: bytes, sizes: Iterator[int]) -> Iterator[bytes | bytearray | memoryview]:
    """``data`` delivered in pieces of the given sizes, as bytes, bytearray and memoryview in turn."""
    pos = 0
    kinds = [bytes, bytearray, memoryview]
    while pos < len(data):
        n = next(sizes)
        piece = data[pos : pos + n]
        yield kinds[pos % 3](piece)
        pos += n


# --- parameters ------------------------------------------------------------------------------------------


def test_params_follow_the_doc():
    assert cdc_params(MIN_CHUNK_SIZE) == (64, 256, 1024)
    assert cdc_params(64 * KIB) == (4 * KIB, 16 * KIB, 64 * KIB)
    assert cdc_params(DEFAULT_CHUNK_SIZE) == (256 * KIB, MIB, 4 * MIB)
    assert cdc_params(16 * MIB) == (MIB, 4 * MIB, 16 * MIB)
    assert cdc_params(MAX_CHUNK_SIZE) == (MIB, 4 * MIB, 16 * MIB)  # pyfastcdc's largest max is 16 MiB
    assert cdc_params(5000) == (256, 1024, 5000)  # not a power of two: max is the chunk size itself


@pytest.mark.parametrize(
    "chunk_size",
    sorted({1 << n for n in range(10, 29)} | {1025, 1500, 3 * MIB + 7, 100 * MIB + 1, 17 * MIB}),
)
def test_params_are_accepted_by_fastcdc_and_bounded_by_the_chunk_size(chunk_size):
    low, avg, high = cdc_params(chunk_size)
    assert high <= chunk_size and low <= avg <= high
    assert avg & (avg - 1) == 0  # a power of two: FastCDC's masks are exact
    cdc = FastCDC(avg, min_size=low, max_size=high, normalized_chunking=1)  # raises outside its limits
    assert (cdc.min_size, cdc.avg_size, cdc.max_size) == (low, avg, high)


# --- cutting ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [MIN_CHUNK_SIZE, 64 * KIB, DEFAULT_CHUNK_SIZE])
def test_round_trip_and_sizes(chunk_size):
    low, _, high = cdc_params(chunk_size)
    sizes = [0, 1, low - 1, low, low + 1, high - 1, high, high + 1, 2 * high + 3, 9 * high + 12345]
    if chunk_size < DEFAULT_CHUNK_SIZE:
        sizes.append(6 * MIB + 7)  # many MiB, many chunks
    for size in sizes:
        data = noise(size, size)
        pieces = list(cut([data], chunk_size))
        assert b"".join(pieces) == data, size
        assert all(type(p) is bytes and 0 < len(p) <= chunk_size for p in pieces), size
        if size <= low:
            assert len(pieces) == (1 if size else 0)  # nothing shorter than min is cut
        else:
            assert all(len(p) >= low for p in pieces[:-1])  # only the last may be shorter than min
        assert pieces == whole_buffer_cuts(data, chunk_size), size


def test_empty_stream_and_empty_pieces_have_no_chunk():
    assert list(cut([], DEFAULT_CHUNK_SIZE)) == []
    assert list(cut([b"", bytearray(), memoryview(b"")], DEFAULT_CHUNK_SIZE)) == []


@pytest.mark.parametrize("chunk_size", [MIN_CHUNK_SIZE, 64 * KIB])
def test_cuts_do_not_depend_on_the_piece_sizes(chunk_size):
    data = noise(300 * KIB, 7) + b"id,name\n" + b"1,alice\n" * 20000 + noise(200 * KIB, 8)  # random and repeating
    expected = whole_buffer_cuts(data, chunk_size)
    assert len(expected) > 10
    assert list(cut([data], chunk_size)) == expected
    assert list(cut((data[i : i + 1] for i in range(len(data))), chunk_size)) == expected  # 1-byte pieces
    rng = random.Random(chunk_size)
    assert list(cut(split(data, iter(lambda: rng.randint(1, 3 * chunk_size), None)), chunk_size)) == expected
    assert list(cut(split(data, iter(lambda: 4093, None)), chunk_size)) == expected


def test_cuts_do_not_depend_on_the_piece_sizes_at_the_default_chunk_size():
    data = noise(40 * MIB + 5, 3)  # many times the chunker's buffer (6 MiB here), and one huge piece
    expected = whole_buffer_cuts(data, DEFAULT_CHUNK_SIZE)
    assert list(cut([data], DEFAULT_CHUNK_SIZE)) == expected
    assert list(cut(split(data, iter(lambda: 1000 * KIB + 1, None)), DEFAULT_CHUNK_SIZE)) == expected
    view = memoryview(data)
    assert list(cut([view[:5], view[5 : 33 * MIB], view[33 * MIB :]], DEFAULT_CHUNK_SIZE)) == expected


def test_any_byte_buffer_is_a_piece_and_anything_else_is_refused():
    numbers = array.array("I", range(100_000))  # a memoryview of 4-byte items is cut as its bytes
    assert b"".join(cut([memoryview(numbers)], 64 * KIB)) == numbers.tobytes()
    with pytest.raises(TypeError, match="a stream yields bytes, not str"):
        list(cut([b"ok", "text"], 64 * KIB))
    with pytest.raises(TypeError, match="not int"):
        list(cut([1], 64 * KIB))


def test_a_piece_is_let_go_before_the_next_is_asked_for():
    """A dump may reuse its buffer: once it has handed a piece over, it can resize it."""

    def reused() -> Iterator[bytearray]:
        buf = bytearray()
        for i in range(40):
            buf.clear()  # resizing raises BufferError while the chunker holds a view of buf
            buf += noise(50 * KIB, i)
            yield buf

    expected = b"".join(noise(50 * KIB, i) for i in range(40))
    assert b"".join(cut(reused(), 64 * KIB)) == expected


def test_an_insertion_changes_only_the_chunks_around_it():
    data = noise(4 * MIB, 1)
    changed = data[: 2 * MIB] + noise(1000, 2) + data[2 * MIB :]
    before, after = set(cut([data], 64 * KIB)), list(cut([changed], 64 * KIB))
    new = [p for p in after if p not in before]
    assert 1 <= len(new) <= 4
    assert sum(map(len, new)) <= 1000 + 3 * 64 * KIB


# --- through the repository ------------------------------------------------------------------------------


def rows(ids: range, seed: int) -> list[bytes]:
    """Table rows of a dump: an id and a random (incompressible) payload of 60 to 200 bytes."""
    rng = random.Random(seed)
    return [b"%d\t%s\n" % (i, rng.randbytes(rng.randint(60, 200))) for i in ids]


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
def test_rows_inserted_in_the_middle_store_little_more_than_themselves(tmp_path, encrypted):
    """The dedup promise: a table dump with 1% new rows in the middle stores about those rows again.

    With fixed-size chunks the same test fails: every byte after the insertion moves by its length,
    so every chunk from the middle on is new and the second backup stores half the stream (~50%)."""
    keys = KeySource(key=decode_key(generate_key())) if encrypted else KeySource()
    repo = Repository.init(str(tmp_path / "repo"), keys, chunk_size=64 * KIB)
    table = rows(range(0, 120_000, 2), 1)  # ~8 MiB; even ids
    middle = len(table) // 2
    inserted = rows(range(60_001, 60_001 + 2 * len(table) // 100, 2), 2)  # 1% more rows, odd ids, in the middle
    first, second = table, table[:middle] + inserted + table[middle:]
    stream = b"".join(second)
    assert 7 * MIB < len(stream) < 9 * MIB

    repo.write_stream("t", iter(first))
    stored_first = repo.added_bytes
    assert stored_first >= len(stream) * 0.95  # incompressible: the stored bytes are the data's
    ref = repo.write_stream("t", iter(second))
    stored_second = repo.added_bytes - stored_first
    assert b"".join(repo.read_stream(ref)) == stream
    assert stored_second <= 0.05 * len(stream), (stored_second, len(stream))


def test_random_bytes_inserted_in_the_middle_add_at_most_five_percent(tmp_path):
    """The same promise on incompressible data, stored bytes against the stream's own size."""
    repo = Repository.init(str(tmp_path / "repo"), KeySource(key=decode_key(generate_key())), chunk_size=64 * KIB)
    data = noise(8 * MIB, 11)
    changed = data[: 4 * MIB + 12345] + noise(len(data) // 100, 12) + data[4 * MIB + 12345 :]
    repo.write_stream("t", [data])
    before = repo.added_bytes
    assert before >= len(data)  # sealed random data: no smaller than the data
    repo.write_stream("t", split(changed, iter(lambda: 8 * KIB, None)))
    assert repo.added_bytes - before <= 0.05 * len(changed)


def test_a_repository_written_with_fixed_chunks_reads_the_same(tmp_path, monkeypatch):
    """Streams backed up before content-defined chunking (fixed chunk_size pieces) read as before, and
    the next backup of the same data just stores its new cuts."""
    location = str(tmp_path / "repo")
    keys = KeySource(key=decode_key(generate_key()))
    old = Repository.init(location, keys, chunk_size=64 * KIB)
    data = noise(3 * 64 * KIB + 100, 5)

    def fixed(chunks, size):  # the cutter migrate-guard used before
        joined = b"".join(bytes(c) for c in chunks)
        return (joined[i : i + size] for i in range(0, len(joined), size))

    monkeypatch.setattr(repository_module, "cut", fixed)
    old_ref = old.write_stream("t", [data])
    monkeypatch.undo()
    assert len(old_ref.blobs) == 4  # three full chunks of exactly chunk_size and a short one

    repo = Repository.open(location, keys)
    assert b"".join(repo.read_stream(old_ref)) == data
    assert all(repo.check_blob(blob) is None for blob in old_ref.blobs)
    new_ref = repo.write_stream("t", [data])
    assert new_ref.blobs != old_ref.blobs and new_ref.bytes == old_ref.bytes
    assert b"".join(repo.read_stream(new_ref)) == data == b"".join(repo.read_stream(old_ref))
