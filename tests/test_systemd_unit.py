"""
The systemd unit in etc/systemd: systemd's own checker finds nothing wrong
with it, its sandbox is the hardened one the README promises, and it gives a
stop more time than the gateway's default shutdown grace.
"""

import subprocess
import sys
from pathlib import Path

from mgateway.config.defaults import _DEFAULTS

UNIT = Path(__file__).resolve().parent.parent / "etc" / "systemd" / "asapp-mg.service"
INSTALLED_TWISTD = "/opt/asapp-mg/.venv/bin/twistd"


def service_section() -> dict[str, list[str]]:
    """Every key of the unit with its values, in order."""
    values: dict[str, list[str]] = {}
    # systemd allows a key several times (SystemCallFilter): collect them all.
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#") and not line.startswith("["):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_systemd_analyze_verify_finds_nothing_wrong(tmp_path):
    # verify checks that ExecStart's program exists: point it at this checkout's.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALLED_TWISTD, str(Path(sys.executable).with_name("twistd"))))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # verify reports bad keys and values as warnings, exit status 0.
    assert str(unit) not in result.stderr, result.stderr


def test_the_sandbox_is_hardened_and_the_stop_outlasts_the_grace():
    service = service_section()
    one = {key: values[-1] for key, values in service.items()}
    assert INSTALLED_TWISTD in one["ExecStart"] and "--nodaemon" in one["ExecStart"]
    for key, value in {"DynamicUser": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
                       "SystemCallFilter": "@system-service", "StateDirectory": "asapp-mg",
                       "KillSignal": "SIGTERM"}.items():
        assert one.get(key) == value, (key, one.get(key))
    assert set(one["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert int(one["TimeoutStopSec"]) > _DEFAULTS["gateway"]["shutdown_grace_seconds"]
