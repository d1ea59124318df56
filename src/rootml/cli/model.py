"""The model path: train, evaluate and predict."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from .settings import add_layout_option, add_settings_flags, settings_from


def _shard_paths(items: Sequence[str]) -> list[Path]:
    """Shard files, or folders holding ``*.h5`` shards."""
    out: list[Path] = []
    for item in items:
        path = Path(item)
        out.extend(sorted(path.glob("*.h5")) if path.is_dir() else [path])
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from ..layout import load_layout
    from ..training import TrainOptions, train

    _, settings = settings_from(args)
    options = TrainOptions(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        shuffle=settings.shuffle,
        seed=settings.seed,
        patience=args.patience,
        class_weight=args.class_weight or settings.class_weight,
    )
    layout = load_layout(args.layout)
    bundle = train(
        layout,
        _shard_paths(args.shards),
        args.out,
        model_path=args.model or settings.model,
        options=options,
        name=args.name,
    )
    print(bundle)
    return 0


def cmd_check_model(args: argparse.Namespace) -> int:
    from ..layout import load_layout
    from ..modelfile import build_model
    from ..storage import write_json

    model = args.model
    if model is None and args.input:
        model = settings_from(args)[1].model
    what = model or "rootml's default network"
    if args.layout is None:  # the workflow's model_probe, before any file is read
        return _probe_model(model, what, args.out)
    layout = load_layout(args.layout)
    checked = build_model(model, layout["dim"], len(layout["labels"]["classes"]))
    print(f"{what}: model({layout['dim']}) is a compiled Keras model ({checked.target} targets)")
    if args.out:
        write_json(
            args.out,
            {"model": model, "dim": layout["dim"], "target": checked.target, "ok": True},
        )
    return 0


def _probe_model(model: str | None, what: str, out: str | None) -> int:
    from ..modelfile import PROBE_WIDTH, probe_model
    from ..storage import write_json

    built = model is None or probe_model(model)
    print(
        f"{what}: imported; model({PROBE_WIDTH}) "
        + (
            "is a compiled Keras model"
            if built
            else "raised: the check with the layout's width says why"
        )
    )
    if out:
        write_json(out, {"model": model, "dim": PROBE_WIDTH, "built": built, "ok": True})
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..scoring import evaluate

    metrics = evaluate(
        args.bundle,
        _shard_paths(args.shards),
        args.out,
        max_train=args.max_train,
        features_dir=args.features,
    )
    keys = ("n_test", "auc", "auc_macro", "accuracy", "log_loss")
    print(json.dumps({k: metrics[k] for k in keys if k in metrics}))
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from ..scoring import features

    print(features(args.layout, _shard_paths(args.shards), args.out))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ..bundle import load_bundle
    from ..scoring import predict_files, write_predictions

    if args.url:
        from ..client import token_from_env
        from ..publishing import predict_remote

        results = predict_remote(
            args.bundle,
            args.files,
            args.url,
            name=args.name,
            token=token_from_env(args.token_env),
            redirector=args.redirector,
        )
    else:
        results = predict_files(args.bundle, args.files, redirector=args.redirector)
    classes = load_bundle(args.bundle).layout["labels"]["classes"]
    if args.out:
        print(write_predictions(args.out, results, classes))
    else:
        for r in results:
            mean = r["scores"].mean(axis=0).tolist() if len(r["scores"]) else None
            print(json.dumps({"file": r["file"], "events": len(r["entry"]), "mean_score": mean}))
    return 0


def add_commands(sub) -> None:
    """Add this module's subcommands to the ``rootml`` parser."""
    p = sub.add_parser(
        "train", help="train model(idim) from model.py on the shards; write a bundle"
    )
    add_layout_option(p)
    p.add_argument("--shards", nargs="+", required=True, help="shard files or folders")
    p.add_argument("--model", help="model.py defining model(idim) (default: a small MLP)")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--name", default="rootml_model", help="model name for TFaaS")
    p.add_argument("--patience", type=int, default=3, help="early-stopping patience (0: off)")
    p.add_argument(
        "--class-weight",
        choices=["none", "balanced", "auto"],
        help="balanced: each class weighs the same; auto (default): balanced for weighted shards",
    )
    add_settings_flags(p, scope="train")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "check-model",
        help="import model.py, call model(idim) for the merged layout and check the model",
    )
    add_layout_option(
        p,
        help="layout.json written by 'rootml merge' (without it: import model.py and try "
        "model(8), what can be checked before the files are read)",
        required=False,
    )
    p.add_argument("--model", help="model.py defining model(idim) (default: input.yml's)")
    p.add_argument("--input", help="input.yml naming the model, when --model is not given")
    p.add_argument("--out", help="also write the check's record (JSON) here")
    p.set_defaults(params=None, func=cmd_check_model)

    p = sub.add_parser("evaluate", help="metrics, plots and an HTML report on the test split")
    p.add_argument("--bundle", required=True, help="bundle folder written by 'rootml train'")
    p.add_argument("--shards", nargs="+", required=True, help="shard files or folders")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument(
        "--max-train",
        type=int,
        default=200_000,
        help="train events scored for the overtraining check",
    )
    p.add_argument(
        "--features",
        metavar="DIR",
        help="the folder 'rootml features' wrote (default: draw the feature plots here)",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "features", help="per-class histograms and plots of every feature on the test split"
    )
    add_layout_option(p, help="the layout.json the shards were written with")
    p.add_argument("--shards", nargs="+", required=True, help="shard files or folders")
    p.add_argument("--out", required=True, help="folder for features.json and features.png")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("predict", help="score every event of raw ROOT files through a bundle")
    p.add_argument("--bundle", required=True)
    p.add_argument("files", nargs="+", help="ROOT files (paths or URLs)")
    p.add_argument("--redirector", help="XRootD prefix for LFNs")
    p.add_argument("--out", help="predictions .h5, .csv or .json (default: a summary on stdout)")
    p.add_argument("--url", help="score through this TFaaS / rootml serve server instead")
    p.add_argument("--name", help="model name on the server (default: the bundle's)")
    p.add_argument("--token-env", metavar="VAR", help="environment variable holding the token")
    p.set_defaults(func=cmd_predict)
