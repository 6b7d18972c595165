"""Matmul family: planning, FLOP accounting, capability detection with faked cards and
software, verification before timing, the emulation flag, the dtype ladder, and real CPU rows
through the same run_case the GPU path uses."""
import json

import pytest
import torch

from bench.core import harness, normalize, specs
from bench.core.devices import Target
from bench.families import matmul, matmul_tune
from helpers import make_run


def Case(recipe, provider, name, shape, fast_accum=False, target=None):
    """A matmul case as the family plans it (units of a GPU unless `target` says otherwise)."""
    return matmul.make_case(target or gpu_like(), recipe, provider, name, shape, fast_accum)


def run_case(target, case, profile="quick", state=None):
    """One case through the harness on `target` (in that target's units), sharing `state` if given."""
    case = matmul.make_case(target, case.spec.recipe, case.provider, case.name, case.spec.shape, case.spec.fast_accum)
    run = make_run([target], profile)
    if state is not None:
        run.family_states["matmul"] = state
    return harness.run_case(matmul, target, case, run)


def gpu_like(cc="9.0", sm_count=132, spec=None):
    """A Target that looks like a GPU to the planner and the static checks (nothing runs on it)."""
    t = Target(torch.device("cuda", 0), 0, {"device_name": "test GPU", "compute_capability": cc,
                                            "sm_count": str(sm_count), "l2_cache_bytes": str(50 * 2**20)}, spec)
    t.free_bytes = lambda: 80 * 2**30
    return t


def cpu(spec=None):
    return Target(torch.device("cpu"), None, {"device_name": "test CPU", "sm_count": "2"}, spec)


def h100_spec():
    return specs.load().find("H100 SXM5 80GB")


# ---------------------------------------------------------------------------------------
# Planning and accounting


def test_quick_plans_fixed_shapes_full_adds_one_searched_best_per_recipe():
    quick = matmul.cases(gpu_like(), make_run([], "quick"))
    assert {c.spec.shape for c in quick} == set(matmul.GPU_SHAPES) and (8192, 8192, 8192) in matmul.GPU_SHAPES
    assert len({c.id for c in quick}) == len(quick)
    assert {(c.spec.recipe, c.provider) for c in quick} == (
        {(r, "torch") for r in matmul.RECIPES} | {(r, "triton") for r in ("bf16", "fp16", "fp8", "mxfp4")})
    fp8 = [c for c in quick if c.spec.recipe == "fp8" and c.provider == "torch"]
    assert sorted(c.spec.fast_accum for c in fp8) == [False] * 3 + [True] * 3
    assert all(c.name.endswith("-fastacc") == c.spec.fast_accum for c in fp8)
    # bf16 first: the fp8 and fp4 rows compare themselves with the bf16 row of their shape
    order = [c.spec.recipe for c in quick]
    assert order.index("fp8") > max(i for i, r in enumerate(order) if r == "bf16")
    best = [c for c in matmul.cases(gpu_like(), make_run([], "full")) if c.spec.shape is None]
    assert {c.spec.recipe for c in best} == set(matmul.RECIPES) and {c.provider for c in best} == {"torch"}
    assert {c.name for c in best} == {"best", "best-fastacc"}
    with pytest.raises(ValueError):
        matmul.cases(gpu_like(), make_run([], "fast"))


def test_cpu_shapes_are_small():
    shapes = {c.spec.shape for c in matmul.cases(cpu(), make_run([], "quick"))}
    assert shapes == set(matmul.CPU_SHAPES) and all(max(s) <= 2048 for s in shapes)


def test_flops_are_two_per_multiply_add_and_units_fit_the_spec_figures():
    assert matmul.flops((8192, 8192, 8192)) == 2 * 8192**3 == 1_099_511_627_776
    assert matmul.flops((4096, 2048, 1024)) == 2 * 4096 * 2048 * 1024
    assert matmul.unit_and_scale(gpu_like(), "bf16") == ("TFLOP/s", 1e12, "FLOP")
    assert matmul.unit_and_scale(gpu_like(), "int8") == ("TOPS", 1e12, "OP")  # int8_dense is in TOPS
    assert matmul.unit_and_scale(cpu(), "fp32") == ("GFLOP/s", 1e9, "FLOP")
    # every recipe's dtype has a dense figure to be normalized against
    for name in matmul.RECIPES:
        key = normalize.claim_key("matmul", name, name)
        assert key is not None and "sparse" not in key
    row = {"family": "matmul", "benchmark": "int8", "dtype": "int8", "unit": "TOPS", "status": "ok", "value": 990.0}
    assert normalize.spec_claim_columns(row, h100_spec())["pct_of_spec"] == pytest.approx(50.0, rel=1e-3)


# ---------------------------------------------------------------------------------------
# Capability: static facts with a faked card or torch


@pytest.mark.parametrize("recipe, provider", [("mxfp4", "torch"), ("nvfp4", "torch"), ("mxfp4", "triton")])
def test_fp4_on_hopper_is_unsupported_with_the_reason(recipe, provider):
    reason = matmul.static_reason(gpu_like("9.0"), Case(recipe, provider, "8192x8192x8192", (8192,) * 3))
    assert reason == "FP4 tensor cores need compute capability 10.0 or 12.0; this card is 9.0"


def test_capability_thresholds():
    def reason(cc, recipe, provider="torch"):
        return matmul.static_reason(gpu_like(cc), Case(recipe, provider, "x", (256,) * 3))

    assert reason("8.0", "fp8") == "FP8 tensor cores need compute capability 8.9 or newer; this card is 8.0"
    assert reason("8.0", "fp8", "triton").endswith("this card is 8.0")
    assert reason("8.9", "fp8") is None and reason("9.0", "fp8", "triton") is None
    assert reason("7.0", "bf16") is not None and reason("7.0", "fp16") is None and reason("7.0", "tf32") is not None
    assert reason("10.0", "mxfp4") is None and reason("12.0", "nvfp4") is None  # then the trial call decides
    assert reason("9.0", "fp32") is None


def test_the_capability_is_the_identity_s_else_what_torch_says_of_that_device(monkeypatch):
    assert matmul.capability(gpu_like("10.0")) == (10, 0)
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: asked.append(device) or (9, 0))
    second = Target(torch.device("cuda", 1), 1, {"device_name": "test GPU"})  # NVML did not say
    assert matmul.capability(second) == (9, 0) and asked == [torch.device("cuda", 1)]
    second.identity["compute_capability"] = "unknown"
    assert matmul.capability(second) == (9, 0)


def test_a_torch_without_the_fp4_dtype_is_named(monkeypatch):
    monkeypatch.delattr(torch, "float4_e2m1fn_x2", raising=False)
    case = Case("nvfp4", "torch", "x", (256,) * 3)
    assert matmul.static_reason(gpu_like("10.0"), case) == f"this torch ({torch.__version__}) has no float4_e2m1fn_x2"
    assert matmul.static_reason(cpu(), case).endswith("has no float4_e2m1fn_x2")
    # Triton's FP4 path packs into uint8 itself and does not need torch's dtype
    assert matmul.static_reason(gpu_like("10.0"), Case("mxfp4", "triton", "x", (256,) * 3)) is None


def test_a_torch_without_any_scaled_mm_is_named(monkeypatch):
    monkeypatch.delattr(torch, "_scaled_mm", raising=False)
    monkeypatch.delattr(torch.nn.functional, "scaled_mm", raising=False)
    assert matmul.static_reason(gpu_like("9.0"), Case("fp8", "torch", "x", (256,) * 3)).endswith("has no _scaled_mm")
    assert "scaled_mm" in matmul.static_reason(gpu_like("10.0"), Case("mxfp4", "torch", "x", (256,) * 3))


def test_a_triton_without_dot_scaled_is_named(monkeypatch):
    from bench.kernels import matmul as km

    monkeypatch.setattr(km, "has_dot_scaled", lambda: False)
    reason = matmul.static_reason(gpu_like("10.0"), Case("mxfp4", "triton", "x", (256,) * 3))
    assert reason.startswith("this triton (") and reason.endswith("has no tl.dot_scaled")


def test_cpu_reasons_for_tensor_core_only_formats():
    assert "CPU has none" in matmul.static_reason(cpu(), Case("tf32", "torch", "x", (256,) * 3))
    assert "FP4 tensor cores" in matmul.static_reason(cpu(), Case("mxfp4", "torch", "x", (256,) * 3))
    assert matmul.static_reason(cpu(), Case("bf16", "torch", "x", (256,) * 3)) is None


def test_passing_the_static_check_is_not_enough_the_trial_call_decides():
    """A card claiming compute capability 10.0 passes the static check; the trial call then runs
    (here it cannot: no CUDA) and its failure is what the row says."""
    row = run_case(gpu_like("10.0"), Case("nvfp4", "torch", "256x256x256", (256,) * 3), "quick")
    assert row["status"] == "unsupported"
    assert row["message"].startswith("the trial call at 128x128x128 raised:")
    assert "value" not in row


def test_the_verdict_is_cached_per_recipe_provider_and_accumulation(monkeypatch):
    calls = []
    monkeypatch.setattr(matmul, "trial", lambda target, case, tuned: calls.append(case) or matmul.Probe("ok"))
    tuned, t = matmul.State(), gpu_like("9.0")
    for case in (Case("fp8", "torch", "a", (256,) * 3), Case("fp8", "torch", "b", (512,) * 3),
                 Case("fp8", "torch", "a-fastacc", (256,) * 3, True), Case("fp8", "triton", "a", (256,) * 3)):
        assert matmul.probe(t, case, tuned).status == "ok"
    assert [(c.provider, c.spec.fast_accum) for c in calls] == [("torch", False), ("torch", True), ("triton", False)]
    matmul.probe(t, Case("mxfp4", "torch", "a", (256,) * 3), tuned)  # static: no trial
    assert len(calls) == 3


# ---------------------------------------------------------------------------------------
# Real CPU rows through run_case


def test_cpu_rows_are_flop_over_median_time(monkeypatch):
    monkeypatch.setattr(matmul, "CPU_MAX_CALL_S", 1e9)  # time whatever runs, however slowly
    tuned = matmul.State()
    for recipe in ("fp32", "bf16"):
        case = Case(recipe, "torch", "256x128x512", (256, 128, 512))
        row = run_case(cpu(), case, "quick", tuned)
        assert row["status"] == "ok", row["message"]
        assert row["family"] == "matmul" and row["benchmark"] == row["dtype"] == recipe
        assert row["unit"] == "GFLOP/s" and row["work_unit"] == "FLOP" and row["metric"] == "throughput"
        assert row["work"] == 2 * 256 * 128 * 512
        assert row["value"] == pytest.approx(row["work"] / row["time_s"] / 1e9, rel=1e-12)
        assert len(row["samples"].split(";")) == row["n_samples"] >= 5
        params = json.loads(row["params"])
        assert (params["m"], params["n"], params["k"]) == (256, 128, 512)
        assert params["layout"].startswith("A row-major")
    assert tuned.values[matmul.value_key(cpu(), "torch", "bf16", "256x128x512")] > 0  # kept for the fp8 comparison


def _cpu_scaled_mm_error() -> str | None:
    """Why this torch cannot run an fp8 _scaled_mm on the CPU (None: it can), asked directly."""
    from bench.kernels import quant

    a, scale_a = quant.quantize_fp8(torch.randn(128, 128))
    b, scale_b = quant.quantize_fp8(torch.randn(128, 128))
    try:
        torch._scaled_mm(a, b.t(), scale_a, scale_b, out_dtype=torch.bfloat16)
    except Exception as e:  # noqa: BLE001 - any failure means no CPU kernel
        return str(e)
    return None


def test_cpu_fp8_rows_run_where_torch_has_a_cpu_scaled_mm_and_name_their_accumulation(monkeypatch):
    monkeypatch.setattr(matmul, "CPU_MAX_CALL_S", 1e9)
    missing = _cpu_scaled_mm_error()
    for name, fast in (("128x128x256", False), ("128x128x256-fastacc", True)):
        row = run_case(cpu(), Case("fp8", "torch", name, (128, 128, 256), fast), "quick")
        if missing is not None:  # this torch has no CPU kernel: the row says what the trial call raised
            assert row["status"] == "unsupported" and row["message"].startswith("the trial call"), row["message"]
            continue
        assert row["status"] == "ok", row["message"]
        params = json.loads(row["params"])
        assert params["fast_accum"] is fast and params["api"] == "torch._scaled_mm"


def test_cpu_waives_what_it_cannot_or_should_not_time(monkeypatch):
    t, tuned = cpu(), matmul.State()
    triton_row = run_case(t, Case("bf16", "triton", "x", (256,) * 3), "quick", tuned)
    assert triton_row["status"] == "skipped" and "TRITON_INTERPRET" in triton_row["message"]
    fp4 = run_case(t, Case("nvfp4", "torch", "x", (256,) * 3), "quick", tuned)
    assert fp4["status"] == "unsupported" and "FP4" in fp4["message"]
    # a dtype with no fast CPU kernel (fp16 on many hosts runs ~1000x slower) is skipped, with the numbers
    rates = {"fp32": 100.0, "fp16": 0.1}
    monkeypatch.setattr(matmul, "_cpu_rate", lambda target, case, api: rates[case.spec.recipe])
    slow = run_case(t, Case("fp16", "torch", "x", (256,) * 3), "quick", tuned)
    assert slow["status"] == "skipped"
    assert slow["message"].startswith("fp16 matmul on this CPU runs at 0.10 GFLOP/s (fp32: 100.0 GFLOP/s): one "
                                      "1024x1024x1024 call would take 21.5 s")


def test_wrong_results_are_caught_before_timing(monkeypatch):
    from bench.kernels import matmul_ref

    real = matmul_ref.mm

    def off_for_big(a, b, out, tf32=False):  # right at the trial's 128^3, wrong above it
        real(a, b, out, tf32)
        return out.mul_(1.0003) if a.shape[0] > 128 else out  # 3x the fp32 tolerance

    monkeypatch.setattr(matmul_ref, "mm", off_for_big)
    row = run_case(cpu(), Case("fp32", "torch", "256x256x256", (256,) * 3), "quick")
    assert row["status"] == "wrong" and "value" not in row
    assert "relative error" in row["message"] and "tolerance 0.0001" in row["message"]
    monkeypatch.setattr(matmul_ref, "mm", lambda a, b, out, tf32=False: out.zero_())
    row = run_case(cpu(), Case("fp32", "torch", "256x256x256", (256,) * 3), "quick")
    assert row["status"] == "wrong" and row["message"].startswith("the trial call at 128x128x128 gives wrong results")


def test_a_call_that_raises_in_the_trial_is_unsupported(monkeypatch):
    from bench.kernels import matmul_ref

    def no_fp8(*args, **kwargs):
        raise NotImplementedError("no FP8 kernel for this backend")

    monkeypatch.setattr(matmul_ref, "scaled_mm_fp8", no_fp8)
    row = run_case(cpu(), Case("fp8", "torch", "x", (256,) * 3), "quick")
    assert row["status"] == "unsupported" and "no FP8 kernel for this backend" in row["message"]


def test_full_profile_search_reports_the_best_shape_as_its_own_row(monkeypatch):
    monkeypatch.setattr(matmul_tune, "SEARCH_S", {"cuda": 1.0, "cpu": 1.0})
    monkeypatch.setattr(matmul_tune, "SEARCH_DIMS", {"cuda": (2048,), "cpu": (256, 512)})
    monkeypatch.setattr(matmul_tune, "SEARCH_KS", {"cuda": (4096,), "cpu": (256,)})
    monkeypatch.setattr(matmul_tune, "SEARCH_MAX", {"cuda": 2048, "cpu": 512})
    row = run_case(cpu(), Case("fp32", "torch", "best", None), "full")
    assert row["status"] == "ok", row["message"]
    params = json.loads(row["params"])
    search = params["search"]
    assert search["evaluated"] >= 1 and search["budget_s"] == 1.0
    assert search["top"][0][0] == f"{params['m']}x{params['n']}x{params['k']}"  # the row is the winner's shape
    assert all(d % 256 == 0 for d in (params["m"], params["n"], params["k"]))
    assert row["case"] == "best" and row["work"] == 2 * params["m"] * params["n"] * params["k"]


# ---------------------------------------------------------------------------------------
# Silent emulation and the dtype ladder


def test_fp8_not_clearly_faster_than_bf16_is_flagged_where_the_spec_says_it_should_be():
    t, tuned = gpu_like(spec=h100_spec()), matmul.State()
    tuned.values[matmul.value_key(t, "torch", "bf16", "8192x8192x8192")] = 700.0
    case = Case("fp8", "torch", "8192x8192x8192-fastacc", (8192,) * 3, True)
    note = matmul.emulation_note(t, case, 720.0, tuned.values)
    assert note.startswith("not clearly faster than bf16 (1.03x at this shape; the spec claims 2.0x)")
    assert matmul.emulation_note(t, case, 1300.0, tuned.values) == ""
    assert matmul.emulation_note(gpu_like(spec=None), case, 720.0, tuned.values) == ""  # unknown card: no claim
    assert matmul.emulation_note(t, Case("fp16", "torch", "8192x8192x8192", (8192,) * 3), 100.0, tuned.values) == ""


def test_claimed_ratios_come_from_the_dense_figures():
    spec = h100_spec()
    assert matmul.claimed_ratio(spec, "fp8") == pytest.approx(1979 / 989.5)
    assert matmul.claimed_ratio(spec, "mxfp4") is None  # Hopper has no FP4 figure
    b200 = specs.load().find("B200")
    assert matmul.claimed_ratio(b200, "nvfp4") == pytest.approx(b200.figures["fp4_dense"].value
                                                                / b200.figures["bf16_dense"].value)


def _row(benchmark, provider, status, value=None, spec_value=None, message="", case="8192x8192x8192"):
    return {"family": "matmul", "benchmark": benchmark, "provider": provider, "status": status, "case": case,
            "value": value, "unit": "TFLOP/s", "spec_value": spec_value, "message": message,
            "device_index": 0, "device_name": "NVIDIA H100 80GB HBM3"}


def test_dtype_ladder_line_measured_against_claimed():
    rows = [
        _row("bf16", "torch", "ok", 650.0, 989.5), _row("bf16", "torch", "ok", 700.0, 989.5, case="best"),
        _row("fp8", "torch", "ok", 1200.0, 1979.0), _row("fp8", "torch", "ok", 1400.0, 1979.0, case="best-fastacc"),
        _row("mxfp4", "torch", "unsupported", message="FP4 tensor cores need compute capability 10.0 or 12.0; "
             "this card is 9.0"),
        _row("bf16", "triton", "skipped", message="not here"),
        {"family": "memory", "benchmark": "copy", "provider": "torch", "status": "ok", "value": 3000.0},
    ]
    assert matmul.summary_lines(rows) == [
        "dtype ladder, cuda:0 NVIDIA H100 80GB HBM3, torch (best row per dtype): bf16 700.0 TFLOP/s -> "
        "fp8 1,400.0 TFLOP/s (2.00x bf16; spec 2.00x) -> fp4 unsupported (FP4 tensor cores need compute "
        "capability 10.0 or 12.0; this card is 9.0)"]


def test_dtype_ladder_names_the_fp4_recipe_and_skips_claims_it_lacks():
    rows = [_row("bf16", "torch", "ok", 2000.0), _row("fp8", "torch", "ok", 3900.0),
            _row("nvfp4", "torch", "ok", 7000.0), _row("mxfp4", "torch", "ok", 6500.0)]
    (line,) = matmul.summary_lines(rows)
    assert line.endswith("-> fp8 3,900.0 TFLOP/s (1.95x bf16) -> fp4 (nvfp4) 7,000.0 TFLOP/s (1.79x fp8)")


def test_out_of_memory_at_a_fixed_shape_retries_smaller_and_says_so(monkeypatch):
    real = matmul.build

    def small_card(target, case, shape, **kw):
        if shape[0] > 1024:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(target, case, shape, **kw)

    monkeypatch.setattr(matmul, "build", small_card)
    row = run_case(cpu(), Case("fp32", "torch", "2048x2048x256", (2048, 2048, 256)), "quick")
    assert row["status"] == "ok"
    assert row["message"].startswith("out of memory at 2048x2048x256: measured at 1024x1024x256")
    assert row["work"] == 2 * 1024 * 1024 * 256


def test_cardbench_run_matmul_in_cpu_mode(tmp_path):
    """The family through `cardbench run` (at a smaller CPU shape, to keep CI short): a valid,
    complete CSV and the dtype ladder line."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from bench.core.results import read_results

    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    script = ("import sys; from bench import cli; from bench.families import matmul; matmul.CPU_SHAPES = ((256, 256, 512),); "
              f"sys.exit(cli.main(['run', '--families', 'matmul', '--out', {str(tmp_path)!r}]))")
    out = subprocess.run([sys.executable, "-c", script], cwd=repo, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    res = read_results(next(tmp_path.glob("*.csv")))
    assert res.complete
    by = {(r["benchmark"], r["provider"], r["case"]): r for r in res.rows}
    assert by[("fp32", "torch", "256x256x512")]["status"] == "ok"
    assert by[("bf16", "torch", "256x256x512")]["status"] == "ok"  # CPU mode always times fp32 and bf16
    assert by[("mxfp4", "torch", "256x256x512")]["status"] == "unsupported"
    assert by[("bf16", "triton", "256x256x512")]["status"] == "skipped"
    assert {r["family"] for r in res.rows} == {"matmul"}
    for r in res.rows:
        if r["status"] == "ok":
            assert float(r["value"]) == pytest.approx(float(r["work"]) / float(r["time_s"]) / 1e9, rel=1e-9)
            assert json.loads(r["params"])["m"] == 256
    assert "matmul/fp32" in out.stdout and "GFLOP/s" in out.stdout
    assert "dtype ladder, cpu" in out.stdout and "fp4 unsupported" in out.stdout


# ---------------------------------------------------------------------------------------
# The real paths on a GPU (skipped without one)


def _cuda_target():
    from bench.core import devices

    t = devices.cuda_target(0)
    t.spec = specs.load().match(t.identity.get("device_name", ""), t.identity.get("pci_device_id", ""))
    return t


GPU_PATHS = [(r, "torch", False) for r in matmul.RECIPES] + [("fp8", "torch", True)] + [
    (r, "triton", False) for r in ("bf16", "fp16", "fp8", "mxfp4")]


@pytest.mark.gpu
@pytest.mark.parametrize("recipe, provider, fast", GPU_PATHS,
                         ids=[f"{r}-{p}{'-fast' if f else ''}" for r, p, f in GPU_PATHS])
def test_real_gemm_paths_verify_and_time_on_the_gpu(recipe, provider, fast):
    t = _cuda_target()
    cc = matmul.capability(t)
    case = Case(recipe, provider, "2048x2048x4096", (2048, 2048, 4096), fast)
    row = run_case(t, case, "quick")
    if cc < matmul.RECIPES[recipe].min_cc:
        assert row["status"] == "unsupported" and row["message"].endswith(f"this card is {cc[0]}.{cc[1]}")
        return
    if row["status"] == "unsupported" and recipe in matmul.FP4:
        # FP4 past the static check: torch's block-scaled GEMM is built for some cards only (torch's
        # own tests run MXFP4 on B200/B300), so the trial call decides, with the error. Every other
        # recipe must run on a card of its compute capability: a regression there fails.
        assert row["message"].startswith("the trial call"), row["message"]
        pytest.skip(row["message"])
    assert row["status"] == "ok", row["message"]
    assert row["timer"].startswith("cuda_events") and row["unit"] == ("TOPS" if recipe == "int8" else "TFLOP/s")
    assert row["value"] == pytest.approx(row["work"] / row["time_s"] / 1e12, rel=1e-12)
    if recipe == "fp8" and cc == (9, 0):
        assert matmul.probe(t, case, matmul.State()).status == "ok"  # Hopper: FP8 runs, FP4 does not


@pytest.mark.gpu
def test_fp4_verdict_on_this_gpu_matches_its_compute_capability():
    t = _cuda_target()
    cc = matmul.capability(t)
    verdicts = {r: matmul.probe(t, Case(r, "torch", "x", (256,) * 3), matmul.State()) for r in matmul.FP4}
    if cc < (10, 0):
        for v in verdicts.values():
            assert v == matmul.Probe("unsupported", f"FP4 tensor cores need compute capability 10.0 or 12.0; "
                                                    f"this card is {cc[0]}.{cc[1]}")
    else:  # Blackwell: NVFP4 at least runs through cuBLAS (MXFP4 is B200/B300 only in torch's tests)
        assert verdicts["nvfp4"].status == "ok", verdicts["nvfp4"].message


@pytest.mark.gpu
def test_shape_search_on_the_gpu(monkeypatch):
    monkeypatch.setattr(matmul_tune, "SEARCH_S", {"cuda": 4.0, "cpu": 1.0})
    row = run_case(_cuda_target(), Case("bf16", "torch", "best", None), "full")
    assert row["status"] == "ok", row["message"]
    search = json.loads(row["params"])["search"]
    assert search["evaluated"] >= 3 and search["seconds"] < 4.0 + 5.0


# ---------------------------------------------------------------------------------------
# The Triton provider end to end, under the interpreter (in a child: TRITON_INTERPRET is read
# at import time and must not leak into other tests).


def _interpreted_triton_rows() -> list[dict]:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_triton_provider_end_to_end_under_the_interpreter():
    rows = {r["benchmark"]: r for r in _interpreted_triton_rows()}
    from bench.kernels import matmul as km

    expected = {"bf16", "fp16", "fp8"} | ({"mxfp4"} if km.has_dot_scaled() else set())
    assert set(rows) == expected
    for r in rows.values():
        assert r["status"] == "ok", r
        params = json.loads(r["params"])
        assert params["config_label"] in params["tuning"] and len(params["tuning"]) == 2  # both configs tried
        assert r["value"] == pytest.approx(r["work"] / r["time_s"] / 1e9, rel=1e-12)
        assert r["work"] == 2 * 32 * 48 * 64


def _child() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_kernels_matmul import _interpreter_bf16_dot_is_broken, _upcast_bf16_dot_operands

    from bench.kernels import matmul as km

    if _interpreter_bf16_dot_is_broken():  # triton-lang/triton#11584, see test_kernels_matmul.py
        _upcast_bf16_dot_operands()
    small = {"mxfp4": [km.Config(32, 32, 64, 2, 4, 2), km.Config(64, 32, 128, 1, 4, 2)]}
    km.configs = lambda recipe, profile: small.get(recipe, [km.Config(32, 32, 32, 2, 4, 2),
                                                             km.Config(16, 64, 32, 1, 4, 2)])
    harness.waiver = lambda target, case: None  # time the Triton provider on the CPU, here only
    matmul.TRIAL_SHAPE = {"torch": (32, 32, 64), "triton": (32, 32, 64)}
    target = cpu()
    tuned = matmul.State()
    rows = []
    for recipe in ("bf16", "fp16", "fp8", "mxfp4"):
        if recipe == "mxfp4" and not km.has_dot_scaled():
            continue
        case = Case(recipe, "triton", "32x48x64", (32, 48, 64))
        rows.append(run_case(target, case, "quick", tuned))
    print(json.dumps([{k: r.get(k) for k in ("benchmark", "status", "message", "value", "work", "time_s", "params")}
                      for r in rows]))


if __name__ == "__main__":
    _child()
