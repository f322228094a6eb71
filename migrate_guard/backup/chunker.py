"""Content-defined chunking: where a stream is cut into blobs (docs/repository-format.md, "Blob ids").

A stream is cut with FastCDC (the 2020 algorithm, as ``pyfastcdc`` implements it: gear seed 0,
normalized chunking 1), so a boundary depends only on the bytes around it: a row inserted in the
middle of a table changes the chunks around it and not every chunk after it, and the next backup
stores little more than the new rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pyfastcdc import FastCDC

__all__ = ["cdc_params", "cut"]

# pyfastcdc's limits (FastCDC refuses anything outside them)
_MIN_LIMITS = (64, 1 << 20)
_AVG_LIMITS = (256, 4 << 20)
_MAX_LIMITS = (1 << 10, 16 << 20)
_STEP_LEAST = 256 << 10  # new bytes between two cuttings of the buffer, at least (small chunk sizes)


def cdc_params(chunk_size: int) -> tuple[int, int, int]:
    """FastCDC's (min, avg, max) chunk sizes for a repository's ``chunk_size`` (1 KiB to 256 MiB):
    max = min(chunk_size, 16 MiB); avg = the largest power of two ≤ max // 4, within [256, 4 MiB];
    min = avg // 4, within [64, 1 MiB]. No chunk is longer than ``chunk_size``."""
    if chunk_size < _MAX_LIMITS[0]:
        raise ValueError(f"chunk size {chunk_size}: at least {_MAX_LIMITS[0]} bytes")
    high = min(chunk_size, _MAX_LIMITS[1])
    avg = min(max(1 << ((high // 4).bit_length() - 1), _AVG_LIMITS[0]), _AVG_LIMITS[1])
    low = min(max(avg // 4, _MIN_LIMITS[0]), _MIN_LIMITS[1])
    return low, avg, high


def cut(chunks: Iterable[bytes | bytearray | memoryview], chunk_size: int) -> Iterator[bytes]:
    """Cut a byte stream into content-defined pieces of at most ``chunk_size`` bytes (none if the
    stream is empty; their concatenation is the stream). The cuts depend only on the bytes, not on
    how ``chunks`` splits them. Each piece is a new ``bytes``, the caller's to keep.

    The stream is gathered into a buffer; every chunk FastCDC finds in it is final except the last,
    which may have been cut only because the buffer ended: it stays in the buffer (the tail, at most
    a maximal chunk), the next bytes are appended to it, and the cutting goes on from its start. The
    buffer is cut again once it holds more than a maximal chunk (so at least one chunk is final) and
    ``step`` new bytes: chunks leave about as steadily as bytes come in (the sealing threads keep
    pace with the dump instead of getting them in bursts), the tail is scanned again only every
    ``step`` bytes, and the buffer never holds more than a maximal chunk and a step."""
    low, avg, high = cdc_params(chunk_size)
    cdc = FastCDC(avg, min_size=low, max_size=high, normalized_chunking=1)
    step = max(high // 2, _STEP_LEAST)
    most = high + step  # the tail is at most high: a full buffer is always due for cutting
    buf = bytearray()
    tail = 0  # the bytes left in buf by the last cutting
    for chunk in chunks:
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(f"a stream yields bytes, not {type(chunk).__name__}")
        with memoryview(chunk) as whole, whole.cast("B") as view:
            pos, end = 0, len(view)
            while pos < end:
                take = min(end - pos, most - len(buf))  # a huge piece is taken a buffer at a time
                buf += view[pos : pos + take]
                pos += take
                if len(buf) > high and len(buf) - tail >= step:
                    ends = _ends(cdc, buf)
                    ends.pop()  # the last chunk: perhaps cut only because the buffer ended
                    yield from _pieces(buf, ends)  # one at least: the first is at most high bytes
                    del buf[: ends[-1]]
                    tail = len(buf)
    if buf:
        yield from _pieces(buf, _ends(cdc, buf))


def _ends(cdc: FastCDC, buf: bytearray) -> list[int]:
    """Where FastCDC cuts ``buf``: the end offset of each chunk (ascending; the last is len(buf))."""
    return [piece.offset + piece.length for piece in cdc.cut_buf(buf)]


def _pieces(buf: bytearray, ends: list[int]) -> Iterator[bytes]:
    """Copies of ``buf``'s first chunks, those ending at ``ends`` (the first starts at 0)."""
    start = 0
    with memoryview(buf) as view:
        for end in ends:
            yield bytes(view[start:end])
            start = end
