"""What an institution's operator runs beside a node: certificate requests, and checks.

- :func:`pki_request` and :func:`pki_sign`: a key and certificate signing request made
  where the key stays, signed by whoever holds the federation's CA after showing what it
  will sign (`invisible pki request`, `invisible pki sign`).
- :func:`pki_revoke`: a certificate added to the CA's revocation list, after showing
  whose it is (`invisible pki revoke`); nodes refuse it from the moment they read the list.
- :func:`serving` and :func:`reload_node`: a serving node's pid beside its ledger, and
  `invisible node reload`, which signals that node to read its config again.
- :func:`probe_node`: the node on this machine asked whether it serves, over its own port
  with its own certificate (`invisible node probe`: a container's health check).
- :func:`check_node`: everything a node would load at start (its config, certificate,
  datasets and policies), loaded and described without serving (`invisible node check`).

The values of a dataset are read (to check their types) and never shown; its rows and
columns are, to the operator of the node that holds it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509

from invisible.errors import ConfigError
from invisible.net.pki import (
    CertificateAuthority,
    Identity,
    Role,
    identity_from_certificate,
    read_request,
    write_request,
)

#: A certificate with fewer days left than this is flagged by `check_node`.
RENEW_WITHIN_DAYS = 30


def pki_request(identity: Identity, out: Path) -> list[str]:
    key_path, csr_path = write_request(out, identity)
    request = read_request(csr_path.read_bytes(), str(csr_path))
    return [f"key {key_path} (mode 0600: it stays on this machine) and request {csr_path} "
            f"for {identity}; public key SHA-256 {request.fingerprint}",
            f"send {csr_path.name} to whoever holds the federation's CA, and compare this "
            "fingerprint with the one `invisible pki sign` shows them"]


def pki_sign(source: Path, ca_dir: Path, out: Path | None, days: int, yes: bool) -> int:
    """Sign the request `source` with the CA in `ca_dir`, asking first unless `yes`."""
    try:
        pem = source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror}") from None
    request = read_request(pem, str(source))
    out = out or source.with_suffix(".pem")
    if out.exists():
        raise ConfigError(f"{out} exists: give another --out (a certificate is never replaced)")
    ca = CertificateAuthority.load(ca_dir)
    print(f"request {source}: {request.identity}, valid {days} days from now, "
          f"public key SHA-256 {request.fingerprint}")
    if not _confirm("sign it?", yes):
        print("not signed")
        return 1
    out.write_bytes(ca.sign_request(request, days))
    print(f"certificate for {request.identity} written to {out}")
    return 0


def _confirm(question: str, yes: bool) -> bool:
    """True if `yes`, or if the operator answers yes at a terminal (refused elsewhere)."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise ConfigError("nothing done: confirm with --yes when not asked at a terminal")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def pki_revoke(ca_dir: Path, certificate: Path | None, serial: str | None, reason: str,
               yes: bool) -> int:
    """Revoke `certificate` (or the certificate numbered `serial`, hex) in the CA's list
    ``ca.crl`` in `ca_dir`, asking first unless `yes`."""
    if (certificate is None) == (serial is None):
        raise ConfigError("name the certificate to revoke, or give --serial (not both)")
    ca = CertificateAuthority.load(ca_dir)
    if certificate is not None:
        try:
            cert = x509.load_pem_x509_certificate(certificate.read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read {certificate}: {exc.strerror}") from None
        except ValueError:
            raise ConfigError(f"not a PEM certificate: {certificate}") from None
        try:
            cert.verify_directly_issued_by(ca.certificate)
        except Exception:
            raise ConfigError(f"{certificate} was not issued by the CA in {ca_dir}") from None
        number = cert.serial_number
        told = (f"{certificate}: {identity_from_certificate(cert)}, serial {number:x}, "
                f"valid until {cert.not_valid_after_utc:%Y-%m-%d}")
    else:
        try:
            number = int(str(serial), 16)
        except ValueError:
            raise ConfigError(f"--serial {serial!r} is not a hexadecimal number") from None
        told = f"the certificate with serial {number:x}"
    print(f"revoke {told} (reason: {reason})")
    if not _confirm("revoke it?", yes):
        print("not revoked")
        return 1
    path = ca.revoke(ca_dir, number, reason)
    print(f"revoked: {path} now lists it; copy {path.name} to every node (its [tls] crl), "
          "which refuses the certificate from the moment it reads the file (within a second "
          "of the file changing, or at `invisible node reload`)")
    return 0


def check_node(config_path: Path, role: Role) -> list[str]:
    """What the node at `config_path` would load at start, checked; a ConfigError names the
    first thing that would stop it."""
    from invisible.net.tls import days_left
    from invisible.node.config import load_party_config
    from invisible.node.datasets import DatasetRegistry
    from invisible.node.node import load_node_tls

    config = load_party_config(config_path)
    tls, revocations = load_node_tls(config, role)
    left = days_left(tls.cert_pem)
    if left <= 0:
        raise ConfigError(f"certificate {config.tls.cert} has expired")
    lines = [f"{config.source}: {tls.identity}, listening on {config.listen}",
             f"certificate {config.tls.cert}: {left:.0f} days left"
             + (" (renew it soon)" if left < RENEW_WITHIN_DAYS else ""),
             f"CA certificate {config.tls.ca}: {days_left(tls.ca_pem):.0f} days left",
             revocations.describe(),
             f"peers: {', '.join(f'{p} {a}' for p, a in config.peers.items()) or 'none'}",
             f"dealers: {', '.join(f'{d} {a}' for d, a in config.dealers.items()) or 'none'}"]
    registry = DatasetRegistry.load(config.datasets)
    for dataset_id, dataset_config in config.datasets.items():
        dataset = registry.get(dataset_id)
        columns = ", ".join(f"{c} {t}" for c, t in dataset_config.columns.items())
        policy = dataset_config.policy
        rules = ("no policy: every job refused" if policy is None else
                 f"{len(policy.allow)} allow rule(s), k = {policy.min_rows}")
        lines.append(f"dataset {dataset_id}: {dataset.rows} rows; {columns}; {rules}")
    lines.append("jobs without data: " + ("refused (no [policy])" if config.node_policy is None
                                          else "allowed by [policy]"))
    ledger = config.ledger
    if ledger.store == "sqlite" and not ledger.signing_key.exists():
        raise ConfigError(f"the ledger signing key {ledger.signing_key} is missing")
    lines.append(f"ledger {ledger.path}" + (" (none: nothing is recorded)"
                                            if ledger.store == "none" else ""))
    return lines


def _pid_file(ledger: Path) -> Path:
    return ledger.with_name(ledger.name + ".pid")


@contextlib.contextmanager
def serving(ledger: Path) -> Iterator[None]:
    """While a node serves: its pid in ``<ledger>.pid`` (on the node's state volume, beside
    its ledger), for `invisible node reload`; removed when it stops."""
    path, mine = _pid_file(ledger), f"{os.getpid()}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(mine)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if path.read_text() == mine:
                path.unlink()


def reload_node(config_path: Path) -> str:
    """Ask the node serving `config_path` on this machine to read its config again (SIGHUP):
    the pid beside its ledger, checked to be an `invisible node serve` of that config (a
    pid left by a node that died may name another process by now)."""
    from invisible.node.config import load_party_config

    config = load_party_config(config_path)
    path = _pid_file(config.ledger.path)
    try:
        pid = int(path.read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        raise ConfigError(f"no node serving {config.source} runs on this machine (no "
                          f"{path.name} with a running process beside its ledger)") from None
    if b"serve" not in command or not any(
            part.endswith(config.source.name.encode()) for part in command):
        raise ConfigError(f"{path} names pid {pid}, which is not a node serving "
                          f"{config.source} (left by a node that stopped?)")
    os.kill(pid, signal.SIGHUP)
    return (f"asked node '{config.party_id}' (pid {pid}) to read {config.source} again; its "
            "log says what it applied, or why it refused the file")


def probe_node(config_path: Path, role: Role, timeout_s: float) -> str:
    """Ask the node that serves `config_path` on this machine over its own port, with its
    own certificate, whether it serves (the Health call every node answers); a container's
    health check. ConfigError, or an error naming why the call failed, if it does not."""
    from invisible.net.client import NodeClient
    from invisible.net.tls import TlsMaterial
    from invisible.node.config import load_party_config

    config = load_party_config(config_path)
    host, _, port = config.listen.rpartition(":")
    if port in ("", "0"):
        raise ConfigError(f"{config.source}: listen {config.listen} names no port to probe")
    # a node listening on every interface answers on loopback
    local = "127.0.0.1" if host in ("0.0.0.0", "", "[::]", "::") else host  # noqa: S104
    tls = TlsMaterial.load(config.tls, expected_role=role)
    with NodeClient(tls, config.party_id, f"{local}:{port}", role=role,
                    timeout_s=timeout_s) as client:
        info = client.health(timeout_s=timeout_s)
    if not info.serving:
        raise ConfigError(f"node '{config.party_id}' answers but is stopping")
    return (f"node '{info.party_id}' ({info.role}) serves on {local}:{port}; certificate "
            f"{info.certificate_days_left:.0f} days left")
