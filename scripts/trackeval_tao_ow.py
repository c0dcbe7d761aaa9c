#!/usr/bin/env python3
"""Runs TrackEval's TAO-OW evaluation (HOTA family) on one ground truth and
one results file, and prints the time it took and its OWTA as one JSON line.

    python scripts/trackeval_tao_ow.py --trackeval /path/to/TrackEval \
        --gt gt.json --pred pred.json [--subset all] [--max-dets 300]

`owltrack bench eval --python PY --trackeval DIR` calls it to time the same
workload. TrackEval still uses np.float and np.int, which numpy 1.24 removed:
the aliases are restored here at run time rather than editing TrackEval.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trackeval", required=True, help="TrackEval checkout")
    parser.add_argument("--gt", required=True)
    parser.add_argument("--pred", required=True)
    parser.add_argument("--subset", default="all", choices=["all", "known", "unknown"])
    parser.add_argument("--max-dets", type=int, default=300)
    args = parser.parse_args()

    np.float = float
    np.int = int
    sys.path.insert(0, os.path.abspath(args.trackeval))
    import trackeval  # noqa: E402

    with tempfile.TemporaryDirectory() as scratch:
        gt_dir = os.path.join(scratch, "gt")
        tracker_dir = os.path.join(scratch, "trackers", "owltrack", "data")
        os.makedirs(gt_dir)
        os.makedirs(tracker_dir)
        shutil.copy(args.gt, os.path.join(gt_dir, "gt.json"))
        shutil.copy(args.pred, os.path.join(tracker_dir, "pred.json"))

        started = time.perf_counter()
        eval_config = trackeval.Evaluator.get_default_eval_config()
        eval_config.update(
            USE_PARALLEL=False,
            PRINT_RESULTS=False,
            PRINT_CONFIG=False,
            TIME_PROGRESS=False,
            DISPLAY_LESS_PROGRESS=True,
            OUTPUT_SUMMARY=False,
            OUTPUT_DETAILED=False,
            PLOT_CURVES=False,
        )
        dataset_config = trackeval.datasets.TAO_OW.get_default_dataset_config()
        dataset_config.update(
            GT_FOLDER=gt_dir,
            TRACKERS_FOLDER=os.path.join(scratch, "trackers"),
            OUTPUT_FOLDER=os.path.join(scratch, "out"),
            TRACKERS_TO_EVAL=["owltrack"],
            SUBSET=args.subset,
            MAX_DETECTIONS=args.max_dets,
            PRINT_CONFIG=False,
        )
        evaluator = trackeval.Evaluator(eval_config)
        dataset = trackeval.datasets.TAO_OW(dataset_config)
        metric = trackeval.metrics.HOTA({"PRINT_CONFIG": False})
        results, _ = evaluator.evaluate([dataset], [metric])
        seconds = time.perf_counter() - started

    hota = results["TAO_OW"]["owltrack"]["COMBINED_SEQ"]["object"]["HOTA"]
    print(json.dumps({"seconds": seconds, "owta": float(np.mean(hota["OWTA"]))}))


if __name__ == "__main__":
    main()
