import pytest
from conftest import tiny_bert

import peftzoo
from peftzoo.bench.budget import solve

T = ["query", "value"]


@pytest.mark.parametrize("method", ["lora", "rslora", "loraplus", "dora", "vera", "adalora", "loha", "deltalora"])  # oft: test_oft.py
def test_solver_hits_budget_within_granularity(method):
    model = tiny_bert()
    s = solve(model, method, 4096, targets=T)
    assert s.ok, s
    knob = next(iter(s.kwargs))
    worse = [solve_at(model, method, s.kwargs[knob] + d) for d in (-1, 1)]
    assert all(abs(w - 4096) >= abs(s.achieved - 4096) for w in worse if w is not None)


def solve_at(model, method, v):
    from peftzoo import adapters
    cls = adapters.get(method)
    try:
        return cls.budget_count(model, peftzoo.make_config(method, targets=T, **cls.budget_kwargs(v)))
    except ValueError:
        return None


def test_unreachable_budget_is_flagged():
    s = solve(tiny_bert(), "lora", 10**7, targets=T)  # r is capped at 32 here
    assert not s.ok and s.kwargs == {"r": 32}


def test_lora_budget_by_hand():
    s = solve(tiny_bert(), "lora", 4 * 8 * 64, targets=T)  # 4 layers x r x (32 + 32)
    assert s.kwargs == {"r": 8} and s.achieved == 2048 * 1
