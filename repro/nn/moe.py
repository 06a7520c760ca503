"""Sparse mixture of experts: a top-k router, token dispatch to SwiGLU experts, load balancing.

Fedus, Zoph, Shazeer, "Switch Transformers", https://arxiv.org/abs/2101.03961 (§2.1 top-1
routing, §2.2 Eq. 4-6 the auxiliary load-balancing loss α·N·Σ f_i·P_i);
Jiang et al., "Mixtral of Experts", https://arxiv.org/abs/2401.04088 (§2.1: G(x) =
Softmax(TopK(x·W_g)), y = Σ_i G(x)_i · SwiGLU_i(x), K = 2 of N = 8);
DeepSeek-AI, "DeepSeek-V2", https://arxiv.org/abs/2405.04434 (§2.2 Eq. 20-25: shared experts
plus fine-grained routed experts gated by the un-renormalised softmax affinity, and the
expert-level balance loss).

Glossary: B batch, T time, C model width, F expert hidden width, N routed experts, K experts per
token (top-k), S shared experts, M = B·T tokens flattened.

`MoEFeedForward.forward` is the sparse path: each expert runs only on the tokens routed to it.
`moe_ref` is its dense reference: every expert on every token, weighted by a (M, N) gate matrix
that is zero outside each token's top-k.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from repro.nn.ffn import GLUFeedForward


@dataclass
class Routing:
    """One router call over M tokens: what the balance losses and load statistics read."""

    logits: Tensor  # (M, N) x·W_g
    probs: Tensor  # (M, N) softmax over all N experts (the s_{i,t} of DeepSeek Eq. 22)
    experts: Tensor  # (M, K) chosen expert ids, best first
    gates: Tensor  # (M, K) weights of the chosen experts


class TopKRouter(nn.Module):
    """x·W_g -> the top-k experts per token and their gates.

    normalize=True is Mixtral's Softmax(TopK(x·W_g)): the softmax over the k kept logits (equal to
    the full softmax renormalised over the top k). normalize=False is DeepSeek-V2's Eq. 21: the
    full softmax's values at the top k, which do not sum to 1.
    """

    def __init__(
        self, d_model: int, n_experts: int, top_k: int, normalize: bool = True, bias: bool = False
    ) -> None:
        super().__init__()
        assert 1 <= top_k <= n_experts, f"top_k={top_k} must lie in 1..n_experts={n_experts}"
        self.n_experts, self.top_k, self.normalize = n_experts, top_k, normalize
        self.gate = nn.Linear(d_model, n_experts, bias=bias)  # W_g (Mixtral), centroids e_i (DSV2)

    def forward(self, x: Tensor) -> Routing:
        """x (M, C) -> Routing."""
        logits = self.gate(x)  # (M, N)
        cd = torch.promote_types(logits.dtype, torch.float32)  # softmax in >= fp32
        probs = logits.to(cd).softmax(-1).type_as(logits)  # (M, N)
        top_logits, experts = logits.topk(self.top_k, dim=-1)  # (M, K) each
        if self.normalize:
            gates = top_logits.to(cd).softmax(-1).type_as(logits)  # Softmax(TopK(x·W_g))
        else:
            gates = probs.gather(-1, experts)  # s_{i,t} for i in TopK
        return Routing(logits, probs, experts, gates)


class MoEFeedForward(nn.Module):
    """y = Σ_{shared} FFN_s(x) + Σ_{i ∈ TopK} g_i · FFN_i(x), experts are SwiGLU FFNs.

    n_shared = 0 and normalize=True is Mixtral's layer; n_shared > 0 and normalize=False is
    DeepSeekMoE (Eq. 20-22; the residual u_t is added by the block). `last_routing` keeps the
    last forward's Routing for the balance loss and load statistics.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        n_experts: int,
        top_k: int,
        normalize: bool = True,
        n_shared: int = 0,
        router_bias: bool = False,
    ) -> None:
        super().__init__()
        self.router = TopKRouter(d_model, n_experts, top_k, normalize, bias=router_bias)
        self.experts = nn.ModuleList(GLUFeedForward(d_model, d_ff) for _ in range(n_experts))
        self.shared = nn.ModuleList(GLUFeedForward(d_model, d_ff) for _ in range(n_shared))
        self.last_routing: Routing | None = None

    @property
    def n_experts(self) -> int:
        return self.router.n_experts

    @property
    def top_k(self) -> int:
        return self.router.top_k

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, C) -> (B, T, C): each expert runs on its own tokens only."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # (M, C)
        routing = self.router(flat)
        self.last_routing = routing
        y = torch.zeros_like(flat)  # (M, C)
        for e, expert in enumerate(self.experts):
            token, slot = (routing.experts == e).nonzero(as_tuple=True)  # (m_e,) each
            if token.numel() == 0:
                continue
            gate = routing.gates[token, slot].unsqueeze(-1)  # (m_e, 1)
            y.index_add_(0, token, gate * expert(flat[token]))  # scatter back (m_e, C)
        for expert in self.shared:
            y = y + expert(flat)
        return y.view(shape)


def deepseek_moe(
    d_model: int, d_expert: int, n_shared: int, n_routed: int, top_k: int
) -> MoEFeedForward:
    """DeepSeekMoE (DeepSeek-V2 Eq. 20-22): `n_shared` experts on every token plus the top-k of
    `n_routed` fine-grained experts, gated by the softmax affinities without renormalisation."""
    return MoEFeedForward(d_model, d_expert, n_routed, top_k, normalize=False, n_shared=n_shared)


def dense_gates_ref(logits: Tensor, top_k: int, normalize: bool = True) -> Tensor:
    """(M, N) gate matrix from the logits, written without topk/gather: an expert is kept when
    fewer than k experts have a strictly larger logit (ties have probability 0 for real inputs)."""
    probs = torch.softmax(logits.double(), dim=-1)  # (M, N)
    rank = (logits[:, None, :] > logits[:, :, None]).sum(-1)  # (M, N): experts beating each one
    keep = rank < top_k  # (M, N)
    gates = probs * keep
    if normalize:
        gates = gates / gates.sum(-1, keepdim=True)
    return gates.to(logits.dtype)


def moe_ref(x: Tensor, moe: MoEFeedForward, normalize: bool | None = None) -> Tensor:
    """Dense reference of `MoEFeedForward`: all N experts on all tokens, masked by the gates.

    `normalize` None takes the router's setting; False/True override it (the control that drops
    Mixtral's top-k renormalisation). x (B, T, C) -> (B, T, C).
    """
    normalize = moe.router.normalize if normalize is None else normalize
    flat = x.reshape(-1, x.shape[-1])  # (M, C)
    G = dense_gates_ref(moe.router.gate(flat), moe.top_k, normalize)  # (M, N)
    outs = torch.stack([expert(flat) for expert in moe.experts], dim=1)  # (M, N, C)
    y = (G.unsqueeze(-1) * outs).sum(1)  # (M, C)
    for expert in moe.shared:
        y = y + expert(flat)
    return y.view(x.shape)


# --- load balancing ----------------------------------------------------------------------


def expert_load(routing: Routing) -> Tensor:
    """Fraction of the M·K routing slots each expert received, (N,); uniform is 1/N."""
    counts = torch.bincount(routing.experts.reshape(-1), minlength=routing.probs.shape[-1])
    return counts.to(torch.float64) / routing.experts.numel()


def switch_aux_loss(routing: Routing, alpha: float = 1.0) -> Tensor:
    """Switch Eq. 4-6: α·N·Σ_i f_i·P_i, f_i = fraction of tokens whose top-1 expert is i,
    P_i = mean router probability of i. f has no gradient; P carries it. α at uniform routing."""
    probs = routing.probs  # (M, N)
    N = probs.shape[-1]
    f = torch.bincount(routing.experts[:, 0], minlength=N).to(probs.dtype) / probs.shape[0]  # (N,)
    P = probs.mean(0)  # (N,)
    return alpha * N * (f * P).sum()


def topk_aux_loss(routing: Routing, alpha: float = 1.0) -> Tensor:
    """The top-k form used with Mixtral (Hugging Face's `load_balancing_loss_func`): f is (K, N),
    row j the fraction of tokens whose j-th choice is i, so each row sums to 1 and the value at
    uniform routing is α·K, not α."""
    probs = routing.probs  # (M, N)
    M, N = probs.shape
    one_hot = torch.nn.functional.one_hot(routing.experts, N).to(probs.dtype)  # (M, K, N)
    f = one_hot.mean(0)  # (K, N)
    return alpha * N * (f * probs.mean(0)).sum()


def deepseek_balance_loss(routing: Routing, alpha: float = 1.0) -> Tensor:
    """DeepSeek-V2 Eq. 23-25: α₁·Σ_i f_i·P_i with f_i = N/(K·T)·#{t selects i}; α₁ at uniform."""
    probs = routing.probs  # (M, N)
    M, N = probs.shape
    K = routing.experts.shape[-1]
    counts = torch.bincount(routing.experts.reshape(-1), minlength=N).to(probs.dtype)  # (N,)
    f = N / (K * M) * counts
    return alpha * (f * probs.mean(0)).sum()
