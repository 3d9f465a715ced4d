"""The table's plain-words sentences: LRs fixed by the preset, and rows that did not learn beyond the head."""
from peftzoo.bench import learned
from peftzoo.bench.leaderboard import Board, Row, TaskCell
from peftzoo.bench.protocol import Protocol, Selected


def board(scores: dict, lrs_per_group: int = 1) -> Board:
    """A board with one task: ``scores`` is {(method, label): mean}; each group ran ``lrs_per_group`` LRs."""
    rows, sel = [], {}
    for (m, label), mean in scores.items():
        s = Selected(lr=1e-3, epoch=1, per_lr={1e-3 * (k + 1): 0.5 for k in range(lrs_per_group)}, sweep_seeds=[0],
                     seeds=[0], runs=[])
        rows.append(Row(m, {}, None, label, 0, 0, tasks={"SST-2": TaskCell(s, mean, 0.0, (None, None), 1)}))
        sel[("SST-2", m, label)] = s
    return Board(["SST-2"], rows, sel, [], [], description="LRs from the cpu sweep.")


def test_rows_within_two_points_of_head_only_are_named_with_score_and_lr():
    b = board({("head", "—"): 0.615, ("lora", "9,216"): 0.80, ("vera", "73,728"): 0.63, ("dora", "73,728"): 0.60})
    s = learned.not_learning(b)
    assert s.startswith("DID NOT LEARN beyond the head (at most 2 points above head-only)")
    assert "vera 73,728 on SST-2: 63.0 vs head-only 61.5 (LR 0.001)" in s and "dora 73,728 on SST-2: 60.0" in s
    assert "lora" not in s


def test_every_row_above_head_only_is_said_in_words():
    b = board({("head", "—"): 0.615, ("lora", "9,216"): 0.80, ("full", "—"): 0.81})
    assert learned.not_learning(b).startswith("Every row beats head-only by more than 2 points")
    assert learned.not_learning(board({("lora", "9,216"): 0.8})) is None  # no head-only row: nothing to say


def test_fixed_lrs_change_the_protocol_sentence_and_quote_the_preset():
    fixed, swept = board({("lora", "9,216"): 0.8}), board({("lora", "9,216"): 0.8}, lrs_per_group=3)
    assert not learned.swept(fixed) and learned.swept(swept)
    assert learned.preset_sentence(fixed) == "The preset says: LRs from the cpu sweep."
    assert learned.preset_sentence(swept) is None
    p = Protocol()
    assert "NO LR sweep" in p.describe(swept=False) and "sweeps its LR grid" not in p.describe(swept=False)
    assert "sweeps its LR grid" in p.describe()


def test_one_seed_tables_say_gaps_are_within_sampling_error():
    from types import SimpleNamespace
    b = board({("head", "—"): 0.615, ("lora", "9,216"): 0.80})
    b.ok = [SimpleNamespace(split_sizes={"train": 1500, "val": 500, "dev": 872})]
    s = learned.one_seed(b)
    assert s.startswith("ONE SEED") and "872 dev rows: ±3.3 points" in s  # 196·√(0.25/872) = 3.32
    for r in b.rows:
        r.tasks["SST-2"].n = 3
    assert learned.one_seed(b) is None
