"""genfast.diffusers: every drop-in scheduler against the diffusers 0.42.1 class
of the same name, on real diffusers objects built locally (random weights, no
downloads).

Tolerances (used below):
* float32, after every step of a loop of up to 50 steps with a deterministic
  dummy model and the same torch.Generator: atol 2e-4 + rtol 2e-4 (as
  tests/test_steps.py: diffusers' float32 alphas_cumprod / sigmas against
  genfast's float64 plan, compounded over the loop), plus 4 float32 ulp of
  the step's input sample (zero-terminal-SNR loops start at sigma 4096,
  where diffusers' float32 x - sigma eps rounds at that scale).
* float16 / bfloat16 loops: the genfast result's distance to diffusers'
  float64 run is at most 2x diffusers' own low-precision distance plus 4 ulp
  of the dtype at the sample's scale (diffusers' DDPM / DDIM / LCM compute in
  the low precision, genfast always in float32: it is the more exact one).
* pipelines (tiny random UNets): float32 images within 1e-4 of diffusers';
  bfloat16 within the same 2x-plus-ulp bound.
"""

import inspect
import json
import math
import warnings

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
import genfast  # noqa: E402
import genfast.diffusers as G  # noqa: E402

SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
F32 = dict(atol=2e-4, rtol=2e-4)
EPS32 = 2.0 ** -23
ULP = {torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the test machine is shared: one thread keeps the tiny UNets fast
    n = torch.get_num_threads()
    level = diffusers.utils.logging.get_verbosity()
    torch.set_num_threads(1)
    diffusers.utils.logging.set_verbosity_error()
    yield
    torch.set_num_threads(n)
    diffusers.utils.logging.set_verbosity(level)


def dummy_model(x, t, learned=False):
    """Deterministic 'denoiser': smooth in x, depends on the timestep."""
    xf = x.float()
    out = 0.7 * torch.tanh(xf) + 0.05 * math.cos(float(t) / 150.0) + 0.02 * xf * xf.abs().sqrt()
    if learned:  # learned variance in the second half of the channels, in [-1, 1]
        out = torch.cat([out, torch.tanh(0.5 * xf)], dim=1)
    return out.to(x.dtype)


def public(cfg):
    return {k: v for k, v in dict(cfg).items() if not k.startswith("_")}


def pair(name, cfg):
    base = {} if name.startswith("FlowMatch") or name == "LCMScheduler" else SD
    d = getattr(diffusers, name)(**{**base, **cfg})
    return d, getattr(G, name).from_config(d.config)


def loop(s, n, x, *, seed=7, step_kw=None, set_kw=None, learned=False, every=True,
         model_dtype=None):
    """A pipeline's loop; returns the sample after every step and the last
    step's output. ``model_dtype``: the model runs in that dtype (the
    float64 reference of a low-precision run)."""
    s.set_timesteps(n, **(set_kw or {}))
    gen = torch.Generator().manual_seed(seed)
    x = x * getattr(s, "init_noise_sigma", 1.0)
    xs, out = [], None
    for t in s.timesteps:
        xin = s.scale_model_input(x, t) if hasattr(s, "scale_model_input") else x
        if model_dtype is not None:
            m = dummy_model(xin.to(model_dtype), t, learned).to(x.dtype)
        else:
            m = dummy_model(xin, t, learned)
        kw = dict(step_kw or {})
        if "generator" in inspect.signature(s.step).parameters:
            kw["generator"] = gen
        out = s.step(m, t, x, **kw)
        x = out.prev_sample
        if every:
            xs.append(x)
    return xs or [x], out


def draw_low(monkeypatch, sched, dtype):
    """Make diffusers' ``sched`` draw its step noise in ``dtype`` and widen it:
    the float64 reference gets the normals of a low-precision run."""
    import importlib
    mod = importlib.import_module(type(sched).__module__)
    orig = diffusers.utils.torch_utils.randn_tensor

    def randn(shape, generator=None, device=None, dtype_=None, layout=None, **kw):
        want = kw.get("dtype", dtype_)
        return orig(shape, generator=generator, device=device, dtype=dtype).to(want)
    monkeypatch.setattr(mod, "randn_tensor", randn, raising=False)


def low_bound(got, want_lp, want64, dtype):
    """(genfast's error, its bound): 2x diffusers' own low-precision error
    against the float64 reference, plus 4 ulp of the dtype at the scale."""
    err_d = (want_lp.double() - want64.double()).abs().max().item()
    err_g = (got.double() - want64.double()).abs().max().item()
    scale = max(want64.abs().max().item(), 1.0)
    return err_g, 2 * err_d + 4 * ULP[dtype] * scale


def latent(n=2, shape=(4, 8, 8), seed=0, dtype=torch.float32):
    return torch.randn((n,) + shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


# ---------------------------------------------------------------- config grids, fp32

GRID = {
    "DDPMScheduler": [
        {}, dict(SD, clip_sample=False, timestep_spacing="linspace"),
        dict(prediction_type="v_prediction", timestep_spacing="trailing",
             rescale_betas_zero_snr=True, clip_sample=False),
        dict(prediction_type="sample", variance_type="fixed_large"),
        dict(variance_type="fixed_small_log", beta_schedule="squaredcos_cap_v2"),
        dict(variance_type="learned_range", clip_sample=False),
        dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.5),
        dict(beta_schedule="sigmoid", steps_offset=1, clip_sample_range=0.5),
    ],
    "DDIMScheduler": [
        {}, dict(set_alpha_to_one=False, clip_sample=False),
        dict(prediction_type="v_prediction", timestep_spacing="trailing",
             rescale_betas_zero_snr=True, clip_sample=False),
        dict(prediction_type="sample", timestep_spacing="linspace"),
        dict(thresholding=True, sample_max_value=2.0, steps_offset=1),
        dict(beta_schedule="squaredcos_cap_v2", clip_sample=False),
    ],
    "EulerDiscreteScheduler": [
        {}, dict(prediction_type="v_prediction", timestep_spacing="trailing"),
        dict(prediction_type="sample", timestep_spacing="leading", steps_offset=1),
        dict(use_karras_sigmas=True), dict(use_exponential_sigmas=True),
        dict(use_beta_sigmas=True, final_sigmas_type="sigma_min"),
        dict(rescale_betas_zero_snr=True, prediction_type="v_prediction",
             timestep_spacing="trailing"),
        dict(timestep_type="continuous", prediction_type="v_prediction"),
        dict(use_karras_sigmas=True, sigma_min=0.1, sigma_max=10.0),
    ],
    "EulerAncestralDiscreteScheduler": [
        {}, dict(prediction_type="v_prediction", timestep_spacing="trailing",
                 rescale_betas_zero_snr=True),
        dict(timestep_spacing="leading", steps_offset=1, beta_schedule="linear"),
    ],
    "HeunDiscreteScheduler": [
        {}, dict(SD, prediction_type="v_prediction", timestep_spacing="trailing"),
        dict(prediction_type="sample", use_karras_sigmas=True),
        dict(use_exponential_sigmas=True, timestep_spacing="leading", steps_offset=1),
        dict(use_beta_sigmas=True),
    ],
    "DPMSolverMultistepScheduler": [
        {}, dict(SD, solver_order=3, use_karras_sigmas=True),
        dict(solver_type="heun", prediction_type="v_prediction", timestep_spacing="trailing",
             rescale_betas_zero_snr=True),
        dict(algorithm_type="sde-dpmsolver++", use_exponential_sigmas=True),
        dict(solver_order=1, prediction_type="sample", timestep_spacing="leading", steps_offset=1),
        dict(lower_order_final=False, euler_at_final=True, final_sigmas_type="sigma_min"),
        dict(use_beta_sigmas=True, beta_schedule="squaredcos_cap_v2"),
        dict(variance_type="learned_range", solver_order=3, solver_type="heun"),
    ],
    "UniPCMultistepScheduler": [
        {}, dict(SD, solver_order=3, use_karras_sigmas=True),
        dict(solver_type="bh1", prediction_type="v_prediction", timestep_spacing="trailing",
             rescale_betas_zero_snr=True),
        dict(disable_corrector=[0, 2], lower_order_final=False, use_exponential_sigmas=True),
        dict(prediction_type="sample", timestep_spacing="leading", steps_offset=1,
             final_sigmas_type="sigma_min"),
        dict(use_beta_sigmas=True, solver_order=1),
        dict(use_karras_sigmas=True, sigma_min=0.05, sigma_max=20.0),
    ],
    "LCMScheduler": [
        {}, dict(prediction_type="v_prediction"), dict(prediction_type="sample", clip_sample=True),
        dict(thresholding=True), dict(original_inference_steps=20, timestep_scaling=5.0),
        dict(rescale_betas_zero_snr=True, prediction_type="v_prediction", beta_schedule="linear"),
    ],
    "LMSDiscreteScheduler": [
        {}, dict(SD, use_karras_sigmas=True),
        dict(prediction_type="v_prediction", timestep_spacing="trailing"),
        dict(prediction_type="sample", timestep_spacing="leading", steps_offset=1),
        dict(use_exponential_sigmas=True), dict(use_beta_sigmas=True, beta_schedule="scaled_linear"),
    ],
    "FlowMatchEulerDiscreteScheduler": [
        {}, dict(shift=3.0), dict(use_dynamic_shifting=True),
        dict(use_dynamic_shifting=True, time_shift_type="linear", shift_terminal=0.1),
        dict(shift=3.0, use_karras_sigmas=True), dict(use_exponential_sigmas=True),
        dict(use_beta_sigmas=True), dict(shift=2.0, stochastic_sampling=True),
    ],
}
STEP_KW = {  # step() keyword variants, with the config index they apply to
    "DDIMScheduler": [dict(eta=0.5), dict(eta=1.0, use_clipped_model_output=True)],
    "EulerDiscreteScheduler": [dict(s_churn=2.0, s_tmin=0.5, s_tmax=8.0, s_noise=1.003)],
    "LMSDiscreteScheduler": [dict(order=1), dict(order=2), dict(order=3)],
}
STEPS = {"LCMScheduler": (1, 4, 8)}


# One step from the cosine schedule's last train sigma (2e4) to 0 divides the
# model output by alpha = 5e-5: genfast floors alpha at 2^-12 there
# (csrc/include/genfast/steps.h kAlphaFloor), diffusers does not.
ALPHA_FLOOR_CASES = {("DPMSolverMultistepScheduler", 6, 1)}


def _grid():
    for name, cfgs in GRID.items():
        for j, cfg in enumerate(cfgs):
            for n in STEPS.get(name, (1, 9, 50)):
                if n == 50 and j > 1:  # the long loops on the first two configs only
                    continue
                if (name, j, n) in ALPHA_FLOOR_CASES:
                    continue
                yield pytest.param(name, cfg, n, {}, id=f"{name[:-9]}-{j}-n{n}")
    for name, kws in STEP_KW.items():
        for j, kw in enumerate(kws):
            yield pytest.param(name, GRID[name][0], 12, kw, id=f"{name[:-9]}-kw{j}")


def _set_kw(name, cfg):
    return {"mu": 0.8} if cfg.get("use_dynamic_shifting") else {}


@pytest.mark.parametrize("name,cfg,n,step_kw", list(_grid()))
def test_every_step_matches_diffusers(name, cfg, n, step_kw):
    d, g = pair(name, cfg)
    learned = cfg.get("variance_type") == "learned_range"
    # DPM-Solver's learned variance keeps the first 3 channels (diffusers' [:, :3])
    x = latent(shape=(3, 8, 8) if learned and name.startswith("DPM") else (4, 8, 8))
    set_kw = _set_kw(name, cfg)
    try:
        want, wout = loop(d, n, x, step_kw=step_kw, set_kw=set_kw, learned=learned)
    except (IndexError, ValueError) as e:
        # diffusers' own failure (e.g. NaN timesteps of a 1-step shift_terminal
        # schedule): the drop-in fails alike, or refuses the schedule up front
        with pytest.raises((type(e), NotImplementedError)):
            loop(g, n, x, step_kw=step_kw, set_kw=set_kw, learned=learned)
        return
    got, gout = loop(g, n, x, step_kw=step_kw, set_kw=set_kw, learned=learned)
    assert torch.equal(g.timesteps, d.timesteps)
    if hasattr(d, "sigmas"):
        torch.testing.assert_close(g.sigmas, d.sigmas, atol=0, rtol=0)
    assert len(got) == len(want)
    scale = x.abs().max().item() * float(getattr(d, "init_noise_sigma", 1.0))
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.dtype == b.dtype
        if not torch.isfinite(b).all():
            # diffusers' UniPC divides by r_k -> 0 at a last step to sigma 0 with
            # order > 1 (NaN / inf); the plan takes the finite first-order limit
            assert name.startswith("UniPC") and i == len(want) - 1
            assert torch.isfinite(a).all()
            return
        # plus diffusers' float32 rounding at the scale of the step's input
        tol = dict(atol=F32["atol"] + 4 * EPS32 * scale, rtol=F32["rtol"])
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f"step {i}: {m}")
        scale = b.abs().max().item()
    assert type(gout) is type(wout)
    assert list(gout.keys()) == list(wout.keys())
    for k in wout.keys():  # the last step's outputs (x0 / denoised too)
        torch.testing.assert_close(gout[k], wout[k], **tol)


# ---------------------------------------------------------------- low precision

LOW = [("DDPMScheduler", dict(clip_sample=False)), ("DDIMScheduler", dict(clip_sample=False)),
       ("EulerDiscreteScheduler", {}), ("EulerAncestralDiscreteScheduler", {}),
       ("LCMScheduler", {}), ("FlowMatchEulerDiscreteScheduler", dict(shift=3.0)),
       ("HeunDiscreteScheduler", {}), ("DPMSolverMultistepScheduler", dict(solver_order=3)),
       ("UniPCMultistepScheduler", {}), ("LMSDiscreteScheduler", {})]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name,cfg", LOW, ids=[c[0][:-9] for c in LOW])
def test_low_precision_within_diffusers_error(name, cfg, dtype, monkeypatch):
    d, g = pair(name, cfg)
    d64, _ = pair(name, cfg)
    n = 4 if name == "LCMScheduler" else 10
    x = latent().to(dtype)
    want, _ = loop(d, n, x, every=False)
    got, _ = loop(g, n, x, every=False)
    assert got[0].dtype == dtype
    assert torch.isfinite(got[0]).all()
    draw_low(monkeypatch, d64, dtype)
    ref, _ = loop(d64, n, x.double(), every=False, model_dtype=dtype)
    err, bound = low_bound(got[0], want[0], ref[0], dtype)
    assert err <= bound, (err, bound)


# ---------------------------------------------------------------- API surface

@pytest.mark.parametrize("name", list(G.CLASSES))
def test_config_round_trip(name, tmp_path):
    d, g = pair(name, {})
    assert isinstance(g, getattr(diffusers, name)) and type(g).__name__ == name
    assert g.order == d.order and public(g.config) == public(d.config)
    g.save_config(tmp_path / "scheduler")
    cfg = json.loads((tmp_path / "scheduler" / "scheduler_config.json").read_text())
    assert cfg["_class_name"] == name
    back = getattr(G, name).from_pretrained(tmp_path, subfolder="scheduler")
    assert type(back) is getattr(G, name) and public(back.config) == public(g.config)
    plain = getattr(diffusers, name).from_pretrained(tmp_path, subfolder="scheduler")
    assert public(plain.config) == public(d.config)
    # from a diffusers scheduler's config, and from the one of another class
    assert type(getattr(G, name).from_config(d.config)) is getattr(G, name)
    if name != "FlowMatchEulerDiscreteScheduler":
        other = G.DDIMScheduler.from_config(G.EulerDiscreteScheduler(**SD).config)
        assert other.config.beta_schedule == "scaled_linear"


def test_unsupported_options_raise_naming_them():
    for vt in ("fixed_large_log", "learned"):
        with pytest.raises(NotImplementedError, match=f"variance_type='{vt}'"):
            G.DDPMScheduler(variance_type=vt)
    with pytest.raises(NotImplementedError, match="interpolation_type"):
        G.EulerDiscreteScheduler(interpolation_type="log_linear")
    with pytest.raises(NotImplementedError, match="invert_sigmas"):
        G.FlowMatchEulerDiscreteScheduler(invert_sigmas=True)
    for cls, kw in [(G.DPMSolverMultistepScheduler,
                     dict(algorithm_type="dpmsolver", final_sigmas_type="sigma_min")),
                    (G.DPMSolverMultistepScheduler, dict(thresholding=True)),
                    (G.DPMSolverMultistepScheduler, dict(use_lu_lambdas=True)),
                    (G.DPMSolverMultistepScheduler, dict(lambda_min_clipped=-5.1)),
                    (G.UniPCMultistepScheduler, dict(predict_x0=False)),
                    (G.UniPCMultistepScheduler, dict(solver_p=diffusers.DDIMScheduler())),
                    (G.UniPCMultistepScheduler, dict(use_flow_sigmas=True)),
                    (G.HeunDiscreteScheduler, dict(clip_sample=True))]:
        with pytest.raises(NotImplementedError, match=next(iter(kw))):
            cls(**kw)


def test_every_config_option_is_accounted_for():
    """Every __init__ option of every diffusers class is exercised in GRID
    (above), raises NotImplementedError (test above), or is listed here."""
    scalars = {"num_train_timesteps", "beta_start", "beta_end", "trained_betas",
               "dynamic_thresholding_ratio", "sample_max_value", "clip_sample_range"}
    unused = {  # options diffusers' set_timesteps / step of that class never read
        "LCMScheduler": {"timestep_spacing", "steps_offset", "set_alpha_to_one"},
        # read by pipelines to compute mu, not by the scheduler
        "FlowMatchEulerDiscreteScheduler": {"base_shift", "max_shift", "base_image_seq_len",
                                            "max_image_seq_len"},
    }
    raising = {"invert_sigmas", "interpolation_type", "use_flow_sigmas", "use_lu_lambdas",
               "lambda_min_clipped", "predict_x0", "solver_p"}
    # read only with use_flow_sigmas (which raises)
    flow_only = {"flow_shift", "use_dynamic_shifting", "time_shift_type", "shift_terminal"}
    for k in ("DPMSolverMultistepScheduler", "UniPCMultistepScheduler"):
        unused[k] = flow_only
    defaults = {"beta_schedule", "prediction_type", "timestep_spacing", "clip_sample",
                "variance_type", "set_alpha_to_one", "thresholding"}  # exercised by {} too
    for name, cfgs in GRID.items():
        used = set().union(*cfgs) | scalars | raising | unused.get(name, set())
        params = set(inspect.signature(getattr(diffusers, name).__init__).parameters) - {"self"}
        missing = params - used - (defaults & params)
        assert not missing, (name, missing)


@pytest.mark.parametrize("kind", ["int", "0d", "1elem", "view", "float"])
def test_timestep_forms(kind):
    for name in ("DDIMScheduler", "EulerDiscreteScheduler"):
        d, g = pair(name, {})
        d.set_timesteps(6)
        g.set_timesteps(6)
        x = latent()
        for j, t in enumerate(g.timesteps):
            tt = {"int": int(t), "0d": t.clone(), "1elem": t.clone().reshape(1), "view": t,
                  "float": float(t)}[kind]
            if name.startswith("Euler") and kind == "int":
                with pytest.raises(ValueError, match="integer indices"):
                    g.step(dummy_model(x, t), tt, x)
                return
            m = dummy_model(x, t)
            want = d.step(m, d.timesteps[j], x).prev_sample
            got = g.step(m, tt, x).prev_sample
            torch.testing.assert_close(got, want, **F32)
            x = want


def test_step_output_is_the_diffusers_object():
    """The drop-ins build their output without the dataclass __post_init__
    (genfast.diffusers._core.output): the same keys, attributes, indexing,
    tuple view and pickling as the class built the usual way, with and
    without a None field."""
    import pickle

    from diffusers.schedulers import scheduling_ddim, scheduling_lcm
    from diffusers.schedulers.scheduling_utils import SchedulerOutput

    from genfast.diffusers._core import output
    a, b = torch.randn(2, 3), torch.randn(2, 3)
    for cls, fields in ((scheduling_ddim.DDIMSchedulerOutput,
                         dict(prev_sample=a, pred_original_sample=b)),
                        (scheduling_ddim.DDIMSchedulerOutput,
                         dict(prev_sample=a, pred_original_sample=None)),
                        (scheduling_lcm.LCMSchedulerOutput, dict(prev_sample=a, denoised=b)),
                        (SchedulerOutput, dict(prev_sample=a))):
        want, got = cls(**fields), output(cls, **fields)
        assert type(got) is cls
        assert list(got.keys()) == list(want.keys())
        assert len(got.to_tuple()) == len(want.to_tuple())
        for k, v in fields.items():
            assert getattr(got, k) is v
        for i, v in enumerate(want.to_tuple()):
            assert got[i] is v and got.to_tuple()[i] is v
        back = pickle.loads(pickle.dumps(got))
        assert list(back.keys()) == list(want.keys())
        torch.testing.assert_close(back.prev_sample, a)


def test_no_host_sync_in_the_loop(monkeypatch):
    """After set_timesteps, a pipeline's loop calls neither .item() nor
    .nonzero() (the syncs of diffusers' index_for_timestep)."""
    def boom(*a, **k):
        raise AssertionError("host sync")
    for name in G.CLASSES:
        _, g = pair(name, {})
        g.set_timesteps(5)
        g.is_scale_input_called = True
        x = latent()
        with monkeypatch.context() as m:
            m.setattr(torch.Tensor, "item", boom)
            m.setattr(torch.Tensor, "nonzero", boom)
            m.setattr(torch.Tensor, "tolist", boom)
            for t in g.timesteps:
                xin = g.scale_model_input(x, t) if hasattr(g, "scale_model_input") else x
                x = g.step(dummy_model(xin, t), t, x).prev_sample
        assert torch.isfinite(x).all()


def test_device_lookup_logic():
    """The on-device timestep lookup (used for device tensors that are not
    elements of scheduler.timesteps) follows diffusers' rule, here on the CPU."""
    _, g = pair("EulerDiscreteScheduler", {})
    g.set_timesteps(7)
    for j, t in enumerate(g.timesteps):
        assert int(g._gf_device_lookup(t.clone())) == j
    assert int(g._gf_device_lookup(torch.tensor(-5.0))) == 7  # not found: past the plan
    g._gf_vals = [3.0, 2.0, 2.0, 1.0]
    g._gf_dev_ts = {}
    assert int(g._gf_device_lookup(torch.tensor(2.0))) == 2  # second of duplicates


def test_begin_index_img2img():
    for name in ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "LCMScheduler",
                 "FlowMatchEulerDiscreteScheduler", "DDIMScheduler"):
        d, g = pair(name, {})
        outs = []
        for s in (d, g):
            s.set_timesteps(8)
            if hasattr(s, "set_begin_index"):
                s.set_begin_index(3)
            gen = torch.Generator().manual_seed(1)
            x = latent()
            for t in s.timesteps[3:]:
                xin = s.scale_model_input(x, t) if hasattr(s, "scale_model_input") else x
                x = s.step(dummy_model(xin, t), t, x, generator=gen).prev_sample
            outs.append(x)
        torch.testing.assert_close(outs[1], outs[0], **F32)


def test_without_generator_uses_the_genfast_stream():
    _, g = pair("EulerAncestralDiscreteScheduler", {})
    g.noise_seed = 1234
    x = latent()
    runs = []
    for _ in range(2):
        g.set_timesteps(5)
        y = x.clone()
        for t in g.timesteps:
            y = g.step(dummy_model(g.scale_model_input(y, t), t), t, y).prev_sample
        runs.append(y)
    assert torch.equal(runs[0], runs[1])
    # step i draws genfast.randn(shape, seed=noise_seed, stream=i)
    plan = genfast.schedules.from_config(g).plan(5, sampler="euler_ancestral")
    y = x.clone()
    for i, t in enumerate(g.timesteps):
        m = dummy_model(y * float(plan.column("c_in")[i]), t)
        z = genfast.randn(y.shape, seed=1234, stream=i)
        y = genfast.steps.step(plan, i, m, y, noise=z).prev_sample
    torch.testing.assert_close(runs[0], y, atol=1e-5, rtol=1e-5)
    # no seed set: each set_timesteps draws one from torch's global generator
    g.noise_seed = None
    torch.manual_seed(3)
    g.set_timesteps(5)
    s1 = g._gf_seed
    torch.manual_seed(3)
    g.set_timesteps(5)
    assert g._gf_seed == s1


def test_add_noise_and_velocity():
    for name in ("DDPMScheduler", "DDIMScheduler", "LCMScheduler"):
        d, g = pair(name, dict(beta_schedule="squaredcos_cap_v2") if name != "LCMScheduler" else {})
        x0, eps = latent(3), latent(3, seed=1)
        t = torch.tensor([0, 500, 999])
        torch.testing.assert_close(g.add_noise(x0, eps, t), d.add_noise(x0, eps, t),
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(g.get_velocity(x0, eps, t), d.get_velocity(x0, eps, t),
                                   atol=1e-5, rtol=1e-5)
        # shapes genfast's fused op does not take: diffusers' own
        torch.testing.assert_close(g.add_noise(x0, eps, torch.tensor(10)),
                                   d.add_noise(x0, eps, torch.tensor(10)))
    for name in ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler"):
        d, g = pair(name, {})
        d.set_timesteps(5)
        g.set_timesteps(5)
        x0, eps = latent(2), latent(2, seed=1)
        t = g.timesteps[[1, 3]]
        torch.testing.assert_close(g.add_noise(x0, eps, t), d.add_noise(x0, eps, t))


def test_fallbacks_run_diffusers():
    d, g = pair("EulerDiscreteScheduler", {})
    x = latent(dtype=torch.float64)
    want, _ = loop(d, 5, x)
    got, _ = loop(g, 5, x)
    torch.testing.assert_close(got[-1], want[-1], atol=0, rtol=0)
    # DDIM at a timestep outside its plan: diffusers' arithmetic
    d, g = pair("DDIMScheduler", {})
    d.set_timesteps(10)
    g.set_timesteps(10)
    x = latent()
    m = dummy_model(x, 555)
    torch.testing.assert_close(g.step(m, 555, x).prev_sample, d.step(m, 555, x).prev_sample)


def test_return_dict_false():
    for name in G.CLASSES:
        d, g = pair(name, {})
        for s in (d, g):
            s.set_timesteps(4)
        t, x = g.timesteps[0], latent()
        a = d.step(dummy_model(x, t), d.timesteps[0], x, return_dict=False)
        b = g.step(dummy_model(x, t), t, x, return_dict=False)
        assert isinstance(b, tuple) and len(b) == len(a)


# ---------------------------------------------------------------- pipelines


def _unet(cond=False):
    torch.manual_seed(0)
    common = dict(sample_size=8, layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4)
    if not cond:
        return diffusers.UNet2DModel(in_channels=3, out_channels=3,
                                     down_block_types=("DownBlock2D", "DownBlock2D"),
                                     up_block_types=("UpBlock2D", "UpBlock2D"), **common).eval()
    return diffusers.UNet2DConditionModel(
        in_channels=4, out_channels=4, cross_attention_dim=8, attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), **common).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kind", ["DDPMPipeline", "DDIMPipeline"])
def test_unconditional_pipelines(kind, dtype):
    unet = _unet().to(dtype)
    sched = (diffusers.DDPMScheduler if kind == "DDPMPipeline" else diffusers.DDIMScheduler)(
        num_train_timesteps=1000)
    pipe = getattr(diffusers, kind)(unet=unet, scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(num_inference_steps=8, output_type="pt")
    if kind == "DDIMPipeline":
        kw["eta"] = 0.5  # DDIM with noise: the generator's draws must match too
    with torch.no_grad():
        want = pipe(generator=torch.Generator().manual_seed(0), **kw).images
        assert G.accelerate(pipe) is pipe
        assert type(pipe.scheduler) is getattr(G, type(sched).__name__)
        got = pipe(generator=torch.Generator().manual_seed(0), **kw).images
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    else:  # images in [0, 1]: a few bf16 ulp, compounded over 8 steps
        torch.testing.assert_close(got.float(), want.float(), atol=16 * ULP[dtype], rtol=0)


SD_CLASSES = list(G.CLASSES)


def sd_loop(unet, sched, n, dtype, guidance=5.0, seed=0):
    """StableDiffusionPipeline's denoising loop: batched [uncond; cond],
    classifier-free guidance, the pipeline's generator to step(). The latents
    are ``dtype``; the UNet runs in its own dtype (a float64 loop around a
    low-precision UNet is the reference of that low-precision run)."""
    low = unet.dtype
    gen = torch.Generator().manual_seed(seed)
    emb = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(11)).to(low)
    sched.set_timesteps(n)
    lat = diffusers.utils.torch_utils.randn_tensor((1, 4, 8, 8), generator=gen, dtype=low)
    lat = lat.to(dtype) * getattr(sched, "init_noise_sigma", 1.0)
    with torch.no_grad():
        for t in sched.timesteps:
            inp = torch.cat([lat] * 2)
            if hasattr(sched, "scale_model_input"):
                inp = sched.scale_model_input(inp, t)
            pred = unet(inp.to(low), t, encoder_hidden_states=emb).sample.to(dtype)
            u, c = pred.chunk(2)
            pred = u + guidance * (c - u)
            takes_gen = "generator" in inspect.signature(sched.step).parameters
            kw = {"generator": gen} if takes_gen else {}
            lat = sched.step(pred, t, lat, **kw).prev_sample
    return lat


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", SD_CLASSES)
def test_sd_style_cfg_loop(name, dtype, monkeypatch):
    unet = _unet(cond=True).to(dtype)
    cfg = {} if name.startswith("FlowMatch") else dict(SD, timestep_spacing="trailing")
    d, g = pair(name, cfg)
    n = 4 if name == "LCMScheduler" else 6
    want = sd_loop(unet, d, n, dtype)
    got = sd_loop(unet, g, n, dtype)
    assert got.dtype == dtype and torch.isfinite(got).all()
    scale = max(want.float().abs().max().item(), 1.0)
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, atol=2e-4 * scale, rtol=2e-4)
    else:
        d64, _ = pair(name, cfg)
        draw_low(monkeypatch, d64, dtype)
        ref = sd_loop(unet, d64, n, torch.float64)
        err, bound = low_bound(got, want, ref, dtype)
        assert err <= bound, (err, bound)


def test_accelerate_unknown_scheduler_warns_once():
    unet = _unet()
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.PNDMScheduler())
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert G.accelerate(pipe) is pipe
    msgs = [str(x.message) for x in w if "genfast" in str(x.message)]
    assert len(msgs) == 1 and "PNDMScheduler" in msgs[0]
    assert type(pipe.scheduler) is diffusers.PNDMScheduler
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler(
        variance_type="learned"))
    with pytest.warns(UserWarning, match="variance_type"):
        G.accelerate(pipe)
    assert type(pipe.scheduler) is diffusers.DDPMScheduler


def test_accelerated_pipeline_saves_and_loads(tmp_path):
    pipe = diffusers.DDIMPipeline(unet=_unet(), scheduler=diffusers.DDIMScheduler())
    G.accelerate(pipe)
    assert isinstance(pipe.scheduler, G.DDIMScheduler)
    assert tuple(pipe.config.scheduler) == ("diffusers", "DDIMScheduler")
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    back = diffusers.DDIMPipeline.from_pretrained(tmp_path)
    assert type(back.scheduler) is diffusers.DDIMScheduler
    G.accelerate(back)
    assert type(back.scheduler) is G.DDIMScheduler
    sched = G.DDIMScheduler.from_pretrained(tmp_path, subfolder="scheduler")
    assert public(sched.config) == public(pipe.scheduler.config)


def test_import_genfast_does_not_import_diffusers():
    import subprocess
    import sys
    code = "import sys, genfast; assert 'diffusers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert genfast.diffusers is G  # the lazy attribute


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_bench_cases_run(dtype):
    """genfast/bench/dropin.py (the loops suite's drop-in rows): every step /
    loop provider runs once at a tiny size; the pipeline case is built."""
    from genfast.bench import dropin
    cases = dropin.cases("cpu", sizes=(256,), dtype=dtype)
    assert {c.suite for c in cases} == {"loops"}
    for case in cases:
        names = [p.name for p in case.providers]
        assert "genfast" in names and "diffusers" in names
        if case.mode == "pipeline":
            continue
        for p in case.providers:
            p.make()()


CUSTOM = [
    ("DDPMScheduler", dict(clip_sample=False), dict(timesteps=[999, 800, 650, 400, 120, 5])),
    ("EulerDiscreteScheduler", {}, dict(sigmas=[14.6, 7.0, 3.1, 1.2, 0.4, 0.1, 0.0])),
    ("EulerDiscreteScheduler", {}, dict(timesteps=[999, 700, 420, 250, 80, 10])),
    ("FlowMatchEulerDiscreteScheduler", dict(use_dynamic_shifting=True),  # Flux's call
     dict(sigmas=[1.0, 0.8, 0.6, 0.4, 0.2], mu=1.1)),
    ("FlowMatchEulerDiscreteScheduler", dict(shift=3.0), dict(timesteps=[1000, 700, 400, 100])),
    ("DPMSolverMultistepScheduler", {}, dict(timesteps=[999, 850, 600, 300, 100, 20])),
    ("HeunDiscreteScheduler", {}, dict(timesteps=[999, 700, 420, 250, 80, 10])),
    ("LCMScheduler", {}, dict(num_inference_steps=4, strength=0.5)),  # LCM img2img
    ("LCMScheduler", dict(prediction_type="v_prediction"),
     dict(timesteps=[999, 759, 499, 259, 19])),
]


@pytest.mark.parametrize("name,cfg,kw", CUSTOM, ids=[f"{c[0][:-9]}-{next(iter(c[2]))}"
                                                    for c in CUSTOM])
def test_custom_timesteps_and_sigmas(name, cfg, kw):
    """set_timesteps(timesteps=...) / (sigmas=...) as pipelines call them."""
    d, g = pair(name, cfg)
    x = latent()
    kw = dict(kw)
    n = kw.pop("num_inference_steps", None)
    try:
        want, _ = loop(d, n, x, set_kw=kw)
    except Exception as e:  # noqa: BLE001  diffusers refuses: so does the drop-in
        with pytest.raises((type(e), NotImplementedError)):
            loop(g, n, x, set_kw=kw)
        return
    got, _ = loop(g, n, x, set_kw=kw)
    assert torch.equal(g.timesteps, d.timesteps)
    for i, (a, b) in enumerate(zip(got, want)):
        scale = max(b.abs().max().item(), 1.0)
        torch.testing.assert_close(a, b, atol=2e-4 * scale, rtol=2e-4,
                                   msg=lambda m: f"step {i}: {m}")


# ---------------------------------------------------------------- StableDiffusionPipeline

def _tiny_sd_pipeline(sched, tmp_path):
    """A StableDiffusionPipeline from tiny random parts built offline: the
    conditional UNet above, a 2-level AutoencoderKL, a 1-layer CLIP text
    encoder and a CLIP tokenizer over an 8-token vocabulary written here."""
    transformers = pytest.importorskip("transformers")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a": 2, "a</w>": 3, "c": 4, "t</w>": 5,
             "at</w>": 6, "cat</w>": 7}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\na t</w>\nc at</w>\n")
    tok = transformers.CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"),
                                     model_max_length=8)
    torch.manual_seed(1)
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=8, intermediate_size=16, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=8, projection_dim=8,
        bos_token_id=0, eos_token_id=1, pad_token_id=1)).eval()
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), layers_per_block=1,
        norm_num_groups=4, sample_size=16).eval()
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tok, unet=_unet(cond=True), scheduler=sched,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("name", [n for n in SD_CLASSES if not n.startswith("FlowMatch")])
def test_stable_diffusion_pipeline(name, tmp_path):
    """The real StableDiffusionPipeline (text encoder, CFG, scale_model_input,
    the generator passed to step(), VAE decode): the same images after
    accelerate(pipe) as with the diffusers scheduler, float32."""
    d, _ = pair(name, dict(SD, timestep_spacing="trailing"))
    pipe = _tiny_sd_pipeline(d, tmp_path)
    kw = dict(prompt="a cat", num_inference_steps=4 if name == "LCMScheduler" else 6,
              guidance_scale=5.0, output_type="pt", height=16, width=16)
    with torch.no_grad():
        want = pipe(generator=torch.Generator().manual_seed(0), **kw).images
        assert G.accelerate(pipe) is pipe and type(pipe.scheduler) is getattr(G, name)
        got = pipe(generator=torch.Generator().manual_seed(0), **kw).images
    assert got.shape == (1, 3, 16, 16) and torch.isfinite(got).all()
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


BOUND_CASES = [
    ("DDPMScheduler", {}), ("DDPMScheduler", {"clip_sample": True}),
    ("DDPMScheduler", {"thresholding": True}), ("DDPMScheduler", {"variance_type": "fixed_large"}),
    ("DDIMScheduler", {"eta": 0.0}), ("DDIMScheduler", {"eta": 0.6}),
    ("DDIMScheduler", {"eta": 0.3, "use_clipped_model_output": True, "clip_sample": True}),
    ("EulerDiscreteScheduler", {}), ("EulerDiscreteScheduler", {"s_churn": 0.5}),
    ("EulerAncestralDiscreteScheduler", {}),
    ("EulerAncestralDiscreteScheduler", {"prediction_type": "v_prediction"}),
    ("LCMScheduler", {}), ("FlowMatchEulerDiscreteScheduler", {}),
    ("FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": True}),
]
_STEP_KW = ("eta", "use_clipped_model_output", "s_churn")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name,opts", BOUND_CASES, ids=lambda v: str(v))
def test_bound_step_equals_the_wrapper(name, opts, dtype, monkeypatch):
    """The drop-ins' bound step (Dropin._gf_bound: the op's eager entry point
    with the codes resolved once) gives what genfast.steps.step gives, bit for
    bit, on genfast-stream noise; options it does not take fall back."""
    step_kw = {k: v for k, v in opts.items() if k in _STEP_KW}
    cfg = {k: v for k, v in opts.items() if k not in _STEP_KW}
    if name != "FlowMatchEulerDiscreteScheduler":
        cfg = {**SD, **cfg}

    def run():
        s = getattr(G, name)(**cfg)
        s.noise_seed = 77
        s.set_timesteps(6)
        x = torch.randn(2, 3, 5, 4, generator=torch.Generator().manual_seed(0)).to(dtype)
        for t in s.timesteps:
            xin = s.scale_model_input(x, t) if hasattr(s, "scale_model_input") else x
            x = s.step(dummy_model(xin, t), t, x, **step_kw).prev_sample
        return x

    calls = []
    real = G._core.Dropin._gf_bound
    monkeypatch.setattr(G._core.Dropin, "_gf_bound",
                        lambda self, *a, **k: calls.append(real(self, *a, **k)))
    slow = run()  # every step through genfast.steps.step
    monkeypatch.setattr(G._core.Dropin, "_gf_bound", real)
    fast = run()
    assert torch.equal(fast, slow)
    binds = not (opts.get("thresholding") or opts.get("variance_type") or opts.get("s_churn")
                 or opts.get("stochastic_sampling"))
    assert any(c is not None for c in calls) == binds


def test_lms_order_is_fixed_per_loop():
    """LMS's ``order`` picks the plan at a loop's first step; changing it in
    the middle of a genfast loop raises naming it, an order the ring cannot
    hold runs diffusers' own step for the whole loop."""
    g = G.LMSDiscreteScheduler(**SD)
    g.set_timesteps(6)
    x = latent()
    with pytest.raises(NotImplementedError, match="order=2"):
        for j, t in enumerate(g.timesteps):
            x = g.step(dummy_model(g.scale_model_input(x, t), t), t, x,
                       order=4 if j < 3 else 2).prev_sample
    d = diffusers.LMSDiscreteScheduler(**SD)
    for s in (d, g):
        s.set_timesteps(6)
    xd = xg = latent()
    for t in d.timesteps:
        xd = d.step(dummy_model(d.scale_model_input(xd, t), t), t, xd, order=6).prev_sample
        xg = g.step(dummy_model(g.scale_model_input(xg, t), t), t, xg, order=6).prev_sample
    assert g._gf_state is None and torch.equal(xd, xg)
