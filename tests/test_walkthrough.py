"""The README's walkthrough runs as written, in a copy of parties/.

The commands are read from the README's "Running the example federation by
hand" block and run in order from the folder holding the copy. Only two
things change: `.venv/bin/invisible` becomes this Python's `-m invisible`,
and the copy's federation.toml (the one file with ports) gets free ones, so
the test runs beside anything else on the machine. `node serve` lines run in
the background, as they would in their own terminals, and are always stopped.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas
import pytest

from invisible.coordinator.local import free_ports

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SECTION = "## Running the example federation by hand"
EXECUTABLE = ".venv/bin/invisible"
#: What `pki init`, the nodes and the jobs leave in parties/; never copied.
GENERATED = shutil.ignore_patterns("pki", "*-ledger.sqlite*", "receipts", "*-results")
COMMAND_TIMEOUT_S = 60.0
START_TIMEOUT_S = 60.0

#: What a command must print besides exiting 0, by its label: a job file's
#: name for `job run`, else the subcommand.
EXPECTED_OUTPUT: dict[str, tuple[str, ...]] = {
    "health": ("serving",),
    "connectivity.job.toml": ("every pair agreed on a fresh X25519 secret",),
    "secure_sum.job.toml": ("total", "2^-16", "per party:"),
    "paillier_sum.job.toml": ("total", "2^-16"),
    "statistics.job.toml": ("count", "mean", "std", "population variance"),
    "psi.job.toml": ("ids in common", "180", "never leave the nodes"),
    "vertical_statistics.job.toml": ("monthly_spend", "data_gb", "correlation:",
                                     "over the 180 rows of the alignment"),
    "horizontal_lr.job.toml": ("monthly_spend", "(intercept)", "20 rounds"),
    "vertical_lr.job.toml": ("epoch", "late-payments"),
    "vertical_predict.job.toml": ("bank", "predictions/"),
    "vertical_evaluate.job.toml": ("AUC", "AUC error bound", "accuracy at 0.5", "log loss"),
    "bandwidth.job.toml": ("MB/s",),
    "mul_benchmark.job.toml": ("products", "tuples"),
}


def sample_column(copy: Path, column: str) -> np.ndarray:
    """Every institution's column, read from the copy's CSV files (only a test may)."""
    return np.concatenate([pandas.read_csv(path)[column].to_numpy()
                           for path in sorted(copy.glob("*/customers.csv"))])


def printed_value(stdout: str, name: str) -> float:
    """The number printed on the line that starts with `name` (a result table's row)."""
    for line in stdout.splitlines():
        words = line.split()
        if words and words[0] == name:
            return float(words[-1].replace(",", ""))
    raise AssertionError(f"no line for {name!r} in\n{stdout}")


def walkthrough_commands(readme: Path) -> list[list[str]]:
    """The commands of the README's walkthrough block, each an argv for this Python."""
    text = readme.read_text()
    assert SECTION in text, f"{readme} has no section '{SECTION}'"
    block = text[text.index(SECTION):].split("```")[1]
    commands = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        assert words[0] == EXECUTABLE, f"walkthrough line does not run {EXECUTABLE}: {line}"
        commands.append([sys.executable, "-m", "invisible", *words[1:]])
    return commands


def label(command: list[str]) -> str:
    words = command[3:]
    return Path(words[-1]).name if words[:2] == ["job", "run"] else words[0]


def copy_parties(directory: Path) -> dict[str, str]:
    """Copy parties/ into `directory`, give every node a free port; returns the new addresses."""
    copy = directory / "parties"
    shutil.copytree(ROOT / "parties", copy, ignore=GENERATED)
    book = copy / "federation.toml"
    text = book.read_text()
    entries = tomllib.loads(text)
    addresses = {}
    nodes = {**entries["parties"], **entries.get("dealers", {})}
    for (node, address), port in zip(nodes.items(), free_ports(len(nodes)), strict=True):
        host = address.rsplit(":", 1)[0]
        addresses[node] = f"{host}:{port}"
        assert text.count(f'"{address}"') == 1, f"{book}: {address} is not written once"
        text = text.replace(f'"{address}"', f'"{addresses[node]}"')
    book.write_text(text)
    return addresses


class BackgroundNodes:
    """The walkthrough's `node serve` lines, each a process logging to its own file."""

    def __init__(self, cwd: Path, log_dir: Path) -> None:
        self.cwd, self.log_dir = cwd, log_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ready = False
        log_dir.mkdir()

    def start(self, command: list[str]) -> None:
        name = Path(command[command.index("--config") + 1]).parent.name
        with (self.log_dir / f"{name}.log").open("wb") as log:
            # as NodeProcesses does: a test process killed (a timeout, a CPU limit) must not
            # leave the walkthrough's nodes running (one run left four, holding their ports)
            self.processes[name] = subprocess.Popen(
                command, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1",
                         INVISIBLE_EXIT_WITH_PARENT=str(os.getpid())),
                start_new_session=True,
            )
        self.ready = False

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def tails(self, lines: int = 15) -> str:
        return "\n".join(f"--- {name} (exit {process.poll()}):\n"
                         + "\n".join(self.log(name).splitlines()[-lines:])
                         for name, process in self.processes.items())

    def wait_serving(self) -> None:
        """Until every node printed that it serves; fails if one exits or the time runs out."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ready:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    pytest.fail(f"node '{name}' exited with {process.returncode}\n{self.tails()}")
            self.ready = all("serving on" in self.log(name) for name in self.processes)
            if time.monotonic() > deadline:
                pytest.fail(f"nodes not serving after {START_TIMEOUT_S} s\n{self.tails()}")
            time.sleep(0.2)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM every node, then kill any still running after the timeout."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_command(command: list[str], cwd: Path, nodes: BackgroundNodes) -> str:
    """Run one foreground command; `health` is retried while nodes finish starting."""
    attempts = 10 if label(command) == "health" else 1
    for attempt in range(attempts):
        try:
            done = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                                  timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{shlex.join(command[3:])} took over {COMMAND_TIMEOUT_S} s\n"
                        f"output:\n{exc.stdout}\n{exc.stderr}\nnode logs:\n{nodes.tails()}")
        if done.returncode == 0:
            break
        if attempt + 1 < attempts:
            time.sleep(1.0)
    report = (f"{shlex.join(command[3:])} exited with {done.returncode}\n"
              f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}\nnode logs:\n{nodes.tails()}")
    assert done.returncode == 0, report
    for expected in EXPECTED_OUTPUT.get(label(command), ()):
        assert expected in done.stdout, f"{expected!r} not printed by\n{report}"
    return done.stdout


@pytest.mark.timeout(180)
def test_the_readme_walkthrough_runs_in_a_copy_of_parties(tmp_path):
    commands = walkthrough_commands(README)
    addresses = copy_parties(tmp_path)
    labels = [label(command) for command in commands]
    assert labels[0] == "pki"
    assert {f.name for f in (ROOT / "parties").glob("*.job.toml")} <= set(labels), \
        "the walkthrough runs every example job file"
    nodes = BackgroundNodes(tmp_path, tmp_path / "logs")
    printed = {}
    try:
        for command in commands:
            if command[3:5] == ["node", "serve"]:
                nodes.start(command)
                continue
            nodes.wait_serving()
            printed[label(command)] = run_command(command, tmp_path, nodes)
        for name in nodes.processes:
            assert f"serving on {addresses[name]}" in nodes.log(name)
        check_decoded_results(printed, tmp_path / "parties")
        run_every_template(tmp_path, nodes)
    finally:
        nodes.stop()


def check_decoded_results(printed: dict[str, str], copy: Path) -> None:
    """`job run` prints the decoded values, and they are the plaintext answers."""
    spend = sample_column(copy, "monthly_spend")
    rounding = spend.size * 2.0**-17  # fixed-point rounding, half an ulp per value
    for job in ("secure_sum.job.toml", "paillier_sum.job.toml"):
        lines = printed[job].splitlines()
        total = float(lines[lines.index(next(x for x in lines if x.split() == ["total"])) + 1]
                      .replace(",", ""))
        assert abs(total - spend.sum()) <= rounding, job
    stats = printed["statistics.job.toml"]
    assert printed_value(stats, "count") == spend.size
    stated = 2.0**-16 * (3 * abs(spend.mean()) + 4)  # the protocol's stated error bound
    assert abs(printed_value(stats, "mean") - spend.mean()) <= stated
    assert abs(printed_value(stats, "std") - spend.std()) <= 10 * stated


def run_every_template(cwd: Path, nodes: BackgroundNodes) -> None:
    """`invisible job template KIND` runs against the example federation as printed: as the
    default (saved beside coordinator.toml) and with --coordinator (saved anywhere)."""
    kinds = run_command([sys.executable, "-m", "invisible", "job", "kinds"], cwd, nodes)
    names = [line.split()[0] for line in kinds.splitlines() if "(version" in line]
    assert len(names) >= 6, kinds
    for name in names:
        elsewhere = cwd / "elsewhere"
        elsewhere.mkdir(exist_ok=True)
        for where, extra in ((cwd / "parties", []), (elsewhere, ["--coordinator",
                                                                "parties/coordinator.toml"])):
            if where == cwd / "parties" and name != "secure_sum":
                continue  # once is enough for the default names
            template = run_command([sys.executable, "-m", "invisible", "job", "template", name,
                                    *extra], cwd, nodes)
            path = where / f"{name}.template.toml"
            path.write_text(template)
            run_command([sys.executable, "-m", "invisible", "job", "run", str(path)], cwd, nodes)
