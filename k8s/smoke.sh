#!/usr/bin/env bash
# Smoke test of litedet on your own Kubeflow Pipelines 2.16 / 2.17 cluster (docs/kubeflow.md,
# "Smoke test on a real cluster"). From the repository root, with the litedet virtualenv active:
#
#   k8s/smoke.sh --image localhost/litedet:smoke --kind kind          # kind: build, load
#   k8s/smoke.sh --image REGISTRY/litedet:smoke --push                # a registry: build, push
#   k8s/smoke.sh --mode multi-user --namespace my-profile --image ... # a profile namespace
#   make smoke SMOKE_ARGS="--image ... --kind kind"
#
# What it does, in order: applies the overlay (multi-user: and patches the profile's kfp-launcher),
# builds the image and loads or pushes it, writes a tiny synthetic dataset to KFP's SeaweedFS,
# compiles (offline), uploads the pipeline as `litedet-smoke`, starts a run WITHOUT
# --pipeline-root (the namespace's kfp-launcher default applies, as for a run from the UI),
# waits, reads the gate's verdict (gate.json) and checks the model store against it. Prints
# PASS or FAIL; exits 0 on PASS, 1 on FAIL, 2 on a usage error.
#
# Connection: kubectl's current context (or --context). The KFP API: $KFP_ENDPOINT (with
# $KFP_BEARER_TOKEN where the endpoint needs one; required for multi-user), else a port-forward to
# svc/ml-pipeline in kubeflow. SeaweedFS: $AWS_ENDPOINT_URL if set, else a port-forward to
# svc/seaweedfs; its credentials are read from the namespace's Secret mlpipeline-minio-artifact
# into this process's environment only (never printed, never written to disk).
#
# --dry-run: renders the overlay and runs everything that talks to KFP and the store (compile,
# upload, run --wait, the store checks) against $KFP_ENDPOINT and $AWS_ENDPOINT_URL, and prints,
# instead of running, every command that changes the cluster or builds an image (kubectl apply,
# kubectl patch, docker, kind, port-forwards, reading the Secret). tests/test_kfp_client.py runs
# it that way against a loopback KFP API and a loopback S3 server.
set -euo pipefail

MODE=standalone
NAMESPACE=""
IMAGE=""
KIND_CLUSTER=""
PUSH=0
BUILD=1
DRY_RUN=0
CONTEXT=""
TRAIN_STEPS=${SMOKE_TRAIN_STEPS:-200}
# 224 px: the ImageNet weights the image bakes by default (alpha 0.35 at 224) are used, so the
# run also shows that the Trainer needs no egress.
IMAGE_SIZE=${SMOKE_IMAGE_SIZE:-224}
TIMEOUT_S=${SMOKE_TIMEOUT_S:-5400}
POLL_S=${SMOKE_POLL_S:-20}
LITEDET=${LITEDET:-litedet}
PYTHON=${PYTHON:-python}

usage() {
  sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
  echo "options: --mode standalone|multi-user  --namespace NS  --image REF  --kind CLUSTER | --push"
  echo "         --skip-build  --context KUBE_CONTEXT  --dry-run"
}

die() { echo "smoke: error: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --mode) MODE=${2:?}; shift 2 ;;
    --namespace) NAMESPACE=${2:?}; shift 2 ;;
    --image) IMAGE=${2:?}; shift 2 ;;
    --kind) KIND_CLUSTER=${2:?}; shift 2 ;;
    --push) PUSH=1; shift ;;
    --skip-build) BUILD=0; shift ;;
    --context) CONTEXT=${2:?}; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument $1" ;;
  esac
done

cd "$(dirname "$0")/.."
[ -n "$IMAGE" ] || die "--image REF: the image the steps run in (built here unless --skip-build)"
case "$MODE" in
  standalone) NAMESPACE=${NAMESPACE:-kubeflow}; OVERLAY=k8s/overlays/kfp-standalone ;;
  multi-user)
    [ -n "$NAMESPACE" ] || die "--namespace PROFILE: the profile namespace runs go to"
    OVERLAY=k8s/overlays/kfp-multi-user ;;
  *) die "--mode must be standalone or multi-user, not $MODE" ;;
esac
if [ "$BUILD" = 1 ] && [ -z "$KIND_CLUSTER" ] && [ "$PUSH" = 0 ]; then
  die "say where the built image goes: --kind CLUSTER or --push (or --skip-build)"
fi
if [ "$MODE" = multi-user ] && [ -z "${KFP_ENDPOINT:-}" ]; then
  die "multi-user: set KFP_ENDPOINT (e.g. https://kubeflow.example.com/pipeline) and KFP_BEARER_TOKEN"
fi

KUBECTL=(kubectl)
[ -n "$CONTEXT" ] && KUBECTL+=(--context "$CONTEXT")
for tool in kubectl "$LITEDET" "$PYTHON"; do
  command -v "$tool" >/dev/null || die "$tool is not on PATH"
done
if [ "$BUILD" = 1 ] && [ "$DRY_RUN" = 0 ]; then
  command -v docker >/dev/null || die "docker is not on PATH (or use --skip-build)"
  if [ -n "$KIND_CLUSTER" ]; then command -v kind >/dev/null || die "kind is not on PATH"; fi
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/litedet-smoke.XXXXXX")
FORWARDS=()
cleanup() {
  for pid in "${FORWARDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

step() { echo; echo "== $*"; }
# Changes the cluster or builds: printed in --dry-run, run otherwise.
act() {
  if [ "$DRY_RUN" = 1 ]; then printf '+ would run:'; printf ' %q' "$@"; echo; else "$@"; fi
}

forward() {  # forward SERVICE LOCAL_PORT REMOTE_PORT: a port-forward in kubeflow, until exit
  if [ "$DRY_RUN" = 1 ]; then
    echo "+ would run: ${KUBECTL[*]} -n kubeflow port-forward svc/$1 $2:$3"
    return
  fi
  "${KUBECTL[@]}" -n kubeflow port-forward "svc/$1" "$2:$3" >"$WORK/forward-$1.log" 2>&1 &
  FORWARDS+=("$!")
  for _ in $(seq 1 30); do
    if (echo >"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return; fi
    sleep 1
  done
  echo "smoke: error: port-forward to svc/$1 did not come up: $(cat "$WORK/forward-$1.log")" >&2
  exit 1
}

STAMP=$(date -u +%Y%m%d-%H%M%S)
if [ "$MODE" = standalone ]; then
  BASE=s3://mlpipeline/litedet-smoke
  CONFIG=k8s/examples/kfp-standalone-config.yaml
else
  BASE=s3://mlpipeline/private/$NAMESPACE/litedet-smoke
  CONFIG=k8s/examples/kfp-multi-user-config.yaml
fi
DATA=$BASE/datasets/shapes-$STAMP
MODELS=$BASE/models

step "1/8 cluster objects ($OVERLAY, namespace $NAMESPACE)"
if [ "$MODE" = standalone ]; then
  kubectl kustomize "$OVERLAY" >"$WORK/overlay.yaml"
  ROOT=$(sed -n 's/^ *defaultPipelineRoot: *//p' "$WORK/overlay.yaml")
else
  # The overlay with the profile's name: a kustomization on top of it (kustomize wants the
  # path relative).
  mkdir -p "$WORK/overlay"
  printf 'namespace: %s\nresources:\n- %s\n' "$NAMESPACE" \
      "$(realpath --relative-to="$WORK/overlay" "$OVERLAY")" >"$WORK/overlay/kustomization.yaml"
  kubectl kustomize "$WORK/overlay" >"$WORK/overlay.yaml"
  sed "s/PROFILE/$NAMESPACE/g" "$OVERLAY/kfp-launcher-patch.yaml" >"$WORK/kfp-launcher-patch.yaml"
  ROOT=$(sed -n 's/^ *defaultPipelineRoot: *//p' "$WORK/kfp-launcher-patch.yaml")
fi
echo "rendered $(grep -c '^kind:' "$WORK/overlay.yaml") objects; the pipeline root runs get: $ROOT"
act "${KUBECTL[@]}" apply -f "$WORK/overlay.yaml"
if [ "$MODE" = multi-user ]; then
  act "${KUBECTL[@]}" -n "$NAMESPACE" patch configmap kfp-launcher --type merge \
      --patch-file "$WORK/kfp-launcher-patch.yaml"
fi
if [ "$DRY_RUN" = 0 ]; then
  GOT=$("${KUBECTL[@]}" -n "$NAMESPACE" get configmap kfp-launcher -o jsonpath='{.data.defaultPipelineRoot}')
  [ "$GOT" = "$ROOT" ] || { echo "smoke: FAIL: kfp-launcher in $NAMESPACE has root '$GOT', not $ROOT" >&2; exit 1; }
fi

step "2/8 image $IMAGE"
if [ "$BUILD" = 1 ]; then
  act docker build -t "$IMAGE" .
  if [ -n "$KIND_CLUSTER" ]; then
    act kind load docker-image "$IMAGE" --name "$KIND_CLUSTER"
  else
    act docker push "$IMAGE"
  fi
else
  echo "using the existing image (--skip-build)"
fi

step "3/8 connections"
if [ -z "${KFP_ENDPOINT:-}" ]; then
  forward ml-pipeline 18888 8888
  export KFP_ENDPOINT=http://127.0.0.1:18888
fi
if [ -z "${AWS_ENDPOINT_URL:-}" ]; then
  forward seaweedfs 18333 8333
  export AWS_ENDPOINT_URL=http://127.0.0.1:18333
fi
if [ -z "${AWS_ACCESS_KEY_ID:-}" ]; then
  if [ "$DRY_RUN" = 1 ]; then
    echo "+ would read the Secret mlpipeline-minio-artifact in $NAMESPACE into AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY"
  else
    AWS_ACCESS_KEY_ID=$("${KUBECTL[@]}" -n "$NAMESPACE" get secret mlpipeline-minio-artifact -o jsonpath='{.data.accesskey}' | base64 -d)
    AWS_SECRET_ACCESS_KEY=$("${KUBECTL[@]}" -n "$NAMESPACE" get secret mlpipeline-minio-artifact -o jsonpath='{.data.secretkey}' | base64 -d)
    export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
  fi
fi
export AWS_REGION=${AWS_REGION:-us-east-1}
echo "KFP API $KFP_ENDPOINT; S3 $AWS_ENDPOINT_URL"

step "4/8 tiny dataset -> $DATA"
"$LITEDET" data synth --out "$WORK/shapes" --num-train 64 --num-eval 16 >/dev/null
"$PYTHON" -m litedet.kfp.smoke upload "$WORK/shapes" "$DATA"
BEFORE=$("$PYTHON" -m litedet.kfp.smoke versions "$MODELS" | tr '\n' ' ')
echo "model store $MODELS before the run: ${BEFORE:-no versions}"

step "5/8 compile (offline)"
DATASET="{\"root\": \"$DATA\", \"format\": \"coco\", \"sources\": {\"train\": \"annotations/instances_train.json\", \"eval\": \"annotations/instances_eval.json\"}}"
"$LITEDET" compile --image "$IMAGE" --config "$CONFIG" --pipeline-root "$ROOT" \
    --set "dataset=$DATASET" --set evaluation.num_classes=5 \
    --set "transform.image_size=$IMAGE_SIZE" --set "push.destination=$MODELS" \
    --output "$WORK/litedet-kfp.yaml"

NS_FLAGS=()
[ "$MODE" = multi-user ] && NS_FLAGS=(--namespace "$NAMESPACE")
step "6/8 upload"
"$LITEDET" kfp upload --package "$WORK/litedet-kfp.yaml" --name litedet-smoke "${NS_FLAGS[@]}"

step "7/8 run without --pipeline-root, wait (at most ${TIMEOUT_S} s)"
set +e
"$LITEDET" kfp run --pipeline litedet-smoke --run-name "litedet smoke $STAMP" "${NS_FLAGS[@]}" \
    --param "train_steps=$TRAIN_STEPS" --param min_map50=0.0 \
    --wait --wait-timeout "$TIMEOUT_S" --poll "$POLL_S" --gate-root "$ROOT"
VERDICT=$?
set -e

step "8/8 the store against the verdict"
AFTER=$("$PYTHON" -m litedet.kfp.smoke versions "$MODELS" | tr '\n' ' ')
echo "model store $MODELS after the run: ${AFTER:-no versions}"
new_versions=$(( $(wc -w <<<"$AFTER") - $(wc -w <<<"$BEFORE") ))
case "$VERDICT" in
  0) if [ "$new_versions" = 1 ]; then RESULT=PASS; WHY="blessed, and one new version was pushed";
     else RESULT=FAIL; WHY="blessed, but $new_versions new versions in the store (expected 1)"; fi ;;
  3) if [ "$new_versions" = 0 ]; then RESULT=PASS; WHY="not blessed (see gate.json), and nothing was pushed";
     else RESULT=FAIL; WHY="not blessed, yet $new_versions new versions in the store"; fi ;;
  *) RESULT=FAIL; WHY="the run failed or its verdict could not be read (exit $VERDICT, above)" ;;
esac
echo
echo "smoke: $RESULT: $WHY"
[ "$RESULT" = PASS ]
