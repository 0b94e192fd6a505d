"""A Spark standalone cluster on the loopback address, for tests and benches: a master and N workers started from
the venv's pyspark (bin/spark-class), every process it starts found again by a marker in its environment, and all
of them stopped on exit, whatever happened.

    with LocalCluster(workers=2, cores=1, folder=tmp) as cluster:
        subprocess.run([..., "--master", cluster.url], env=cluster.env)
        cluster.kill_worker(0)
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {seconds} s waiting for {what}")


class LocalCluster:
    def __init__(self, workers, cores, folder, memory="1g"):
        import pyspark

        self.workers, self.cores, self.memory, self.folder = workers, cores, memory, folder
        self.marker = f"clipguide-local-cluster-{uuid.uuid4().hex}"
        spark_home = os.path.dirname(pyspark.__file__)
        self.spark_class = os.path.join(spark_home, "bin", "spark-class")
        # The driver and the jobs it starts run with this environment too, so they are found and stopped as well.
        self.env = dict(os.environ, SPARK_HOME=spark_home, SPARK_LOCAL_IP="127.0.0.1",
                        SPARK_LOG_DIR=os.path.join(folder, "logs"), SPARK_LOCAL_DIRS=os.path.join(folder, "local"),
                        PYSPARK_PYTHON=sys.executable, CLIPGUIDE_LOCAL_CLUSTER=self.marker)
        self.port, self.ui_port = free_port(), free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.log = os.path.join(folder, "cluster.log")
        self._master, self._workers = None, []

    def _start(self, main_class, *args):
        with open(self.log, "a") as log:
            return subprocess.Popen([self.spark_class, main_class, *args], env=self.env, stdout=log, stderr=log,
                                    start_new_session=True)

    def alive_workers(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=2) as r:
                return json.load(r).get("aliveworkers", 0)
        except OSError:
            return 0

    def __enter__(self):
        try:
            self._master = self._start("org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(self.port),
                        "--webui-port", str(self.ui_port))
            for w in range(self.workers):
                self._workers.append(self._start(
                    "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", str(self.cores),
                    "--memory", self.memory, "--work-dir", os.path.join(self.folder, f"worker-{w}"),
                    "--webui-port", str(free_port()), self.url))
            wait_for(f"the master and {self.workers} workers", lambda: self.alive_workers() == self.workers)
        except BaseException:
            self.stop()
            raise
        return self

    def kill_worker(self, w):
        """SIGKILL to worker w and its executors (Spark's Python daemon, in a process group of its own, ends when
        its executor does)."""
        os.killpg(self._workers[w].pid, signal.SIGKILL)

    def processes(self):
        """Every live process carrying this cluster's marker: the JVMs, Python daemons and workers, their jobs."""
        found = []
        for pid in os.listdir("/proc"):
            if pid.isdigit() and int(pid) != os.getpid():
                try:
                    with open(f"/proc/{pid}/environ", "rb") as f:
                        if self.marker.encode() in f.read():
                            found.append(int(pid))
                except OSError:
                    pass
        return found

    def stop(self):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.processes():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            try:
                wait_for("the cluster's processes to end", lambda: not self.processes(), 10)
                break
            except TimeoutError:
                pass
        left = self.processes()
        if left:
            raise RuntimeError(f"the local cluster's processes {left} would not end")
        for process in [self._master] + self._workers:
            if process is not None:
                process.poll()  # reaped
        # A process that has just ended may hold its sockets a moment longer (Linux releases its memory, and so
        # its environment, first).
        wait_for(f"port {self.port} to be free", self._port_free, 30)

    def _port_free(self):
        with socket.socket() as s:  # closed connections may linger; no one may listen
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", self.port))
                return True
            except OSError:
                return False

    def __exit__(self, *exc):
        self.stop()
