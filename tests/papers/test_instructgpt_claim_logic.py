"""InstructGPT's claims compare things (PPO vs SFT, β = 0 vs β > 0, PPO-ptx vs PPO, the RM vs
labelers): fed metrics in which the comparison goes the wrong way, each must report it. The
metrics are made up here (no experiment runs); the real run is in tests/papers/test_claims.py."""

from __future__ import annotations

import math

import pytest
import torch

from repro.align.preferences import Comparisons
from repro.align.reward import all_pairs
from repro.data.instructions import InstructionWorld
from repro.lab.claims import Context
from repro.lab.library import Library

IG = Library().get("instructgpt").module()


def _ctx(metrics: dict) -> Context:
    return Context(_metrics=metrics)


def _eval(**over) -> dict:
    base = {
        "sft": {"gold_sampled": 0.5, "proxy_sampled": 0.1, "kl_full": 0.0, "pretrain_loss": 2.0,
                "compliance": 0.9},
        "ppo": {"gold_sampled": 0.8, "proxy_sampled": 0.6, "kl_full": 1.0, "pretrain_loss": 2.3,
                "win_vs_sft": 0.7, "k1_negative": 0.3},
        "ppo_ptx": {"pretrain_loss": 2.1, "win_vs_sft": 0.65},
        "beta0": {"gold_sampled": 0.4, "proxy_sampled": 0.9, "kl_full": 5.0},
        "pretrained": {"compliance": 0.0, "pretrain_loss": 1.9},
        "big_few_shot": {"compliance": 0.1, "win_of_small_aligned": 0.8},
    }  # fmt: skip
    for path, value in over.items():
        outer, inner = path.split("__")
        base[outer] = {**base[outer], inner: value}
    return base


def _lm(param_ratio: float = 10.0, **over) -> dict:
    return {"lm": [{"eval": _eval(**over), "param_ratio": param_ratio}]}


def test_beta_zero_control_is_the_kl_ratio_and_reports_the_divergence() -> None:
    m = IG.beta_zero_drifts_further(_ctx(_lm()))
    assert m.value == pytest.approx(5.0) and m.details["per_seed"][0]["proxy_up_gold_down"]
    # a β that does nothing (both runs alike) gives a ratio of 1, below the note's bound
    same = IG.beta_zero_drifts_further(_ctx(_lm(beta0__kl_full=1.0)))
    assert same.value == pytest.approx(1.0)
    assert not IG.beta_zero_drifts_further(_ctx(_lm(beta0__gold_sampled=0.9))).details["per_seed"][
        0
    ]["proxy_up_gold_down"]


def test_tax_claims_compare_against_sft() -> None:
    assert IG.alignment_tax(_ctx(_lm())).value == pytest.approx(0.3)
    assert IG.alignment_tax(_ctx(_lm(ppo__pretrain_loss=1.8))).value == pytest.approx(-0.2)
    assert IG.ptx_reduces_tax(_ctx(_lm())).value == pytest.approx(0.1 / 0.3)
    assert IG.ptx_reduces_tax(_ctx(_lm(ppo_ptx__pretrain_loss=2.5))).value > 1
    assert IG.ptx_reduces_tax(_ctx(_lm(ppo__pretrain_loss=1.9))).value == math.inf


def test_small_beats_big_needs_the_size_gap_and_format_takes_the_worse_model() -> None:
    assert IG.small_aligned_beats_big(_ctx(_lm())).value == 0.8
    assert IG.small_aligned_beats_big(_ctx(_lm(param_ratio=7.9))).value == 0.0
    assert IG.pretrained_fails_format(_ctx(_lm())).value == 0.1
    assert IG.pretrained_fails_format(_ctx(_lm(pretrained__compliance=0.7))).value == 0.7


def test_min_and_max_over_seeds() -> None:
    two = {"lm": [_lm()["lm"][0], _lm(ppo__win_vs_sft=0.55, ppo__kl_full=2.0)["lm"][0]]}
    assert IG.ppo_beats_sft(_ctx(two)).value == 0.55  # the worst seed
    assert IG.ppo_kl_bounded(_ctx(two)).value == 2.0  # the worst seed


def _bandit(weak_gold, weak_proxy, gold_sweep, tvs=(0.01, 0.02), no_kl=0.4, kl_exact=(0.0, 0.1)):
    def sweep(golds, proxies=None):
        proxies = proxies or golds
        return [
            {"beta": b, "gold": g, "proxy": p, "kl": 0.0}
            for b, g, p in zip(IG.SWEEP_BETAS, golds, proxies, strict=False)
        ]

    hist = [{"kl_exact": k, "k1_negative": 0.4, "kl_k1": 0.1} for k in kl_exact]
    return {
        "bandit": [
            {
                "rl": [{"beta": 1.0, "tv": t, "history": hist} for t in tvs],
                "rl_no_kl_tv": no_kl,
                "sweep": {
                    "weak": sweep(weak_gold, weak_proxy),
                    "good": sweep(gold_sweep),
                    "gold": sweep(gold_sweep),
                },
            }
        ]
    }


def test_overoptimisation_needs_an_interior_peak_and_a_rising_proxy() -> None:
    rising = [0.1, 0.2, 0.3, 0.4, 0.5]
    good = _bandit([0.1, 0.5, 0.3, 0.2, 0.15], rising, rising)
    assert IG.overoptimisation(_ctx(good)).value == pytest.approx(0.35)
    peak_at_end = _bandit([0.1, 0.2, 0.3, 0.4, 0.5], rising, rising)
    assert IG.overoptimisation(_ctx(peak_at_end)).value == 0.0
    proxy_falls = _bandit([0.1, 0.5, 0.3, 0.2, 0.15], [0.1, 0.3, 0.2, 0.4, 0.5], rising)
    assert IG.overoptimisation(_ctx(proxy_falls)).value == 0.0
    assert IG.overoptimisation_control(_ctx(good)).value == 0.0
    falling = _bandit(rising, rising, [0.1, 0.4, 0.25, 0.3, 0.2])
    assert IG.overoptimisation_control(_ctx(falling)).value == pytest.approx(0.15)


def test_bandit_claims_take_the_worst_case() -> None:
    b = _bandit([0.1] * 5, None, [0.1] * 5, tvs=(0.01, 0.07), no_kl=0.3)
    assert IG.bandit_reaches_kl_optimum(_ctx(b)).value == 0.07
    assert IG.bandit_kl_term_needed(_ctx(b)).value == 0.3
    assert IG.bandit_k1_negative(_ctx(b)).value == 0.4
    negative_kl = _bandit([0.1] * 5, None, [0.1] * 5, kl_exact=(0.0, -0.01))
    assert IG.bandit_k1_negative(_ctx(negative_kl)).value == -1.0


def test_rm_metrics_on_an_rm_that_reverses_the_labelers() -> None:
    """K = 4, lopsided gold, one identical pair: an RM that orders every pair like the gold gets
    the Bayes ceiling; one that reverses them gets 1 − ceiling; constant scores get ½."""
    world = InstructionWorld()
    gold = torch.tensor([[3.0, 1.0, 0.5, 0.0], [2.0, 2.0, 0.0, -1.0]], dtype=torch.float64)
    i, j = all_pairs(4)
    distinct = torch.ones(2, len(i), dtype=torch.bool)
    distinct[1, 0] = False  # responses 0 and 1 of prompt 1 are the same text
    cmp = Comparisons(None, None, None, gold, distinct)
    p = world.prefer_prob(gold[:, i], gold[:, j])[distinct]
    ceiling = float(torch.maximum(p, 1 - p).mean())
    right = IG.rm_metrics(world, gold * 2, cmp)
    assert right["agreement_with_labelers"] == pytest.approx(ceiling)
    assert right["labeler_ceiling"] == pytest.approx(ceiling)
    assert right["gold_pair_accuracy"] == 1.0
    wrong = IG.rm_metrics(world, -gold, cmp)
    assert wrong["agreement_with_labelers"] == pytest.approx(1 - ceiling)
    assert wrong["gold_pair_accuracy"] == 0.0
    flat = IG.rm_metrics(world, torch.zeros_like(gold), cmp)
    assert flat["agreement_with_labelers"] == pytest.approx(0.5)
    assert right["distinct_pairs"] == pytest.approx(11 / 12)
    assert right["tied_gold_pairs"] == pytest.approx(0.0)
    # two labelers agree with probability p² + (1 − p)² on a pair
    assert right["inter_labeler_agreement"] == pytest.approx(float((p**2 + (1 - p) ** 2).mean()))
    assert set(right) == {"agreement_with_labelers", "labeler_ceiling", "inter_labeler_agreement",
                          "gold_pair_accuracy", "tied_gold_pairs", "distinct_pairs"}  # fmt: skip


def test_rm_metrics_counts_tied_gold_among_distinct_responses() -> None:
    """Two different responses with the same r*: a tied pair, which the labelers call a coin flip
    (p = ½) and the RM cannot get wrong."""
    world = InstructionWorld()
    gold = torch.tensor([[1.0, 1.0, 0.0], [2.0, 0.5, 0.5]], dtype=torch.float64)
    i, j = all_pairs(3)
    distinct = torch.ones(2, len(i), dtype=torch.bool)
    distinct[0, 1] = False
    cmp = Comparisons(None, None, None, gold, distinct)
    scores = torch.tensor([[0.3, 0.1, 0.2], [0.0, 1.0, -1.0]], dtype=torch.float64)
    got = IG.rm_metrics(world, scores, cmp)
    assert got["tied_gold_pairs"] == pytest.approx(2 / 5)  # (0, 1) of prompt 0, (1, 2) of prompt 1
    assert got["distinct_pairs"] == pytest.approx(5 / 6)
    # by hand: per distinct pair, p(a ≻ b) if the RM picks a, 1 − p if it picks b
    p = world.prefer_prob(gold[:, i], gold[:, j])
    want = []
    for n in range(2):
        for c in range(3):
            if distinct[n, c]:
                ds = scores[n, i[c]] - scores[n, j[c]]
                want.append(float(p[n, c]) if ds > 0 else 1 - float(p[n, c]))
    assert got["agreement_with_labelers"] == pytest.approx(sum(want) / len(want))


# --- every claim over two seeds: which seed it takes, and its details -------------------------


def _two_seed_lms() -> dict:
    a = _lm(ppo__win_vs_sft=0.7, ppo__kl_full=1.0, ppo__k1_negative=0.3, ppo__kl_k1=0.2)["lm"][0]
    b = _lm(param_ratio=12.0, ppo__win_vs_sft=0.6, ppo__kl_full=2.5, ppo__k1_negative=0.45,
            ppo__kl_k1=-0.1, ppo__pretrain_loss=2.5, ppo_ptx__pretrain_loss=2.25,
            sft__gold_sampled=0.3, sft__compliance=0.95, beta0__kl_full=4.0,
            beta0__gold_sampled=0.9, big_few_shot__win_of_small_aligned=0.6,
            big_few_shot__compliance=0.3, pretrained__compliance=0.2)["lm"][0]  # fmt: skip
    for lm, (agree, ceil, inter, tau) in zip((a, b), ((0.7, 0.9, 0.8, 0.5), (0.6, 0.7, 0.6, 0.25)),
                                            strict=True):  # fmt: skip
        lm["rm"] = {"agreement_with_labelers": agree, "labeler_ceiling": ceil,
                    "inter_labeler_agreement": inter, "tau": tau, "curve": [(0, 0.5)]}  # fmt: skip
    return {"lm": [a, b]}


def test_lm_claims_over_two_seeds_take_the_worst_and_report_each() -> None:
    ctx = _ctx(_two_seed_lms())
    rm = IG.rm_agreement(ctx)
    assert rm.value == pytest.approx(min((0.7 - 0.5) / (0.9 - 0.5), (0.6 - 0.5) / (0.7 - 0.5)))
    assert rm.value == pytest.approx(0.5)  # the second seed: 0.1 / 0.2 (the first: 0.2 / 0.4)
    assert rm.details == {"per_seed": [
        {"agreement_with_labelers": 0.7, "labeler_ceiling": 0.9, "inter_labeler_agreement": 0.8,
         "tau": 0.5},
        {"agreement_with_labelers": 0.6, "labeler_ceiling": 0.7, "inter_labeler_agreement": 0.6,
         "tau": 0.25}]}  # fmt: skip
    beats = IG.ppo_beats_sft(ctx)
    assert beats.value == 0.6
    assert beats.details == {"per_seed_win": [0.7, 0.6], "per_seed_kl_full": [1.0, 2.5],
                             "gold_sft": [0.5, 0.3], "gold_ppo": [0.8, 0.8]}  # fmt: skip
    bounded = IG.ppo_kl_bounded(ctx)
    assert bounded.value == 2.5 and bounded.details == {"beta0_kl_full": [5.0, 4.0]}
    drift = IG.beta_zero_drifts_further(ctx)
    assert drift.value == pytest.approx(4.0 / 2.5)  # the second seed (the first: 5)
    assert drift.details == {"per_seed": [
        {"proxy_up_gold_down": True,
         "ppo": {"gold_sampled": 0.8, "proxy_sampled": 0.6, "kl_full": 1.0},
         "beta0": {"gold_sampled": 0.4, "proxy_sampled": 0.9, "kl_full": 5.0}},
        {"proxy_up_gold_down": False,
         "ppo": {"gold_sampled": 0.8, "proxy_sampled": 0.6, "kl_full": 2.5},
         "beta0": {"gold_sampled": 0.9, "proxy_sampled": 0.9, "kl_full": 4.0}}]}  # fmt: skip
    small = IG.small_aligned_beats_big(ctx)
    assert small.value == 0.6
    assert small.details == {"per_seed": [
        {"param_ratio": 10.0, "compliance": 0.1, "win_of_small_aligned": 0.8},
        {"param_ratio": 12.0, "compliance": 0.3, "win_of_small_aligned": 0.6}]}  # fmt: skip
    fmt = IG.pretrained_fails_format(ctx)
    assert fmt.value == 0.3 and fmt.details == {"sft_compliance": [0.9, 0.95]}
    tax = IG.alignment_tax(ctx)
    assert tax.value == pytest.approx(0.3)  # the first seed (the second: 0.5)
    assert tax.details == {"pretrained": [1.9, 1.9], "sft": [2.0, 2.0], "ppo": [2.3, 2.5],
                           "ppo_ptx": [2.1, 2.25]}  # fmt: skip
    ptx = IG.ptx_reduces_tax(ctx)
    assert ptx.value == pytest.approx(0.5)  # the second seed: 0.25 / 0.5 (the first: 0.1 / 0.3)
    assert ptx.details == {"win_vs_sft_ptx": [0.65, 0.65]}
    k1 = IG.lm_k1_negative(ctx)
    assert k1.value == 0.3
    assert k1.details == {"kl_k1_mean": [0.2, -0.1], "kl_full_mean": [1.0, 2.5]}


def test_a_ppo_run_without_kl_counts_as_no_drift_at_all() -> None:
    """KL(β) = 0 is floored at 1e-9: the ratio is finite and huge, not a division by zero."""
    m = IG.beta_zero_drifts_further(_ctx(_lm(ppo__kl_full=0.0)))
    assert m.value == pytest.approx(5.0 / 1e-9)
    tie = IG.beta_zero_drifts_further(_ctx(_lm(beta0__gold_sampled=0.8, beta0__proxy_sampled=0.6)))
    assert not tie.details["per_seed"][0]["proxy_up_gold_down"]  # equal gold: not below
    even = IG.beta_zero_drifts_further(_ctx(_lm(beta0__gold_sampled=0.7, beta0__proxy_sampled=0.6)))
    assert even.details["per_seed"][0]["proxy_up_gold_down"]  # equal proxy counts as up
    assert IG.small_aligned_beats_big(_ctx(_lm(param_ratio=8.0))).value == 0.8  # 8× is enough
    assert IG.ptx_reduces_tax(_ctx(_lm(ppo__pretrain_loss=2.0))).value == math.inf  # no rise


def _two_seed_bandits() -> dict:
    a = _bandit([0.1, 0.5, 0.3, 0.2, 0.15], [0.1, 0.2, 0.3, 0.4, 0.5], [0.1, 0.4, 0.25, 0.3, 0.2],
                tvs=(0.01, 0.05), no_kl=0.4)["bandit"][0]  # fmt: skip
    b = _bandit([0.2, 0.3, 0.6, 0.5, 0.45], [0.1, 0.1, 0.3, 0.4, 0.5], [0.1, 0.2, 0.3, 0.35, 0.1],
                tvs=(0.03, 0.02), no_kl=0.25)["bandit"][0]  # fmt: skip
    for r, kl in zip(a["sweep"]["weak"], (0.0, 0.1, 0.2, 0.3, 0.4), strict=True):
        r["kl"] = kl
    b["rl"][0]["history"] = [{"kl_exact": 0.0, "k1_negative": 0.9, "kl_k1": 0.0},
                             {"kl_exact": 0.2, "k1_negative": 0.35, "kl_k1": -0.05}]  # fmt: skip
    return {"bandit": [a, b]}


def test_bandit_claims_over_two_seeds_take_the_worst_and_report_each() -> None:
    ctx = _ctx(_two_seed_bandits())
    opt = IG.bandit_reaches_kl_optimum(ctx)
    assert opt.value == 0.05
    assert opt.details == {"betas": [1.0, 1.0], "tv_per_seed": [[0.01, 0.05], [0.03, 0.02]]}
    need = IG.bandit_kl_term_needed(ctx)
    assert need.value == 0.25 and need.details == {"per_seed": [0.4, 0.25]}
    over = IG.overoptimisation(ctx)
    assert over.value == pytest.approx(0.6 - 0.45)  # the second seed (the first: 0.5 − 0.15)
    first, second = over.details["per_seed"]
    assert over.details["betas"] == IG.SWEEP_BETAS
    assert first == {"gold": [0.1, 0.5, 0.3, 0.2, 0.15], "proxy": [0.1, 0.2, 0.3, 0.4, 0.5],
                     "kl": [0.0, 0.1, 0.2, 0.3, 0.4], "peak_beta": IG.SWEEP_BETAS[1],
                     "gold_sft_level": 0.1, "good_rm_gold": [0.1, 0.4, 0.25, 0.3, 0.2]}  # fmt: skip
    assert second["peak_beta"] == IG.SWEEP_BETAS[2] and second["gold_sft_level"] == 0.2
    control = IG.overoptimisation_control(ctx)
    assert control.value == pytest.approx(0.35 - 0.1)  # the second seed (the first: 0.15)
    assert control.details == {"per_seed": [pytest.approx(0.15), pytest.approx(0.25)]}
    k1 = IG.bandit_k1_negative(ctx)
    assert k1.value == 0.35  # the last iteration of the second seed
    assert k1.details == {"last_iteration": [{"kl_exact": 0.1, "kl_k1_mean": 0.1},
                                             {"kl_exact": 0.2, "kl_k1_mean": -0.05}]}  # fmt: skip


def test_overoptimisation_edge_cases() -> None:
    rising = [0.1, 0.2, 0.3, 0.4, 0.5]
    # a proxy that falls by less than 1e-9 still counts as rising; by more it does not
    flat = _bandit([0.1, 0.5, 0.3, 0.2, 0.15], [0.1, 0.2, 0.2 - 5e-10, 0.4, 0.5], rising)
    assert IG.overoptimisation(_ctx(flat)).value == pytest.approx(0.35)
    dip = _bandit([0.1, 0.5, 0.3, 0.2, 0.15], [0.1, 0.2, 0.2 - 5e-9, 0.4, 0.5], rising)
    assert IG.overoptimisation(_ctx(dip)).value == 0.0
    # the peak at the first β (no interior peak) gives 0; a peak one before the end counts
    first = _bandit([0.9, 0.5, 0.3, 0.2, 0.15], rising, rising)
    assert IG.overoptimisation(_ctx(first)).value == 0.0
    late = _bandit([0.1, 0.2, 0.3, 0.6, 0.4], rising, rising)
    assert IG.overoptimisation(_ctx(late)).value == pytest.approx(0.2)
    # gold that only rises: no fall; an exact KL just below 0 (rounding) is tolerated
    assert IG.overoptimisation_control(_ctx(_bandit(rising, rising, rising))).value == 0.0
    # the last of three iterations, not the second
    three = _bandit(rising, None, rising, kl_exact=(0.0, 0.1, 0.3))
    three["bandit"][0]["rl"][0]["history"] = [
        {"kl_exact": k, "k1_negative": share, "kl_k1": k1}
        for k, share, k1 in ((0.0, 0.9, 0.0), (0.1, 0.6, 0.05), (0.3, 0.45, 0.2))
    ]
    k1 = IG.bandit_k1_negative(_ctx(three))
    assert k1.value == 0.45
    assert k1.details == {"last_iteration": [{"kl_exact": 0.3, "kl_k1_mean": 0.2}]}
    for tolerated in (-1e-13, -1e-12):
        rounding = _bandit(rising, None, rising, kl_exact=(tolerated, 0.1))
        assert IG.bandit_k1_negative(_ctx(rounding)).value == 0.4
    # a proxy step down of exactly 1e-9 still counts as rising
    edge = _bandit([0.1, 0.5, 0.3, 0.2, 0.15], [0.1, 0.2, 0.2 - 1e-9, 0.4, 0.5], rising)
    assert IG.overoptimisation(_ctx(edge)).value == pytest.approx(0.35)
    assert IG._drop([0.3, 0.7, 0.2]) == pytest.approx(0.5)
