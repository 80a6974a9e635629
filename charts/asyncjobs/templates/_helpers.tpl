{{/* Names and labels shared by every template. */}}

{{- define "asyncjobs.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "asyncjobs.jobsNamespace" -}}
{{- default (printf "%s-jobs" .Release.Namespace) .Values.jobs.namespace -}}
{{- end -}}

{{/* Virtual-key Secrets live here, apart from the jobs' Secrets (see values.yaml). */}}
{{- define "asyncjobs.keysNamespace" -}}
{{- default (printf "%s-keys" .Release.Namespace) .Values.virtualKeys.namespace -}}
{{- end -}}

{{/* Whether the API requires a gateway token / a virtual key (api.auth.mode). */}}
{{- define "asyncjobs.requiresToken" -}}
{{- if has .Values.api.auth.mode (list "gatewayToken" "gatewayTokenAndVirtualKeys") }}true{{ end -}}
{{- end -}}

{{- define "asyncjobs.requiresVirtualKey" -}}
{{- if has .Values.api.auth.mode (list "virtualKeys" "gatewayTokenAndVirtualKeys") }}true{{ end -}}
{{- end -}}

{{/* The Secret holding the gateway token: the user's, or the one the chart creates. */}}
{{- define "asyncjobs.gatewayTokenSecret" -}}
{{- default (printf "%s-gateway-token" (include "asyncjobs.fullname" .)) .Values.api.auth.gatewayToken.existingSecret -}}
{{- end -}}

{{/* The prefix of the operator replicas' member Leases, in the jobs namespace. */}}
{{- define "asyncjobs.operatorLease" -}}
{{- printf "%s-operator" (include "asyncjobs.fullname" .) -}}
{{- end -}}

{{- define "asyncjobs.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "asyncjobs.labels" -}}
app.kubernetes.io/name: asyncjobs
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "asyncjobs.selector" -}}
app.kubernetes.io/name: asyncjobs
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Provider-key Secret names referenced by the providers configuration. */}}
{{- define "asyncjobs.providerKeySecrets" -}}
{{- $names := list -}}
{{- range $name, $provider := .Values.providers.providers -}}
{{- range $key := ($provider.keys | default list) -}}
{{- $names = append $names $key.secretRef.name -}}
{{- end -}}
{{- end -}}
{{- $names | uniq | toJson -}}
{{- end -}}

{{/* The payload store's settings, the same in the API and the operator containers. */}}
{{- define "asyncjobs.payloadEnv" -}}
- name: ASYNCJOBS_PAYLOADS
  value: {{ .Values.payloads.backend | quote }}
{{- if eq .Values.payloads.backend "s3" }}
{{- $s3 := .Values.payloads.s3 }}
{{- if not $s3.bucket }}
{{- fail "payloads.backend=s3 needs payloads.s3.bucket" }}
{{- end }}
- name: ASYNCJOBS_S3_BUCKET
  value: {{ $s3.bucket | quote }}
- name: ASYNCJOBS_S3_REGION
  value: {{ $s3.region | quote }}
- name: ASYNCJOBS_S3_PATH_STYLE
  value: {{ $s3.pathStyle | toString | quote }}
{{- with $s3.endpoint }}
- name: ASYNCJOBS_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with $s3.prefix }}
- name: ASYNCJOBS_S3_PREFIX
  value: {{ . | quote }}
{{- end }}
{{- with $s3.credentialsSecret.name }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: {{ $s3.credentialsSecret.accessKeyIdKey }}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: {{ $s3.credentialsSecret.secretAccessKeyKey }}}
{{- end }}
{{- end }}
{{- end }}
