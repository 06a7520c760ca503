"""Mamba: the selective-SSM block, its recurrent step, and a Mamba language model.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
https://arxiv.org/abs/2312.00752 (§3.2 Algorithm 2, §3.4 Figure 3, §3.6 initialisation);
the released `mamba_ssm/modules/mamba_simple.py` and `models/mixer_seq_simple.py` fix what the
paper leaves open (conv width 4, dt_rank = ⌈d_model/16⌉, RMSNorm, vocabulary padding).

Glossary: B batch, L length, C model width (d_model), E expansion (2), D = E·C inner channels,
N state size (d_state), R rank of the Δ projection (dt_rank), K conv width (d_conv),
V vocabulary, NL layers.

Block (Figure 3): x, z = in_proj(u); x = SiLU(causal depthwise conv(x)); Δ, B, C from x
(Algorithm 2: Δ = softplus(dt_proj(x_proj(x)) + bias), B = Linear_N(x), C = Linear_N(x));
y = SSM(x)·SiLU(z); out_proj(y). `selective=False` is the LTI control inside the same block:
Δ = softplus(bias) per channel, B and C learned (D, N) matrices, constant over time (S4D-real in
the Mamba block: the paper's "Mamba arch + S4" row of Table 1).

Decoding state per layer: the last K−1 conv inputs (B, D, K−1) and the SSM state (B, D, N),
independent of how many tokens came before. (The official code keeps K conv inputs and rolls.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.nn.norm import RMSNorm
from repro.nn.ssm import selective_scan, selective_scan_chunked, selective_scan_ref

Scan = Literal["loop", "parallel", "chunked"]
SCANS = {"loop": selective_scan_ref, "parallel": selective_scan, "chunked": selective_scan_chunked}
State = tuple[Tensor, Tensor]  # (conv state (B, D, K−1), SSM state (B, D, N))


def _zoo(d_model: int, n_layers: int) -> dict[str, Any]:
    """The released checkpoints: GPT-NeoX vocabulary 50277 padded to a multiple of 8, tied."""
    return dict(d_model=d_model, n_layers=n_layers, vocab_size=50277, pad_vocab_size_multiple=8)


# README "Pretrained Models" of state-spaces/mamba (layers double a GPT-3 size's, §3.4)
PRESETS: dict[str, dict[str, Any]] = {
    "mamba-130m": _zoo(768, 24),
    "mamba-370m": _zoo(1024, 48),
    "mamba-790m": _zoo(1536, 48),
    "mamba-1.4b": _zoo(2048, 48),
    "mamba-2.8b": _zoo(2560, 64),
}


@dataclass
class MambaConfig:
    """Defaults are a tiny CPU model; `from_name` gives the released sizes."""

    d_model: int = 16  # C
    n_layers: int = 2
    vocab_size: int = 16
    pad_vocab_size_multiple: int = 1
    d_state: int = 16  # N
    expand: int = 2  # E
    d_conv: int = 4  # K
    dt_rank: int | None = None  # R; None -> ⌈C/16⌉
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False  # in_proj / out_proj
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    selective: bool = True  # False: the LTI control (Δ, B, C input-independent)
    scan: Scan = "loop"
    padded_vocab_size: int = field(init=False)

    def __post_init__(self) -> None:
        if self.scan not in SCANS:
            raise ValueError(f"scan must be one of {', '.join(SCANS)}, got {self.scan!r}")
        if self.dt_rank is None:
            self.dt_rank = math.ceil(self.d_model / 16)
        m = self.pad_vocab_size_multiple
        self.padded_vocab_size = -(-self.vocab_size // m) * m

    @property
    def d_inner(self) -> int:
        """D = E·C."""
        return self.expand * self.d_model

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> MambaConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown Mamba preset {name!r}; known: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


def inverse_softplus(x: Tensor) -> Tensor:
    """y with softplus(y) = x, for x > 0: x + log(1 − e^{−x})."""
    return x + torch.log(-torch.expm1(-x))


class MambaBlock(nn.Module):
    """The Mamba mixer (Figure 3): u (B, L, C) -> (B, L, C)."""

    def __init__(self, cfg: MambaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        C, D, N, R, K = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv
        self.in_proj = nn.Linear(C, 2 * D, bias=cfg.bias)
        self.conv1d = nn.Conv1d(D, D, K, groups=D, padding=K - 1, bias=cfg.conv_bias)
        # §3.6: Δ's bias is τ_Δ⁻¹ of a draw in [dt_min, dt_max] (log-uniform, as released code)
        dt = torch.exp(
            torch.rand(D) * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min)
        ).clamp(min=cfg.dt_init_floor)
        if cfg.selective:
            self.x_proj = nn.Linear(D, R + 2 * N, bias=False)  # s_Δ (rank R), s_B, s_C
            self.dt_proj = nn.Linear(R, D, bias=True)
            nn.init.uniform_(self.dt_proj.weight, -(R**-0.5), R**-0.5)
            with torch.no_grad():
                self.dt_proj.bias.copy_(inverse_softplus(dt))
        else:
            self.dt_bias = nn.Parameter(inverse_softplus(dt))  # Algorithm 1: Δ = τ_Δ(Parameter)
            self.B = nn.Parameter(torch.ones(D, N))  # (D, N), S4D's B = 1
            self.C = nn.Parameter(torch.randn(D, N) * N**-0.5)  # (D, N)
        # S4D-real (§3.6): A = −(1, 2, …, N) in every channel, stored as log(−A)
        self.A_log = nn.Parameter(
            torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(D, 1)
        )
        self.D = nn.Parameter(torch.ones(D))  # skip connection, initialised to 1
        self.out_proj = nn.Linear(D, C, bias=cfg.bias)

    def ssm_params(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Δ (B, L, D) after softplus, and B, C: (B, L, N) if selective else (D, N)."""
        if not self.cfg.selective:
            delta = F.softplus(self.dt_bias).expand_as(x)
            return delta, self.B, self.C
        R, N = self.cfg.dt_rank, self.cfg.d_state
        dt, Bt, Ct = self.x_proj(x).split([R, N, N], dim=-1)  # (B, L, R), (B, L, N), (B, L, N)
        delta = F.softplus(self.dt_proj(dt))  # Algorithm 2: τ_Δ(Parameter + s_Δ(x)), (B, L, D)
        return delta, Bt, Ct

    def forward(self, u: Tensor, return_delta: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """u (B, L, C) -> (B, L, C); with `return_delta` also Δ (B, L, D)."""
        L = u.shape[1]
        x, z = self.in_proj(u).chunk(2, dim=-1)  # (B, L, D) each
        x = self.conv1d(x.transpose(1, 2))[..., :L].transpose(1, 2)  # causal: drop K−1 tail
        x = F.silu(x)  # (B, L, D)
        delta, Bt, Ct = self.ssm_params(x)
        A = -torch.exp(self.A_log)  # (D, N)
        y, _ = SCANS[self.cfg.scan](x, delta, A, Bt, Ct, self.D, z)  # (B, L, D)
        out = self.out_proj(y)  # (B, L, C)
        return (out, delta) if return_delta else out

    def init_state(self, batch: int) -> State:
        """Zero (conv, SSM) state: (B, D, K−1) and (B, D, N)."""
        p = self.A_log
        D, N, K = self.cfg.d_inner, self.cfg.d_state, self.cfg.d_conv
        return p.new_zeros(batch, D, K - 1), p.new_zeros(batch, D, N)

    def step(self, u: Tensor, state: State) -> tuple[Tensor, State]:
        """One token: u (B, C) and the state -> (B, C) and the new state (constant size)."""
        conv_state, ssm_state = state
        x, z = self.in_proj(u).chunk(2, dim=-1)  # (B, D) each
        window = torch.cat([conv_state, x.unsqueeze(-1)], dim=-1)  # (B, D, K): oldest first
        x = (window * self.conv1d.weight.squeeze(1)).sum(-1)  # the conv's last output
        if self.conv1d.bias is not None:
            x = x + self.conv1d.bias
        x = F.silu(x)  # (B, D)
        delta, Bt, Ct = self.ssm_params(x.unsqueeze(1))  # (B, 1, D), (B, 1, N) or (D, N)
        A = -torch.exp(self.A_log)
        y, ssm_state = selective_scan_ref(
            x.unsqueeze(1), delta, A, Bt, Ct, self.D, z.unsqueeze(1), h0=ssm_state
        )  # (B, 1, D), (B, D, N)
        return self.out_proj(y[:, 0]), (window[..., 1:], ssm_state)


class ResidualBlock(nn.Module):
    """u + Mixer(Norm(u)) (§3.4: blocks interleaved with normalisation and residuals)."""

    def __init__(self, cfg: MambaConfig) -> None:
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mixer = MambaBlock(cfg)

    def forward(self, u: Tensor) -> Tensor:
        return u + self.mixer(self.norm(u))

    def step(self, u: Tensor, state: State) -> tuple[Tensor, State]:
        out, state = self.mixer.step(self.norm(u), state)
        return u + out, state


class MambaLM(nn.Module):
    """Embedding, NL residual Mamba blocks, final RMSNorm, tied LM head (mixer_seq_simple)."""

    def __init__(self, cfg: MambaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        V = cfg.padded_vocab_size
        self.embedding = nn.Embedding(V, cfg.d_model)
        self.layers = nn.ModuleList(ResidualBlock(cfg) for _ in range(cfg.n_layers))
        self.norm_f = RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, V, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embedding.weight
        nn.init.normal_(self.embedding.weight, std=0.02)
        for layer in self.layers:  # GPT-2-style 1/√NL on the residual output projection
            w = layer.mixer.out_proj.weight
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            with torch.no_grad():
                w /= math.sqrt(cfg.n_layers)

    def forward(self, idx: Tensor) -> Tensor:
        """idx (B, L) -> logits (B, L, V)."""
        x = self.embedding(idx)  # (B, L, C)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm_f(x))

    def deltas(self, idx: Tensor) -> list[Tensor]:
        """Δ of every layer on idx (B, L): a list of (B, L, D)."""
        x, out = self.embedding(idx), []
        for layer in self.layers:
            y, delta = layer.mixer(layer.norm(x), return_delta=True)
            x = x + y
            out.append(delta)
        return out

    def init_state(self, batch: int) -> list[State]:
        return [layer.mixer.init_state(batch) for layer in self.layers]

    def step(self, idx: Tensor, states: list[State]) -> tuple[Tensor, list[State]]:
        """One token per sequence: idx (B,) -> logits (B, V) and the updated states."""
        x = self.embedding(idx)  # (B, C)
        new_states = []
        for layer, state in zip(self.layers, states, strict=True):
            x, state = layer.step(x, state)
            new_states.append(state)
        return self.lm_head(self.norm_f(x)), new_states

    @torch.no_grad()
    def generate(self, prompt: Tensor, max_new_tokens: int, use_cache: bool = True) -> Tensor:
        """Greedy decoding: prompt (B, T0) -> (B, T0 + max_new_tokens).

        With `use_cache` the prompt is fed token by token through `step` and generation
        continues from the constant-size state; without it every new token re-runs the full
        forward on the whole prefix (the reference).
        """
        tokens = prompt
        if use_cache:
            states = self.init_state(prompt.shape[0])
            for t in range(prompt.shape[1]):
                logits, states = self.step(prompt[:, t], states)
        for i in range(max_new_tokens):
            if not use_cache:
                logits = self(tokens)[:, -1]  # (B, V)
            nxt = logits.argmax(-1)  # (B,)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            if use_cache and i + 1 < max_new_tokens:
                logits, states = self.step(nxt, states)
        return tokens
