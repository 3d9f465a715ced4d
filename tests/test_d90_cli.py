"""`peftzoo d90`: bad input is a clear error before anything trains; cached scores carry their settings; outputs are
written atomically."""
import errno
import gzip
import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from peftzoo.cli import main
from peftzoo.intrinsic import d90

# a digits search of a few seconds: 2 grid points, 1 seed, a given baseline, 1 epoch on 100 examples
FAST = ["--task", "digits", "--method", "did", "--grid", "10", "1000", "--bisect", "0", "--seeds", "0",
        "--baseline", "0.9", "--epochs", "1", "--max-train", "100", "-q"]


def d90_cli(argv, out, capsys):
    """(exit code, stderr) of `peftzoo d90 ARGV --out OUT`; argparse's own errors exit via SystemExit."""
    try:
        rc = main(["d90", *argv, "--out", str(out)])
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def _idx(path: Path, shape, corrupt: str | None = None):
    body = struct.pack(">I", 0x0800 | len(shape)) + struct.pack(">" + "I" * len(shape), *shape)
    body += bytes(int(__import__("numpy").prod(shape)) - (5 if corrupt == "short" else 0))
    data = gzip.compress(body)
    path.write_bytes(data[: len(data) // 2] if corrupt == "cut" else b"not gzip at all" if corrupt == "junk" else data)


@pytest.fixture
def fake_mnist(tmp_path):
    """A data folder with a small, well-formed mnist/ (IDX + CSV) that a test then corrupts."""
    root = tmp_path / "data" / "mnist"
    root.mkdir(parents=True)
    _idx(root / "t10k-images-idx3-ubyte.gz", (20, 28, 28))
    _idx(root / "t10k-labels-idx1-ubyte.gz", (20,))
    rows = "\n".join(",".join(["0"] * 784 + [str(i % 10)]) for i in range(10))
    (root / "mnist_5k.csv.gz").write_bytes(gzip.compress(rows.encode()))
    return root


BAD = [  # (arguments, how the mnist folder is broken or None, expected error text)
    (["--dmin", "0"], None, r"--dmin must be > 0 \(got 0\)"),
    (["--dmin", "-5"], None, r"--dmin must be > 0 \(got -5\)"),
    (["--dmin", "100", "--dmax", "10"], None, "--dmin 100 is larger than --dmax 10"),
    (["--per-decade", "0"], None, "--per-decade must be > 0"),
    (["--grid", "0", "10"], None, r"--grid values must be >= 1 \(got 0\)"),
    (["--bisect", "-1"], None, "--bisect must be >= 0"),
    (["--lr", "nan"], None, r"--lr must be > 0 \(got nan\)"),
    (["--epochs", "0"], None, "--epochs must be > 0"),
    (["--seeds"], None, "--seeds: expected at least one argument"),
    (["--grid"], None, "--grid: expected at least one argument"),
    (["--definition", "absolute"], None, r"--definition absolute needs --absolute-target SCORE"),
    (["--absolute-target", "0.9"], None, r"--absolute-target applies to --definition absolute only"),
    (["--definition", "half"], None, r"--definition: invalid choice: 'half'"),
    (["--threshold", "1.5"], None, r"--threshold must be in \(0, 1\] \(got 1.5\)"),
    (["--max-ratio", "1"], None, r"--max-ratio must be > 1 \(got 1.0\)"),
    (["--fine-per-decade", "0"], None, r"--fine-per-decade must be > 0"),
    (["--baseline", "0.8", "nan"], None, r"--baseline must be > 0 \(got nan\)"),
    (["--task", "foo"], None, r"unknown task 'foo'; known tasks: digits, mnist, fashion-mnist \(images\), CoLA, SST-2"),
    (["--task", "mnist", "--grid", "10", "--baseline", "0.9"], "junk", r"t10k-images-idx3-ubyte.gz is not a valid "
     r"gzip-compressed IDX file \(BadGzipFile"),
    (["--task", "mnist", "--grid", "10", "--baseline", "0.9"], "cut", r"t10k-images-idx3-ubyte.gz is not a valid "
     r"gzip-compressed IDX file \(EOFError"),
    (["--task", "mnist", "--grid", "10", "--baseline", "0.9"], "short", r"t10k-images-idx3-ubyte.gz is truncated or "
     r"corrupt: its header says \(20, 28, 28\) \(15680 bytes\), it holds 15675"),
    (["--task", "mnist", "--grid", "10", "--baseline", "0.9"], "missing", r"t10k-images-idx3-ubyte.gz is missing"),
    (["--task", "mnist", "--grid", "10", "--baseline", "0.9"], "csv", r"mnist_5k.csv.gz is not a valid gzip-"),
]


@pytest.mark.parametrize("argv, broken, message", BAD, ids=[" ".join(a) + f" {b or ''}" for a, b, _ in BAD])
def test_bad_input_is_a_clear_error(argv, broken, message, fake_mnist, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PEFTZOO_DATA_DIR", str(fake_mnist.parent))
    images = fake_mnist / "t10k-images-idx3-ubyte.gz"
    if broken == "missing":
        images.unlink()
    elif broken == "csv":
        (fake_mnist / "mnist_5k.csv.gz").write_bytes(gzip.compress(b"1,2,3\n")[:-6])
    elif broken:
        _idx(images, (20, 28, 28), corrupt=broken)
    rc, err = d90_cli(argv, tmp_path / "out", capsys)
    assert rc == 2, err
    assert __import__("re").search(message, err), err
    assert "Traceback" not in err
    assert not list((tmp_path / "out").glob("*.json")), "nothing is written for bad input"


@pytest.fixture
def first_run(tmp_path, capsys):
    out = tmp_path / "out"
    assert d90_cli(FAST, out, capsys)[0] == 0
    return out, json.loads((out / "digits-fc-did.json").read_text())


def _config(argv):
    import argparse

    from peftzoo.intrinsic.cli import add_arguments, config
    p = argparse.ArgumentParser()
    add_arguments(p)
    return config(p.parse_args(argv))


@pytest.mark.parametrize("base, extra", [
    (["--task", "digits"], ["--epochs", "2"]), (["--task", "digits"], ["--lr", "0.001"]),
    (["--task", "digits"], ["--full-lr", "0.01"]), (["--task", "digits"], ["--batch-size", "32"]),
    (["--task", "digits"], ["--max-train", "120"]), (["--task", "digits"], ["--net", "lenet"]),
    (["--task", "digits"], ["--method", "did"]), (["--task", "SST-2"], ["--max-eval", "50"]),
    (["--task", "SST-2"], ["--max-len", "32"]), (["--task", "SST-2"], ["--random-init"]),
    (["--task", "SST-2"], ["--model", "other/model"]), (["--task", "SST-2", "--data-dir", "G1"], ["--data-dir", "G2"]),
    (["--task", "mnist", "--data-dir", "D"], ["--task", "fashion-mnist"]),
])
def test_every_score_changing_setting_is_in_the_identity(base, extra, fake_mnist):
    fashion = fake_mnist.parent / "fashion-mnist"
    fashion.mkdir()
    for split in ("train", "t10k"):
        _idx(fashion / f"{split}-images-idx3-ubyte.gz", (20, 28, 28))
        _idx(fashion / f"{split}-labels-idx1-ubyte.gz", (20,))
    for i in (1, 2):  # two GLUE folders whose SST-2 differs in one label
        for split in ("train", "dev"):
            (fake_mnist.parent / f"G{i}" / "SST-2").mkdir(parents=True, exist_ok=True)
            (fake_mnist.parent / f"G{i}" / "SST-2" / f"{split}.tsv").write_text(f"sentence\tlabel\na film\t{i - 1}\n")
    where = {"D": str(fake_mnist.parent), "G1": str(fake_mnist.parent / "G1"), "G2": str(fake_mnist.parent / "G2")}
    fix = lambda a: [where.get(x, x) for x in a]  # noqa: E731
    a, b = _config(fix(base)), _config(fix(base + extra))
    assert a != b
    json.dumps(a)  # plain data
    assert _config(fix(base + ["--grid", "5", "50", "--bisect", "1", "--seeds", "3", "--baseline", "0.5",
                               "--out", "x", "-q"])) == a, "search settings do not change a score"
    assert _config(fix(base + ["--lr", "0.01", "--full-lr", "5e-5" if "SST-2" in base else "0.001"])) == a, \
        "defaults are resolved"


def test_image_data_identity_is_its_content(fake_mnist, tmp_path):
    copy = tmp_path / "elsewhere" / "mnist"
    shutil.copytree(fake_mnist, copy)
    argv = ["--task", "mnist", "--data-dir"]
    a = _config(argv + [str(fake_mnist.parent)])
    assert a["data"].startswith("local:") and _config(argv + [str(copy.parent)]) == a  # same files, another place
    _idx(copy / "t10k-labels-idx1-ubyte.gz", (20,), corrupt="short")
    assert _config(argv + [str(copy.parent)])["data"] != a["data"]


def test_cached_scores_are_refused_under_other_settings(first_run, capsys, monkeypatch):
    out, rec = first_run
    assert "<function" not in json.dumps(rec) and rec["config"]["epochs"] == 1 and rec["config"]["lr"] == 0.01
    argv = FAST + ["--epochs", "2", "--max-train", "120", "--lr", "0.001"]
    rc, err = d90_cli(argv, out, capsys)
    assert rc == 2 and "holds scores computed with other settings (epochs: 1 there, 2 now; lr: 0.01 there, " \
        "0.001 now; max_train: 100 there, 120 now): use another --out, or --overwrite" in err, err
    assert json.loads((out / "digits-fc-did.json").read_text()) == rec, "the old results are intact"
    assert d90_cli(argv + ["--overwrite"], out, capsys)[0] == 0
    new = json.loads((out / "digits-fc-did.json").read_text())
    assert new["config"]["epochs"] == 2 and set(new["scores"]) == {"10/0", "1000/0"}
    assert new["scores"] != rec["scores"]
    monkeypatch.setattr("peftzoo.intrinsic.point.image_score", lambda *a: pytest.fail("a cached point was re-run"))
    assert d90_cli(argv + ["--overwrite"], out, capsys)[0] == 0  # equal settings: the scores are kept


def test_same_settings_resume_from_the_cache(first_run, capsys, monkeypatch):
    out, rec = first_run
    monkeypatch.setattr("peftzoo.intrinsic.point.image_score", lambda *a: pytest.fail("a cached point was re-run"))
    assert d90_cli(FAST + ["--grid", "10", "1000", "--baseline", "0.5"], out, capsys)[0] == 0  # baseline: no score
    new = json.loads((out / "digits-fc-did.json").read_text())
    assert new["scores"] == rec["scores"] and new["baseline"] == 0.5


def test_a_computed_baseline_is_cached_too(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr("peftzoo.intrinsic.point.image_score",
                        lambda cfg, d, s, data_dir, init_from=None:
                        calls.append(("full" if d == d90.FULL else cfg["method"], d, s)) or 0.5)
    argv = [a for a in FAST if a not in ("--baseline", "0.9")]
    assert d90_cli(argv, tmp_path, capsys)[0] == 0
    assert calls == [("full", d90.FULL, 0), ("did", 10, 0)]  # 10 already reaches 90%: 1000 not run
    rec = json.loads((tmp_path / "digits-fc-did.json").read_text())
    assert rec["baseline_scores"] == [0.5] and rec["scores"]["full/0"] == 0.5 and rec["d90"] == 10
    assert d90_cli(argv, tmp_path, capsys)[0] == 0 and len(calls) == 2  # nothing re-run, the baseline included


@pytest.mark.parametrize("target", ["json", "png"])
def test_disk_full_keeps_earlier_results(first_run, target, capsys, monkeypatch):
    out, rec = first_run
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_fsync = os.fsync

    def full(fd):  # the disk fills while the new file is written
        if os.readlink(f"/proc/self/fd/{fd}").endswith("." + target):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)
    monkeypatch.setattr(os, "fsync", full)
    rc, err = d90_cli(FAST + ["--baseline", "0.5"], out, capsys)
    assert rc == 2 and f"could not write {out / ('digits-fc-did.' + target)}: No space left on device (disk " \
        f"full); the temporary file was removed, the previous digits-fc-did.{target} is intact" in err, err
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(after) == set(before), "no temporary file is left"
    assert after[f"digits-fc-did.{target}"] == before[f"digits-fc-did.{target}"], "the old file is untouched"


def test_search_refuses_a_file_without_settings(tmp_path):
    old = json.loads((Path(__file__).parents[1] / "results" / "intrinsic" / "mnist-fc-did.json").read_text())
    del old["config"]  # as written before peftzoo recorded the settings
    (tmp_path / "r.json").write_text(json.dumps(old))
    with pytest.raises(d90.CacheMismatch, match="records no settings.*--overwrite"):
        d90.Search(lambda d, s: 0.0, 1.0, trivial=0.0, path=tmp_path / "r.json", config={"task": "mnist"})
