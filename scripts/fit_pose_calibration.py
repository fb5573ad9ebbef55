"""Fit, and check held out, the pose uncertainty model (service/pipeline/uncertainty.py) on
AFLW2000-3D-style data; and measure a yaw correction (not applied: see fit below).

    python scripts/fit_pose_calibration.py collect DIR --out faces.npz [--quality Q --mode M]
    python scripts/fit_pose_calibration.py fit faces.npz [faces2.npz ...]

collect runs the pipeline in this process on every labelled face of DIR (images/<name>.jpg and
labels.npz, like ../shared/data/aflw2000-dev-large) and writes, per matched face, the true
angles, the pose returned and what the pipeline knew of it (the separate fits' angles,
presence, score, size, reprojection error). Nothing of it goes into the repository.

fit pools each preset's files (both modes), splits the faces in two halves by image (even and
odd positions), fits on one and checks on the other, both ways, and prints per file the
held-out figures: MAE per |yaw| band as fitted and with a fitted yaw correction (a
piecewise-linear amount added outwards, YAW_KNOTS_DEG), the rank correlation of stated
uncertainty with the actual error, and stated against actual MAE per fifth of faces; then the
uncertainty coefficients fitted on all faces, for uncertainty.py. --plot draws stated against
actual per tenth of faces.

The yaw correction is measured, not applied: it moves profiles (|yaw| 60 and over) 1.2 to 1.7
degrees closer but makes 30 to 60 worse by up to 0.3, and the default preset's MAE moves by
less than its standard error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.eval_aflw2000 import match_face, tight_box
from scripts.eval_data import require_labelled_set
from service.pipeline import uncertainty

YAW_BANDS = ((0, 30), (30, 60), (60, 99))


def euler_or_nan(rotation: np.ndarray | None) -> np.ndarray:
    from service.pipeline.solve import euler_pitch_yaw_roll_deg

    if rotation is None or not np.isfinite(rotation).all():
        return np.full(3, np.nan)
    return np.array(euler_pitch_yaw_roll_deg(rotation))


def collect(directory: Path, out: Path, quality: str, mode: str) -> None:
    from service.app.images import EncodedImages, decode_request_images
    from service.app.options import options_model, validate_options
    from service.config import Settings
    from service.pipeline.estimate import estimate_faces
    from service.runtime import create_runtime

    settings = Settings(grpc_port=0)
    runtime = create_runtime(settings)
    model = options_model(settings)
    labels = np.load(directory / "labels.npz")
    keep = np.all(np.abs(np.degrees(labels["pose_para"][:, :3])) < 99, axis=1)
    rows: dict[str, list[object]] = {key: [] for key in (
        "image", "truth", "euler", "mesh", "keypoints", "mirror", "presence", "score",
        "size_px", "rmse_px")}
    for index, (name, pose_para, points) in enumerate(zip(
            labels["name"][keep], labels["pose_para"][keep], labels["pt3d_68"][keep],
            strict=True)):
        truth_box = tight_box(points[:2])
        data = (directory / "images" / f"{name}.jpg").read_bytes()
        given = {"quality": quality}
        boxes = None
        if mode == "boxes":
            given["min_presence"] = 0
            boxes = [truth_box.reshape(1, 4)]
        options = validate_options(model, given)
        (outcome,) = decode_request_images(settings, EncodedImages([data], boxes), options)
        assert outcome.request is not None
        (result,) = estimate_faces(runtime, [outcome.request])
        faces = [{"box": face.box.tolist(), "face": face} for face in result.faces]
        matched = match_face(faces, truth_box)
        if matched is None:
            continue
        face = matched["face"]
        evidence = face.pose.evidence
        rows["image"].append(index)
        rows["truth"].append(np.degrees(pose_para[:3]))
        rows["euler"].append(euler_or_nan(face.pose.r_cam_from_model))
        rows["mesh"].append(euler_or_nan(evidence.from_mesh))
        rows["keypoints"].append(euler_or_nan(evidence.from_keypoints))
        rows["mirror"].append(euler_or_nan(evidence.from_mirror))
        rows["presence"].append(face.presence)
        rows["score"].append(face.score)
        rows["size_px"].append(float(np.sqrt(np.prod(face.box[2:] - face.box[:2]))))
        rows["rmse_px"].append(face.pose.reprojection_rmse_px)
    runtime.close()
    np.savez(out, quality=quality, mode=mode, **{k: np.array(v) for k, v in rows.items()})
    print(f"{len(rows['image'])} faces of {int(keep.sum())} -> {out}")


def rotations(euler_deg: np.ndarray) -> np.ndarray:
    from service.pipeline.solve import rotation_from_euler_deg

    return np.array([rotation_from_euler_deg(*row) if np.isfinite(row).all()
                     else np.full((3, 3), np.nan) for row in euler_deg])


def angles_apart_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Geodesic angle between the rotations of two rows of Euler angles; NaN where either is."""
    ra, rb = rotations(a), rotations(b)
    cos = (np.einsum("nij,nij->n", ra, rb) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def relative_rmse(rows: dict[str, np.ndarray]) -> np.ndarray:
    return rows["rmse_px"] / rows["size_px"]


YAW_KNOTS_DEG = (30.0, 45.0, 60.0, 75.0, 90.0)


def hat_basis(abs_yaw: np.ndarray) -> np.ndarray:
    """(N, knots): np.interp over the knots is this times the knot values."""
    knots = YAW_KNOTS_DEG
    return np.column_stack([np.interp(abs_yaw, knots, np.eye(len(knots))[k], left=0.0)
                            for k in range(len(knots))])


def fit_yaw_correction(rows: dict[str, np.ndarray]) -> tuple[float, ...]:
    """Knot values (the first held at 0) minimising the squared outward yaw residual, each
    residual clipped at 30 degrees so that a few wild fits do not steer it."""
    yaw = rows["euler"][:, 1]
    outward = np.clip(np.sign(yaw) * (rows["truth"][:, 1] - yaw), -30.0, 30.0)
    design = hat_basis(np.abs(yaw))
    values = np.linalg.lstsq(design[:, 1:], outward, rcond=None)[0]
    return (0.0, *(round(float(v), 2) for v in values))


def apply_yaw_correction_rows(rows: dict[str, np.ndarray], knots: tuple[float, ...]
                              ) -> np.ndarray:
    corrected = rows["euler"].copy()
    yaw = corrected[:, 1]
    corrected[:, 1] += np.sign(yaw) * np.interp(np.abs(yaw), YAW_KNOTS_DEG, knots, left=0.0)
    return corrected


def row_features(rows: dict[str, np.ndarray]) -> np.ndarray:
    return uncertainty.feature_matrix(
        np.abs(rows["euler"][:, 1]), angles_apart_deg(rows["mesh"], rows["keypoints"]),
        angles_apart_deg(rows["mesh"], rows["mirror"]), rows["presence"],
        relative_rmse(rows), rows["size_px"])


def fit_uncertainty(rows: dict[str, np.ndarray]) -> uncertainty.UncertaintyModel:
    actual = np.abs(rows["euler"] - rows["truth"]).mean(axis=1)
    return uncertainty.fit_uncertainty_model(row_features(rows), actual)


def stated_rows(rows: dict[str, np.ndarray], model: uncertainty.UncertaintyModel
                ) -> np.ndarray:
    return uncertainty.expected_error_deg(model, row_features(rows))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks_a, ranks_b = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def fifths(stated: np.ndarray, actual: np.ndarray) -> list[tuple[float, float]]:
    order = np.argsort(stated)
    return [(float(stated[part].mean()), float(actual[part].mean()))
            for part in np.array_split(order, 5)]


def band_maes(truth: np.ndarray, predicted: np.ndarray) -> list[tuple[int, float]]:
    errors = np.abs(predicted - truth).mean(axis=1)
    out = []
    for low, high in YAW_BANDS:
        inside = (np.abs(truth[:, 1]) >= low) & (np.abs(truth[:, 1]) < high)
        out.append((int(inside.sum()), float(errors[inside].mean()) if inside.any() else np.nan))
    return out


def load(path: Path) -> tuple[str, str, dict[str, np.ndarray]]:
    with np.load(path) as data:
        return (str(data["quality"]), str(data["mode"]),
                {key: data[key] for key in data.files if data[key].ndim})


def pooled(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def without_keypoints(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {**rows, "keypoints": np.full_like(rows["keypoints"], np.nan)}


def fitted(rows: dict[str, np.ndarray]) -> tuple[tuple[float, ...],
                                                  uncertainty.UncertaintyModel,
                                                  uncertainty.UncertaintyModel]:
    """The yaw correction (measured only), and the uncertainty models of the poses as the
    service returns them, with and without the keypoints' fit."""
    return (fit_yaw_correction(rows), fit_uncertainty(rows),
            fit_uncertainty(without_keypoints(rows)))


def report(quality: str, mode: str, rows: dict[str, np.ndarray], corrected: np.ndarray,
           stated: np.ndarray) -> None:
    actual = np.abs(rows["euler"] - rows["truth"]).mean(axis=1)
    print(f"\n== {quality} / {mode}: {len(actual)} faces, held out")
    print(f"MAE {actual.mean():.2f} as returned, "
          f"{np.abs(corrected - rows['truth']).mean():.2f} with the yaw correction (not applied)")
    before = band_maes(rows["truth"], rows["euler"])
    after = band_maes(rows["truth"], corrected)
    for (low, high), (count, b), (_, a) in zip(YAW_BANDS, before, after, strict=True):
        print(f"  |yaw| {low:>2}-{high:<2} {count:5d} faces  {b:6.2f} -> {a:6.2f}")
    print(f"uncertainty: Spearman {spearman(stated, actual):.2f}")
    for k, (said, got) in enumerate(fifths(stated, actual)):
        print(f"  fifth {k + 1}: stated {said:6.2f}  actual {got:6.2f}  ratio {got / said:5.2f}")


def fit(paths: list[Path], plot: Path | None) -> None:
    """Each preset's models fitted on its faces of all the files given (both modes pooled)."""
    by_quality: dict[str, list[tuple[str, dict[str, np.ndarray]]]] = {}
    for path in paths:
        quality, mode, rows = load(path)
        by_quality.setdefault(quality, []).append((mode, rows))
    code: dict[str, dict[str, object]] = {}
    plotted = []
    for quality, sets in by_quality.items():
        for mode, rows in sets:
            corrected = rows["euler"].copy()
            stated = np.zeros(len(corrected))
            for half in (0, 1):
                train = pooled([r for _, r in sets])
                train = {k: v[train["image"] % 2 != half] for k, v in train.items()}
                correction, model, _ = fitted(train)
                test = rows["image"] % 2 == half
                held = {k: v[test] for k, v in rows.items()}
                corrected[test] = apply_yaw_correction_rows(held, correction)
                stated[test] = stated_rows(held, model)
            report(quality, mode, rows, corrected, stated)
            plotted.append((f"{quality} / {mode}", stated,
                            np.abs(rows["euler"] - rows["truth"]).mean(axis=1)))
        correction, model, model_without = fitted(pooled([r for _, r in sets]))
        code[quality] = {"yaw": correction, "with": model, "without": model_without}
    print("\nfitted on all faces, for service/pipeline/uncertainty.py:")
    for name in ("with", "without"):
        print(f"  {name} keypoints:")
        for quality, parts in code.items():
            model = parts[name]
            assert isinstance(model, uncertainty.UncertaintyModel)
            weights = ", ".join(f"{w:.3f}" for w in model.weights)
            print(f'    "{quality}": UncertaintyModel(({weights}), {model.bias:.3f}, '
                  f"{model.scale:.3f}),")
    if plot is not None:
        draw(plotted, plot)


COLOURS = ((200, 80, 0), (0, 130, 0), (0, 0, 200), (150, 0, 150), (0, 140, 160),
           (90, 90, 90))


def draw(plotted: list[tuple[str, np.ndarray, np.ndarray]], path: Path) -> None:
    """Stated against actual MAE, held out: the mean of each tenth of faces by stated, one curve
    per preset and mode, on log axes; drawn with OpenCV."""
    import cv2

    size, margin = 560, 70
    canvas = np.full((size, size, 3), 255, np.uint8)
    low, high = 1.0, 40.0
    font = cv2.FONT_HERSHEY_SIMPLEX

    def at(value: float) -> int:
        share = (np.log(np.clip(value, low, high)) - np.log(low)) / (np.log(high) - np.log(low))
        return int(margin + share * (size - margin - 30))

    for tick in (1, 2, 5, 10, 20, 40):
        x, y = at(tick), size - at(tick)
        cv2.line(canvas, (x, size - margin), (x, size - at(high)), (225, 225, 225), 1)
        cv2.line(canvas, (margin, y), (at(high), y), (225, 225, 225), 1)
        cv2.putText(canvas, str(tick), (x - 6, size - margin + 18), font, 0.4, (80, 80, 80), 1,
                    cv2.LINE_AA)
        cv2.putText(canvas, str(tick), (margin - 25, y + 4), font, 0.4, (80, 80, 80), 1,
                    cv2.LINE_AA)
    cv2.line(canvas, (at(low), size - at(low)), (at(high), size - at(high)), (0, 0, 0), 1,
             cv2.LINE_AA)
    cv2.putText(canvas, "stated uncertainty_deg (mean of a tenth of faces)",
                (margin, size - 20), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, "actual MAE, degrees (held out)", (10, 25), font, 0.45, (0, 0, 0), 1,
                cv2.LINE_AA)
    for k, (label, stated, actual) in enumerate(plotted):
        colour = COLOURS[k % len(COLOURS)]
        parts = np.array_split(np.argsort(stated), 10)
        points = [(at(stated[part].mean()), size - at(actual[part].mean())) for part in parts]
        for j, point in enumerate(points):
            cv2.circle(canvas, point, 3, colour, -1, cv2.LINE_AA)
            if j:
                cv2.line(canvas, points[j - 1], point, colour, 1, cv2.LINE_AA)
        cv2.putText(canvas, label, (margin + 10, 50 + 18 * k), font, 0.45, colour, 1,
                    cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), canvas)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    gather = commands.add_parser("collect")
    gather.add_argument("directory", type=Path)
    gather.add_argument("--out", type=Path, required=True)
    gather.add_argument("--quality", default="accurate")
    gather.add_argument("--mode", choices=["boxes", "detect"], default="boxes")
    fitting = commands.add_parser("fit")
    fitting.add_argument("paths", type=Path, nargs="+")
    fitting.add_argument("--plot", type=Path, help="write the calibration plot here")
    args = parser.parse_args()
    if args.command == "collect":
        require_labelled_set("fit_pose_calibration collect", args.directory)
        collect(args.directory, args.out, args.quality, args.mode)
    else:
        fit(args.paths, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
