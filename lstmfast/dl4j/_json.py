"""configuration.json decoded with bounded memory and checked for numbers no field can hold."""

import json
import re


# Decoded JSON takes far more memory than its text (an empty object: 2 bytes of text, 64 of
# Python dict, 8 more in its list), so the number of values is bounded before decoding: at most
# one per 8 bytes of text beyond the first 65,536 (DL4J's configurations, indented, have one
# per 15-20 bytes; written without indentation about one per 9), and 2^20 in all (about
# 10,000 layers). Decoding then takes at most about 12 times the text (measured with the
# costliest value per byte, one-member objects) and under 100 MiB.
_MAX_JSON_VALUES = 1 << 20
_JSON_VALUES_FREE = 1 << 16
_JSON_BYTES_PER_VALUE = 8
# an integer with more digits than this is past the largest float (1.8e308)
_FLOAT_DIGITS = 309


def _decode_json(config):
    """``configuration.json`` (text or bytes) as Python objects, or ``config`` itself when
    it is decoded already. ValueError for text that is not UTF-8 JSON, holds more values
    than its size allows (see _MAX_JSON_VALUES), or an integer past the float range."""
    if isinstance(config, (bytes, bytearray)):
        try:
            config = config.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"configuration.json is not UTF-8 text: {e}") from None
    if not isinstance(config, str):
        _refuse_integers_past_floats(config)
        return config
    # every value but the outermost follows a "[", a "," or a ":" (counting those inside
    # strings too only overestimates); str.count runs at memory speed
    values = 1 + config.count("[") + config.count(",") + config.count(":")
    allowed = min(_MAX_JSON_VALUES, _JSON_VALUES_FREE + len(config) // _JSON_BYTES_PER_VALUE)
    if values > allowed:
        raise ValueError(f"configuration.json: up to {values} JSON values in {len(config)} "
                         f"bytes, more than the {allowed} accepted (bulk that no DL4J "
                         f"configuration holds)")
    try:
        decoded = json.loads(config)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"configuration.json is not valid JSON: {e}") from None
    except ValueError as e:      # an integer past Python's digit limit for int()
        raise ValueError(f"configuration.json: {e}") from None
    if re.search(f"[0-9]{{{_FLOAT_DIGITS}}}", config):
        _refuse_integers_past_floats(decoded)
    return decoded


def _refuse_integers_past_floats(decoded):
    """ValueError naming the first field that holds an integer no float can hold (DL4J's
    numeric fields are Java doubles and ints: such a number is no value for any of them)."""
    pending = [(decoded, "configuration.json")]
    while pending:
        node, path = pending.pop()
        items = (node.items() if isinstance(node, dict)
                 else enumerate(node) if isinstance(node, list) else ())
        for key, value in items:
            if isinstance(value, (dict, list)):
                pending.append((value, f"{path}[{key!r}]"))
            elif isinstance(value, int) and not isinstance(value, bool):
                try:
                    float(value)
                except OverflowError:
                    digits = len(str(abs(value)))
                    raise ValueError(f"{path}: field {key!r} holds an integer of {digits} "
                                     f"digits, past the range of a floating-point number") \
                        from None
