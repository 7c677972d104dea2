"""The flags every running command shares mean the same everywhere, and the help texts say what the commands do."""

import argparse

import pytest

from data2vec.cli import build_parser, main

RUNNING = ("pretrain", "finetune", "probe", "demo", "compare")


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


def test_device_and_threads_exist_on_every_running_command_with_one_default():
    commands = subparsers()
    for name in RUNNING:
        device, threads = option(commands[name], "--device"), option(commands[name], "--threads")
        assert device.default == "auto", name
        assert threads.default is None and threads.type is int, name
    device_helps = {option(commands[name], "--device").help for name in RUNNING}
    assert len(device_helps) == 1  # one help text


@pytest.mark.parametrize("argv", [["demo", "--threads", "0"],
                                  ["finetune", "--task", "sst2", "--data", "nowhere", "--threads", "0"],
                                  ["probe", "--data", "digits", "--threads", "0"]])
def test_a_bad_thread_count_is_one_line_with_a_fix(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written into the checkout
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--threads must be >= 1, got 0; fix:" in err[0], err


def test_threads_sets_torchs_pool_and_the_blas_pools_including_a_library_loaded_later(monkeypatch):
    """--threads n: torch's pool, the BLAS / OpenMP pools already loaded (numpy's OpenBLAS comes with torch), and
    the environment a library loaded later reads (scipy's own OpenBLAS loads with the first probe)."""
    import os

    import torch
    from threadpoolctl import threadpool_info

    from data2vec.cli.flags import apply_threads

    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        monkeypatch.setenv(name, "1")  # restored after the test; the pools are re-pinned by the conftest fixture
    apply_threads(2)
    pools = threadpool_info()
    assert torch.get_num_threads() == 2 and pools and all(p["num_threads"] == 2 for p in pools), pools
    assert os.environ["OPENBLAS_NUM_THREADS"] == os.environ["OMP_NUM_THREADS"] == os.environ["RAYON_NUM_THREADS"] == "2"
    apply_threads(1)
    assert torch.get_num_threads() == 1 and all(p["num_threads"] == 1 for p in threadpool_info())


def test_help_texts_show_no_empty_default_and_name_both_compare_modalities():
    for name, parser in subparsers().items():
        assert "(default: )" not in parser.format_help(), name
    top = build_parser().format_help()
    assert "5-minute" not in top
    compare = subparsers()["compare"].format_help()
    assert "--modality" in compare and "text" in compare
