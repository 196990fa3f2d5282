"""The command line: demo and bench in reduced mode, and the method plans they compare."""
import csv
import math

import pytest
import torch

from asymrnr_fx import cli
from asymrnr_fx.evaluation.compare import METHODS, method_plan
from asymrnr_fx.evaluation.metrics import psnr


@pytest.mark.parametrize("cost", [0.6, 0.35])
@pytest.mark.parametrize("method", METHODS)
def test_method_plans_keep_the_requested_attention_cost(method, cost):
    plan = method_plan(method, cost)
    q, kv = plan.ratio(0, 0, "q"), plan.ratio(0, 0, "kv")
    kept = (1 - q) ** 2 if plan.symmetric else (1 - q) * (1 - kv)
    assert kept == pytest.approx(cost) and plan.attention_cost() == pytest.approx(cost)
    if method == "todo":
        assert q == 0 and plan.mode == "mean" and plan.similarity == "spatial"


def test_psnr_against_formula():
    a = torch.zeros(1, 2, 3, 8, 8)
    b = a + 0.1
    assert psnr(a, a, data_range=2.0) == math.inf
    assert psnr(a, b, data_range=2.0) == pytest.approx(10 * math.log10(4 / 0.01), rel=1e-6)


def test_demo_quick_writes_gif_and_table(tmp_path, capsys):
    assert cli.main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    gif, table = tmp_path / "baseline_asymrnr_diff.gif", tmp_path / "table.md"
    assert gif.stat().st_size > 1000 and "speedup" in table.read_text()
    assert "prompt accuracy" in capsys.readouterr().out


def test_bench_small_writes_csv_and_plot(tmp_path):
    args = ["bench", "--target", "cogvideox-shaped", "--small", "--no-compile", "--costs", "0.5",
            "--methods", "asymrnr", "todo", "--out", str(tmp_path)]
    assert cli.main(args) == 0
    rows = list(csv.DictReader(open(tmp_path / "bench.csv")))
    assert [r["method"] for r in rows] == ["baseline", "asymrnr", "todo"]
    assert all(float(r["attention_cost"]) == pytest.approx(0.5) for r in rows[1:])
    assert float(rows[1]["psnr"]) < float("inf")  # it reduced something
    assert (tmp_path / "bench.png").stat().st_size > 1000


def test_inspect_command_lists_sites(capsys):
    assert cli.main(["inspect", "--model", "toy"]) == 0
    out = capsys.readouterr().out
    assert out.count("joint") >= 3 and "(4, 12, 12)" in out
