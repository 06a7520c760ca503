"""The instruction world: answers, formats, the gold reward, labelers and their exact agreement."""

from __future__ import annotations

import math

import pytest
import torch

from repro.data.instructions import (
    FAMILIES,
    Instances,
    InstructionWorld,
    WorldConfig,
    answers,
    answers_ref,
    bayes_ceiling,
    calibrate_temperature,
    labeler_agreement,
)

WORLD = InstructionWorld()


@pytest.mark.parametrize("n_args", [1, 2, 3])
def test_answers_match_the_reference(n_args: int) -> None:
    world = InstructionWorld(WorldConfig(n_args=n_args))
    inst = world.sample_instances(400, torch.Generator().manual_seed(0))
    for i in range(len(inst)):
        ref = answers_ref(int(inst.family[i]), inst.digits[i].tolist())
        n = int(inst.answer_len[i])
        assert inst.answer[i, :n].tolist() == ref
        assert (inst.answer[i, n:] == -1).all()


def test_families_are_chosen_and_checked() -> None:
    g = torch.Generator().manual_seed(1)
    inst = WORLD.sample_instances(200, g, families=("sort", "max"))
    assert {FAMILIES[int(f)] for f in inst.family} == {"sort", "max"}
    with pytest.raises(ValueError, match="unknown task families"):
        WORLD.sample_instances(5, g, families=("divide",))
    with pytest.raises(ValueError, match=r"\['divide'\]; known: copy, reverse, sort, shift, max"):
        WORLD.sample_instances(5, g, families=("copy", "divide"))
    digits = WORLD.sample_instances(500, g).digits
    counts = torch.bincount(digits.flatten(), minlength=10)
    assert len(counts) == 10 and (counts > 0.07 * digits.numel()).all()  # 0 … 9, about evenly


def test_pretraining_text_has_no_assistant_format() -> None:
    text = WORLD.pretraining_batch(64, 4, torch.Generator().manual_seed(2))
    assert text.shape == (64, 4 * WORLD.slot_len + 1)
    v = WORLD.vocab
    for special in (v.user, v.assistant, v.eot):
        assert not (text == special).any()
    # every task segment starts on a slot boundary and ends with `;` inside its slot
    for row in text[:8]:
        for k in range(4):
            seg = row[k * WORLD.slot_len : (k + 1) * WORLD.slot_len].tolist()
            if seg[0] < v.first_filler:
                assert v.id[";"] in seg
    # filler includes the forbidden token, so a pretrained model can emit it
    assert (text == v.bad).any()


def test_heldout_text_is_fixed() -> None:
    assert torch.equal(WORLD.heldout_text(8, 2), WORLD.heldout_text(8, 2))


def test_gold_reward_orders_the_cases() -> None:
    g = torch.Generator().manual_seed(3)
    inst = WORLD.sample_instances(64, g, families=("copy",))
    v, c = WORLD.vocab, WORLD.cfg
    gold = WORLD.gold_responses(inst)
    r_gold = WORLD.gold_reward(inst, gold)
    top = c.w_correct + c.w_digits + c.w_stop
    assert torch.allclose(r_gold, torch.full((64,), top))
    no_stop = gold.clone()
    no_stop[no_stop == v.eot] = v.id[";"]
    wrong = gold.clone()
    wrong[:, 0] = v.digit0 + (gold[:, 0] - v.digit0 + 1) % 10
    bad = gold.clone()
    bad[:, 0] = v.bad
    j = WORLD.judge(inst, no_stop)
    assert not j["stops"].any() and not j["correct"].any()
    half = c.w_digits * (1 - 1 / WORLD.cfg.n_args)  # copy: one of n digits wrong
    assert torch.allclose(WORLD.gold_reward(inst, wrong), torch.full((64,), c.w_stop + half))
    expected_bad = c.w_stop + half - c.w_forbidden
    assert torch.allclose(WORLD.gold_reward(inst, bad), torch.full((64,), expected_bad))
    assert WORLD.judge(inst, bad)["forbidden"].all()


def test_demonstrations_and_their_mask() -> None:
    g = torch.Generator().manual_seed(4)
    inst = WORLD.sample_instances(300, g)
    tokens, mask = WORLD.demonstrations(inst)
    P = WORLD.prompt_len
    assert torch.equal(tokens[:, :P], WORLD.prompts(inst))
    assert not mask[:, :P].any()
    # the loss covers the answer and the <eot>, nothing after
    n_resp = mask[:, P:].sum(1)
    assert torch.equal(n_resp, inst.answer_len + 1)
    top = WORLD.cfg.w_correct + WORLD.cfg.w_digits + WORLD.cfg.w_stop
    assert (WORLD.gold_reward(inst, tokens[:, P:]) == top).all()
    noisy, _ = WORLD.demonstrations(inst, torch.Generator().manual_seed(5), corrupt=0.5)
    share_bad = (WORLD.gold_reward(inst, noisy[:, P:]) < top).float().mean().item()
    assert 0.4 < share_bad < 0.6


def test_plackett_luce_pair_is_bradley_terry() -> None:
    """For K = 2 the labeler prefers y1 with probability σ((r1 − r2)/τ)."""
    gold = torch.tensor([[1.0, 0.0]]).repeat(20_000, 1)
    ranks = WORLD.rank(gold, torch.Generator().manual_seed(6))
    p_hat = (ranks[:, 0] == 0).double().mean().item()
    p = WORLD.prefer_prob(torch.tensor(1.0), torch.tensor(0.0)).item()
    assert abs(p_hat - p) < 4 * math.sqrt(p * (1 - p) / 20_000)


def test_agreement_is_exact() -> None:
    """E[p² + (1 − p)²] against two simulated labelers on the same pairs."""
    g = torch.Generator().manual_seed(7)
    gold = torch.randint(0, 4, (50_000, 2), generator=g).double()
    a = WORLD.rank(gold, g)[:, 0]
    b = WORLD.rank(gold, g)[:, 0]
    p = WORLD.prefer_prob(gold[:, 0], gold[:, 1])
    simulated = (a == b).double().mean().item()
    assert abs(simulated - labeler_agreement(p)) < 0.01
    assert labeler_agreement(p) <= bayes_ceiling(p)


def test_calibrated_temperature_hits_the_target() -> None:
    delta = torch.tensor([0.25, 1.0, 2.0, 3.0])
    tau = calibrate_temperature(delta, 0.75)
    assert abs(labeler_agreement(torch.sigmoid(delta / tau)) - 0.75) < 1e-6


@pytest.mark.parametrize("n_args", [2, 3])
def test_raw_segments_match_the_reference(n_args: int) -> None:
    world = InstructionWorld(WorldConfig(n_args=n_args))
    g = torch.Generator().manual_seed(8)
    inst = world.sample_instances(90, g)
    fmt = torch.arange(90) % 3
    fast = world.raw_segments(inst, fmt)
    for i in range(90):
        ref = world.raw_segment(
            int(inst.family[i]),
            inst.digits[i].tolist(),
            inst.answer[i, : inst.answer_len[i]].tolist(),
            i % 3,
        )
        assert fast[i].tolist() == ref


def test_filler_follows_the_markov_source() -> None:
    f = WORLD.filler(100_000, 2, torch.Generator().manual_seed(9)) - WORLD.vocab.first_filler
    V = WORLD.cfg.n_filler
    counts = torch.zeros(V, V, dtype=torch.float64)
    counts.index_put_((f[:, 0], f[:, 1]), torch.ones(len(f), dtype=torch.float64), accumulate=True)
    empirical = counts / counts.sum(1, keepdim=True)
    assert (empirical - WORLD.markov.transition).abs().max() < 0.02


def test_filler_stays_within_the_filler_words_when_the_cdf_ends_below_one(monkeypatch) -> None:
    """In float32 a row's cumulative sum can end a rounding short of 1 while u can come closer:
    the sampled index must still be a filler word, the last one (here the shortfall is made
    large, 0.001, so that it happens often)."""
    world = InstructionWorld(WorldConfig(n_filler=4))
    short = torch.full((4, 4), 0.24975, dtype=torch.float64)  # each row sums to 0.999
    monkeypatch.setattr(world.markov, "transition", short)
    f = world.filler(20_000, 3, torch.Generator().manual_seed(5)) - world.vocab.first_filler
    assert f.min() >= 0 and f.max() == 3
    share_last = (f[:, 1:] == 3).double().mean().item()
    assert abs(share_last - (0.24975 + 0.001)) < 0.01  # the shortfall goes to the last word


def _plackett_luce(s: list[float], order: tuple[int, ...]) -> float:
    """P(ranking = order) = Π_i exp(s_{order_i}) / Σ_{j ≥ i} exp(s_{order_j})."""
    p = 1.0
    for i in range(len(order)):
        p *= math.exp(s[order[i]]) / sum(math.exp(s[j]) for j in order[i:])
    return p


def test_plackett_luce_rankings_of_four_follow_the_model() -> None:
    """K = 4 as InstructGPT ranks, lopsided scores, every one of the 24 orders against its
    Plackett–Luce probability: a flipped Gumbel sign (invisible at K = 2) or a ranking read
    worst-first fails here."""
    import itertools

    tau = WORLD.cfg.label_temperature
    s = [2.0, -1.0, 0.5, 0.0]  # r*/τ: no symmetry between the top and the bottom
    n = 40_000
    gold = (torch.tensor(s, dtype=torch.float64) * tau).repeat(n, 1)
    ranks = WORLD.rank(gold, torch.Generator().manual_seed(8))
    assert ranks.shape == (n, 4)
    assert (ranks.sort(1).values == torch.arange(4)).all()  # each a permutation
    counts = {}
    for row in map(tuple, ranks.tolist()):
        counts[row] = counts.get(row, 0) + 1
    for order in itertools.permutations(range(4)):
        p = _plackett_luce(s, order)
        p_hat = counts.get(order, 0) / n
        assert abs(p_hat - p) < 4.5 * math.sqrt(p * (1 - p) / n) + 1e-4, order
    # the top choice is the softmax of the scores; the last is not the softmax of −scores
    top = torch.bincount(ranks[:, 0], minlength=4).double() / n
    torch.testing.assert_close(top, torch.tensor(s).double().softmax(0), atol=0.012, rtol=0)


def test_bayes_ceiling_and_agreement_on_lopsided_pairs() -> None:
    p = torch.tensor([0.9, 0.2, 0.5, 0.65], dtype=torch.float64)
    assert bayes_ceiling(p) == pytest.approx((0.9 + 0.8 + 0.5 + 0.65) / 4)
    assert labeler_agreement(p) == pytest.approx(
        (0.81 + 0.01 + 0.04 + 0.64 + 0.25 + 0.25 + 0.4225 + 0.1225) / 4
    )
    pa = WORLD.prefer_prob(torch.tensor(2.0), torch.tensor(0.5)).item()
    assert pa == pytest.approx(1 / (1 + math.exp(-1.5 / WORLD.cfg.label_temperature)))
    assert WORLD.prefer_prob(torch.tensor(0.5), torch.tensor(2.0)).item() == pytest.approx(1 - pa)


@pytest.mark.parametrize("target", [0.6, 0.9])
def test_calibrated_temperature_for_other_targets_and_brackets(target: float) -> None:
    delta = torch.tensor([0.5, 1.5, 4.0])
    tau = calibrate_temperature(delta, target, lo=1e-2, hi=1e2)
    assert abs(labeler_agreement(torch.sigmoid(delta.double() / tau)) - target) < 1e-6
    assert 1e-2 < tau < 1e2


def _judge_ref(world: InstructionWorld, family: int, digits: list[int], resp: list[int], stop):
    """One response parsed by hand: the body is everything before the first stop token."""
    v = world.vocab
    answer = [v.digit0 + a for a in answers_ref(family, digits)]
    body = resp[: resp.index(stop)] if stop in resp else resp
    right = sum(1 for i, a in enumerate(answer) if i < len(body) and body[i] == a)
    return {
        "correct": body == answer,
        "stops": stop in resp,
        "format_ok": stop in resp
        and len(body) > 0
        and all(v.digit0 <= t < v.digit0 + 10 for t in body),
        "digits_right": right / len(answer),
        "ramble": max(0, len(body) - len(answer)),
        "forbidden": v.bad in body,
    }


@pytest.mark.parametrize(("n_args", "stop"), [(2, None), (3, None), (3, ";")])
def test_judge_and_gold_reward_match_a_hand_parse(n_args: int, stop) -> None:
    """Random responses mixing digits (often the right ones), stop tokens, `<bad>`, filler and
    padding, against the parse written out per response and r* from its formula (rambling
    capped); `stop` = `;` for raw-format continuations. Non-default weights, so each term
    has its own scale."""
    cfg = WorldConfig(
        n_args=n_args, w_correct=3.0, w_digits=0.7, w_stop=1.3, w_ramble=0.4, ramble_cap=2,
        w_forbidden=1.9,
    )  # fmt: skip
    world = InstructionWorld(cfg)
    v = world.vocab
    stop_id = v.eot if stop is None else v.id[stop]
    g = torch.Generator().manual_seed(12)
    inst = world.sample_instances(600, g)
    R = n_args + 4  # longer than the gold response: room to ramble
    gold = torch.full((600, R), v.pad)
    gold[:, : world.response_len] = world.gold_responses(inst)
    gold[gold == v.eot] = stop_id
    noise = torch.randint(v.digit0, v.digit0 + 10, (600, R), generator=g)
    others = torch.tensor([stop_id, v.bad, v.first_filler + 3, v.pad, v.task0])  # task0: 9 + 1
    noise = torch.where(
        torch.rand(600, R, generator=g) < 0.3,
        others[torch.randint(0, 5, (600, R), generator=g)],
        noise,
    )
    keep = torch.rand(600, R, generator=g) < torch.rand(600, 1, generator=g)
    responses = torch.where(keep, gold, noise)
    j = world.judge(inst, responses, stop=None if stop is None else stop_id)
    r = world.gold_reward(inst, responses) if stop is None else None
    seen = {k: set() for k in j}
    for i in range(600):
        ref = _judge_ref(
            world, int(inst.family[i]), inst.digits[i].tolist(), responses[i].tolist(), stop_id
        )
        for k, want in ref.items():
            got = j[k][i].item()
            assert got == pytest.approx(want), (i, k)
            seen[k].add(want)
        if r is not None:
            want_r = (
                cfg.w_correct * ref["correct"] + cfg.w_digits * ref["digits_right"]
                + cfg.w_stop * ref["stops"] - cfg.w_ramble * min(ref["ramble"], cfg.ramble_cap)
                - cfg.w_forbidden * ref["forbidden"]
            )  # fmt: skip
            assert r[i].item() == pytest.approx(want_r, rel=1e-6), i
    # every outcome occurs: both truth values, partial credit, rambling past the cap
    assert all(len(seen[k]) == 2 for k in ("correct", "stops", "format_ok", "forbidden"))
    assert len(seen["digits_right"]) >= 3 and max(seen["ramble"]) > cfg.ramble_cap


def test_few_shot_prompts_are_solved_exchanges_then_the_query() -> None:
    """`shots` blocks of S tokens, each `<user> TASK args <assistant>` of some instance followed
    by that instance's gold answer (answers_ref) and `<eot>`, then the query's prompt."""
    world = InstructionWorld(WorldConfig(n_args=3))
    v, S, P = world.vocab, world.slot_len, world.prompt_len
    g = torch.Generator().manual_seed(13)
    inst = world.sample_instances(50, g, families=("max",))
    tokens = world.few_shot_prompts(inst, 3, g)
    assert tokens.shape == (50, 3 * S + P)
    assert torch.equal(tokens[:, 3 * S :], world.prompts(inst))
    families = set()
    for row in tokens.tolist():
        for k in range(3):
            block = row[k * S : (k + 1) * S]
            assert block[0] == v.user and block[P - 1] == v.assistant
            family, digits = block[1] - v.task0, [t - v.digit0 for t in block[2 : P - 1]]
            answer = [v.digit0 + a for a in answers_ref(family, digits)]
            assert block[P:] == answer + [v.eot] + [v.pad] * (S - P - len(answer) - 1)
            families.add(FAMILIES[family])
    assert len(families) == len(FAMILIES)  # shots come from every family, not the query's


def test_raw_prompts_decode_and_vocabulary() -> None:
    """The raw prompt is raw format 0 up to `=`; words decode by id."""
    world = InstructionWorld(WorldConfig(n_args=3, n_filler=5))
    v = world.vocab
    assert len(v) == world.vocab_size == 1 + 10 + len(FAMILIES) + 6 + 3 + 5
    assert v.words[v.task0] == FAMILIES[0] and v.words[v.digit0] == "0"
    assert v.words[v.first_filler] == "<bad>" == v.words[v.bad]
    assert v.words[-1] == "w4" and v.words[v.eot] == "<eot>"
    inst = world.sample_instances(40, torch.Generator().manual_seed(14))
    raw = world.raw_prompts(inst)
    for i in range(40):
        seg = world.raw_segment(int(inst.family[i]), inst.digits[i].tolist(), [], 0)
        assert raw[i].tolist() == seg[: 3 + 2]
    sort = FAMILIES.index("sort")
    ids = [v.user, v.task0 + sort, v.digit0 + 7, v.digit0 + 0, v.assistant, v.bad]
    assert v.decode(torch.tensor(ids)) == "<user> sort 7 0 <assistant> <bad>"
    assert v.decode(ids) == v.decode(torch.tensor(ids))
    assert v.pad == 0 and v.decode([v.pad, v.digit0 + 9]) == "<pad> 9"
    digits = torch.tensor([[7, 0, 4], [2, 9, 9]])
    family = torch.tensor([sort, FAMILIES.index("count")])
    inst = Instances(family, digits, *answers(family, digits))
    prompts = world.prompts(inst)
    assert prompts.shape == (2, world.prompt_len)
    assert v.decode(prompts[0]) == "<user> sort 7 0 4 <assistant>"
    assert v.decode(prompts[1]) == "<user> count 2 9 9 <assistant>"
    gold = world.gold_responses(inst)
    assert gold.shape == (2, world.response_len) == (2, 3 + 1)  # the longest answer and <eot>
    assert v.decode(gold[0]) == "0 4 7 <eot>" and v.decode(gold[1]) == "2 <eot> <pad> <pad>"


def test_corrupted_demonstrations_are_wrong_or_broken() -> None:
    """With corrupt = 1 every demonstration is changed: about half get their first answer digit
    moved (the rest, the `<eot>` included, intact), the others keep the answer but lose the
    `<eot>` to filler words that are never `<bad>`; a broken one is trained on in full."""
    world = InstructionWorld(WorldConfig(n_args=3))
    v, P = world.vocab, world.prompt_len
    inst = world.sample_instances(400, torch.Generator().manual_seed(15))
    gold = world.gold_responses(inst)
    tokens, mask = world.demonstrations(inst, torch.Generator().manual_seed(16), corrupt=1.0)
    resp = tokens[:, P:]
    wrong = 0
    for i in range(400):
        n = int(inst.answer_len[i])
        if (resp[i] == v.eot).any():  # a wrong answer
            wrong += 1
            assert resp[i, 0] != gold[i, 0] and v.digit0 <= resp[i, 0] < v.digit0 + 10
            assert torch.equal(resp[i, 1:], gold[i, 1:])
            assert mask[i, P:].sum() == n + 1
        else:  # a broken format
            assert torch.equal(resp[i, :n], gold[i, :n])
            tail = resp[i, n:]
            assert ((tail > v.bad) & (tail < v.first_filler + world.cfg.n_filler)).all()
            assert mask[i, P:].all()
    assert abs(wrong / 400 - 0.5) < 4 * math.sqrt(0.25 / 400)
    has_eot = (resp == v.eot).any(1)
    moved = (resp[has_eot, 0] - gold[has_eot, 0]) % 10
    assert set(moved.tolist()) == set(range(1, 10))  # by 1 … 9
    assert mask.dtype == torch.bool
    fillers = resp[resp >= v.first_filler]
    assert fillers.unique().numel() == world.cfg.n_filler - 1  # w1 … w15 all drawn
    with pytest.raises(AssertionError, match="^corrupting demonstrations needs a generator$"):
        world.demonstrations(inst, corrupt=0.5)


@pytest.mark.parametrize(("raw_formats", "filler_fraction"), [(3, 0.3), (1, 0.6)])
def test_pretraining_segments_use_the_configured_formats_and_filler_share(
    raw_formats: int, filler_fraction: float
) -> None:
    """Every slot is filler with probability `filler_fraction`, else one instance in one of the
    first `raw_formats` raw formats, drawn uniformly; each segment equals `raw_segment`."""
    world = InstructionWorld(WorldConfig(raw_formats=raw_formats, filler_fraction=filler_fraction))
    v, S = world.vocab, world.slot_len
    text = world.pretraining_batch(300, 4, torch.Generator().manual_seed(17))
    counts = {"filler": 0, 0: 0, 1: 0, 2: 0}
    for row in text.tolist():
        for k in range(4):
            seg = row[k * S : (k + 1) * S]
            if seg[0] >= v.first_filler:
                assert all(t >= v.first_filler for t in seg)
                counts["filler"] += 1
                continue
            if seg[0] == v.id["("]:
                fmt, family, digits = 1, seg[1] - v.task0, seg[2 : 2 + world.cfg.n_args]
            elif seg[0] >= v.task0:
                fmt, family, digits = 0, seg[0] - v.task0, seg[1 : 1 + world.cfg.n_args]
            else:
                fmt, n = 2, world.cfg.n_args
                family, digits = seg[n] - v.task0, seg[:n]
            digits = [t - v.digit0 for t in digits]
            assert seg == world.raw_segment(family, digits, answers_ref(family, digits), fmt)
            counts[fmt] += 1
    total = 300 * 4
    assert abs(counts["filler"] / total - filler_fraction) < 4 * math.sqrt(0.25 / total)
    tasks = total - counts["filler"]
    for fmt in range(3):
        want = 1 / raw_formats if fmt < raw_formats else 0.0
        assert abs(counts[fmt] / tasks - want) < 4 * math.sqrt(0.25 / tasks)


def test_instances_are_indexed_field_by_field() -> None:
    """A slice or a mask picks the same rows of family, digits, answer and answer length."""
    inst = WORLD.sample_instances(30, torch.Generator().manual_seed(18))
    mask = inst.family % 3 == 1
    for index in (slice(4, 17), mask):
        sub = inst[index]
        assert len(sub) == len(inst.family[index])
        assert torch.equal(sub.family, inst.family[index])
        assert torch.equal(sub.digits, inst.digits[index])
        assert torch.equal(sub.answer, inst.answer[index])
        assert torch.equal(sub.answer_len, inst.answer_len[index])


def test_random_draws_come_from_the_generator_only() -> None:
    """The same generator seed gives the same output whatever the global torch seed: instances,
    corrupted demonstrations, few-shot prompts, pretraining text and rankings."""

    def draw(global_seed: int) -> list[torch.Tensor]:
        torch.manual_seed(global_seed)
        g = torch.Generator().manual_seed(19)
        inst = WORLD.sample_instances(64, g)
        tokens, _ = WORLD.demonstrations(inst, g, corrupt=0.7)
        gold = torch.rand(64, 4, generator=g)
        return [
            inst.family, inst.digits, tokens, WORLD.few_shot_prompts(inst, 2, g),
            WORLD.pretraining_batch(16, 3, g), WORLD.rank(gold, g),
        ]  # fmt: skip

    for a, b in zip(draw(1), draw(2), strict=True):
        assert torch.equal(a, b)


def test_filler_source_and_held_out_text_follow_the_config() -> None:
    """The filler is the order-1 Markov source of `n_filler` words and `markov_seed`; the
    held-out text is the pretraining text of seed 10 007 (fixed across runs)."""
    from repro.data.markov import MarkovConfig, MarkovSource

    world = InstructionWorld(WorldConfig(n_filler=5, markov_seed=3))
    want = MarkovSource(MarkovConfig(vocab_size=5, order=1, seed=3)).transition
    assert torch.equal(world.markov.transition, want)
    held = world.heldout_text(4, 2)
    assert torch.equal(held, world.pretraining_batch(4, 2, torch.Generator().manual_seed(10_007)))


def test_calibration_stops_at_the_end_of_its_bracket() -> None:
    """τ is searched in [1e-3, 1e3] by default: a target no τ in it reaches gives the nearer
    end (agreement just above ½ needs a huge τ; certain agreement, τ → 0)."""
    delta = torch.tensor([0.5, 1.5, 4.0])
    assert calibrate_temperature(delta, 0.5 + 1e-9) == pytest.approx(1e3, rel=1e-9)
    assert calibrate_temperature(delta, 1.0) == pytest.approx(1e-3, rel=1e-9)
