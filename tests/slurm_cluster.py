"""A real, throw-away single-node Slurm cluster for the tests (munge + slurmctld + slurmd under a scratch folder,
as root, no systemd, nothing written to /etc): the `slurm_cluster` session fixture. Tests that use it skip, with
the reason, where Slurm's and munge's programs or root are missing (`.ci/run` installs them).

The recipe and its pitfalls: ../shared/notes/slurm-test-cluster.md. The cluster has no accounting database
(`sacct` answers nothing), as many small clusters: hfopt reads task states from squeue and scontrol.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scancel", "scontrol", "sinfo")

SLURM_CONF = """\
ClusterName=ci
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={port}
SlurmdPort={port1}
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=3600
{node} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def slurm_missing() -> str | None:
    """Why no test cluster can start here (None: it can)."""
    missing = [name for name in PROGRAMS if shutil.which(name) is None]
    if missing:
        return f"needs Slurm and munge (apt-get install slurmctld slurmd slurm-client munge); missing: {missing}"
    if os.geteuid() != 0:
        return "needs root to start the test Slurm cluster"
    return None


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of ports for slurmctld and slurmd")


def _stop(procs: list[subprocess.Popen], timeout: float = 10.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.time() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running cluster (one node, this machine's CPUs, partition `debug`); SLURM_CONF is set for the session.
    Yields {"dir", "conf", "env"}."""
    reason = slurm_missing()
    if reason:
        pytest.skip(reason)
    # Not under pytest's tmp folders (0700): munged wants every parent of its socket executable by all.
    base = Path(tempfile.mkdtemp(prefix="slurm-"))
    base.chmod(0o755)
    for name in ("munge", "state", "spool", "log"):
        (base / name).mkdir()
    (base / "munge").chmod(0o711)
    port = _free_port_pair()
    procs: list[subprocess.Popen] = []

    def log(name: str):
        return open(base / "log" / name, "ab")

    try:
        subprocess.run(["mungekey", "--create", f"--keyfile={base}/munge/munge.key"], check=True)
        sock = base / "munge" / "munge.sock"
        procs.append(
            subprocess.Popen(
                ["munged", "--foreground", f"--socket={sock}", f"--key-file={base}/munge/munge.key",
                 f"--log-file={base}/log/munged.log", f"--pid-file={base}/munge/munged.pid",
                 f"--seed-file={base}/munge/munged.seed"],
                cwd=base, stdout=log("munged.out"), stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
        conf = base / "slurm.conf"
        host = socket.gethostname().split(".")[0]
        conf.write_text(SLURM_CONF.format(host=host, port=port, port1=port + 1, sock=sock, base=base, node=node))
        env = dict(os.environ, SLURM_CONF=str(conf))
        for daemon in ("slurmctld", "slurmd"):
            procs.append(
                subprocess.Popen(
                    [daemon, "-D", "-f", str(conf)], cwd=base, env=env, stdout=log(f"{daemon}.out"),
                    stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
        deadline = time.time() + 30
        while True:
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout
            if state.strip() == "idle":
                break
            if time.time() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"the test Slurm cluster did not come up; its logs are in {base}/log")
            time.sleep(0.1)
        patch = pytest.MonkeyPatch()
        patch.setenv("SLURM_CONF", env["SLURM_CONF"])
        try:
            yield {"dir": base, "conf": conf, "env": env}
        finally:
            patch.undo()
            subprocess.run(["scancel", "--user=root", "--full", "--quiet"], env=env)
            for _ in range(50):
                if not subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True).stdout.strip():
                    break
                time.sleep(0.1)
    finally:
        _stop(procs)
        if os.environ.get("SLURM_TEST_KEEP") is None:
            shutil.rmtree(base, ignore_errors=True)
