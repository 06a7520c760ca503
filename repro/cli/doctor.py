"""`doctor`: versions, folders and their sizes, extras, browser and fonts, and the fixes."""

from __future__ import annotations

import click

from repro.cli.common import State, console, emit_json, pass_state
from repro.lab.format import format_bytes, plural


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Plain JSON on stdout.")
@pass_state
def doctor(state: State, as_json: bool) -> None:
    """What this installation runs (versions, commit, torch build and devices), where its papers,
    runs and cache live and how big they are, and what is missing, with the command that fixes it.
    """
    from repro.lab.cache import cache_root
    from repro.lab.doctor import diagnose

    found = diagnose(state.library.root, state.runs_dir, cache_root())
    if as_json:
        emit_json(found.to_json())
        return
    from rich.text import Text

    v = found.versions
    torch = v["torch"]
    devices = ", ".join(torch.get("cuda_devices") or []) or "no CUDA device"
    if torch.get("mps"):
        devices += ", mps"
    commit = (v["commit"] or "unknown")[:12] + (
        " (with local changes)" if v["local_changes"] else ""
    )
    f = found.folders
    rows = [
        ("paperlab", f"{v['paperlab'] or 'not installed'}, commit {commit}, from {v['checkout']}"),
        ("python", f"{v['python']} ({v['python_executable']}"
                   f"{', virtual environment' if v['virtualenv'] else ''})"),
        ("torch", f"{torch['version']} ({torch.get('build')} build; {devices})"
                  if torch["version"] else "not importable"),
        ("triton", v["triton"] or "not installed"),
        ("papers", f"{f['papers']['path']}  {plural(f['papers']['papers'], 'paper')}, "
                   f"{format_bytes(f['papers']['bytes'])}"),
        ("runs", f"{f['runs']['path']}  {plural(f['runs']['runs'], 'run')}, "
                 f"{format_bytes(f['runs']['bytes'])}  (paperlab runs --prune)"),
        ("cache", f"{f['cache']['path']}  {format_bytes(f['cache']['bytes'])}"),
    ]  # fmt: skip
    for extra, info in found.extras.items():
        packages = ", ".join(f"{n} {ver or '—'}" for n, ver in info["packages"].items())
        mark = "" if info["installed"] else "missing: "
        rows.append((f"[{extra}]", f"{mark}{packages}" if packages else "—"))
    s = found.system
    none = "none" if s["fc_list"] else "unknown (no fc-list)"
    rows += [
        ("browser", s["browser"] or "none (chromium or chromium-browser)"),
        ("CJK fonts", ", ".join(s["cjk_fonts"] or []) or none),
        ("math fonts", ", ".join(s["math_fonts"] or []) or none),
    ]
    out = console()
    width = max(len(name) for name, _ in rows) + 2
    for name, value in rows:
        line = Text(f"{name:<{width}}", style="bold")
        line.append(value)
        out.print(line, soft_wrap=True)
    missing = [p for p in found.problems if p.level == "missing"]
    hints = [p for p in found.problems if p.level != "missing"]
    if not missing:
        out.print(Text("nothing missing", style="bold green"))
    for p in missing + hints:
        style = "bold red" if p.level == "missing" else "yellow"
        line = Text(f"{p.level}: ", style=style)
        line.append(p.what)
        out.print(line, soft_wrap=True)
        out.print(Text(f"  fix: {p.fix}", style="dim"), soft_wrap=True)
