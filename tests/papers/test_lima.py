"""LIMA paper extras: the held-out split never leaks into SFT data, the trivial baseline and
the sampled accuracy agree with naive references."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

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
    one, one_mask = LIMA.draw_demonstrations(WORLD, pool, 500, seed=2, families=("sort",))
    assert (one[:, 1] == WORLD.vocab.task0 + FAMILIES.index("sort")).all()
    clean = _draw_ref(pool, 500, 2, ("sort",))  # by default every demonstration is gold
    assert torch.equal(one, clean[0]) and torch.equal(one_mask, clean[1])


def test_held_out_prompts_are_drawn_from_the_fixed_seed():
    """Per family in turn, the first round(share · 100) of a seeded permutation of its prompts
    (family-major, digits in lexicographic order) are held out."""
    g = torch.Generator().manual_seed(2305_11206)
    held = set()
    pairs = list(itertools.product(range(10), repeat=2))
    for f in range(len(FAMILIES)):
        for i in torch.randperm(100, generator=g)[:35].tolist():
            held.add((f, *pairs[i]))
    pool, test = LIMA.split(WORLD, 0.35)
    assert _keys(test) == held and len(test) == len(held) == 8 * 35
    assert len(pool) == 8 * 65


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


# --- the experiment, with fine-tuning and evaluation recorded instead of run ---------------


def test_base_config_continues_instructgpts_base() -> None:
    assert LIMA.base_config(LIMA.Config(continued_pretraining=0)) == PretrainConfig()
    got = LIMA.base_config(LIMA.Config(continued_pretraining=37))
    assert got == PretrainConfig(steps=37, backend="sdpa", start=PretrainConfig())


def test_config_names_the_missing_size() -> None:
    import re

    for kw, msg in (
        ({"sizes": (1000, 4000)}, "sizes must include 100: the claims judge it"),
        ({"sizes": (100, 4000)}, "sizes must include 1000: the claims judge it"),
        ({"random_init_sizes": (100,)}, "random_init_sizes must include 1000: the claims judge it"),
    ):
        with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
            LIMA.Config(**kw)


def test_mean_of_nested_runs() -> None:
    runs = [{"a": [1.0, 4.0], "b": {"c": 2.0}}, {"a": [3.0, 6.0], "b": {"c": 5.0}},
            {"a": [2.0, 8.0], "b": {"c": 11.0}}]  # fmt: skip
    assert LIMA._mean(runs) == {"a": [2.0, 6.0], "b": {"c": 6.0}}
    with pytest.raises(ValueError):  # epoch curves of unequal length are not averaged
        LIMA._mean([[1.0, 2.0], [3.0]])


class _Recorder:
    """Stands for a matplotlib object: every method call is logged as (name, args, kwargs)."""

    def __init__(self, log: list, name: str) -> None:
        self._log, self._name = log, name

    def __getattr__(self, attr: str):
        return lambda *a, **k: self._log.append((f"{self._name}.{attr}", a, k))


def test_save_bars_draws_one_bar_series_per_key(monkeypatch, tmp_path) -> None:
    import matplotlib
    import matplotlib.pyplot as plt

    log: list = []
    fig, ax = _Recorder(log, "fig"), _Recorder(log, "ax")
    monkeypatch.setattr(matplotlib, "use", lambda *a, **k: log.append(("use", a, k)))
    monkeypatch.setattr(
        plt, "subplots", lambda *a, **k: log.append(("subplots", a, k)) or (fig, ax)
    )
    monkeypatch.setattr(plt, "close", lambda *a, **k: log.append(("close", a, k)))
    groups = {"g1": {"s1": 0.1, "s2": 0.2, "s3": 0.3}, "g2": {"s1": 0.4, "s2": 0.5, "s3": 0.6},
              "g3": {"s1": 0.7, "s2": 0.8, "s3": 0.9}}  # fmt: skip
    path = tmp_path / "bars.svg"
    assert LIMA.save_bars(path, groups, "share", "A title") == path
    w = 0.8 / 3  # three bars side by side, centred on each group
    assert log[:2] == [("use", ("Agg",), {}), ("subplots", (), {"figsize": (6.4, 4.0)})]
    bars = [(c[1][0], c[1][1], c[1][2], c[2]) for c in log if c[0] == "ax.bar"]
    assert bars == [
        (pytest.approx([-w, 1 - w, 2 - w]), [0.1, 0.4, 0.7], pytest.approx(w), {"label": "s1"}),
        (pytest.approx([0, 1, 2]), [0.2, 0.5, 0.8], pytest.approx(w), {"label": "s2"}),
        (pytest.approx([w, 1 + w, 2 + w]), [0.3, 0.6, 0.9], pytest.approx(w), {"label": "s3"}),
    ]
    assert log[5:] == [
        ("ax.set_xticks", (range(3), ["g1", "g2", "g3"]), {}),
        ("ax.set_ylim", (0, 1.05), {}),
        ("ax.set_ylabel", ("share",), {}),
        ("ax.set_title", ("A title",), {}),
        ("ax.legend", (), {}),
        ("fig.tight_layout", (), {}),
        ("fig.savefig", (path,), {"format": "svg"}),
        ("close", (fig,), {}),
    ]
    log.clear()  # a single group: its two bars either side of x = 0
    LIMA.save_bars(path, {"only": {"a": 0.3, "b": 0.6}}, "share", "One")
    bars = [(c[1][0], c[1][1], c[1][2], c[2]) for c in log if c[0] == "ax.bar"]
    assert bars == [([-0.2], [0.3], 0.4, {"label": "a"}), ([0.2], [0.6], 0.4, {"label": "b"})]


class _Tiny(nn.Module):
    """A stand-in model: `recipe` says how it was fine-tuned, `epoch` how far."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.recipe, self.epoch = (name, 0, None, 0.0, 0, 0), 0


def _score(model: _Tiny, key: str) -> float:
    """Made-up metric of a stand-in model: every part of its recipe moves it."""
    base, n, families, corrupt, epochs, seed = model.recipe
    k = ("compliance", "accuracy", "gold", "forbidden", "sampled_accuracy", "perplexity").index(key)
    return (
        (k + 1) / 10
        + n / 1e5
        + (0.05 if base == "scratch" else 0)
        + (0.03 if families else 0)
        + corrupt / 7
        + epochs / 300
        + model.epoch / 1000
        + seed / 1e6
    )


def _draw_ref(pool, n: int, seed: int, families=None, corrupt: float = 0.0):
    """draw_demonstrations by hand: n rows of `families` in `pool`, uniform with replacement."""
    g = torch.Generator().manual_seed(seed)
    ids = [FAMILIES.index(f) for f in families] if families else range(len(FAMILIES))
    rows = torch.tensor([i for i in range(len(pool)) if int(pool.family[i]) in ids])
    return WORLD.demonstrations(pool[rows[torch.randint(0, len(rows), (n,), generator=g)]], g,
                                corrupt=corrupt)  # fmt: skip


def _fake_training(monkeypatch) -> dict:
    """Records every call the experiment makes into the alignment library; returns the log."""
    from repro.align.policy import response_mask

    log: dict = {
        "sft": [],
        "raw": [],
        "judged": [],
        "held": [],
        "threads": set(),
        "fresh": [],
        "pretrained": [],
    }

    def pretrained_model(pcfg, backend):
        log["pretrained"].append((pcfg, backend))
        return _Tiny("base")

    def fresh_model(pcfg, seed, backend):
        log["fresh"].append((pcfg, seed, backend))
        return _Tiny("scratch")

    def sft(model, world, scfg, progress, on_epoch, demos):
        assert world.cfg == WORLD.cfg
        assert model.w.item() == 0  # every fine-tune starts from an untouched copy
        with torch.no_grad():
            model.w += 1  # SFT changes the weights in place
        log["threads"].add(torch.get_num_threads())
        log["sft"].append((model.recipe[0], scfg, demos, progress, on_epoch is not None))
        model.train()
        model.recipe = (model.recipe[0], scfg.n_examples, scfg.families, scfg.corrupt,
                        scfg.epochs, scfg.seed)  # fmt: skip
        for e in range(1, scfg.epochs + 1):
            model.epoch = e
            if on_epoch is not None:
                on_epoch(e, model)
                model.train()
        return []

    def raw_accuracy(model, world, inst):
        assert model.recipe[0] == "base" and model.epoch == 0 and world.cfg == WORLD.cfg
        log["raw"].append(inst)
        return 0.3 + 0.2 * (len(log["raw"]) - 1)  # 0.3 for the first seed, 0.5 for the second

    def evaluate(model, world, inst):
        assert world.cfg == WORLD.cfg
        log["judged"].append(inst)
        return {k: _score(model, k) for k in ("compliance", "accuracy", "gold", "forbidden")}

    def token_logprobs(model, prompts, gold):
        assert not model.training
        assert torch.equal(prompts, WORLD.prompts(log["test"]))
        assert torch.equal(gold, WORLD.gold_responses(log["test"]))
        mask = response_mask(gold, WORLD.vocab.eot)
        logp = torch.where(mask, 0.0, -5.0).double()  # the tokens after <eot> must not count
        logp[:, 0] = math.log(_score(model, "sampled_accuracy"))
        return logp, None

    def masked_lm_loss(model, tokens, mask):
        assert not model.training
        log["held"].append((tokens, mask))
        return torch.tensor(math.log(_score(model, "perplexity")), dtype=torch.float64)

    fakes = (pretrained_model, fresh_model, sft, raw_accuracy, evaluate, token_logprobs,
             masked_lm_loss)  # fmt: skip
    for fn in fakes:
        monkeypatch.setattr(LIMA, fn.__name__, fn)
    return log


def _assess(recipe: tuple, epoch: int) -> dict:
    model = _Tiny(recipe[0])
    model.recipe, model.epoch = recipe, epoch
    keys = ("compliance", "accuracy", "gold", "forbidden", "sampled_accuracy")
    return {k: _score(model, k) for k in keys}


def _check_close(got, want) -> None:
    if isinstance(want, dict):
        assert list(got) == list(want)
        for k in want:
            _check_close(got[k], want[k])
    elif isinstance(want, list):
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            _check_close(a, b)
    else:
        assert got == pytest.approx(want, rel=1e-9), (got, want)


def test_experiment_recipe_with_fine_tuning_recorded(monkeypatch, line_plots, tmp_path) -> None:
    from repro.align.sft import SFTConfig
    from repro.lab.claims import Context

    log = _fake_training(monkeypatch)
    bars: list = []
    monkeypatch.setattr(LIMA, "save_bars", lambda *a, **k: bars.append((a, k)))
    drawn = line_plots(LIMA)
    cfg = LIMA.Config(continued_pretraining=25, sizes=(100, 1000, 2500),
                      random_init_sizes=(1000, 200), epochs=3, curve_epochs=3, lr=2e-3, batch=16,
                      homogeneous_family="sort", corrupt=0.4, held_out=0.3, repeats=2)  # fmt: skip
    pool, test = LIMA.split(WORLD, 0.3)
    log["test"] = test

    def report(*args) -> None:
        pass

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the experiment runs on one thread, then gives the two back
    try:
        ctx = Context(config=cfg, seed=7, out_dir=tmp_path, progress=report)
        got = LIMA.experiment(cfg, ctx)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    pcfg = PretrainConfig(steps=25, backend="sdpa", start=PretrainConfig())
    assert log["pretrained"] == [(pcfg, "sdpa")] * 2
    assert log["fresh"] == [(pcfg, 7 + 17, "sdpa"), (pcfg, 1007 + 17, "sdpa")]
    assert log["threads"] == {1}
    # per seed: 100, 1,000 (drawing the epoch curve), 2,500 examples; the random-init control
    # at 1,000 and 200; 1,000 of 'sort' only; 1,000 with 40% corrupted
    plan = [("base", 100, None, 0.0, False), ("base", 1000, None, 0.0, True),
            ("base", 2500, None, 0.0, False), ("scratch", 1000, None, 0.0, False),
            ("scratch", 200, None, 0.0, False), ("base", 1000, ("sort",), 0.0, False),
            ("base", 1000, None, 0.4, False)]  # fmt: skip
    assert len(log["sft"]) == 2 * len(plan)
    for i, (base, scfg, demos, progress, curve) in enumerate(log["sft"]):
        seed = 7 + 1000 * (i // len(plan))
        b, n, fam, corrupt, draws_curve = plan[i % len(plan)]
        assert (base, progress, curve) == (b, report, draws_curve)
        assert scfg == SFTConfig(n_examples=n, families=fam, corrupt=corrupt, epochs=3, batch=16,
                                 lr=2e-3, seed=seed)  # fmt: skip
        want = _draw_ref(pool, n, seed, fam, corrupt)
        assert torch.equal(demos[0], want[0]) and torch.equal(demos[1], want[1])
    # every judgement is on the held-out prompts, with the held-out demonstrations' responses
    judged = log["raw"] + log["judged"]
    assert len(log["raw"]) == 2 and len(log["judged"]) == 2 * (1 + 3 + 7)
    assert all(torch.equal(inst.digits, test.digits) for inst in judged)
    assert all(torch.equal(inst.family, test.family) for inst in judged)
    held = WORLD.demonstrations(test)
    assert len(log["held"]) == 2 * 3
    for tokens, mask in log["held"]:
        assert torch.equal(tokens, held[0]) and torch.equal(mask, held[1])

    def run(seed: int, raw: float) -> dict:
        def tuned(base, n, fam=None, corrupt=0.0, epochs=3):
            return (base, n, fam, corrupt, epochs, seed)

        def at(epoch: int, key: str) -> float:
            model = _Tiny("base")
            model.recipe, model.epoch = tuned("base", 1000), epoch
            return _score(model, key)

        return {
            "raw_accuracy": raw,
            "before_sft": _assess(("base", 0, None, 0.0, 0, 0), 0),
            "pretrained": {n: _assess(tuned("base", n), 3) for n in (100, 1000, 2500)},
            "epochs": {
                k: [at(e, k) for e in (1, 2, 3)]
                for k in ("perplexity", "compliance", "accuracy", "sampled_accuracy")
            },
            "random_init": {n: _assess(tuned("scratch", n), 3) for n in (1000, 200)},
            "homogeneous": _assess(tuned("base", 1000, ("sort",)), 3),
            "corrupted": _assess(tuned("base", 1000, corrupt=0.4), 3),
        }

    runs = [run(7, 0.3), run(1007, 0.5)]

    def mean(a, b):
        if isinstance(a, dict):
            return {k: mean(a[k], b[k]) for k in a}
        if isinstance(a, list):
            return [(x + y) / 2 for x, y in zip(a, b, strict=True)]
        return (a + b) / 2

    _check_close(got, {"held_out_prompts": 8 * 30, "trivial_accuracy": LIMA.trivial_accuracy(test),
                       **mean(*runs), "runs": runs})  # fmt: skip
    # the plots: examples sweep, diversity/quality bars, the two epoch curves
    pre, rnd = got["pretrained"], got["random_init"]
    (path, series, rest), (path2, series2, rest2), (path3, series3, rest3) = drawn
    assert path == tmp_path / "format_and_accuracy_vs_examples.svg"
    assert series == {
        "compliance, pretrained": (
            [100, 1000, 2500],
            [pre[n]["compliance"] for n in (100, 1000, 2500)],
        ),
        "accuracy, pretrained": (
            [100, 1000, 2500],
            [pre[n]["accuracy"] for n in (100, 1000, 2500)],
        ),
        "compliance, random init": ([1000, 200], [rnd[n]["compliance"] for n in (1000, 200)]),
        "accuracy, random init": ([1000, 200], [rnd[n]["accuracy"] for n in (1000, 200)]),
        "raw-format accuracy before SFT": ([100, 1000, 2500], [got["raw_accuracy"]] * 3),
    }
    assert rest == {"xlabel": "SFT examples", "ylabel": "share of held-out prompts",
                    "title": "SFT teaches the format; the answers come from pretraining",
                    "logx": True}  # fmt: skip
    two = ("compliance", "accuracy")
    assert bars == [(
        (tmp_path / "diversity_and_quality.svg", {
            "1,000 diverse, clean": {k: pre[1000][k] for k in two},
            "1,000 'sort' only": {k: got["homogeneous"][k] for k in two},
            "1,000, 40% corrupted": {k: got["corrupted"][k] for k in two},
        }),
        {"ylabel": "share of held-out prompts (all families)",
         "title": "Diversity and quality of 1,000 SFT examples"},
    )]  # fmt: skip
    assert path2 == tmp_path / "perplexity_over_epochs.svg"
    assert series2 == {"held-out perplexity": ([1, 2, 3], got["epochs"]["perplexity"])}
    assert rest2 == {
        "xlabel": "SFT epoch",
        "ylabel": "perplexity of held-out responses",
        "title": "Held-out perplexity over SFT epochs (1,000 examples)",
        "logy": True,
    }
    assert path3 == tmp_path / "compliance_over_epochs.svg"
    assert series3 == {k: ([1, 2, 3], got["epochs"][k]) for k in two}
    assert rest3 == {
        "xlabel": "SFT epoch",
        "ylabel": "share of held-out prompts",
        "title": "Compliance and accuracy over SFT epochs (1,000 examples)",
    }


def test_experiment_draws_the_epoch_curve_from_its_own_run(monkeypatch) -> None:
    """curve_epochs ≠ epochs: a separate 1,000-example run of curve_epochs epochs draws it."""
    from repro.lab.claims import Context

    log = _fake_training(monkeypatch)
    cfg = LIMA.Config(continued_pretraining=0, sizes=(100, 1000), random_init_sizes=(1000,),
                      epochs=3, curve_epochs=2)  # fmt: skip
    log["test"] = LIMA.split(WORLD, 0.25)[1]
    got = LIMA.experiment(cfg, Context(config=cfg, seed=2))
    assert log["pretrained"] == [(PretrainConfig(), "sdpa")]
    plan = [("base", 100, 3, False), ("base", 1000, 3, False), ("base", 1000, 2, True),
            ("scratch", 1000, 3, False)] + [("base", 1000, 3, False)] * 2  # fmt: skip
    assert [(b, s.n_examples, s.epochs, c) for b, s, _, _, c in log["sft"]] == plan
    curve = _Tiny("base")
    curve.recipe = ("base", 1000, None, 0.0, 2, 2)
    want = []
    for e in (1, 2):
        curve.epoch = e
        want.append(_score(curve, "accuracy"))
    assert got["epochs"]["accuracy"] == want and len(got["epochs"]["perplexity"]) == 2
    _check_close(got["runs"][0]["pretrained"][1000], _assess(("base", 1000, None, 0.0, 3, 2), 3))
