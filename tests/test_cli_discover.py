"""The command line as a new user meets it: fast help without torch, help and defaults for every option, examples,
--version, "did you mean", every config key from the command line, --print-config, shell completion."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from cifarlab import __version__
from cifarlab.cli import build_parser, main
from cifarlab.config import FIELDS, config_docs, make_config


def _run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cifarlab", *args], capture_output=True, text=True, timeout=120,
                          **kw)


@pytest.mark.parametrize("args", [["--help"], ["recipes"], ["config", "lr"], ["train", "--help"], ["--version"]])
def test_help_and_listing_commands_import_no_torch(args):
    probe = ("import sys\nfrom cifarlab.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "heavy = sorted(m for m in ('torch', 'numpy', 'matplotlib', 'optuna', 'PIL') if m in sys.modules)\n"
             "print('HEAVY', heavy, file=sys.stderr)\n")
    res = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in res.stderr, res.stderr[-500:]


def test_version_prints_the_package_version():
    res = _run("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"cifarlab {__version__}"


def _all_parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_parsers(sub)


def test_every_option_has_help_and_every_command_an_example():
    parsers = list(_all_parsers(build_parser()))
    assert len(parsers) > 15
    for p in parsers:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                assert all(c.help for c in action._choices_actions), p.prog
            else:
                assert action.help, f"{p.prog} {action.option_strings or action.dest} has no help"
        assert p.epilog and p.epilog.startswith("examples:"), f"{p.prog} has no examples"


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    assert "images per forward pass (default: 500)" in " ".join(out.split())
    assert "cifarlab eval runs/fast94/best.pt" in out


@pytest.mark.parametrize("argv,hint", [
    (["trian"], "did you mean 'train'?"),
    (["train", "--recipe", "fast49", "--print-config"], "did you mean 'fast96' or 'fast95' or 'fast94'?"),
    (["train", "--recipe", "fast94", "--learning-rate", "0.1", "--print-config"], "did you mean 'lr'?"),
    (["train", "--recipe", "fast94", "--wieght-decay", "0", "--print-config"], "did you mean 'weight_decay'?"),
    (["summary", "resnet_smal"], "did you mean 'resnet_small'"),
    (["config", "batchsize"], "did you mean 'batch_size'"),
    (["data", "downlaod", "cifar10"], "did you mean 'download'?"),
    # no recipe or model yet: the mistyped key is named first (it was "give --recipe NAME ...")
    (["train", "--config", "my.yaml", "--data", "."], "unknown config key 'config'; did you mean 'recipe'?"),
])
def test_a_typo_gets_one_line_with_a_guess(capsys, argv, hint):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and hint in err and err.count("\n") == 1, err


def test_config_lists_every_key_with_its_default_and_meaning(capsys):
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    keys = re.findall(r"^--([a-z0-9-]+) \(default (.*)\)$", out, flags=re.M)
    assert [k.replace("-", "_") for k, _ in keys] == list(FIELDS)
    assert all(d.meaning for d in config_docs())
    assert "--lr (default 0.1)\n    peak learning rate" in out
    assert "# learning-rate schedule" in out


def test_config_shows_one_key_or_a_recipes_values(capsys):
    assert main(["config", "cyclic"]) == 0
    out = capsys.readouterr().out
    assert re.findall(r"^--(\S+)", out, flags=re.M) == ["cyclic-mode", "cyclic-base-lr", "cyclic-step-size"]
    assert main(["config", "epochs", "--recipe", "seed001_small"]) == 0
    assert "--epochs (default 30)" in capsys.readouterr().out


def test_print_config_resolves_without_reading_data_or_writing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--recipe", "fast94", "--lr", "0.2", "--epochs", "3", "--data", "nowhere.tar.gz",
                 "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = make_config("fast94", lr=0.2, epochs=3, data="nowhere.tar.gz")
    assert printed == yaml.safe_load(yaml.safe_dump(expected.__dict__))
    assert list(tmp_path.iterdir()) == []


def test_print_config_of_a_run_with_its_resumable_changes(trained_run, capsys):
    assert main(["train", "--resume", str(trained_run), "--epochs", "5", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["epochs"] == 5 and printed["model"] == "resnet_small" and printed["batch_size"] == 32


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_script_knows_the_commands_and_options(tmp_path, shell):
    pytest.importorskip("shtab")
    res = _run("completion", shell)
    assert res.returncode == 0
    for word in ("train", "compare-to-study", "--print-config", "--tta"):
        assert word in res.stdout
    script = tmp_path / f"cifarlab.{shell}"
    script.write_text(res.stdout)
    if shell == "bash":
        check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        # the script, sourced, completes the subcommands
        words = subprocess.run(["bash", "-c", f"source {script}; COMP_WORDS=(cifarlab tr); COMP_CWORD=1; "
                                "COMP_LINE='cifarlab tr'; COMP_POINT=11; _shtab_cifarlab; "
                                "printf '%s\\n' \"${COMPREPLY[@]}\""], capture_output=True, text=True)
        assert "train" in words.stdout.split(), words.stderr


def test_models_lists_every_model_with_the_real_counts(capsys):
    from cifarlab.models import count_params, create_model, list_models

    assert main(["models"]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert list(rows) == list_models()
    for name in ("resnet_small", "fast94", "seed002_net"):
        assert rows[name] == f"{count_params(create_model(name)):,}"


@pytest.mark.skipif(not shutil.which("head"), reason="needs head(1)")
@pytest.mark.parametrize("command", ["config", "summary resnet50"])
def test_a_closed_pipe_ends_quietly(command):
    res = subprocess.run(f"{sys.executable} -m cifarlab {command} | head -3", shell=True, capture_output=True,
                         text=True, timeout=120)
    assert res.stdout.strip() and "Traceback" not in res.stderr and "Broken" not in res.stderr, res.stderr


def test_the_library_logs_under_the_cifarlab_logger_only():
    import ast
    from pathlib import Path

    import cifarlab

    for path in Path(cifarlab.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "getLogger":
                arg = node.args[0] if node.args else None
                # torch's exporter logger is only quieted (exporting._quiet_exporter), never logged to
                ok = (isinstance(arg, ast.Name) and arg.id == "__name__") or \
                    (isinstance(arg, ast.Constant) and arg.value in ("cifarlab", "torch.onnx"))
                assert ok, f"{path.name}:{node.lineno} logs outside the cifarlab logger"


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_export_prints_one_line_and_no_other_librarys_logs(trained_run, tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxscript")
    out = tmp_path / f"m.{fmt}"
    res = _run("export", str(trained_run / "best.pt"), "--format", fmt, "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"wrote {out}"
    # nothing else: torch's exporter logged what it skipped ("torchvision is not installed", with its
    # torch/onnx/... path) and warned about its own deprecations
    assert res.stderr == "", res.stderr[-800:]
