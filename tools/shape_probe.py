"""How fast can a network learn the synthetic world's shapes, given the
answer directly?

Trains a tiny CLIP-style ViT (the built-in model's vision size: 4 layers,
width 96, 4 heads, quick-GELU, pre-norm), the same ViT behind a
convolutional stem (`--net vit-convstem`, the `stem_channels` of
`owltrack train detector --stem-channels`) or, for comparison, a small CNN to
label every patch of a frame with the shape of the object covering it
(cross-entropy; background at a tenth of the weight), and reports the
held-out accuracy at object centres. The detector's own signal for shape
is far weaker (one matched patch per object, a focal loss over text
queries), so this bounds from above what its training can do in as many
steps.

    python tools/shape_probe.py TRAIN_DIR HELD_OUT_DIR
        --net vit|vit-sincos|vit-gabor|vit-local|vit-convstem|cnn
        [--image-size 384] [--patch-size 16] [--steps 1500] [--sharpness 3]
        [--stem 16,32,64,96] [--layers 4]

TRAIN_DIR and HELD_OUT_DIR are `owltrack synth` outputs (frame folders).
Needs torch, numpy and pillow; nothing in the build or CI runs it.
"""
import argparse
import json
import math
import random
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

SHAPES = 4  # category ids run colour-major, shape-minor from 1


def load(root, count, every, size):
    """Frames padded to a square at the top left, as OWLv2 preprocesses, and
    per-frame (x, y, w, h, shape) boxes scaled alike."""
    data = json.load(open(f"{root}/annotations.json"))
    by_image = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    images = [i for i in data["images"] if i["frame_index"] % every == 0][:count]
    frames, boxes = [], []
    for image in images:
        picture = Image.open(f"{root}/{image['file_name']}").convert("RGB")
        scale = size / max(picture.size)
        picture = picture.resize(
            (round(picture.size[0] * scale), round(picture.size[1] * scale)), Image.BILINEAR
        )
        canvas = Image.new("RGB", (size, size), (128, 128, 128))
        canvas.paste(picture, (0, 0))
        frames.append(np.asarray(canvas))
        boxes.append(
            [
                (*[v * scale for v in a["bbox"]], (a["category_id"] - 1) % SHAPES)
                for a in by_image.get(image["id"], [])
                if a.get("visibility", 1) >= 0.5
            ]
        )
    return torch.tensor(np.stack(frames)), boxes


def patch_labels(boxes, grid, patch):
    """Per patch: the shape of the smallest object covering it, else
    background (SHAPES); and each object's centre patch."""
    labels = torch.full((len(boxes), grid, grid), SHAPES, dtype=torch.long)
    centres = []
    for i, frame in enumerate(boxes):
        for x, y, w, h, shape in sorted(frame, key=lambda b: -b[2] * b[3]):
            x0, y0 = max(int(x // patch), 0), max(int(y // patch), 0)
            x1 = min(int((x + w - 1e-3) // patch), grid - 1)
            y1 = min(int((y + h - 1e-3) // patch), grid - 1)
            labels[i, y0 : y1 + 1, x0 : x1 + 1] = shape
            cx = min(int((x + w / 2) // patch), grid - 1)
            cy = min(int((y + h / 2) // patch), grid - 1)
            centres.append((i, cy, cx, shape))
    return labels, centres


def sincos(grid, width):
    positions = torch.arange(grid, dtype=torch.float32)
    omega = 1.0 / 10000 ** (torch.arange(width // 4) / (width // 4))
    yy, xx = torch.meshgrid(positions, positions, indexing="ij")
    ox = xx.flatten()[:, None] * omega[None]
    oy = yy.flatten()[:, None] * omega[None]
    return torch.cat([ox.sin(), ox.cos(), oy.sin(), oy.cos()], 1)


def gabor_bank(width, patch):
    """Patch-embedding filters that start as oriented edge detectors (8
    orientations x 3 frequencies x the 4 quadrants of the patch, on
    luminance), the locality a convolution has from the start."""
    filters = torch.zeros(width, 3, patch, patch)
    ys, xs = torch.meshgrid(torch.arange(patch).float(), torch.arange(patch).float(), indexing="ij")
    for k in range(width):
        angle = (k % 8) * math.pi / 8
        frequency = (1 + (k // 8) % 3) / patch
        cy, cx = [(patch / 4, patch / 4), (patch / 4, 3 * patch / 4),
                  (3 * patch / 4, patch / 4), (3 * patch / 4, 3 * patch / 4)][(k // 24) % 4]
        along = (xs - cx) * math.cos(angle) + (ys - cy) * math.sin(angle)
        envelope = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * (patch / 4) ** 2))
        kernel = envelope * torch.cos(2 * math.pi * frequency * along)
        kernel = kernel - kernel.mean()
        filters[k] = kernel / kernel.norm() / 3 ** 0.5
    return filters


def local_features(grid, frequencies):
    """2-D Fourier features of each patch position: their dot product is a
    kernel peaked at zero offset, and shifting a position by (dx, dy) is a
    rotation of each (cos, sin) pair."""
    positions = torch.arange(grid, dtype=torch.float32)
    yy, xx = torch.meshgrid(positions, positions, indexing="ij")
    x, y = xx.flatten()[:, None], yy.flatten()[:, None]
    w = torch.tensor(frequencies)[None]
    return torch.cat([(w * x).cos(), (w * x).sin(), (w * y).cos(), (w * y).sin()], 1)


def shift_rotation(frequencies, dx, dy):
    """The linear map taking the features of (x, y) to those of (x + dx, y + dy)."""
    k = len(frequencies)
    rotation = torch.zeros(4 * k, 4 * k)
    for axis, delta in ((0, dx), (1, dy)):
        for i, w in enumerate(frequencies):
            c, s = math.cos(w * delta), math.sin(w * delta)
            cos_at, sin_at = 2 * k * axis + i, 2 * k * axis + k + i
            # cos(w(x+d)) = cos(wx)c - sin(wx)s ; sin(w(x+d)) = sin(wx)c + cos(wx)s
            rotation[cos_at, cos_at], rotation[cos_at, sin_at] = c, -s
            rotation[sin_at, sin_at], rotation[sin_at, cos_at] = c, s
    return rotation


def make_local(vit, grid, width, heads, sharpness):
    """Starts every attention head as a look at one neighbouring patch (a
    convolution's taps, as ConViT's locality init, with the plain ViT's
    parameters): positions take the first 4k channels as Fourier features,
    the patch embedding leaves those channels empty, and each head's query
    is its key rotated by the head's offset."""
    head = width // heads
    k = head // 4
    # Periods from 3 to 48 patches: a sharp peak without aliasing on the grid.
    frequencies = [2 * math.pi / (3 * 16 ** (i / (k - 1))) for i in range(k)]
    features = local_features(grid, frequencies)
    offsets = [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1)]
    with torch.no_grad():
        vit.positions[1:, : 4 * k] = features
        vit.positions[1:, 4 * k :] *= 0.1
        vit.positions[0, : 4 * k] = 0
        vit.embed.weight[: 4 * k] = 0
        for block in vit.blocks:
            w = block.attention.in_proj_weight
            for h in range(heads):
                dx, dy = offsets[h % len(offsets)]
                rows = slice(h * head, h * head + 4 * k)
                w[rows] = 0
                w[width + h * head : width + (h + 1) * head] = 0
                w[rows, : 4 * k] = sharpness * shift_rotation(frequencies, dx, dy).T
                w[width + h * head : width + h * head + 4 * k, : 4 * k] = sharpness * torch.eye(4 * k)


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x):
        y = self.norm1(x)
        x = x + self.attention(y, y, y, need_weights=False)[0]
        y = self.fc1(self.norm2(x))
        return x + self.fc2(y * torch.sigmoid(1.702 * y))


class ViT(nn.Module):
    def __init__(self, grid, patch, sincos_positions, gabor=False, width=96, layers=4, heads=4, stem=None):
        super().__init__()
        self.grid = grid
        self.embed = ConvStem(patch, width, stem) if stem else nn.Conv2d(3, width, patch, patch, bias=False)
        if gabor:
            with torch.no_grad():
                bank = gabor_bank(width, patch)
                self.embed.weight.copy_(bank * self.embed.weight.norm() / bank.norm())
        self.cls = nn.Parameter(torch.randn(width) * 0.02)
        self.positions = nn.Parameter(torch.randn(grid * grid + 1, width) * 0.02)
        if sincos_positions:
            with torch.no_grad():
                self.positions[1:] = sincos(grid, width) * 0.5
        self.pre = nn.LayerNorm(width)
        self.blocks = nn.ModuleList([Block(width, heads) for _ in range(layers)])
        self.post = nn.LayerNorm(width)
        self.head = nn.Linear(width, SHAPES + 1)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(tokens), 1, -1), tokens], 1) + self.positions
        tokens = self.pre(tokens)
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(self.post(tokens[:, 1:])).view(-1, self.grid, self.grid, SHAPES + 1)


class ConvStem(nn.Module):
    """Xiao et al. 2021, "Early convolutions help transformers see better":
    3x3 stride-2 convolutions down to the patch grid, then a 1x1 to the
    width, in place of the one linear map per patch."""

    def __init__(self, patch, width, channels):
        super().__init__()
        layers, previous = [], 3
        for out in channels[: int(math.log2(patch))]:
            layers += [nn.Conv2d(previous, out, 3, 2, 1), nn.GELU()]
            previous = out
        self.net = nn.Sequential(*layers, nn.Conv2d(previous, width, 1, bias=False))

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    """Output stride 16, receptive field about 60 pixels."""

    def __init__(self):
        super().__init__()
        layers, channels = [], 3
        for out, stride in [(32, 2), (64, 2), (96, 2), (96, 2), (96, 1)]:
            layers += [nn.Conv2d(channels, out, 3, stride, 1), nn.GELU()]
            channels = out
        self.net = nn.Sequential(*layers, nn.Conv2d(channels, SHAPES + 1, 1))

    def forward(self, x):
        return self.net(x).permute(0, 2, 3, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train")
    parser.add_argument("held_out")
    parser.add_argument("--net", choices=["vit", "vit-sincos", "vit-gabor", "vit-local", "vit-convstem", "cnn"], default="vit")
    parser.add_argument("--sharpness", type=float, default=3.0)
    parser.add_argument("--image-size", type=int, default=384)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--stem", default="16,32,64,96", help="vit-convstem: channels of each stride-2 convolution")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--held-out-every", type=int, default=1,
        help="score every N-th frame of each held-out video: with as many frames, more scenes",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    random.seed(0)
    patch = 16 if args.net == "cnn" else args.patch_size
    grid = args.image_size // patch
    train_frames, train_boxes = load(args.train, 1600, 5, args.image_size)
    test_frames, test_boxes = load(args.held_out, 240, args.held_out_every, args.image_size)
    train_labels, _ = patch_labels(train_boxes, grid, patch)
    _, test_centres = patch_labels(test_boxes, grid, patch)
    stem = [int(c) for c in args.stem.split(",")] if args.net == "vit-convstem" else None
    net = CNN() if args.net == "cnn" else ViT(
        grid, patch, args.net == "vit-sincos", args.net == "vit-gabor", layers=args.layers, stem=stem
    )
    if args.net == "vit-local":
        make_local(net, grid, 96, 4, args.sharpness)
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 1e-3, total_steps=args.steps, pct_start=0.1)
    weights = torch.tensor([1.0] * SHAPES + [0.1])
    normalise = lambda x: (x.permute(0, 3, 1, 2).float() / 255 - 0.45) / 0.27

    def accuracy():
        net.eval()
        right = 0
        with torch.no_grad():
            for start in range(0, len(test_frames), 16):
                out = net(normalise(test_frames[start : start + 16]))
                for i, cy, cx, shape in test_centres:
                    if start <= i < start + 16:
                        right += int(out[i - start, cy, cx, :SHAPES].argmax() == shape)
        net.train()
        return right / max(len(test_centres), 1)

    began = time.time()
    for step in range(1, args.steps + 1):
        pick = torch.randint(0, len(train_frames), (args.batch,))
        frames, labels = train_frames[pick], train_labels[pick]
        if random.random() < 0.5:
            frames, labels = frames.flip(2), labels.flip(2)
        loss = F.cross_entropy(
            net(normalise(frames)).reshape(-1, SHAPES + 1), labels.reshape(-1), weight=weights
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 500 == 0 or step == args.steps:
            print(
                f"{args.net} step {step}: loss {loss.item():.3f}, held-out shape accuracy "
                f"{accuracy():.3f} ({time.time() - began:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
