"""LogitSampler draws exactly from llama.cpp's chain distribution: checked by chi-square on synthetic logits."""

from __future__ import annotations

import ctypes
import math

import numpy as np
import pytest

from app.core.sampler import TOKEN_DATA, LogitSampler, SamplerSettings, SamplingError, logits_view
from tests.fixtures.stats import Z_LIMIT, assert_fits, chi_square_z, penalised, softmax, top_p_probs

N_DRAWS = 10_000


def _logits(n: int = 300, spread: float = 1.5, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * spread).astype(np.float32)


def _draws(sampler: LogitSampler, logits: np.ndarray, n: int = N_DRAWS) -> list[int]:
    return [sampler.sample(logits) for _ in range(n)]


def test_plain_draws_follow_the_softmax() -> None:
    x = _logits()
    draws = _draws(LogitSampler(len(x), SamplerSettings(seed=1)), x)
    assert_fits(draws, softmax(x))


def test_the_fit_test_has_power() -> None:
    """The same draws against a slightly wrong distribution must fail: the check can fail."""
    x = _logits()
    draws = _draws(LogitSampler(len(x), SamplerSettings(seed=1)), x)
    assert chi_square_z(draws, softmax(x, temperature=0.9)) > Z_LIMIT
    assert chi_square_z(draws, softmax(np.roll(x, 1))) > Z_LIMIT


@pytest.mark.parametrize("temperature", [0.5, 1.7])
def test_temperature_reshapes_the_distribution(temperature: float) -> None:
    x = _logits()
    draws = _draws(LogitSampler(len(x), SamplerSettings(temperature=temperature, seed=2)), x)
    assert_fits(draws, softmax(x, temperature))
    assert chi_square_z(draws, softmax(x)) > Z_LIMIT


def test_temperature_zero_is_greedy() -> None:
    x = _logits()
    s = LogitSampler(len(x), SamplerSettings(temperature=0.0, seed=3))
    assert {s.sample(x) for _ in range(50)} == {int(np.argmax(x))}


def test_top_k_keeps_the_k_most_likely_renormalised() -> None:
    x = _logits()
    draws = _draws(LogitSampler(len(x), SamplerSettings(top_k=7, seed=4)), x)
    keep = np.argsort(-x)[:7]
    ref = np.zeros(len(x))
    ref[keep] = softmax(x[keep])
    assert set(draws) <= set(keep.tolist())
    assert_fits(draws, ref)


@pytest.mark.parametrize("top_p", [0.3, 0.9])
def test_top_p_keeps_the_nucleus(top_p: float) -> None:
    x = _logits()
    draws = _draws(LogitSampler(len(x), SamplerSettings(top_p=top_p, seed=5)), x)
    assert_fits(draws, top_p_probs(softmax(x), top_p))


def test_top_p_then_temperature_in_llama_cpp_order() -> None:
    """The nucleus is chosen on the untempered probabilities, then temperature reshapes inside it."""
    x = _logits()
    draws = _draws(LogitSampler(len(x), SamplerSettings(top_p=0.6, temperature=2.0, seed=6)), x)
    nucleus = top_p_probs(softmax(x), 0.6) > 0
    ref = np.where(nucleus, softmax(x, 2.0), 0.0)
    assert_fits(draws, ref / ref.sum())


def test_min_p_drops_unlikely_tokens() -> None:
    x = _logits()
    draws = _draws(LogitSampler(len(x), SamplerSettings(min_p=0.2, seed=7)), x)
    p = softmax(x)
    ref = np.where(p >= 0.2 * p.max(), p, 0.0)
    assert_fits(draws, ref / ref.sum())


def test_top_k_top_p_min_p_together() -> None:
    x = _logits(spread=2.5)
    s = SamplerSettings(top_k=20, top_p=0.8, min_p=0.05, temperature=0.8, seed=8)
    draws = _draws(LogitSampler(len(x), s), x)
    keep = np.argsort(-x)[:20]
    p_k = np.zeros(len(x))
    p_k[keep] = softmax(x[keep])
    nucleus = top_p_probs(p_k, 0.8) > 0
    allowed = nucleus & (softmax(x) >= 0.05 * softmax(x).max())
    ref = np.where(allowed, softmax(x, 0.8), 0.0)
    assert_fits(draws, ref / ref.sum())


def test_repeat_penalty_uses_recent_context_but_not_control_tokens() -> None:
    x = _logits()
    x[:10] = np.abs(x[:10]) + 2.0  # strong positive logits: a penalty visibly lowers them
    x[10:20] = -np.abs(x[10:20])  # negative ones: the penalty multiplies
    history = [0, 1, 2, 3, 12, 13, 5]
    control = {5}
    s = LogitSampler(len(x), SamplerSettings(repeat_penalty=1.8, seed=9), history=history, unpenalised=control)
    draws = _draws(s, x)  # no accept(): the history stays as given
    assert_fits(draws, softmax(penalised(x, [0, 1, 2, 3, 12, 13], 1.8)))
    assert chi_square_z(draws, softmax(x)) > Z_LIMIT


def test_repeat_penalty_remembers_only_the_last_64_tokens() -> None:
    x = np.zeros(200, dtype=np.float32)
    x[0] = 5.0
    s = LogitSampler(len(x), SamplerSettings(temperature=0.0, repeat_penalty=100.0), history=[0])
    x[1] = 4.0  # 5 / 100 < 4: token 0 is penalised away
    assert s.sample(x) == 1
    for t in range(100, 164):  # 64 newer tokens push token 0 out of the window
        s.accept(t)
    assert s.sample(x) == 0


def test_frequency_and_presence_penalties_subtract_per_count_and_once() -> None:
    """OpenAI's (and llama.cpp's) definition: logit - count × frequency - presence, for each
    token seen in the recent context; control tokens are never penalised."""
    x = _logits()
    x[:3] = 3.0  # likely tokens, so the penalty's effect is visible in the draws
    history = [0, 0, 0, 1, 2, 2, 7]
    control = {7}
    s = LogitSampler(
        len(x),
        SamplerSettings(frequency_penalty=0.4, presence_penalty=0.7, seed=11),
        history=history,
        unpenalised=control,
    )
    ref = x.astype(np.float64)
    for token, count in ((0, 3), (1, 1), (2, 2)):
        ref[token] -= count * 0.4 + 0.7
    draws = _draws(s, x)
    assert_fits(draws, softmax(ref))
    assert chi_square_z(draws, softmax(x)) > Z_LIMIT


def test_penalties_combine_in_llama_cpp_order() -> None:
    """Repeat penalty first (scaling), then frequency and presence (subtracting)."""
    x = np.zeros(50, dtype=np.float32)
    x[3], x[4] = 4.0, 3.0
    s = LogitSampler(
        len(x),
        SamplerSettings(temperature=0.0, repeat_penalty=2.0, frequency_penalty=0.5, presence_penalty=0.1),
        history=[3],
    )
    assert s.sample(x) == 4  # 4 / 2 - 0.5 - 0.1 = 1.4 < 3
    s.accept(4)
    s.accept(4)
    assert s.sample(x) == 3  # token 4: 3 / 2 - 2 × 0.5 - 0.1 = 0.4 < 1.4


def test_logit_bias_is_added_and_can_force_or_forbid() -> None:
    x = _logits()
    s = LogitSampler(len(x), SamplerSettings(logit_bias=((5, 1.5), (6, -2.0)), seed=12))
    ref = x.astype(np.float64)
    ref[5] += 1.5
    ref[6] -= 2.0
    assert_fits(_draws(s, x), softmax(ref))
    forced = LogitSampler(len(x), SamplerSettings(logit_bias=((42, 100.0),), seed=13))
    assert {forced.sample(x) for _ in range(200)} == {42}
    never = LogitSampler(len(x), SamplerSettings(temperature=0.0, logit_bias=((int(np.argmax(x)), -100.0),)))
    assert never.sample(x) != int(np.argmax(x))
    out_of_range = LogitSampler(len(x), SamplerSettings(temperature=0.0, logit_bias=((10**6, 5.0), (-1, 5.0))))
    assert out_of_range.sample(x) == int(np.argmax(x))  # ids outside the vocabulary are ignored, not a crash


def test_banned_tokens_are_never_drawn() -> None:
    x = _logits()
    banned = np.argsort(-x)[:3].tolist()  # the three most likely
    draws = _draws(LogitSampler(len(x), SamplerSettings(seed=10), banned=banned), x, 5000)
    assert not set(draws) & set(banned)
    ref = softmax(x)
    ref[banned] = 0
    assert_fits(draws, ref / ref.sum())


def test_mask_callback_edits_llama_token_data() -> None:
    """The grammar hook gets a llama_token_data_array whose -inf logits exclude tokens."""
    x = _logits(100)
    seen: list[int] = []

    def odd_only(address: int) -> None:
        arr = ctypes.cast(address, ctypes.POINTER(ctypes.c_size_t * 2)).contents
        data = np.ctypeslib.as_array((ctypes.c_char * (arr[1] * TOKEN_DATA.itemsize)).from_address(arr[0]))
        cands = data.view(TOKEN_DATA)
        assert (cands["id"] == np.arange(100)).all() and np.allclose(cands["logit"], x)
        cands["logit"][0::2] = -np.inf
        seen.append(1)

    draws = _draws(LogitSampler(len(x), SamplerSettings(seed=11), mask=odd_only), x, 4000)
    assert len(seen) == 4000
    assert all(d % 2 for d in draws)
    ref = softmax(x)
    ref[0::2] = 0
    assert_fits(draws, ref / ref.sum())


def test_nothing_allowed_is_an_error() -> None:
    x = _logits(10)
    with pytest.raises(SamplingError):
        LogitSampler(10, SamplerSettings(), banned=range(10)).sample(x)
    with pytest.raises(SamplingError):
        LogitSampler(10, SamplerSettings()).sample(np.full(10, -np.inf, dtype=np.float32))


def test_same_seed_same_draws_other_seed_other_draws() -> None:
    x = _logits()
    a = _draws(LogitSampler(len(x), SamplerSettings(seed=42)), x, 200)
    b = _draws(LogitSampler(len(x), SamplerSettings(seed=42)), x, 200)
    c = _draws(LogitSampler(len(x), SamplerSettings(seed=43)), x, 200)
    d = _draws(LogitSampler(len(x), SamplerSettings(seed=None)), x, 200)
    assert a == b and a != c and a != d


def test_full_vocabulary_block_search_is_exact() -> None:
    """201,088 tokens (not a multiple of the block size): heavy tokens near block edges and at the
    very end are drawn at their exact rates, the zero padding never."""
    n = 201_088
    x = np.full(n, -4.0, dtype=np.float32)
    heavy = [0, 1023, 1024, 2047, 150_000, n - 2, n - 1]
    x[heavy] = np.log(np.array([3, 5, 7, 9, 11, 13, 15], dtype=np.float32)) + 10.0
    draws = _draws(LogitSampler(n, SamplerSettings(seed=12)), x, 6000)
    assert max(draws) < n
    p = softmax(x)
    binned = [d if d in heavy else -1 for d in draws]
    ref = {t: p[t] for t in heavy}
    ref[-1] = 1.0 - sum(ref.values())
    keys = sorted(ref)
    assert_fits([keys.index(b) for b in binned], [ref[k] for k in keys])


def test_reads_logits_in_place_from_an_address() -> None:
    x = _logits(50)
    view = logits_view(x.ctypes.data, 50)
    x[3] = 9.0
    assert view[3] == 9.0  # a view of the same memory, not a copy
    s = LogitSampler(50, SamplerSettings(seed=1))
    s.sample(view)
    assert np.allclose(view, x)  # the sampler never writes the logits


def test_settings_are_validated_by_behaviour_not_crash() -> None:
    x = _logits(30)
    for s in (SamplerSettings(top_k=10_000), SamplerSettings(top_p=0.0), SamplerSettings(min_p=1.0)):
        t = LogitSampler(30, s).sample(x)
        assert 0 <= t < 30
    # top_p 0 and min_p 1 leave exactly the most likely token.
    assert LogitSampler(30, SamplerSettings(top_p=0.0, seed=1)).sample(x) == int(np.argmax(x))
    assert LogitSampler(30, SamplerSettings(min_p=1.0, seed=1)).sample(x) == int(np.argmax(x))
    assert math.isfinite(float(x.max()))
