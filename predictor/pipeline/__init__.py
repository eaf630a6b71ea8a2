"""The model side, in the order an image travels; it knows no protocol and no KServe.

    decode.py       bytes -> checked RGB pixels (format allow-list, size limits, EXIF)
    images.py       a request's images decoded in parallel, under its pixel budget
    batcher.py      images from many requests -> batches, deadlines, queue limits
    engine.py       a batch through the detector on one device (CPU or CUDA)
    cpu_engine.py   on a CPU: the dense parts (backbone, head) put on OpenVINO, checked
    ov_graph.py     torch.export -> OpenVINO graph, compiled per shape, run per image
    ov_shapes.py    which graph runs each input shape; compiles kept off the request path
    rcnn_graph.py   the R-CNN family's box head as a graph, dynamic in the regions
    ov_cache.py     the private cache folder: exported graphs and the checks' verdicts
    int8.py         the dense graph quantized on the user's pictures (NNCF)
    compiled.py     a compiled model folder run with OpenVINO and numpy alone (no torch)
    precision.py    fp32 / bf16 / fp16 / int8: what the CPU has, the load-time check
    anchors.py      anchors computed once per input shape
    bn_fold.py      BatchNorm folded into the convolution before it
    loader.py       a model folder -> a torchvision detector with its weights
    default_boxes.py  SSD/SSDlite default-box sizes from config.json
    detections.py   raw model output -> the detections a request asked for
"""
