"""Render the systemd unit template shipped in ``device/systemd/`` for one Pi.

Values are quoted for the setting they land in, per systemd.syntax(7) and systemd.service(5):

* command lines (``ExecStart=`` …) and list settings (``Environment=``, ``ReadWritePaths=`` …)
  are split on whitespace, so a word holding a space, a quote or a backslash is wrapped whole
  in double quotes with ``\\`` and ``"`` escaped (C-style escapes are honoured there);
* ``%`` starts a specifier in every setting, so it is doubled; in a command line's arguments
  (not its program path) ``$`` starts a variable, so it is doubled too;
* single-value settings (``WorkingDirectory=``, ``User=`` …) take the rest of the line as is.

Stdlib-only: the deploy agent imports this module from its zipapp and fills the template that
a release ships, so a unit always matches the device code it starts.
"""

from __future__ import annotations

import grp
import pkgutil
import pwd
import re
import sys
from collections.abc import Sequence
from typing import Optional

TEMPLATE = "systemd/edgekit-device.service"  # package data of ``device`` (read with pkgutil: works from a zipapp too)
# Settings whose value is a command line, and settings whose value is a whitespace-separated list.
EXEC_KEYS = ("ExecStart", "ExecStartPre", "ExecStartPost", "ExecCondition", "ExecReload", "ExecStop", "ExecStopPost")
LIST_KEYS = ("Environment", "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths",
             "BindPaths", "BindReadOnlyPaths", "SupplementaryGroups")
# A word made only of these needs no quotes (no whitespace, quotes, backslashes, semicolons).
_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
_PLACEHOLDER = re.compile(r"@([A-Z_]+)@")


def primary_group(user: str) -> str:
    """The name of ``user``'s primary group (from the passwd and group databases), not a guess from the user name."""
    try:
        gid = pwd.getpwnam(user).pw_gid
    except KeyError:
        raise ValueError(f"no user {user!r} on this machine; pass an existing user for User=") from None
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)  # a gid without a group entry: systemd accepts the number


def quote_word(value: str, command_line: bool = False) -> str:
    """One word for a command line or list setting: specifiers (and in command lines ``$``) escaped, quoted if needed."""
    if any(c in value for c in "\n\r\0"):
        raise ValueError(f"a systemd setting cannot hold a newline or NUL. Got: {value!r}")
    value = value.replace("%", "%%")
    if command_line:
        value = value.replace("$", "$$")
    if _PLAIN.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _single(value: str) -> str:
    if any(c in value for c in "\n\r\0"):
        raise ValueError(f"a systemd setting cannot hold a newline or NUL. Got: {value!r}")
    return value.replace("%", "%%")


def fill(template: str, values: dict[str, str], lists: Optional[dict[str, Sequence[str]]] = None) -> str:
    """Fill ``@NAME@`` placeholders, quoting each value for the setting its line belongs to.

    ``lists`` names placeholders that stand alone as a word and expand to several words
    (or none) in command lines and list settings.
    """
    lists = lists or {}
    out = []
    for line in template.splitlines():
        key, eq, rest = line.partition("=")
        key = key.strip()
        if not eq or line.lstrip().startswith(("#", ";", "[")) or "@" not in rest:
            out.append(_PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), line))
            continue
        if key in EXEC_KEYS or key in LIST_KEYS:
            words: list[str] = []
            for word in rest.split():
                # $VAR is expanded in a command line's arguments, not in the program's path (its first word).
                dollars = key in EXEC_KEYS and bool(words)
                name = word[1:-1] if _PLACEHOLDER.fullmatch(word) else None
                if name is not None and name in lists:
                    words += [quote_word(w, key in EXEC_KEYS) for w in lists[name]]
                    continue
                filled = _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), word)
                if filled == word:
                    words.append(word)  # the template's own text, written as systemd syntax already
                else:
                    words.append(quote_word(filled, dollars))
            out.append(f"{key}={' '.join(words)}")
        else:
            out.append(f"{key}={_PLACEHOLDER.sub(lambda m: _single(values.get(m.group(1), m.group(0))), rest)}")
    text = "\n".join(out) + "\n"
    left = sorted(set(_PLACEHOLDER.findall(text)))
    if left:
        raise ValueError(f"unfilled placeholders in the unit template: {', '.join('@' + n + '@' for n in left)}")
    return text


def template_text() -> str:
    """The unit template shipped beside this module."""
    data = pkgutil.get_data(__package__ or "device", TEMPLATE)
    if data is None:
        raise ValueError(f"the unit template {TEMPLATE} is missing from the device package; reinstall edgekit")
    return data.decode()


def daemon_args(manifest: str, variant: str, source: str, port: int, results: str,
                extra_args: Sequence[str] = ()) -> list[str]:
    """The arguments after the interpreter that run the daemon (the unit's ExecStart and the process supervisor use them)."""
    return ["-m", "device", "run", "--manifest", manifest, "--variant", variant, "--source", source,
            "--port", str(int(port)), "--results", results, *extra_args]


def render_unit(
    manifest: str,
    user: str = "pi",
    workdir: str = "/opt/edgekit",
    state_dir: str = "/var/lib/edgekit",
    python: Optional[str] = None,
    variant: str = "int8",
    source: str = "picamera2",
    port: int = 8321,
    *,
    group: Optional[str] = None,
    pythonpath: str = "",
    extra_args: Sequence[str] = (),
    writable: Sequence[str] = (),
    template: Optional[str] = None,
) -> str:
    """The unit text with every @PLACEHOLDER@ filled and quoted; raises ValueError if one is left.

    ``group`` defaults to ``user``'s primary group as this machine's databases name it;
    ``template`` defaults to the template beside this module; ``extra_args`` follow the daemon's own;
    ``writable`` are folders the daemon writes to besides ``state_dir`` (collected and uncertain
    frames), added to ``ReadWritePaths=`` with ``-`` (ignored while missing, as systemd.exec allows).
    """
    values = {
        "PYTHON": python or sys.executable,
        "PORT": str(int(port)),
        "WORKDIR": workdir,
        "STATE_DIR": state_dir,
        "USER": user,
        "GROUP": group or primary_group(user),
        "PYTHONPATH": pythonpath,
    }
    args = daemon_args(manifest, variant, source, port, f"{state_dir.rstrip('/')}/results.jsonl", extra_args)
    return fill(template_text() if template is None else template, values,
                {"DAEMON_ARGS": args, "WRITABLE": [f"-{w}" for w in writable]})
