"""`bottleneck doctor`: what this installation can do here, for a bug report or a first look at a machine."""

from __future__ import annotations

import typer

from bottleneck.cli.common import print_json
from bottleneck.cli.options import JSON, command
from bottleneck.cli.root import app
from bottleneck.doctor import doctor as run_doctor
from bottleneck.job_settings import DOCTOR

DOCTOR_HELP = """Show what this installation can do on this machine (paste it into a bug report).

Versions of the stack, the engines usable here (and why not), CPU features that change speed or the int8 weight
type, extras installed, a browser for reports, packages in the way, and the cache folder's free space. Exits 1
when something needs fixing; each problem says how.

Examples:

  bottleneck doctor

  bottleneck doctor --json --cache-dir /data/cache
"""


def _yes(value) -> str:
    return "?" if value is None else ("yes" if value else "no")


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def _lines(r: dict) -> list[str]:
    """The report as aligned, human-readable lines."""
    b, py, eng, cpu, cache = r["bottleneck"], r["python"], r["engines"], r["cpu"], r["cache"]
    installed = [f"{d} {v}" for d, v in r["stack"].items() if v]
    missing = [d for d, v in r["stack"].items() if not v]
    tf, onnx, int8, gpu = eng["tensorflow"], eng["onnx"], eng["int8"], eng["gpu"]
    if tf["usable"]:
        tf_line = f"usable (GPUs: {', '.join(tf['gpus']) or 'none'}; CUDA build: {_yes(tf['cuda_build'])})"
    else:
        tf_line = f"not usable: {tf['reason']}"
    onnx_line = (
        f"usable (providers: {', '.join(onnx['providers'])})"
        if onnx["usable"]
        else f"not usable: {onnx['reason']}"
    )
    why = {True: " (VNNI dot products)", False: " (no VNNI: int8 runs little faster than fp32)"}.get(
        cpu["vnni"], ""
    )
    int8_line = (
        f"usable, {int8['weights']} weights{why}" if int8["usable"] else f"not usable: {int8['reason']}"
    )
    gpu_line = (
        "usable: " + ", ".join(onnx["gpu_providers"] + tf["gpus"])
        if gpu["usable"]
        else f"none: {gpu['reason']}"
    )
    extras = "; ".join(
        f"{name} ({', '.join(f'{d} {v}' for d, v in e['versions'].items())})"
        if e["installed"]
        else f"{name} (no: {e['install']})"
        for name, e in r["extras"].items()
    )
    pandas = r["pandas"]
    if pandas is None:
        pandas_line = "not installed"
    elif pandas["accelerator"]:
        pandas_line = f"{pandas['version']}, its Bottleneck accelerator is {pandas['accelerator_file']}"
    else:
        pandas_line = (
            f"{pandas['version']}, without a Bottleneck accelerator (it does not take this package for one)"
        )
    if cache["remote"]:
        cache_line = f"{cache['path']} (remote)"
    else:
        made = "" if cache["exists"] else ", not created yet"
        cache_line = f"{cache['path']} ({_gb(cache['free_bytes'])} free of {_gb(cache['total_bytes'])}{made})"
    lines = [
        f"{b['distribution']} {b['version']} (import bottleneck: {b['import_path']})",
        f"python      {py['version']} on {py['platform']} ({py['executable']})",
        f"stack       {', '.join(installed)}" + (f"; not installed: {', '.join(missing)}" if missing else ""),
        f"tensorflow  {tf_line}",
        f"onnx        {onnx_line}",
        f"int8        {int8_line}",
        f"gpu         {gpu_line}",
        f"cpu         {cpu['machine']}, {cpu['cores']} cores, AVX2 {_yes(cpu['avx2'])}, AVX-512 "
        f"{_yes(cpu['avx512'])}, VNNI {_yes(cpu['vnni'])}, BF16 {_yes(cpu['bf16'])}"
        + (f" (int8 weights forced to {cpu['int8_weights_forced']})" if cpu["int8_weights_forced"] else ""),
        f"extras      {extras}",
        f"browser     {r['browser'] or 'none (chromium or google-chrome on PATH)'}",
        f"pandas      {pandas_line}",
        f"clashes     {'; '.join(c['name'] + ' ' + c['version'] for c in r['clashes']) or 'none'}",
        f"cache       {cache_line}",
    ]
    if r["problems"]:
        lines.append(f"{len(r['problems'])} problem(s):")
        lines += [f"  - {p}" for p in r["problems"]]
    else:
        lines.append("no problems found")
    return lines


@command(app, "doctor", DOCTOR_HELP, DOCTOR, JSON)
def doctor(cache_dir: str, json_out: bool) -> None:
    report = run_doctor(cache_dir)
    if json_out:
        print_json(report)
    else:
        for line in _lines(report):
            typer.echo(line)
    if report["problems"]:
        raise typer.Exit(1)
