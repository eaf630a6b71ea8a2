"""Generated Open Inference Protocol gRPC code; regenerate with scripts/gen-protos.sh."""
