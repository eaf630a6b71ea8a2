"""KServe's edge: where a request enters the server, in the order it travels.

    rest_middleware.py ASGI middleware: request id, body limit, gzip, disconnects, catch-all
    rest_routes.py     V1 predict, V2 infer and metadata over REST, every error as {"error"}
    grpc_servicer.py   KServe's gRPC servicer with our ModelInfer and ModelMetadata
    served.py          what both transports share: request id, served model, refusal log
    repository.py      --model_repository: models loaded and unloaded at run time (KServe's
                       registry); repository_routes.py, grpc_repository.py: load, unload, index
    shutdown.py        SIGTERM: not ready, drain REST and gRPC together
    compat.py          installs all of the above into KServe's ModelServer (every patch)

A KServe upgrade is checked here, in :mod:`predictor.model` (the ``kserve.Model``
subclass) and in :mod:`predictor.errors` (KServe's error classes); nothing under
:mod:`predictor.protocol` or :mod:`predictor.pipeline` imports kserve except the generated
gRPC messages that :mod:`predictor.protocol.grpc_v2` reads.
"""
