"""Stills of the synthetic world's vocabulary drawn by another renderer.

The built-in model was trained on owltrack's own renderer (muted textured
backgrounds, clutter, shading, anti-aliased rotated shapes, sensor noise).
This draws the same 24 categories with PIL instead — pure colours, hard
polygon edges, and a plain, gradient or noise background — as a COCO
detection dataset of stills, so that `detect --dataset` and
`eval-detection` show how the model does on a look it never saw:

    python tools/other_renderer.py OUT N plain|gradient|noise [SEED]
    owltrack detect --dataset OUT --all-queries --threshold 0.05 -o pred.json
    owltrack eval-detection --gt OUT/annotations.json --pred pred.json

Needs pillow; nothing in the build or CI runs it.
"""
import json
import math
import os
import random
import sys

from PIL import Image, ImageDraw, ImageFilter

COLOURS = {
    "red": (255, 0, 0),
    "green": (0, 180, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}
SHAPES = ["circle", "square", "triangle", "star"]
WIDTH, HEIGHT = 640, 360


def outline(shape, cx, cy, r, angle):
    """Polygon vertices: radius r to the corners (the star's notches at 0.45 r)."""
    if shape == "square":
        corners, radii = 4, [r] * 4
        start = angle + math.pi / 4
    elif shape == "triangle":
        corners, radii = 3, [r] * 3
        start = angle - math.pi / 2
    else:
        corners, radii = 10, [r if k % 2 == 0 else 0.45 * r for k in range(10)]
        start = angle - math.pi / 2
    return [
        (cx + radii[k] * math.cos(start + k * 2 * math.pi / corners),
         cy + radii[k] * math.sin(start + k * 2 * math.pi / corners))
        for k in range(corners)
    ]


def background(style, rng):
    if style == "plain":
        grey = rng.randint(90, 170)
        return Image.new("RGB", (WIDTH, HEIGHT), (grey + rng.randint(-15, 15), grey, grey + rng.randint(-15, 15)))
    if style == "gradient":
        ramp = Image.linear_gradient("L").resize((WIDTH, HEIGHT)).rotate(rng.choice([0, 90, 45])).convert("RGB")
        return Image.blend(ramp, Image.new("RGB", (WIDTH, HEIGHT), (120, 110, 100)), 0.5)
    return Image.effect_noise((WIDTH, HEIGHT), 60).convert("RGB").filter(ImageFilter.GaussianBlur(2))


def main():
    out, count, style = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if style not in ("plain", "gradient", "noise"):
        sys.exit("style: plain, gradient or noise")
    rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    os.makedirs(f"{out}/images", exist_ok=True)
    categories = [
        {"id": i * len(SHAPES) + j + 1, "name": f"{colour} {shape}"}
        for i, colour in enumerate(COLOURS)
        for j, shape in enumerate(SHAPES)
    ]
    category_of = {c["name"]: c["id"] for c in categories}
    images, annotations = [], []
    for index in range(count):
        picture = background(style, rng)
        draw = ImageDraw.Draw(picture)
        placed = []
        for _ in range(rng.randint(3, 6)):
            colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
            r = rng.uniform(0.035, 0.11) * HEIGHT  # the synthetic world's sizes
            for _ in range(50):  # apart from the others: no occlusion
                cx, cy = rng.uniform(r, WIDTH - r), rng.uniform(r, HEIGHT - r)
                if all((cx - x) ** 2 + (cy - y) ** 2 > (r + other + 4) ** 2 for x, y, other in placed):
                    break
            else:
                continue
            placed.append((cx, cy, r))
            if shape == "circle":
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=COLOURS[colour])
                box = [cx - r, cy - r, 2 * r, 2 * r]
            else:
                points = outline(shape, cx, cy, r, rng.uniform(0, 2 * math.pi))
                draw.polygon(points, fill=COLOURS[colour])
                xs, ys = [p[0] for p in points], [p[1] for p in points]
                box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
            annotations.append({
                "id": len(annotations) + 1, "image_id": index + 1,
                "category_id": category_of[f"{colour} {shape}"],
                "bbox": [round(v, 2) for v in box], "area": box[2] * box[3], "iscrowd": 0,
            })
        name = f"images/{index:04d}.jpg"
        picture.save(f"{out}/{name}", quality=92)
        images.append({"id": index + 1, "file_name": name, "width": WIDTH, "height": HEIGHT})
    with open(f"{out}/annotations.json", "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


if __name__ == "__main__":
    main()
