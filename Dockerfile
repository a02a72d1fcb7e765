# A party node (or a dealer) of invisible: `invisible node serve` as a non-root user.
#
#   docker build -t invisible-node .
#   docker run -v $PWD/bank:/etc/invisible:ro -v bank-state:/var/lib/invisible \
#              -p 7441:7441 invisible-node
#
# /etc/invisible (read-only): node.toml, the certificates and keys (pki/), the data (data/).
# /var/lib/invisible (a volume to back up): the ledger and its pid file, results,
# alignments and models. The health check is the node's own Health call over mutual TLS,
# made with its own certificate (`invisible node probe`). deploy/compose.yaml runs three
# institutions, a dealer and a requester with it.
FROM python:3.11-slim

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/invisible \
        --create-home invisible
WORKDIR /opt/invisible
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir '.[postgres]' && rm -rf /root/.cache

USER invisible
VOLUME ["/var/lib/invisible"]
EXPOSE 7441
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["invisible", "node", "probe", "--config", "/etc/invisible/node.toml"]
ENTRYPOINT ["invisible", "node", "serve"]
CMD ["--config", "/etc/invisible/node.toml"]
