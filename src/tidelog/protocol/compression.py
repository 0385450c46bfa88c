"""The record batch codecs (attributes bits 0-2): none, gzip, snappy, lz4, zstd, through cramjam.

Snappy comes two ways: raw, or in the Java client's xerial framing (a magic header, then
int32-sized blocks), which is what the Java producer writes and what ``compress`` writes.
``decompress_into`` writes into a caller's bounded buffer (produce validation: a batch may not
expand past it); ``decompress`` and ``compress`` return new bytes (off the hot path). Pure
functions, no I/O.
"""

from __future__ import annotations

import struct

import cramjam

__all__ = ["COMPRESSION_CODECS", "COMPRESSION_GZIP", "COMPRESSION_LZ4", "COMPRESSION_NONE", "COMPRESSION_SNAPPY",
           "COMPRESSION_ZSTD", "compress", "decompress", "decompress_into"]

COMPRESSION_NONE, COMPRESSION_GZIP, COMPRESSION_SNAPPY, COMPRESSION_LZ4, COMPRESSION_ZSTD = range(5)
COMPRESSION_CODECS = {"uncompressed": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}  # compression.type -> codec id

_INT32 = struct.Struct(">i")
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)


def decompress_into(codec: int, data, out) -> int:
    """Decompress ``data`` into ``out``; return the size. Raises if ``out`` is too small."""
    if codec == COMPRESSION_SNAPPY:
        if bytes(data[:8]) != _XERIAL_MAGIC:
            return cramjam.snappy.decompress_raw_into(data, out)
        size, pos, out_view = 0, 16, memoryview(out)
        try:
            while pos < len(data):
                (block_size,) = _INT32.unpack_from(data, pos)
                if block_size < 0 or pos + 4 + block_size > len(data):
                    raise ValueError(f"snappy block of {block_size} bytes runs past the payload")
                size += cramjam.snappy.decompress_raw_into(data[pos + 4 : pos + 4 + block_size], out_view[size:])
                pos += 4 + block_size
        finally:
            out_view.release()
        return size
    into = {COMPRESSION_GZIP: cramjam.gzip.decompress_into, COMPRESSION_LZ4: cramjam.lz4.decompress_into,
            COMPRESSION_ZSTD: cramjam.zstd.decompress_into}[codec]
    return into(data, out)


def decompress(codec: int, data) -> bytes:
    if codec == COMPRESSION_GZIP:
        return bytes(cramjam.gzip.decompress(data))
    if codec == COMPRESSION_SNAPPY:
        if bytes(data[:8]) == _XERIAL_MAGIC:  # Java's xerial framing: header, then int32-sized blocks
            out = bytearray()
            pos = 16
            while pos < len(data):
                (block_size,) = _INT32.unpack_from(data, pos)
                out += cramjam.snappy.decompress_raw(bytes(data[pos + 4 : pos + 4 + block_size]))
                pos += 4 + block_size
            return bytes(out)
        return bytes(cramjam.snappy.decompress_raw(bytes(data)))
    if codec == COMPRESSION_LZ4:
        return bytes(cramjam.lz4.decompress(bytes(data)))
    if codec == COMPRESSION_ZSTD:
        return bytes(cramjam.zstd.decompress(bytes(data)))
    raise ValueError(f"unknown compression codec {codec}")


def compress(codec: int, data: bytes) -> bytes:
    if codec == COMPRESSION_GZIP:
        return bytes(cramjam.gzip.compress(data))
    if codec == COMPRESSION_SNAPPY:  # xerial framing, one block: what the Java producer writes
        block = bytes(cramjam.snappy.compress_raw(data))
        return _XERIAL_HEADER + _INT32.pack(len(block)) + block
    if codec == COMPRESSION_LZ4:
        return bytes(cramjam.lz4.compress(data))
    if codec == COMPRESSION_ZSTD:
        return bytes(cramjam.zstd.compress(data))
    raise ValueError(f"unknown compression codec {codec}")
