"""What each release manifest the kind script applies holds, as far as the fake cluster
(_fake_cluster.py) needs it: CRDs, namespaces, Deployments, ConfigMaps, admission
webhooks and the custom objects that depend on them, in file order.

Read from the releases' sources (the files themselves are not downloadable here):
- cert-manager v1.17.0 cert-manager.yaml: the Helm chart rendered with its Namespace;
  CRDs of cert-manager.io and acme.cert-manager.io; webhook cert-manager-webhook
  (failurePolicy Fail) on those groups.
- KServe v0.20.0 (hack/release/generate-install.sh): kserve-crds.yaml is
  config/crd/full (six CRDs, ClusterStorageContainer's included); kserve.yaml is
  config/overlays/all without its Namespace: every CRD again, cert-manager
  Certificates and an Issuer, ClusterStorageContainer/default (config/storagecontainers),
  three controllers and their webhooks (config/webhook, all failurePolicy Fail);
  kserve-cluster-resources.yaml is config/clusterresources: 14 ClusterServingRuntimes
  and 10 LLMInferenceServiceConfigs in namespace kserve.
- Knative Serving knative-v1.21.1 (hack/generate-yamls.sh): serving-crds.yaml is
  config/core/300-resources + 300-imagecache.yaml (every CRD labelled
  knative.dev/crd-install=true); serving-core.yaml is all of config/core: the CRDs
  again, Namespace knative-serving, the config-* ConfigMaps, four Deployments, the
  queue-proxy Image, and webhook config.webhook.serving.knative.dev
  (config/core/webhooks/configmap-validation.yaml: ConfigMaps labelled
  app.kubernetes.io/name=knative-serving with a listed component, failurePolicy Fail,
  rules filled in by the webhook itself once it runs).
- net-kourier knative-v1.21.1 (config/): Namespace kourier-system, ConfigMap
  config-kourier (component net-kourier: outside that webhook's selector), Deployments
  net-kourier-controller (knative-serving) and 3scale-kourier-gateway (kourier-system).
- KEDA v2.18.3 (config/): Namespace keda, six CRDs, three Deployments; its webhooks
  are failurePolicy Ignore, so they never refuse.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def crd(plural: str, group: str, kind: str, scope: str = "Namespaced",
        labels: dict[str, str] | None = None) -> Obj:
    """A CustomResourceDefinition entry."""
    return {"kind": "CustomResourceDefinition", "group": "apiextensions.k8s.io",
            "name": f"{plural}.{group}", "defines": {"group": group, "kind": kind,
                                                     "scope": scope},
            "labels": labels or {}}


def obj(kind: str, group: str, name: str, namespace: str | None = None,
        labels: dict[str, str] | None = None, **extra: Any) -> Obj:
    """Any other object."""
    return {"kind": kind, "group": group, "name": name, "namespace": namespace,
            "labels": labels or {}, **extra}


def webhook(config: str, name: str, deployment: tuple[str, str], service: str,
            rules: list[tuple[str, str]], *, namespace: str | None = None,
            selector: dict[str, list[str]] | None = None,
            ca_injector: tuple[str, str] | None = None) -> Obj:
    """A ValidatingWebhookConfiguration with one failurePolicy: Fail webhook (whose
    caBundle ``ca_injector``, a Deployment, fills in once it runs)."""
    return obj("ValidatingWebhookConfiguration", "admissionregistration.k8s.io", config,
               webhook={"name": name, "deployment": list(deployment), "service": service,
                        "rules": [list(r) for r in rules], "namespace": namespace,
                        "selector": selector or {},
                        "ca_injector": list(ca_injector) if ca_injector else None})


_CM = "cert-manager.io"
CERT_MANAGER = [
    obj("Namespace", "", "cert-manager"),
    crd("certificates", _CM, "Certificate"),
    crd("certificaterequests", _CM, "CertificateRequest"),
    crd("issuers", _CM, "Issuer"),
    crd("clusterissuers", _CM, "ClusterIssuer", "Cluster"),
    crd("orders", "acme.cert-manager.io", "Order"),
    crd("challenges", "acme.cert-manager.io", "Challenge"),
    *[obj("Deployment", "apps", n, "cert-manager")
      for n in ("cert-manager", "cert-manager-cainjector", "cert-manager-webhook")],
    webhook("cert-manager-webhook", "webhook.cert-manager.io",
            ("cert-manager", "cert-manager-webhook"), "cert-manager-webhook",
            [(_CM, "*"), ("acme.cert-manager.io", "*")],
            ca_injector=("cert-manager", "cert-manager-cainjector")),
]

_KS = "serving.kserve.io"
KSERVE_CRDS = [
    crd("inferenceservices", _KS, "InferenceService"),
    crd("trainedmodels", _KS, "TrainedModel"),
    crd("clusterservingruntimes", _KS, "ClusterServingRuntime", "Cluster"),
    crd("servingruntimes", _KS, "ServingRuntime"),
    crd("inferencegraphs", _KS, "InferenceGraph"),
    crd("clusterstoragecontainers", _KS, "ClusterStorageContainer", "Cluster"),
]
_CONTROLLER = ("kserve", "kserve-controller-manager")
_LLM = ("kserve", "llmisvc-controller-manager")
KSERVE = [
    *KSERVE_CRDS,
    crd("llminferenceservices", _KS, "LLMInferenceService"),
    crd("llminferenceserviceconfigs", _KS, "LLMInferenceServiceConfig"),
    crd("localmodelcaches", _KS, "LocalModelCache", "Cluster"),
    crd("localmodelnamespacecaches", _KS, "LocalModelNamespaceCache"),
    crd("localmodelnodes", _KS, "LocalModelNode", "Cluster"),
    crd("localmodelnodegroups", _KS, "LocalModelNodeGroup", "Cluster"),
    crd("inferencepools", "inference.networking.k8s.io", "InferencePool"),
    crd("inferenceobjectives", "inference.networking.x-k8s.io", "InferenceObjective"),
    crd("inferencemodelrewrites", "inference.networking.x-k8s.io", "InferenceModelRewrite"),
    crd("inferencepools", "inference.networking.x-k8s.io", "InferencePool"),
    obj("ConfigMap", "", "inferenceservice-config", "kserve",
        data={"deploy": '{\n  "defaultDeploymentMode": "Serverless"\n}',
              "ingress": '{\n    "urlScheme": "http",\n    "disableIstioVirtualHost": false\n}'}),
    obj("Issuer", _CM, "selfsigned-issuer", "kserve"),
    *[obj("Certificate", _CM, n, "kserve")
      for n in ("llmisvc-serving-cert", "localmodel-serving-cert", "serving-cert")],
    obj("ClusterStorageContainer", _KS, "default"),
    *[obj("Deployment", "apps", n, "kserve")
      for n in ("kserve-controller-manager", "kserve-localmodel-controller-manager",
                "llmisvc-controller-manager")],
    *[webhook(f"{plural[:-1]}.{_KS}", f"{plural[:-1]}.kserve-webhook-server.validator",
              _CONTROLLER, "kserve-webhook-server-service", [(_KS, kind)])
      for plural, kind in (("inferenceservices", "InferenceService"),
                           ("servingruntimes", "ServingRuntime"),
                           ("clusterservingruntimes", "ClusterServingRuntime"),
                           ("inferencegraphs", "InferenceGraph"),
                           ("trainedmodels", "TrainedModel"))],
    webhook(f"llminferenceserviceconfig.{_KS}",
            "llminferenceserviceconfig.kserve-webhook-server.v1alpha2.validator", _LLM,
            "llmisvc-webhook-server-service", [(_KS, "LLMInferenceServiceConfig")]),
]
KSERVE_CLUSTER_RESOURCES = [
    *[obj("ClusterServingRuntime", _KS, f"kserve-runtime-{i}") for i in range(14)],
    *[obj("LLMInferenceServiceConfig", _KS, f"kserve-config-llm-{i}", "kserve")
      for i in range(10)],
]

_KN = "serving.knative.dev"
_KNI = "networking.internal.knative.dev"
_AS = "autoscaling.internal.knative.dev"
_INSTALL = {"knative.dev/crd-install": "true"}
KNATIVE_CRDS = [
    crd("certificates", _KNI, "Certificate", labels=_INSTALL),
    crd("configurations", _KN, "Configuration", labels=_INSTALL),
    crd("clusterdomainclaims", _KNI, "ClusterDomainClaim", "Cluster", _INSTALL),
    crd("domainmappings", _KN, "DomainMapping", labels=_INSTALL),
    crd("ingresses", _KNI, "Ingress", labels=_INSTALL),
    crd("metrics", _AS, "Metric", labels=_INSTALL),
    crd("podautoscalers", _AS, "PodAutoscaler", labels=_INSTALL),
    crd("revisions", _KN, "Revision", labels=_INSTALL),
    crd("routes", _KN, "Route", labels=_INSTALL),
    crd("serverlessservices", _KNI, "ServerlessService", labels=_INSTALL),
    crd("services", _KN, "Service", labels=_INSTALL),
    crd("images", "caching.internal.knative.dev", "Image", labels=_INSTALL),
]


def _knative_config(name: str, component: str) -> Obj:
    return obj("ConfigMap", "", name, "knative-serving",
               {"app.kubernetes.io/name": "knative-serving",
                "app.kubernetes.io/component": component}, data={})


KNATIVE_CORE = [
    obj("Namespace", "", "knative-serving"),
    *KNATIVE_CRDS,
    _knative_config("config-autoscaler", "autoscaler"),
    _knative_config("config-deployment", "controller"),
    _knative_config("config-network", "networking"),
    _knative_config("config-observability", "observability"),
    *[obj("Deployment", "apps", n, "knative-serving")
      for n in ("activator", "autoscaler", "controller", "webhook")],
    obj("Image", "caching.internal.knative.dev", "queue-proxy", "knative-serving"),
    webhook("config.webhook.serving.knative.dev", "config.webhook.serving.knative.dev",
            ("knative-serving", "webhook"), "webhook", [("", "ConfigMap")],
            namespace="knative-serving",
            selector={"app.kubernetes.io/name": ["knative-serving"],
                      "app.kubernetes.io/component": [
                          "autoscaler", "controller", "logging", "networking",
                          "observability", "tracing", "net-certmanager"]}),
]
KOURIER = [
    obj("Namespace", "", "kourier-system"),
    obj("ConfigMap", "", "config-kourier", "knative-serving",
        {"app.kubernetes.io/name": "knative-serving",
         "app.kubernetes.io/component": "net-kourier"}, data={}),
    obj("Deployment", "apps", "net-kourier-controller", "knative-serving"),
    obj("Deployment", "apps", "3scale-kourier-gateway", "kourier-system"),
]

_KEDA = "keda.sh"
KEDA = [
    obj("Namespace", "", "keda"),
    crd("scaledobjects", _KEDA, "ScaledObject"),
    crd("scaledjobs", _KEDA, "ScaledJob"),
    crd("triggerauthentications", _KEDA, "TriggerAuthentication"),
    crd("clustertriggerauthentications", _KEDA, "ClusterTriggerAuthentication", "Cluster"),
    crd("cloudeventsources", "eventing.keda.sh", "CloudEventSource"),
    crd("clustercloudeventsources", "eventing.keda.sh", "ClusterCloudEventSource", "Cluster"),
    *[obj("Deployment", "apps", n, "keda")
      for n in ("keda-operator", "keda-operator-metrics-apiserver", "keda-admission-webhooks")],
]

# Release file (the URL's last path element) -> its objects, in order.
RELEASES: dict[str, list[Obj]] = {
    "cert-manager.yaml": CERT_MANAGER,
    "kserve-crds.yaml": KSERVE_CRDS,
    "kserve.yaml": KSERVE,
    "kserve-cluster-resources.yaml": KSERVE_CLUSTER_RESOURCES,
    "serving-crds.yaml": KNATIVE_CRDS,
    "serving-core.yaml": KNATIVE_CORE,
    "kourier.yaml": KOURIER,
}


def release(url: str) -> list[Obj] | None:
    """The objects of a release manifest named by its URL, or None when unknown."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    if name.startswith("keda-") and name.endswith(".yaml"):
        return KEDA
    return RELEASES.get(name)
