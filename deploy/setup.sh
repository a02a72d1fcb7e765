#!/bin/sh
# Certificates and data for deploy/compose.yaml, on one host (a trial): a CA in deploy/ca
# (never mounted into a container), and in each node's folder only its own files.
# On separate hosts, each institution makes its own key instead (docs/operators.md).
#
#   sh deploy/setup.sh            # from the repository, with `invisible` on PATH
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=$(command -v python || command -v python3)
samples=$("$python" -c 'import invisible.samples, pathlib; print(pathlib.Path(invisible.samples.__file__).parent)')
if [ -e "$here/ca/ca.key" ]; then
    echo "deploy/ca already holds a CA: remove deploy/ca and deploy/*/pki to start again" >&2
    exit 1
fi
invisible pki init "$here/ca" --parties bank,hospital,telco --dealers dealer --coordinators office
for node in bank hospital telco dealer; do
    mkdir -p "$here/$node/pki"
    cp "$here/ca/ca.pem" "$here/ca/ca.crl" "$here/ca/$node.pem" "$here/ca/$node.key" \
       "$here/ca/$node-ledger.key" "$here/ca/$node-ledger.pub" "$here/$node/pki/"
    cp "$here/federation.toml" "$here/$node/"
done
for party in bank hospital telco; do
    mkdir -p "$here/$party/data"
    cp "$samples/$party.csv" "$here/$party/data/customers.csv"
done
mkdir -p "$here/office/pki" "$here/office/keys"
cp "$here/ca/ca.pem" "$here/ca/office.pem" "$here/ca/office.key" "$here/office/pki/"
cp "$here/ca"/*-ledger.pub "$here/office/keys/"
cp "$here/federation.toml" "$here/office/"
# the containers run as uid 10001: their keys must be readable by it, by no one else
chown -R 10001:10001 "$here"/*/pki 2>/dev/null || echo "note: run as root to give the keys to uid 10001" >&2
echo "ready: docker compose -f deploy/compose.yaml up -d --build"
