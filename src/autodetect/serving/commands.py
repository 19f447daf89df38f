"""Subcommands of this area (see autodetect.cli): serve, predict, export."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from autodetect.errors import SpecError


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="serve a trained model over HTTP (Azure's scoring API, KServe v2)")
    serve.add_argument("--model", required=True, type=Path, help="artifact directory (with model_card.json)")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--grpc-port", type=int, help="also serve the Open Inference Protocol over gRPC on this port "
                                                     "(KServe's grpc_predict_v2; keys as 'authorization: Bearer' metadata)")
    serve.add_argument("--keys-file", type=Path, help="API keys, one a line (also read: $AUTODETECT_API_KEYS, comma-separated)")
    serve.add_argument("--no-auth", action="store_true", help="serve without authentication")
    serve.add_argument("--runtime", choices=("auto", "openvino", "onnx", "torch"), default="auto",
                       help="auto: the fastest OpenVINO export in the artifact that this CPU runs (int8, then bf16, then fp32; see "
                            "export --runtime openvino), else ONNX Runtime. onnx: ONNX Runtime (exported at start unless <model>/model.onnx exists; auto falls back to torch "
                            "when the export fails). torchvision models' ONNX graphs bake in a score floor of 0.01, the "
                            "trial's nms_iou_threshold and box_detections_per_image: per request, only stricter values "
                            "apply; use torch to loosen them")
    serve.add_argument("--letterbox", choices=("rect", "square"), default="rect",
                       help="ONNX runtime of YOLO models: rect pads images only to the stride (less compute; ultralytics' validation "
                            "does the same), square pads to image_size x image_size exactly as the torch runtime does")
    serve.add_argument("--max-batch-size", type=int, default=0,
                       help="most images in one model call (0: 8 on a GPU, 2 on a CPU, where bigger batches are slower)")
    serve.add_argument("--max-wait-ms", type=float, default=5.0, help="longest a queued image waits for a batch to fill")
    serve.add_argument("--workers", type=int, default=1, help="server processes (metrics are per process)")
    serve.add_argument("--threads", type=int, default=0, help="the runtime's intra-op threads (0: the CPUs this process may use, cgroup limit included)")
    serve.add_argument("--decode-threads", type=int, default=4, help="threads decoding and preprocessing images")
    serve.add_argument("--max-body-mb", type=float, default=20.0, help="largest request body")
    serve.add_argument("--max-pixels", type=int, default=None, help="largest image in pixels (decompression bombs)")
    serve.add_argument("--graceful-timeout", type=float, default=30.0, help="seconds to finish requests on SIGTERM")
    serve.add_argument("--drain-seconds", type=float, default=5.0,
                       help="after SIGTERM, seconds of serving while not ready, before the listener closes")
    serve.add_argument("--max-queued-images", type=int, default=0,
                       help="images waiting for the model before 503 + Retry-After (0: max(64, 4 batches))")
    serve.add_argument("--header-timeout", type=float, default=10.0, help="seconds for a request's headers (then 408)")
    serve.add_argument("--body-timeout", type=float, default=60.0, help="seconds for a request's body (then 408)")
    serve.add_argument("--max-connections", type=int, default=1000, help="open connections beyond which requests get 503")
    serve.set_defaults(handler=_serve)

    predict = subparsers.add_parser("predict", help="score an image with a served model and print the JSON")
    predict.add_argument("image", type=Path)
    predict.add_argument("--endpoint", required=True, help="the scoring URL (http://host:port[/score])")
    predict.add_argument("--key", help="API key (Authorization: Bearer)")
    predict.add_argument("--out", type=Path, help="also draw the boxes on the image into this PNG")
    predict.add_argument("--box-score-threshold", type=float)
    predict.add_argument("--nms-iou-threshold", type=float)
    predict.add_argument("--max-detections", type=int)
    predict.set_defaults(handler=_predict)

    export = subparsers.add_parser("export", help="export a trained model (ONNX, or OpenVINO into the artifact)")
    export.add_argument("--model", required=True, type=Path, help="artifact directory (with model_card.json)")
    export.add_argument("--onnx", action="store_true", help="export to ONNX (the default runtime)")
    export.add_argument("--runtime", choices=("onnx", "openvino"), default="onnx")
    export.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                        help="openvino: bf16 needs AMX or AVX-512 BF16; int8 is calibrated on the model's training images")
    export.add_argument("--tolerance", type=float, default=0.01,
                        help="openvino: the most mean_average_precision the conversion may lose on the validation set")
    export.add_argument("--data", help="openvino: training JSONL for calibration and the split (default: the card's)")
    export.add_argument("--validation", help="openvino: validation JSONL (default: the card's, or split off --data)")
    export.add_argument("--threads", type=int, default=0, help="openvino: inference threads while evaluating")
    export.add_argument("--out", type=Path, help="onnx: where to write it (default: <model>/model.onnx, which serve then uses)")
    export.set_defaults(handler=_export)


def _check_artifact(directory: Path) -> None:
    if not (directory / "model_card.json").is_file():
        raise SpecError("--model", f"{directory}: not a model artifact (no model_card.json)")


def _serve(args: argparse.Namespace) -> int:
    from autodetect.data.images import MAX_PIXELS
    from autodetect.serving.auth import load_keys
    from autodetect.serving.config import ServerConfig
    from autodetect.serving.server import serve

    _check_artifact(args.model)
    config = ServerConfig(
        model_dir=args.model, host=args.host, port=args.port, grpc_port=args.grpc_port, auth=not args.no_auth,
        api_keys=frozenset() if args.no_auth else load_keys(args.keys_file), runtime=args.runtime,
        letterbox=args.letterbox,
        max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms, workers=args.workers,
        inference_threads=args.threads, decode_threads=args.decode_threads,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024), max_pixels=args.max_pixels or MAX_PIXELS,
        graceful_timeout_s=args.graceful_timeout, drain_s=args.drain_seconds,
        max_queued_images=args.max_queued_images, max_connections=args.max_connections,
        header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout,
    )
    serve(config)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from autodetect.serving.client import score_image

    overrides = {"box_score_threshold": args.box_score_threshold, "nms_iou_threshold": args.nms_iou_threshold,
                 "max_detections": args.max_detections}
    response = score_image(args.endpoint, args.image, args.key, overrides)
    print(json.dumps(response, indent=2))
    if args.out:
        from autodetect.visualize import draw_detections

        draw_detections(args.image, response, args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace) -> int:
    from autodetect.models.registry import load_artifact

    _check_artifact(args.model)
    if args.runtime == "openvino":
        from autodetect.serving.openvino_runtime import export_openvino

        entry = export_openvino(args.model, args.precision, args.tolerance, args.threads, args.data, args.validation)
        print(json.dumps(entry, indent=1))
        return 0
    path = load_artifact(args.model).export_onnx(args.out or args.model / "model.onnx")
    print(path)
    return 0
