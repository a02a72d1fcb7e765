"""`invisible demo`: the embedded default, on this machine with nothing but the install.

1. Creates a CA and certificates for three institutions and a coordinator
   in a temporary folder, and a config per party on free loopback ports,
   with the bundled sample tables.
2. Starts the three party nodes as separate processes.
3. Waits until every node answers its health check over mutual TLS.
4. Runs a connectivity job: every pair of nodes exchanges ephemeral X25519
   keys over mTLS gRPC and confirms it derived the same secret.
5. Prints each party's job record, stops the nodes, and exits non-zero if
   anything failed.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from invisible.errors import InvisibleError
from invisible.jobs.federation import Federation
from invisible.jobs.local import NodeProcesses, write_local_federation
from invisible.samples import SAMPLE_COLUMNS, sample_datasets

STARTUP_TIMEOUT_S = 20.0


def run_demo() -> int:
    started = time.perf_counter()
    parties = list(SAMPLE_COLUMNS)
    with tempfile.TemporaryDirectory(prefix="invisible-demo-") as folder:
        layout = write_local_federation(Path(folder), parties, sample_datasets())
        print(f"[1/4] certificates and configs for {', '.join(parties)} in {folder}")
        nodes = NodeProcesses(layout).start()
        try:
            with Federation.from_config(layout.coordinator_config) as federation:
                health = federation.health(timeout_s=STARTUP_TIMEOUT_S)
                nodes.check_alive()
                print("[2/4] three party nodes serving over mutual TLS:")
                for party, info in health.items():
                    print(f"      {party:<9} {layout.addresses[party]:<16} "
                          f"datasets: {', '.join(info.datasets)}")
                result = federation.run("connectivity")
                print(f"[3/4] connectivity job {result.job_id}: every pair agreed on a "
                      f"fresh X25519 secret in {result.seconds * 1000:.0f} ms")
                print("[4/4] job records:")
                print(f"      {'party':<9} {'peers confirmed':<18} {'msgs out/in':>11} "
                      f"{'bytes out/in':>13} {'ms':>6}")
                for party, status in result.statuses.items():
                    record = status.record
                    peers = ",".join(status.output["peers_confirmed"])
                    print(f"      {party:<9} {peers:<18} "
                          f"{record.messages_sent:>5}/{record.messages_received:<5} "
                          f"{record.bytes_sent:>6}/{record.bytes_received:<6} "
                          f"{record.duration_s * 1000:>6.1f}")
        except InvisibleError as exc:
            print(f"demo failed: {exc}", file=sys.stderr)
            for party in parties:
                tail = nodes.log_tail(party)
                if tail:
                    print(f"  {party} log: {tail}", file=sys.stderr)
            return 1
        finally:
            codes = nodes.stop()
        if any(codes.values()):
            print(f"demo failed: a node exited uncleanly: {codes}", file=sys.stderr)
            return 1
    print(f"demo finished in {time.perf_counter() - started:.1f} s; all nodes stopped cleanly")
    return 0
