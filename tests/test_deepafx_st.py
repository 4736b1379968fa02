"""DeepAFx-ST: the torch mirror of peq_comp against scipy and pedalboard, gradients, the system's contract."""

import math

import numpy as np
import pedalboard as pb
import pytest
import scipy.signal as ss
import torch

from baselines.deepafx_st import dsp
from bench.effects import get_effect, probe_signal
from bench.effects.builtin import PEQ6_BANDS, _eq_plugins
from bench.systems import CheckpointError, FitContext, get_system
from bench.tasks import Task

SR = 24000
TINY = dict(width=0.25, depth=0.25, stages=3, embed_dim=16, hidden=16, n_fft=256, hop=128, steps=2, batch_size=2,
            train_examples=4, valid_examples=2, loss_fft_sizes=[64, 256], log_every=1, eval_batch=4)
SETTINGS = [("low", 20.0, 12.0, 0.5), ("low", 150.0, -9.0, 1.0), ("peak", 200.0, 12.0, 6.0),
            ("peak", 1000.0, -12.0, 0.7), ("peak", 7000.0, 6.0, 3.0), ("high", 4000.0, -12.0, 0.5),
            ("high", 10000.0, 9.0, 1.0)]


def coeffs(kind, f, g, q):
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731  (float64: the formulas, not their rounding)
    b, a = dsp.biquad(kind, t(f), t(g), t(q), SR)
    return b.numpy(), a.numpy()


@pytest.mark.parametrize("kind,f,g,q", SETTINGS)
def test_biquad_response_is_the_analytic_one(kind, f, g, q):
    b, a = coeffs(kind, f, g, q)
    n_fft = 4096
    H = dsp.freq_response(torch.from_numpy(b)[None, None], torch.from_numpy(a)[None, None], n_fft)[0].numpy()
    w, ref = ss.freqz(b, a, worN=np.linspace(0, np.pi, n_fft // 2 + 1))
    assert np.allclose(H, ref, rtol=1e-9, atol=1e-9)
    # the textbook properties of the three shapes (JUCE = RBJ cookbook forms)
    db = lambda z: 20 * np.log10(np.abs(z))  # noqa: E731
    if kind == "peak":
        centre = ss.freqz(b, a, worN=[2 * np.pi * f / SR])[1]
        assert db(centre)[0] == pytest.approx(g, abs=1e-3)
        assert abs(db(H[0])) < 0.05 and abs(db(H[-1])) < 0.5
    elif kind == "low":
        assert db(H[0]) == pytest.approx(g, abs=1e-3) and abs(db(H[-1])) < 1e-3
    else:
        assert db(H[-1]) == pytest.approx(g, abs=1e-3) and abs(db(H[0])) < 1e-3


def test_eq_matches_pedalboard_on_an_impulse():
    eff = get_effect("peq_comp")
    m = dsp.PEQComp(SR, eff)
    rng = np.random.default_rng(0)
    x = np.zeros(SR // 2, np.float32)
    x[0] = 1.0
    for _ in range(6):
        p = rng.uniform(0, 1, eff.n_params).astype(np.float32)
        ref = pb.Pedalboard(_eq_plugins(eff.to_physical(p), PEQ6_BANDS, SR))(x[None], SR)[0]
        with torch.no_grad():
            out = m.eq(torch.from_numpy(x)[None], torch.from_numpy(p)[None])[0].numpy()
        assert np.abs(out - ref).max() < 2e-4 * max(1.0, np.abs(ref).max())
        # and the magnitude response agrees with scipy's on the same float32 coefficients, band by band
        b, a = m.eq_coefficients(m.physical(torch.from_numpy(p)[None]))
        total = np.ones(SR // 4 + 1, complex)
        for s in range(6):
            total *= ss.freqz(b[0, s].double().numpy(), a[0, s].double().numpy(), worN=SR // 4 + 1)[1]
        spec = np.fft.rfft(ref)
        assert np.allclose(np.abs(spec), np.abs(total), rtol=2e-3, atol=1e-4)


def test_static_curve_matches_formula_and_pedalboard():
    levels = np.array([-40.0, -30.0, -21.0, -20.0, -12.0, -6.0, -1.0])
    for thr, ratio in [(-20.0, 4.0), (-35.0, 20.0), (-10.0, 1.5)]:
        n = SR // 2
        x = torch.from_numpy(np.repeat(10 ** (levels / 20), n).reshape(len(levels), n).astype(np.float32))
        B = len(levels)
        y = dsp.compress(x, torch.full((B,), thr), torch.full((B,), ratio), torch.full((B,), 1.0),
                         torch.full((B,), 100.0), torch.zeros(B), SR)
        out_db = 20 * np.log10(y[:, -1].numpy())  # steady state
        want = dsp.static_curve_db(torch.from_numpy(levels), torch.tensor(thr), torch.tensor(ratio)).numpy()
        assert np.allclose(out_db, want, atol=1e-3)
        assert np.allclose(out_db[levels < thr], levels[levels < thr], atol=1e-4)  # unity gain below threshold
        for lv, got in zip(levels, out_db, strict=True):
            sig = np.full((1, n), 10 ** (lv / 20), np.float32)
            pbo = pb.Compressor(threshold_db=thr, ratio=ratio, attack_ms=1.0, release_ms=100.0)(sig, SR)[0]
            assert 20 * np.log10(pbo[-1]) == pytest.approx(got, abs=1e-3)


def test_whole_effect_matches_pedalboard_peq_comp():
    r = dsp.mismatch(8, sample_rate=SR, seconds=0.5, seed=3)
    assert r["mrstft_mean"] < 0.01 < r["mrstft_input_vs_pedalboard"]
    assert r["rel_rms_err_mean"] < 1e-3


def test_envelope_gradient_is_exact():
    torch.manual_seed(0)
    a = torch.randn(2, 200, dtype=torch.float64).abs().requires_grad_()
    ca = torch.tensor([0.6, 0.9], dtype=torch.float64, requires_grad=True)
    cr = torch.tensor([0.99, 0.95], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(dsp._Envelope.apply, (a, ca, cr), eps=1e-7, atol=1e-6)


def test_gradient_reaches_every_parameter():
    eff = get_effect("peq_comp")
    m = dsp.PEQComp(SR, eff)
    x = torch.from_numpy(np.tile(probe_signal(SR, 0.5), (2, 1)))
    target = torch.from_numpy(eff.process(x.numpy(), SR, np.stack([eff.sample(np.random.default_rng(i), SR)
                                                                    for i in range(2)])))
    p = torch.full((2, eff.n_params), 0.5)
    for i, n in enumerate(eff.param_names):
        if n.endswith("gain_db"):
            p[:, i] = 0.8  # +7.2 dB: at 0 dB a band is the identity and its frequency and Q rightly get no gradient
    p[:, eff.param_names.index("threshold_db")] = 0.3  # -35 dB: the compressor acts, so its knobs matter
    p.requires_grad_()
    y = m(x, p)
    loss = (y - target).abs().mean() + (torch.stft(y, 512, 128, window=torch.hann_window(512), return_complex=True)
                                        .abs() + 1e-5).log().mean()
    loss.backward()
    g = p.grad.abs().sum(0)
    assert torch.isfinite(p.grad).all()
    dead = [n for n, v in zip(eff.param_names, g.tolist(), strict=True) if v == 0]
    assert not dead, f"no gradient reaches {dead}"


def task(tones, effect, split, n=6000):
    return Task(tones, get_effect(effect), split, segment_samples=n, seed=0)


@pytest.mark.parametrize("name", ["deepafx_st_autodiff", "deepafx_st_spsa"])
def test_fit_save_load_match(tones, tmp_path, name):
    s = get_system(name, TINY, sample_rate=SR)
    # only a peq4 task configured: training falls back to peq_comp tasks on the same corpus
    s.fit([task(tones, "peq4", "train")], FitContext(valid_tasks=[task(tones, "peq_comp", "valid")], workers=1,
                                                     progress=False))
    assert s.train_stats["steps"] == 2 and s.train_stats["examples_per_second"] > 0
    # every network weight moved (gradients reached encoder and controller)
    fresh = get_system(name, TINY, sample_rate=SR)
    torch.manual_seed(0)
    fresh.model = fresh._build_model()
    moved = [k for k, v in s.model.state_dict().items() if v.dtype.is_floating_point and "running" not in k
             and not torch.equal(v, fresh.model.state_dict()[k])]
    weights = [k for k, v in s.model.state_dict().items() if v.dtype.is_floating_point and "running" not in k]
    assert len(moved) == len(weights)

    ex = task(tones, "peq_comp", "test").examples(3)
    eff = get_effect("peq_comp")
    est = s.match_examples(ex, eff)
    s.save(tmp_path / "ck")
    other = get_system(name, TINY, sample_rate=SR)
    other.load(tmp_path / "ck")
    again = other.match_examples(ex, eff)
    for a, b, e in zip(est, again, ex, strict=True):
        assert a.params01.shape == (23,) and np.array_equal(a.params01, b.params01)
        assert np.array_equal(a.output, b.output)
        # the output is pedalboard's peq_comp with the predicted settings
        assert np.allclose(a.output, eff.process(e.input, SR, a.params01), atol=1e-6)
    # another effect: still the EQ + compressor output, but no parameters
    delay = other.match_examples(task(tones, "delay", "test").examples(2), get_effect("delay"))
    assert all(d.params01 is None and d.output.shape == (6000,) for d in delay)


def test_bad_checkpoints_fail_clearly(tmp_path):
    s = get_system("deepafx_st_autodiff", TINY, sample_rate=SR)
    with pytest.raises(CheckpointError, match=r"deepafx_st_autodiff.*nowhere"):
        s.load(tmp_path / "nowhere")
    s.save(tmp_path / "a")
    with pytest.raises(CheckpointError, match=r"deepafx_st_spsa.*checkpoint of 'deepafx_st_autodiff'"):
        get_system("deepafx_st_spsa", TINY, sample_rate=SR).load(tmp_path / "a")
    wider = get_system("deepafx_st_autodiff", {**TINY, "width": 0.5}, sample_rate=SR)
    with pytest.raises(CheckpointError, match=r"deepafx_st_autodiff: checkpoint .*/a does not fit"):
        wider.load(tmp_path / "a")
    # weights_only loading: the file holds tensors only
    assert torch.load(tmp_path / "a" / "model.pt", weights_only=True)


def test_divergence_names_the_step(tones):
    from models.nn import DivergedError

    s = get_system("deepafx_st_autodiff", {**TINY, "steps": 3}, sample_rate=SR)
    s.dsp.lo[0] = float("nan")  # a corrupted gain range: the first loss is NaN
    with pytest.raises(DivergedError, match="deepafx_st_autodiff: loss is nan at step 1"):
        s.fit([task(tones, "peq_comp", "train")], FitContext(workers=1, progress=False))


def test_config_is_checked():
    with pytest.raises(ValueError, match="unknown key"):
        get_system("deepafx_st_autodiff", {"widht": 1.0})
    with pytest.raises(ValueError, match="stages"):
        get_system("deepafx_st_autodiff", {"stages": 9})
    with pytest.raises(ValueError, match="spsa_eps"):
        get_system("deepafx_st_spsa", {"spsa_eps": 0.7})


def test_search_space_gives_valid_configs():
    import optuna

    for name in ("deepafx_st_autodiff", "deepafx_st_spsa"):
        cls = type(get_system(name, TINY))
        trial = optuna.trial.FixedTrial({"lr": 1e-3, "width": 0.25, "depth": 0.25, "embed_dim": 128, "hidden": 128,
                                         "l1_weight": 10.0, "spsa_eps": 0.01})
        space = cls.search_space(trial)
        assert space["lr"] == 1e-3 and ("spsa_eps" in space) == (name == "deepafx_st_spsa")
        get_system(name, {**TINY, **space})


@pytest.mark.slow
def test_autodiff_training_beats_the_input(tones):
    import auraloss

    cfg = {**TINY, "steps": 60, "batch_size": 8, "train_examples": 128, "lr": 3e-3, "embed_dim": 32, "hidden": 64,
           "loss_fft_sizes": [256, 1024]}
    s = get_system("deepafx_st_autodiff", cfg, sample_rate=SR)
    s.fit([task(tones, "peq_comp", "train", 12000)], FitContext(workers=1, progress=False))
    ex = task(tones, "peq_comp", "test", 12000).examples(12)
    est = s.match_examples(ex, get_effect("peq_comp"))
    loss = auraloss.freq.MultiResolutionSTFTLoss()

    def mr(outs):
        return np.mean([float(loss(torch.from_numpy(np.asarray(o))[None, None], torch.from_numpy(e.target)[None, None]))
                        for o, e in zip(outs, ex, strict=True)])

    assert mr([e.output for e in est]) < mr([e.input for e in ex])
    assert math.isfinite(s.train_stats["loss"])
