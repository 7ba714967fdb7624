"""``disk-full``: the lake's file system fills up while devices send, then space comes
back: nothing is lost or stored twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from proving.drills import DrillReport, drill, probes, steps
from proving.scratch import ScratchStack
from workbench.config import Config

__all__: list[str] = []  # the drills register themselves with @drill

# --- disk-full ----------------------------------------------------------------------------

_LAKE_FS_MIB = 32  # the lake's own file system: ample for the drill's lake, quick to fill
_FULL_S = 40.0  # longer than the 30 s after which `workbench status` flags a silent processor


class _LakeFs:
    """A tmpfs of its own, mounted by the drill (root, or CAP_SYS_ADMIN) for the lake."""

    def __init__(self, where: Path) -> None:
        self.path = where
        self.filler = where / "drill-filler.bin"
        self.mounted = True

    @classmethod
    def mount(cls, size_mib: int) -> tuple[_LakeFs | None, str]:
        """A fresh tmpfs, or None and why not."""
        path = Path(tempfile.mkdtemp(prefix="workbench-drill-lakefs-"))
        if shutil.which("mount") is None:
            path.rmdir()
            return None, "no mount command"
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            path.rmdir()
            why = result.stderr.strip() or f"mount exited with {result.returncode}"
            return None, why.splitlines()[-1]
        return cls(path), ""

    def fill(self) -> int:
        """Write zeros until the file system is full (ENOSPC); the bytes written."""
        written = 0
        with self.filler.open("wb", buffering=0) as f:
            for chunk in (1 << 20, 1 << 12):  # MiB by MiB, then the last pages
                block = bytes(chunk)
                while True:
                    try:
                        written += f.write(block) or 0
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        return written

    @property
    def free(self) -> int:
        return shutil.disk_usage(self.path).free

    @property
    def total(self) -> int:
        return shutil.disk_usage(self.path).total

    def release(self) -> None:
        """Delete the filler: the space comes back."""
        self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        """Delete the filler, unmount and remove the mount point."""
        self.release()
        if self.mounted:
            subprocess.run(["umount", str(self.path)], capture_output=True, check=False)
            self.mounted = False
            with contextlib.suppress(OSError):
                self.path.rmdir()


def _move_lake(stack: ScratchStack, lake: Path) -> None:
    """Point the scratch stack at another (empty) lake and restart its data path.

    The broker restarts too, hence a fresh consumer group: the embedded broker wedges a
    group for good when a member leaves while another joins, which stopping the
    processor :func:`~proving.drills.run_drill` just started (maybe still joining)
    would do.
    """
    stack.env["WORKBENCH_LAKE"] = str(lake)
    stack.config = Config.from_env(stack.env)
    stack.restart(["broker", "gateway", "processor"])


@dataclasses.dataclass
class _Sample:
    """The pipeline, seen once a second while the disk is full."""

    at: float
    stored: int
    accepted: int
    lag: int | None
    members: list[int]
    unhealthy: str | None  # why `workbench status` calls the processor unhealthy


def _observe(stack: ScratchStack, seconds: float) -> list[_Sample]:
    from workbench.exceptions import LagUnavailable
    from workbench.kafka_lag import consumer_lag

    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        tick = time.monotonic()
        try:
            lag: int | None = consumer_lag(stack.config, timeout_s=2).total
        except LagUnavailable:
            lag = None
        samples.append(
            _Sample(
                at=tick,
                stored=stack.stored().height,
                accepted=probes.accepted_total(stack.config),
                lag=lag,
                members=stack.workers("processor"),
                unhealthy=stack.healthy().get("processor"),
            )
        )
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    return samples


def _log_size(stack: ScratchStack, component: str) -> int:
    from workbench.stack.supervisor import log_path

    return log_path(stack.config, component).stat().st_size


def _log_since(stack: ScratchStack, component: str, offset: int) -> str:
    from workbench.stack.supervisor import log_path

    with log_path(stack.config, component).open("rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


@drill("disk-full", "the lake's file system fills up while devices send, then space comes back")
def _disk_full(stack: ScratchStack, report: DrillReport) -> None:
    from workbench.stack import supervisor

    fs, why = _LakeFs.mount(_LAKE_FS_MIB)
    if fs is None:
        # Filling the file system the scratch home is on instead would also stop the
        # drill's own truth logs, the simulator and the services' run state, and
        # RLIMIT_FSIZE limits file sizes, not space: neither is this drill.
        report.check(
            f"a {_LAKE_FS_MIB} MiB tmpfs could be mounted for the lake ({why}; 'mount -t "
            "tmpfs' needs root or CAP_SYS_ADMIN)",
            False,
        )
        return
    try:
        _move_lake(stack, fs.path / "lake")
        report.step(
            f"mounted a {_LAKE_FS_MIB} MiB tmpfs at {fs.path} and restarted broker, gateway "
            f"and processor with WORKBENCH_LAKE={fs.path / 'lake'} (logs, run state and the "
            "in-memory broker stay on the home's file system; --keep does not keep this lake)"
        )
        _fill_and_free(stack, report, fs)
    finally:
        supervisor.down(stack.config, report=lambda line: None)  # nothing writes to it now
        fs.close()


def _fill_and_free(stack: ScratchStack, report: DrillReport, fs: _LakeFs) -> None:
    run = steps.start_load(stack, report)
    time.sleep(2)
    log_at = _log_size(stack, "processor")
    members = stack.workers("processor")
    used = fs.total - fs.free
    written = fs.fill()
    report.step(
        f"filled the file system ({used / (1 << 20):.1f} MiB used): wrote "
        f"{written / (1 << 20):.1f} MiB of zeros until ENOSPC, {fs.free:,} bytes free"
    )
    full = _observe(stack, _FULL_S)
    fs.release()
    span = full[-1].at - full[0].at
    report.step(f"deleted the filler after {span:.0f} s: {fs.free / (1 << 20):.1f} MiB free")
    report.step(
        "while full, every 5 s: telemetry rows "
        + ", ".join(f"{s.stored:,}" for s in full[::5])
        + "; consumer lag "
        + ", ".join(f"{s.lag:,}" if s.lag is not None else "?" for s in full[::5])
    )
    log = _log_since(stack, "processor", log_at)
    enospc = log.count("No space left on device")
    replaced = {pid for s in full for pid in s.members} - set(members)
    unhealthy = [s for s in full if s.unhealthy]
    report.check(
        f"while full the processor failed loudly and retried: {enospc} 'No space left on "
        f"device' in its log, its member replaced {len(replaced)} time(s), 'workbench "
        f"status' unhealthy in {len(unhealthy)} of {len(full)} checks"
        + (
            f" from {unhealthy[0].at - full[0].at:.0f} s on ({unhealthy[-1].unhealthy})"
            if unhealthy
            else ""
        ),
        enospc > 0 and bool(replaced) and bool(unhealthy),
    )
    accepted = full[-1].accepted - full[0].accepted
    report.check(
        f"while full the gateway kept accepting: {accepted:,} events in {span:.0f} s",
        accepted > 0,
    )
    lags = [s.lag for s in full if s.lag is not None]
    report.check(
        f"they waited in Kafka: consumer lag {lags[0] if lags else '?'} -> "
        f"{max(lags) if lags else '?'} while full",
        bool(lags) and max(lags) > lags[0],
    )
    back = time.monotonic()
    while stack.stored().height < full[-1].accepted and time.monotonic() - back < 120:
        time.sleep(0.5)
    report.step(
        f"space back: the processor caught up with what was accepted while full in "
        f"{time.monotonic() - back:.0f} s"
    )
    steps.finish(stack, report, run)
    _check_tables(stack, report)


def _check_tables(stack: ScratchStack, report: DrillReport) -> None:
    """Every table reads whole; files a failed write left behind are only counted."""
    from deltalake import DeltaTable

    from workbench.lake.tables import table_uri

    broken, orphans = [], 0
    names = ("telemetry", "telemetry_rejected", "building_metrics_1m", "building_state")
    for name in names:
        uri = table_uri(stack.config, name)
        try:
            table = DeltaTable(uri)
            table.to_pyarrow_table()
        except Exception as exc:  # any failure to read is what this check is about
            broken.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        referenced = {Path(f.removeprefix("file://")).resolve() for f in table.file_uris()}
        on_disk = {p.resolve() for p in Path(uri).rglob("*.parquet") if "_delta_log" not in p.parts}
        orphans += len(on_disk - referenced)
    report.check(
        "every table reads back whole after the failed writes "
        f"({'; '.join(broken) or ', '.join(names)}; {orphans} data file(s) of failed or "
        "replaced commits left for vacuum)",
        not broken,
    )
