"""The local stack: Kafka and one MQTT broker on free loopback ports, in a home folder.

The MQTT broker is Mosquitto unless `up` is asked for another (`brokers`: HiveMQ CE, RabbitMQ).
`up` provisions what is missing (brokers from apt or Maven Central), starts both in
sessions of their own so they outlive the command, waits for real client calls to succeed, and
writes `stack.json` so other commands (and other processes) find the stack. A stack, once made,
keeps its ports and its data: `up` on a stack whose parts died (or were stopped with `down`)
starts only those parts again, in place; `restart` does it for one part on purpose; only
`down(purge=True)` discards data and ports. `down` stops exactly the pids it recorded. Several
stacks live side by side in different home folders.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from mqtt_presence.stack import kafka, secure
from mqtt_presence.stack.brokers import MqttBroker, wait_for_connack
from mqtt_presence.stack.errors import BrokerStartError, PortInUseError, StackError
from mqtt_presence.stack.hivemq import HiveMQ
from mqtt_presence.stack.mosquitto import Mosquitto
from mqtt_presence.stack.ports import HOST, bindable, ensure_free, free_port
from mqtt_presence.stack.processes import pid_running, stop_pid, stop_pids
from mqtt_presence.stack.rabbitmq import RabbitMQ

STATE_FILE = "stack.json"
KAFKA_START_ATTEMPTS = 3  # when a port picked as free is taken before Kafka binds it
Progress = Callable[[str], None]
BROKERS: dict[str, MqttBroker] = {b.name: b for b in (Mosquitto(), HiveMQ(), RabbitMQ())}
DEFAULT_BROKER = "mosquitto"
# stack.json as written before the MQTT broker could be another than Mosquitto
LEGACY_KEYS = {"mosquitto_pid": "mqtt_pid", "mosquitto_version": "mqtt_broker_version"}


def broker_named(name: str) -> MqttBroker:
    """The broker `presence stack up --broker NAME` runs."""
    try:
        return BROKERS[name]
    except KeyError:
        raise StackError(f"no MQTT broker named {name!r}: one of {', '.join(BROKERS)}") from None


class KafkaNodeInfo(msgspec.Struct, frozen=True):
    """A node of a multi-node Kafka cluster (combined broker and KRaft controller)."""

    node_id: int
    port: int
    controller_port: int
    pid: int


class StackInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Where a running local stack is; written to `<home>/stack.json`."""

    home: str
    kafka_bootstrap: str
    kafka_port: int
    kafka_controller_port: int
    kafka_pid: int
    kafka_version: str
    mqtt_host: str
    mqtt_port: int
    mqtt_pid: int
    mqtt_broker_version: str
    started_at: float
    mqtt_broker: str = DEFAULT_BROKER  # a name in BROKERS
    # `up --secure`: Kafka's SASL_SSL on kafka_port and mTLS on kafka_mtls_port; Mosquitto's TLS
    # with passwords on mqtt_port and with client certificates on mqtt_mtls_port.
    secure: bool = False
    kafka_mtls_port: int = 0
    mqtt_mtls_port: int = 0
    # `up --kafka-nodes 3`: the other nodes of the cluster (node 1 is kafka_port, kafka_pid).
    kafka_nodes: tuple[KafkaNodeInfo, ...] = ()

    @property
    def nodes(self) -> tuple[KafkaNodeInfo, ...]:
        """Every Kafka node, node 1 first."""
        first = KafkaNodeInfo(1, self.kafka_port, self.kafka_controller_port, self.kafka_pid)
        return (first, *self.kafka_nodes)

    @property
    def broker(self) -> MqttBroker:
        return broker_named(self.mqtt_broker)

    @property
    def mqtt_url(self) -> str:
        return f"{'mqtts' if self.secure else 'mqtt'}://{self.mqtt_host}:{self.mqtt_port}"

    @property
    def client_config(self) -> Path | None:
        """The config file with the [kafka] and [bridge] tables that reach a secure stack."""
        return Path(self.home) / secure.CLIENT_CONFIG if self.secure else None


def default_home() -> Path:
    env = os.environ.get("PRESENCE_STACK_HOME")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mqtt-presence" / "stack"


def _env_port(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def ensure_taken_by_nobody(port: int, what: str, home: Path) -> None:
    """A stack's recorded port must still be free to start a part there again."""
    if not bindable(port, reuse=True):
        raise PortInUseError(
            f"port {port}, where the stack in {home} keeps {what}, is taken by another "
            "process; stop that process, or `presence stack down --purge` and `up` to make a "
            "new stack on other ports (that discards its data)"
        )


def still_running(proc: subprocess.Popen[bytes]) -> Callable[[], bool]:
    """A check that `proc` has not exited (bound to this process, not to a loop variable)."""
    return lambda: proc.poll() is None


class LocalStack:
    """A local Kafka + Mosquitto pair rooted in one home folder."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = (home or default_home()).resolve()

    @property
    def state_path(self) -> Path:
        return self.home / STATE_FILE

    def info(self) -> StackInfo | None:
        """The recorded stack, or None when there is none."""
        try:
            recorded = msgspec.json.decode(self.state_path.read_bytes())
            if isinstance(recorded, dict):
                for old, new in LEGACY_KEYS.items():
                    if old in recorded:
                        recorded[new] = recorded.pop(old)
            return msgspec.convert(recorded, type=StackInfo)
        except FileNotFoundError:
            return None
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StackError(
                f"{self.state_path} is not a stack state file ({exc}); "
                "remove it and run `presence stack up` again"
            ) from exc

    def health(self, info: StackInfo) -> dict[str, bool]:
        return {
            "kafka": all(pid_running(n.pid, kafka.MAIN_CLASS) for n in info.nodes),
            info.mqtt_broker: pid_running(info.mqtt_pid, info.broker.marker),
        }

    def running(self) -> bool:
        """True when a stack is recorded here and its Kafka and MQTT broker run."""
        info = self.info()
        return info is not None and all(self.health(info).values())

    def up(
        self,
        kafka_port: int | None = None,
        mqtt_port: int | None = None,
        progress: Progress = lambda _m: None,
        secure: bool = False,
        kafka_nodes: int = 1,
        broker: str | None = None,
    ) -> StackInfo:
        """Start the stack; if one is recorded here, start only its parts that are down, on
        their ports and with their data (never new ports, never an empty broker). `secure`:
        TLS and passwords on both brokers (see `mqtt_presence.stack.secure`). `broker`: the
        MQTT broker (Mosquitto unless asked)."""
        current = self.info()
        if current is not None:
            if broker is not None and broker != current.mqtt_broker:
                raise StackError(
                    f"the stack in {self.home} runs {current.broker.title}, not {broker}; "
                    "`presence stack down --purge` first to make another (that discards its "
                    "data), or use another --home"
                )
            if secure and not current.secure:  # (a secure one is resumed without the flag)
                raise StackError(
                    f"the stack in {self.home} is a plaintext one; `presence stack down --purge` "
                    "first to make a secure one (that discards its data), or use another --home"
                )
            if kafka_nodes != len(current.nodes) and kafka_nodes != 1:
                raise StackError(
                    f"the stack in {self.home} has {len(current.nodes)} Kafka node(s); "
                    "`presence stack down --purge` first to make another (that discards its "
                    "data), or use another --home"
                )
            return self._resume(current, kafka_port, mqtt_port, progress)
        if kafka_nodes not in (1, 3):
            raise StackError("--kafka-nodes is 1 or 3 (a quorum of three KRaft controllers)")
        if kafka_nodes > 1 and secure:
            raise StackError("--secure with --kafka-nodes 3 is not supported yet: use one of them")
        chosen = broker_named(broker or DEFAULT_BROKER)
        if secure and not isinstance(chosen, Mosquitto):
            raise StackError(
                f"--secure is made for Mosquitto only so far, not {chosen.title}: use one of them"
            )
        if kafka_nodes > 1:
            return self._create_cluster(kafka_port, mqtt_port, progress, kafka_nodes, chosen)
        return self._create(kafka_port, mqtt_port, progress, secure, chosen)

    def _resume(
        self,
        info: StackInfo,
        kafka_port: int | None,
        mqtt_port: int | None,
        progress: Progress,
    ) -> StackInfo:
        for asked, recorded, what in (
            (kafka_port, info.kafka_port, "Kafka"),
            (mqtt_port, info.mqtt_port, "MQTT"),
        ):
            if asked and asked != recorded:
                raise StackError(
                    f"the stack in {self.home} has {what} on port {recorded}, not {asked}; "
                    "leave the flag out to start it where it was, or `presence stack down "
                    "--purge` first to make a new one (that discards its data)"
                )
        health = self.health(info)
        if all(health.values()):
            progress(f"the stack in {self.home} is already up")
            return info
        if not health[info.mqtt_broker]:
            progress(
                f"{info.broker.title} is not running: starting it again on port "
                f"{info.mqtt_port} with its data"
            )
            info = self.start_mqtt()
        if not health["kafka"]:
            progress(
                f"Kafka is not running: starting it again on port {info.kafka_port} with its data"
            )
            info = self.start_kafka()
        return info

    def restart(self, part: str, progress: Progress = lambda _m: None) -> StackInfo:
        """Stop one part ("kafka", or "mqtt" or the MQTT broker's name) if it runs and start it
        again in place."""
        info = self._require_info()
        if part == "kafka":
            progress(f"restarting Kafka on port {info.kafka_port}")
            self.stop_kafka()
            return self.start_kafka()
        if part in ("mqtt", info.mqtt_broker):
            progress(f"restarting {info.broker.title} on port {info.mqtt_port}")
            stop_pid(info.mqtt_pid, info.broker.marker)
            return self.start_mqtt()
        raise StackError(f"no part named {part!r} here: kafka, mqtt or {info.mqtt_broker}")

    def _create(
        self,
        kafka_port: int | None,
        mqtt_port: int | None,
        progress: Progress,
        secure_: bool,
        broker: MqttBroker,
    ) -> StackInfo:
        kafka_port = kafka_port or _env_port("PRESENCE_KAFKA_PORT")
        mqtt_port = mqtt_port or _env_port("PRESENCE_MQTT_PORT")
        kport = ensure_free(kafka_port, "Kafka") if kafka_port else free_port()
        cport = free_port()
        mport = ensure_free(mqtt_port, "MQTT") if mqtt_port else free_port()

        kmtls, mmtls = (free_port(), free_port()) if secure_ else (0, 0)

        broker.install(progress)
        classpath = kafka.resolve_classpath(progress)
        self.home.mkdir(parents=True, exist_ok=True)
        if secure_:
            progress(f"making a CA, certificates and passwords in {self.home}")
            secure.provision(self.home)
        started: list[tuple[int, str]] = []
        try:
            progress(f"starting {broker.title} on {HOST}:{mport}")
            mqtt_pid = self._run_mqtt(broker, mport, mmtls, secure_, started)

            for attempt in range(1, KAFKA_START_ATTEMPTS + 1):
                progress(f"starting Kafka {kafka.kafka_version()} (KRaft) on {HOST}:{kport}")
                ksecured = secure.kafka_secured(self.home, kmtls) if secure_ else None
                kconf = kafka.prepare(self.home, classpath, kport, cport, ksecured)
                kproc = kafka.start(self.home, classpath, kconf)
                started.append((kproc.pid, kafka.MAIN_CLASS))
                try:
                    kafka.wait_ready(
                        f"{HOST}:{kport}",
                        still_running(kproc),
                        self.home / "kafka.log",
                        options=self._kafka_options(f"{HOST}:{kport}", secure_),
                    )
                    break
                except BrokerStartError as exc:
                    lost_a_port = "Address already in use" in str(exc)
                    if kafka_port or not lost_a_port or attempt == KAFKA_START_ATTEMPTS:
                        raise
                    # A port picked as free was taken before Kafka bound it: pick again.
                    progress("a port picked for Kafka was taken meanwhile; trying other ports")
                    kport, cport = free_port(), free_port()
                    kmtls = free_port() if secure_ else 0
        except BaseException:
            for pid, marker in started:
                stop_pid(pid, marker, timeout=10)
            raise
        info = StackInfo(
            home=str(self.home),
            kafka_bootstrap=f"{HOST}:{kport}",
            kafka_port=kport,
            kafka_controller_port=cport,
            kafka_pid=kproc.pid,
            kafka_version=kafka.kafka_version(),
            mqtt_host=HOST,
            mqtt_port=mport,
            mqtt_pid=mqtt_pid,
            mqtt_broker_version=broker.version(),
            mqtt_broker=broker.name,
            started_at=time.time(),
            secure=secure_,
            kafka_mtls_port=kmtls,
            mqtt_mtls_port=mmtls,
        )
        if secure_:
            secure.write_client_config(self.home, info.kafka_bootstrap, mport)
        self.state_path.write_bytes(msgspec.json.format(msgspec.json.encode(info)))
        return info

    def _kafka_options(self, bootstrap: str, secured: bool) -> dict[str, object] | None:
        return secure.kafka_admin_options(self.home, bootstrap) if secured else None

    def down(self, purge: bool = False) -> list[int]:
        """Stop the recorded processes (only those); returns the pids stopped. The stack keeps
        its ports and data for the next `up`, unless `purge`: then both are forgotten."""
        info = self.info()
        stopped: list[int] = []
        if info is not None:
            stopped = stop_pids(
                [
                    *((n.pid, kafka.MAIN_CLASS) for n in info.nodes),
                    (info.mqtt_pid, info.broker.marker),
                ]
            )
        if purge:
            self.state_path.unlink(missing_ok=True)
            brokers_data = (d for b in BROKERS.values() for d in b.data_dirs)
            for data in ("kafka-data", *brokers_data):
                shutil.rmtree(self.home / data, ignore_errors=True)
            for node in info.kafka_nodes if info else ():
                shutil.rmtree(self.node_home(node.node_id), ignore_errors=True)
        return stopped

    # One broker at a time, in place (same ports, same data).
    def stop_kafka(self) -> None:
        info = self._require_info()
        stop_pids([(node.pid, kafka.MAIN_CLASS) for node in info.nodes])

    def node_home(self, node_id: int) -> Path:
        """Node 1 lives in the stack's home (as a one-node stack); node N in `kafka-N/`."""
        return self.home if node_id == 1 else self.home / f"kafka-{node_id}"

    def _create_cluster(
        self,
        kafka_port: int | None,
        mqtt_port: int | None,
        progress: Progress,
        count: int,
        broker: MqttBroker,
    ) -> StackInfo:
        """The MQTT broker and `count` Kafka nodes, each a broker and a KRaft controller, formatted
        with one cluster id; replication factor 3 and min.insync.replicas 2 by default."""
        kafka_port = kafka_port or _env_port("PRESENCE_KAFKA_PORT")
        mqtt_port = mqtt_port or _env_port("PRESENCE_MQTT_PORT")
        first = ensure_free(kafka_port, "Kafka") if kafka_port else free_port()
        ports = [(first, free_port()), *((free_port(), free_port()) for _ in range(count - 1))]
        mport = ensure_free(mqtt_port, "MQTT") if mqtt_port else free_port()
        broker.install(progress)
        classpath = kafka.resolve_classpath(progress)
        self.home.mkdir(parents=True, exist_ok=True)
        cluster = tuple(kafka.Node(i, p, c) for i, (p, c) in enumerate(ports, start=1))
        uuid = kafka.cluster_id()
        started: list[tuple[int, str]] = []
        try:
            progress(f"starting {broker.title} on {HOST}:{mport}")
            mqtt_pid = self._run_mqtt(broker, mport, 0, False, started)
            procs = []
            for node in cluster:
                progress(f"starting Kafka node {node.node_id} on {HOST}:{node.port}")
                home = self.node_home(node.node_id)
                conf = kafka.prepare(
                    home, classpath, node.port, node.controller_port, None, node.node_id,
                    cluster, uuid,
                )  # fmt: skip
                proc = kafka.start(home, classpath, conf)
                started.append((proc.pid, kafka.MAIN_CLASS))
                procs.append(proc)
            bootstrap = ",".join(f"{HOST}:{n.port}" for n in cluster)
            kafka.wait_ready(
                bootstrap,
                lambda: all(p.poll() is None for p in procs),
                self.home / "kafka.log",
                brokers=count,
            )
        except BaseException:
            for pid, marker in started:
                stop_pid(pid, marker, timeout=10)
            raise
        info = StackInfo(
            home=str(self.home),
            kafka_bootstrap=bootstrap,
            kafka_port=cluster[0].port,
            kafka_controller_port=cluster[0].controller_port,
            kafka_pid=procs[0].pid,
            kafka_version=kafka.kafka_version(),
            mqtt_host=HOST,
            mqtt_port=mport,
            mqtt_pid=mqtt_pid,
            mqtt_broker_version=broker.version(),
            mqtt_broker=broker.name,
            started_at=time.time(),
            kafka_nodes=tuple(
                KafkaNodeInfo(n.node_id, n.port, n.controller_port, p.pid)
                for n, p in zip(cluster[1:], procs[1:], strict=True)
            ),
        )
        return self._record(info)

    def kill_kafka_node(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to one node (the fault tests: kill -9 a partition leader, the active
        controller; SIGSTOP one)."""
        node = next(n for n in self._require_info().nodes if n.node_id == node_id)
        if pid_running(node.pid, kafka.MAIN_CLASS):
            os.kill(node.pid, sig)

    def _spawn_node(self, info: StackInfo, node_id: int) -> subprocess.Popen[bytes]:
        node = next(n for n in info.nodes if n.node_id == node_id)
        cluster = tuple(kafka.Node(n.node_id, n.port, n.controller_port) for n in info.nodes)
        ensure_taken_by_nobody(node.port, f"Kafka node {node_id}", self.home)
        classpath = kafka.resolve_classpath()
        home = self.node_home(node_id)
        conf = kafka.prepare(
            home, classpath, node.port, node.controller_port, None, node_id, cluster
        )
        return kafka.start(home, classpath, conf)

    def _start_nodes(self, info: StackInfo, node_ids: list[int]) -> StackInfo:
        """Start these nodes of a cluster in place, then wait until every broker is up (a
        quorum needs two controllers: nodes are started together, not one after another)."""
        procs = {node_id: self._spawn_node(info, node_id) for node_id in node_ids}
        kafka.wait_ready(
            info.kafka_bootstrap,
            lambda: all(p.poll() is None for p in procs.values()),
            self.home / "kafka.log",
            brokers=len(info.nodes),
        )
        if 1 in procs:
            info = msgspec.structs.replace(info, kafka_pid=procs[1].pid)
        nodes = tuple(
            msgspec.structs.replace(n, pid=procs[n.node_id].pid) if n.node_id in procs else n
            for n in info.kafka_nodes
        )
        return self._record(msgspec.structs.replace(info, kafka_nodes=nodes))

    def start_kafka_node(self, node_id: int) -> StackInfo:
        """Start one stopped node of a cluster again, in place (its ports, its data), and wait
        until the cluster shows every broker."""
        return self._start_nodes(self._require_info(), [node_id])

    def start_kafka(self) -> StackInfo:
        info = self._require_info()
        if info.kafka_nodes:  # a cluster: every node that is not running
            down = [n.node_id for n in info.nodes if not pid_running(n.pid, kafka.MAIN_CLASS)]
            return self._start_nodes(info, down) if down else info
        ensure_taken_by_nobody(info.kafka_port, "Kafka", self.home)
        ensure_taken_by_nobody(info.kafka_controller_port, "Kafka's controller", self.home)
        classpath = kafka.resolve_classpath()
        secured = secure.kafka_secured(self.home, info.kafka_mtls_port) if info.secure else None
        conf = kafka.prepare(
            self.home, classpath, info.kafka_port, info.kafka_controller_port, secured
        )
        proc = kafka.start(self.home, classpath, conf)
        kafka.wait_ready(
            info.kafka_bootstrap,
            lambda: proc.poll() is None,
            self.home / "kafka.log",
            options=self._kafka_options(info.kafka_bootstrap, info.secure),
        )
        return self._record(msgspec.structs.replace(info, kafka_pid=proc.pid))

    def start_mqtt(self) -> StackInfo:
        """Start the stack's MQTT broker again, in place (its port, its data)."""
        info = self._require_info()
        ensure_taken_by_nobody(info.mqtt_port, "MQTT", self.home)
        pid = self._run_mqtt(info.broker, info.mqtt_port, info.mqtt_mtls_port, info.secure)
        return self._record(msgspec.structs.replace(info, mqtt_pid=pid))

    def _run_mqtt(
        self,
        broker: MqttBroker,
        port: int,
        mtls_port: int,
        secured: bool,
        started: list[tuple[int, str]] | None = None,
    ) -> int:
        """Write the config, start the broker, wait for a real CONNACK; the pid to record (also
        in `started`: stopped again if the rest of the stack fails to start)."""
        if not secured:
            pid = broker.run(self.home, port)
            if started is not None:
                started.append((pid, broker.marker))
            return pid
        assert isinstance(broker, Mosquitto)  # `up` refuses --secure with another broker
        proc = broker.start(self.home, port, secured=secure.mqtt_secured(self.home, mtls_port))
        if started is not None:
            started.append((proc.pid, broker.marker))
        wait_for_connack(
            broker.title,
            port,
            lambda: proc.poll() is None,
            self.home / broker.log_name,
            login=secure.mqtt_login(self.home),
        )
        return broker.running_pid(self.home, proc)

    def _require_info(self) -> StackInfo:
        info = self.info()
        if info is None:
            raise StackError(f"no stack is up in {self.home}; run `presence stack up`")
        return info

    def _record(self, info: StackInfo) -> StackInfo:
        self.state_path.write_bytes(msgspec.json.format(msgspec.json.encode(info)))
        return info
