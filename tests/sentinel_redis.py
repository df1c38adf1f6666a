"""A Redis Sentinel group on loopback: a master, a replica and three sentinels
(`redis-server --sentinel`), real processes that a test can SIGKILL."""
from __future__ import annotations

import subprocess
from pathlib import Path

import redis

from tests.harness import HarnessError, free_port, read_tail, wait_until

MASTER_NAME = "offsite"


class SentinelGroup:
    def __init__(self, directory: Path, password: str | None = None) -> None:
        """password: asked by the master, the replica and the sentinels alike."""
        self.directory = directory
        self.password = password
        self.data_ports = [free_port(), free_port()]
        self.sentinel_ports = [free_port(), free_port(), free_port()]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self._clients: dict[int, redis.Redis] = {}

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return ";".join(f"sentinel://{auth if n == 0 else ''}127.0.0.1:{port}"
                        for n, port in enumerate(self.sentinel_ports))

    def _spawn(self, port: int, argv: list[str]) -> None:
        log = self.directory / f"redis-{port}.log"
        self.processes[port] = subprocess.Popen(
            [*argv, "--logfile", str(log)], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        master, replica = self.data_ports
        for port in self.data_ports:
            folder = self.directory / f"data-{port}"
            folder.mkdir()
            argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(folder)]
            if port == replica:
                argv += ["--replicaof", "127.0.0.1", str(master)]
            if self.password:
                argv += ["--requirepass", self.password, "--masterauth", self.password]
            self._spawn(port, argv)
        for port in self.sentinel_ports:
            conf = self.directory / f"sentinel-{port}.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n"
                            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                            f"sentinel failover-timeout {MASTER_NAME} 5000\n"
                            + (f"sentinel auth-pass {MASTER_NAME} {self.password}\n"
                               f"requirepass {self.password}\n" if self.password else ""))
            self._spawn(port, ["redis-server", str(conf), "--sentinel"])
        try:
            wait_until(lambda: self._replica_linked() and all(
                self._known_replicas(port) for port in self.sentinel_ports), timeout=30,
                what="the replica to sync and every sentinel to know it")
        except HarnessError:
            logs = "\n".join(read_tail(self.directory / f"redis-{p}.log", 10)
                             for p in self.processes)
            self.stop()
            raise HarnessError(f"the sentinel group did not come up:\n{logs}") from None

    def _client(self, port: int) -> redis.Redis:
        """One client per server, closed by stop()."""
        if port not in self._clients:
            self._clients[port] = redis.Redis(
                host="127.0.0.1", port=port, socket_timeout=1, password=self.password,
                socket_connect_timeout=1, decode_responses=True)
        return self._clients[port]

    def _replica_linked(self) -> bool:
        try:
            info = self._client(self.data_ports[1]).info("replication")
        except redis.RedisError:
            return False
        return info.get("master_link_status") == "up"

    def _known_replicas(self, sentinel_port: int) -> bool:
        try:
            return bool(self._client(sentinel_port).sentinel_slaves(MASTER_NAME))
        except redis.RedisError:
            return False

    def master_port(self) -> int | None:
        """The master's port as the sentinels (a majority of them) see it."""
        seen = []
        for port in self.sentinel_ports:
            try:
                address = self._client(port).sentinel_get_master_addr_by_name(MASTER_NAME)
            except redis.RedisError:
                continue
            if isinstance(address, (list, tuple)) and address:
                seen.append(int(address[1]))
        return max(set(seen), key=seen.count) if seen else None

    def master(self) -> redis.Redis:
        port = self.master_port()
        assert port is not None
        return self._client(port)

    def kill(self, port: int) -> None:
        if (client := self._clients.pop(port, None)) is not None:
            client.close()
        process = self.processes[port]
        process.kill()
        process.wait(10)

    def stop(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(10)
