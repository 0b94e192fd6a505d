"""The executors' side of clipguide-spark: one long-lived `clipguide index|score|rerank --worker` per Spark Python
worker process, kept across the tasks that process runs (Spark reuses its Python workers; this module's state lives
as long as one), so the model loads once per Python worker: once per executor when a task takes the whole executor
(clipguide_spark.one_task_per_executor). The driver ships this file with SparkContext.addPyFile.
"""
import ctypes
import json
import os
import signal
import subprocess
import tempfile

_worker = None  # ((command line, folder), Popen, its stderr file)


def _die_with_parent():
    # The worker ends with the Python worker that started it: an executor killed mid-task leaves no orphan.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _stop():
    global _worker
    if _worker is not None:
        _worker[1].stdin.close()
        _worker[1].wait()
        _worker[2].close()
        _worker = None


def _worker_for(command, cwd):
    global _worker
    if _worker is not None and (_worker[0] != (command, cwd) or _worker[1].poll() is not None):
        _stop()
    if _worker is None:
        if not os.path.isdir(cwd):
            raise RuntimeError(f"{cwd}: the driver's folder is not on this node (relative paths are read from it)")
        # stderr to a file, not a pipe: nobody reads it while the worker runs (a pipe would fill with --on-error
        # skip's warnings and stall it); its last line explains a failure.
        errors = tempfile.TemporaryFile("w+")
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True,
                                   bufsize=1, cwd=cwd, preexec_fn=_die_with_parent)
        _worker = ((command, cwd), process, errors)
    return _worker[1], _worker[2]


def worker_command(base, context):
    """The worker's command line for this task: its CPUs, and its GPU when Spark assigned one."""
    command = list(base)
    if "--threads" not in command:
        command += ["--threads", str(max(1, context.cpus()))]
    gpus = context.resources().get("gpu")
    if gpus is not None and gpus.addresses and "--device" not in command:
        command += ["--device", f"cuda:{gpus.addresses[0]}"]
    return command


def run_partitions(base, cwd, partitions):
    """Makes the partitions this task holds, in the folder `cwd` (the driver's: relative paths in the options are
    read from there). Yields (partition, the worker's last line for it, the ranked rows before that line): for
    index the last line says its rows (or that it was there), for rerank the rows are its kept images."""
    from pyspark import TaskContext

    process, errors = _worker_for(worker_command(base, TaskContext.get()), cwd)
    for partition in partitions:
        process.stdin.write(f"{partition}\n")
        process.stdin.flush()
        rows = []
        while True:
            line = process.stdout.readline()
            if not line:
                process.wait()
                errors.seek(0)
                said = errors.read().strip().splitlines()
                _stop()
                raise RuntimeError(f"clipguide {base[1]} --worker ended (exit {process.returncode}) on partition "
                                   f"{partition}: {said[-1] if said else 'no message'}")
            answer = json.loads(line)
            if answer.get("partition") != partition:
                raise RuntimeError(f"clipguide --worker answered {line.strip()} for partition {partition}")
            if "rank" not in answer:
                break
            rows.append(answer)
        yield partition, answer, rows
