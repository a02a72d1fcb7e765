"""A party node: its certificate, datasets, mailbox, peers and gRPC server.

Everything the node needs is passed in through its :class:`PartyConfig`;
there is no global state, so tests run several nodes in one process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from invisible.errors import ConfigError, InvisibleError, ProtocolError
from invisible.jobspec import JobSpec, spec_digest
from invisible.kinds.alignments import AlignmentStore
from invisible.kinds.registry import AnyKind, kinds_by_name
from invisible.metering.ledger import Ledger
from invisible.metering.meter import LedgerStore, Meter, NullLedgerStore
from invisible.metering.metrics import NodeMetrics
from invisible.metering.policy import usable_columns
from invisible.metering.startup import open_node_ledger
from invisible.net.client import NodeClient
from invisible.net.grpc_channel import GrpcChannel
from invisible.net.mailbox import Mailbox
from invisible.net.pki import Identity, Role
from invisible.net.server import (
    ApprovalsServicer,
    ExchangeServicer,
    HealthServicer,
    JobsServicer,
    build_server,
)
from invisible.net.tls import OnRevoked, Revocations, TlsMaterial, days_left
from invisible.node.config import PartyConfig, load_party_config
from invisible.node.datasets import DatasetRegistry
from invisible.node.executor import JobExecutor
from invisible.node.witness import (
    HEAD_JOB,
    HEAD_STEP,
    MAX_PROOF_ENTRIES,
    PROOF_INTERVAL_S,
    PROVE_STEP,
    HeadAnnouncer,
    HeadWitness,
    decode_prove,
    encode_prove,
)
from invisible.protocols.channel import Channel

log = logging.getLogger(__name__)


def load_node_tls(config: PartyConfig, role: Role,
                  on_revoked: OnRevoked | None = None) -> tuple[TlsMaterial, Revocations]:
    """What a node checks of its config and certificate before anything else (`invisible
    node check` checks the same): it serves as a party or a dealer, with a certificate of
    the CA in that role issued to the config's id and not on the CA's revocation list, and
    a dealer holds no data. ConfigError naming the first that fails."""
    if role not in (Role.PARTY, Role.DEALER):
        raise ConfigError(f"a node serves as a party or a dealer, not as a {role.value}")
    tls = TlsMaterial.load(config.tls, expected_role=role)
    if tls.identity.party_id != config.party_id:
        raise ConfigError(f"{config.source}: party id is '{config.party_id}' but certificate "
                          f"{config.tls.cert} was issued to '{tls.identity.party_id}'")
    if role is Role.DEALER and config.datasets:
        raise ConfigError(f"{config.source}: a dealer holds no data; remove its datasets")
    revocations = Revocations(tls.ca_pem, config.tls.crl, on_revoked)
    revocations.refuse_own(config.tls)
    return tls, revocations


class PartyNode:
    """Load everything first (so a bad config fails before binding), then serve."""

    def __init__(self, config: PartyConfig, kinds: dict[str, AnyKind] | None = None,
                 role: Role = Role.PARTY, *, accept_broken_ledger: bool = False) -> None:
        """`accept_broken_ledger`: start even on a damaged ledger, recording that choice in
        it (see :mod:`invisible.metering.startup`); by default a ConfigError refuses to."""
        self.config = config
        self.role = role
        self.tls, self.revocations = load_node_tls(config, role, self._revoked_call)
        self.alignments = AlignmentStore(config.alignments_dir)
        self.datasets = DatasetRegistry.load(config.datasets, self.alignments)
        self.mailbox = Mailbox(config.limits.max_message_bytes)
        kinds = kinds or kinds_by_name()
        self.metrics = NodeMetrics(kinds)
        self.ledger: Ledger | None = None
        store: LedgerStore
        if config.ledger.store == "none":
            store = NullLedgerStore(config.party_id)
        else:
            self.ledger = store = open_node_ledger(config.ledger.path, config.party_id,
                                                   config.ledger.signing_key,
                                                   accept_broken=accept_broken_ledger)
            interrupted = self.ledger.mark_interrupted()
            if interrupted:
                log.warning("%d job(s) open when the node last stopped are marked interrupted",
                            len(interrupted))
        # Connections last: a node refused at start (a broken ledger) leaves none open.
        self.clients: dict[str, NodeClient] = {}
        self._update_clients(config)
        self._reloading = threading.Lock()
        self._serving = False
        policies = {d: c.policy for d, c in config.datasets.items()}
        self.meter = Meter(config.party_id, store, policies, self.metrics, config.node_policy)
        self.witness = HeadWitness(self.meter, self._ask_proof)
        self.executor = JobExecutor(
            config.party_id, kinds, self.datasets, self._open_channel,
            config.results_dir, self.meter, run_deadline_s=2 * config.limits.rpc_timeout_s,
            announce_head=self._announce_head, expect_heads=self.witness.expect,
            check_peers=self.witness.check_peers,
            output_retention_s=config.limits.output_retention_s,
            refused_burst=config.limits.refused_burst, refused_per_s=config.limits.refused_per_s,
            alignments=self.alignments, dealers=tuple(config.dealers),
            revoked=self.revocations.revoked_now,
        )
        self.announcer: HeadAnnouncer | None = None
        if self.ledger is not None:
            ledger = self.ledger
            self.announcer = HeadAnnouncer(
                ledger.head, self.clients, min(5.0, config.limits.rpc_timeout_s),
                lambda seq: list(ledger.entries(after_seq=seq - 1)))
        self._health = HealthServicer(lambda: self.tls, self.datasets.ids, self._usable_columns)
        self.metrics.certificate_days_left.labels("node").set_function(
            lambda: days_left(self.tls.cert_pem))
        self.metrics.certificate_days_left.labels("ca").set_function(
            lambda: days_left(self.tls.ca_pem))
        self._server, self.port = build_server(
            lambda: self.tls, config.listen, health=self._health,
            exchange=ExchangeServicer(
                self.mailbox, lambda: set(self.clients),
                {HEAD_STEP: self.witness.record, PROVE_STEP: self._prove},
                stream_timeout_s=config.limits.rpc_timeout_s,
            ),
            jobs=JobsServicer(self.executor),
            approvals=ApprovalsServicer(self.executor.approvals),
            revocations=self.revocations,
        )
        self._stopped = threading.Event()
        self.metrics_port: int | None = None
        self._send_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="invisible-send")
        #: Requests for chain proofs (at most one per peer per PROOF_INTERVAL_S).
        self._proof_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="invisible-proof")

    @property
    def party_id(self) -> str:
        return self.config.party_id

    def _update_clients(self, config: PartyConfig, reconnect: bool = False) -> list[str]:
        """Connect to the peers and dealers `config` names, keeping the connections whose
        address is unchanged (unless `reconnect`: a renewed certificate); the peers that
        are new or moved (a removed one is closed). The dict is updated in place: channels
        and the announcer hold it."""
        wanted = {peer: (address, role)
                  for peers, role in ((config.peers, Role.PARTY), (config.dealers, Role.DEALER))
                  for peer, address in peers.items()}
        changed = []
        for peer in [p for p in self.clients if p not in wanted]:
            self.clients.pop(peer).close()
        for peer, (address, role) in wanted.items():
            old = self.clients.get(peer)
            if old is not None and old.address == address and old.role is role \
                    and not reconnect:
                continue
            self.clients[peer] = NodeClient(self.tls, peer, address, role=role,
                                            timeout_s=config.limits.rpc_timeout_s)
            if old is not None:
                old.close()
            changed.append(peer)
        return changed

    def _usable_columns(self, caller: Identity) -> dict[str, list[str]]:
        """For a requester's health call: each dataset's columns its policy lets it use."""
        if caller.role is not Role.COORDINATOR:
            return {}
        return {dataset_id: [f"{c}:{config.columns[c]}" for c in usable_columns(
                    self.meter.policies.get(dataset_id), caller.party_id, list(config.columns))]
                for dataset_id, config in self.config.datasets.items()}

    def _revoked_call(self, caller: Identity, serial: int, first: bool) -> None:
        if first:  # later calls are counted in the metrics, not logged one by one
            log.warning("refused a call from %s: its certificate (serial %x) is revoked",
                        caller, serial)
        self.meter.note_revoked(caller.party_id, caller.role.value, serial, first)

    def reload(self) -> list[str]:
        """Read the config file again and apply its peers, dealers and policies (the node's
        and each dataset's) without a restart: what `SIGHUP` to `invisible node serve` does.
        Returns the peers that are new or moved. The CA's revocation list is read again too
        (it is also read whenever its file changes), and a renewed certificate (new files,
        or the same files rewritten, for the same identity from the same CA) is served to
        every new connection and used for every call from here on. Anything else changed
        (listen, the CA, datasets, ledger, limits) needs a restart, and a warning says so.

        The new file is read and checked whole before anything changes: a bad file leaves
        the node as it was (a ConfigError says why).
        """
        with self._reloading:
            fresh = load_party_config(self.config.source)
            old = self.config
            self.revocations.load()  # the CA's list, read again even if the file is as it was
            if fresh.party_id != old.party_id:
                raise ConfigError(f"{fresh.source}: party id changed from '{old.party_id}' to "
                                  f"'{fresh.party_id}'; that needs a restart")
            unknown = sorted(set(fresh.datasets) ^ set(old.datasets))
            if unknown:
                raise ConfigError(f"{fresh.source}: dataset(s) {', '.join(unknown)} added or "
                                  "removed; that needs a restart")
            renewed = self._renewed(fresh)
            policies = {d: c.policy for d, c in fresh.datasets.items()}
            self.meter.policies, self.meter.node_policy = policies, fresh.node_policy
            if renewed is not None:
                self.tls = renewed
                log.info("node %s now presents its renewed certificate %s (%.0f days left)",
                         self.party_id, fresh.tls.cert, days_left(renewed.cert_pem))
            changed = self._update_clients(fresh, reconnect=renewed is not None)
            pending = [name for name, a, b in (
                ("listen", old.listen, fresh.listen),
                ("tls ca or crl", (old.tls.ca, old.tls.crl), (fresh.tls.ca, fresh.tls.crl)),
                ("limits", old.limits, fresh.limits), ("ledger", old.ledger, fresh.ledger),
                ("metrics", (old.metrics_listen, old.metrics_tls),
                 (fresh.metrics_listen, fresh.metrics_tls)),
                ("results_dir", old.results_dir, fresh.results_dir),
                ("datasets", {d: (c.path, c.database, c.columns, c.missing)
                              for d, c in old.datasets.items()},
                 {d: (c.path, c.database, c.columns, c.missing)
                  for d, c in fresh.datasets.items()}),
            ) if a != b]
            if pending:
                log.warning("%s: %s changed; a restart applies that", fresh.source,
                            ", ".join(pending))
            self.config = fresh
            log.info("node %s reloaded %s: peers and policies applied (%s new or moved)",
                     self.party_id, fresh.source, ", ".join(changed) or "none")
        if self._serving:  # a node not started yet announces to every peer when it starts
            self._announce_head([p for p in changed if p in fresh.peers and self.clients[p].known])
        return changed

    def _renewed(self, fresh: PartyConfig) -> TlsMaterial | None:
        """The node's certificate and key as `fresh` names them, if they differ from those
        in use and may replace them: the same identity, from the same CA, not revoked
        (ConfigError otherwise, and nothing changes)."""
        material = TlsMaterial.load(fresh.tls, expected_role=self.role)
        if material.ca_pem != self.tls.ca_pem:
            raise ConfigError(f"{fresh.source}: the CA certificate {fresh.tls.ca} changed; "
                              "that needs a restart")
        if material.identity != self.tls.identity:
            raise ConfigError(f"{fresh.source}: certificate {fresh.tls.cert} is issued to "
                              f"{material.identity}; this node is {self.tls.identity}")
        self.revocations.refuse_own(fresh.tls)
        if (material.cert_pem, material.key_pem) == (self.tls.cert_pem, self.tls.key_pem):
            return None
        return material

    @property
    def address(self) -> str:
        host = self.config.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    def _announce_head(self, peers: Sequence[str]) -> None:
        if self.announcer is not None:
            self.announcer.announce(peers)

    def _ask_proof(self, peer: str, seq: int) -> None:
        """Ask `peer` to prove that its chain extends its head `seq` witnessed here."""
        def ask() -> None:
            try:
                self.clients[peer].deliver(HEAD_JOB, PROVE_STEP, encode_prove(seq),
                                           timeout_s=min(5.0, self.config.limits.rpc_timeout_s))
            except InvisibleError as exc:
                log.warning("could not ask party '%s' for a chain proof: %s", peer, exc)

        try:  # never on the jobs' send pool: a peer must not be able to fill that
            self._proof_pool.submit(ask)
        except RuntimeError:  # the node is stopping
            pass

    def _prove(self, sender: str, payload: bytes) -> None:
        """A peer asks for the proof that this chain extends a head it witnessed."""
        seq = decode_prove(sender, payload)
        head, _ = self.ledger.head() if self.ledger is not None else (0, "")
        if not 0 < seq <= head or head - seq >= MAX_PROOF_ENTRIES:
            log.warning("party '%s' asked for a proof from head %d; this chain's head is %d, "
                        "so it cannot be given", sender, seq, head)
            raise ProtocolError(f"no proof from head {seq} can be given (this chain's head "
                                f"is {head}; at most {MAX_PROOF_ENTRIES} entries are sent)")
        if self.announcer is not None and not self.announcer.prove(sender, seq):
            log.info("party '%s' asked for a chain proof again within %g s; not sent", sender,
                     PROOF_INTERVAL_S)

    def _open_channel(self, spec: JobSpec) -> Channel:
        unknown = [p for p in spec.parties if p != self.party_id and p not in self.clients]
        if unknown:
            raise ConfigError(
                f"job '{spec.job_id}' names {', '.join(repr(p) for p in unknown)}, "
                f"not a configured peer of '{self.party_id}'"
            )
        channel = GrpcChannel(
            self.party_id, spec.job_id, spec.parties, mailbox=self.mailbox,
            clients=self.clients, timeout_s=self.config.limits.rpc_timeout_s, pool=self._send_pool,
        )
        channel.binding = spec_digest(spec)
        return channel

    def start(self) -> PartyNode:
        self._server.start()
        self._serving = True
        if self.config.metrics_listen:
            self.metrics_port = self.metrics.serve(self.config.metrics_listen,
                                                   self.config.metrics_tls)
            host = self.config.metrics_listen.rpartition(":")[0]
            if self.config.metrics_tls is None and host not in ("127.0.0.1", "localhost",
                                                                "::1", "[::1]"):
                log.warning("metrics served over plain HTTP on %s, beyond this machine: give "
                            "[metrics] cert and key to serve them over HTTPS",
                            self.config.metrics_listen)
        log.info("node %s serving on %s", self.tls.identity, self.address)
        for dataset_id, dataset_config in self.config.datasets.items():  # the operator's log
            dataset = self.datasets.get(dataset_id)
            log.info("dataset %s (%s): %d rows; %s", dataset_id, dataset_config.describe(),
                     dataset.rows, ", ".join(f"{c} {t}" for c, t in
                                             dataset_config.columns.items()))
        # Peers compare it with what they countersigned: a cut or rewritten chain shows now
        # (to those whose address is known: the others when it is, see `reload`).
        self._announce_head([p for p, c in self.clients.items()
                             if p in self.config.peers and c.known])
        return self

    def stop(self, grace_s: float = 2.0) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._health.stopping = True
        if self.announcer is not None:
            self.announcer.stop()
        self._server.stop(grace_s).wait(grace_s + 1.0)
        self.executor.stop(grace_s)  # jobs record their end while the ledger is open
        for client in self.clients.values():
            client.close()
        self._send_pool.shutdown(wait=False, cancel_futures=True)
        self._proof_pool.shutdown(wait=False, cancel_futures=True)
        self.metrics.stop()
        if self.ledger is not None:
            self.ledger.close()

    def __enter__(self) -> PartyNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
