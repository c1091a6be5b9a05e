"""Reading YAML strictly, and typed, checked access to its mappings. Every error names the file
and the field (`profiles/www.yaml: scm.term: must be a whole number, not 'ninety'`).

A method given a default returns that type; without one it returns None for an absent field.
The defaults callers pass are the settings dataclasses' own (`FirewallProfile.timeout`), so
each default is written once, in settings.py.
"""

from __future__ import annotations

import difflib
import io
import os
import stat
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, overload

import yaml

from .errors import ConfigError
from .settings import Secret

if TYPE_CHECKING:
    from .cache import KnownFiles

ENCRYPTED_MARKER = "-----BEGIN PGP MESSAGE-----"

# Decrypts a GPG-armoured value in memory: (ciphertext, file, field) -> plaintext.
Decryptor = Callable[[str, str, str], str]

# libyaml's parser when PyYAML has it (ten times faster on a fleet's thousand profiles); the
# constructor is the safe one either way.
_SafeBase: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
LOADER = f"{_SafeBase.__name__} strict-1"  # what parsed cached profiles (cache.py)


class _StrictLoader(_SafeBase):  # type: ignore[misc]
    """Safe loading, and a duplicate key is an error (PyYAML would keep the last silently)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.constructor.SafeConstructor.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_yaml(path: str, known: Optional["KnownFiles"] = None) -> object:
    """The YAML document of `path`, strictly read. With `known` (cache.py), a file whose
    exact bytes were parsed before is not parsed again."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        found = known.parsed(data) if known is not None else None
        if found is not None:
            return found.value
        stream = io.StringIO(data.decode("utf-8"))
        stream.name = path  # PyYAML's messages name the file
        document = yaml.load(stream, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
        if known is not None:
            known.learn(data, document)
        return document
    except FileNotFoundError:
        raise ConfigError("file not found", path) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a YAML file", path) from None
    except PermissionError:
        raise ConfigError("cannot read the file (permission denied)", path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the file ({exc.strerror or exc})", path) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        if "alias" in f"{getattr(exc, 'context', '')} {problem}":
            # `common_name: *.example.com`: in YAML a leading * starts an alias.
            problem += "; a value that starts with '*' (a wildcard name) must be quoted, " \
                       "e.g. common_name: \"*.example.com\""
        raise ConfigError(f"invalid YAML: {where}{problem}", path) from None


class Fields:
    """Typed, checked access to one YAML mapping; errors name the file and the field."""

    def __init__(self, data: object, path: str, prefix: str = "",
                 decrypt: Optional[Decryptor] = None) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError("must be a mapping (key: value lines)", path, prefix or None)
        self.data: Dict[Any, object] = data
        self.path = path
        self.prefix = prefix
        self.decrypt = decrypt

    def name(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, self.path, self.name(key))

    def only(self, known: Sequence[str]) -> None:
        for key in self.data:
            if key not in known:
                raise self.error(str(key), f"unknown field{did_you_mean(str(key), known)}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def keys(self) -> List[str]:
        return [str(k) for k in self.data]

    def section(self, key: str) -> "Fields":
        return Fields(self.data.get(key), self.path, self.name(key), self.decrypt)

    # -- text ------------------------------------------------------------------------------

    @overload
    def text(self, key: str) -> Optional[str]: ...

    @overload
    def text(self, key: str, default: str) -> str: ...

    def text(self, key: str, default: Optional[str] = None) -> Optional[str]:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self.error(key, f"must be text, not {type(value).__name__}")
        return str(value).strip() or default

    def required(self, key: str) -> str:
        value = self.data.get(key)
        if value is None:
            raise self.error(key, "required field is missing")
        text = self.text(key)
        if not text:
            raise self.error(key, "must not be empty")
        return text

    def secret(self, key: str) -> Optional[Secret]:
        value = self.text(key)
        return self._secret(key, value) if value is not None else None

    def required_secret(self, key: str) -> Secret:
        return self._secret(key, self.required(key))

    def _secret(self, key: str, value: str) -> Secret:
        if value.startswith(ENCRYPTED_MARKER):
            if self.decrypt is None:
                raise self.error(key, "is GPG-encrypted but config.yaml has no encryption "
                                      "settings to decrypt it")
            value = self.decrypt(value, self.path, self.name(key))
        return Secret(value)

    @overload
    def choice(self, key: str, choices: Sequence[str], *, upper: bool = ...) -> Optional[str]:
        ...

    @overload
    def choice(self, key: str, choices: Sequence[str], default: str, *,
               upper: bool = ...) -> str: ...

    def choice(self, key: str, choices: Sequence[str], default: Optional[str] = None, *,
               upper: bool = False) -> Optional[str]:
        value = self.text(key)
        if value is None:
            return default
        return self._one_of(key, value, choices, upper)

    def required_choice(self, key: str, choices: Sequence[str], *, upper: bool = False) -> str:
        return self._one_of(key, self.required(key), choices, upper)

    def _one_of(self, key: str, value: str, choices: Sequence[str], upper: bool) -> str:
        normalized = value.upper() if upper else value
        if normalized not in choices:
            raise self.error(key, f"'{value}' is not one of {', '.join(choices)}")
        return normalized

    def names(self, key: str) -> List[str]:
        """A list of non-empty strings (a single string is a list of one)."""
        value = self.data.get(key)
        if value is None:
            return []
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise self.error(key, "must be a list")
        out = []
        for index, item in enumerate(items):
            if isinstance(item, bool) or not isinstance(item, (str, int)) or \
                    not str(item).strip():
                raise self.error(f"{key}[{index}]", "must be non-empty text")
            out.append(str(item).strip())
        return out

    # -- numbers ---------------------------------------------------------------------------

    @overload
    def integer(self, key: str, *, minimum: Optional[int] = ...,
                maximum: Optional[int] = ...) -> Optional[int]: ...

    @overload
    def integer(self, key: str, default: int, *, minimum: Optional[int] = ...,
                maximum: Optional[int] = ...) -> int: ...

    def integer(self, key: str, default: Optional[int] = None, *,
                minimum: Optional[int] = None, maximum: Optional[int] = None) -> Optional[int]:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be a whole number, not {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise self.error(key, f"must be at most {maximum}")
        return value

    def number(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"must be a number, not {value!r}")
        if value < minimum:
            raise self.error(key, f"must be at least {minimum}")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {value!r}")
        return value

    # -- files -----------------------------------------------------------------------------

    def file(self, key: str, base: str) -> Optional[str]:
        value = self.text(key)
        if value is None:
            return None
        path = resolve(base, value)
        if not os.path.isfile(path):
            raise self.error(key, f"file not found: {path}")
        return path

    def resolved(self, key: str, base: str, default: Optional[str] = None) -> Optional[str]:
        """A path relative to `base` (the directory of the file that names it)."""
        value = self.text(key)
        if value is None:
            return default
        return resolve(base, value)


def resolve(base: str, value: str) -> str:
    return os.path.normpath(os.path.join(base, os.path.expanduser(value)))


def did_you_mean(word: str, options: Sequence[str]) -> str:
    hint = difflib.get_close_matches(word, list(options), n=1)
    return f"; did you mean '{hint[0]}'?" if hint else \
        (f"; known: {', '.join(sorted(options))}" if options else "")


def check_private(path: str) -> None:
    """Refuse a credentials file that group or others can read (or write)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"holds credentials but is readable by group or others (mode "
                          f"{stat.S_IMODE(mode):o}); run: chmod 600 '{path}'", path)
