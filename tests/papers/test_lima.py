"""LIMA paper extras: the held-out split never leaks into SFT data, the trivial baseline and
the sampled accuracy agree with naive references."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from repro.align.pretrain import PretrainConfig, fresh_model
from repro.data.instructions import FAMILIES, InstructionWorld, answers_ref
from repro.lab.library import Library

LIMA = Library().get("lima").module()
WORLD = InstructionWorld(PretrainConfig().world)


def _keys(inst) -> set[tuple[int, ...]]:
    return {(int(f), *map(int, d)) for f, d in zip(inst.family, inst.digits, strict=True)}


def test_every_instance_enumerates_the_world_once():
    every = LIMA.every_instance(WORLD)
    n = WORLD.cfg.n_args
    assert len(_keys(every)) == len(every) == len(FAMILIES) * 10**n
    for i in range(0, len(every), 37):
        f, digits = int(every.family[i]), every.digits[i].tolist()
        length = int(every.answer_len[i])
        assert every.answer[i, :length].tolist() == answers_ref(f, digits)


def test_held_out_prompts_never_reach_sft_data():
    pool, test = LIMA.split(WORLD, 0.25)
    assert not _keys(pool) & _keys(test)
    assert len(pool) + len(test) == len(FAMILIES) * 10**WORLD.cfg.n_args
    for f in range(len(FAMILIES)):  # the same share of every family
        assert int((test.family == f).sum()) == round(0.25 * 10**WORLD.cfg.n_args)
    tokens, mask = LIMA.draw_demonstrations(WORLD, pool, 3000, seed=1, corrupt=0.3)
    prompts = WORLD.prompts(test)
    seen = {tuple(row) for row in tokens[:, : prompts.shape[1]].tolist()}
    assert not seen & {tuple(row) for row in prompts.tolist()}
    one = LIMA.draw_demonstrations(WORLD, pool, 500, seed=2, families=("sort",))[0]
    assert (one[:, 1] == WORLD.vocab.task0 + FAMILIES.index("sort")).all()


def test_trivial_accuracy_matches_a_naive_count():
    _, test = LIMA.split(WORLD, 0.25)
    hits = 0
    for f in range(len(FAMILIES)):
        answers = [
            tuple(a[: int(n)].tolist())
            for a, n, fam in zip(test.answer, test.answer_len, test.family, strict=True)
            if int(fam) == f
        ]
        hits += max(answers.count(a) for a in set(answers))
    assert LIMA.trivial_accuracy(test) == hits / len(test)
    # over the whole world, e.g. `max` of 2 digits is 9 for 19 of 100 pairs
    every = LIMA.every_instance(WORLD)
    best = {
        f: max(
            sum(answers_ref(f, list(d)) == list(a) for d in itertools.product(range(10), repeat=2))
            for a in itertools.product(range(10), repeat=1)
        )
        for f in (FAMILIES.index("max"), FAMILIES.index("min"))
    }
    assert best == {FAMILIES.index("max"): 19, FAMILIES.index("min"): 19}
    assert 0 < LIMA.trivial_accuracy(every) < 0.5


def test_sampled_accuracy_is_the_product_of_gold_token_probabilities():
    model = fresh_model(PretrainConfig(), seed=3).eval()
    _, test = LIMA.split(WORLD, 0.25)
    inst = test[torch.arange(0, len(test), 17)]
    prompts, gold = WORLD.prompts(inst), WORLD.gold_responses(inst)
    total = 0.0
    with torch.no_grad():
        for i in range(len(inst)):  # one prompt, one token at a time
            seq, logp = prompts[i : i + 1], 0.0
            for tok in gold[i].tolist():
                p = torch.softmax(model(seq)[0, -1].double(), -1)
                logp += math.log(p[tok].item())
                if tok == WORLD.vocab.eot:
                    break
                seq = torch.cat([seq, torch.tensor([[tok]])], dim=1)
            total += math.exp(logp)
    assert math.isclose(LIMA.sampled_accuracy(model, WORLD, inst), total / len(inst), rel_tol=1e-4)


def test_sizes_without_the_judged_ones_are_refused_before_any_work():
    from repro.lab.errors import BadOption
    from repro.lab.runner import make_config

    for setting_ in ("sizes=100,4000", "sizes=1000,4000", "random_init_sizes=100"):
        with pytest.raises(BadOption, match="must include"):
            make_config(LIMA, quick=True, overrides=(setting_,))
    make_config(LIMA, quick=True, overrides=("sizes=100,1000",))


def test_app_b_pattern_fails_the_perplexity_claim() -> None:
    """Control of perplexity-tracks-accuracy-here: a curve shaped like App. B's (perplexity
    rising while accuracy rises) gives r > 0 and fails the claim's r ≤ −0.8, and so does a
    curve whose perplexities are paired with the wrong epochs (no relation)."""
    from types import SimpleNamespace

    from repro.lab.claims import Context

    claim = next(c for c in Library().get("lima").note.claims if c.id.startswith("perplexity"))
    bound = claim.tolerance.range[1]
    acc = [0.19, 0.45, 0.62, 0.74, 0.80, 0.84, 0.86, 0.87, 0.88, 0.88]

    def r_of(ppl: list[float]) -> float:
        curve = {"perplexity": ppl, "sampled_accuracy": acc, "accuracy": acc, "compliance": acc}
        ctx = Context(config=SimpleNamespace(seeds=(0,)), _metrics={"epochs": curve})
        return LIMA.perplexity_tracks_accuracy_here(ctx).value

    toy = [3.2, 2.1, 1.7, 1.5, 1.35, 1.27, 1.22, 1.19, 1.17, 1.16]  # the toy's shape: falls
    app_b = [3.2, 3.0, 3.1, 3.3, 3.6, 3.9, 4.3, 4.6, 5.0, 5.3]  # App. B's shape: rises
    unrelated = [toy[i] for i in (5, 0, 8, 3, 9, 1, 6, 2, 7, 4)]  # epochs shuffled
    assert r_of(toy) <= bound
    assert r_of(app_b) > 0 > bound
    assert r_of(unrelated) > bound
