"""wandb tracking (issues 4 and 15): real sweeps with real wandb, offline files read back.

wandb 0.31 has no Python reader for its `.wandb` transaction log any more (wandb-core, in Go,
reads it for `wandb sync`), so `read_wandb` below decodes the file format itself (leveldb log
blocks, CRC-checked) into wandb's own protobuf `Record` messages.
"""

from __future__ import annotations

import http.server
import json
import shlex
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
import yaml
from conftest import REPO, records, run_sweep, sweep_env
from wandb.proto import wandb_internal_pb2 as pb

from sweep import tracking

QUICK = ("experiment=quick", "runs.benchmark=2")
FAKE_KEY = "f" * 40

# --------------------------------------------------------------------------- .wandb reader

_BLOCK, _HEADER = 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_wandb(path: Path) -> list[pb.Record]:
    """Every record of a `.wandb` file (leveldb log format, W&B header), CRCs checked."""
    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:_HEADER])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), path
    pos, chunks, pending = _HEADER, [], b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if (crc, length, kind) == (0, 0, 0):  # zero padding up to the block end
            pos += left
            continue
        payload = data[pos + _HEADER : pos + _HEADER + length]
        assert zlib.crc32(payload, zlib.crc32(bytes([kind]))) == crc, f"bad CRC in {path}"
        pos += _HEADER + length
        if kind == _FULL:
            chunks.append(payload)
        elif kind == _FIRST:
            pending = payload
        elif kind == _MIDDLE:
            pending += payload
        elif kind == _LAST:
            chunks.append(pending + payload)
    out = []
    for chunk in chunks:
        record = pb.Record()
        record.ParseFromString(chunk)
        out.append(record)
    return out


def _item_key(item) -> str:
    return item.key or ".".join(item.nested_key)


def read_run(run_dir: Path) -> dict:
    """The run as wandb stored it: run record, config, history rows, summary, exit, files."""
    (path,) = run_dir.glob("run-*.wandb")
    out: dict = {"config": {}, "history": [], "summary": {}, "files": [], "exit_code": None}
    out["summary_records"] = []  # the keys of each summary record, in order
    for record in read_wandb(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out.update(
                run_id=run.run_id,
                group=run.run_group,
                job_type=run.job_type,
                name=run.display_name,
                project=run.project,
            )
            for item in run.config.update:
                out["config"][_item_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                out["config"][_item_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            out["history"].append(
                {_item_key(i): json.loads(i.value_json) for i in record.history.item}
            )
        elif kind == "summary":
            out["summary_records"].append([_item_key(i) for i in record.summary.update])
            for item in record.summary.update:
                out["summary"][_item_key(item)] = json.loads(item.value_json)
        elif kind == "files":
            out["files"] += [f.path for f in record.files.files]
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out


# --------------------------------------------------------------------------- helpers


def wandb_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A sweep env with WANDB_MODE unset, no API key anywhere, wandb's user dirs in `tmp`."""
    env = sweep_env()
    env.pop("WANDB_MODE", None)
    env.update(
        NETRC=str(tmp / "no-netrc"),
        WANDB_CONFIG_DIR=str(tmp / "wandb-config"),
        WANDB_CACHE_DIR=str(tmp / "wandb-cache"),
        WANDB_DATA_DIR=str(tmp / "wandb-data"),
    )
    env.update(extra)
    return env


def run_dir_of(record: dict) -> Path:
    path = Path(record["wandb"]["path"])
    assert path.is_dir(), record["wandb"]
    return path


def expected_summary(record: dict) -> dict:
    out = {}
    for phase, block in record["phases"].items():
        for metric, stats in block["summary"].items():
            if isinstance(stats, dict):
                out |= {f"{phase}/{metric}_{s}": v for s, v in stats.items() if v is not None}
        out[f"{phase}/compiles"] = block["compiles"]
    return out


def _fail(proc: subprocess.CompletedProcess) -> str:
    return (proc.stdout or "")[-3000:] + (proc.stderr or "")[-3000:]


# --------------------------------------------------------------------------- real sweeps


@pytest.fixture(scope="module")
def offline_sweep(tmp_path_factory) -> Path:
    """3 jobs, no API key, WANDB_MODE unset: auto mode goes offline."""
    tmp = tmp_path_factory.mktemp("wandb_offline")
    sweep_dir = tmp / "multirun" / "2026-11-28" / "21-04-46-569417"
    repo_wandb = (REPO / "wandb").exists()
    proc = run_sweep(sweep_dir, *QUICK, "tokens=2,3,4", env=wandb_env(tmp))
    assert proc.returncode == 0, _fail(proc)
    assert (REPO / "wandb").exists() == repo_wandb, "wandb wrote into the repo root"
    return sweep_dir


def test_offline_runs_match_records(offline_sweep):
    """Acceptance 1: 3 offline runs, distinct ids, one group; config and summary == record."""
    recs = records(offline_sweep)
    assert [r["status"] for r in recs] == ["ok"] * 3
    group = tracking.sweep_id(offline_sweep)
    assert group == "2026-11-28_21-04-46-569417"
    runs = []
    for job_num, record in enumerate(recs):
        block = record["wandb"]
        assert block["mode"] == "offline" and block["status"] == "ok", block
        assert "no API key" in block["reason"]
        run_dir = run_dir_of(record)
        assert run_dir.is_relative_to(offline_sweep / str(job_num)), "wandb files outside job dir"
        run = read_run(run_dir)
        runs.append(run)
        assert run["run_id"] == block["run_id"]
        assert run["group"] == block["group"] == group
        assert run["job_type"] == "text"
        assert run["name"] == f"experiment=quick runs.benchmark=2 tokens={job_num + 2}"
        assert run["exit_code"] == 0

        # config: the resolved config, nested (as wandb's Hydra guide logs it), plus the Hydra
        # choices and the environment block; in files/config.yaml too, in wandb's format
        config = run["config"]
        for key, value in record["config"].items():
            if key != "wandb":
                assert config[key] == value, key
        assert "wandb" not in config
        assert config["model"]["name"] == config["model"]["arch"] == "tiny"
        assert config["choices"] == record["choices"]
        assert config["tokens"] == job_num + 2 and config["batch_size"] == 1
        assert config["env"] == record["env"]
        on_disk = yaml.safe_load((run_dir / "files" / "config.yaml").read_text())
        assert on_disk["model"] == {"value": record["config"]["model"]}
        assert on_disk["choices"]["value"]["model"] == "tiny"
        assert on_disk["env"]["value"] == record["env"]

        # summary: every phase statistic under its stable name, equal to the record's
        summary = run["summary"]
        bench = record["phases"]["benchmark"]["summary"]
        assert summary["benchmark/decode_tokens_per_s_mean"] == bench["decode_tokens_per_s"]["mean"]
        assert summary["benchmark/first_token_s_p90"] == bench["first_token_s"]["p90"]
        for key, value in expected_summary(record).items():
            assert summary[key] == value, key
        assert summary["generated_text"] == record["generated_text"]
        assert summary["status"] == "ok"
        # written in one update: one summary record carries the phase statistics (wandb adds
        # its own records per logged step), not one record per key
        (stats_record,) = [r for r in run["summary_records"] if "status" in r]
        assert set(expected_summary(record)) <= set(stats_record)
        assert len(run["summary_records"]) <= 2 * len(run["history"]) + 4, run["summary_records"]

        # one step per run of every phase, equal to the record's samples
        steps = [h for h in run["history"] if "phase" in h]
        assert [(h["phase"], h["run_index"]) for h in steps] == [
            ("warmup", 0),
            ("benchmark", 0),
            ("benchmark", 1),
            ("final", 0),
        ]
        for step in steps:
            sample = record["phases"][step["phase"]]["runs"][step["run_index"]]
            assert step["first_token_s"] == sample["first_token_s"]
            assert step["decode_tokens_per_s"] == sample["decode_tokens_per_s"]

        # samples table and the record itself, as files of the run
        assert "metrics.json" in run["files"]
        logged = json.loads((run_dir / "files" / "metrics.json").read_text())
        assert {k: v for k, v in logged.items() if k != "wandb"} == {
            k: v for k, v in record.items() if k != "wandb"
        }
        (table_file,) = (run_dir / "files" / "media" / "table").glob("samples_*.table.json")
        table = json.loads(table_file.read_text())
        assert len(table["data"]) == 4 and table["columns"][:2] == ["phase", "run_index"]
    assert len({r["run_id"] for r in runs}) == 3


def test_sweep_summary_run(offline_sweep, tmp_path, monkeypatch):
    """The merge step's summary run: job_type=summary, same group, one row per job, plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for var, sub in (("CONFIG", "cfg"), ("CACHE", "cache"), ("DATA", "data")):
        monkeypatch.setenv(f"WANDB_{var}_DIR", str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text("# Benchmarks\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    plot = tmp_path / "decode_tokens_per_s.png"
    plt.figure(figsize=(2, 2))
    plt.plot([1, 2], [3, 4])
    plt.savefig(plot)
    plt.close("all")

    block = tracking.log_sweep_summary(
        offline_sweep, markdown_path=markdown, plot_paths=[plot], wandb_cfg={"tags": ["t1"]}
    )
    assert block["mode"] == "offline" and block["status"] == "ok", block
    run_dir = Path(block["path"])
    assert run_dir.is_relative_to(offline_sweep / "wandb")
    # In this process wandb-core may still be writing the file after finish() returned (the
    # jobs' runs are complete: their processes have exited). Shutting it down flushes it.
    import wandb

    wandb.teardown()
    run = read_run(run_dir)
    assert run["job_type"] == "summary" and run["exit_code"] == 0
    assert run["group"] == tracking.sweep_id(offline_sweep)
    assert run["summary"]["jobs"] == run["summary"]["jobs_ok"] == 3
    (table_file,) = (run_dir / "files" / "media" / "table").glob("sweep_table_*.table.json")
    table = json.loads(table_file.read_text())
    assert [row[table["columns"].index("tokens")] for row in table["data"]] == [2, 3, 4]
    job_ids = {r["wandb"]["run_id"] for r in records(offline_sweep)}
    assert {row[table["columns"].index("wandb_run_id")] for row in table["data"]} == job_ids
    assert list((run_dir / "files" / "media" / "images").glob("plots/decode_tokens_per_s_*.png"))
    assert (run_dir / "files" / "BENCHMARKS.md").read_text() == markdown.read_text()
    assert "decode_tokens_per_s_vs_tokens_table" in json.dumps(run["summary"])
    assert ["jobs", "jobs_ok"] in run["summary_records"]  # one update
    assert yaml.safe_load((run_dir / "files" / "config.yaml").read_text())["jobs"] == {"value": 3}

    # The sweep resumed (resume=true) and summarized again: the same run, resumed, not a
    # second summary run in the group; the older offline dir (never synced) is replaced.
    again = tracking.log_sweep_summary(offline_sweep, wandb_cfg={"tags": ["t1"]})
    wandb.teardown()
    assert again["status"] == "ok" and again["run_id"] == block["run_id"], again
    summaries = [p for p in (offline_sweep / "wandb").glob("offline-run-*") if p.is_dir()]
    assert summaries == [Path(again["path"])]
    assert read_run(Path(again["path"]))["run_id"] == block["run_id"]
    remembered = json.loads((offline_sweep / tracking.ID_FILE).read_text())
    assert remembered["run_id"] == block["run_id"]


def test_results_skip_wandb_copies(offline_sweep):
    """The record's copy in each run (`<job>/wandb/offline-run-*/files/metrics.json`) is not
    read as a second record."""
    from sweep.results import load_phases

    assert len(load_phases(offline_sweep, history=True)) == 3 * 3  # 3 jobs x 3 phases


@pytest.fixture(scope="module")
def disabled_sweep(tmp_path_factory) -> Path:
    """WANDB_MODE=disabled, 4 jobs: wandb.mode auto (follows the env) or offline (explicit,
    beats the env) x a benchmark that works or raises (topology.peak_bf16_flops=1 makes MFU
    > 100%: a MetricError in the first warmup run, after tracking started). Job order:
    (auto, ok), (auto, fails), (offline, ok), (offline, fails). WANDB_DIR is set: the offline
    runs go under it, not into the job dirs."""
    tmp = tmp_path_factory.mktemp("wandb_disabled")
    proc = run_sweep(
        tmp / "sweep",
        *QUICK,
        "tokens=4",
        "wandb.mode=auto,offline",
        "topology.peak_bf16_flops=null,1",
        env=wandb_env(tmp, WANDB_MODE="disabled", WANDB_DIR=str(tmp / "wandb-dir")),
    )
    assert proc.returncode == 1, _fail(proc)  # two jobs failed; the sweep went on
    return tmp / "sweep"


def test_disabled_writes_nothing(disabled_sweep):
    """Acceptance 2: WANDB_MODE=disabled: no wandb files, the records say disabled."""
    recs = records(disabled_sweep)
    assert [r["status"] for r in recs] == ["ok", "failed", "ok", "failed"]
    for job_num in (0, 1):
        block = recs[job_num]["wandb"]
        assert (block["mode"], block["status"], block["run_id"]) == ("disabled", "disabled", None)
        assert "WANDB_MODE=disabled" in block["reason"]
        job_dir = disabled_sweep / str(job_num)
        assert not [p for p in job_dir.rglob("*") if "wandb" in p.name], "wandb wrote files"
    assert recs[2]["wandb"]["mode"] == "offline"  # an explicit wandb.mode beats WANDB_MODE
    assert read_run(run_dir_of(recs[2]))["exit_code"] == 0


def test_wandb_dir_is_honoured(disabled_sweep):
    """Acceptance 5: with WANDB_DIR set, the offline runs are under it (none in job dirs)."""
    wandb_dir = disabled_sweep.parent / "wandb-dir" / "wandb"
    recs = records(disabled_sweep)
    runs = sorted(p for p in wandb_dir.glob("offline-run-*") if p.is_dir())
    assert runs == sorted(run_dir_of(r) for r in recs[2:])
    assert not list(disabled_sweep.glob("*/wandb")), "wandb files in a job dir"


def test_failing_job_marks_run_failed(disabled_sweep):
    """Acceptance 5: a job whose benchmark raises: its wandb run is marked failed (exit code
    1) and its record is written."""
    record = records(disabled_sweep)[3]
    assert record["status"] == "failed" and record["error"]["type"] == "MetricError"
    run = read_run(run_dir_of(record))
    assert run["run_id"] == record["wandb"]["run_id"]
    assert run["exit_code"] == 1
    assert run["summary"]["status"] == "failed"


def test_unreachable_server_falls_back_offline(tmp_path):
    """Acceptance 3: fake key, nothing listening: both jobs ok, offline, quickly."""
    env = wandb_env(tmp_path, WANDB_API_KEY=FAKE_KEY, WANDB_BASE_URL="http://127.0.0.1:9")
    proc = run_sweep(tmp_path / "sweep", *QUICK, "tokens=3,4", "wandb.init_timeout=5", env=env)
    assert proc.returncode == 0, _fail(proc)
    recs = records(tmp_path / "sweep")
    assert len(recs) == 2
    for record in recs:
        block = record["wandb"]
        assert record["status"] == "ok"
        assert block["mode"] == "offline" and block["status"] == "offline-fallback", block
        assert "127.0.0.1:9" in block["reason"]
        # wandb's share of the job: init_timeout + a few seconds (importing wandb, starting
        # the offline run; slow on a loaded 2-core box), and well within 30 s in all
        assert block["init_s"] < 5 + 8, block
        assert block["init_s"] + block["finish_s"] < 30, block
        assert read_run(run_dir_of(record))["exit_code"] == 0
    assert "earlier online init failed" in recs[1]["wandb"]["reason"]
    assert FAKE_KEY not in json.dumps(recs) + proc.stdout + proc.stderr


def test_tty_never_prompts(tmp_path):
    """Acceptance 4: under a pseudo-terminal with no key (auto and even mode=online): no
    prompt, the sweep completes."""
    probe = subprocess.run(
        [
            "script",
            "-qec",
            f"{sys.executable} -c 'import sys; print(sys.stdin.isatty())'",
            "/dev/null",
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    assert "True" in probe.stdout, "script(1) gives no TTY here"
    sweep_dir = tmp_path / "sweep"
    args = [sys.executable, "-m", "sweep.run", "-m", f"hydra.sweep.dir={sweep_dir}"]
    args += ["merge.on_end=false", *QUICK, "tokens=4", "wandb.mode=auto,online"]
    proc = subprocess.run(
        ["script", "-qec", shlex.join(args), "/dev/null"],
        cwd=REPO,
        env=wandb_env(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,  # a prompt would wait forever
    )
    assert proc.returncode == 0, _fail(proc)
    assert "API key" not in proc.stdout and "Enter your choice" not in proc.stdout
    auto, online = records(sweep_dir)
    assert auto["status"] == online["status"] == "ok"
    assert (auto["wandb"]["mode"], auto["wandb"]["status"]) == ("offline", "ok")
    assert (online["wandb"]["mode"], online["wandb"]["status"]) == ("offline", "offline-fallback")
    assert "no API key" in online["wandb"]["reason"]


# --------------------------------------------------------------------------- without a model

_HARNESS = """
import json, sys, types
from sweep import tracking
from sweep.config import WandbConfig
cfg = types.SimpleNamespace(wandb=WandbConfig(**json.loads(sys.argv[1])),
                            mode=types.SimpleNamespace(name="text"))
record = {"status": sys.argv[2], "config": {"tokens": 4, "api_key": "x"}, "choices": {},
          "env": {}, "phases": {}, "generated_text": None, "error": None}
ctx = {"overrides": ["tokens=4"], "job_dir": sys.argv[3], "sweep_dir": None, "job_num": 0}
tracker = tracking.start(cfg, record, ctx)
tracker.log_run("warmup", 0, {"first_token_s": 0.5})
print("BLOCK" + json.dumps(tracker.finish(record)))
"""


def _harness(tmp: Path, wandb_cfg: dict, status: str, env: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _HARNESS, json.dumps(wandb_cfg), status, str(tmp / "job")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, _fail(proc)
    return json.loads(proc.stdout.split("BLOCK", 1)[1])


def test_bad_key_falls_back_offline(tmp_path):
    """A reachable server that rejects the key: online init fails fast, offline run instead."""

    class Reject(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(401)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"errors": [{"message": "user is not logged in"}]}')

        do_GET = do_POST

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Reject)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = wandb_env(
            tmp_path,
            WANDB_API_KEY=FAKE_KEY,
            WANDB_BASE_URL=f"http://127.0.0.1:{server.server_address[1]}",
        )
        started = time.perf_counter()
        block = _harness(tmp_path, {"init_timeout": 5}, "ok", env)
        assert time.perf_counter() - started < 5 + 15
    finally:
        server.shutdown()
    assert block["mode"] == "offline" and block["status"] == "offline-fallback", block
    assert block["reason"].startswith("online init failed: CommError")
    run = read_run(Path(block["path"]))
    assert run["exit_code"] == 0
    config = {k: v for k, v in run["config"].items() if k != "_wandb"}
    assert config == {"tokens": 4, "job_num": 0, "overrides": "tokens=4"}  # no api_key


def test_no_job_dir_no_wandb_files(tmp_path, monkeypatch):
    """run_job called without Hydra and without a job dir: no wandb files in the cwd."""
    import types

    from sweep.config import WandbConfig

    monkeypatch.chdir(tmp_path)
    cfg = types.SimpleNamespace(
        wandb=WandbConfig(mode="offline"), mode=types.SimpleNamespace(name="text")
    )
    record: dict = {"config": {}, "env": {}}
    ctx = {"overrides": [], "job_dir": None, "sweep_dir": None, "job_num": 0}
    tracker = tracking.start(cfg, record, ctx)
    assert record["wandb"]["status"] == "disabled" and "job dir" in record["wandb"]["reason"]
    assert tracker.finish(record)["run_id"] is None
    assert not list(tmp_path.iterdir())


def test_finish_of_failed_record_exits_1(tmp_path):
    """finish() with a failed record: exit code 1; the record goes into the run as a file."""
    block = _harness(tmp_path, {"mode": "offline"}, "failed", wandb_env(tmp_path))
    assert (block["mode"], block["status"]) == ("offline", "ok")
    run_dir = Path(block["path"])
    assert run_dir.is_relative_to(tmp_path / "job")
    run = read_run(run_dir)
    assert run["exit_code"] == 1 and run["summary"]["status"] == "failed"
    assert json.loads((run_dir / "files" / "metrics.json").read_text())["status"] == "failed"


# --------------------------------------------------------------------------- pure functions


@pytest.fixture
def no_wandb_env(tmp_path, monkeypatch):
    for var in ("WANDB_MODE", "WANDB_DISABLED", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("WANDB_BASE_URL", "https://api.wandb.ai")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setattr(tracking.mode, "_fallback_reason", None)
    return tmp_path


@pytest.mark.parametrize(
    ("requested", "env", "expected"),
    [
        ("auto", {}, ("offline", "ok")),
        ("auto", {"WANDB_MODE": "disabled"}, ("disabled", "disabled")),
        ("auto", {"WANDB_MODE": "dryrun"}, ("offline", "ok")),
        ("auto", {"WANDB_MODE": "offline", "WANDB_API_KEY": FAKE_KEY}, ("offline", "ok")),
        ("auto", {"WANDB_MODE": "bogus"}, ("offline", "offline-fallback")),
        ("auto", {"WANDB_DISABLED": "true"}, ("disabled", "disabled")),
        ("auto", {"WANDB_API_KEY": FAKE_KEY}, ("online", "ok")),
        ("online", {}, ("offline", "offline-fallback")),
        ("online", {"WANDB_API_KEY": FAKE_KEY}, ("online", "ok")),
        ("offline", {"WANDB_API_KEY": FAKE_KEY}, ("offline", "ok")),
        ("disabled", {"WANDB_MODE": "online"}, ("disabled", "disabled")),
    ],
)
def test_resolve_mode(no_wandb_env, monkeypatch, requested, env, expected):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert tracking.resolve_mode(requested)[:2] == expected


def test_netrc_key_means_online_and_fallback_sticks(no_wandb_env, monkeypatch):
    netrc = no_wandb_env / "netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {FAKE_KEY}\n")
    netrc.chmod(0o600)
    assert tracking.resolve_mode("auto")[:2] == ("online", "ok")
    monkeypatch.setattr(tracking.mode, "_fallback_reason", "CommError: refused")
    mode, status, reason = tracking.resolve_mode("auto")
    assert (mode, status) == ("offline", "offline-fallback") and "refused" in reason


def test_names_and_config_filtering(monkeypatch):
    assert tracking.sweep_id("multirun/2026-11-28/21-04-46-569417") == "2026-11-28_21-04-46-569417"
    assert tracking.sweep_id(None, "outputs/2026-11-28/21 04") == "2026-11-28_21-04"
    plumbing = ["hydra.job.chdir=true", "wandb.mode=offline", "merge.on_end=false", "resume=true"]
    assert tracking.run_name(["tokens=4", *plumbing]) == "tokens=4"
    assert tracking.run_name([], "multirun/x/3") == "3"
    monkeypatch.setenv("SOME_SECRET", "s3cr3t-value-1234")
    record = {
        "config": {
            "tokens": 4,
            "model": {"tokenizer": None, "api_key": "k"},
            "hf_token": "t",
            "note": "s3cr3t-value-1234",
            "wandb": {"project": "p"},
        },
        "choices": {"model": "tiny"},
        "env": {"device_kind": "cpu", "env_vars": {"XLA_FLAGS": "--x", "X": "s3cr3t-value-1234"}},
        "sweep": {"job_num": 2, "overrides": ["tokens=4"]},
    }
    assert tracking.wandb_config(record) == {
        "tokens": 4,
        "model": {"tokenizer": None},
        "choices": {"model": "tiny"},
        "env": {"device_kind": "cpu", "env_vars": {"XLA_FLAGS": "--x"}},
        "job_num": 2,
        "overrides": "tokens=4",
    }
