"""The protobuf wire format, as much of it as scanning and writing ONNX files needs: varints, field
keys, length-delimited fields, and the field numbers of the messages we walk."""

from __future__ import annotations

VARINT, I64, LEN, I32 = 0, 1, 2, 5
MODEL_GRAPH = 7
GRAPH_INITIALIZER = 5
TENSOR_RAW_DATA = 9
PROTOBUF_LIMIT = 2**31 - 1


def read_varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def fields(buf, start: int, end: int):
    """Yield (field_number, wire_type, field_start, value_start, value_end) for one message."""
    pos = start
    while pos < end:
        field_start = pos
        key, pos = read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == VARINT:
            _, value_end = read_varint(buf, pos, end)
        elif wire == I64:
            value_end = pos + 8
        elif wire == I32:
            value_end = pos + 4
        elif wire == LEN:
            length, pos = read_varint(buf, pos, end)
            value_end = pos + length
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if value_end > end:
            raise ValueError("field runs past the end of its message")
        yield number, wire, field_start, pos, value_end
        pos = value_end


def len_field(number: int, payload_len: int) -> bytes:
    return encode_varint((number << 3) | LEN) + encode_varint(payload_len)
