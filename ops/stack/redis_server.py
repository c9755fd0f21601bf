"""Redis, from Debian's redis-server, with AOF persistence in a project-owned folder."""

from __future__ import annotations

import shutil

import redis

from ops.stack.part import Part
from ops.stack.procs import StackError


def redis_conf(port: int, data_dir: str) -> str:
    """The redis.conf the stack runs with: loopback only, AOF fsync'd every second.

    RDB snapshots are off: the AOF is the durable copy, and skipping the periodic
    fork keeps latency flat while the consumer writes at full speed.
    """
    return "\n".join([
        "bind 127.0.0.1",
        f"port {port}",
        "protected-mode yes",
        "daemonize no",
        'logfile ""',
        f'dir "{data_dir}"',
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        "",
    ])


class RedisServer(Part):
    name = "redis"

    @property
    def port(self) -> int:
        return self.settings.redis_port

    def check_installed(self) -> None:
        if shutil.which(self.settings.redis_server_bin) is None:
            raise StackError(
                f"redis: {self.settings.redis_server_bin!r} not found; install it with "
                "`apt-get install redis-server` (make setup does this when run as root) "
                "or point MOVIEREC_REDIS_SERVER_BIN at it"
            )

    def prepare(self) -> None:
        data = self.var / "redis"
        data.mkdir(parents=True, exist_ok=True)
        (data / "redis.conf").write_text(redis_conf(self.port, str(data)))

    def argv(self) -> list[str]:
        return [self.settings.redis_server_bin, str(self.var / "redis" / "redis.conf")]

    def probe(self) -> str | None:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1.0,
                             socket_connect_timeout=1.0)
        try:
            return None if client.ping() else "PING failed"
        except redis.RedisError as exc:
            return f"PING failed: {exc}"
        finally:
            client.close()
