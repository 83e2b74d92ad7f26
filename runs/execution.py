"""Execute one flow task on a worker: claim it, run the step in a child process,
stream its logs, store its artifacts, and hand the result to the services."""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from runs import services
from runs.models import Artifact, ArtifactBlob, LogChunk, Run, Status, Task, TaskAttempt
from runs.packages import safe_extract, storage
from runs.step_tokens import make_step_token

logger = logging.getLogger(__name__)

LOG_FLUSH_SECONDS = 0.25
MAX_LOG_BYTES = 20 * 1024 * 1024
SDK_ROOT = str(Path(__file__).resolve().parent.parent)
# Loaded here because the child's pre-exec hook runs after fork, where imports can deadlock.
_LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None
PR_SET_PDEATHSIG = 1


def work_dir() -> Path:
    path = Path(settings.FLOWSITE_WORK_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def worker_host() -> str:
    try:
        from celery import current_task

        hostname = current_task.request.hostname if current_task else None
    except Exception:  # outside a Celery task
        hostname = None
    return (hostname or socket.gethostname())[:200]


# ---------------------------------------------------------------- claim


def task_claim(task_id: int) -> Task | None:
    """Move the task from pending to running. Return None if another worker has it,
    or if its run has ended."""
    now = timezone.now()
    stale = now - timezone.timedelta(seconds=settings.FLOWSITE_HEARTBEAT_TIMEOUT)
    claimed = Task.objects.filter(
        Q(status=Status.PENDING) | Q(status=Status.RUNNING, heartbeat_at__lt=stale),
        pk=task_id,
        run__cancel_requested=False,
    ).update(
        status=Status.RUNNING,
        started_at=now,
        heartbeat_at=now,
        worker_host=worker_host(),
        worker_pid=os.getpid(),
    )
    if not claimed:
        return None
    task = Task.objects.select_related("run", "run__flow", "run__user", "run__code_package").get(
        pk=task_id
    )
    TaskAttempt.objects.update_or_create(
        task=task,
        number=task.attempt,
        defaults={
            "status": Status.RUNNING,
            "worker_host": task.worker_host,
            "worker_pid": task.worker_pid,
            "started_at": now,
        },
    )
    services.task_mark_started(task)
    return task


# ---------------------------------------------------------------- local caches


def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(str(path) + ".lock", "w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def code_dir_for(run: Run) -> Path:
    """Extract the run's code package once per worker host, keyed by its hash."""
    package = run.code_package
    target = work_dir() / "packages" / package.sha256
    if (target / ".complete").exists():
        return target
    with _locked(target):
        if not (target / ".complete").exists():
            with storage().open(package.storage_key, "rb") as handle:
                data = handle.read()
            if hashlib.sha256(data).hexdigest() != package.sha256:
                raise RuntimeError(f"code package {package.sha256} is corrupt in storage")
            tmp = Path(tempfile.mkdtemp(dir=target.parent))
            safe_extract(data, str(tmp))
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
            (target / ".complete").touch()
    return target


def blob_path(blob: ArtifactBlob) -> str:
    """Return a local file with the blob's bytes, downloading and verifying it once."""
    path = work_dir() / "blobs" / blob.sha256[:2] / blob.sha256
    if path.exists():
        return str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with storage().open(blob.storage_key, "rb") as handle:
        data = handle.read()
    if hashlib.sha256(data).hexdigest() != blob.sha256:
        raise RuntimeError(f"artifact blob {blob.sha256} is corrupt in storage")
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return str(path)


def task_artifact_refs(task: Task) -> dict:
    return tasks_artifact_refs([task])[task.id]


def tasks_artifact_refs(tasks: list[Task]) -> dict[int, dict]:
    """Map each task's id to its artifacts' local files, reading all rows in one query,
    so a join over a 500-way foreach costs one query and not 500."""
    attempts = {task.id: task.attempt for task in tasks}
    refs: dict[int, dict] = {task.id: {} for task in tasks}
    rows = Artifact.objects.filter(task_id__in=list(attempts)).select_related("blob")
    for row in rows:
        if row.attempt == attempts[row.task_id]:
            refs[row.task_id][row.name] = {
                "path": blob_path(row.blob), "sha256": row.blob.sha256
            }
    return refs


# ---------------------------------------------------------------- the child process


def build_spec(task: Task, output_dir: str, code_dir: Path) -> dict:
    run = task.run
    graph = run.graph
    step_spec = graph["steps"][task.step_name]
    inputs = []
    parents = {t.id: t for t in Task.objects.filter(id__in=task.input_task_ids)}
    refs = tasks_artifact_refs(list(parents.values()))
    for parent_id in task.input_task_ids:
        parent = parents[parent_id]
        inputs.append(
            {"task_id": parent.id, "step": parent.step_name, "artifacts": refs[parent.id]}
        )
    foreach = None
    frame = next(
        (f for f in reversed(task.split_stack) if f["kind"] == "foreach"), None
    )
    if frame is not None:
        split_task = Task.objects.get(pk=frame["task"])
        split_name = graph["steps"][split_task.step_name]["foreach"]
        blob = Artifact.objects.select_related("blob").get(
            task=split_task, attempt=split_task.attempt, name=split_name
        ).blob
        foreach = {"index": frame["i"], "path": blob_path(blob)}
    username = run.user.username if run.user else ""
    origin = run.origin_run.number if run.origin_run_id else None
    current = {
        "flow_name": run.flow.name,
        "run_id": str(run.number),
        "origin_run_id": str(origin) if origin is not None else None,
        "step_name": task.step_name,
        "task_id": str(task.id),
        "pathspec": f"{run.flow.name}/{run.number}/{task.step_name}/{task.id}",
        "namespace": run.identity_namespace,
        "username": username,
        "parameter_names": [spec["name"] for spec in run.parameter_specs],
        "retry_count": task.attempt,
        "is_production": run.identity_namespace.startswith("production:"),
    }
    return {
        "code_dir": str(code_dir),
        "flow_file": run.flow_file,
        "flow_name": run.flow.name,
        "step": task.step_name,
        "join": bool(step_spec["join"]),
        "expected_next": step_spec["next"],
        "parameters": run.parameters,
        "inputs": inputs,
        "foreach": foreach,
        "current": current,
        "output_dir": output_dir,
        "client": {
            "url": settings.FLOWSITE_API_URL,
            "token": make_step_token(run),
            "namespace": run.identity_namespace if run.client_namespace is None
            else run.client_namespace,
        },
    }


class LogWriter:
    """Collect lines from the child's pipes and write them as LogChunk rows in batches."""

    def __init__(self, task: Task):
        self.task = task
        self.lock = threading.Lock()
        self.pending = {"stdout": [], "stderr": []}
        self.seq = {"stdout": 0, "stderr": 0}
        self.bytes = 0
        self.truncated = False

    def reader(self, pipe, stream: str):
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
            with self.lock:
                if self.bytes > MAX_LOG_BYTES:
                    if not self.truncated:
                        self.pending[stream].append(
                            f"[flowsite] log truncated after {MAX_LOG_BYTES} bytes\n"
                        )
                        self.truncated = True
                    continue
                self.bytes += len(raw)
                self.pending[stream].append(line)
        pipe.close()

    def flush(self):
        with self.lock:
            batches = {s: lines for s, lines in self.pending.items() if lines}
            self.pending = {"stdout": [], "stderr": []}
        rows = []
        for stream, lines in batches.items():
            text = "".join(lines)
            if not text.endswith("\n"):
                text += "\n"
            rows.append(
                LogChunk(task=self.task, run_id=self.task.run_id, attempt=self.task.attempt, stream=stream,
                         seq=self.seq[stream], text=text, line_count=len(lines))
            )
            self.seq[stream] += 1
        if not rows:
            return
        try:
            LogChunk.objects.bulk_create(rows)
        except DatabaseError as exc:
            # The database may be restarting: keep the lines and write them next time.
            logger.warning("task %s: log lines not written yet, will retry: %s",
                           self.task.id, exc)
            connection.close()
            with self.lock:
                for stream, lines in batches.items():
                    self.pending[stream][:0] = lines
                    self.seq[stream] -= 1

    def note(self, stream: str, text: str):
        with self.lock:
            self.pending[stream].append(text if text.endswith("\n") else text + "\n")


def _child_env(code_dir: Path) -> dict:
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "CELERY_", "DATABASE_", "AWS_"))
        and key not in ("SECRET_KEY", "FLOWSITE_S3_BUCKET")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(code_dir), SDK_ROOT])
    return env


def _resources_env(task: Task) -> dict:
    """Pass the step's @resources requests to its process, for libraries that size
    thread pools or batches from them."""
    requested = task.run.graph["steps"][task.step_name].get("decorators", {}).get(
        "resources", {}
    )
    env = {}
    if requested.get("cpu"):
        env["FLOWSITE_CPU"] = str(requested["cpu"])
    if requested.get("memory"):
        env["FLOWSITE_MEMORY_MB"] = str(int(requested["memory"]))
    if requested.get("gpu"):
        env["FLOWSITE_GPU"] = str(requested["gpu"])
    env["FLOWSITE_QUEUE"] = task.queue
    return env


def _memory_limit(task: Task):
    memory = task.run.graph["steps"][task.step_name].get("decorators", {}).get(
        "resources", {}
    ).get("memory")
    if not memory:
        return None
    limit = int(memory) * 1024 * 1024

    def apply():
        import resource

        try:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ValueError, OSError):
            pass

    return apply


def _child_setup(task: Task):
    """Return the function the child runs before the step: die with the worker, cap memory."""
    memory_limit = _memory_limit(task)

    def setup():
        # The child has its own session so a kill reaches its whole process group, but
        # then a SIGKILLed worker would leave it running. Linux sends it SIGKILL instead.
        if _LIBC is not None:
            _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if memory_limit is not None:
            memory_limit()

    return setup


def run_child(task: Task, spec_path: str, code_dir: Path, writer: LogWriter) -> tuple[int, str]:
    """Run the step; return (exit code, reason) where reason explains a kill."""
    decorators = task.run.graph["steps"][task.step_name].get("decorators", {})
    timeout_spec = decorators.get("timeout", {})
    limit = None
    if timeout_spec:
        limit = (
            float(timeout_spec.get("seconds", 0))
            + 60 * float(timeout_spec.get("minutes", 0))
            + 3600 * float(timeout_spec.get("hours", 0))
        ) or None
    process = subprocess.Popen(
        [sys.executable, "-m", "flowsite.sdk.runner", spec_path],
        cwd=str(code_dir),
        env={**_child_env(code_dir), **_resources_env(task)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_child_setup(task),
    )
    threads = [
        threading.Thread(target=writer.reader, args=(process.stdout, "stdout"), daemon=True),
        threading.Thread(target=writer.reader, args=(process.stderr, "stderr"), daemon=True),
    ]
    for thread in threads:
        thread.start()

    started = time.monotonic()
    last_beat = started
    reason = ""
    pidfd = _pidfd_open(process.pid)
    while True:
        code = process.poll()
        if code is not None:
            break
        _wait_for_exit(pidfd, 0.25)
        now = time.monotonic()
        if now - last_beat >= min(settings.FLOWSITE_HEARTBEAT_INTERVAL, 1.0):
            writer.flush()
            last_beat = now
            if _heartbeat(task):
                reason = "cancelled: the run was cancelled or ended"
                _kill(process)
        if limit is not None and now - started > limit:
            reason = f"timed out: the step ran longer than its @timeout limit of {limit:g} s"
            _kill(process)
    if pidfd is not None:
        os.close(pidfd)
    for thread in threads:
        thread.join(timeout=5)
    writer.flush()
    return process.returncode, reason


def _pidfd_open(pid: int) -> int | None:
    """Return a file descriptor that becomes readable when the process exits, or None
    where pidfd_open is missing (Linux before 5.3, other systems)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _wait_for_exit(pidfd: int | None, seconds: float) -> None:
    """Sleep until the child exits or `seconds` pass. With a pidfd the worker wakes at
    the exit itself; a fixed 50 ms poll added 25 ms to every task on average."""
    if pidfd is None:
        time.sleep(min(seconds, 0.05))
        return
    select.select([pidfd], [], [], seconds)


_last_heartbeat: dict[int, float] = {}


def _heartbeat(task: Task) -> bool:
    """Record that the task is alive; return True if its run asks it to stop.

    A database error does not stop the step: the broken connection is closed and the
    next beat opens a new one. If the database stays away longer than the heartbeat
    timeout, the sweep fails the attempt as it would for a lost worker.
    """
    now = time.monotonic()
    try:
        if now - _last_heartbeat.get(task.id, 0) >= settings.FLOWSITE_HEARTBEAT_INTERVAL:
            stamp = timezone.now()
            Task.objects.filter(pk=task.pk).update(heartbeat_at=stamp)
            Run.objects.filter(pk=task.run_id).update(heartbeat_at=stamp)
            _last_heartbeat[task.id] = now
        return Run.objects.filter(pk=task.run_id, cancel_requested=True).exists()
    except DatabaseError as exc:
        logger.warning("task %s: heartbeat failed, retrying at the next beat: %s",
                       task.id, exc)
        connection.close()
        return False


def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------- storing results


def blob_store(path: str, sha256: str, size: int) -> ArtifactBlob:
    """Upload the bytes, verify them, and only then record the blob."""
    existing = ArtifactBlob.objects.filter(sha256=sha256).first()
    if existing:
        return existing
    data = Path(path).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256 or len(data) != size:
        raise RuntimeError(f"artifact file {path} does not match its hash")
    key = f"artifacts/{sha256[:2]}/{sha256}"
    store = storage()
    if not store.exists(key):
        saved = store.save(key, ContentFile(data))
        key = saved
    with store.open(key, "rb") as handle:
        if hashlib.sha256(handle.read()).hexdigest() != sha256:
            raise RuntimeError(f"artifact {sha256} was not stored intact")
    try:
        with transaction.atomic():
            return ArtifactBlob.objects.create(sha256=sha256, size=size, storage_key=key)
    except IntegrityError:
        return ArtifactBlob.objects.get(sha256=sha256)


def artifact_names_check(artifacts: dict) -> None:
    """Reject artifact names that are not identifiers, such as ones set with setattr()."""
    for name in artifacts:
        services.validate_name(name, "Artifact name")


def artifacts_record(task: Task, artifacts: dict, inherited_from: Task | None) -> None:
    artifact_names_check(artifacts)
    inherited = {}
    if inherited_from is not None:
        inherited = {
            row.name: row
            for row in Artifact.objects.filter(task=inherited_from, attempt=inherited_from.attempt)
        }
    rows = []
    for name, info in artifacts.items():
        if info.get("inherited"):
            source = inherited.get(name)
            if source is None:
                continue
            rows.append(Artifact(task=task, attempt=task.attempt, name=name,
                                 blob_id=source.blob_id, type_name=source.type_name,
                                 preview=source.preview))
            continue
        blob = blob_store(info["path"], info["sha256"], info["size"])
        rows.append(Artifact(task=task, attempt=task.attempt, name=name, blob=blob,
                             type_name=info["type"][:300], preview=info["preview"]))
    Artifact.objects.filter(task=task, attempt=task.attempt).delete()
    Artifact.objects.bulk_create(rows)


# ---------------------------------------------------------------- the whole task


def execute(task_id: int) -> None:
    task = task_claim(task_id)
    if task is None:
        logger.info("task %s already claimed or its run ended; skipped", task_id)
        return
    run = task.run
    logger.info("task %s (%s/%s) attempt %s started", task.id, run.pathspec,
                task.step_name, task.attempt)
    writer = LogWriter(task)
    output_dir = tempfile.mkdtemp(prefix=f"task-{task.id}-", dir=work_dir())
    try:
        code_dir = code_dir_for(run)
        spec = build_spec(task, output_dir, code_dir)
        Task.objects.filter(pk=task.pk).update(current=spec["current"])
        spec_path = os.path.join(output_dir, "spec.json")
        with open(spec_path, "w") as handle:
            json.dump(spec, handle)
        code, reason = run_child(task, spec_path, code_dir, writer)
        result_path = os.path.join(output_dir, "result.json")
        result = None
        if os.path.exists(result_path):
            with open(result_path) as handle:
                result = json.load(handle)
        if reason:
            writer.note("stderr", f"[flowsite] {reason}")
            writer.flush()
            _attempt_end(task, Status.FAILED, reason)
            services.task_fail(task_id=task.id, error=reason,
                               retry=not reason.startswith("cancelled"))
            return
        if code != 0 or not result or not result.get("ok"):
            error = (result or {}).get("error") or f"step process exited with code {code}"
            _attempt_end(task, Status.FAILED, error)
            services.task_fail(task_id=task.id, error=error)
            return
        inherited_from = None
        if task.input_task_ids and not spec["join"]:
            inherited_from = Task.objects.get(pk=task.input_task_ids[0])
        artifacts_record(task, result["artifacts"], inherited_from)
        _attempt_end(task, Status.COMPLETED, "")
        services.task_complete(task_id=task.id, foreach_count=result.get("foreach_count"),
                               next_steps=result.get("next", []))
        logger.info("task %s (%s/%s) completed", task.id, run.pathspec, task.step_name)
    except Exception as exc:
        logger.exception("task %s of run %s failed in the worker", task.id, run.pathspec)
        writer.note("stderr", f"[flowsite] worker error: {type(exc).__name__}: {exc}")
        writer.flush()
        _attempt_end(task, Status.FAILED, str(exc))
        services.task_fail(task_id=task.id, error=f"worker error: {exc}")
    finally:
        _last_heartbeat.pop(task.id, None)
        shutil.rmtree(output_dir, ignore_errors=True)


def _attempt_end(task: Task, status: str, error: str) -> None:
    TaskAttempt.objects.filter(task=task, number=task.attempt).update(
        status=status, finished_at=timezone.now(), error=error[:10000]
    )


# ---------------------------------------------------------------- periodic sweep


def sweep() -> dict:
    """Requeue pending tasks the broker never took, and fail tasks whose heartbeat stopped."""
    now = timezone.now()
    timeout = timezone.timedelta(seconds=settings.FLOWSITE_HEARTBEAT_TIMEOUT)
    lost = list(
        Task.objects.filter(status=Status.RUNNING, heartbeat_at__lt=now - timeout)
        .values_list("id", "attempt")[:500]
    )
    for task_id, attempt in lost:
        error = f"worker lost: no heartbeat for {settings.FLOWSITE_HEARTBEAT_TIMEOUT} s"
        logger.warning("task %s attempt %s lost its heartbeat; marking it failed",
                       task_id, attempt)
        TaskAttempt.objects.filter(task_id=task_id, number=attempt,
                                   status=Status.RUNNING).update(
            status=Status.FAILED, finished_at=now, error=error
        )
        services.task_fail(task_id=task_id, error=error)
    unqueued = list(
        Task.objects.filter(
            Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=now - timeout),
            status=Status.PENDING,
            run__cancel_requested=False,
        ).values_list("id", flat=True)[:500]
    )
    if unqueued:
        services.tasks_enqueue(unqueued)
    return {"lost": len(lost), "requeued": len(unqueued)}
