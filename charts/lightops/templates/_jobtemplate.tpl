{{/*
The trainer's Kubernetes Job template (services/trainer/src/kube_executor/template.rs, which
rejects unknown fields), as JSON.
*/}}
{{- define "lightops.jobTemplate" -}}
{{- $values := .Values.trainer.jobTemplate }}
{{- $env := list }}
{{- with .Values.aws.region }}
{{- $env = append $env (dict "name" "AWS_REGION" "value" .) }}
{{- end }}
{{- with .Values.aws.endpointUrl }}
{{- $env = append $env (dict "name" "AWS_ENDPOINT_URL" "value" .) }}
{{- end }}
{{- with include "lightops.otelEndpoint" . }}
{{- $env = append $env (dict "name" "OTEL_EXPORTER_OTLP_ENDPOINT" "value" .) }}
{{- $env = append $env (dict "name" "OTEL_EXPORTER_OTLP_PROTOCOL" "value" $.Values.otel.protocol) }}
{{- $env = append $env (dict "name" "OTEL_SERVICE_NAME" "value" "lightops-training") }}
{{- end }}
{{- range $values.env }}
{{- $env = append $env (dict "name" .name "value" (toString .value)) }}
{{- end }}
{{- $secrets := list }}
{{- with .Values.aws.existingSecret }}
{{- $secrets = append $secrets . }}
{{- end }}
{{- $secrets = concat $secrets $values.envFromSecrets | uniq }}
{{- $requests := dict }}
{{- range $key, $value := $values.resources.requests }}
{{- $_ := set $requests $key (ternary nil (toString $value) (eq (toString $value) "")) }}
{{- end }}
{{- $limits := dict }}
{{- range $key, $value := $values.resources.limits }}
{{- $_ := set $limits $key (ternary nil (toString $value) (eq (toString $value) "")) }}
{{- end }}
{{- $labels := merge (dict "app.kubernetes.io/instance" .Release.Name "app.kubernetes.io/part-of" "lightops") $values.labels }}
{{- $template := dict
  "registry_url" (include "lightops.registryUrl" .)
  "image" (include "lightops.image" .)
  "image_pull_policy" (default .Values.image.pullPolicy $values.imagePullPolicy)
  "service_account" (printf "%s-training" (include "lightops.fullname" .))
  "resources" (dict "requests" $requests "limits" $limits)
  "env" $env
  "env_from_secret" $secrets
  "ttl_seconds_after_finished" $values.ttlSecondsAfterFinished
  "backoff_limit" $values.backoffLimit
  "node_selector" $values.nodeSelector
  "labels" $labels
  "annotations" $values.annotations
  "run_as_user" .Values.podSecurityContext.runAsUser
}}
{{- if gt (int64 $values.activeDeadlineSeconds) 0 }}
{{- $_ := set $template "active_deadline_seconds" $values.activeDeadlineSeconds }}
{{- end }}
{{- with $values.tmpSizeLimit }}
{{- $_ := set $template "tmp_size_limit" . }}
{{- end }}
{{- toPrettyJson $template }}
{{- end }}
