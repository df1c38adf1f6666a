"""A Redis Sentinel group on loopback: a master, a replica and three sentinels
(`redis-server --sentinel`), real processes that a test can SIGKILL."""
from __future__ import annotations

import subprocess
from pathlib import Path

import redis

from tests.harness import HarnessError, free_port, read_tail, wait_until
from tests.tls_redis import make_ca_and_server_cert

MASTER_NAME = "offsite"


class SentinelGroup:
    def __init__(self, directory: Path, password: str | None = None, tls: bool = False) -> None:
        """password: asked by the master, the replica and the sentinels alike; tls: every one of
        them speaks only TLS (a certificate for 127.0.0.1 from a throwaway CA, `ca`), the
        replica to the master and the sentinels to both too."""
        self.directory = directory
        self.password = password
        self.ca: Path | None = None
        self._tls_args: list[str] = []
        if tls:
            self.ca, cert, key = make_ca_and_server_cert(directory)
            self._tls_args = ["--tls-cert-file", str(cert), "--tls-key-file", str(key),
                              "--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "no",
                              "--tls-replication", "yes"]
        self.data_ports = [free_port(), free_port()]
        self.sentinel_ports = [free_port(), free_port(), free_port()]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self._clients: dict[int, redis.Redis] = {}

    @property
    def url(self) -> str:
        """With TLS, the first part names the CA (offsite.config.tls)."""
        auth = f":{self.password}@" if self.password else ""
        query = f"/0?ssl_ca_certs={self.ca}" if self.ca else ""
        return ";".join(f"sentinel://{auth if n == 0 else ''}127.0.0.1:{port}"
                        f"{query if n == 0 else ''}"
                        for n, port in enumerate(self.sentinel_ports))

    def _listen(self, port: int) -> list[str]:
        if self.ca is None:
            return ["--port", str(port)]
        return ["--port", "0", "--tls-port", str(port), *self._tls_args]

    def _spawn(self, port: int, argv: list[str]) -> None:
        log = self.directory / f"redis-{port}.log"
        self.processes[port] = subprocess.Popen(
            [*argv, "--logfile", str(log)], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        """The replica is in sync before the sentinels start, so their first look at the
        master finds it (else they learn of it at their next INFO, 10 s later)."""
        master, replica = self.data_ports
        for port in self.data_ports:
            folder = self.directory / f"data-{port}"
            folder.mkdir()
            argv = ["redis-server", *self._listen(port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(folder),
                    "--repl-diskless-sync-delay", "0"]   # a replica syncs at once, not in 5 s
            if port == replica:
                argv += ["--replicaof", "127.0.0.1", str(master)]
            if self.password:
                argv += ["--requirepass", self.password, "--masterauth", self.password]
            self._spawn(port, argv)
        try:
            wait_until(self._replica_linked, timeout=30, what="the replica to sync")
            for port in self.sentinel_ports:
                conf = self.directory / f"sentinel-{port}.conf"
                conf.write_text(f"bind 127.0.0.1\ndir {self.directory}\n"
                                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n"
                                f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                                f"sentinel failover-timeout {MASTER_NAME} 5000\n"
                                + (f"sentinel auth-pass {MASTER_NAME} {self.password}\n"
                                   f"requirepass {self.password}\n" if self.password else ""))
                self._spawn(port, ["redis-server", str(conf), "--sentinel",
                                   *self._listen(port)])
            wait_until(lambda: all(self._known_replicas(port) for port in self.sentinel_ports),
                       timeout=30, what="every sentinel to know the replica")
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
                socket_connect_timeout=1, decode_responses=True,
                **({"ssl": True, "ssl_ca_certs": str(self.ca)} if self.ca else {}))
        return self._clients[port]

    def _replica_linked(self) -> bool:
        try:
            info = self._client(self.data_ports[1]).info("replication")
        except redis.RedisError:
            return False
        return info.get("master_link_status") == "up"

    def _known_replicas(self, sentinel_port: int) -> bool:
        try:
            # and reaches it: just after it learns of a replica its link to it is not up
            return any(not (replica["is_disconnected"] or replica["is_sdown"])
                       for replica in self._client(sentinel_port).sentinel_slaves(MASTER_NAME))
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

    def cut_replica(self) -> None:
        """The replica loses its link to the master and cannot make it again (it is given a
        wrong masterauth) until mend_replica: what the master writes meanwhile is on the
        master only. The sentinels still see both alive."""
        master, replica = self.data_ports
        self._client(replica).config_set("masterauth", "not-the-masters-password")
        self._client(master).client_kill_filter(_type="replica")
        wait_until(lambda: not self._replica_linked() and int(
            self._client(master).info("replication")["connected_slaves"]) == 0,
            timeout=10, what="the replica to be cut off")

    def mend_replica(self) -> None:
        self._client(self.data_ports[1]).config_set("masterauth", self.password or "")

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
