"""Secrets at rest: GPG encryption of the secret values in the credential files.

`encrypt` replaces each secret value (SCM `client_secret` and `scm_password`, firewall `api_key`
and `password`) with ASCII-armoured GPG ciphertext, in place, as a YAML literal block; every
other byte of the file (comments, order, other values) stays as it was. `decrypt` puts the
plaintext back. At run time encrypted values are decrypted in memory only.

How GPG gets its secrets without a terminal (cron): python-gnupg runs `gpg --batch --no-tty`
and, when a passphrase is configured (`passphrase_file` or `passphrase_env`), sends it on
gpg's stdin with `--pinentry-mode loopback --passphrase-fd 0`, never as an argument. Without a
configured passphrase, gpg uses a key without passphrase or a gpg-agent that has it cached.

python-gnupg logs decrypted data at DEBUG ("chunk: …"); its logger is held at ERROR.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import socket
import stat
import subprocess
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import yaml

from .config import NOTIFICATION_SECRETS, NOTIFICATIONS_FILE, SECRET_FIELDS
from .fields import ENCRYPTED_MARKER, check_private, read_yaml
from .settings import EncryptionSettings
from .errors import ConfigError
from .state import atomic_write

logging.getLogger("gnupg").setLevel(logging.ERROR)
log = logging.getLogger(__name__)



class Gpg:
    """Encrypts and decrypts single values with the settings of config.yaml."""

    def __init__(self, settings: EncryptionSettings, config_path: str) -> None:
        import gnupg  # imported here: only runs that meet an encrypted value need it

        self.settings = settings
        self.config_path = config_path
        if settings.mode == "none":
            raise ConfigError("set encryption.mode to public-key or symmetric to use GPG",
                              config_path, "encryption.mode")
        binary = shutil.which(settings.gpg_binary) or (
            settings.gpg_binary if os.path.isfile(settings.gpg_binary) else None)
        if binary is None:
            raise ConfigError(f"the gpg program '{settings.gpg_binary}' was not found; install "
                              "GnuPG or set encryption.gpg_binary", config_path,
                              "encryption.gpg_binary")
        if settings.gpg_home:
            os.makedirs(settings.gpg_home, mode=0o700, exist_ok=True)
        self._binary = binary
        self._gpgconf = _companion(binary, "gpgconf")
        # The daemons of this GnuPG home that run before the agent uses it: the ones gpg
        # starts for it (gpg-agent for secret keys) are stopped again by close().
        self._daemons_before = self._daemons()
        try:
            self.gpg = gnupg.GPG(gpgbinary=binary, gnupghome=settings.gpg_home)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot run gpg ({exc})", config_path,
                              "encryption.gpg_binary") from None
        self._passphrase: Optional[str] = None
        self._cache_cleared = False
        # gpg 2.2.7+: a symmetric passphrase is not kept in gpg-agent's cache.
        self._extra = ["--no-symkey-cache"] if tuple(self.gpg.version or ()) >= (2, 2, 7) \
            else []

    # -- daemons: leave none behind, and never lean on a cached passphrase -----------------

    def _home_args(self) -> List[str]:
        return ["--homedir", self.settings.gpg_home] if self.settings.gpg_home else []

    def _daemons(self) -> Dict[str, bool]:
        """{component: listening} for gpg-agent, dirmngr and keyboxd of this home, from
        their sockets (connecting to a socket starts nothing)."""
        if self._gpgconf is None:
            return {}
        try:
            listing = subprocess.run([self._gpgconf, *self._home_args(), "--list-dirs"],
                                     capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return {}
        sockets = dict(line.split(":", 1) for line in listing.splitlines() if ":" in line)
        return {component: _listening(sockets[key]) for component, key in (
            ("gpg-agent", "agent-socket"), ("dirmngr", "dirmngr-socket"),
            ("keyboxd", "keyboxd-socket")) if key in sockets}

    def close(self) -> None:
        """Stop the daemons gpg started for this run (a gpg-agent left behind would keep the
        passphrase cached, and one more daemon per run per home would pile up); daemons that
        ran before, such as a desktop's agent, are left alone."""
        if self._gpgconf is None:
            return
        for component, running in self._daemons().items():
            if running and not self._daemons_before.get(component, False):
                subprocess.run([self._gpgconf, *self._home_args(), "--kill", component],
                               capture_output=True, timeout=30)
                log.debug("stopped the %s this run started", component)

    def _forget_cached_passphrases(self) -> None:
        """With a configured passphrase, a gpg-agent that ran before this run may still hold
        the keys' passphrases in its cache, and would then accept a wrong passphrase_file:
        clear the cache entries of this home's secret keys, so the passphrase is checked."""
        if self._cache_cleared or not self._daemons_before.get("gpg-agent"):
            return
        self._cache_cleared = True
        connect = _companion(self._binary, "gpg-connect-agent")
        try:
            listing = subprocess.run([self._binary, *self._home_args(), "--batch",
                                      "--with-colons", "--with-keygrip",
                                      "--list-secret-keys"], capture_output=True, text=True,
                                     timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return
        grips = [line.split(":")[9] for line in listing.splitlines()
                 if line.startswith("grp:") and len(line.split(":")) > 9]
        if connect and grips:
            subprocess.run([connect, *self._home_args(), "--no-autostart",
                            *[f"CLEAR_PASSPHRASE --mode=normal {g}" for g in grips], "/bye"],
                           capture_output=True, timeout=30)

    def passphrase(self) -> Optional[str]:
        """From passphrase_file (which must be private) or the passphrase_env variable."""
        if self._passphrase is not None:
            return self._passphrase
        settings = self.settings
        if settings.passphrase_file:
            try:
                check_private(settings.passphrase_file)
                with open(settings.passphrase_file, encoding="utf-8") as handle:
                    self._passphrase = handle.read().rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(f"cannot read the passphrase file ({exc.strerror})",
                                  self.config_path, "encryption.passphrase_file") from None
        elif settings.passphrase_env:
            value = os.environ.get(settings.passphrase_env)
            if value is None:
                raise ConfigError(f"the environment variable {settings.passphrase_env} is "
                                  "not set (cron starts jobs with an almost empty "
                                  "environment: set it in the crontab or use "
                                  "passphrase_file)", self.config_path,
                                  "encryption.passphrase_env")
            self._passphrase = value
        return self._passphrase

    def encrypt(self, plaintext: str, path: str, field: str) -> str:
        if self.settings.mode == "symmetric":
            passphrase = self.passphrase()
            if not passphrase:
                raise ConfigError("symmetric mode needs passphrase_file or passphrase_env",
                                  self.config_path, "encryption")
            result = self.gpg.encrypt(plaintext, None, symmetric="AES256",
                                      passphrase=passphrase, armor=True,
                                      extra_args=self._extra)
        else:
            result = self.gpg.encrypt(plaintext, [self.settings.recipient], armor=True,
                                      always_trust=True)
        if not result.ok:
            detail = result.status or "failed"
            if "invalid recipient" in detail or "no public key" in (result.stderr or "").lower():
                detail = (f"no usable public key for recipient '{self.settings.recipient}' in "
                          f"GPG home {self.settings.gpg_home or '~/.gnupg'}")
            raise ConfigError(f"cannot encrypt: {detail}", path, field)
        return str(result)

    def decrypt(self, ciphertext: str, path: str, field: str) -> str:
        passphrase = self.passphrase()
        if passphrase is not None:
            self._forget_cached_passphrases()
        result = self.gpg.decrypt(ciphertext, passphrase=passphrase, extra_args=self._extra)
        if not result.ok:
            stderr = (result.stderr or "").lower()
            # A wrong passphrase for a protected key also reads "no secret key": look for
            # the passphrase first.
            if "bad passphrase" in stderr or "bad_passphrase" in stderr or \
                    "bad session key" in stderr or result.status == "need symmetric passphrase":
                why = "wrong or missing passphrase (passphrase_file / passphrase_env)"
            elif "no secret key" in (result.status or "") or "no_seckey" in stderr:
                why = "no secret key for it in the GPG home " \
                      f"{self.settings.gpg_home or '~/.gnupg'}"
            elif "no valid openpgp data" in stderr or "nodata" in stderr:
                why = "the value is not valid GPG data (corrupted?)"
            else:
                why = result.status or "gpg failed"
            raise ConfigError(f"cannot decrypt: {why}", path, field)
        return str(result)


class LazyDecryptor:
    """What load_config calls for each encrypted value: gpg starts only if one is met, and
    `close()` (load_config calls it once every value is read) stops what gpg started."""

    def __init__(self, settings: EncryptionSettings, config_path: str) -> None:
        self.settings = settings
        self.config_path = config_path
        self._gpg: Optional[Gpg] = None

    def __call__(self, ciphertext: str, path: str, field: str) -> str:
        if self._gpg is None:
            self._gpg = Gpg(self.settings, self.config_path)
        return self._gpg.decrypt(ciphertext, path, field)

    def close(self) -> None:
        if self._gpg is not None:
            self._gpg.close()


def decryptor(settings: EncryptionSettings, config_path: str) -> LazyDecryptor:
    return LazyDecryptor(settings, config_path)


def _companion(gpg_binary: str, name: str) -> Optional[str]:
    """gpgconf or gpg-connect-agent of the same GnuPG installation as `gpg_binary`."""
    beside = os.path.join(os.path.dirname(gpg_binary), name)
    return beside if os.path.isfile(beside) else shutil.which(name)


def _listening(path: str) -> bool:
    """Whether a daemon accepts connections on this Unix socket."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


# --- rewriting files in place --------------------------------------------------------------

@dataclass
class Spot:
    """One secret value in a file: where it is in the text, and what it is."""

    field: str
    start: int
    end: int
    value: str
    indent: int

    @property
    def encrypted(self) -> bool:
        return self.value.lstrip().startswith(ENCRYPTED_MARKER)


def secret_spots(path: str, text: str) -> List[Spot]:
    """Secret scalars of a labelled-block file (`label: {field: value}`), by text position."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", path) from None
    spots: List[Spot] = []
    if not isinstance(root, yaml.MappingNode):
        return spots
    secret = NOTIFICATION_SECRETS if os.path.basename(path) == NOTIFICATIONS_FILE \
        else SECRET_FIELDS
    for label_node, block in root.value:
        if not isinstance(block, yaml.MappingNode):
            continue
        for key_node, value_node in block.value:
            if key_node.value in secret and isinstance(value_node, yaml.ScalarNode) \
                    and value_node.value != "":
                spots.append(Spot(f"{label_node.value}.{key_node.value}",
                                  value_node.start_mark.index, value_node.end_mark.index,
                                  value_node.value, key_node.start_mark.column))
    return spots


def _block(ciphertext: str, indent: int) -> str:
    pad = " " * (indent + 2)
    lines = [pad + line if line else "" for line in ciphertext.strip().splitlines()]
    return "|\n" + "\n".join(lines)


def rewrite(path: str, transform: Callable[[Spot], Optional[str]]) -> Tuple[str, List[str]]:
    """New text of `path` with each secret replaced by `transform(spot)` (None: keep); returns
    (text, fields changed). Nothing is written here."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    # Transform in file order (so an error names the first field), splice from the end.
    replacements = [(spot, transform(spot)) for spot in secret_spots(path, text)]
    changed = []
    for spot, replacement in reversed(replacements):
        if replacement is None:
            continue
        original = text[spot.start:spot.end]
        # A block scalar's span ends after its final line break; keep one there.
        tail = "\n" if original.endswith("\n") else ""
        text = text[:spot.start] + replacement + tail + text[spot.end:]
        changed.append(spot.field)
    return text, sorted(changed)


def write_like(path: str, text: str) -> None:
    """Atomically replace `path`, keeping its mode and owner."""
    info = os.stat(path)
    atomic_write(path, text, stat.S_IMODE(info.st_mode))
    try:
        os.chown(path, info.st_uid, info.st_gid)
    except OSError:
        pass


def encrypt_files(gpg: Gpg, paths: List[str]) -> Dict[str, List[str]]:
    """Encrypt every plaintext secret; all files are prepared before any is written."""
    return _apply(paths, "encrypt", lambda s, p: None if s.encrypted else
                  _block(gpg.encrypt(s.value, p, s.field), s.indent))


def decrypt_files(gpg: Gpg, paths: List[str]) -> Dict[str, List[str]]:
    return _apply(paths, "decrypt", lambda s, p: json.dumps(gpg.decrypt(
        s.value, p, s.field)) if s.encrypted else None)


def _at(transform: Callable[[Spot, str], Optional[str]], path: str, spot: Spot) -> Optional[str]:
    return transform(spot, path)


def _apply(paths: List[str], verb: str,
           transform: Callable[[Spot, str], Optional[str]]) -> Dict[str, List[str]]:
    prepared: Dict[str, Tuple[str, List[str]]] = {}
    for path in paths:
        read_yaml(path)  # a clear error for a missing or malformed file
        text, changed = rewrite(path, functools.partial(_at, transform, path))
        if changed:
            # The new text must still read as YAML with the same values elsewhere.
            try:
                yaml.safe_load(text)
            except yaml.YAMLError:
                raise ConfigError("the value cannot be rewritten in place inside a flow-style "
                                  "mapping ({...}); write that mapping in block style, one "
                                  "'key: value' per line", path, changed[0]) from None
        prepared[path] = (text, changed)
    untouched = [p for p, (_, changed) in prepared.items() if not changed]
    if len(untouched) == len(paths):
        state = "encrypted" if verb == "encrypt" else "plain text"
        spots = secret_spots(untouched[0], prepared[untouched[0]][0])
        field = spots[0].field if spots else None
        raise ConfigError(f"nothing to {verb}: every secret is already {state}"
                          if spots else f"nothing to {verb}: no secret fields", untouched[0],
                          field)
    for path, (text, changed) in prepared.items():
        if changed:
            write_like(path, text)
            log.debug("%s: %sed %s", path, verb, ", ".join(changed))  # the CLI says it
    return {p: changed for p, (_, changed) in prepared.items()}
