"""k8s/: every overlay renders offline with `kubectl kustomize` and validates against the
Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors), and the
rules the manifests promise hold: no secret values, least-privilege RBAC with a reason written
next to every grant, pod security, step egress limited to what a run needs, and the MinIO overlay
consistent with the litedet configuration that goes with it. k8s/flink (the Beam steps on Flink)
renders too: its FlinkDeployment against the Flink operator's own schema, and the job server and
worker pool where k8s/examples/flink-config.yaml points."""

import ipaddress
import os
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

from tests.crd_schema import strict

REPO = pathlib.Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
EXAMPLE_MANIFESTS = [K8S / "examples" / "submit-run-job.yaml"]
MINIO_CONFIG = K8S / "examples" / "minio-config.yaml"
# The oldest Kubernetes that Kubeflow 1.9/1.10 supports, and the kubectl here.
KUBERNETES_VERSIONS = ("1.29.0", "1.32.0")
# Kinds without a built-in schema (CRDs) and the fields their controllers require.
CUSTOM_KINDS = {("kubeflow.org/v1alpha1", "PodDefault"): ("selector", "desc")}
# The label KFP's Argo compiler puts on every pod of a v2 run (drivers and steps).
STEP_POD_LABELS = {"pipelines.kubeflow.org/v2_component": "true"}
# Secrets the KFP launcher reads through the Kubernetes API, per overlay (kfp-launcher providers).
LAUNCHER_SECRETS = {
    "local-pvc": {"litedet-gcs-key"},
    "minio": {"mlpipeline-minio-artifact"},
    "object-store": set(),
}
# Field names KFP 2.17's launcher reads from an s3 provider (backend/src/v2/config/s3.go tags).
S3_DEFAULT_FIELDS = {
    "endpoint",
    "credentials",
    "region",
    "disableSSL",
    "forcePathStyle",
    "maxRetries",
}
S3_CREDENTIAL_FIELDS = {"fromEnv", "secretRef"}
S3_SECRET_REF_FIELDS = {"secretName", "accessKeyKey", "secretKeyKey"}

# Overlays whose objects live in litedet's own namespace (`litedet`, from the base); the KFP
# 2.17 overlays land in `kubeflow` (standalone) and a profile namespace (multi-user).
LITEDET_NAMESPACE_OVERLAYS = ("local-pvc", "minio", "object-store")
STANDALONE, MULTI_USER = "kfp-standalone", "kfp-multi-user"
# Overlays that own a namespace's egress (NetworkPolicies, LimitRange, quota, Pod Security).
NAMESPACE_OWNING_OVERLAYS = LITEDET_NAMESPACE_OVERLAYS + (MULTI_USER,)

# `kubectl kustomize` renders the overlays. kubectl is no Debian package: on a machine without it
# these tests fail, saying so, unless skipping them is asked for (never silently).
kubectl = shutil.which("kubectl")
SKIP_WITHOUT_KUBECTL = os.environ.get("LITEDET_SKIP_KUBECTL_TESTS") == "1"
needs_kubectl = pytest.mark.skipif(
    kubectl is None and SKIP_WITHOUT_KUBECTL,
    reason="kubectl is not installed and LITEDET_SKIP_KUBECTL_TESTS=1 asked to skip",
)


def render(kustomization_dir):
    if kubectl is None:
        pytest.fail(
            "kubectl is not installed: these tests render k8s/ with `kubectl kustomize`; install "
            "kubectl 1.29+ (docs/toolchain.md), or set LITEDET_SKIP_KUBECTL_TESTS=1 to skip them"
        )
    result = subprocess.run(
        [kubectl, "kustomize", str(kustomization_dir)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="module")
def all_rendered():
    return {overlay.name: render(overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="module")
def rendered(all_rendered):
    """The overlays for litedet's own namespace (the rules below hold for each of them)."""
    return {name: all_rendered[name] for name in LITEDET_NAMESPACE_OVERLAYS}


@pytest.fixture(scope="module")
def namespace_owning(all_rendered):
    """The overlays that set up a namespace: its egress, Pod Security, LimitRange, quota."""
    return {name: all_rendered[name] for name in NAMESPACE_OWNING_OVERLAYS}


def _validate(document):
    import kubernetes_validate

    key = (document["apiVersion"], document["kind"])
    if key in CUSTOM_KINDS:
        missing = [f for f in CUSTOM_KINDS[key] if f not in document.get("spec", {})]
        assert not missing, f"{document['kind']}: missing spec.{missing}"
        return
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(document, version, strict=True)


def _one(documents, kind, name=None):
    found = [d for d in documents if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def _image_uid():
    user = [
        line.split()[1]
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    ][-1]
    return int(user.split(":")[0])


def test_every_overlay_exists():
    assert {o.name for o in OVERLAYS} == set(LITEDET_NAMESPACE_OVERLAYS) | {STANDALONE, MULTI_USER}
    assert set(LAUNCHER_SECRETS) == set(LITEDET_NAMESPACE_OVERLAYS)


@needs_kubectl
def test_every_overlay_renders_and_validates(all_rendered):
    for name, documents in all_rendered.items():
        assert documents, name
        for document in documents:
            _validate(document)


@needs_kubectl
def test_every_namespaced_object_lands_in_the_pipeline_namespace_with_the_litedet_label(
    rendered,
):
    for documents in rendered.values():
        for d in (d for d in documents if d["kind"] != "Namespace"):
            assert d["metadata"]["namespace"] == "litedet", d["metadata"]["name"]
            labels = d["metadata"].get("labels", {})
            assert labels.get("app.kubernetes.io/part-of") == "litedet", d["metadata"]["name"]


@needs_kubectl
def test_no_secret_values_are_committed(all_rendered):
    for documents in all_rendered.values():
        assert not [d for d in documents if d["kind"] == "Secret"]
    for path in K8S.rglob("*.yaml"):
        text = path.read_text()
        assert "PRIVATE KEY" not in text and "kind: Secret" not in text, path


# --- RBAC --------------------------------------------------------------------------------------


def _rules(role):
    """Each rule as (apiGroup, resource, verbs, resourceNames), one per group and resource."""
    return {
        (
            group,
            resource,
            tuple(sorted(rule["verbs"])),
            tuple(sorted(rule.get("resourceNames", []))),
        )
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }


@needs_kubectl
def test_rbac_is_namespaced_and_least_privilege(all_rendered):
    for documents in all_rendered.values():
        kinds = {d["kind"] for d in documents}
        assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
        for role in (d for d in documents if d["kind"] == "Role"):
            for rule in role["rules"]:
                assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
                if "secrets" in rule["resources"] or "configmaps" in rule["resources"]:
                    assert rule.get("resourceNames") and rule["verbs"] == ["get"], rule


@needs_kubectl
def test_no_role_grants_anything_on_pods(all_rendered):
    """A `patch pods` grant cannot be narrowed to a step's own pod: it would let every step
    rewrite every pod in the namespace (Argo < 3.4 needs it; not granted, see rbac.yaml)."""
    for documents in all_rendered.values():
        for role in (d for d in documents if d["kind"] == "Role"):
            for rule in role["rules"]:
                assert not {r for r in rule["resources"] if r.split("/")[0] == "pods"}, rule


@needs_kubectl
def test_the_runner_role_grants_exactly_what_argo_and_the_kfp_launcher_use(rendered):
    for name, documents in rendered.items():
        role = _one(documents, "Role", "litedet-pipeline-runner")
        expected = {
            ("argoproj.io", "workflowtaskresults", ("create", "patch"), ()),
            ("", "configmaps", ("get",), ("kfp-launcher",)),
        } | {("", "secrets", ("get",), (secret,)) for secret in LAUNCHER_SECRETS[name]}
        assert _rules(role) == expected, name


def _rule_starts(lines):
    """Line numbers where an RBAC rule begins: `- apiGroups:` in a Role, or a JSON patch that
    adds a rule (`- op: add` followed by `path: /rules/-`)."""
    for number, line in enumerate(lines):
        if re.match(r"^\s*- apiGroups:", line):
            yield number
        elif re.match(r"^\s*- op: add\s*$", line) and any(
            "path: /rules/-" in following for following in lines[number + 1 : number + 3]
        ):
            yield number


def test_every_rbac_rule_says_why_in_a_comment_above_it():
    found = 0
    for path in K8S.rglob("*.yaml"):
        lines = path.read_text().splitlines()
        for number in _rule_starts(lines):
            found += 1
            above = [line.strip() for line in lines[:number] if line.strip()]
            assert above and above[-1].startswith("#"), f"{path}:{number + 1}: say why"
    assert found >= 5  # runner (2), submitter (1), local-pvc and minio secret rules


def test_rbac_says_what_older_argo_would_need_and_why_it_is_left_out():
    text = (K8S / "base" / "rbac.yaml").read_text()
    assert "older than 3.4" in text and "verbs: [get, watch, patch]" in text
    assert "It is not granted here" in text


@needs_kubectl
def test_the_launcher_reads_exactly_the_secrets_its_providers_name(rendered):
    """The runner may read the Secrets kfp-launcher's providers name, and nothing else: a Secret
    for one step only (the model-store writer) must never be readable by every pod."""
    for name, documents in rendered.items():
        launcher = _one(documents, "ConfigMap", "kfp-launcher")
        providers = yaml.safe_load(launcher["data"].get("providers", "")) or {}
        named = {
            provider["default"]["credentials"]["secretRef"]["secretName"]
            for provider in providers.values()
            if provider.get("default", {}).get("credentials", {}).get("secretRef")
        }
        role = _one(documents, "Role", "litedet-pipeline-runner")
        readable = {
            secret
            for rule in role["rules"]
            if "secrets" in rule["resources"]
            for secret in rule["resourceNames"]
        }
        assert named == readable == LAUNCHER_SECRETS[name], name


# --- pod security ------------------------------------------------------------------------------


@needs_kubectl
def test_the_namespace_enforces_baseline_and_warns_on_restricted(namespace_owning):
    for documents in namespace_owning.values():
        labels = _one(documents, "Namespace")["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
        assert labels["pod-security.kubernetes.io/warn"] == "restricted"
        assert labels["pod-security.kubernetes.io/audit"] == "restricted"


@needs_kubectl
def test_the_restricted_component_enforces_restricted_on_any_overlay(tmp_path):
    component = K8S / "components" / "pod-security-restricted"
    for overlay in (o for o in OVERLAYS if o.name in NAMESPACE_OWNING_OVERLAYS):
        folder = tmp_path / overlay.name
        folder.mkdir()
        (folder / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "resources": [os.path.relpath(overlay, folder)],
                    "components": [os.path.relpath(component, folder)],
                }
            )
        )
        documents = render(folder)
        labels = _one(documents, "Namespace")["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted", overlay.name
        assert len(documents) == len(render(overlay))  # only the label changes


def test_the_argo_workflow_defaults_run_every_pod_as_the_image_user():
    [document] = [
        d
        for d in yaml.safe_load_all((K8S / "examples" / "argo-workflow-defaults.yaml").read_text())
        if d
    ]
    _validate(document)
    assert document["metadata"] == {
        "name": "workflow-controller-configmap",
        "namespace": "kubeflow",
    }
    security = yaml.safe_load(document["data"]["workflowDefaults"])["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == security["runAsGroup"] == _image_uid()
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize("path", EXAMPLE_MANIFESTS, ids=lambda p: p.name)
def test_example_workloads_validate_and_run_restricted(path):
    for document in (d for d in yaml.safe_load_all(path.read_text()) if d):
        _validate(document)
        pod = document["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == _image_uid()
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["limits"]


# --- NetworkPolicy: step egress ----------------------------------------------------------------


def _selects(selector, labels):
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def _peer_admits(peer, policy_namespace, destination):
    if "ipBlock" in peer:
        if "ip" not in destination:
            return False
        address = ipaddress.ip_address(destination["ip"])
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(excluded) for excluded in block.get("except", [])
        )
    if "namespace" not in destination:  # an address outside the cluster's pods
        return False
    if "namespaceSelector" in peer:
        namespace_labels = {"kubernetes.io/metadata.name": destination["namespace"]}
        if not _selects(peer["namespaceSelector"], namespace_labels):
            return False
    elif destination["namespace"] != policy_namespace:
        return False
    return _selects(peer.get("podSelector", {}), destination.get("labels", {}))


def _egress_allowed(documents, destination, port, protocol="TCP"):
    """Whether a step pod may open this connection under the rendered NetworkPolicies (union of
    every policy that selects the pod; no policy selecting it: everything allowed)."""
    policies = [
        d
        for d in documents
        if d["kind"] == "NetworkPolicy"
        and "Egress" in d["spec"].get("policyTypes", [])
        and _selects(d["spec"]["podSelector"], STEP_POD_LABELS)
    ]
    if not policies:
        return True
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            peers, ports = rule.get("to"), rule.get("ports")
            if peers and not any(
                _peer_admits(p, policy["metadata"]["namespace"], destination) for p in peers
            ):
                continue
            if ports and not any(
                p.get("protocol", "TCP") == protocol and p.get("port") in (None, port)
                for p in ports
            ):
                continue
            return True
    return False


def _pod(namespace, **labels):
    return {"namespace": namespace, "labels": labels}


NEEDED = [  # (what, destination, port, protocol)
    ("DNS", _pod("kube-system", **{"k8s-app": "kube-dns"}), 53, "UDP"),
    ("DNS over TCP", _pod("kube-system", **{"k8s-app": "kube-dns"}), 53, "TCP"),
    ("KFP API gRPC (driver cache)", _pod("kubeflow", app="ml-pipeline"), 8887, "TCP"),
    ("KFP API HTTP", _pod("kubeflow", app="ml-pipeline"), 8888, "TCP"),
    ("ML Metadata", _pod("kubeflow", component="metadata-grpc-server"), 8080, "TCP"),
    ("MinIO (KFP <= 2.14)", _pod("kubeflow", app="minio"), 9000, "TCP"),
    ("SeaweedFS S3 (KFP >= 2.15)", _pod("kubeflow", app="seaweedfs"), 8333, "TCP"),
    ("API server (kubeadm, kind)", {"ip": "172.18.0.2"}, 6443, "TCP"),
    ("API server (managed)", {"ip": "10.0.0.1"}, 443, "TCP"),
    ("MLflow registry", _pod("mlflow", **{"app.kubernetes.io/name": "mlflow"}), 5000, "TCP"),
]
REFUSED = [
    ("KFP's MySQL", _pod("kubeflow", app="mysql"), 3306, "TCP"),
    ("KFP UI", _pod("kubeflow", app="ml-pipeline-ui"), 3000, "TCP"),
    ("MinIO console port", _pod("kubeflow", app="minio"), 9001, "TCP"),
    ("a pod in its own namespace", _pod("litedet", app="anything"), 8080, "TCP"),
    ("another namespace's pod", _pod("team-b", app="web"), 80, "TCP"),
    ("kube-dns on another port", _pod("kube-system", **{"k8s-app": "kube-dns"}), 9153, "TCP"),
    ("DNS outside the cluster", {"ip": "8.8.8.8"}, 53, "UDP"),
    ("plain HTTP on the internet", {"ip": "93.184.216.34"}, 80, "TCP"),
    ("a private address on another port", {"ip": "10.1.2.3"}, 5432, "TCP"),
]


@needs_kubectl
def test_step_pods_egress_is_denied_unless_a_rule_opens_it(namespace_owning):
    for name, documents in namespace_owning.items():
        policies = [d for d in documents if d["kind"] == "NetworkPolicy"]
        deny = [p for p in policies if not p["spec"].get("egress")]
        assert len(deny) == 1, name
        for policy in policies:
            assert policy["spec"]["podSelector"] == {"matchLabels": STEP_POD_LABELS}, name
            assert policy["spec"]["policyTypes"] == ["Egress"], name  # ingress left as it is
            for rule in policy["spec"].get("egress", []):
                # No rule opens every destination or every port.
                assert rule.get("to") and rule.get("ports"), (name, policy["metadata"]["name"])


@needs_kubectl
@pytest.mark.parametrize("what, destination, port, protocol", NEEDED, ids=[n[0] for n in NEEDED])
def test_step_pods_reach_what_a_run_needs(namespace_owning, what, destination, port, protocol):
    for name, documents in namespace_owning.items():
        assert _egress_allowed(documents, destination, port, protocol), (name, what)


@needs_kubectl
@pytest.mark.parametrize("what, destination, port, protocol", REFUSED, ids=[n[0] for n in REFUSED])
def test_step_pods_reach_nothing_else(namespace_owning, what, destination, port, protocol):
    for name, documents in namespace_owning.items():
        assert not _egress_allowed(documents, destination, port, protocol), (name, what)


@needs_kubectl
def test_only_the_gcs_overlays_reach_the_internet_and_only_over_https(namespace_owning):
    storage_googleapis = {"ip": "142.250.74.123"}
    for name, documents in namespace_owning.items():
        uses_gcs = name in ("object-store", "local-pvc")
        assert _egress_allowed(documents, storage_googleapis, 443) is uses_gcs, name
        assert not _egress_allowed(documents, storage_googleapis, 80), name
        # Workload Identity's metadata server: object-store (GKE) only.
        metadata_server = {"ip": "169.254.169.254"}
        assert _egress_allowed(documents, metadata_server, 80) is (name == "object-store"), name
        assert not _egress_allowed(documents, {"ip": "169.254.169.254"}, 443), name


# --- launcher config, MinIO overlay and its litedet configuration ------------------------------


@needs_kubectl
def test_the_launcher_config_points_at_an_object_store_root_the_steps_can_open(rendered):
    from litedet.pipeline import kubeflow_v2_runner as kv2

    expected = {"object-store": "gs://", "local-pvc": "gs://", "minio": "s3://"}
    for name, documents in rendered.items():
        root = _one(documents, "ConfigMap", "kfp-launcher")["data"]["defaultPipelineRoot"]
        assert root.startswith(expected[name]), name
        kv2.check_pipeline_root(root)  # refuses minio:// and volume paths


def _minio_launcher(rendered):
    data = _one(rendered["minio"], "ConfigMap", "kfp-launcher")["data"]
    return data["defaultPipelineRoot"], yaml.safe_load(data["providers"])["s3"]["default"]


@needs_kubectl
def test_the_minio_launcher_config_has_the_shape_kfp_reads(rendered):
    root, default = _minio_launcher(rendered)
    assert root == "s3://mlpipeline/litedet/pipeline-root"
    assert set(default) <= S3_DEFAULT_FIELDS
    assert set(default["credentials"]) <= S3_CREDENTIAL_FIELDS
    assert set(default["credentials"]["secretRef"]) == S3_SECRET_REF_FIELDS
    assert default["endpoint"] == "minio-service.kubeflow:9000"  # host:port, no scheme
    assert default["disableSSL"] is True and default["forcePathStyle"] is True
    assert default["credentials"]["fromEnv"] is False
    assert default["credentials"]["secretRef"] == {
        "secretName": "mlpipeline-minio-artifact",
        "accessKeyKey": "accesskey",
        "secretKeyKey": "secretkey",
    }


def test_the_minio_example_config_loads():
    from litedet.pipeline import configs

    config = configs.load_config(str(MINIO_CONFIG))  # validates every setting
    assert config.dataset.root.startswith("s3://")
    assert config.push.destination == "s3://mlpipeline/litedet/models"
    assert set(config.kubeflow.env) == {"AWS_ENDPOINT_URL", "AWS_REGION"}
    assert set(config.kubeflow.secret_env) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


@needs_kubectl
def test_the_minio_example_config_uses_the_store_and_secret_the_launcher_uses(rendered):
    """The steps (TensorFlow, Beam) and KFP's launcher must reach the same store with the same
    credentials: one endpoint, one region, one Secret, one bucket."""
    from litedet.pipeline import configs
    from litedet.pipeline import kubeflow_v2_runner as kv2

    root, default = _minio_launcher(rendered)
    config = configs.load_config(str(MINIO_CONFIG))
    scheme = "http" if default["disableSSL"] else "https"
    assert config.kubeflow.env["AWS_ENDPOINT_URL"] == f"{scheme}://{default['endpoint']}"
    assert config.kubeflow.env["AWS_REGION"] == default["region"]
    secret = default["credentials"]["secretRef"]
    assert config.kubeflow.secret_env == {
        "AWS_ACCESS_KEY_ID": f"{secret['secretName']}/{secret['accessKeyKey']}",
        "AWS_SECRET_ACCESS_KEY": f"{secret['secretName']}/{secret['secretKeyKey']}",
    }
    bucket = root.split("/")[2]
    for uri in (config.dataset.root, config.push.destination):
        assert uri.startswith(f"s3://{bucket}/"), uri
    kv2.check_dataset_root(config.dataset.root)


# --- the rest ----------------------------------------------------------------------------------


@needs_kubectl
def test_the_limit_range_admits_every_component_the_pipeline_sizes(namespace_owning):
    """LimitRange max must fit the largest step (the Trainer), and its default request must
    stay under the smallest step's limit, or admission rejects those pods."""
    from kubernetes.utils.quantity import parse_quantity

    from litedet.pipeline.kubeflow_v2_runner import DEFAULT_RESOURCES, component_resources

    sizes = list(component_resources().values()) + [DEFAULT_RESOURCES]
    for documents in namespace_owning.values():
        limit_range = _one(documents, "LimitRange")
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
def test_the_pvc_overlay_mounts_the_datasets_into_kfp_step_pods(rendered):
    documents = rendered["local-pvc"]
    pvc = _one(documents, "PersistentVolumeClaim")
    spec = _one(documents, "PodDefault")["spec"]
    assert spec["selector"]["matchLabels"] == STEP_POD_LABELS
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in spec["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == [pvc["metadata"]["name"]]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    secrets = {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    assert secrets == LAUNCHER_SECRETS["local-pvc"]  # the launcher and the steps use one key


def test_the_recurring_run_example_is_valid_cli_input():
    from litedet.kfp import cli as kfp_cli
    from litedet.kfp import client as kfp_client

    settings = yaml.safe_load((K8S / "examples" / "recurring-run.yaml").read_text())
    assert kfp_client.normalize_cron(settings["cron"]) == "0 0 3 * * *"
    assert kfp_cli.parse_parameters([f"{k}={v}" for k, v in settings["parameters"].items()])
    assert 1 <= settings["max_concurrency"] <= 10


# --- KFP 2.17 as installed: standalone and multi-user ------------------------------------------
# Facts read from kubeflow/pipelines at tag 2.17.0 (docs/cluster.md, "KFP 2.17 as installed",
# lists each with its source path; test_the_docs_give_every_fact_its_source keeps the two in step).
KFP_2_17 = {
    # manifests/kustomize/third-party/seaweedfs/base/seaweedfs/seaweedfs-service.yaml
    "store_service": "seaweedfs",
    "store_namespace": "kubeflow",
    "store_service_ports": {8333: 8333, 9000: 8333},  # service port -> pod port (S3)
    # .../seaweedfs-deployment.yaml: the pods' label
    "store_pod_labels": {"app": "seaweedfs"},
    # .../seaweedfs-networkpolicy.yaml: S3 ingress from profile namespaces, pod port 8333
    "store_ingress_namespace_label": ("app.kubernetes.io/part-of", "kubeflow-profile"),
    "store_ingress_port": 8333,
    # .../mlpipeline-minio-artifact-secret.yaml (keys); sync.py writes the same per profile
    "secret": "mlpipeline-minio-artifact",
    "secret_keys": ("accesskey", "secretkey"),
    # sync.py S3_BUCKET_NAME; base/installs/generic/pipeline-install-config.yaml bucketName
    "bucket": "mlpipeline",
    # backend/src/apiserver/common/const.go DefaultPipelineRunnerServiceAccount
    "standalone_service_account": "pipeline-runner",
    # manifests/kustomize/base/installs/multi-user/api-service/params.env
    "multi_user_service_account": "default-editor",
    # sync.py put_user_policy: the profile key's object prefixes
    "profile_prefixes": ("artifacts/", "private-artifacts/{ns}/", "private/{ns}/", "shared/"),
    # sync.py: the namespaces the profile controller acts on
    "profile_controller_label": ("pipelines.kubeflow.org/enabled", "true"),
    # backend/src/v2/config/env.go defaultPipelineRoot; sync.py's per-profile default
    "fallback_root": "minio://mlpipeline/v2/artifacts",
    "profile_default_root": "minio://mlpipeline/private-artifacts/{ns}/v2/artifacts",
    # backend/src/v2/objectstore/config.go DefaultEndpointInMultiUserMode
    "default_minio_endpoint": "seaweedfs.kubeflow:9000",
}
KFP_2_17_SOURCES = (
    "manifests/kustomize/third-party/seaweedfs/base/seaweedfs/seaweedfs-service.yaml",
    "manifests/kustomize/third-party/seaweedfs/base/seaweedfs/seaweedfs-networkpolicy.yaml",
    "manifests/kustomize/third-party/seaweedfs/base/seaweedfs/mlpipeline-minio-artifact-secret.yaml",
    "manifests/kustomize/base/installs/multi-user/pipelines-profile-controller/sync.py",
    "manifests/kustomize/base/installs/multi-user/pipelines-profile-controller/"
    "decorator-controller.yaml",
    "manifests/kustomize/base/installs/multi-user/api-service/params.env",
    "manifests/kustomize/base/installs/generic/pipeline-install-config.yaml",
    "manifests/kustomize/base/pipeline/kfp-launcher-configmap.yaml",
    "backend/src/apiserver/common/const.go",
    "backend/src/apiserver/resource/resource_manager.go",
    "backend/src/v2/config/env.go",
    "backend/src/v2/driver/root_dag.go",
    "backend/src/v2/objectstore/config.go",
)
STANDALONE_CONFIG = K8S / "examples" / "kfp-standalone-config.yaml"
MULTI_USER_CONFIG = K8S / "examples" / "kfp-multi-user-config.yaml"
LAUNCHER_PATCH = K8S / "overlays" / MULTI_USER / "kfp-launcher-patch.yaml"


def _store_endpoint_ok(endpoint):
    """host:port of KFP 2.17's SeaweedFS S3 from a pod in any namespace."""
    host, _, port = endpoint.partition(":")
    names = {
        f"{KFP_2_17['store_service']}.{KFP_2_17['store_namespace']}{suffix}"
        for suffix in ("", ".svc", ".svc.cluster.local")
    }
    return host in names and int(port) in KFP_2_17["store_service_ports"]


def _check_s3_provider(providers_text):
    default = yaml.safe_load(providers_text)["s3"]["default"]
    assert set(default) <= S3_DEFAULT_FIELDS
    assert _store_endpoint_ok(default["endpoint"]), default["endpoint"]
    assert default["disableSSL"] is True and default["forcePathStyle"] is True
    assert default["credentials"]["fromEnv"] is False
    assert default["credentials"]["secretRef"] == {
        "secretName": KFP_2_17["secret"],
        "accessKeyKey": KFP_2_17["secret_keys"][0],
        "secretKeyKey": KFP_2_17["secret_keys"][1],
    }
    return default


def _check_step_settings(config, provider):
    """The steps (TensorFlow, Beam) reach the store the launcher reaches, with its Secret."""
    scheme = "http" if provider["disableSSL"] else "https"
    assert config.kubeflow.env["AWS_ENDPOINT_URL"] == f"{scheme}://{provider['endpoint']}"
    assert config.kubeflow.env["AWS_REGION"] == provider["region"]
    secret = provider["credentials"]["secretRef"]
    assert config.kubeflow.secret_env == {
        "AWS_ACCESS_KEY_ID": f"{secret['secretName']}/{secret['accessKeyKey']}",
        "AWS_SECRET_ACCESS_KEY": f"{secret['secretName']}/{secret['secretKeyKey']}",
    }
    assert not config.kubeflow.aws_s3_ambient_credentials


def _compile_root(config_path):
    """The --pipeline-root of the compile command the example's header gives."""
    [root] = re.findall(r"--pipeline-root (s3://\S+)", config_path.read_text())
    return root


@needs_kubectl
def test_the_standalone_overlay_only_sets_kfps_launcher_config_in_kubeflow(all_rendered):
    """Standalone KFP runs everything in its own namespace as pipeline-runner: the overlay adds
    nothing there that would bind KFP's services or other users' pipelines (no quota,
    LimitRange, NetworkPolicy, Namespace, service account or Role)."""
    documents = all_rendered[STANDALONE]
    assert [(d["kind"], d["metadata"]["name"]) for d in documents] == [
        ("ConfigMap", "kfp-launcher")
    ]
    [launcher] = documents
    assert launcher["metadata"]["namespace"] == KFP_2_17["store_namespace"]
    root = launcher["data"]["defaultPipelineRoot"]
    assert root.startswith(f"s3://{KFP_2_17['bucket']}/")
    # The same objects KFP's own fallback root addresses, under a scheme TensorFlow opens.
    assert root == KFP_2_17["fallback_root"].replace("minio://", "s3://")
    from litedet.pipeline import kubeflow_v2_runner as kv2

    kv2.check_pipeline_root(root)
    _check_s3_provider(launcher["data"]["providers"])


@needs_kubectl
def test_the_standalone_example_config_compiles_against_the_overlay(all_rendered):
    from litedet.pipeline import configs
    from litedet.pipeline import kubeflow_v2_runner as kv2

    [launcher] = all_rendered[STANDALONE]
    provider = _check_s3_provider(launcher["data"]["providers"])
    config = configs.load_config(str(STANDALONE_CONFIG))
    _check_step_settings(config, provider)
    root = _compile_root(STANDALONE_CONFIG)
    assert root == launcher["data"]["defaultPipelineRoot"]
    for uri in (config.dataset.root, config.push.destination):
        assert uri.startswith(f"s3://{KFP_2_17['bucket']}/"), uri
    assert kv2.preflight(config, "litedet-kfp.yaml", "r.example.com/litedet:1", root) == 80


def _seaweedfs_admits(namespace_labels, pod_port):
    """KFP 2.17's seaweedfs NetworkPolicy, first rule: S3 from profile namespaces."""
    key, value = KFP_2_17["store_ingress_namespace_label"]
    return namespace_labels.get(key) == value and pod_port == KFP_2_17["store_ingress_port"]


@needs_kubectl
def test_the_multi_user_overlay_makes_a_profile_namespace_seaweedfs_admits(all_rendered):
    documents = all_rendered[MULTI_USER]
    namespace = _one(documents, "Namespace")
    name, labels = namespace["metadata"]["name"], namespace["metadata"]["labels"]
    for d in documents:
        assert d["metadata"].get("namespace", name) == name
    # SeaweedFS admits the steps' S3 traffic, on the pod port its Service maps 9000 and 8333 to.
    for service_port, pod_port in KFP_2_17["store_service_ports"].items():
        assert _seaweedfs_admits(labels, pod_port), service_port
    assert not _seaweedfs_admits({"app.kubernetes.io/part-of": "litedet"}, 8333)
    key, value = KFP_2_17["profile_controller_label"]
    assert labels[key] == value  # KFP's profile controller writes the namespace's KFP objects
    # and the steps' own egress rules let them out to it.
    seaweedfs = _pod(KFP_2_17["store_namespace"], **KFP_2_17["store_pod_labels"])
    assert _egress_allowed(documents, seaweedfs, KFP_2_17["store_ingress_port"])


@needs_kubectl
def test_the_multi_user_overlay_leaves_the_profile_controllers_objects_alone(all_rendered):
    """The profile controller creates kfp-launcher and the Secret; default-editor runs the
    steps. The overlay creates none of them and no runner account of its own."""
    documents = all_rendered[MULTI_USER]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    assert ("ConfigMap", "kfp-launcher") not in kinds
    assert not [k for k in kinds if k[0] == "Secret"]
    assert not [k for k in kinds if "litedet-pipeline-runner" in k[1]]
    assert ("ServiceAccount", "litedet-submitter") in kinds


@needs_kubectl
def test_the_kfp_overlays_leave_the_runs_service_accounts_to_kfp(all_rendered):
    """Runs get KFP's default account (standalone pipeline-runner, multi-user default-editor):
    no overlay makes, binds or replaces it, and the smoke script names none."""
    for name in (STANDALONE, MULTI_USER):
        for d in all_rendered[name]:
            subjects = [s.get("name") for s in d.get("subjects", [])]
            for account in ("standalone_service_account", "multi_user_service_account"):
                assert KFP_2_17[account] not in subjects, (name, d["metadata"]["name"])
                assert d["metadata"]["name"] != KFP_2_17[account], name
    assert "--service-account" not in (K8S / "smoke.sh").read_text()


def _in_profile_prefixes(uri, namespace):
    bucket = KFP_2_17["bucket"]
    prefixes = [f"s3://{bucket}/" + p.format(ns=namespace) for p in KFP_2_17["profile_prefixes"]]
    return any(uri.rstrip("/").startswith(p) or uri + "/" == p for p in prefixes)


@needs_kubectl
def test_the_multi_user_launcher_patch_and_example_stay_inside_the_profiles_prefixes(
    all_rendered,
):
    from litedet.pipeline import configs
    from litedet.pipeline import kubeflow_v2_runner as kv2

    namespace = _one(all_rendered[MULTI_USER], "Namespace")["metadata"]["name"]
    patch = yaml.safe_load(LAUNCHER_PATCH.read_text().replace("PROFILE", namespace))
    assert set(patch) == {"data"}  # a merge patch of data keys only: clusterDomain is kept
    root = patch["data"]["defaultPipelineRoot"]
    assert _in_profile_prefixes(root, namespace), root
    assert root.startswith(f"s3://{KFP_2_17['bucket']}/private-artifacts/{namespace}/")
    # The controller's own default, with the scheme TensorFlow can open.
    assert root == KFP_2_17["profile_default_root"].format(ns=namespace).replace("minio", "s3")
    provider = _check_s3_provider(patch["data"]["providers"])
    assert not _in_profile_prefixes(f"s3://{KFP_2_17['bucket']}/litedet/models", namespace)

    config = configs.load_config(str(MULTI_USER_CONFIG))
    _check_step_settings(config, provider)
    compile_root = _compile_root(MULTI_USER_CONFIG)
    for uri in (config.dataset.root, config.push.destination, compile_root):
        assert _in_profile_prefixes(uri, namespace), uri
    # Models and data outside private-artifacts/, which KFP's ARTIFACT_RETENTION_DAYS expires.
    for uri in (config.dataset.root, config.push.destination):
        assert f"/private/{namespace}/" in uri, uri
    assert kv2.preflight(config, "litedet-kfp.yaml", "r.example.com/litedet:1", compile_root)


def test_the_docs_give_every_kfp_fact_its_source():
    text = (REPO / "docs" / "cluster.md").read_text()
    missing = [path for path in KFP_2_17_SOURCES if path not in text]
    assert not missing, f"docs/cluster.md does not name: {missing}"
    for fact in ("seaweedfs", "8333", "kubeflow-profile", "pipeline-runner", "default-editor"):
        assert fact in text, fact
    for prefix in KFP_2_17["profile_prefixes"]:
        assert prefix.format(ns="<ns>") in text, prefix


@pytest.mark.parametrize(
    "path",
    [STANDALONE_CONFIG, MULTI_USER_CONFIG, MINIO_CONFIG, K8S / "examples" / "flink-config.yaml"],
)
def test_every_example_config_passes_the_compilers_checks_offline(path):
    """What `litedet compile` checks before it imports TFX: s3:// settings, the class count
    (never read from the store). tests/test_kubeflow.py compiles them through the CLI."""
    from litedet.pipeline import configs
    from litedet.pipeline import kubeflow_v2_runner as kv2

    config = configs.load_config(str(path))
    root = _compile_root(path)
    assert kv2.preflight(config, "litedet-kfp.yaml", "r.example.com/litedet:1", root) > 0


# --- Flink (k8s/flink): the Beam steps on Beam's portable runner -------------------------------

FLINK = K8S / "flink"
FLINK_CONFIG = K8S / "examples" / "flink-config.yaml"
# The FlinkDeployment kind's schema (the operator's CRD); its header says where it comes from.
FLINK_DEPLOYMENT_SPEC = (
    REPO / "tests" / "data" / "flink-operator" / "flinkdeployment-spec-v1beta1.yaml"
)
# What the operator refuses beyond its schema (DefaultValidator.java at release-1.15.0).
FLINK_DEPLOYMENT_NAME = re.compile(r"[a-z]([-a-z\d]{0,43}[a-z\d])?")
WORKER_POOL_MODULE = "litedet.components.beam_worker_pool"


@pytest.fixture(scope="module")
def flink():
    return render(FLINK)


def _pod_templates(spec):
    for holder in (spec, spec.get("jobManager", {}), spec.get("taskManager", {})):
        if "podTemplate" in holder:
            yield holder["podTemplate"]


def _validate_flink_deployment(document):
    import jsonschema
    import kubernetes_validate

    spec = document["spec"]
    jsonschema.validate(spec, strict(yaml.safe_load(FLINK_DEPLOYMENT_SPEC.read_text())))
    for template in _pod_templates(spec):  # the Pod schema the CRD embeds
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "template"}, **template}
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(pod, version, strict=True)
    assert FLINK_DEPLOYMENT_NAME.fullmatch(document["metadata"]["name"])
    assert spec["serviceAccount"] and spec["flinkVersion"]
    for role in ("jobManager", "taskManager"):
        assert spec[role]["resource"]["memory"] and spec[role].get("replicas", 1) >= 1, role


def _flink_parts(documents):
    """(FlinkDeployment, the job server's Deployment, its Service, the worker-pool sidecar)."""
    cluster = _one(documents, "FlinkDeployment")
    job_server = _one(documents, "Deployment")
    service = _one(documents, "Service", job_server["metadata"]["name"])
    containers = cluster["spec"]["taskManager"]["podTemplate"]["spec"]["containers"]
    sidecar = next(c for c in containers if WORKER_POOL_MODULE in c.get("command", []))
    return cluster, job_server, service, sidecar


def _flag(args, name):
    [value] = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    return value


@needs_kubectl
def test_the_flink_manifests_render_and_validate(flink):
    assert {d["kind"] for d in flink} == {
        "FlinkDeployment",
        "Deployment",
        "Service",
        "NetworkPolicy",
    }
    for document in flink:
        assert document["metadata"]["namespace"] == "litedet", document["metadata"]["name"]
        if document["kind"] == "FlinkDeployment":
            _validate_flink_deployment(document)
        else:
            _validate(document)


@needs_kubectl
def test_the_job_server_matches_the_clusters_flink_and_the_sdks_beam(flink):
    import apache_beam
    from apache_beam.options.pipeline_options import FlinkRunnerOptions

    cluster, job_server, _, _ = _flink_parts(flink)
    flink_version = cluster["spec"]["flinkVersion"].lstrip("v").replace("_", ".")
    assert flink_version in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS
    assert cluster["spec"]["image"].split(":")[1].startswith(flink_version)
    [container] = job_server["spec"]["template"]["spec"]["containers"]
    expected = f"apache/beam_flink{flink_version}_job_server:{apache_beam.__version__}"
    assert container["image"] == expected
    # The REST service the operator creates for a FlinkDeployment: <name>-rest, port 8081.
    assert _flag(container["args"], "flink-master") == f"{cluster['metadata']['name']}-rest:8081"


@needs_kubectl
def test_the_steps_reach_the_job_server_where_the_example_config_says(flink, all_rendered):
    from litedet.pipeline import configs

    config = configs.load_config(str(FLINK_CONFIG))
    _, job_server, service, _ = _flink_parts(flink)
    host, port = config.beam.job_endpoint.rsplit(":", 1)
    assert host.split(".")[:2] == [service["metadata"]["name"], service["metadata"]["namespace"]]
    [container] = job_server["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    job_port = next(p for p in service["spec"]["ports"] if p["port"] == int(port))
    assert ports[job_port["targetPort"]] == int(_flag(container["args"], "job-port"))
    # The artifact endpoint the job server hands out is <job-host>:<artifact-port>: its own
    # pod's address, which the steps must be able to reach.
    assert _flag(container["args"], "job-host") == "$(POD_IP)"
    [pod_ip] = [e for e in container["env"] if e["name"] == "POD_IP"]
    assert pod_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    artifact_port = int(_flag(container["args"], "artifact-port"))
    assert ports["artifact"] == artifact_port
    # Under the MinIO overlay's egress rules plus k8s/flink's, the steps reach both ports.
    documents = all_rendered["minio"] + flink
    labels = job_server["spec"]["template"]["metadata"]["labels"]
    for target in (int(port), artifact_port):
        assert _egress_allowed(documents, _pod("litedet", **labels), target), target
    assert not _egress_allowed(documents, _pod("litedet", **labels), 8097)


@needs_kubectl
def test_the_worker_pool_sidecar_serves_where_the_config_points_with_the_steps_storage(flink):
    import importlib.util

    from litedet.pipeline import configs

    config = configs.load_config(str(FLINK_CONFIG))
    _, _, _, sidecar = _flink_parts(flink)
    command = sidecar["command"]
    assert command[:3] == ["python", "-m", WORKER_POOL_MODULE]
    assert importlib.util.find_spec(WORKER_POOL_MODULE)
    port = int(_flag(command, "service_port"))
    assert config.beam.worker_pool == f"localhost:{port}"
    assert [p["containerPort"] for p in sidecar["ports"]] == [port]
    env = {e["name"]: e for e in sidecar["env"]}
    assert env["TF_USE_LEGACY_KERAS"]["value"] == "1"
    for name, value in config.kubeflow.env.items():
        assert env[name]["value"] == value, name
    for name, reference in config.kubeflow.secret_env.items():
        secret = env[name]["valueFrom"]["secretKeyRef"]
        assert f"{secret['name']}/{secret['key']}" == reference, name
    assert "/litedet:" in sidecar["image"]
    security = sidecar["securityContext"]
    assert security["runAsUser"] == _image_uid() and security["readOnlyRootFilesystem"]
    # The pool writes its worker executable, and the workers their files, under /tmp.
    assert "/tmp" in [m["mountPath"] for m in sidecar["volumeMounts"]]


# --- multi-worker training (k8s/components/tfjob-launcher) -------------------------------------

TFJOB_LAUNCHER = K8S / "components" / "tfjob-launcher"
# What the Trainer's TFJob launcher calls (components/trainer/tfjob.py; tests/test_tfjob.py
# records the calls it makes against the loopback API and compares them with this).
TFJOB_LAUNCHER_RULES = {
    ("kubeflow.org", "tfjobs", ("create", "delete", "get"), ()),
    ("", "pods", ("get", "list"), ()),
    ("", "pods/log", ("get",), ()),
}


@needs_kubectl
def test_the_tfjob_launcher_component_grants_the_runner_exactly_what_the_launcher_calls(
    tmp_path,
):
    for overlay in (o for o in OVERLAYS if o.name in LITEDET_NAMESPACE_OVERLAYS):
        folder = tmp_path / overlay.name
        folder.mkdir()
        (folder / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "namespace": "litedet",
                    "resources": [os.path.relpath(overlay, folder)],
                    "components": [os.path.relpath(TFJOB_LAUNCHER, folder)],
                }
            )
        )
        documents = render(folder)
        for document in documents:
            _validate(document)
        role = _one(documents, "Role", "litedet-tfjob-launcher")
        assert _rules(role) == TFJOB_LAUNCHER_RULES, overlay.name
        for rule in role["rules"]:  # read only on pods: no patch, create, exec, attach
            if any(r.split("/")[0] == "pods" for r in rule["resources"]):
                assert set(rule["verbs"]) <= {"get", "list"}, rule
        binding = _one(documents, "RoleBinding", "litedet-tfjob-launcher")
        assert binding["roleRef"]["name"] == "litedet-tfjob-launcher"
        [subject] = binding["subjects"]
        assert subject["name"] == "litedet-pipeline-runner"
        assert subject.get("namespace", "litedet") == "litedet"
        _one(documents, "ServiceAccount", "litedet-pipeline-runner")
        # Everything else is the overlay's, unchanged.
        assert len(documents) == len(render(overlay)) + 2
