"""k8s/: every overlay renders offline with `kubectl kustomize` and validates against the
Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors), and the
rules the manifests promise hold (no secret values, least-privilege RBAC, pod security)."""

import pathlib
import shutil
import subprocess

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
OVERLAYS = sorted(p.parent for p in (REPO / "k8s" / "overlays").glob("*/kustomization.yaml"))
EXAMPLE_MANIFESTS = [REPO / "k8s" / "examples" / "submit-run-job.yaml"]
# The oldest Kubernetes that Kubeflow 1.9/1.10 supports, and the kubectl here.
KUBERNETES_VERSIONS = ("1.29.0", "1.32.0")
# Kinds without a built-in schema (CRDs) and the fields their controllers require.
CUSTOM_KINDS = {("kubeflow.org/v1alpha1", "PodDefault"): ("selector", "desc")}

kubectl = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(
    kubectl is None, reason="kubectl is not installed: `kubectl kustomize` renders the overlays"
)


def render(overlay):
    result = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="module")
def rendered():
    return {overlay.name: render(overlay) for overlay in OVERLAYS}


def _validate(document):
    import kubernetes_validate

    key = (document["apiVersion"], document["kind"])
    if key in CUSTOM_KINDS:
        missing = [f for f in CUSTOM_KINDS[key] if f not in document.get("spec", {})]
        assert not missing, f"{document['kind']}: missing spec.{missing}"
        return
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(document, version, strict=True)


def test_both_overlays_exist():
    assert {o.name for o in OVERLAYS} == {"local-pvc", "object-store"}


@needs_kubectl
def test_every_overlay_renders_and_validates(rendered):
    for name, documents in rendered.items():
        assert documents, name
        for document in documents:
            _validate(document)


@needs_kubectl
def test_every_namespaced_object_lands_in_the_pipeline_namespace(rendered):
    for documents in rendered.values():
        for d in documents:
            if d["kind"] != "Namespace":
                assert d["metadata"]["namespace"] == "litedet", d["metadata"]["name"]


@needs_kubectl
def test_no_secret_values_are_committed(rendered):
    for documents in rendered.values():
        assert not [d for d in documents if d["kind"] == "Secret"]
    for path in (REPO / "k8s").rglob("*.yaml"):
        text = path.read_text()
        assert "PRIVATE KEY" not in text and "kind: Secret" not in text, path


@needs_kubectl
def test_rbac_is_namespaced_and_least_privilege(rendered):
    for documents in rendered.values():
        kinds = {d["kind"] for d in documents}
        assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
        for role in (d for d in documents if d["kind"] == "Role"):
            for rule in role["rules"]:
                assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
                if "secrets" in rule["resources"] or "configmaps" in rule["resources"]:
                    assert rule.get("resourceNames") and rule["verbs"] == ["get"], rule


@needs_kubectl
def test_the_namespace_enforces_baseline_and_warns_on_restricted(rendered):
    for documents in rendered.values():
        [namespace] = [d for d in documents if d["kind"] == "Namespace"]
        labels = namespace["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
        assert labels["pod-security.kubernetes.io/warn"] == "restricted"


@needs_kubectl
def test_the_limit_range_admits_every_component_the_pipeline_sizes(rendered):
    """LimitRange max must fit the largest step (the Trainer), and its default request must
    stay under the smallest step's limit, or admission rejects those pods."""
    from kubernetes.utils.quantity import parse_quantity

    from litedet.pipeline.kubeflow_v2_runner import COMPONENT_RESOURCES, DEFAULT_RESOURCES

    sizes = list(COMPONENT_RESOURCES.values()) + [DEFAULT_RESOURCES]
    for documents in rendered.values():
        [limit_range] = [d for d in documents if d["kind"] == "LimitRange"]
        [container] = [x for x in limit_range["spec"]["limits"] if x["type"] == "Container"]
        assert max(s.cpu for s in sizes) <= parse_quantity(container["max"]["cpu"])
        # KFP writes memory in G (10^9 bytes).
        assert max(s.memory_gb for s in sizes) * 1e9 <= parse_quantity(container["max"]["memory"])
        assert parse_quantity(container["defaultRequest"]["cpu"]) <= min(s.cpu for s in sizes)
        assert (
            parse_quantity(container["defaultRequest"]["memory"])
            <= min(s.memory_gb for s in sizes) * 1e9
        )


@needs_kubectl
def test_the_launcher_config_points_at_a_gcs_pipeline_root(rendered):
    for documents in rendered.values():
        [launcher] = [
            d
            for d in documents
            if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "kfp-launcher"
        ]
        assert launcher["data"]["defaultPipelineRoot"].startswith("gs://")


@needs_kubectl
def test_the_pvc_overlay_mounts_the_datasets_into_kfp_step_pods(rendered):
    documents = rendered["local-pvc"]
    [pvc] = [d for d in documents if d["kind"] == "PersistentVolumeClaim"]
    [pod_default] = [d for d in documents if d["kind"] == "PodDefault"]
    spec = pod_default["spec"]
    assert spec["selector"]["matchLabels"] == {"pipelines.kubeflow.org/v2_component": "true"}
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in spec["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == [pvc["metadata"]["name"]]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    secrets = [v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v]
    [runner_role] = [
        d
        for d in documents
        if d["kind"] == "Role" and d["metadata"]["name"] == "litedet-pipeline-runner"
    ]
    readable = [
        n for r in runner_role["rules"] if "secrets" in r["resources"] for n in r["resourceNames"]
    ]
    assert readable == secrets  # the launcher may read exactly the key it is told to use


@pytest.mark.parametrize("path", EXAMPLE_MANIFESTS, ids=lambda p: p.name)
def test_example_workloads_validate_and_run_restricted(path):
    for document in (d for d in yaml.safe_load_all(path.read_text()) if d):
        _validate(document)
        pod = document["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["limits"]


def test_the_recurring_run_example_is_valid_cli_input():
    from litedet.kfp import cli as kfp_cli
    from litedet.kfp import client as kfp_client

    settings = yaml.safe_load((REPO / "k8s" / "examples" / "recurring-run.yaml").read_text())
    assert kfp_client.normalize_cron(settings["cron"]) == "0 0 3 * * *"
    assert kfp_cli.parse_parameters([f"{k}={v}" for k, v in settings["parameters"].items()])
    assert 1 <= settings["max_concurrency"] <= 10
