"""requirements.txt and L2D.yaml name the same packages with the same lower bounds."""
import re

from conftest import ROOT

# conda names that differ from the PyPI ones
CONDA_TO_PIP = {"pytorch": "torch", "pyyaml": "PyYAML"}


def _req(line):
    m = re.match(r"^\s*-?\s*([A-Za-z0-9_.\-]+)\s*(>=\s*[0-9.]+)?", line)
    return (m.group(1), (m.group(2) or "").replace(" ", "")) if m else None


def test_requirements_and_conda_env_agree():
    pip = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, bound = _req(line)
            pip[name.lower()] = bound
    conda, in_deps = {}, False
    for raw in (ROOT / "L2D.yaml").read_text().splitlines():
        line = raw.split("#")[0].rstrip()
        if line.startswith("dependencies:"):
            in_deps = True
            continue
        if not in_deps or not line.strip().startswith("- ") or line.strip() in ("- pip", "- pip:"):
            continue
        name, bound = _req(line.strip())
        if name in ("python",):
            continue
        conda[CONDA_TO_PIP.get(name, name).lower()] = bound
    assert pip == conda
