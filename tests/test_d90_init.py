"""`peftzoo d90 --init-from PATH`: θ0 is the file's weights (the baseline starts there too), a missing or
mismatched file is a clear error before anything trains, and the file's content is part of the cache identity."""
import json

import pytest
import torch

from peftzoo.intrinsic.images import build_net, load_init
from test_d90_cli import FAST, _config, d90_cli


@pytest.fixture
def weights(tmp_path):
    """A state_dict of the digits FC net (8×8 inputs) that no seed's random init gives."""
    net = build_net("fc", 8, 123)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.5).add_(0.01)
    path = tmp_path / "theta0.pt"
    torch.save(net.state_dict(), path)
    return path, net.state_dict()


def test_theta0_is_the_files_weights(weights, tmp_path, capsys, monkeypatch):
    path, state = weights
    seen = []

    def spy(net, p, what="", sha=None):
        got = load_init(net, p, what, sha)
        seen.append({k: v.clone() for k, v in net.state_dict().items()})
        return got
    monkeypatch.setattr("peftzoo.intrinsic.images.load_init", spy)
    argv = [a for a in FAST if a not in ("--baseline", "0.9")] + ["--init-from", str(path)]
    rc, err = d90_cli(argv, tmp_path / "out", capsys)
    assert rc == 0, err
    assert len(seen) >= 3  # the identity check, the baseline and a subspace point
    for s in seen:
        assert s.keys() == state.keys() and all(torch.equal(s[k], state[k]) for k in state)
    rec = json.loads((tmp_path / "out" / "digits-fc-did.json").read_text())
    assert rec["config"]["init_from"].startswith("sha256:") and len(rec["config"]["init_from"]) == 23
    assert "--init-from" in rec["command"]


def test_load_init_sets_every_weight(weights):
    path, state = weights
    net = build_net("fc", 8, 0)
    assert not torch.equal(net.state_dict()["1.weight"], state["1.weight"])
    sha = load_init(net, path)
    assert all(torch.equal(net.state_dict()[k], state[k]) for k in state)
    assert sha == load_init(build_net("fc", 8, 1), path, sha=sha)


@pytest.mark.parametrize("case, message", [
    ("missing", r"--init-from .*nope\.pt: no such file \(expected a torch state_dict of the fc net for 8×8 images\)"),
    ("shape", r"does not fit the fc net for 8×8 images: '1\.weight' has shape \(200, 784\) in the file, \(200, 64\) "
              r"in the net"),
    ("key", r"does not fit the fc net for 8×8 images: key '5\.bias' is missing from the file"),
    ("junk", r"is not a torch state_dict file"),
])
def test_bad_init_file_is_a_clear_error(case, message, tmp_path, capsys):
    path = tmp_path / ("nope.pt" if case == "missing" else "bad.pt")
    if case == "shape":
        torch.save(build_net("fc", 28, 0).state_dict(), path)  # an MNIST-sized net for the 8×8 digits
    elif case == "key":
        sd = build_net("fc", 8, 0).state_dict()
        del sd["5.bias"]
        torch.save(sd, path)
    elif case == "junk":
        path.write_bytes(b"not a torch file")
    rc, err = d90_cli(FAST + ["--init-from", str(path)], tmp_path / "out", capsys)
    assert rc == 2 and __import__("re").search(message, err), err
    assert "Traceback" not in err and not (tmp_path / "out").exists(), "nothing is written for bad input"


def test_init_from_is_for_image_tasks_only(tmp_path, capsys):
    rc, err = d90_cli(["--task", "SST-2", "--init-from", "x.pt"], tmp_path / "out", capsys)
    assert rc == 2 and "--init-from applies to image tasks" in err, err


def test_the_file_is_part_of_the_cache_identity(weights, tmp_path, capsys):
    path, state = weights
    plain = _config(["--task", "digits"])
    a = _config(["--task", "digits", "--init-from", str(path)])
    assert "init_from" not in plain and {k: v for k, v in a.items() if k != "init_from"} == plain
    moved = tmp_path / "elsewhere.pt"
    moved.write_bytes(path.read_bytes())
    assert _config(["--task", "digits", "--init-from", str(moved)]) == a, "same content, another place: same"
    state["1.bias"] = state["1.bias"] + 1
    torch.save(state, moved)
    assert _config(["--task", "digits", "--init-from", str(moved)])["init_from"] != a["init_from"]
    out = tmp_path / "out"
    assert d90_cli(FAST + ["--init-from", str(path)], out, capsys)[0] == 0
    rc, err = d90_cli(FAST + ["--init-from", str(moved)], out, capsys)
    assert rc == 2 and "holds scores computed with other settings (init_from: 'sha256:" in err, err
    rc, err = d90_cli(FAST, out, capsys)  # a random init is another θ0 too
    assert rc == 2 and "init_from: 'sha256:" in err and "there, None now" in err, err
