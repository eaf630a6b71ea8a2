"""``make demo``: detections on freshly drawn pictures, as annotated PNGs.

Uses the server at ``--url`` when one answers there (``make run`` in another
terminal); otherwise starts ``python -m predictor`` with the embedded demo detector on
127.0.0.1 for the length of the demo. Pictures come from the synthetic generator with
a seed the detector never trained on; each is sent through the project's client, drawn
with its boxes, labels and scores, and saved under ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL_DIR = REPO / "predictor" / "demo" / "model"
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

import launch  # noqa: E402
from client import DetectionClient, ServerUnreachable  # noqa: E402
from client.draw import draw_detections  # noqa: E402
from client.evaluate import box_iou  # noqa: E402
from demo.synthetic import CLASSES, make_sample, random_size  # noqa: E402


def _reachable(url: str) -> bool:
    try:
        with DetectionClient(url, model="detector", timeout=2, retries=0) as client:
            return client.health().ready
    except ServerUnreachable:
        return False
    except Exception:
        return False


@contextlib.contextmanager
def _server(url: str | None, model: str) -> Iterator[str]:
    """Yields the base URL of a ready server (started here when none answers)."""
    if url and _reachable(url):
        print(f"using the server at {url}")
        yield url
        return
    log_dir = REPO / "out"
    print(f"starting the demo detector on 127.0.0.1 (log under {log_dir})")
    server = launch.start("predictor", ["--model_dir", str(DEMO_MODEL_DIR)], log_dir,
                          model_name=model, timeout=180)
    try:
        yield server.url
    finally:
        server.stop()


def montage(pictures: list[Image.Image], columns: int = 3, gap: int = 4) -> Image.Image:
    """All pictures on one sheet, row by row, for a single look."""
    rows = [pictures[i:i + columns] for i in range(0, len(pictures), columns)]
    width = max(sum(p.width for p in row) + gap * (len(row) - 1) for row in rows)
    height = sum(max(p.height for p in row) for row in rows) + gap * (len(rows) - 1)
    sheet = Image.new("RGB", (width, height), "white")
    y = 0
    for row in rows:
        x = 0
        for pic in row:
            sheet.paste(pic, (x, y))
            x += pic.width + gap
        y += max(p.height for p in row) + gap
    return sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--model", default="detector")
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--protocol", choices=("v1", "v2", "grpc"), default="v2")
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=REPO / "out" / "demo")
    args = parser.parse_args(argv)

    import numpy as np

    args.out.mkdir(parents=True, exist_ok=True)
    pictures = []
    for i in range(args.count):
        rng = np.random.default_rng([args.seed, i])
        size = (320, 320) if i % 2 == 0 else random_size(rng)
        pictures.append(make_sample(rng, size))
    try:
        with _server(args.url, args.model) as base, \
                DetectionClient(base, model=args.model, protocol=args.protocol,
                                timeout=60) as client:
            encoded = []
            for image, _, _ in pictures:
                buf = io.BytesIO()
                image.save(buf, format="PNG")
                encoded.append(buf.getvalue())
            start = time.perf_counter()
            results = client.detect(encoded, score_threshold=args.score_threshold)
            elapsed = time.perf_counter() - start
    except (ServerUnreachable, launch.ServerFailed) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 3

    found = Counter[str]()
    matched = shapes = 0
    drawn = []
    for i, ((image, boxes, labels), result) in enumerate(zip(pictures, results, strict=True)):
        drawn.append(draw_detections(image, result.detections))
        drawn[-1].save(args.out / f"demo-{i:02d}.png")
        found.update(d.label for d in result.detections)
        for box, label in zip(boxes.tolist(), labels.tolist(), strict=True):
            shapes += 1
            same = [d.box for d in result.detections if d.label == CLASSES[label - 1]]
            matched += bool((box_iou(same, [box]) >= 0.5).any())
    summary = ", ".join(f"{n} {name}" for name, n in sorted(found.items())) or "nothing"
    print(f"{len(pictures)} pictures in {elapsed:.2f} s over {args.protocol}: found {summary}; "
          f"{matched} of {shapes} drawn shapes matched (IoU >= 0.5)")
    montage(drawn).save(args.out / "montage.png")
    print(f"annotated pictures: {args.out}/demo-00.png ... demo-{len(pictures) - 1:02d}.png "
          f"(all on one sheet: {args.out}/montage.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
