"""Typed, frozen settings sections and the machinery that fills them.

A *section* is a frozen dataclass whose fields are declared with
:func:`setting`. Core declares its sections in :mod:`ovnk.core.config`; each
plugin adds its own through the ``ovnk_add_settings`` hook, so every plugin
gets one ``[<plugin>]`` section validated by the same code.

Values come from four layers, highest first: command-line flags, environment
variables, the config file, the dataclass default. Every value remembers the
layer it came from so ``ovnk config show`` can print it.

Names: the field ``cluster_subnets`` of section ``default`` is the INI key
``cluster-subnets`` in ``[default]``, the environment variable
``OVNK_DEFAULT_CLUSTER_SUBNETS`` and the flag ``--set default.cluster-subnets=...``.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import types
import typing
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from typing import TypeVar

from ovnk.core.errors import ConfigError

T = TypeVar("T")

_META_KEY = "ovnk"


@dataclass(frozen=True)
class SettingMeta:
    """What :func:`setting` records about one field."""

    help: str
    parse: Callable[[str], Any] | None = None
    check: Callable[[Any], str | None] | None = None
    secret: bool = False


def setting(
    default: Any,
    *,
    help: str,
    parse: Callable[[str], Any] | None = None,
    check: Callable[[Any], str | None] | None = None,
    secret: bool = False,
) -> Any:
    """Declare one setting of a section dataclass.

    :param default: value used when no layer sets the key (already typed).
    :param help: one line shown by ``ovnk config show`` and in docs.
    :param parse: turns the raw string into the field's value; by default the
        field's annotation decides (bool, int, float, str, ``Literal``, enums,
        IP networks and ``tuple[...]`` of those, comma separated).
    :param check: returns an error text when a parsed value is not acceptable.
    :param secret: hide the value in ``ovnk config show``.
    """
    return dataclasses.field(
        default=default,
        metadata={_META_KEY: SettingMeta(help=help, parse=parse, check=check, secret=secret)},
    )


def key_of(field_name: str) -> str:
    """INI key of a dataclass field name (``cluster_subnets`` -> ``cluster-subnets``)."""
    return field_name.replace("_", "-")


def env_name(section: str, key: str) -> str:
    """Environment variable that sets ``[section] key``."""
    return "OVNK_" + f"{section}_{key}".upper().replace("-", "_").replace(".", "_")


@dataclass(frozen=True)
class SectionSpec:
    """A named settings section and who declared it (``core`` or a plugin name)."""

    name: str
    cls: type[Any]
    owner: str


class SettingsRegistry:
    """Collects the sections of core and of enabled plugins (passed to ``ovnk_add_settings``)."""

    def __init__(self) -> None:
        self._sections: dict[str, SectionSpec] = {}
        self._current_owner = "core"

    def add(self, name: str, cls: type[Any], *, owner: str | None = None) -> None:
        """Register section ``[name]`` backed by the frozen dataclass ``cls``.

        A plugin calls ``settings.add("<plugin name>", MySettings)``; two owners
        of one section name is a startup error naming both.
        """
        if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):  # type: ignore[attr-defined]
            raise ConfigError(f"settings section [{name}] must be a frozen dataclass, got {cls!r}")
        owner = owner or self._current_owner
        existing = self._sections.get(name)
        if existing is not None and existing.cls is not cls:
            raise ConfigError(
                f"settings section [{name}] is declared by both {existing.owner!r} and {owner!r}"
            )
        self._sections[name] = SectionSpec(name=name, cls=cls, owner=owner)

    def owned_by(self, owner: str) -> _OwnerScope:
        """Context manager attributing the sections added inside it to ``owner``."""
        return _OwnerScope(self, owner)

    def __iter__(self) -> Iterator[SectionSpec]:
        return iter(self._sections.values())

    def __contains__(self, name: object) -> bool:
        return name in self._sections

    def get(self, name: str) -> SectionSpec | None:
        return self._sections.get(name)


class _OwnerScope:
    def __init__(self, registry: SettingsRegistry, owner: str) -> None:
        self._registry = registry
        self._owner = owner
        self._saved = "core"

    def __enter__(self) -> None:
        self._saved = self._registry._current_owner
        self._registry._current_owner = self._owner

    def __exit__(self, *exc: object) -> None:
        self._registry._current_owner = self._saved


# --------------------------------------------------------------------------
# Raw layers


@dataclass(frozen=True)
class RawValue:
    """A string value and the layer it came from (``file:<path>``, ``env:<NAME>``, ``flag:<text>``)."""

    text: str
    source: str


class RawLayers:
    """String values of every layer, merged by precedence (flag > env > file)."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], RawValue] = {}
        self.file_sections: set[str] = set()

    def put(self, section: str, key: str, text: str, source: str) -> None:
        self._values[(section.lower(), key.lower())] = RawValue(text=text, source=source)

    def get(self, section: str, key: str) -> RawValue | None:
        return self._values.get((section, key))

    def keys_in(self, section: str) -> list[str]:
        return [k for (s, k) in self._values if s == section]

    def sections(self) -> set[str]:
        return {s for (s, _k) in self._values}


def read_ini(path: str, layers: RawLayers) -> None:
    """Load an INI config file into ``layers`` (lowest precedence of the three)."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None, strict=True, default_section="__none__")
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except configparser.Error as exc:
        raise ConfigError(f"config file {path} is not valid INI: {exc}") from None
    for section in parser.sections():
        name = section.lower()
        layers.file_sections.add(name)
        for key, value in parser.items(section):
            layers.put(name, key, value.strip(), f"file:{path}")


def read_env(env: Mapping[str, str], specs: list[SectionSpec], layers: RawLayers) -> None:
    """Load ``OVNK_<SECTION>_<KEY>`` variables for the sections in ``specs``."""
    for spec in specs:
        for f in dataclasses.fields(spec.cls):
            key = key_of(f.name)
            name = env_name(spec.name, key)
            if name in env:
                layers.put(spec.name, key, env[name], f"env:{name}")


def parse_assignment(text: str) -> tuple[str, str, str]:
    """Parse ``section.key=value`` (the ``--set`` flag) into its parts."""
    left, sep, value = text.partition("=")
    section, dot, key = left.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise ConfigError(f"invalid --set {text!r}: expected section.key=value")
    return section.lower(), key.lower().replace("_", "-"), value


# --------------------------------------------------------------------------
# Typed parsing


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("expected a boolean (true/false)")


def _parse_scalar(text: str, typ: Any) -> Any:
    text = text.strip()
    if typ is bool:
        return _parse_bool(text)
    if typ is int:
        try:
            return int(text, 10)
        except ValueError:
            raise ValueError("expected an integer") from None
    if typ is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError("expected a number") from None
    if typ is str:
        return text
    if typing.get_origin(typ) is typing.Literal:
        choices = typing.get_args(typ)
        if text not in choices:
            raise ValueError("expected one of " + ", ".join(map(str, choices)))
        return text
    if isinstance(typ, type) and issubclass(typ, enum.Enum):
        try:
            return typ(text)
        except ValueError:
            raise ValueError("expected one of " + ", ".join(str(m.value) for m in typ)) from None
    if typ in (ipaddress.IPv4Network, ipaddress.IPv6Network):
        return typ(text, strict=True)
    if typ in (ipaddress.IPv4Address, ipaddress.IPv6Address):
        return typ(text)
    if isinstance(typ, types.UnionType) or typing.get_origin(typ) is typing.Union:
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if text == "" and len(args) != len(typing.get_args(typ)):
            return None
        errors = []
        for arg in args:
            try:
                return _parse_scalar(text, arg)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    raise ValueError(f"no parser for type {typ!r}")


def parse_value(text: str, typ: Any) -> Any:
    """Parse ``text`` into a value of annotation ``typ``; raise ``ValueError`` with a readable reason."""
    if typing.get_origin(typ) is tuple:
        args = typing.get_args(typ)
        item = args[0] if args else str
        parts = [p.strip() for p in text.replace("\n", ",").split(",")]
        return tuple(_parse_scalar(p, item) for p in parts if p)
    return _parse_scalar(text, typ)


def build_section(spec: SectionSpec, layers: RawLayers) -> tuple[Any, dict[str, str]]:
    """Build the frozen dataclass of ``spec`` from ``layers``; returns it and each key's source.

    Raises :class:`ConfigError` naming the section, the key, the value and its
    source for any value that cannot be parsed or fails its check, and for keys
    the section does not know.
    """
    hints = typing.get_type_hints(spec.cls)
    known = {key_of(f.name): f for f in dataclasses.fields(spec.cls)}
    unknown = sorted(set(layers.keys_in(spec.name)) - set(known))
    if unknown:
        raw = layers.get(spec.name, unknown[0])
        where = f" (from {raw.source})" if raw else ""
        raise ConfigError(
            f"unknown setting [{spec.name}] {unknown[0]}{where}; known keys: {', '.join(sorted(known))}"
        )
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, f in known.items():
        meta = f.metadata.get(_META_KEY)
        raw = layers.get(spec.name, key)
        if raw is None:
            sources[key] = "default"
            continue
        try:
            if meta is not None and meta.parse is not None:
                value = meta.parse(raw.text)
            else:
                value = parse_value(raw.text, hints[f.name])
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"invalid value for [{spec.name}] {key}: {raw.text!r} (from {raw.source}): {exc}"
            ) from None
        values[f.name] = value
        sources[key] = raw.source
    for key, f in known.items():
        meta = f.metadata.get(_META_KEY)
        if meta is None or meta.check is None:
            continue
        value = values.get(f.name, f.default)
        problem = meta.check(value)
        if problem:
            raw = layers.get(spec.name, key)
            shown = raw.text if raw is not None else str(value)
            src = raw.source if raw is not None else "default"
            raise ConfigError(f"invalid value for [{spec.name}] {key}: {shown!r} (from {src}): {problem}")
    try:
        instance = spec.cls(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid settings in [{spec.name}]: {exc}") from None
    validate = getattr(instance, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as exc:
            raise ConfigError(f"invalid settings in [{spec.name}]: {exc}") from None
    return instance, sources


def describe(instance: Any) -> list[tuple[str, str, str]]:
    """(key, shown value, help) of every field of a section instance, secrets masked."""
    rows = []
    for f in dataclasses.fields(instance):
        meta = f.metadata.get(_META_KEY)
        value = getattr(instance, f.name)
        shown = format_value(value)
        if meta is not None and meta.secret and value:
            shown = "***"
        rows.append((key_of(f.name), shown, meta.help if meta else ""))
    return rows


def format_value(value: Any) -> str:
    """Render a typed value the way it would be written in the INI file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(format_value(v) for v in value)
    if isinstance(value, enum.Enum):
        return str(value.value)
    if value is None:
        return ""
    return str(value)
