"""What a first GPU run would trip over, checked on the CPU (docs/scaling.md#gpu-notes): the torch
version check of every command, ..."""
import subprocess
import sys

import pytest
import torch

from conftest import ROOT


# ----------------------------------------------------------------------------- the torch version
@pytest.mark.parametrize("version, ok", [("2.4.1+cu121", False), ("2.0.0", False), ("1.13.1", False),
                                         ("2.5.0", True), ("2.5.0a0+git1234", True), ("2.13.0+cpu", True),
                                         ("3.0.0", True)])
def test_version_check_knows_the_minimum(version, ok):
    from lib.utils.versions import TorchVersionError, check_torch
    if ok:
        assert check_torch(version) == version
    else:
        with pytest.raises(TorchVersionError):
            check_torch(version)


def test_every_command_stops_on_an_old_torch_with_one_line(monkeypatch, capsys):
    from lib.utils.errors import EXIT_USER_ERROR, run_cli
    ran = []
    monkeypatch.setattr(torch, "__version__", "2.4.1+cu121")
    rc = run_cli(ran.append, ["--cfg", "x.yaml"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == EXIT_USER_ERROR and ran == []                  # main never started
    assert len(err) == 1
    assert "PyTorch 2.4.1+cu121 is installed" in err[0] and "torch>=2.5" in err[0] and "upgrade" in err[0]
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    assert run_cli(ran.append, ["a"]) == 0 and ran == [["a"]]


def test_the_minimum_has_the_apis_the_code_calls_and_the_requirements_state_it():
    # the APIs the minimum stands for exist in the installed torch (which passes the check)
    from lib.utils.versions import MIN_TORCH_TEXT, check_torch
    check_torch()
    assert callable(torch.serialization.safe_globals) and callable(torch.amp.GradScaler)
    assert f"torch>={MIN_TORCH_TEXT}" in (ROOT / "requirements.txt").read_text().split()
    assert f"pytorch>={MIN_TORCH_TEXT}" in (ROOT / "L2D.yaml").read_text().replace("- ", "").split()


def test_version_check_as_a_command():
    proc = subprocess.run([sys.executable, "-m", "lib.utils.versions"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == ""
