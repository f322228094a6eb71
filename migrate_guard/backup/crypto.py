"""Keys and the file framing of the backup repository (docs/repository-format.md, "Keys" and
"Encrypted file framing").

Encrypted files are ``"MGE1" ‖ flags ‖ salt (16) ‖ nonce prefix (7) ‖ segments``: the (optionally
zstd-compressed) plaintext cut into 65,536-byte segments, each sealed with AES-256-GCM under a key
derived for this file alone, the nonce binding the segment's position and whether it is the last.
Unencrypted files are ``"MGP1" ‖ flags ‖ data``. Both directions stream: memory holds a segment
(and the compressor's window), never a whole file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..errors import EXIT_FAILED, EXIT_USAGE, GuardError

if TYPE_CHECKING:
    import zstandard

MAGIC_ENCRYPTED = b"MGE1"
MAGIC_PLAIN = b"MGP1"
FLAG_ZSTD = 0x01
KNOWN_FLAGS = FLAG_ZSTD
KEY_SIZE = 32
SALT_SIZE = 16
PREFIX_SIZE = 7
HEADER_SIZE = 4 + 1 + SALT_SIZE + PREFIX_SIZE  # 28
PLAIN_HEADER_SIZE = 4 + 1
SEGMENT_SIZE = 65536
TAG_SIZE = 16
SEALED_SEGMENT_SIZE = SEGMENT_SIZE + TAG_SIZE
MAX_SEGMENTS = 1 << 32

SCRYPT_N = 1 << 15
SCRYPT_R = 8
SCRYPT_P = 1

INFO_BLOB_ID = b"migrate-guard/v1/blob-id"
INFO_FILE = b"migrate-guard/v1/file"
KEY_CHECK_PLAINTEXT = b"migrate-guard key check v1......"  # 32 bytes

# zstd can expand a few bytes into 128 KiB; feeding the decompressor small slices keeps the output of
# one call bounded (at most ~32 MiB even for a hostile file) at no measurable cost for real data.
_DECOMPRESS_SLICE = 1024


class WrongKey(GuardError):
    """The key does not open this repository."""

    exit_code = EXIT_USAGE


class IntegrityError(GuardError):
    """Stored data failed verification; the message names the file or blob and what failed."""

    exit_code = EXIT_FAILED


class TagMismatch(IntegrityError):
    """A segment failed authentication (tampered, reordered, truncated, or another key)."""


# --- keys -------------------------------------------------------------------------------------------------


def generate_key() -> str:
    """A new random master key, base64 (for ``MIGRATE_GUARD_KEY`` or a key file)."""
    return base64.b64encode(os.urandom(KEY_SIZE)).decode("ascii")


def decode_key(text: str, source: str = "MIGRATE_GUARD_KEY") -> bytes:
    """The 32-byte master key from its base64 text; ``source`` names where it came from in errors."""
    value = "".join(text.split())
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise GuardError(
            f"{source}: not valid base64 (expected a key from `migrate-guard key generate`)", EXIT_USAGE
        ) from None
    if len(key) != KEY_SIZE:
        raise GuardError(
            f"{source}: the key is {len(key)} bytes, expected {KEY_SIZE} (use `migrate-guard key generate`)", EXIT_USAGE
        )
    return key


def passphrase_key(passphrase: str, salt: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> bytes:
    """The master key from a passphrase: scrypt with the repository's salt."""
    return Scrypt(salt=salt, length=KEY_SIZE, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def _hkdf(master: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=info).derive(master)


def id_key(master: bytes, repository_id: str) -> bytes:
    """The key of blob ids: HKDF-SHA256(K, salt = the 16 bytes of the repository id, info = .../blob-id)."""
    return _hkdf(master, bytes.fromhex(repository_id), INFO_BLOB_ID)


def file_key(master: bytes, salt: bytes) -> bytes:
    """The key of one encrypted file: HKDF-SHA256(K, salt = the file's header salt, info = .../file)."""
    return _hkdf(master, salt, INFO_FILE)


def blob_id(data: bytes | bytearray | memoryview, key: bytes | None) -> str:
    """HMAC-SHA256(id key, data) in an encrypted repository, SHA-256(data) in a plain one; 64 hex digits."""
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


# --- sealing ---------------------------------------------------------------------------------------------


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + counter.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def _segments(pieces: Iterable[bytes], size: int = SEGMENT_SIZE) -> Iterator[tuple[bytes, bool]]:
    """Cut a byte stream into (segment, is_last): every segment ``size`` bytes but the last, which is
    1..size bytes (0 only when the stream is empty). One full segment is held back to know which is last."""
    buf = bytearray()
    pending: bytes | None = None
    for piece in pieces:
        if not piece:
            continue
        view = memoryview(piece)
        pos, end = 0, len(view)
        while pos < end:
            if not buf and end - pos >= size:
                segment = bytes(view[pos : pos + size])
                pos += size
            else:
                take = min(size - len(buf), end - pos)
                buf += view[pos : pos + take]
                pos += take
                if len(buf) < size:
                    break
                segment = bytes(buf)
                buf.clear()
            if pending is not None:
                yield pending, False
            pending = segment
    if buf:
        if pending is not None:
            yield pending, False
        yield bytes(buf), True
    elif pending is not None:
        yield pending, True
    else:
        yield b"", True


_COMPRESSORS = threading.local()


def compression_parameters(level: int) -> zstandard.ZstdCompressionParameters:
    """zstd's parameters for ``level``, tuned for database dumps.

    At the fast levels (1-4) matches shorter than 6 bytes are not searched for: database dumps are
    short fields whose short repeats cost more in sequence headers than they save (measured on the
    backup benchmark's COPY text at level 3: 2.9% smaller and a quarter less CPU; on source code
    about 2% larger, still smaller than zlib -6)."""
    import zstandard

    params = zstandard.ZstdCompressionParameters.from_level(level, write_content_size=False)
    if level <= 4:
        params = zstandard.ZstdCompressionParameters.from_level(
            level, write_content_size=False, min_match=max(6, params.min_match)
        )
    return params


def _one_shot_compressor(level: int) -> zstandard.ZstdCompressor:
    """This thread's compressor for one-shot ``compress`` calls: its context is reused, not rebuilt
    per chunk (a streaming compression gets its own, so two streams never share a context)."""
    import zstandard

    cache = cast("dict[int, zstandard.ZstdCompressor]", _COMPRESSORS.__dict__)
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(compression_params=compression_parameters(level))
    return cache[level]


def _compressed(chunks: Iterable[bytes], level: int) -> Iterator[bytes]:
    import zstandard

    chunker = zstandard.ZstdCompressor(compression_params=compression_parameters(level)).chunker(
        chunk_size=SEGMENT_SIZE
    )
    for chunk in chunks:
        if chunk:
            yield from chunker.compress(chunk)
    yield from chunker.finish()


def seal(chunks: Iterable[bytes], key: bytes | None, compress: bool = True, level: int = 3) -> Iterator[bytes]:
    """The file holding the concatenation of ``chunks``: "MGE1" framing under master key ``key``, or
    "MGP1" framing when ``key`` is None. Yields the file's bytes a header / segment at a time."""
    flags = FLAG_ZSTD if compress else 0
    data: Iterable[bytes] = _compressed(chunks, level) if compress else chunks
    if key is None:
        yield MAGIC_PLAIN + bytes([flags])
        for piece in data:
            if piece:
                yield bytes(piece)
        return
    salt = os.urandom(SALT_SIZE)
    prefix = os.urandom(PREFIX_SIZE)
    header = MAGIC_ENCRYPTED + bytes([flags]) + salt + prefix
    aead = AESGCM(file_key(key, salt))
    yield header
    for counter, (segment, last) in enumerate(_segments(data)):
        if counter >= MAX_SEGMENTS:
            raise GuardError("file too large for the framing (2^32 segments)", EXIT_FAILED)
        yield aead.encrypt(_nonce(prefix, counter, last), segment, header)


def seal_whole(
    data: bytes | bytearray | memoryview, key: bytes | None, compress: bool = True, level: int = 3
) -> list[bytes | bytearray | memoryview]:
    """``seal([data], ...)`` for data already whole in memory (a chunk, a manifest): the same
    framing, in pieces to write one after the other. The plaintext is compressed in one call (one
    zstd frame without a content size, as the streaming compressor writes it) and the segments are
    sealed from views of it, so a chunk costs one compression and no extra copies."""
    if compress:
        payload: bytes | bytearray | memoryview = _one_shot_compressor(level).compress(data)
    else:
        payload = data
    flags = FLAG_ZSTD if compress else 0
    if key is None:
        return [MAGIC_PLAIN + bytes([flags]), payload] if len(payload) else [MAGIC_PLAIN + bytes([flags])]
    salt = os.urandom(SALT_SIZE)
    prefix = os.urandom(PREFIX_SIZE)
    header = MAGIC_ENCRYPTED + bytes([flags]) + salt + prefix
    aead = AESGCM(file_key(key, salt))
    view = memoryview(payload).cast("B")
    count = max(1, -(-len(view) // SEGMENT_SIZE))
    if count > MAX_SEGMENTS:
        raise GuardError("file too large for the framing (2^32 segments)", EXIT_FAILED)
    out: list[bytes | bytearray | memoryview] = [header]
    for counter in range(count):
        segment = view[counter * SEGMENT_SIZE : (counter + 1) * SEGMENT_SIZE]
        out.append(aead.encrypt(_nonce(prefix, counter, counter == count - 1), segment, header))
    return out


def seal_bytes(data: bytes, key: bytes | None, compress: bool = True, level: int = 3) -> bytes:
    return b"".join(seal_whole(data, key, compress, level))


# --- unsealing -------------------------------------------------------------------------------------------


class _Reader:
    """Exact-size reads over an iterator of byte strings."""

    def __init__(self, chunks: Iterable[bytes]):
        self._it = iter(chunks)
        self._buf = bytearray()
        self._pos = 0
        self._eof = False

    def read(self, n: int) -> bytes:
        """``n`` bytes, fewer only at the end of the stream."""
        while len(self._buf) - self._pos < n and not self._eof:
            try:
                chunk = next(self._it)
            except StopIteration:
                self._eof = True
                break
            if self._pos:
                del self._buf[: self._pos]
                self._pos = 0
            self._buf += chunk
        out = bytes(self._buf[self._pos : self._pos + n])
        self._pos += len(out)
        if self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        return out


def _decrypted(reader: _Reader, header: bytes, key: bytes, name: str) -> Iterator[bytes]:
    salt = header[5 : 5 + SALT_SIZE]
    prefix = header[5 + SALT_SIZE : HEADER_SIZE]
    aead = AESGCM(file_key(key, salt))
    counter = 0
    current = reader.read(SEALED_SEGMENT_SIZE)
    if not current:
        raise IntegrityError(f"{name}: truncated (no segment after the header)")
    while True:
        following = reader.read(SEALED_SEGMENT_SIZE) if len(current) == SEALED_SEGMENT_SIZE else b""
        last = not following
        if len(current) < TAG_SIZE:
            raise IntegrityError(f"{name}: truncated in segment {counter} ({len(current)} bytes, shorter than a tag)")
        try:
            plain = aead.decrypt(_nonce(prefix, counter, last), current, header)
        except InvalidTag:
            if last and len(current) == SEALED_SEGMENT_SIZE:
                try:
                    aead.decrypt(_nonce(prefix, counter, False), current, header)
                except InvalidTag:
                    pass
                else:
                    raise IntegrityError(
                        f"{name}: truncated (segment {counter} is not the final one; the rest of the file is missing)"
                    ) from None
            raise TagMismatch(
                f"{name}: tag mismatch in segment {counter}"
                f"{' (the final segment: tampered or cut short)' if last else ''}"
            ) from None
        yield plain
        if last:
            return
        counter += 1
        current = following


def _decompressed(pieces: Iterable[bytes], name: str) -> Iterator[bytes]:
    import zstandard

    dobj = zstandard.ZstdDecompressor().decompressobj()
    try:
        for piece in pieces:
            view = memoryview(piece)
            for start in range(0, len(view), _DECOMPRESS_SLICE):
                if dobj.eof:
                    raise IntegrityError(f"{name}: data after the end of the compressed stream")
                out = dobj.decompress(view[start : start + _DECOMPRESS_SLICE])
                if out:
                    yield out
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"{name}: cannot decompress ({exc})") from None
    if not dobj.eof or dobj.unused_data:
        raise IntegrityError(
            f"{name}: the compressed stream is incomplete"
            if not dobj.eof
            else f"{name}: data after the end of the compressed stream"
        )


def unseal(chunks: Iterable[bytes], key: bytes | None, name: str = "file") -> Iterator[bytes]:
    """The plaintext of a sealed file, a segment at a time. With a key the file must be "MGE1" (an
    unencrypted file in an encrypted repository is refused); without one it must be "MGP1".
    Raises ``IntegrityError`` naming ``name`` and what failed."""
    reader = _Reader(chunks)
    magic = reader.read(4)
    if key is not None:
        if magic == MAGIC_PLAIN:
            raise IntegrityError(f"{name}: not encrypted, in an encrypted repository")
        if magic != MAGIC_ENCRYPTED:
            raise IntegrityError(
                f"{name}: bad magic {magic!r} (expected b'MGE1')"
                if len(magic) == 4
                else f"{name}: truncated ({len(magic)} bytes)"
            )
        rest = reader.read(HEADER_SIZE - 4)
        if len(rest) < HEADER_SIZE - 4:
            raise IntegrityError(f"{name}: truncated header ({4 + len(rest)} of {HEADER_SIZE} bytes)")
        header = magic + rest
        flags = header[4]
        if flags & ~KNOWN_FLAGS:
            raise IntegrityError(f"{name}: unknown flags 0x{flags:02x}")
        data = _decrypted(reader, header, key, name)
    else:
        if magic == MAGIC_ENCRYPTED:
            raise IntegrityError(f"{name}: encrypted, in an unencrypted repository")
        if magic != MAGIC_PLAIN:
            raise IntegrityError(
                f"{name}: bad magic {magic!r} (expected b'MGP1')"
                if len(magic) == 4
                else f"{name}: truncated ({len(magic)} bytes)"
            )
        flag_byte = reader.read(1)
        if not flag_byte:
            raise IntegrityError(f"{name}: truncated header")
        flags = flag_byte[0]
        if flags & ~KNOWN_FLAGS:
            raise IntegrityError(f"{name}: unknown flags 0x{flags:02x}")
        data = iter(lambda: reader.read(SEGMENT_SIZE), b"")
    if flags & FLAG_ZSTD:
        yield from _decompressed(data, name)
    else:
        for piece in data:
            if piece:
                yield piece


def unseal_bytes(data: bytes, key: bytes | None, name: str = "file") -> bytes:
    return b"".join(unseal([data], key, name))


def _zstd_frame_end(data: memoryview | bytes) -> int | None:
    """Where the zstd frame at the start of ``data`` ends (its header, blocks and checksum), or None
    when that cannot be read."""
    import zstandard

    try:
        pos = zstandard.frame_header_size(data)
    except zstandard.ZstdError:
        return None
    if bytes(data[:4]) != b"\x28\xb5\x2f\xfd":
        return None
    checksum = 4 if data[4] & 0x04 else 0
    end = len(data)
    while pos + 3 <= end:
        block = int.from_bytes(data[pos : pos + 3], "little")
        kind, size = (block >> 1) & 3, block >> 3
        pos += 3 + (1 if kind == 1 else size)  # an RLE block stores one byte
        if kind == 3:
            return None
        if block & 1:
            return pos + checksum
    return None


def unseal_whole(data: bytes, key: bytes | None, limit: int) -> bytes | None:
    """The plaintext of a sealed file held whole in memory, when it is sound and at most ``limit``
    bytes; None otherwise, and then ``unseal`` tells what is wrong (this never raises).

    The fast way to read a blob: the segments are decrypted from views of ``data`` and the zstd
    frame is decompressed in one call into at most ``limit`` bytes (so a hostile file cannot make it
    allocate more), then its length is checked to span the data exactly. Everything ``unseal``
    checks is checked; only the error messages are left to it."""
    import zstandard

    try:
        view = memoryview(data).cast("B")
        if key is not None:
            if len(view) < HEADER_SIZE + TAG_SIZE or bytes(view[:4]) != MAGIC_ENCRYPTED:
                return None
            header = bytes(view[:HEADER_SIZE])
            flags = header[4]
            body = view[HEADER_SIZE:]
            count = -(-len(body) // SEALED_SEGMENT_SIZE)
            if flags & ~KNOWN_FLAGS or count > MAX_SEGMENTS or len(body) - (count - 1) * SEALED_SEGMENT_SIZE < TAG_SIZE:
                return None
            aead = AESGCM(file_key(key, header[5 : 5 + SALT_SIZE]))
            prefix = header[5 + SALT_SIZE : HEADER_SIZE]
            parts = [
                aead.decrypt(
                    _nonce(prefix, i, i == count - 1),
                    body[i * SEALED_SEGMENT_SIZE : (i + 1) * SEALED_SEGMENT_SIZE],
                    header,
                )
                for i in range(count)
            ]
            payload: bytes | memoryview = parts[0] if count == 1 else b"".join(parts)
        else:
            if len(view) < PLAIN_HEADER_SIZE or bytes(view[:4]) != MAGIC_PLAIN:
                return None
            flags = view[4]
            if flags & ~KNOWN_FLAGS:
                return None
            payload = view[PLAIN_HEADER_SIZE:]
        if not flags & FLAG_ZSTD:
            return bytes(payload) if len(payload) <= limit else None
        plain = zstandard.ZstdDecompressor().decompress(payload, max_output_size=limit)
        if _zstd_frame_end(memoryview(payload)) != len(payload):
            return None  # more than one frame, or data after it
        return plain
    except (InvalidTag, zstandard.ZstdError, ValueError, OverflowError):
        return None


def key_matches(sealed: bytes, key: bytes) -> bool:
    """Whether ``key`` opens ``config.json``'s key check. Raises ``IntegrityError`` when the check
    itself is damaged (not a sealed file)."""
    try:
        plain = unseal_bytes(sealed, key, "config.json key_check")
    except TagMismatch:
        return False
    return hmac.compare_digest(plain, KEY_CHECK_PLAINTEXT)
