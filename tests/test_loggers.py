"""ipsb.loggers.WandbLogger falls back to offline mode with one log line (run in clean subprocesses)."""
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import sys
    from ipsb.loggers import WandbLogger
    logger = WandbLogger(project="ipsb-test", save_dir=sys.argv[1], connect_timeout=1.0)
    print("FALLBACK:", logger.fallback_reason)
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.experiment.finish()
    import os
    print("MODE:", os.environ.get("WANDB_MODE"), logger._offline)
""")


def _run(tmp_path, **env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "NETRC"}
    env.update(HOME=str(tmp_path / "home"), WANDB_SILENT="true", **env_extra)
    (tmp_path / "home").mkdir(exist_ok=True)
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "logs")], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_no_api_key_falls_back_to_offline_with_one_line(tmp_path):
    out = _run(tmp_path)
    assert "MODE: dryrun True" in out.stdout
    assert "no W&B API key" in out.stdout
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if "falls back to offline mode" in ln]
    assert len(lines) == 1, out.stderr
    runs = list((tmp_path / "logs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1


def test_unreachable_server_falls_back_too(monkeypatch, tmp_path):
    from ipsb.loggers import WandbLogger

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")      # nothing listens on port 9
    logger = WandbLogger(project="t", save_dir=str(tmp_path), connect_timeout=1.0)
    assert logger._offline and "127.0.0.1:9 is unreachable" in logger.fallback_reason


def test_explicit_offline_mode_checks_nothing(monkeypatch, tmp_path):
    from ipsb.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    logger = WandbLogger(project="t", save_dir=str(tmp_path))
    assert logger.fallback_reason is None


def test_netrc_key_counts_as_a_key(tmp_path):
    from ipsb.loggers import has_api_key

    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    old = {k: os.environ.pop(k, None) for k in ("WANDB_API_KEY", "NETRC")}
    try:
        os.environ["NETRC"] = str(tmp_path / "netrc")
        assert has_api_key("api.wandb.ai") and not has_api_key("other.host")
    finally:
        os.environ.pop("NETRC", None)
        os.environ.update({k: v for k, v in old.items() if v is not None})
