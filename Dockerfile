# The operator's image: `autodetect operator` (kopf) as a non-root user. No torch: the operator imports the
# specs and the decision engine only (import-linter contracts in pyproject.toml).
#   docker build -f images/base.Dockerfile -t autodetect-base:0.1.0 .
#   docker build -t autodetect-operator:0.1.0 .
ARG BASE_IMAGE=autodetect-base:0.1.0
# hadolint ignore=DL3006
FROM ${BASE_IMAGE}
# metrics, liveness, the admission webhook (the defaults of `autodetect operator`)
EXPOSE 8000 8080 9443
ENTRYPOINT ["autodetect", "operator"]
