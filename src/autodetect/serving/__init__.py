"""The scoring server (`autodetect serve`), laid out as KServe's model server is:

    model.py        load an artifact, pick its runtime (onnx_runtime.py or the family's torch
                    predict), warm it up
    batcher.py      dynamic micro-batching; decoding and preprocessing on a thread pool
    dataplane.py    what requests mean, protocol-neutral (Azure's request forms, the Open
                    Inference Protocol's), the model's life (ready only after warm-up)
    app.py          the HTTP transport (`create_app(config)`), the one place errors become responses
    server.py       the process: uvicorn, SIGTERM drains the requests in flight
    auth.py, metrics.py, config.py, errors.py, client.py (`autodetect predict`), commands.py

HTTP API (errors are `{"error": "..."}` with a 4xx/5xx status):

    POST /score                     application/octet-stream (or image/*): one image ->
                                    {"filename", "boxes": [{"box": {topX, topY, bottomX, bottomY}, "label", "score"}]}
                                    (filename from Content-Disposition, else "image");
                                    application/json {"input_data": {"columns": ["image"], "data": [b64, ...]}}
                                    -> [{"boxes": [...]}, ...], one per image, in order.
                                    Query: box_score_threshold, nms_iou_threshold, max_detections.
    GET  /v1/model                  name, version, family, classes, input size, runtime, device, defaults
    GET  /healthz  /readyz          alive (500 when the model failed to load) / loaded and warmed up (503 before)
    GET  /metrics                   Prometheus: autodetect_requests_total{route,method,status},
                                    autodetect_request_duration_seconds, autodetect_batch_size,
                                    autodetect_inference_duration_seconds, autodetect_model_info{name,version,...}
    Open Inference Protocol (KServe v2, JSON form):
    GET  /v2/health/live  /v2/health/ready  /v2  /v2/models/{name}[/versions/{v}][/ready]
    POST /v2/models/{name}[/versions/{v}]/infer
         in:  {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [N], "data": [b64, ...]}],
               "parameters": {"box_score_threshold": ..., ...}}   (optional)
         out: {"model_name", "model_version", "id", "outputs": [{"name": "boxes", "datatype": "BYTES",
               "shape": [N], "data": ["{\"boxes\": [...]}", ...]}]}  (each element Azure's JSON for one image)

Auth: `Authorization: Bearer <key>`, keys from --keys-file (one a line) and $AUTODETECT_API_KEYS
(comma-separated); 401 with WWW-Authenticate otherwise. Open without a key: /healthz, /readyz,
/metrics, /v2/health/live, /v2/health/ready (probes and scrapers; they tell nothing about the model).
Limits: body bytes (413, checked while streaming), images per request (413), pixels per image
(400, decompression bombs). With --workers > 1 each process has its own metrics; prefer replicas.
"""
