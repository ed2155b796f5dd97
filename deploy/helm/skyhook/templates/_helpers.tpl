{{/* Chart name, overridable. */}}
{{- define "skyhook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name; leaves room for a component suffix (max 63 characters). */}}
{{- define "skyhook.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's objects: <fullname>-<command>. Call with (dict "root" $ "component" "gateway"). */}}
{{- define "skyhook.componentName" -}}
{{- printf "%s-%s" (include "skyhook.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "skyhook.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "skyhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "skyhook.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "skyhook.labels" -}}
helm.sh/chart: {{ include "skyhook.chart" .root }}
{{ include "skyhook.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: skyhook
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{- define "skyhook.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "skyhook.configMapName" -}}
{{- include "skyhook.componentName" (dict "root" . "component" "config") -}}
{{- end -}}

{{/* The Secret with the database URL, AMQP URL and secret key: the chart's or an existing one. */}}
{{- define "skyhook.secretName" -}}
{{- if .Values.existingSecret -}}
{{- .Values.existingSecret -}}
{{- else -}}
{{- include "skyhook.componentName" (dict "root" . "component" "secrets") -}}
{{- end -}}
{{- end -}}

{{/* Fails rendering with a clear message when a required setting is missing. */}}
{{- define "skyhook.validate" -}}
{{- if not .Values.publicUrl -}}
{{- fail "publicUrl is required: the public base URL analysis services post results to (e.g. https://skyhook.example.org)" -}}
{{- end -}}
{{- if not (or (hasPrefix "http://" .Values.publicUrl) (hasPrefix "https://" .Values.publicUrl)) -}}
{{- fail "publicUrl must be an absolute http(s) URL" -}}
{{- end -}}
{{- if not .Values.existingSecret -}}
{{- if not .Values.database.url -}}
{{- fail "database.url is required (postgresql+asyncpg://USER:PASSWORD@HOST:5432/DB), or set existingSecret" -}}
{{- end -}}
{{- if not .Values.amqp.url -}}
{{- fail "amqp.url is required (amqp://USER:PASSWORD@HOST:5672/VHOST), or set existingSecret" -}}
{{- end -}}
{{- if not .Values.secretKey -}}
{{- fail "secretKey is required (a long random string, e.g. openssl rand -hex 32), or set existingSecret" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The secret settings of the platform services (gateway, dispatcher, webhook receiver,
summary service), beside the ConfigMap every container gets. The standalone sn-fitter and
summarizer never receive the database URL, the AMQP URL or the secret key: see
skyhook.serviceEnv. */}}
{{- define "skyhook.env" -}}
- name: SKYHOOK_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "skyhook.secretName" . }}
      key: {{ .Values.existingSecretKeys.databaseUrl }}
- name: SKYHOOK_AMQP_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "skyhook.secretName" . }}
      key: {{ .Values.existingSecretKeys.amqpUrl }}
- name: SKYHOOK_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "skyhook.secretName" . }}
      key: {{ .Values.existingSecretKeys.secretKey }}
- name: SKYHOOK_PREVIOUS_SECRET_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "skyhook.secretName" . }}
      key: {{ .Values.existingSecretKeys.previousSecretKeys }}
      optional: true
{{ include "skyhook.llmEnv" . }}
{{- end -}}

{{/* The LLM API key (summarizer, and the platform's summary embeddings), if the Secret has one. */}}
{{- define "skyhook.llmEnv" -}}
- name: SKYHOOK_LLM_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "skyhook.secretName" . }}
      key: {{ .Values.existingSecretKeys.llmApiKey }}
      optional: true
{{- end -}}

{{/* The secret settings one service's container gets. Call with (dict "root" $ "command" "gateway"). */}}
{{- define "skyhook.serviceEnv" -}}
{{- if eq .command "summarizer" -}}
{{ include "skyhook.llmEnv" .root }}
{{- else if ne .command "sn-fitter" -}}
{{ include "skyhook.env" .root }}
{{- end -}}
{{- end -}}

{{- define "skyhook.podSecurity" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* allowedUrlHosts plus, when allowBundledServices, the in-cluster example services (JSON). */}}
{{- define "skyhook.allowedUrlHosts" -}}
{{- $hosts := list -}}
{{- range .Values.allowedUrlHosts -}}
{{- $hosts = append $hosts . -}}
{{- end -}}
{{- if .Values.allowBundledServices -}}
{{- range $key := list "snFitter" "summarizer" -}}
{{- $svc := index $.Values.services $key -}}
{{- if $svc.enabled -}}
{{- $hosts = append $hosts (include "skyhook.componentName" (dict "root" $ "component" $svc.command)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $hosts | toJson -}}
{{- end -}}
