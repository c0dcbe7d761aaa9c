"""Times an OWL architecture in PyTorch / transformers, the baseline of
`owltrack bench model`: random weights from the published config (nothing
downloaded), image frames per second (image tower + box, class and objectness
heads) and text queries per second.

    python scripts/bench_torch.py --arch owlvit-base-patch32 --dtype bf16 --threads 2 --json

Needs torch and transformers 4.x. owltrack's architecture table is the source
of the configs (`owltrack bench model --arch A --print-config`).
"""

import argparse
import json
import time

import torch
from transformers import OwlViTConfig, OwlViTForObjectDetection, Owlv2Config, Owlv2ForObjectDetection


def build(config: dict):
    """The model of a hub config.json (what `--print-config` prints)."""
    v2 = config["model_type"] == "owlv2"
    Config, Model = (Owlv2Config, Owlv2ForObjectDetection) if v2 else (OwlViTConfig, OwlViTForObjectDetection)
    return Model(Config.from_dict(config)).eval(), v2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True, help="a config.json's text, e.g. from `owltrack bench model --arch A --print-config`")
    parser.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    config = json.loads(args.config)
    model, v2 = build(config)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    model = model.to(dtype)
    size = config["vision_config"]["image_size"]
    pixels = torch.randn(1, 3, size, size, dtype=dtype)
    ids = torch.randint(1, 49406, (args.queries, 16))
    ids[:, 0] = 49406
    ids[:, 8] = 49407
    ids[:, 9:] = 0

    def image_pass():
        feature_map = model.image_embedder(pixel_values=pixels)[0]
        b, h, w, d = feature_map.shape
        feats = feature_map.reshape(b, h * w, d)
        model.box_predictor(feats, feature_map)
        model.class_predictor(feats)
        if v2:
            model.objectness_predictor(feats)

    def text_pass():
        model.owlv2.get_text_features(input_ids=ids) if v2 else model.owlvit.get_text_features(input_ids=ids)

    def best_of(fn):
        with torch.inference_mode():
            fn()
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
        return min(times)

    image_seconds = best_of(image_pass)
    text_seconds = best_of(text_pass)
    result = {
        "framework": f"torch {torch.__version__}",
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "image_seconds": image_seconds,
        "image_fps": 1.0 / image_seconds,
        "text_queries_per_second": args.queries / text_seconds,
    }
    print(json.dumps(result) if args.json else result)


if __name__ == "__main__":
    main()
