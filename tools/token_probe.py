"""How much of an object's shape and colour do a backbone's image tokens hold?

Fits a linear probe (multinomial logistic regression, L-BFGS) from the
tokens at each fully visible object's centre patch to its shape and to its
colour, on the first videos of a dataset, and reports the accuracy on the
remaining videos next to the commonest class's share. The tokens are those
`owltrack train decoder` caches (`OUT/token-cache/FINGERPRINT/VIDEO.safetensors`,
one (frames, patches, width) f16 tensor per video), so the probe reads
exactly what the decoder and the detector's heads read.

    python tools/token_probe.py TOKEN_CACHE_DIR DATA_DIR [--neighbourhood 1]
        [--held-out 0.2] [--every 4]

DATA_DIR is the `owltrack synth` dataset the tokens were computed from
(OWLv2 preprocessing: the frame padded to a square at the top left). Needs
torch and numpy; nothing in the build or CI runs it.
"""
import argparse
import json
import struct

import numpy as np
import torch

SHAPES = 4  # category ids run colour-major, shape-minor from 1


def read_tokens(path):
    raw = open(path, "rb").read()
    header_length = struct.unpack("<Q", raw[:8])[0]
    entry = json.loads(raw[8 : 8 + header_length])["tokens"]
    start, end = entry["data_offsets"]
    body = raw[8 + header_length + start : 8 + header_length + end]
    return np.frombuffer(body, dtype=np.float16).reshape(entry["shape"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cache")
    parser.add_argument("data")
    parser.add_argument("--neighbourhood", type=int, default=0,
                        help="also read the patches this many rows/columns around the centre")
    parser.add_argument("--held-out", type=float, default=0.2, help="share of videos tested on")
    parser.add_argument("--every", type=int, default=4, help="use every N-th frame")
    args = parser.parse_args()
    data = json.load(open(f"{args.data}/annotations.json"))
    by_video, by_image = {}, {}
    for image in data["images"]:
        by_video.setdefault(image["video_id"], []).append(image)
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    videos = sorted(by_video)
    first_tested = videos[int(len(videos) * (1 - args.held_out))]
    features, shapes, colours, tested = [], [], [], []
    reach = args.neighbourhood
    for video in videos:
        images = sorted(by_video[video], key=lambda i: i["frame_index"])
        tokens = read_tokens(f"{args.cache}/{video}.safetensors")
        if tokens.shape[0] != len(images):
            raise SystemExit(f"video {video}: {tokens.shape[0]} cached frames, {len(images)} listed")
        grid = int(round((tokens.shape[1]) ** 0.5))
        offset = tokens.shape[1] - grid * grid  # a class token first, if any
        for f, image in enumerate(images):
            if f % args.every:
                continue
            scale = grid / max(image["width"], image["height"])
            for a in by_image.get(image["id"], []):
                if a.get("visibility", 1) < 0.9:
                    continue
                x, y, w, h = a["bbox"]
                column = min(int((x + w / 2) * scale), grid - 1)
                row = min(int((y + h / 2) * scale), grid - 1)
                patches = [
                    offset + min(max(row + dy, 0), grid - 1) * grid + min(max(column + dx, 0), grid - 1)
                    for dy in range(-reach, reach + 1)
                    for dx in range(-reach, reach + 1)
                ]
                features.append(tokens[f, patches].astype(np.float32).reshape(-1))
                shapes.append((a["category_id"] - 1) % SHAPES)
                colours.append((a["category_id"] - 1) // SHAPES)
                tested.append(video >= first_tested)
    x = torch.tensor(np.stack(features))
    test = torch.tensor(tested)
    train = ~test
    x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-6)
    for name, labels in [("shape", shapes), ("colour", colours)]:
        y = torch.tensor(labels)
        probe = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
        optimiser = torch.optim.LBFGS(probe.parameters(), max_iter=500)

        def closure():
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(probe(x[train]), y[train])
            loss = loss + 1e-3 * probe.weight.pow(2).sum()
            loss.backward()
            return loss

        optimiser.step(closure)
        accuracy = (probe(x[test]).argmax(1) == y[test]).float().mean().item()
        commonest = torch.bincount(y[test]).max().item() / int(test.sum())
        print(f"{name}: held-out accuracy {accuracy:.3f} (commonest class {commonest:.3f}); "
              f"{int(train.sum())} objects to fit, {int(test.sum())} to test")


if __name__ == "__main__":
    main()
