"""Two emulated firewalls as an active/passive HA pair (panorama-ha-bindings.md §3, §7).

* **State.** `show high-availability state` answers in the firewall form of §3.1 (the
  `<group>` wrapper): each peer's `local-info/state` (`active`, `passive`), the other's under
  `peer-info`, and `running-sync` / `running-sync-enabled`.
* **Sync.** A commit on either peer starts a sync of its running configuration to the
  other: `running-sync` reads `synchronization in progress` for `sync_duration`
  seconds, then `synchronized`, and the passive peer's running (and candidate) configuration
  is the active one's, except `deviceconfig/system`, which does not sync (§3.3: the management
  interface's SSL/TLS profile is chosen on each peer). `request high-availability
  sync-to-remote running-config` syncs again, answering with the 7.1+ "queued" line.
* **Faults.** `sync_enabled` false: config sync is off (`running-sync-enabled no`), nothing
  syncs; `sync_fail`: syncs end `not synchronized` (a sync-to-remote too) until it is
  switched off; `commit_sync_fail`: the next N commits on the active peer fail with "Failed to
  synchronize running configuration with HA peer" (their change is running locally, the sync
  did not happen).
* **The passive peer** refuses configuration changes, imports and `request certificate
  generate` with code 15 (Operation denied), except under `deviceconfig/system`; it commits.
* **Failover** (`failover()`, or the lab action `failover`) swaps the states.

Both peers share one master key, as an HA pair must for its synced private keys (§3.3). The
texts of the passive refusal and of the failed sync in `running-sync` are the lab's choices
(the reference captures only the state words).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from .panos_config import ConfigError

if TYPE_CHECKING:  # the firewall module imports this one
    from .panos import PanosService

SYSTEM = "devices/entry/deviceconfig/system"
REFUSAL = "Operation denied: this firewall is the passive peer of an HA pair; make " \
          "configuration changes on the active peer"


@dataclass
class HaSettings:
    """Knobs of one emulated pair (`--set ha.NAME=VALUE`)."""

    sync_duration: float = 0.3  # seconds a sync stays "in progress"
    sync_enabled: bool = True  # running-sync-enabled: config sync on
    sync_fail: bool = False  # syncs end "not synchronized"
    commit_sync_fail: int = 0  # the next N commits fail to synchronize
    passive_refuses: bool = True  # the passive peer refuses changes (code 15)


class HaLink:
    """The pair: which peer is active, and the state of the running-config sync."""

    def __init__(self, first: "PanosService", second: "PanosService",
                 settings: Optional[HaSettings] = None) -> None:
        self.peers = (first, second)
        self.settings = settings or HaSettings()
        self.state: Dict[str, str] = {first.serial: "active", second.serial: "passive"}
        self.sync = "synchronized"
        self._sync_done: Optional[float] = None  # when the sync in progress ends
        self._source: Optional["PanosService"] = None
        second.master = first.master
        first.ha = second.ha = self

    def peer_of(self, service: "PanosService") -> "PanosService":
        return self.peers[1] if service is self.peers[0] else self.peers[0]

    def active(self) -> "PanosService":
        return next(p for p in self.peers if self.state[p.serial] == "active")

    def failover(self) -> str:
        for peer in self.peers:
            self.state[peer.serial] = "passive" if self.state[peer.serial] == "active" \
                else "active"
        return f"{self.active().hostname} is now active"

    # -- what the API says ---------------------------------------------------------------

    def state_xml(self, service: "PanosService") -> str:
        self.advance()
        peer = self.peer_of(service)
        return ("<enabled>yes</enabled><group><mode>Active-Passive</mode>"
                f"<local-info><state>{self.state[service.serial]}</state><priority>100"
                "</priority><preemptive>no</preemptive><state-sync>Complete</state-sync>"
                f"<mgmt-ip>127.0.0.1/32</mgmt-ip><serial-num>{service.serial}</serial-num>"
                f"</local-info><peer-info><state>{self.state[peer.serial]}</state>"
                "<conn-status>up</conn-status><mgmt-ip>127.0.0.1/32</mgmt-ip>"
                f"<serial-num>{peer.serial}</serial-num></peer-info>"
                f"<running-sync>{self.sync}</running-sync>"
                f"<running-sync-enabled>{'yes' if self.settings.sync_enabled else 'no'}"
                "</running-sync-enabled></group>")

    def refusal(self, service: "PanosService", kind: Optional[str], action: Optional[str],
                xpath: Optional[str], words: List[str]) -> Optional[ConfigError]:
        """Code 15 for a change on the passive peer (module docstring)."""
        if self.state[service.serial] != "passive" or not self.settings.passive_refuses:
            return None
        changes = (kind == "config" and action in ("set", "edit", "delete", "rename")
                   and "/deviceconfig/system" not in (xpath or "")) or kind == "import" or \
            (kind == "op" and words[:3] == ["request", "certificate", "generate"])
        return ConfigError(15, REFUSAL) if changes else None

    # -- sync ------------------------------------------------------------------------------

    def commit_fails_sync(self, service: "PanosService") -> bool:
        """Whether this commit (on the active peer) is to fail to synchronize."""
        if self.state[service.serial] != "active" or self.settings.commit_sync_fail <= 0:
            return False
        self.settings.commit_sync_fail -= 1
        self.sync = "not synchronized"
        return True

    def committed(self, service: "PanosService") -> None:
        """A commit on either peer made its running configuration new: sync it to the other
        (§7: changes on either unit sync; §3.2 advises the active one)."""
        if self.settings.sync_enabled:
            self.start_sync(service)

    def start_sync(self, service: "PanosService") -> None:
        self.sync = "synchronization in progress"
        self._source = service
        self._sync_done = time.monotonic() + self.settings.sync_duration

    def advance(self) -> None:
        if self._sync_done is None or time.monotonic() < self._sync_done:
            return
        source, self._sync_done = self._source, None
        if self.settings.sync_fail or source is None:
            self.sync = "not synchronized"
            return
        _copy_running(source, self.peer_of(source))
        self.sync = "synchronized"


def _copy_running(source: "PanosService", target: "PanosService") -> None:
    """The target's running configuration becomes the source's, but for what does not sync."""
    with source.store.lock:
        tree = copy.deepcopy(source.store.running)
    with target.store.lock:
        own = [copy.deepcopy(e) for e in target.store.running.findall(SYSTEM)]
    for parent in tree.findall("devices/entry/deviceconfig"):
        for system in parent.findall("system"):
            parent.remove(system)
        for element in own:
            parent.append(element)
    target.store.install(tree, [])


def pair_up(first: "PanosService", second: "PanosService",
            settings: Optional[HaSettings] = None) -> HaLink:
    """Make two firewalls an HA pair, `first` active; the second's configuration becomes the
    first's (as after the initial sync), its own system settings kept."""
    link = HaLink(first, second, settings)
    _copy_running(first, second)
    return link


__all__: Tuple[str, ...] = ("HaLink", "HaSettings", "pair_up", "REFUSAL")
