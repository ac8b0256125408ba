"""`npas dashboard` on a real search: Optuna Dashboard's HTTP API and its page in Chromium.

One small real search (`npas search`, 6 trials of an MLP on MNIST-1D with the baselines
space, a few training steps each, kept weights) makes the study; the real
`optuna-dashboard` server is started on it, read through its JSON API (the routes of
optuna_dashboard/_app.py: /api/studies, /api/studies/ID, /artifacts/...), and its study
page is rendered in headless Chromium. Set NPAS_SCREENSHOT=docs/img/dashboard.png to keep
the screenshot.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from allocator.cli import main
from dashboards import DashboardServer, load_trials, plot_pareto, write_report

pytestmark = pytest.mark.slow
optuna.logging.set_verbosity(optuna.logging.WARNING)

NPAS = str(Path(sys.executable).with_name("npas"))
CHROMIUM = "/usr/bin/chromium"
SEARCH = ["--study", "s", "--space", "baselines", "--model", "mlp", "--data", "mnist1d",
          "--trials", "6", "--concurrency", "1", "--epochs", "1", "--data-size", "600",
          "--max-steps-per-epoch", "3", "--batch-size", "32", "--keep-models", "pareto"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return json.loads(reply.read())


def get_bytes(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return bytes(reply.read())


def port_answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("dashboard-search")
    url = f"sqlite:///{root / 'npas.db'}"
    run = subprocess.run([NPAS, "search", *SEARCH, "--storage", url], capture_output=True,
                         text=True, timeout=300, cwd=root)
    assert run.returncode == 0, run.stderr[-2000:]
    pareto = subprocess.run([NPAS, "pareto", "s", "--storage", url, "--format", "json"],
                            capture_output=True, text=True, timeout=120, check=True)
    return {"url": url, "root": root, "artifacts": root / "npas-artifacts",
            "pareto": sorted(r["trial_number"] for r in json.loads(pareto.stdout))}


@pytest.fixture(scope="module")
def server(searched: dict[str, Any]) -> Iterator[DashboardServer]:
    with DashboardServer(searched["url"], port=free_port()) as running:
        yield running


@pytest.fixture(scope="module")
def study_detail(server: DashboardServer) -> dict[str, Any]:
    (summary,) = get_json(server.api_url + "/studies")["study_summaries"]
    detail = get_json(f"{server.api_url}/studies/{summary['study_id']}")
    detail["study_id"] = summary["study_id"]
    return dict(detail)


def test_the_dashboard_listens_on_loopback_and_lists_the_study(
    server: DashboardServer, searched: dict[str, Any]
) -> None:
    assert server.url == f"http://127.0.0.1:{server.port}/dashboard"
    listening = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    local = [f[1] for f in listening if f[3] == "0A" and f[1].endswith(f":{server.port:04X}")]
    assert local == [f"0100007F:{server.port:04X}"]  # 127.0.0.1, not every interface
    (summary,) = get_json(server.api_url + "/studies")["study_summaries"]
    assert summary["study_name"] == "s"
    assert summary["directions"] == ["maximize", "minimize"]
    assert get_json(server.api_url + "/meta")["artifact_is_available"] is True


def test_every_trial_shows_its_config_results_and_kept_weights(
    server: DashboardServer, study_detail: dict[str, Any], searched: dict[str, Any]
) -> None:
    study = optuna.load_study(study_name="s", storage=searched["url"])
    assert study_detail["objective_names"] == ["val_accuracy", "trainable_params"]
    assert [t["number"] for t in study_detail["trials"]] == [t.number for t in study.trials]
    kept = 0
    for shown, trial in zip(study_detail["trials"], study.trials, strict=True):
        params = {p["name"]: p["param_external_value"] for p in shown["params"]}
        assert params == {k: str(v) for k, v in trial.params.items()} and "method" in params
        attrs = {a["key"]: a["value"] for a in shown["user_attrs"]}
        assert json.loads(attrs["npas_config"]) == trial.user_attrs["npas_config"]
        # Optuna Dashboard 0.21 cuts a non-string attribute's JSON at 1,024 characters
        # (MAX_ATTR_LENGTH): the metrics come first and show whole; a long allocation
        # table and the history are cut in the page, and complete in the store.
        result = trial.user_attrs["npas_result"]
        assert json.dumps(result).startswith(attrs["npas_result"])
        shown_metrics = attrs["npas_result"].split(', "allocation"', 1)[0] + "}"
        assert json.loads(shown_metrics)["trainable_params"] == trial.values[1]
        if trial.params["method"] == "ssn":
            assert result["allocation"]["layers"]
            # the whole allocation, as a string attribute the dashboard does not cut
            line = attrs["npas_allocation"]
            assert line == trial.user_attrs["npas_allocation"]
            assert line.count(" | ") == len(result["allocation"]["layers"])
            assert all(f"{r['layer']} {r['shape']} g{r['group']} " in line
                       for r in result["allocation"]["layers"])
        for artifact in shown["artifacts"]:
            data = get_bytes(f"{server.url.removesuffix('/dashboard')}/artifacts/"
                             f"{study_detail['study_id']}/{shown['trial_id']}/{artifact['artifact_id']}")
            assert data == (searched["artifacts"] / artifact["artifact_id"]).read_bytes()
            kept += 1
    assert kept >= 1


def test_each_trials_accuracy_per_epoch_shows_as_its_intermediate_values(
    study_detail: dict[str, Any], searched: dict[str, Any]
) -> None:
    study = optuna.load_study(study_name="s", storage=searched["url"])
    curves = 0
    for shown, trial in zip(study_detail["trials"], study.trials, strict=True):
        history = (trial.user_attrs.get("npas_result") or {}).get("history") or []
        expected = [{"step": int(h["epoch"]), "value": h["val_accuracy"]}
                    for h in history if "val_accuracy" in h]
        assert shown["intermediate_values"] == expected
        curves += bool(expected)
    assert curves >= 3  # every complete trial has its curve


def test_the_pareto_plots_are_study_artifacts_served_by_the_dashboard(
    server: DashboardServer, study_detail: dict[str, Any], searched: dict[str, Any]
) -> None:
    kept = {a["filename"]: a for a in study_detail["artifacts"]}
    assert set(kept) == {"pareto.html", "pareto.png"}
    base = server.url.removesuffix("/dashboard")
    html = get_bytes(f"{base}/artifacts/{study_detail['study_id']}/{kept['pareto.html']['artifact_id']}")
    png = get_bytes(f"{base}/artifacts/{study_detail['study_id']}/{kept['pareto.png']['artifact_id']}")
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert b"plotly" in html and all(f'"trial {n}'.encode() in html for n in searched["pareto"])
    # drawing them again (a resumed search does) rewrites the same two artifacts in place
    from allocator.cli._search import attach_plots

    attach_plots(searched["url"], "s", str(searched["artifacts"]))
    again = optuna.load_study(study_name="s", storage=searched["url"])
    metas = optuna.artifacts.get_all_artifact_meta(again)
    assert sorted(m.artifact_id for m in metas) == sorted(a["artifact_id"] for a in kept.values())


def test_the_dashboards_pareto_trials_are_npas_pareto(
    study_detail: dict[str, Any], searched: dict[str, Any]
) -> None:
    shown = sorted(t["number"] for t in study_detail["best_trials"])
    assert shown == searched["pareto"]
    data = load_trials(searched["url"], "s")
    assert sorted(data.frame.loc[data.frame["pareto"], "trial_number"]) == searched["pareto"]


def _chromium(*args: str, profile: Path) -> str:
    """Run headless Chromium (its own process group, killed on a timeout); its stdout."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=15000", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return out


@pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("NPAS_NO_SKIP"),
                    reason="no /usr/bin/chromium (Debian: apt-get install -y chromium)")
def test_the_study_page_draws_the_pareto_front_in_chromium(
    server: DashboardServer, study_detail: dict[str, Any], tmp_path: Path
) -> None:
    page = f"{server.url}/studies/{study_detail['study_id']}"
    dom = _chromium("--dump-dom", page, profile=tmp_path / "profile-dom")
    assert "Pareto Front" in dom
    start = dom.index('id="graph-pareto-front"')
    end = dom.find('id="graph-', start + 10)
    plot = dom[start : end if end > 0 else None]
    assert 'class="main-svg"' in plot  # plotly drew it
    complete = sum(t["state"] == "Complete" for t in study_detail["trials"])
    assert plot.count('class="point"') >= complete
    shot = tmp_path / "dashboard.png"
    _chromium(f"--screenshot={shot}", "--window-size=1400,1000", page,
              profile=tmp_path / "profile-shot")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("NPAS_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["NPAS_SCREENSHOT"])


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_npas_dashboard_prints_its_address_and_stops_cleanly(
    searched: dict[str, Any], stop: signal.Signals
) -> None:
    port = free_port()
    proc = subprocess.Popen([NPAS, "dashboard", "--storage", searched["url"], "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the server answers
        assert line.strip() == (f"Optuna Dashboard on {searched['url']}: "
                                f"http://127.0.0.1:{port}/dashboard")
        assert get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        (child,) = _children(proc.pid)
        proc.send_signal(stop)
        assert proc.wait(timeout=30) == 0
        assert "npas dashboard: stopped" in (proc.stderr.read() if proc.stderr else "")
        assert not Path(f"/proc/{child}").exists()
        assert not port_answers(port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_server_object_starts_and_stops_as_a_context_manager(searched: dict[str, Any]) -> None:
    port = free_port()
    server = DashboardServer(searched["url"], port=port, artifacts=searched["artifacts"])
    with server:
        assert server.running and port_answers(port)
        assert get_json(server.api_url + "/studies")["study_summaries"][0]["study_name"] == "s"
    assert not server.running and server.pid is None
    deadline = time.monotonic() + 5
    while port_answers(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not port_answers(port)


def test_a_postgresql_store_is_served_and_its_url_stays_off_the_command_line(
    postgres_url: str,
) -> None:
    from tests.test_dashboards_study import make_study

    url = make_study(postgres_url, n=10)
    with DashboardServer(url, port=free_port()) as server:
        assert server.pid is not None
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode()
        assert "postgresql" not in cmdline  # the URL (and a password) is in a private file
        (summary,) = get_json(server.api_url + "/studies")["study_summaries"]
        detail = get_json(f"{server.api_url}/studies/{summary['study_id']}")
    study = optuna.load_study(study_name="s", storage=url)
    assert len(detail["trials"]) == 10
    assert sorted(t["number"] for t in detail["best_trials"]) == sorted(
        t.number for t in study.best_trials)


def test_a_port_in_use_is_one_line_and_exit_2(
    searched: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["dashboard", "--storage", searched["url"], "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"npas: error: port {port} on 127.0.0.1 is in use; choose another with --port"]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--storage", "sqlite:///no/such.db"], "does not exist; run `npas search` first"),
        (["--port", "70000"], "port must be an integer in 1..65535, got 70000"),
        (["--artifacts", "/no/such/dir"], "artifacts directory '/no/such/dir' does not exist"),
    ],
)
def test_bad_dashboard_input_is_one_line_and_exit_2(
    searched: dict[str, Any], capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    if "--storage" not in argv:
        argv = [*argv, "--storage", searched["url"]]
    assert main(["dashboard", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("npas: error: ") and fragment in err[0], err


def test_plot_and_report_of_the_real_search(searched: dict[str, Any], tmp_path: Path) -> None:
    html = plot_pareto(searched["url"], "s", tmp_path / "pareto.html").read_text()
    assert '"Pareto front"' in html
    for number in searched["pareto"]:
        assert f"trial {number}\\u003cbr\\u003e" in html  # hover text, as plotly escapes it
    report = write_report(searched["url"], "s", tmp_path / "report")
    assert sorted(report.pareto_trials) == searched["pareto"]
    assert report.command is not None and report.command.startswith(
        "npas search --study s --model mlp --data mnist1d --space baselines --trials 6"
    )
    study = optuna.load_study(study_name="s", storage=searched["url"])
    ssn = [t.number for t in study.trials if t.params["method"] == "ssn" and t.values]
    assert report.allocation_trial in ssn or (not ssn and report.allocation_trial is None)
