"""SSH host keys from an instance's console, where clouds that do not describe them show them.

cloud-init prints the instance's public host keys on the serial console at first boot, between
``-----BEGIN SSH HOST KEY KEYS-----`` and ``-----END SSH HOST KEY KEYS-----``; Nova
(``os-getConsoleOutput``) and EC2 (``GetConsoleOutput``) hand that console back. Only the cloud
(or the instance's own boot) writes there, so a key read from it can be pinned before the first
connection. Consoles are noisy (kernel lines can land inside the block, a console may carry more
than one boot): only lines that are a whole OpenSSH public key are taken, from the last complete
block.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct

BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
END = "-----END SSH HOST KEY KEYS-----"
# "<type> <blob> [comment]", possibly after a console prefix (a timestamp, "cloud-init[42]: ").
KEY_LINE = re.compile(
    r"(?:^|\s)(?P<kind>ssh-ed25519|ssh-rsa|ssh-dss|ecdsa-sha2-nistp(?:256|384|521))"
    r"\s+(?P<blob>[A-Za-z0-9+/]+={0,2})(?:\s|$)"
)


def _well_formed(kind: str, blob: str) -> bool:
    """Whether the blob is base64 of an SSH public key naming ``kind`` first, as every one does."""
    try:
        data = base64.b64decode(blob, validate=True)
        (size,) = struct.unpack(">I", data[:4])
    except (binascii.Error, ValueError, struct.error):
        return False
    return data[4 : 4 + size] == kind.encode()


def host_keys_from_console(text: str) -> list[str]:
    """The public host keys (``"<type> <blob>"``, comments dropped) of the console's last key block.

    Empty when there is no complete block with at least one key line: a console still booting, a
    cloud that hides it, or a fake text.
    """
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        marker = line[line.find("-----") :] if "-----" in line else line
        if marker == BEGIN:
            current = []
        elif marker == END:
            if current:
                blocks.append(current)
            current = None
        elif current is not None:
            found = KEY_LINE.search(line)
            if found and _well_formed(found["kind"], found["blob"]):
                current.append(f"{found['kind']} {found['blob']}")
    return blocks[-1] if blocks else []
