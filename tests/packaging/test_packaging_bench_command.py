"""`coe-ctl bench quality` runs bench/quality from the source checkout in a child interpreter: the
benchmark's own options and --help, its exit codes, coe-ctl's import path untouched, and a clear
error from an install that has no checkout. (The full run is tests/bench/test_bench_quality_runner.)"""

from __future__ import annotations

import sys

from coe_controller import cli, cli_bench

from tests.packaging import packaging_support as ps


def test_help_is_the_benchmarks_own_and_the_checkout_comes_first(tmp_path, monkeypatch, capfd):
    # A folder named bench/ in the working directory is not the one that runs (-P keeps it off the path).
    decoy = tmp_path / "bench" / "quality"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("")
    (decoy / "run.py").write_text("raise SystemExit('the decoy ran')\n")
    monkeypatch.chdir(tmp_path)
    path_before = list(sys.path)
    modules_before = {m for m in sys.modules if m == "bench" or m.startswith("bench.")}

    assert cli.main(["bench", "quality", "--help"]) == 0
    out, err = capfd.readouterr()
    assert out.startswith("usage: coe-ctl bench quality"), out + err
    for option in ("--dataset", "--report-only", "--specs", "--store", "--arms"):
        assert option in out
    assert "decoy" not in out + err
    assert sys.path == path_before
    assert {m for m in sys.modules if m == "bench" or m.startswith("bench.")} == modules_before


def test_the_benchmarks_errors_keep_their_exit_codes(tmp_path, capfd):
    empty = tmp_path / "specs"
    (empty / "meld").mkdir(parents=True)
    code = cli.main(
        ["bench", "quality", "--specs", str(empty), "--report-only", "--results", str(tmp_path / "R.md")]
    )
    _, err = capfd.readouterr()
    assert code == 2 and "no arm specs (*.yaml)" in err, err
    assert cli.main(["bench", "quality", "--no-such-option"]) == 2
    _, err = capfd.readouterr()
    assert "coe-ctl bench quality: error: unrecognized arguments: --no-such-option" in err


def test_without_a_checkout_it_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    """A wheel install (site-packages, no bench/ beside the package) cannot run the benchmark."""
    monkeypatch.setattr(cli_bench, "REPO", tmp_path)
    assert cli.main(["bench", "quality", "--dataset", "meld"]) == 2
    err = capsys.readouterr().err
    assert "not installed from" in err and "pip install -e" in err, err


def test_the_checkout_is_where_the_package_was_installed_from():
    assert cli_bench.checkout() == ps.REPO
