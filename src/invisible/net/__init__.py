"""Transport: PKI, mutual TLS, the gRPC service and client, the in-process channel."""
