"""The demo detector: its synthetic pictures, its training, and its trained weights.

Tools, not the runtime: the server imports nothing from here except the path of the
weights folder (``model/``), which it serves when ``--model_dir`` is missing or empty.

    python -m predictor.demo.synthetic   pictures and COCO annotations, from a seed
    python -m predictor.demo.train       training from scratch on those pictures
"""
