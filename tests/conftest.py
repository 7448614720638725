"""Test-session settings: offline Hugging Face hub, and figures/runs/caches kept out of the repo."""
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
_tmp = Path(tempfile.mkdtemp(prefix="sagerec-tests-"))
# Notebooks under test write figures and runs; keep them out of the committed figures/ and runs/.
os.environ["SAGEREC_FIGURES"] = str(_tmp / "figures")
os.environ["SAGEREC_RUNS"] = str(_tmp / "runs")
os.environ.setdefault("SAGEREC_CACHE", str(_tmp / "cache"))
