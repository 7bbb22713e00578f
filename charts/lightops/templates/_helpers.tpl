{{/* Name of the chart, or nameOverride. */}}
{{- define "lightops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every object name: the release name, with the chart name unless the release name
already contains it. Component names append "-registry", "-predictor", ….
*/}}
{{- define "lightops.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lightops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select a component's pods: pass (dict "root" $ "component" "registry"). */}}
{{- define "lightops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lightops.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Every label of a component's objects: pass (dict "root" $ "component" "registry"). */}}
{{- define "lightops.labels" -}}
helm.sh/chart: {{ include "lightops.chart" .root }}
{{ include "lightops.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: lightops
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "lightops.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* In-cluster URL of a component's gRPC service: pass (dict "root" $ "component" "registry"). */}}
{{- define "lightops.serviceUrl" -}}
{{- $values := index .root.Values .component -}}
{{- printf "http://%s-%s.%s.svc:%v" (include "lightops.fullname" .root) .component .root.Release.Namespace $values.service.port }}
{{- end }}

{{- define "lightops.registryUrl" -}}
{{- include "lightops.serviceUrl" (dict "root" . "component" "registry") }}
{{- end }}

{{- define "lightops.trainerUrl" -}}
{{- include "lightops.serviceUrl" (dict "root" . "component" "trainer") }}
{{- end }}

{{/* The OTLP endpoint the services export to, or "" for none. */}}
{{- define "lightops.otelEndpoint" -}}
{{- if .Values.otel.collector.enabled }}
{{- $port := ternary 4317 4318 (eq .Values.otel.protocol "grpc") }}
{{- printf "http://%s-otel-collector.%s.svc:%v" (include "lightops.fullname" .) .Release.Namespace $port }}
{{- else }}
{{- .Values.otel.endpoint }}
{{- end }}
{{- end }}

{{/*
Environment shared by every lightops container: LIGHTOPS_HOME, AWS and OpenTelemetry settings.
Pass (dict "root" $ "component" "registry").
*/}}
{{- define "lightops.commonEnv" -}}
- name: LIGHTOPS_HOME
  value: /var/lib/lightops
{{- with .root.Values.aws.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .root.Values.aws.endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with include "lightops.otelEndpoint" .root }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $.root.Values.otel.protocol | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "lightops-%s" $.component | quote }}
- name: K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "service.version=%s,k8s.namespace.name=%s,k8s.pod.name=$(K8S_POD_NAME)" $.root.Chart.AppVersion $.root.Release.Namespace | quote }}
{{- end }}
{{- end }}

{{/* envFrom of every lightops container (the AWS credentials Secret). */}}
{{- define "lightops.envFrom" -}}
{{- with .Values.aws.existingSecret }}
envFrom:
  - secretRef:
      name: {{ . }}
{{- end }}
{{- end }}

{{/* ServiceAccount annotations: the IRSA role and serviceAccount.annotations. */}}
{{- define "lightops.serviceAccountAnnotations" -}}
{{- $annotations := deepCopy .Values.serviceAccount.annotations }}
{{- with .Values.aws.irsaRoleArn }}
{{- $_ := set $annotations "eks.amazonaws.com/role-arn" . }}
{{- end }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* A component's ServiceAccount: pass (dict "root" $ "component" "registry" "automount" false). */}}
{{- define "lightops.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "lightops.fullname" .root }}-{{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "lightops.labels" . | nindent 4 }}
  {{- with include "lightops.serviceAccountAnnotations" .root }}{{ . | trim | nindent 2 }}{{- end }}
automountServiceAccountToken: {{ .automount }}
{{- end }}

{{/* A component's gRPC Service: pass (dict "root" $ "component" "registry"). */}}
{{- define "lightops.service" -}}
{{- $values := index .root.Values .component -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "lightops.fullname" .root }}-{{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "lightops.labels" . | nindent 4 }}
  {{- with $values.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $values.service.type }}
  selector:
    {{- include "lightops.selectorLabels" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $values.service.port }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
{{- end }}

{{/*
A PersistentVolumeClaim for a component's $LIGHTOPS_HOME: pass (dict "root" $ "component" "registry").
Kept on `helm uninstall` (resource-policy keep): it holds the registry's database.
*/}}
{{- define "lightops.pvc" -}}
{{- $persistence := (index .root.Values .component).persistence -}}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ include "lightops.fullname" .root }}-{{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "lightops.labels" . | nindent 4 }}
  annotations:
    helm.sh/resource-policy: keep
    {{- with $persistence.annotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  accessModes:
    {{- toYaml $persistence.accessModes | nindent 4 }}
  {{- with $persistence.storageClass }}
  storageClassName: {{ if eq . "-" }}""{{ else }}{{ . | quote }}{{ end }}
  {{- end }}
  resources:
    requests:
      storage: {{ $persistence.size }}
{{- end }}

{{/* Pod-level settings shared by every lightops pod. */}}
{{- define "lightops.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* nodeSelector, tolerations and affinity of a component: pass its values. */}}
{{- define "lightops.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Probes of a component: pass its values. */}}
{{- define "lightops.probes" -}}
{{- with .startupProbe }}
startupProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .livenessProbe }}
livenessProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .readinessProbe }}
readinessProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
