"""The demo detector's tools: its synthetic pictures and its training from scratch.

Tools, not the runtime: the image and the server carry none of this. The trained weights
live where the server reads them, ``predictor/demo/model/``.

    python -m demo.synthetic   pictures and COCO annotations, from a seed
    python -m demo.train       training from scratch on those pictures
"""
