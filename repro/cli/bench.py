"""`paperlab bench`: the performance tables behind the README's benchmark sections."""

from __future__ import annotations

import click

from repro.cli.common import (
    DEVICE,
    State,
    complete_slugs,
    console,
    emit_json,
    pass_state,
    progress_bar,
)


@click.group()
def bench() -> None:
    """Performance tables (attention, KV-cache and speculative decoding, selective scan, CLI)."""


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated integers, got '{text}'", param_hint=option
        ) from None
    if any(v <= 0 for v in values):
        raise click.BadParameter("values must be positive", param_hint=option)
    return values


@bench.command("attention")
@click.option(
    "--n",
    "ns_text",
    default="1024,2048,4096,8192",
    show_default=True,
    help="Sequence lengths (comma-separated).",
)
@click.option("--no-backward", is_flag=True, help="Forward only.")
@click.option(
    "--device", default="cpu", show_default=True, type=DEVICE, help="cpu, cuda, cuda:N or mps."
)
@click.option(
    "--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True
)
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(1))
@click.option(
    "--memory",
    "memory_text",
    default="",
    help="Also measure peak extra memory of one forward at these N (fresh processes).",
)
@click.option("--json", "as_json", is_flag=True, help="Plain JSON on stdout.")
def bench_attention_cmd(ns_text, no_backward, device, dtype, repeats, memory_text, as_json):
    """FlashAttention (tiled PyTorch on CPU, Triton on CUDA) vs SDPA, and the flash-attn package
    where it runs: time, GFLOP/s, % of peak."""
    import torch

    from repro.bench.attention import (
        IMPLS,
        bench_attention,
        flash_attn_package,
        measure_peak_memory,
    )
    from repro.lab.runner import resolve_device

    ns = _int_list(ns_text, "--n")
    memory_ns = _int_list(memory_text, "--memory") if memory_text else ()
    device = resolve_device(device)
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    package = flash_attn_package(device, torch_dtype)[1]
    total = len(ns) * 2 * (1 if no_backward else 2)
    with progress_bar(not as_json) as progress:
        rows = bench_attention(
            ns,
            backward=not no_backward,
            device=device,
            dtype=torch_dtype,
            repeats=repeats,
            progress=lambda i, n, row: progress("attention benchmark", i, total),
        )
        memory = []
        for i, n in enumerate(memory_ns):
            for impl in IMPLS:
                if impl == "naive" and 4 * n * n * 8 > 16 * 2**30:
                    continue  # the (N, N) scores alone would not fit
                memory.append(
                    {
                        "n": n,
                        "impl": impl,
                        "extra_bytes": measure_peak_memory(n, impl, device=device),
                    }
                )
            progress("peak memory", i + 1, len(memory_ns))
    if as_json:
        emit_json({"rows": rows, "memory": memory, "flash_attn_package": package})
        return
    from rich.table import Table

    table = Table(
        title=f"attention, {device} {dtype}, B=1 H=8 D=64 — matmul peak "
        f"{rows[0]['peak_gflops']:.0f} GFLOP/s",
        title_justify="left",
    )
    timed_package = all("flash_attn_ms" in r for r in rows)
    columns = ["N", "causal", "pass", "flash ms", "SDPA ms", "flash/SDPA", "flash GFLOP/s"]
    columns += ["flash % peak", "SDPA % peak"]
    columns += ["flash-attn ms", "flash-attn max |Δ| vs SDPA"] if timed_package else []
    for col in columns:
        table.add_column(col, justify="right")
    for r in rows:
        cells = [
            str(r["n"]),
            "yes" if r["causal"] else "no",
            r["pass"],
            f"{r['flash_ms']:.1f}",
            f"{r['sdpa_ms']:.1f}",
            f"{r['ratio']:.2f}",
            f"{r['flash_gflops']:.0f}",
            _percent_of_peak(r["flash_frac_peak"]),
            _percent_of_peak(r["sdpa_frac_peak"]),
        ]
        if timed_package:
            cells += [f"{r['flash_attn_ms']:.1f}", f"{r['flash_attn_max_abs_diff_vs_sdpa']:.1e}"]
        table.add_row(*cells)
    console().print(table)
    if not timed_package:
        click.echo(f"flash-attn package: not timed: {package}")
    if any(max(r["flash_frac_peak"], r["sdpa_frac_peak"]) > 1 for r in rows):
        click.echo(
            "* above 100% of the matmul peak: the peak was measured while the machine was busy, "
            "so every % of peak in this table is unreliable; rerun on an idle machine.",
            err=True,
        )
    if memory:
        mem = Table(title="peak extra memory of one forward", title_justify="left")
        for col in ("N", "impl", "extra MB", "(N, N) scores MB"):
            mem.add_column(col, justify="right")
        for m in memory:
            scores = 8 * m["n"] ** 2 * 4 / 2**20  # H = 8 fp32 score matrices
            mem.add_row(str(m["n"]), m["impl"], f"{m['extra_bytes'] / 2**20:.0f}", f"{scores:.0f}")
        console().print(mem)


def _percent_of_peak(fraction: float) -> str:
    """A share of the calibrated peak; above 100% the calibration itself was disturbed."""
    return f"{100 * fraction:.0f}%" + ("*" if fraction > 1 else "")


@bench.command("decode")
@click.option(
    "--new-tokens",
    default=1024,
    show_default=True,
    type=click.IntRange(129),
    help="Tokens to decode; at least 129, because the table compares the first 64 decode "
    "steps with the last 64 and they must not overlap.",
)
@click.option("--prompt-len", default=16, show_default=True, type=click.IntRange(1))
@click.option(
    "--device", default="cpu", show_default=True, type=DEVICE, help="cpu, cuda, cuda:N or mps."
)
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Plain JSON on stdout.")
def bench_decode_cmd(new_tokens, prompt_len, device, repeats, as_json):
    """KV-cached decoding vs recomputing the prefix (tiny GPT: 4 layers, d 256, 4 heads)."""
    from repro.bench.decode import bench_decode
    from repro.lab.runner import resolve_device

    device = resolve_device(device)
    with progress_bar(not as_json) as progress:
        progress("decode benchmark", 0, 1)
        out = bench_decode(new_tokens, prompt_len, device=device, repeats=repeats)
        progress("decode benchmark", 1, 1)
    if as_json:
        emit_json(out)
        return
    from rich.table import Table

    clock = "cpu" if device == "cpu" else "wall"
    table = Table(
        title=f"greedy decoding of {new_tokens} tokens after a {prompt_len}-token "
        f"prompt, {device} ({clock} time)",
        title_justify="left",
    )
    for col in ("", "total s", "ms/token first 64", "ms/token last 64", "last/first"):
        table.add_column(col, justify="right")
    for name in ("cached", "recompute"):
        table.add_row(
            name,
            f"{out[f'{name}_s_{clock}']:.2f}",
            f"{out[f'{name}_first_ms_{clock}']:.2f}",
            f"{out[f'{name}_last_ms_{clock}']:.2f}",
            f"{out[f'{name}_last_over_first_{clock}']:.2f}",
        )
    console().print(table)
    click.echo(f"speed-up {out[f'speedup_{clock}']:.1f}x; identical tokens: {out['tokens_match']}")


@bench.command("speculative")
@click.option("--new-tokens", default=256, show_default=True, type=click.IntRange(2))
@click.option(
    "--gamma",
    "gammas_text",
    default="1,2,4,8",
    show_default=True,
    help="Draft tokens per step (comma-separated).",
)
@click.option("--prompt-len", default=16, show_default=True, type=click.IntRange(1))
@click.option(
    "--draft-layers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 4),
    help="The draft is the target's first N blocks (early exit).",
)
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Plain JSON on stdout.")
def bench_speculative_cmd(new_tokens, gammas_text, prompt_len, draft_layers, device, as_json):
    """Speculative vs plain cached sampling (tiny GPT): target calls and time per token."""
    from repro.bench.speculative import bench_speculative
    from repro.lab.runner import resolve_device

    device = resolve_device(device)
    gammas = _int_list(gammas_text, "--gamma")
    with progress_bar(not as_json) as progress:
        progress("speculative benchmark", 0, 1)
        out = bench_speculative(new_tokens, gammas, prompt_len, draft_layers, device=device)
        progress("speculative benchmark", 1, 1)
    if as_json:
        emit_json(out)
        return
    from rich.table import Table

    table = Table(
        title=f"sampling {new_tokens} tokens (T = 1), target {out['target_layers']} layers, "
        f"draft its first {draft_layers}, {device} ({out['clock']} time)",
        title_justify="left",
    )
    for col in ("", "γ", "α", "tokens/call", "Eq. 1", "target calls/token", "ms/token", "speed-up"):
        table.add_column(col, justify="right")
    for r in out["rows"]:
        spec = r["method"] == "speculative"
        table.add_row(
            r["method"],
            str(r["gamma"]) if spec else "",
            f"{r['alpha']:.2f}" if spec else "",
            f"{r['tokens_per_call']:.2f}" if spec else "1",
            f"{r['eq1_tokens_per_call']:.2f}" if spec else "",
            f"{r['target_calls_per_token']:.3f}",
            f"{r['ms_per_token']:.2f}",
            f"{r['speedup']:.2f}",
        )
    console().print(table)


WIDTH_SCANS = ("scan_loop", "scan_chunked")  # timed at Mamba's width, d_model 256


@bench.command("scan")
@click.option(
    "--l",
    "ls_text",
    default="512,1024,2048,4096,8192",
    show_default=True,
    help="Sequence lengths (comma-separated) of the scan-vs-attention table.",
)
@click.option(
    "--width-l",
    "width_ls_text",
    default="256,1024,2048",
    show_default=True,
    help="Sequence lengths of the tables at Mamba's width (d_model 256) and against HF.",
)
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1))
@click.option("--memory", is_flag=True, help="Also measure peak extra memory (fresh processes).")
@click.option("--decode-tokens", default=512, show_default=True, type=click.IntRange(129))
@click.option(
    "--hf/--no-hf",
    default=True,
    show_default=True,
    help="Time Hugging Face's Mamba beside ours (needs the [conformance] extra).",
)
@click.option("--json", "as_json", is_flag=True, help="Plain JSON on stdout.")
def bench_scan_cmd(ls_text, width_ls_text, repeats, memory, decode_tokens, hf, as_json):
    """Selective scans (loop, parallel, chunked) vs attention over L; the scans at Mamba's
    width and, weights copied, against Hugging Face's Mamba; recurrent decoding."""
    import importlib.util

    from repro.bench.scan import IMPLS, bench_decode_recurrent, bench_scan, peak_memory

    lengths = _int_list(ls_text, "--l")
    width_lengths = _int_list(width_ls_text, "--width-l")
    hf_missing = hf and importlib.util.find_spec("transformers") is None
    with progress_bar(not as_json) as progress:
        out = bench_scan(
            lengths, repeats=repeats, progress=lambda i, n: progress("scan benchmark", i, n)
        )
        out["width"] = bench_scan(
            width_lengths,
            impls=WIDTH_SCANS,
            D=2 * 256,
            repeats=repeats,
            progress=lambda i, n: progress("scans at Mamba's width", i, n),
        )
        if hf and not hf_missing:
            from repro.bench.mamba_hf import bench_vs_hf

            out["hf"] = bench_vs_hf(
                width_lengths,
                repeats=repeats,
                progress=lambda i, n: progress("Mamba vs Hugging Face", i, n),
            )
        if memory:
            out["memory"] = [
                {"L": L, "impl": impl, "extra_bytes": peak_memory(impl, L)}
                for L in lengths
                for impl in IMPLS
            ]
        progress("decode benchmark", 0, 1)
        out["decode"] = bench_decode_recurrent(decode_tokens)
        progress("decode benchmark", 1, 1)
    if as_json:
        emit_json(out)
        return
    from rich.table import Table

    table = Table(
        title=f"one layer's sequence mixing, CPU time, 1 thread, fp32, B=1: scan D={out['D']} "
        f"N={out['N']}, "
        f"causal attention H=1 Dh={out['Dh']}",
        title_justify="left",
    )
    table.add_column("L", justify="right")
    for impl in IMPLS:
        table.add_column(f"{impl} ms", justify="right")
    table.add_column("loop / chunked", justify="right")
    for L in lengths:
        ms = {r["impl"]: r["ms"] for r in out["rows"] if r["L"] == L}
        table.add_row(
            str(L),
            *(f"{ms[impl]:.1f}" for impl in IMPLS),
            f"{ms['scan_loop'] / ms['scan_chunked']:.2f}×",
        )
    if len(lengths) > 1:
        table.add_row("exponent", *(f"{out['exponents'][impl]:.2f}" for impl in IMPLS), "")
    console().print(table)
    console().print(_width_table(out["width"]))
    if "hf" in out:
        console().print(_hf_table(out["hf"]))
    elif hf_missing:
        console().print(
            "Hugging Face's Mamba not timed: transformers is missing "
            "(pip install -e '.[conformance]')"
        )
    if memory:
        mem = Table(title="peak extra memory of one forward (MB)", title_justify="left")
        mem.add_column("L", justify="right")
        for impl in IMPLS:
            mem.add_column(impl, justify="right")
        for L in lengths:
            b = {m["impl"]: m["extra_bytes"] for m in out["memory"] if m["L"] == L}
            mem.add_row(str(L), *(f"{b[impl] / 2**20:.0f}" for impl in IMPLS))
        console().print(mem)
    d = out["decode"]
    dec = Table(
        title=f"greedy decoding, {d['new_tokens']} tokens (cpu ms/token)", title_justify="left"
    )
    for col in ("", "params", "first 64", "last 64", "state/cache bytes at end"):
        dec.add_column(col, justify="right")
    dec.add_row(
        "Mamba step",
        f"{d['mamba_params']:,}",
        f"{d['mamba_first_ms']:.2f}",
        f"{d['mamba_last_ms']:.2f}",
        f"{d['mamba_state_bytes']:,}",
    )
    dec.add_row(
        "GPT KV cache",
        f"{d['gpt_params']:,}",
        f"{d['gpt_first_ms']:.2f}",
        f"{d['gpt_last_ms']:.2f}",
        f"{d['gpt_kv_bytes_at_end']:,}",
    )
    console().print(dec)


def _width_table(width: dict):
    from rich.table import Table

    table = Table(
        title=f"the selective scan alone at Mamba's width (d_model 256): D={width['D']} "
        f"N={width['N']}, CPU time, 1 thread, fp32, B=1",
        title_justify="left",
    )
    for col in ("L", "loop ms", "chunked ms", "loop / chunked"):
        table.add_column(col, justify="right")
    for L in sorted({r["L"] for r in width["rows"]}):
        ms = {r["impl"]: r["ms"] for r in width["rows"] if r["L"] == L}
        loop, chunked = ms["scan_loop"], ms["scan_chunked"]
        table.add_row(str(L), f"{loop:.1f}", f"{chunked:.1f}", f"{loop / chunked:.2f}×")
    return table


def _hf_table(hf: dict):
    from rich.table import Table

    table = Table(
        title=f"Mamba forward, d_model {hf['d_model']}, {hf['n_layers']} layers, weights copied "
        "to Hugging Face's MambaForCausalLM (its pure-PyTorch path): CPU time, 1 thread, fp32, "
        "B=1",
        title_justify="left",
    )
    for col in (
        "L", "HF ms", "loop ms", "chunked ms", "HF / chunked", "loop / chunked",
        "max |Δlogit| loop", "max |Δlogit| chunked",
    ):  # fmt: skip
        table.add_column(col, justify="right")
    for r in hf["rows"]:
        table.add_row(
            str(r["L"]),
            f"{r['hf_ms']:.0f}",
            f"{r['loop_ms']:.0f}",
            f"{r['chunked_ms']:.0f}",
            f"{r['hf_ms'] / r['chunked_ms']:.2f}×",
            f"{r['loop_ms'] / r['chunked_ms']:.2f}×",
            f"{r['loop_max_abs_diff']:.1e}",
            f"{r['chunked_max_abs_diff']:.1e}",
        )
    return table


@bench.command("cli")
@click.option(
    "--slug", shell_complete=complete_slugs,
    help="The paper `show` shows (default: lora, else the library's first).",
)  # fmt: skip
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Plain JSON on stdout.")
@pass_state
def bench_cli_cmd(state: State, slug: str | None, repeats: int, as_json: bool) -> None:
    """`list` and `show` in fresh processes, note cache cold and warm: median wall and CPU s."""
    from repro.bench.cli import bench_cli

    slugs = state.library.slugs()
    if slug is None:
        slug = "lora" if "lora" in slugs else (slugs[0] if slugs else "")
    paper = state.library.get(slug)  # an unknown slug is one `Error:` line, before any run
    with progress_bar(not as_json) as progress:
        out = bench_cli(state.library.root, paper.slug, repeats, lambda i, n: progress("cli", i, n))
    out["papers"] = len(slugs)
    if as_json:
        emit_json(out)
        return
    from rich.table import Table

    table = Table(
        title=f"{len(slugs)} papers: fresh processes, median of {repeats}", title_justify="left"
    )
    for col in ("command", "note cache", "wall s", "CPU s", "min wall s"):
        table.add_column(col, justify="left" if col in ("command", "note cache") else "right")
    for r in out["rows"]:
        table.add_row(
            r["command"], r["note_cache"], f"{r['wall_s']:.3f}", f"{r['cpu_s']:.3f}",
            f"{r['wall_min_s']:.3f}",
        )  # fmt: skip
    console().print(table)
    click.echo(
        f"Python {out['python']}; CPU s is user + sys of the command's process, steadier than "
        "wall time on a busy machine; cold: an empty note cache for every run.",
        err=True,
    )
