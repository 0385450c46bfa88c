"""What a setting is: ``ConfigDef`` (Kafka's ConfigDef.ConfigKey: name, type, default, doc, checks),
how a value given as text or TOML is parsed to its type, and how a value is rendered as Kafka
shows it (DescribeConfigs, ``tidelog settings``).

The settings themselves, the loader and the topic and group configs are config.py's.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["CONFIG_TYPE_CODES", "ConfigDef", "ConfigError", "render"]


class ConfigError(ValueError):
    pass


def _parse_bool(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"expected a boolean, got {text!r}")


def _parse_int(text: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise ConfigError(f"expected an integer, got {text!r}") from None


def _parse_str(text: str) -> str:
    return str(text)


def _parse_double(text: str) -> float:
    try:
        return float(str(text).strip())
    except ValueError:
        raise ConfigError(f"expected a number, got {text!r}") from None


def _parse_list(text: str) -> str:
    """A comma-separated list, normalised as "a,b" (Kafka trims each item; "" is the empty list)."""
    return ",".join(item.strip() for item in str(text).split(",") if item.strip())


_PARSERS: dict[str, Callable[[str], Any]] = {
    "BOOLEAN": _parse_bool,
    "INT": _parse_int,
    "LONG": _parse_int,
    "STRING": _parse_str,
    "LIST": _parse_list,
    "DOUBLE": _parse_double,
    "PASSWORD": _parse_str,
    "CLASS": _parse_str,
}

# DescribeConfigs config_type codes (KIP-569).
CONFIG_TYPE_CODES = {"BOOLEAN": 1, "STRING": 2, "INT": 3, "SHORT": 4, "LONG": 5, "DOUBLE": 6, "LIST": 7, "CLASS": 8, "PASSWORD": 9}


@dataclass(frozen=True)
class ConfigDef:
    name: str
    type: str
    default: Any
    doc: str
    choices: tuple[str, ...] | None = None
    minimum: int | None = None
    read_only: bool = False
    maximum: int | None = None
    # A further check of the parsed value (Kafka's custom validators); raises ConfigError.
    validator: Callable[[str, Any], None] | None = None

    def parse(self, value: Any) -> Any:
        """The typed value, or ConfigError naming the setting and what is wrong with the value
        (``num.partitions: expected an integer, got 'abc'``; callers add where it came from)."""
        try:
            parsed = _PARSERS[self.type](value) if isinstance(value, str) else value
            if self.type in ("INT", "LONG") and (not isinstance(parsed, int) or isinstance(parsed, bool)):
                parsed = _parse_int(str(parsed))
            if self.type == "BOOLEAN" and not isinstance(parsed, bool):
                parsed = _parse_bool(str(parsed))
            if self.type == "DOUBLE" and (isinstance(parsed, bool) or not isinstance(parsed, (int, float))):
                parsed = _parse_double(str(parsed))
            if self.type == "LIST" and not isinstance(value, str):
                parsed = _parse_list(",".join(map(str, parsed)) if isinstance(parsed, (list, tuple)) else str(parsed))
        except (ConfigError, ValueError) as e:  # float() says ValueError
            raise ConfigError(f"{self.name}: {e}") from None
        if self.type == "LIST" and self.choices is not None:
            for item in parsed.split(",") if parsed else ():
                if item not in self.choices:
                    raise ConfigError(f"{self.name}: {item!r} is not one of {', '.join(self.choices)}")
        elif self.choices is not None and parsed not in self.choices:
            raise ConfigError(f"{self.name}: {parsed!r} is not one of {', '.join(self.choices)}")
        if self.minimum is not None and parsed < self.minimum:
            raise ConfigError(f"{self.name}: {parsed} is below the minimum {self.minimum}")
        if self.maximum is not None and parsed > self.maximum:
            raise ConfigError(f"{self.name}: {parsed} is above the maximum {self.maximum}")
        if self.validator is not None:
            self.validator(self.name, parsed)
        return parsed


def render(value: Any) -> str:
    """A config value as Kafka shows it in DescribeConfigs."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _java_double(value)
    return str(value)


def _java_double(value: float) -> str:
    """Java's Double.toString: plain from 1e-3 to 1e7, else d.dddE[-]n (1.7976931348623157E308)."""
    if value == 0 or 1e-3 <= abs(value) < 1e7:
        return repr(float(value))
    sign, digits, exponent = decimal.Decimal(repr(float(value))).normalize().as_tuple()
    text = "".join(map(str, digits))
    return f"{'-' if sign else ''}{text[0]}.{text[1:] or '0'}E{exponent + len(text) - 1}"
