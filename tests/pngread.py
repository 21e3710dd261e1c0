"""A small PNG reader written from the PNG specification (ISO/IEC 15948), independent of
matplotlib and Pillow: the tests decode the demo's loss curve with it."""
import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel (8-bit, no palette)


def read_png(data):
    """``(header, pixels)``: the IHDR fields as a dict and a ``[height, width, channels]`` uint8
    array. Every chunk's CRC is checked; 8-bit greyscale/RGB(A) without interlace only."""
    assert data[:8] == SIGNATURE, "not a PNG (bad signature)"
    pos, chunks = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in chunk {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
        if kind == b"IEND":
            break
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND", [k for k, _ in chunks]
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", chunks[0][1])
    header = dict(width=width, height=height, bit_depth=depth, colour_type=colour,
                  interlace=interlace)
    assert depth == 8 and colour in _CHANNELS and interlace == 0 and compression == filtering == 0
    channels = _CHANNELS[colour]
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = width * channels
    assert len(raw) == height * (stride + 1), "image data of the wrong size"
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), np.uint8)
    previous = [0] * stride
    for y in range(height):
        kind, line = int(rows[y, 0]), rows[y, 1:].tolist()
        if kind == 0:  # None
            current = line
        elif kind == 1:  # Sub: the sample one pixel to the left, a running sum per channel
            sums = np.asarray(line, np.int64).reshape(width, channels).cumsum(axis=0)
            current = (sums & 0xFF).reshape(-1).tolist()
        elif kind == 2:  # Up
            current = [(a + b) & 0xFF for a, b in zip(line, previous)]
        elif kind in (3, 4):  # Average, Paeth: sample by sample
            current = [0] * stride
            for i in range(stride):
                left = current[i - channels] if i >= channels else 0
                up = previous[i]
                if kind == 3:
                    predictor = (left + up) // 2
                else:
                    up_left = previous[i - channels] if i >= channels else 0
                    p = left + up - up_left
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                    predictor = left if pa <= pb and pa <= pc else (up if pb <= pc else up_left)
                current[i] = (line[i] + predictor) & 0xFF
        else:
            raise AssertionError(f"unknown PNG filter type {kind}")
        out[y] = current
        previous = current
    return header, out.reshape(height, width, channels)


def pixels_of_colour(pixels, rgb):
    """``(rows, columns)`` of the pixels exactly of colour ``rgb`` (opaque)."""
    match = np.all(pixels[:, :, :3] == np.asarray(rgb, np.uint8), axis=2)
    if pixels.shape[2] == 4:
        match &= pixels[:, :, 3] == 255
    return np.nonzero(match)
