"""The party node: configuration, dataset registry, job executor, gRPC server."""
